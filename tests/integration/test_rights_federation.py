"""Rights cases between real nodes — Sichuan (510000), Jiangsu (320000), Chongqing (500000) — on a broker of their
own, over real HTTP, on SQLite and PostgreSQL.

A Sichuan worker's wage-arrears case against a Jiangsu employer is referred, accepted, investigated and resolved,
with the same timeline on both nodes, while Chongqing receives the anonymous statistics and nothing else; every
message delivered again, and an old version re-sent under a new event id, change nothing. A referral Jiangsu
declines returns to Sichuan, which redirects it to Chongqing; a withdrawal reaches the province holding the case.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord
from prometheus_client import REGISTRY
from sqlalchemy import select

from labornet.rights.adapters.tables import metadata as rights_metadata
from labornet.rights.app import create_app
from labornet.rights.config import RightsSettings
from labornet.shared.broker import EmbeddedBroker
from labornet.shared.db import create_engine, platform_metadata
from labornet.shared.envelope import Envelope
from labornet.shared.identifiers import make_resident_id, mask_resident_id
from labornet.shared.keys import NodeKeys, ensure_node_keys
from labornet.shared.receipts import RECEIPT
from labornet.shared.settings import Settings
from labornet.shared.signing import Signer
from labornet.shared.testing import assert_problem, bearer, consume_all, eventually, serving
from labornet.shared.topics import events_topic, inbox_topic

pytestmark = pytest.mark.integration

PROVINCES = ("510000", "320000", "500000")
SC, JS, CQ = PROVINCES
WORKER = make_resident_id("511602", date(1985, 4, 12), 37)  # born in Guang'an, Sichuan
WORKER_NAME, WORKER_PHONE = "王小明", "13812345678"
OTHER_WORKER = make_resident_id("511602", date(1990, 2, 3), 44)


def complaint(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "complainant": {"name": WORKER_NAME, "phone": WORKER_PHONE},
        "category": "wage-arrears",
        "sector": "construction",
        "employer": {
            "name": "南京某建设工程有限公司",
            "credit_code": "91350100M000100Y43",
            "address": "南京市江宁区某路 1 号",
            "province": JS,
        },
        "work_place": {"division_code": "320115", "site": "江宁某安置房项目"},
        "period": {"start": "2025-03-01", "end": "2025-12-31"},
        "amount_owed": "48600.00",
        "workers_affected": 12,
        "evidence": [{"name": "考勤表.pdf", "sha256": "ab" * 32, "size": 20480}],
        "facts": "工程完工后拖欠十个月工资，包工头失联。",
    }
    body.update(overrides)
    return body


@pytest.fixture(scope="module")
def federation_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, NodeKeys]]:
    """Keys and a trust list for the three provinces of these tests (the shared fixtures have no Jiangsu)."""
    root = tmp_path_factory.mktemp("rights-federation")
    keys = {p: ensure_node_keys(p, root / "keys" / p, root / "trust-list.json") for p in PROVINCES}
    return root, keys


@dataclasses.dataclass
class Federation:
    clients: dict[str, httpx.AsyncClient]
    keys: dict[str, NodeKeys]
    urls: dict[str, str]
    bootstrap: str

    def officer(self, province: str) -> dict[str, str]:
        return bearer(self.keys[province], "officer", sub=f"officer-{province}")

    def worker(self, resident_id: str = WORKER) -> dict[str, str]:
        return bearer(self.keys[SC], "worker", sub=resident_id)

    async def case(self, province: str, case_id: str) -> dict[str, Any] | None:
        response = await self.clients[province].get(f"/api/v1/cases/{case_id}", headers=self.officer(province))
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    async def wait(
        self, province: str, case_id: str, status: str, version: int | None = None, timeout_s: float = 30
    ) -> dict[str, Any]:
        async def reached() -> bool:
            found = await self.case(province, case_id)
            return found is not None and found["status"] == status and version in (None, found["version"])

        await eventually(reached, timeout_s=timeout_s)
        found = await self.case(province, case_id)
        assert found is not None
        return found

    async def act(self, province: str, case_id: str, step: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.clients[province].post(
            f"/api/v1/cases/{case_id}/{step}", json=body, headers=self.officer(province)
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


@pytest.fixture
async def nodes(
    new_database_url: Callable[[], Awaitable[str]],
    federation_keys: tuple[Path, dict[str, NodeKeys]],
    private_broker: EmbeddedBroker,
) -> AsyncIterator[Federation]:
    root, keys = federation_keys
    urls = {p: await new_database_url() for p in PROVINCES}

    def settings_for(province: str) -> Settings:
        return Settings(  # type: ignore[call-arg]
            province=province,
            service="rights",
            data_dir=root,
            database_url=urls[province],
            kafka_bootstrap_servers=private_broker.bootstrap_servers,
            kafka_session_timeout_ms=3000,
            kafka_heartbeat_interval_ms=500,
            log_json=False,
            inbox_retry_backoff_s=0.05,
            broker_check_interval_s=1.0,
            kafka_metadata_max_age_ms=3000,
            receipt_wait_s=3.0,
        )

    async with contextlib.AsyncExitStack() as stack:
        clients = {
            p: await stack.enter_async_context(
                serving(create_app(settings_for(p), RightsSettings(sweep_interval_s=0.1)))
            )
            for p in PROVINCES
        }

        async def all_ready() -> bool:
            return all([(await c.get("/readyz")).status_code == 200 for c in clients.values()])

        await eventually(all_ready, timeout_s=60)
        yield Federation(clients, keys, urls, private_broker.bootstrap_servers)


def without_side(view: dict[str, Any]) -> dict[str, Any]:
    """A case as both provinces must hold it: everything but each node's own bookkeeping."""
    return {k: v for k, v in view.items() if k not in ("side", "redacted", "withdrawal_requested_at", "overdue")}


async def personal_data_in(database_url: str, *secrets: str) -> list[str]:
    """Where in a node's database (every table, outbox and inbox included) any of ``secrets`` appears."""
    found = []
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            for table in [*platform_metadata.sorted_tables, *rights_metadata.sorted_tables]:
                for row in (await connection.execute(select(table))).all():
                    text = repr(tuple(row)) + "".join(
                        value.decode("utf-8", "replace") for value in row if isinstance(value, bytes)
                    )
                    found += [f"{table.name}: {secret}" for secret in secrets if secret in text]
    finally:
        await engine.dispose()
    return found


def consumed(topic: str, outcome: str) -> float:
    labels = {"service": "rights", "topic": topic, "outcome": outcome}
    return REGISTRY.get_sample_value("labornet_events_consumed_total", labels) or 0.0


def stale_messages(province: str, event_type: str) -> float:
    labels = {"province": province, "type": event_type, "result": "stale"}
    return REGISTRY.get_sample_value("labornet_rights_case_messages_total", labels) or 0.0


def delivery_of(record: ConsumerRecord[bytes, bytes]) -> str:
    """What a record delivers: a message (its id), or the receipt for a message (that message's id)."""
    headers = dict(record.headers)
    if headers["ce_type"] == RECEIPT.encode():
        return "receipt of " + headers["ce_subject"].decode()
    return headers["ce_id"].decode()


async def test_a_sichuan_workers_case_against_a_jiangsu_employer(nodes: Federation) -> None:
    sc, cq = nodes.clients[SC], nodes.clients[CQ]
    filed = await sc.post("/api/v1/cases", json=complaint(), headers=nodes.worker())
    assert filed.status_code == 201, filed.text
    case_id = filed.json()["id"]
    assert (filed.json()["status"], filed.json()["handling_province"]) == ("referred", JS)

    referred = await nodes.wait(JS, case_id, "referred")
    assert referred["complainant"] == {"resident_id": WORKER, "name": WORKER_NAME, "phone": WORKER_PHONE}
    assert referred["side"] == "handling" and referred["acceptance_due"] == filed.json()["acceptance_due"]
    assert_problem(await sc.post(f"/api/v1/cases/{case_id}/accept", json={}, headers=nodes.officer(SC)), 403, JS)

    await nodes.act(JS, case_id, "accept", {"note": "予以受理，立案调查"})
    await nodes.act(JS, case_id, "updates", {"note": "现场检查，责令总承包单位限期清偿"})
    resolved = await nodes.act(
        JS, case_id, "resolve", {"amount_recovered": "48600.00", "workers_paid": 12, "note": "已全额支付"}
    )
    assert resolved["version"] == 4

    at_home = await nodes.wait(SC, case_id, "resolved", version=4)
    at_work_place = await nodes.case(JS, case_id)
    assert at_work_place is not None
    assert without_side(at_home) == without_side(at_work_place), "both provinces see the same case and timeline"
    assert [(e["kind"], e["province"]) for e in at_home["timeline"]] == [
        ("filed", SC),
        ("referred", SC),
        ("accepted", JS),
        ("updated", JS),
        ("resolved", JS),
    ]
    assert (at_home["amount_recovered"], at_home["workers_paid"]) == ("48600.00", 12)

    # the worker follows the case at home; nobody else sees it
    own = await sc.get(f"/api/v1/cases/{case_id}", headers=nodes.worker())
    assert own.status_code == 200 and own.json()["timeline"] == at_home["timeline"]
    assert_problem(await sc.get(f"/api/v1/cases/{case_id}", headers=nodes.worker(OTHER_WORKER)), 404)
    assert await nodes.case(CQ, case_id) is None

    # Chongqing holds the anonymous statistics, and nothing about the complainant
    async def statistics_arrived() -> bool:
        totals = (await cq.get("/api/v1/statistics")).json()["totals"]
        return bool(totals["cases"] == 1 and totals["amount_recovered"] == "48600.00")

    await eventually(statistics_arrived)
    statistics = (await cq.get("/api/v1/statistics")).json()
    assert statistics["totals"] == {
        "cases": 1,
        "workers_affected": 12,
        "amount_owed": "48600.00",
        "amount_recovered": "48600.00",
    }
    assert [(r["home_province"], r["cases"]) for r in statistics["by_home_province"]] == [(SC, 1)]
    assert [(r["handling_province"], r["cases"]) for r in statistics["by_handling_province"]] == [(JS, 1)]
    assert [(r["category"], r["cases"]) for r in statistics["by_category"]] == [("wage-arrears", 1)]
    assert [(r["status"], r["cases"]) for r in statistics["by_status"]] == [("resolved", 1)]
    assert (await sc.get("/api/v1/statistics")).json()["totals"] == statistics["totals"]
    secrets = (WORKER, WORKER_NAME, WORKER_PHONE, "包工头失联", case_id)
    assert await personal_data_in(nodes.urls[CQ], *secrets) == []
    # broadcast topics never carry a person: Sichuan published at start, on filing and on each of 3 changes
    published = {SC: 5, JS: 1, CQ: 1}
    for province, count in published.items():
        records = await consume_all(nodes.bootstrap, events_topic(province, "rights"), count, timeout_s=10)
        assert len(records) == count
        for record in records:
            assert record.value is not None
            assert not [s for s in secrets if s.encode() in record.value], record.value

    # every message of both inboxes and of Sichuan's statistics stream delivered again: nothing changes
    before = {p: await nodes.case(p, case_id) for p in (SC, JS)}
    stats_before = (await cq.get("/api/v1/statistics")).json()
    # topic: (records on it, nodes reading it); each inbox also holds a receipt for every message the other sent
    topics = {inbox_topic(SC, "rights"): (4, 1), inbox_topic(JS, "rights"): (4, 1), events_topic(SC, "rights"): (5, 2)}
    duplicates_before = {topic: consumed(topic, "duplicate") for topic in topics}
    redelivered: dict[str, int] = {}
    producer = AIOKafkaProducer(bootstrap_servers=nodes.bootstrap)
    await producer.start()
    try:
        for topic, (count, _readers) in topics.items():
            records = await consume_all(nodes.bootstrap, topic, count, timeout_s=10)
            # a message resent before its receipt came is on the log twice, with a second receipt: count each
            # message once by its id and each receipt once by the message it acknowledges
            assert len({delivery_of(record) for record in records}) == count, topic
            for record in records:
                await producer.send_and_wait(topic, record.value, key=record.key, headers=list(record.headers))
            redelivered[topic] = len(records)

        # an old version re-sent under a new event id (signed by Jiangsu): only the case version can stop it
        accepted = next(
            record
            for record in await consume_all(nodes.bootstrap, inbox_topic(SC, "rights"), 4, timeout_s=5)
            if dict(record.headers)["ce_type"] == b"org.labornet.rights.case.accepted.v1"
        )
        old = Envelope.from_kafka(accepted.key, accepted.value, accepted.headers)
        again = Signer.from_file(nodes.keys[JS].signing_key, JS).sign(dataclasses.replace(old, id=str(uuid.uuid4())))
        stale_before = stale_messages(SC, old.type)
        key, value, headers = again.to_kafka()
        await producer.send_and_wait(inbox_topic(SC, "rights"), value, key=key, headers=headers)
    finally:
        await producer.stop()

    async def absorbed() -> bool:
        return stale_messages(SC, old.type) == stale_before + 1 and all(
            consumed(topic, "duplicate") >= duplicates_before[topic] + redelivered[topic] * readers
            for topic, (_count, readers) in topics.items()
        )

    await eventually(absorbed)
    assert {p: await nodes.case(p, case_id) for p in (SC, JS)} == before
    stats_after = (await cq.get("/api/v1/statistics")).json()
    assert {k: v for k, v in stats_after.items() if k != "generated_at"} == {
        k: v for k, v in stats_before.items() if k != "generated_at"
    }

    # the gauges count the case on both sides
    expected = [
        'labornet_rights_cases{province="510000",side="home",state="resolved"} 1.0',
        'labornet_rights_cases{province="320000",side="handling",state="resolved"} 1.0',
        'labornet_rights_amount_recovered_yuan{province="320000",side="handling"} 48600.0',
    ]

    async def counted() -> bool:
        metrics = (await sc.get("/metrics")).text
        return all(line in metrics for line in expected)

    await eventually(counted, timeout_s=10)


async def test_a_referral_in_flight_completes_after_the_broker_loses_its_log(
    nodes: Federation, private_broker: EmbeddedBroker
) -> None:
    """The referral, and later the acceptance, are wiped from the log before anyone read them; both arrive."""
    sc = nodes.clients[SC]
    filed = await sc.post("/api/v1/cases", json=complaint(), headers=nodes.worker())
    assert filed.status_code == 201, filed.text
    case_id = filed.json()["id"]
    private_broker.stop()
    private_broker.start()  # empty: whatever of the referral was on the log is gone
    await nodes.wait(JS, case_id, "referred")
    await nodes.act(JS, case_id, "accept", {"note": "予以受理"})
    private_broker.stop()
    private_broker.start()
    # on the second new log: after the broker watch, the resend backoff and the consumers' rejoin (as the insurance
    # transfer's test allows; two test workers on two cores took more than 30 s in a CI run)
    await nodes.wait(SC, case_id, "investigating", version=2, timeout_s=90)
    await nodes.act(JS, case_id, "resolve", {"amount_recovered": "1000.00", "workers_paid": 1, "note": "已支付"})
    at_home = await nodes.wait(SC, case_id, "resolved", version=3)
    assert without_side(at_home) == without_side(await nodes.case(JS, case_id) or {})


async def test_a_declined_referral_returns_home_and_is_redirected(nodes: Federation) -> None:
    sc, js = nodes.clients[SC], nodes.clients[JS]
    on_behalf = complaint(complainant={"name": WORKER_NAME, "phone": WORKER_PHONE, "resident_id": WORKER})
    case_id = (await sc.post("/api/v1/cases", json=on_behalf, headers=nodes.officer(SC))).json()["id"]
    await nodes.wait(JS, case_id, "referred")
    declined = await nodes.act(
        JS, case_id, "decline", {"reason": "经核实，实际用工地在重庆，不属本省管辖", "suggested_province": CQ}
    )
    assert (declined["status"], declined["redacted"]) == ("returned", True)
    assert declined["complainant"]["resident_id"] == mask_resident_id(WORKER), "the decliner keeps no identity"

    returned = await nodes.wait(SC, case_id, "returned")
    assert (returned["holder"], returned["declined_by"]) == (SC, [JS])
    assert returned["timeline"][-1]["details"] == {"suggested_province": CQ}
    assert returned["complainant"]["resident_id"] == WORKER
    assert_problem(await js.post(f"/api/v1/cases/{case_id}/accept", json={}, headers=nodes.officer(JS)), 403)

    redirected = await nodes.act(SC, case_id, "refer", {"province": CQ, "note": "按江苏建议转重庆处理"})
    assert (redirected["status"], redirected["handling_province"]) == ("referred", CQ)
    await nodes.wait(CQ, case_id, "referred")
    await nodes.act(CQ, case_id, "accept", {})
    await nodes.act(CQ, case_id, "close", {"reason": "referred-to-police", "note": "涉嫌拒不支付劳动报酬罪，移送公安"})
    at_home = await nodes.wait(SC, case_id, "closed")
    at_chongqing = await nodes.case(CQ, case_id)
    assert at_chongqing is not None and without_side(at_home) == without_side(at_chongqing)
    assert at_home["closure_reason"] == "referred-to-police"
    assert [(e["kind"], e["province"]) for e in at_home["timeline"]] == [
        ("filed", SC),
        ("referred", SC),
        ("declined", JS),
        ("referred", SC),
        ("accepted", CQ),
        ("closed", CQ),
    ]
    at_jiangsu = await nodes.case(JS, case_id)
    assert at_jiangsu is not None and (at_jiangsu["status"], at_jiangsu["version"]) == ("returned", 2)
    jiangsu_tables = await personal_data_in(nodes.urls[JS], WORKER, WORKER_PHONE)
    assert all(place.startswith("outbox:") for place in jiangsu_tables), jiangsu_tables  # only the sent message

    # a second case, withdrawn by the worker while Jiangsu holds it: Jiangsu closes it, both agree
    second = (await sc.post("/api/v1/cases", json=complaint(), headers=nodes.worker())).json()["id"]
    await nodes.wait(JS, second, "referred")
    asked = await sc.post(f"/api/v1/cases/{second}/withdraw", json={"note": "已与老板和解"}, headers=nodes.worker())
    assert asked.status_code == 202 and asked.json()["withdrawal_requested_at"]
    closed = await nodes.wait(SC, second, "closed")
    assert (closed["closure_reason"], closed["withdrawal_requested_at"]) == ("withdrawn", None)
    assert closed["timeline"][-1]["province"] == JS
    assert without_side(closed) == without_side(await nodes.case(JS, second) or {})

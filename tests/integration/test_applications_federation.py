"""Applications across provinces between real nodes — Sichuan (510000), Zhejiang (330000), Chongqing (500000) — on a
broker of their own, over real HTTP, on SQLite and PostgreSQL.

Zhejiang posts a vacancy for two; Sichuan workers find it at Sichuan and apply there. Zhejiang shortlists,
interviews, offers and hires; the worker follows every state at home, the vacancy's hired count and open headcount
change on all three nodes, the hire is recorded as a placement at both ends, and the last place fills the
vacancy. Chongqing holds no trace of any applicant, in its database or on any topic it may read. Every directed
message delivered again changes nothing. Applying twice, applying to a closed vacancy and a hire beyond the open
headcount are problem responses that change nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from sqlalchemy import select

from labornet.jobs.adapters.tables import metadata as jobs_metadata
from labornet.jobs.adapters.tables import placement
from labornet.jobs.app import create_app
from labornet.jobs.domain.application import CHANGED, SUBMITTED
from labornet.shared.broker import EmbeddedBroker
from labornet.shared.clock import today_in_china
from labornet.shared.db import create_engine, platform_metadata
from labornet.shared.keys import NodeKeys, ensure_node_keys
from labornet.shared.receipts import RECEIPT
from labornet.shared.settings import Settings
from labornet.shared.testing import assert_problem, bearer, consume_all, eventually, serving
from labornet.shared.topics import events_topic, inbox_topic

pytestmark = pytest.mark.integration

PROVINCES = ("510000", "330000", "500000")
SC, ZJ, CQ = PROVINCES
APPLICANTS = {"wang": ("王小明", "13812345678"), "li": ("李四川", "13987654321"), "zhang": ("张德才", "13700001111")}


def posting(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "employer_name": "杭州川味餐饮有限公司",
        "employer_credit_code": "91350100M000100Y43",
        "title": "川菜厨师 Sichuan chef",
        "description": "负责川菜热菜制作，提供住宿。",
        "occupation_code": "5120",
        "division_code": "330106",
        "headcount": 2,
        "salary_min": 6000,
        "salary_max": 9000,
        "employment_type": "full-time",
        "target_groups": ["migrant-workers"],
        "skills": ["川菜"],
        "contact": "0571-88000000",
        "closing_date": (today_in_china() + timedelta(days=30)).isoformat(),
    }
    body.update(overrides)
    return body


def profile(worker: str) -> dict[str, Any]:
    name, phone = APPLICANTS[worker]
    return {
        "name": name,
        "phone": phone,
        "skills": ["川菜", "刀工"],
        "certificates": ["中式烹调师四级"],
        "experience_years": 6,
        "expected_salary": 8000,
        "available_from": today_in_china().isoformat(),
        "target_groups": ["migrant-workers"],
        "cover_note": f"{name}：在成都做过六年川菜厨师。",
    }


@pytest.fixture(scope="module")
def federation_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, NodeKeys]]:
    root = tmp_path_factory.mktemp("applications-federation")
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

    def worker(self, sub: str) -> dict[str, str]:
        return bearer(self.keys[SC], "worker", sub=sub)

    async def application(self, province: str, application_id: str, headers: dict[str, str]) -> dict[str, Any] | None:
        response = await self.clients[province].get(f"/api/v1/applications/{application_id}", headers=headers)
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    async def wait(self, province: str, application_id: str, state: str, headers: dict[str, str]) -> dict[str, Any]:
        async def reached() -> bool:
            found = await self.application(province, application_id, headers)
            return found is not None and found["state"] == state

        await eventually(reached, timeout_s=30)
        found = await self.application(province, application_id, headers)
        assert found is not None
        return found

    async def step(self, application_id: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.clients[ZJ].post(
            f"/api/v1/applications/{application_id}/{action}", json=body, headers=self.officer(ZJ)
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def vacancies(self, vacancy_id: str) -> dict[str, tuple[Any, ...]]:
        found = {}
        for province, client in self.clients.items():
            response = await client.get(f"/api/v1/vacancies/{vacancy_id}")
            body = response.json() if response.status_code == 200 else {}
            found[province] = tuple(body.get(k) for k in ("version", "status", "hired", "open_headcount"))
        return found

    async def wait_vacancy(self, vacancy_id: str, *expected: Any) -> None:
        async def everywhere() -> bool:
            return set((await self.vacancies(vacancy_id)).values()) == {expected}

        await eventually(everywhere, timeout_s=30)


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
            service="jobs",
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
            jobs_sweep_interval_s=600,  # the officers end every application here, not the sweep
        )

    async with contextlib.AsyncExitStack() as stack:
        clients = {p: await stack.enter_async_context(serving(create_app(settings_for(p)))) for p in PROVINCES}

        async def all_ready() -> bool:
            return all([(await c.get("/readyz")).status_code == 200 for c in clients.values()])

        await eventually(all_ready, timeout_s=60)
        yield Federation(clients, keys, urls, private_broker.bootstrap_servers)


async def rows_mentioning(database_url: str, *secrets: str) -> list[str]:
    """Where in a node's database (every table, outbox and inbox included) any of ``secrets`` appears."""
    found = []
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            for table in [*platform_metadata.sorted_tables, *jobs_metadata.sorted_tables]:
                for row in (await connection.execute(select(table))).all():
                    text = repr(tuple(row)) + "".join(
                        value.decode("utf-8", "replace") for value in row if isinstance(value, bytes)
                    )
                    found += [f"{table.name}: {secret}" for secret in secrets if secret in text]
    finally:
        await engine.dispose()
    return found


async def placements(database_url: str) -> list[tuple[str, str, str]]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            query = select(placement.c.application_id, placement.c.origin_province, placement.c.destination_province)
            return sorted(tuple(row) for row in (await connection.execute(query)).all())
    finally:
        await engine.dispose()


def duplicates() -> float:
    """Records of the two inboxes the consumers found applied already (this process's count)."""
    return sum(
        REGISTRY.get_sample_value(
            "labornet_events_consumed_total", {"service": "jobs", "topic": topic, "outcome": "duplicate"}
        )
        or 0.0
        for topic in (inbox_topic(SC, "jobs"), inbox_topic(ZJ, "jobs"))
    )


def messages(event_type: str, result: str) -> float:
    labels = {"type": event_type, "result": result}
    return REGISTRY.get_sample_value("labornet_jobs_application_messages_total", labels) or 0.0


async def test_a_sichuan_worker_is_hired_in_zhejiang_and_chongqing_holds_no_trace(nodes: Federation) -> None:
    sc, zj, cq = nodes.clients[SC], nodes.clients[ZJ], nodes.clients[CQ]
    posted = await zj.post("/api/v1/vacancies", json=posting(), headers=nodes.officer(ZJ))
    assert posted.status_code == 201, posted.text
    vacancy_id = posted.json()["id"]
    await nodes.wait_vacancy(vacancy_id, 1, "open", 0, 2)

    # Sichuan workers find it at home and apply there
    found = (await sc.get("/api/v1/vacancies", params={"q": "厨师", "province": ZJ})).json()
    assert [item["id"] for item in found["items"]] == [vacancy_id]
    made: dict[str, str] = {}
    for worker in APPLICANTS:
        answer = await sc.post(
            f"/api/v1/vacancies/{vacancy_id}/applications", json=profile(worker), headers=nodes.worker(worker)
        )
        assert answer.status_code == 201, answer.text
        made[worker] = answer.json()["id"]
    wang = made["wang"]
    twice = await sc.post(
        f"/api/v1/vacancies/{vacancy_id}/applications", json=profile("wang"), headers=nodes.worker("wang")
    )
    assert assert_problem(twice, 409, wang)["application_id"] == wang
    assert_problem(
        await cq.post(
            f"/api/v1/vacancies/{vacancy_id}/applications", json=profile("wang"), headers=nodes.worker("wang")
        ),
        403,
        "510000",
    )

    received = await nodes.wait(ZJ, wang, "received", nodes.officer(ZJ))
    name, phone = APPLICANTS["wang"]
    assert (received["profile"]["name"], received["profile"]["phone"], received["side"]) == (name, phone, "owner")
    assert_problem(
        await sc.post(f"/api/v1/applications/{wang}/shortlist", json={"version": 1}, headers=nodes.officer(SC)), 403
    )

    # Zhejiang moves it; the worker sees every state at home
    meeting = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0).isoformat()
    start = (today_in_china() + timedelta(days=10)).isoformat()
    for version, (action, body, state) in enumerate(
        [
            ("shortlist", {}, "shortlisted"),
            ("interview", {"at": meeting, "place": "杭州市上城区某路 1 号"}, "interview"),
            ("offer", {"salary": 8500, "start_date": start}, "offer"),
            ("hire", {"note": "已签劳动合同"}, "hired"),
        ],
        start=1,
    ):
        changed = await nodes.step(wang, action, {"version": version, **body})
        assert (changed["state"], changed["version"]) == (state, version + 1)
        seen = await nodes.wait(SC, wang, state, nodes.worker("wang"))
        assert seen["version"] == version + 1 and seen["profile_masked"] is False
    at_home = await nodes.application(SC, wang, nodes.worker("wang"))
    at_owner = await nodes.application(ZJ, wang, nodes.officer(ZJ))
    assert at_home is not None and at_owner is not None
    assert at_home["timeline"] == at_owner["timeline"]
    assert [(e["kind"], e["province"]) for e in at_home["timeline"]] == [
        ("submitted", SC),
        ("shortlisted", ZJ),
        ("interview", ZJ),
        ("offer", ZJ),
        ("hired", ZJ),
    ]
    assert (at_home["offer"], at_home["hired_at"] is not None) == ({"salary": 8500, "start_date": start}, True)
    followed = await nodes.application(SC, wang, nodes.officer(SC))
    assert followed is not None and followed["profile_masked"] and followed["profile"]["phone"] != phone
    sent = (await sc.get("/api/v1/applications", params={"role": "sent"}, headers=nodes.officer(SC))).json()
    assert {item["id"] for item in sent["items"]} == set(made.values())
    assert (await sc.get("/api/v1/applications", headers=nodes.worker("wang"))).json()["items"][0]["id"] == wang

    # the hire is on every node: one place left; the placement is kept at both ends
    await nodes.wait_vacancy(vacancy_id, 2, "open", 1, 1)

    async def placed() -> bool:
        return all([await placements(nodes.urls[p]) == [(wang, SC, ZJ)] for p in (SC, ZJ)])

    await eventually(placed, timeout_s=20)
    assert await placements(nodes.urls[CQ]) == []

    # the last place fills the vacancy; a hire beyond the open headcount changes nothing
    for worker in ("li", "zhang"):
        await nodes.wait(ZJ, made[worker], "received", nodes.officer(ZJ))
        await nodes.step(made[worker], "offer", {"version": 1, "salary": 8000, "start_date": start})
    await nodes.step(made["li"], "hire", {"version": 2})
    await nodes.wait_vacancy(vacancy_id, 3, "filled", 2, 0)
    beyond = await zj.post(f"/api/v1/applications/{made['zhang']}/hire", json={"version": 2}, headers=nodes.officer(ZJ))
    assert_problem(beyond, 409, "no more hires")
    assert (await nodes.application(ZJ, made["zhang"], nodes.officer(ZJ)) or {})["state"] == "offer"
    assert (await nodes.vacancies(vacancy_id))[ZJ] == (3, "filled", 2, 0)
    assert_problem(
        await sc.post(f"/api/v1/vacancies/{vacancy_id}/applications", json=profile("wang"), headers=nodes.worker("x")),
        409,
        "filled",
    )
    await nodes.step(made["zhang"], "not-selected", {"version": 2, "reason": "岗位已招满"})
    await nodes.wait(SC, made["zhang"], "not-selected", nodes.worker("zhang"))

    # a closed vacancy takes no application, and nothing is written
    other = (await zj.post("/api/v1/vacancies", json=posting(headcount=5), headers=nodes.officer(ZJ))).json()
    closed = await zj.post(
        f"/api/v1/vacancies/{other['id']}/close", json={"reason": "withdrawn", "version": 1}, headers=nodes.officer(ZJ)
    )
    assert closed.status_code == 200, closed.text
    await nodes.wait_vacancy(other["id"], 2, "withdrawn", 0, 5)
    before = (await sc.get("/api/v1/applications", headers=nodes.worker("wang"))).json()
    refused = await sc.post(
        f"/api/v1/vacancies/{other['id']}/applications", json=profile("wang"), headers=nodes.worker("wang")
    )
    assert_problem(refused, 409, "withdrawn")
    assert (await sc.get("/api/v1/applications", headers=nodes.worker("wang"))).json() == before

    # Chongqing holds no trace of any applicant: not in its database, not on a topic it may read
    secrets = [*made.values(), *(value for pair in APPLICANTS.values() for value in pair)]
    assert await nodes.application(CQ, wang, nodes.officer(CQ)) is None
    assert await rows_mentioning(nodes.urls[CQ], *secrets) == []
    for topic in (events_topic(SC, "jobs"), events_topic(ZJ, "jobs"), inbox_topic(CQ, "jobs")):
        for record in await consume_all(nodes.bootstrap, topic, 1_000, timeout_s=3):
            assert record.value is not None
            assert not [s for s in secrets if s.encode() in record.value], (topic, record.value[:200])

    # every directed message delivered again changes nothing
    holdings = {
        (p, worker): await nodes.application(p, made[worker], nodes.officer(p)) for p in (SC, ZJ) for worker in made
    }
    vacancies_before = await nodes.vacancies(vacancy_id)
    stale_before = messages(CHANGED, "stale") + messages(SUBMITTED, "stale")
    duplicates_before = duplicates()
    producer = AIOKafkaProducer(bootstrap_servers=nodes.bootstrap)
    await producer.start()
    resent = 0
    try:
        for topic in (inbox_topic(SC, "jobs"), inbox_topic(ZJ, "jobs")):
            for record in await consume_all(nodes.bootstrap, topic, 1_000, timeout_s=3):
                if dict(record.headers)["ce_type"] == RECEIPT.encode():
                    continue
                await producer.send_and_wait(topic, record.value, key=record.key, headers=list(record.headers))
                resent += 1
    finally:
        await producer.stop()
    assert resent >= 3 + 4 + 2 + 1  # 3 submissions, wang's 4 changes, 2 offers, li's hire, zhang's refusal

    async def absorbed() -> bool:
        return duplicates() >= duplicates_before + resent

    await eventually(absorbed, timeout_s=20)
    after = {
        (p, worker): await nodes.application(p, made[worker], nodes.officer(p)) for p in (SC, ZJ) for worker in made
    }
    assert after == holdings and await nodes.vacancies(vacancy_id) == vacancies_before
    assert messages(CHANGED, "stale") + messages(SUBMITTED, "stale") == stale_before, "the inbox stopped each one"
    assert await placements(nodes.urls[SC]) == sorted([(wang, SC, ZJ), (made["li"], SC, ZJ)])

"""Placement statistics between real nodes — Sichuan (510000), Zhejiang (330000), Chongqing (500000) — on a broker
of their own, over real HTTP, on SQLite and PostgreSQL.

A Sichuan worker is hired by a Zhejiang employer: the hire is recorded at both ends through the placements service
layer (as the applications part does at the hire and when the hired message reaches home). Every node's API then
reports Sichuan outbound 1 to Zhejiang and Zhejiang inbound 1 from Sichuan for the month of the hire in China, its
occupation and target group; Chongqing holds the counts and no placement. Every snapshot delivered again, and an
old snapshot re-sent under a new event id, change nothing. The same hire made through the applications API (a
Zhejiang officer hires a Sichuan applicant) is counted once on both sides on every node.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from sqlalchemy import select

from labornet.jobs.adapters.tables import placement
from labornet.jobs.app import create_app
from labornet.jobs.domain.placements import PLACEMENTS_PUBLISHED, PlacementSnapshot, month_of
from labornet.jobs.service_layer.placements import record_hire
from labornet.shared.broker import EmbeddedBroker
from labornet.shared.clock import today_in_china
from labornet.shared.db import create_engine, sessionmaker
from labornet.shared.envelope import Envelope, encode_data
from labornet.shared.keys import NodeKeys, ensure_node_keys
from labornet.shared.settings import Settings
from labornet.shared.signing import Signer
from labornet.shared.testing import bearer, consume_all, eventually, serving
from labornet.shared.topics import events_topic

pytestmark = pytest.mark.integration

PROVINCES = ("510000", "330000", "500000")
SC, ZJ, CQ = PROVINCES
APPLICATION = f"{SC}-A-{uuid.uuid4().hex[:20].upper()}"
HIRED_AT = datetime(2026, 3, 31, 16, 30, tzinfo=UTC)  # 1 April, 00:30 in China: an April hire
APRIL = {"month_from": "2026-04", "month_to": "2026-04", "occupation_code": "7112", "target_group": "migrant-workers"}


@pytest.fixture(scope="module")
def federation_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, NodeKeys]]:
    """Keys and a trust list for the three provinces of these tests."""
    root = tmp_path_factory.mktemp("placements-federation")
    keys = {p: ensure_node_keys(p, root / "keys" / p, root / "trust-list.json") for p in PROVINCES}
    return root, keys


@dataclasses.dataclass
class Federation:
    clients: dict[str, httpx.AsyncClient]
    keys: dict[str, NodeKeys]
    urls: dict[str, str]
    bootstrap: str

    async def statistics(self, at: str, province: str, **params: str) -> dict[str, Any]:
        response = await self.clients[at].get(
            "/api/v1/placements/statistics",
            params={"province": province, **params},
            headers=bearer(self.keys[at], "worker", sub=f"worker-{at}"),
        )
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    async def everything(self) -> dict[tuple[str, str], Any]:
        """What every node's API says of every province (the figures, not the bookkeeping)."""
        return {(at, province): await self.statistics(at, province) for at in PROVINCES for province in PROVINCES}

    async def record(self, province: str) -> bool:
        engine = create_engine(self.urls[province])
        try:
            async with sessionmaker(engine)() as session, session.begin():
                return await record_hire(
                    session,
                    application_id=APPLICATION,
                    origin_province=SC,
                    destination_province=ZJ,
                    hired_at=HIRED_AT,
                    occupation_code="7112",
                    target_groups=["migrant-workers"],
                )
        finally:
            await engine.dispose()


@pytest.fixture
async def nodes(
    new_database_url: Callable[[], Awaitable[str]],
    federation_keys: tuple[Path, dict[str, NodeKeys]],
    private_broker: EmbeddedBroker,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Federation]:
    root, keys = federation_keys
    urls = {p: await new_database_url() for p in PROVINCES}
    monkeypatch.setenv("LABORNET_JOBS_PLACEMENTS_PUBLISH_CHECK_INTERVAL_S", "0.2")

    def settings_for(province: str) -> Settings:
        return Settings(
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
        )

    async with contextlib.AsyncExitStack() as stack:
        clients = {p: await stack.enter_async_context(serving(create_app(settings_for(p)))) for p in PROVINCES}

        async def all_ready() -> bool:
            return all([(await c.get("/readyz")).status_code == 200 for c in clients.values()])

        await eventually(all_ready, timeout_s=60)
        yield Federation(clients, keys, urls, private_broker.bootstrap_servers)


def stale_snapshots(origin: str) -> float:
    labels = {"origin": origin, "result": "stale"}
    return REGISTRY.get_sample_value("labornet_jobs_placement_snapshots_total", labels) or 0.0


def duplicates(topic: str) -> float:
    labels = {"service": "jobs", "topic": topic, "outcome": "duplicate"}
    return REGISTRY.get_sample_value("labornet_events_consumed_total", labels) or 0.0


async def placements_held(database_url: str) -> list[str]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            return [row.application_id for row in await connection.execute(select(placement))]
    finally:
        await engine.dispose()


async def test_a_sichuan_worker_hired_in_zhejiang_counts_once_on_both_sides_everywhere(nodes: Federation) -> None:
    # the owner records the hire with the hire, the home when the hired message arrives; a repeat changes nothing
    assert await nodes.record(ZJ)
    assert await nodes.record(SC)
    assert not await nodes.record(SC)

    async def counted_everywhere() -> bool:
        for at in PROVINCES:
            outbound = (await nodes.statistics(at, SC, counterpart_province=ZJ, **APRIL))["outbound"]
            inbound = (await nodes.statistics(at, ZJ, counterpart_province=SC, **APRIL))["inbound"]
            if (outbound["total"], inbound["total"]) != (1, 1):
                return False
        return True

    await eventually(counted_everywhere, timeout_s=30)
    for at in PROVINCES:
        sichuan = await nodes.statistics(at, SC)
        assert sichuan["source"] == ("own" if at == SC else "snapshot")
        assert sichuan["outbound"]["cells"] == [
            {
                "direction": "outbound",
                "counterpart_province": ZJ,
                "month": "2026-04",
                "occupation_code": "7112",
                "hires": 1,
                "target_groups": {"migrant-workers": 1},
            }
        ]
        assert sichuan["inbound"]["total"] == 0
        zhejiang = await nodes.statistics(at, ZJ)
        assert (zhejiang["outbound"]["total"], zhejiang["inbound"]["by_province"]) == (
            0,
            [{"province": SC, "hires": 1}],
        )
        march = await nodes.statistics(at, SC, month_from="2026-03", month_to="2026-03")
        assert march["outbound"]["total"] == 0  # 16:30 UTC on 31 March is April in China
        overview = await nodes.clients[at].get(
            "/api/v1/placements/statistics/federation", headers=bearer(nodes.keys[at], "officer")
        )
        assert overview.status_code == 200, overview.text
        totals = {item["province"]: (item["outbound"], item["inbound"]) for item in overview.json()["provinces"]}
        assert (totals[SC], totals[ZJ], totals[CQ], overview.json()["placements"]) == ((1, 0), (0, 1), (0, 0), 1)
    # Chongqing holds the counts, not the placement
    assert await placements_held(nodes.urls[CQ]) == []
    assert await placements_held(nodes.urls[SC]) == await placements_held(nodes.urls[ZJ]) == [APPLICATION]

    # Sichuan's snapshots delivered again (dropped by event id), and an older, empty one sent under a new event id,
    # properly signed by Sichuan: only the generation can stop it
    before = await nodes.everything()
    topic = events_topic(SC, "jobs")
    records = [
        record
        for record in await consume_all(nodes.bootstrap, topic, 1, timeout_s=10)
        if dict(record.headers)["ce_type"] == PLACEMENTS_PUBLISHED.encode()
    ]
    assert records
    latest = Envelope.from_kafka(records[-1].key, records[-1].value, records[-1].headers)
    generation = latest.json()["generation"]
    # the generation before the latest (or the latest itself: an equal generation changes nothing either)
    older = PlacementSnapshot(origin=SC, month="2026-04", generation=max(generation - 1, 1), as_of=HIRED_AT, cells=[])
    again = Signer.from_file(nodes.keys[SC].signing_key, SC).sign(
        dataclasses.replace(latest, id=str(uuid.uuid4()), data=encode_data(older))
    )
    stale_before, duplicates_before = stale_snapshots(SC), duplicates(topic)
    producer = AIOKafkaProducer(bootstrap_servers=nodes.bootstrap)
    await producer.start()
    try:
        for record in records:
            await producer.send_and_wait(topic, record.value, key=record.key, headers=list(record.headers))
        key, value, headers = again.to_kafka()
        await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()

    async def absorbed() -> bool:  # Zhejiang and Chongqing read Sichuan's stream
        return stale_snapshots(SC) >= stale_before + 2 and duplicates(topic) >= duplicates_before + 2 * len(records)

    await eventually(absorbed, timeout_s=30)
    assert await nodes.everything() == before


async def test_a_hire_through_the_applications_api_is_counted_on_every_node(nodes: Federation) -> None:
    sc, zj = nodes.clients[SC], nodes.clients[ZJ]
    officer = bearer(nodes.keys[ZJ], "officer", sub="officer-330000")
    worker = bearer(nodes.keys[SC], "worker", sub="worker-wang")
    posting = {
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
    posted = await zj.post("/api/v1/vacancies", json=posting, headers=officer)
    assert posted.status_code == 201, posted.text
    vacancy_id = posted.json()["id"]

    async def replicated() -> bool:
        return (await sc.get(f"/api/v1/vacancies/{vacancy_id}")).status_code == 200

    await eventually(replicated, timeout_s=30)
    profile = {
        "name": "王小明",
        "phone": "13812345678",
        "skills": ["川菜"],
        "certificates": [],
        "experience_years": 6,
        "expected_salary": 8000,
        "available_from": today_in_china().isoformat(),
        "target_groups": ["migrant-workers", "lifted-out-of-poverty"],
        "cover_note": "在成都做过六年川菜厨师。",
    }
    applied = await sc.post(f"/api/v1/vacancies/{vacancy_id}/applications", json=profile, headers=worker)
    assert applied.status_code == 201, applied.text
    application_id = applied.json()["id"]

    async def received() -> bool:
        return (await zj.get(f"/api/v1/applications/{application_id}", headers=officer)).status_code == 200

    await eventually(received, timeout_s=30)
    start = (today_in_china() + timedelta(days=10)).isoformat()
    for action, body in (("offer", {"version": 1, "salary": 8500, "start_date": start}), ("hire", {"version": 2})):
        step = await zj.post(f"/api/v1/applications/{application_id}/{action}", json=body, headers=officer)
        assert step.status_code == 200, step.text
    month = month_of(datetime.fromisoformat(step.json()["hired_at"]))
    counted = {"month_from": month, "month_to": month, "occupation_code": "5120"}

    async def counted_everywhere() -> bool:
        for at in PROVINCES:
            sichuan = await nodes.statistics(at, SC, counterpart_province=ZJ, **counted)
            zhejiang = await nodes.statistics(at, ZJ, counterpart_province=SC, **counted)
            if (sichuan["outbound"]["total"], zhejiang["inbound"]["total"]) != (1, 1):
                return False
        return True

    await eventually(counted_everywhere, timeout_s=30)
    for at in PROVINCES:
        for group in ("migrant-workers", "lifted-out-of-poverty"):
            assert (await nodes.statistics(at, SC, target_group=group))["outbound"]["total"] == 1
        assert (await nodes.statistics(at, SC, target_group="veterans"))["outbound"]["total"] == 0
        assert (await nodes.statistics(at, SC))["outbound"]["total"] == 1  # two groups, one hire
    assert await placements_held(nodes.urls[CQ]) == []
    assert await placements_held(nodes.urls[SC]) == await placements_held(nodes.urls[ZJ]) == [application_id]

"""A joint recruitment event between real nodes — Chongqing (500000) organises, Sichuan (510000) co-organises,
Zhejiang (330000) looks on — on a broker of their own, over real HTTP, on SQLite and PostgreSQL.

Chongqing creates a Spring Breeze Action event with Sichuan co-organising; both list vacancies of their own
province and every node shows the event with the vacancies of both. Two Sichuan workers register at their home
node; Chongqing takes them and sees their names and phones, every node sees the anonymous counts, Zhejiang holds
nothing personal. A registration after the event is a 409 that writes nothing; the outcomes Chongqing records reach
every node; an update of the event forged by Sichuan is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from sqlalchemy import func, select

from labornet.jobs.adapters.tables import fair_registration
from labornet.jobs.adapters.tables import metadata as jobs_metadata
from labornet.jobs.app import create_app
from labornet.jobs.domain.fair import UPDATED
from labornet.shared.broker import EmbeddedBroker
from labornet.shared.clock import CHINA, utcnow
from labornet.shared.db import create_engine, platform_metadata
from labornet.shared.envelope import Envelope, encode_data
from labornet.shared.keys import NodeKeys
from labornet.shared.settings import Settings
from labornet.shared.signing import Signer
from labornet.shared.testing import assert_problem, bearer, consume_all, eventually, serving
from labornet.shared.topics import events_topic, stream_id

pytestmark = pytest.mark.integration

SC, ZJ, CQ = "510000", "330000", "500000"
PROVINCES = (CQ, SC, ZJ)
WORKERS = {"wang": ("王小明", "13812345678"), "li": ("李秀英", "13912345678")}


@dataclasses.dataclass
class Federation:
    clients: dict[str, httpx.AsyncClient]
    apps: dict[str, FastAPI]
    keys: dict[str, NodeKeys]
    urls: dict[str, str]
    bootstrap: str

    def officer(self, province: str) -> dict[str, str]:
        return bearer(self.keys[province], "officer", sub=f"officer-{province}")

    def worker(self, sub: str) -> dict[str, str]:
        return bearer(self.keys[SC], "worker", sub=sub)

    def admin(self, province: str) -> dict[str, str]:
        return bearer(self.keys[province], "admin", sub=f"admin-{province}")

    def set_clock(self, province: str, moment: datetime) -> None:
        """The node's recruitment events see ``moment`` as now (the rest of the node keeps the real time)."""
        self.apps[province].state.runtime.extras["fairs"].clock = lambda: moment

    async def fair(self, province: str, fair_id: str) -> dict[str, Any] | None:
        response = await self.clients[province].get(f"/api/v1/fairs/{fair_id}")
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    async def publish_vacancy(self, province: str, division: str, title: str) -> str:
        body = {
            "employer_name": "某建设工程有限公司",
            "employer_credit_code": "91350100M000100Y43",
            "title": title,
            "occupation_code": "7114",
            "division_code": division,
            "headcount": 20,
            "salary_min": 7000,
            "salary_max": 9000,
            "employment_type": "full-time",
            "contact": "023-60000000",
            "closing_date": (date.today() + timedelta(days=60)).isoformat(),
        }
        response = await self.clients[province].post("/api/v1/vacancies", json=body, headers=self.officer(province))
        assert response.status_code == 201, response.text
        vacancy_id: str = response.json()["id"]
        return vacancy_id


@pytest.fixture
async def nodes(
    new_database_url: Callable[[], Awaitable[str]],
    federation_dir: Path,
    node_keys: dict[str, NodeKeys],
    private_broker: EmbeddedBroker,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Federation]:
    monkeypatch.setenv("LABORNET_JOBS_FAIRS_STATISTICS_INTERVAL_S", "0.2")
    monkeypatch.setenv("LABORNET_JOBS_FAIRS_SWEEP_INTERVAL_S", "0.5")
    urls = {p: await new_database_url() for p in PROVINCES}

    def settings_for(province: str) -> Settings:
        return Settings(  # type: ignore[call-arg]
            province=province,
            service="jobs",
            data_dir=federation_dir,
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

    apps = {p: create_app(settings_for(p)) for p in PROVINCES}
    async with contextlib.AsyncExitStack() as stack:
        clients = {p: await stack.enter_async_context(serving(apps[p])) for p in PROVINCES}

        async def all_ready() -> bool:
            return all([(await c.get("/readyz")).status_code == 200 for c in clients.values()])

        await eventually(all_ready, timeout_s=60)
        yield Federation(clients, apps, node_keys, urls, private_broker.bootstrap_servers)


async def personal_data_in(database_url: str, *secrets: str) -> list[str]:
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


async def registrations_in(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            return int((await connection.execute(select(func.count()).select_from(fair_registration))).scalar_one())
    finally:
        await engine.dispose()


async def test_a_spring_breeze_event_organised_by_chongqing_with_sichuan(nodes: Federation) -> None:
    cq, sc, zj = nodes.clients[CQ], nodes.clients[SC], nodes.clients[ZJ]
    starts = date.today() + timedelta(days=10)
    event = {
        "title": "2027 春风行动 川渝劳务协作专场招聘会",
        "description": "川渝两地联合举办，现场签约，提供包车返岗。",
        "campaign": "spring-breeze-action",
        "co_organisers": [SC],
        "mode": "venue",
        "venue": {"division_code": "500103", "address": "重庆市渝中区人力资源市场一楼"},
        "starts_on": starts.isoformat(),
        "ends_on": (starts + timedelta(days=2)).isoformat(),
        "capacity": 500,
    }
    created = await cq.post("/api/v1/fairs", json=event, headers=nodes.officer(CQ))
    assert created.status_code == 201, created.text
    fair_id = created.json()["id"]
    assert fair_id.startswith(f"{CQ}-F-")
    cq_vacancy = await nodes.publish_vacancy(CQ, "500103", "钢筋工")
    sc_vacancy = await nodes.publish_vacancy(SC, "510104", "川菜厨师")

    async def replicated() -> bool:
        return all([await nodes.fair(p, fair_id) is not None for p in (SC, ZJ)])

    await eventually(replicated, timeout_s=30)
    # only the organiser changes the event: Sichuan's officers cannot, at their node or anywhere
    assert_problem(
        await sc.patch(f"/api/v1/fairs/{fair_id}", json={"title": "改名", "version": 1}, headers=nodes.officer(SC)),
        403,
        "organised by 500000",
    )
    # Zhejiang neither organises nor co-organises: 403, and it writes nothing
    assert_problem(
        await zj.put(f"/api/v1/fairs/{fair_id}/vacancies", json={"vacancy_ids": []}, headers=nodes.officer(ZJ)),
        403,
        "neither organises",
    )

    async def vacancies_everywhere() -> bool:
        return all(
            [
                (await nodes.clients[p].get(f"/api/v1/vacancies/{v}")).status_code == 200
                for p in PROVINCES
                for v in (cq_vacancy, sc_vacancy)
            ]
        )

    await eventually(vacancies_everywhere, timeout_s=30)
    # Chongqing holds Sichuan's vacancy in its replica, but may list only its own
    assert_problem(
        await cq.put(
            f"/api/v1/fairs/{fair_id}/vacancies", json={"vacancy_ids": [sc_vacancy]}, headers=nodes.officer(CQ)
        ),
        422,
        "belongs to 510000",
    )
    for province, vacancy_id in ((CQ, cq_vacancy), (SC, sc_vacancy)):
        listed = await nodes.clients[province].put(
            f"/api/v1/fairs/{fair_id}/vacancies", json={"vacancy_ids": [vacancy_id]}, headers=nodes.officer(province)
        )
        assert listed.status_code == 200, listed.text
        assert [v["id"] for v in listed.json()["vacancies"]] == [vacancy_id]

    async def listed_everywhere() -> bool:
        for province in PROVINCES:
            found = await nodes.fair(province, fair_id)
            if found is None:
                return False
            shown = {(item["province"], v["id"], v["known"]) for item in found["listings"] for v in item["vacancies"]}
            if shown != {(CQ, cq_vacancy, True), (SC, sc_vacancy, True)}:
                return False
        return True

    await eventually(listed_everywhere, timeout_s=30)
    for province in PROVINCES:
        page = (await nodes.clients[province].get("/api/v1/fairs", params={"province": SC, "phase": "upcoming"})).json()
        assert [item["id"] for item in page["items"]] == [fair_id], province

    # two Sichuan workers register at home; Chongqing takes them
    registered = {}
    for sub, (name, phone) in WORKERS.items():
        response = await sc.post(
            f"/api/v1/fairs/{fair_id}/registrations",
            json={"name": name, "phone": phone, "occupations": ["5120"]},
            headers=nodes.worker(sub),
        )
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "submitted"
        registered[sub] = response.json()["id"]
    assert_problem(
        await sc.post(
            f"/api/v1/fairs/{fair_id}/registrations",
            json={"name": "王小明", "phone": "13812345678"},
            headers=nodes.worker("wang"),
        ),
        409,
        "already",
    )

    async def accepted_at_home() -> bool:
        for sub in WORKERS:
            items = (await sc.get("/api/v1/fairs/registrations", headers=nodes.worker(sub))).json()["items"]
            if [item["status"] for item in items] != ["accepted"]:
                return False
        return True

    await eventually(accepted_at_home, timeout_s=30)
    seen = (await cq.get(f"/api/v1/fairs/{fair_id}/registrations", headers=nodes.officer(CQ))).json()["items"]
    assert sorted((item["id"], item["name"], item["phone"], item["home_province"]) for item in seen) == sorted(
        (registered[sub], name, phone, SC) for sub, (name, phone) in WORKERS.items()
    )
    assert_problem(await sc.get(f"/api/v1/fairs/{fair_id}/registrations", headers=nodes.officer(SC)), 403)
    assert_problem(await zj.get(f"/api/v1/fairs/{fair_id}/registrations", headers=nodes.officer(ZJ)), 403)

    async def counted_everywhere() -> bool:
        for province in PROVINCES:
            found = await nodes.fair(province, fair_id)
            if found is None or found["statistics"]["by_home_province"] != [
                {"home_province": SC, "accepted": 2, "refused": 0, "cancelled": 0}
            ]:
                return False
        return True

    await eventually(counted_everywhere, timeout_s=30)
    secrets = [value for pair in WORKERS.values() for value in pair]
    assert await personal_data_in(nodes.urls[ZJ], *secrets) == []
    for province in (CQ, SC):  # broadcast streams carry no person
        records = await consume_all(nodes.bootstrap, events_topic(province, "jobs"), 3, timeout_s=10)
        assert records and not [r for r in records for s in secrets if r.value and s.encode() in r.value]

    # after the event a registration is refused at home and nothing is written or sent
    after_the_end = datetime.combine(starts + timedelta(days=3), datetime.min.time(), tzinfo=CHINA) + timedelta(hours=9)
    nodes.set_clock(SC, after_the_end)
    before = await registrations_in(nodes.urls[SC])
    assert_problem(
        await sc.post(
            f"/api/v1/fairs/{fair_id}/registrations",
            json={"name": "赵六", "phone": "13712345678"},
            headers=nodes.worker("zhao"),
        ),
        409,
        "closed",
    )
    assert await registrations_in(nodes.urls[SC]) == before
    assert (await sc.get("/api/v1/fairs/registrations", headers=nodes.worker("zhao"))).json()["items"] == []

    # Chongqing records the outcomes on the last day; every node shows them
    nodes.set_clock(CQ, after_the_end - timedelta(days=1))
    outcomes = {"employers_attending": 120, "jobseekers_attending": 3400, "intentions_reached": 860, "hires": 310}
    recorded = await cq.post(f"/api/v1/fairs/{fair_id}/outcomes", json=outcomes, headers=nodes.officer(CQ))
    assert recorded.status_code == 200, recorded.text
    assert recorded.json()["status"] == "concluded" and recorded.json()["statistics"]["accepted"] == 2

    async def concluded_everywhere() -> bool:
        for province in PROVINCES:
            found = await nodes.fair(province, fair_id)
            if found is None or found["outcomes"] is None or found["outcomes"]["hires"] != 310:
                return False
        return True

    await eventually(concluded_everywhere, timeout_s=30)

    # an update of Chongqing's event forged by Sichuan (signed with its own key, on its own stream) is refused
    held = await nodes.fair(ZJ, fair_id)
    assert held is not None
    fair = {k: v for k, v in held.items() if k not in ("phase", "registration_open", "statistics", "listings")}
    fair.update(version=held["version"] + 5, title="伪造的招聘会", status="scheduled", outcomes=None)
    topic = events_topic(SC, "jobs")
    forged = Envelope(
        id=str(uuid.uuid4()),
        source=f"/labornet/{SC}/jobs",
        type=UPDATED,
        time=utcnow().astimezone(UTC),
        partitionkey=fair_id,
        originprovince=SC,
        stream=stream_id(SC, topic),
        streamseq=10_000,
        schemaversion=1,
        data=encode_data(fair),
        subject=fair_id,
    )
    signed = Signer.from_file(nodes.keys[SC].signing_key, SC).sign(forged)
    producer = AIOKafkaProducer(bootstrap_servers=nodes.bootstrap)
    await producer.start()
    try:
        key, value, headers = signed.to_kafka()
        await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()

    async def quarantined_everywhere() -> bool:
        for province in (CQ, ZJ):
            page = (await nodes.clients[province].get("/admin/v1/quarantine", headers=nodes.admin(province))).json()
            if not [item for item in page["items"] if item["event_id"] == forged.id]:
                return False
        return True

    await eventually(quarantined_everywhere, timeout_s=30)
    for province in PROVINCES:
        found = await nodes.fair(province, fair_id)
        assert found is not None and (found["title"], found["status"]) == (event["title"], "concluded"), province

"""Three real jobs nodes (Sichuan, Zhejiang, Chongqing) on a broker of their own, over real HTTP.

A Zhejiang officer posts a vacancy; it is searchable in Sichuan and Chongqing; a Sichuan worker subscribed to
the occupation gets exactly one match; update and close propagate; redelivering every event changes nothing; a
Sichuan officer cannot modify it; bad inputs are refused with nothing written. A vacancy names only a brand that
its node's brands service holds (with Sichuan and Zhejiang brands services).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY

from labornet.brands.app import create_app as create_brands_app
from labornet.jobs.adapters.tables import vacancy
from labornet.jobs.app import create_app
from labornet.shared.broker import EmbeddedBroker
from labornet.shared.clock import today_in_china
from labornet.shared.db import create_engine
from labornet.shared.keys import NodeKeys
from labornet.shared.settings import Settings
from labornet.shared.signing import SignatureRejected, TrustList
from labornet.shared.testing import assert_problem, bearer, consume_all, eventually, serving
from labornet.shared.topics import events_topic

pytestmark = pytest.mark.integration

PROVINCES = ("510000", "330000", "500000")


def draft(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "employer": {"name": "杭州川味餐饮有限公司", "credit_code": "91350100M000100Y43"},
        "title": "川菜厨师 Sichuan chef",
        "description": "负责川菜热菜制作，提供住宿。",
        "occupation_code": "5120",
        "division_code": "330106",
        "headcount": 3,
        "salary": {"min": 6000, "max": 9000},
        "employment_type": "full-time",
        "target_groups": ["migrant-workers"],
        "skills": ["川菜", "刀工"],
        "contact": "0571-88000000",
        "closing_date": (today_in_china() + timedelta(days=30)).isoformat(),
    }
    body.update(overrides)
    return body


def node_settings(
    data_dir: Path, broker: EmbeddedBroker, province: str, service: str, database_url: str, **extra: Any
) -> Settings:
    return Settings(  # type: ignore[call-arg]
        province=province,
        service=service,
        data_dir=data_dir,
        database_url=database_url,
        kafka_bootstrap_servers=broker.bootstrap_servers,
        kafka_session_timeout_ms=3000,
        kafka_heartbeat_interval_ms=500,
        log_json=False,
        **extra,
    )


@contextlib.asynccontextmanager
async def federation(
    settings_for: Callable[[str], Settings],
) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    async with contextlib.AsyncExitStack() as stack:
        clients = {p: await stack.enter_async_context(serving(create_app(settings_for(p)))) for p in PROVINCES}

        async def all_ready() -> bool:
            return all([(await c.get("/readyz")).status_code == 200 for c in clients.values()])

        await eventually(all_ready, timeout_s=60)
        yield clients


async def test_vacancy_travels_across_three_nodes(
    new_database_url: Callable[[], Awaitable[str]],
    federation_dir: Path,
    node_keys: dict[str, NodeKeys],
    private_broker: EmbeddedBroker,
) -> None:
    urls = {p: await new_database_url() for p in PROVINCES}

    def settings_for(province: str) -> Settings:
        return node_settings(federation_dir, private_broker, province, "jobs", urls[province])

    zj_officer = bearer(node_keys["330000"], "officer", sub="zj-officer")
    sc_worker = bearer(node_keys["510000"], "worker", sub="wang-xiaoming")
    async with federation(settings_for) as nodes:
        sc, zj, cq = nodes["510000"], nodes["330000"], nodes["500000"]
        subscribed = await sc.post(
            "/api/v1/me/subscriptions", headers=sc_worker, json={"occupation_codes": ["5120"], "provinces": ["330000"]}
        )
        assert subscribed.status_code == 201, subscribed.text

        # bad inputs: 422 naming the field, nothing written
        for body, field in [
            (draft(employer={"name": "x", "credit_code": "91350100M000100Y44"}), "credit_code"),
            (draft(salary={"min": 9000, "max": 6000}), "salary"),
            (draft(division_code="510104"), "division_code"),
            (draft(division_code="339900"), "division_code"),
            (draft(closing_date="2020-01-01"), "closing_date"),
            (draft(description="长" * 5001), "description"),
            (draft(headcount="three"), "headcount"),
            (draft(occupation_code="0000"), "occupation_code"),
        ]:
            problem = assert_problem(await zj.post("/api/v1/vacancies", headers=zj_officer, json=body), 422)
            assert field in str(problem), problem
        assert_problem(await zj.post("/api/v1/vacancies", headers=zj_officer, content=b"{not json"), 422)
        assert (await zj.get("/api/v1/vacancies")).json()["total"] == 0

        posted = await zj.post("/api/v1/vacancies", headers=zj_officer, json=draft())
        assert posted.status_code == 201, posted.text
        vacancy = posted.json()
        vid = vacancy["id"]
        assert vid.startswith("330000-V-") and vacancy["version"] == 1 and posted.headers["ETag"] == '"1"'
        assert vacancy["city"] == "杭州市"

        async def searchable_everywhere() -> bool:
            for node in (sc, cq):
                found = (await node.get("/api/v1/vacancies", params={"q": "厨师"})).json()
                if vid not in [v["id"] for v in found["items"]]:
                    return False
            return True

        await eventually(searchable_everywhere, timeout_s=30)
        english = (await cq.get("/api/v1/vacancies", params={"q": "chef", "province": "330000"})).json()
        assert [v["id"] for v in english["items"]] == [vid]

        async def matched() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = (await sc.get("/api/v1/me/matches", headers=sc_worker)).json()["items"]
            return items

        async def one_match() -> bool:
            return len(await matched()) == 1

        await eventually(one_match)

        # a Sichuan officer cannot change Zhejiang's vacancy, neither on its replica nor at the owner
        sc_officer = bearer(node_keys["510000"], "officer", sub="sc-officer")
        assert_problem(
            await sc.patch(f"/api/v1/vacancies/{vid}", headers=sc_officer, json={"version": 1, "headcount": 9}), 403
        )
        assert_problem(
            await zj.patch(f"/api/v1/vacancies/{vid}", headers=sc_officer, json={"version": 1, "headcount": 9}),
            403,
            "accepts tokens issued by labornet:330000",
        )

        # update with optimistic concurrency
        assert_problem(await zj.patch(f"/api/v1/vacancies/{vid}", headers=zj_officer, json={"headcount": 5}), 428)
        changed = await zj.patch(
            f"/api/v1/vacancies/{vid}",
            headers=zj_officer | {"If-Match": '"1"'},
            json={"salary": {"min": 7000, "max": 9500}},
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["version"] == 2
        stale = await zj.patch(f"/api/v1/vacancies/{vid}", headers=zj_officer, json={"version": 1, "headcount": 4})
        assert_problem(stale, 409, "version 2")

        async def updated_on_replicas() -> bool:
            return all([(await n.get(f"/api/v1/vacancies/{vid}")).json()["salary_min"] == 7000 for n in (sc, cq)])

        await eventually(updated_on_replicas)
        assert len(await matched()) == 1, "an update never notifies twice"

        closed = await zj.post(
            f"/api/v1/vacancies/{vid}/close", headers=zj_officer, json={"reason": "filled", "version": 2}
        )
        assert closed.json()["status"] == "filled"

        async def closed_on_replicas() -> bool:
            return all([(await n.get(f"/api/v1/vacancies/{vid}")).json()["status"] == "filled" for n in (sc, cq)])

        await eventually(closed_on_replicas)
        assert (await sc.get("/api/v1/vacancies", params={"q": "厨师"})).json()["total"] == 0
        assert (await sc.get("/api/v1/vacancies", params={"q": "厨师", "status": "filled"})).json()["total"] == 1
        matches = await matched()
        assert len(matches) == 1 and matches[0]["vacancy_status"] == "filled"

        # redeliver every event of Zhejiang's stream: nothing changes anywhere
        topic = events_topic("330000", "jobs")
        records = await consume_all(private_broker.bootstrap_servers, topic, 3)
        assert len(records) == 3
        stale_before = REGISTRY.get_sample_value("labornet_jobs_replica_changes_total", {"result": "stale"}) or 0
        duplicate_labels = {"service": "jobs", "topic": topic, "outcome": "duplicate"}
        duplicates_before = REGISTRY.get_sample_value("labornet_events_consumed_total", duplicate_labels) or 0
        producer = AIOKafkaProducer(bootstrap_servers=private_broker.bootstrap_servers)
        await producer.start()
        try:
            for record in records:
                await producer.send_and_wait(topic, record.value, key=record.key, headers=list(record.headers))
        finally:
            await producer.stop()

        async def duplicates_absorbed() -> bool:
            consumed = REGISTRY.get_sample_value("labornet_events_consumed_total", duplicate_labels) or 0
            return consumed >= duplicates_before + 6  # three records, two replica nodes

        await eventually(duplicates_absorbed)
        for node in (sc, cq):
            held = (await node.get(f"/api/v1/vacancies/{vid}")).json()
            assert (held["version"], held["status"], held["salary_min"]) == (3, "filled", 7000)
        assert len(await matched()) == 1
        assert (
            REGISTRY.get_sample_value("labornet_jobs_replica_changes_total", {"result": "stale"}) or 0
        ) == stale_before


async def test_a_replica_that_lost_events_heals_from_the_origin_snapshot(
    new_database_url: Callable[[], Awaitable[str]],
    federation_dir: Path,
    node_keys: dict[str, NodeKeys],
    private_broker: EmbeddedBroker,
) -> None:
    urls = {p: await new_database_url() for p in PROVINCES}

    def settings_for(province: str) -> Settings:
        return node_settings(federation_dir, private_broker, province, "jobs", urls[province])

    zj_officer = bearer(node_keys["330000"], "officer", sub="zj-officer")
    sc_admin = bearer(node_keys["510000"], "admin", sub="sc-operator")
    async with federation(settings_for) as nodes:
        sc, zj = nodes["510000"], nodes["330000"]
        ids = [
            (await zj.post("/api/v1/vacancies", headers=zj_officer, json=draft(title=f"焊工 welder {n}"))).json()["id"]
            for n in range(5)
        ]
        closed = await zj.post(
            f"/api/v1/vacancies/{ids[0]}/close", headers=zj_officer, json={"reason": "withdrawn", "version": 1}
        )
        assert closed.status_code == 200

        async def replicated() -> bool:
            # four open and the withdrawn one: every event of the six has been applied, none is still in flight
            open_now = (await sc.get("/api/v1/vacancies", params={"province": "330000"})).json()["total"]
            withdrawn = await sc.get(f"/api/v1/vacancies/{ids[0]}")
            return open_now == 4 and withdrawn.status_code == 200 and withdrawn.json()["status"] == "withdrawn"

        await eventually(replicated)

        # the replica loses what the bus brought (as if the broker had lost its log before delivery)
        engine = create_engine(urls["510000"])
        async with engine.begin() as connection:
            await connection.execute(vacancy.delete().where(vacancy.c.owner_province == "330000"))
        await engine.dispose()
        assert (await sc.get("/api/v1/vacancies", params={"province": "330000"})).json()["total"] == 0

        assert_problem(await sc.post("/admin/v1/replica/heal", headers=sc_admin, json={"origin": "510000"}), 422)
        for address in (
            "ýÔ…",
            "ftp://330000.example",
            "http://",
            "file:///etc/passwd",
            "https://ø\udb65\udf7d",
            "http://a:99999",
        ):
            # sent as JSON with its escapes (a lone surrogate is valid JSON, not encodable UTF-8)
            bad = json.dumps({"origin": "330000", "base_url": address}).encode()
            json_body = sc_admin | {"Content-Type": "application/json"}
            assert_problem(await sc.post("/admin/v1/replica/heal", headers=json_body, content=bad), 422, "base_url")
        healed = await sc.post(
            "/admin/v1/replica/heal", headers=sc_admin, json={"origin": "330000", "base_url": str(zj.base_url)}
        )
        assert healed.status_code == 200, healed.text
        repaired = ("differing_rows", "inserted", "replaced", "deleted")
        assert [healed.json()[k] for k in repaired] == [5, 5, 0, 0]
        assert (await sc.get("/api/v1/vacancies", params={"province": "330000"})).json()["total"] == 4
        assert (await sc.get(f"/api/v1/vacancies/{ids[0]}")).json()["status"] == "withdrawn"
        again = (
            await sc.post(
                "/admin/v1/replica/heal", headers=sc_admin, json={"origin": "330000", "base_url": str(zj.base_url)}
            )
        ).json()
        assert [again[k] for k in repaired] == [0, 0, 0, 0], "healing twice changes nothing"
        assert again["in_sync"] is True and again["origin_rows"] == 5

        # the page verifies against the trust list as served, and not once a byte of it changes
        page = await zj.get("/api/v1/federation/vacancies/snapshot?after=&limit=200")
        trust = TrustList.load(federation_dir / "trust-list.json")
        key_id, signature = page.headers["X-LaborNet-Key-Id"], page.headers["X-LaborNet-Signature"]
        context = "/api/v1/federation/vacancies/snapshot?after=&limit=200"
        assert trust.verify_document("330000", key_id, signature, context, page.content).province == "330000"
        with pytest.raises(SignatureRejected):
            trust.verify_document("330000", key_id, signature, context, page.content.replace(b"welder", b"WELDER"))


async def test_a_vacancy_names_a_brand_its_node_s_brand_register_holds(
    new_database_url: Callable[[], Awaitable[str]],
    federation_dir: Path,
    node_keys: dict[str, NodeKeys],
    private_broker: EmbeddedBroker,
) -> None:
    """Zhejiang's jobs service asks Zhejiang's brands service, which holds Sichuan's brands as a replica (ADR 0010)."""

    def settings_for(province: str, service: str, database_url: str, **extra: Any) -> Settings:
        return node_settings(federation_dir, private_broker, province, service, database_url, **extra)

    sc_officer = bearer(node_keys["510000"], "officer", sub="sc-officer")
    zj_officer = bearer(node_keys["330000"], "officer", sub="zj-officer")
    async with contextlib.AsyncExitStack() as stack:
        sc_brands = await stack.enter_async_context(
            serving(create_brands_app(settings_for("510000", "brands", await new_database_url())))
        )
        zj_brands = await stack.enter_async_context(
            serving(create_brands_app(settings_for("330000", "brands", await new_database_url())))
        )
        zj_jobs = await stack.enter_async_context(
            serving(
                create_app(
                    settings_for("330000", "jobs", await new_database_url(), jobs_brands_url=str(zj_brands.base_url))
                )
            )
        )

        async def all_ready() -> bool:
            return all([(await c.get("/readyz")).status_code == 200 for c in (sc_brands, zj_brands, zj_jobs)])

        await eventually(all_ready, timeout_s=60)
        brand = {
            "name_zh": "川厨师",
            "division_code": "510100",
            "category": "catering",
            "level": "provincial",
            "cultivating_body": {"type": "regional-public", "name": "四川省人力资源和社会保障厅"},
            "description": "川菜烹饪技能品牌",
        }
        registered = await sc_brands.post("/api/v1/brands", headers=sc_officer, json=brand)
        assert registered.status_code == 201, registered.text
        chefs = registered.json()["id"]

        refused = assert_problem(
            await zj_jobs.post("/api/v1/vacancies", headers=zj_officer, json=draft(brand_id="510000-B-NOPE")), 422
        )
        assert refused["errors"] == [  # type: ignore[comparison-overlap]
            {
                "field": "body.brand_id",
                "message": "brand 510000-B-NOPE is not in the federation's brand register; name an existing brand "
                "(GET /api/v1/brands on the brands service) or leave brand_id out",
            }
        ], refused
        assert (await zj_jobs.get("/api/v1/vacancies")).json()["total"] == 0

        async def replicated() -> bool:
            return (await zj_brands.get(f"/api/v1/brands/{chefs}")).status_code == 200

        await eventually(replicated, timeout_s=30)
        posted = await zj_jobs.post("/api/v1/vacancies", headers=zj_officer, json=draft(brand_id=chefs))
        assert posted.status_code == 201, posted.text
        assert posted.json()["brand_id"] == chefs

        revoked = await sc_brands.post(
            f"/api/v1/brands/{chefs}/revoke", headers=sc_officer, json={"version": 1, "reason": "培育主体撤回申请"}
        )
        assert revoked.status_code == 200, revoked.text

        async def revoked_in_zhejiang() -> bool:
            return (await zj_brands.get(f"/api/v1/brands/{chefs}")).json()["status"] == "revoked"

        await eventually(revoked_in_zhejiang, timeout_s=30)
        again = assert_problem(
            await zj_jobs.post("/api/v1/vacancies", headers=zj_officer, json=draft(brand_id=chefs)), 422, "revoked"
        )
        assert again["errors"][0]["field"] == "body.brand_id"  # type: ignore[index]

"""Three real brands nodes (Sichuan, Zhejiang, Chongqing) on a broker of their own, over real HTTP.

A Sichuan officer registers and recognises a brand; it is visible and searchable on every node. A Zhejiang officer
asks for its workers; the demand reaches Sichuan alone, Sichuan answers, and the answer is visible in Zhejiang.
Sichuan and Chongqing register and recognise the same name at the same moment; every node resolves the clash the
same way. A revocation propagates. Redelivering every record of the brand stream and of both inboxes changes
nothing anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY

from labornet.brands.app import create_app
from labornet.shared.broker import EmbeddedBroker
from labornet.shared.clock import today_in_china
from labornet.shared.keys import NodeKeys
from labornet.shared.settings import Settings
from labornet.shared.testing import assert_problem, bearer, consume_all, eventually, serving
from labornet.shared.topics import events_topic, inbox_topic

pytestmark = pytest.mark.integration

PROVINCES = ("510000", "330000", "500000")
SC, ZJ, CQ = PROVINCES
EVERY_STATUS: dict[str, Any] = {"status": ["proposed", "recognised", "revoked"], "limit": 100}


def draft(name_zh: str, division_code: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name_zh": name_zh,
        "division_code": division_code,
        "category": "catering",
        "level": "provincial",
        "cultivating_body": {"type": "regional-public", "name": "人力资源和社会保障厅"},
        "description": "川菜烹饪技能品牌",
        "skills": ["川菜"],
        "destination_regions": ["330000"],
        "people_trained": 12000,
        "jobs_supported": 30000,
    }
    body.update(overrides)
    return body


@contextlib.asynccontextmanager
async def federation(settings_for: Callable[[str], Settings]) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    async with contextlib.AsyncExitStack() as stack:
        clients = {p: await stack.enter_async_context(serving(create_app(settings_for(p)))) for p in PROVINCES}

        async def all_ready() -> bool:
            return all([(await c.get("/readyz")).status_code == 200 for c in clients.values()])

        await eventually(all_ready, timeout_s=60)
        yield clients


async def brand_on(node: httpx.AsyncClient, brand_id: str) -> dict[str, Any] | None:
    response = await node.get(f"/api/v1/brands/{brand_id}")
    return response.json() if response.status_code == 200 else None


def consumed(topic: str, outcome: str) -> float:
    labels = {"service": "brands", "topic": topic, "outcome": outcome}
    return REGISTRY.get_sample_value("labornet_events_consumed_total", labels) or 0


async def test_brands_and_demands_travel_across_three_nodes(
    new_database_url: Callable[[], Awaitable[str]],
    federation_dir: Path,
    node_keys: dict[str, NodeKeys],
    private_broker: EmbeddedBroker,
) -> None:
    urls = {p: await new_database_url() for p in PROVINCES}

    def settings_for(province: str) -> Settings:
        return Settings(
            province=province,
            service="brands",
            data_dir=federation_dir,
            database_url=urls[province],
            kafka_bootstrap_servers=private_broker.bootstrap_servers,
            kafka_session_timeout_ms=3000,
            kafka_heartbeat_interval_ms=500,
            log_json=False,
        )

    officer = {p: bearer(node_keys[p], "officer", sub=f"officer-{p}") for p in PROVINCES}
    async with federation(settings_for) as nodes:
        sc, zj, cq = nodes[SC], nodes[ZJ], nodes[CQ]

        # A Sichuan brand, registered and recognised, is visible and searchable on every node
        registered = await sc.post("/api/v1/brands", headers=officer[SC], json=draft("川菜师傅", "510100"))
        assert registered.status_code == 201, registered.text
        chefs = registered.json()["id"]
        recognised = await sc.post(f"/api/v1/brands/{chefs}/recognise", headers=officer[SC], json={"version": 1})
        assert recognised.status_code == 200, recognised.text

        async def recognised_everywhere() -> bool:
            for node in (zj, cq):
                found = (await node.get("/api/v1/brands", params={"q": "川菜"})).json()["items"]
                if [(b["id"], b["status"], b["version"]) for b in found] != [(chefs, "recognised", 2)]:
                    return False
            return True

        await eventually(recognised_everywhere, timeout_s=30)
        assert await brand_on(zj, chefs) == await brand_on(cq, chefs) == await brand_on(sc, chefs)
        assert_problem(
            await zj.patch(f"/api/v1/brands/{chefs}", headers=officer[ZJ], json={"version": 2, "jobs_supported": 1}),
            403,
            "510000",
        )

        # Zhejiang asks for the brand's workers; Sichuan alone receives the demand and answers it
        today = today_in_china()
        demand = await zj.post(
            "/api/v1/demands",
            headers=officer[ZJ],
            json={
                "brand_id": chefs,
                "workers": 20,
                "division_code": "330106",
                "period": {
                    "start": (today + timedelta(days=14)).isoformat(),
                    "end": (today + timedelta(days=180)).isoformat(),
                },
                "conditions": "月薪8000元起，包食宿",
                "contact": "杭州市人社局 0571-88000000",
            },
        )
        assert demand.status_code == 201, demand.text
        did = demand.json()["id"]

        async def arrived_in_sichuan() -> bool:
            response = await sc.get(f"/api/v1/demands/{did}", headers=officer[SC])
            return response.status_code == 200 and response.json()["side"] == "received"

        await eventually(arrived_in_sichuan)
        answered = await sc.post(
            f"/api/v1/demands/{did}/answer",
            headers=officer[SC],
            json={"decision": "accepted", "workers_offered": 15, "note": "首批15人"},
        )
        assert answered.status_code == 200, answered.text

        async def answer_in_zhejiang() -> bool:
            held = (await zj.get(f"/api/v1/demands/{did}", headers=officer[ZJ])).json()
            return (held["status"], held["workers_offered"], held["answer_note"]) == ("accepted", 15, "首批15人")

        await eventually(answer_in_zhejiang)
        assert_problem(await cq.get(f"/api/v1/demands/{did}", headers=officer[CQ]), 404)

        # Sichuan and Chongqing register and recognise the same name at the same moment
        sister_sc, sister_cq = await asyncio.gather(
            sc.post(
                "/api/v1/brands", headers=officer[SC], json=draft("川妹子", "510100", category="domestic-services")
            ),
            cq.post(
                "/api/v1/brands", headers=officer[CQ], json=draft("川妹子", "500101", category="domestic-services")
            ),
        )
        assert sister_sc.status_code == sister_cq.status_code == 201, (sister_sc.text, sister_cq.text)
        sisters = {SC: sister_sc.json()["id"], CQ: sister_cq.json()["id"]}
        await asyncio.gather(
            sc.post(f"/api/v1/brands/{sisters[SC]}/recognise", headers=officer[SC], json={"version": 1}),
            cq.post(f"/api/v1/brands/{sisters[CQ]}/recognise", headers=officer[CQ], json={"version": 1}),
        )

        async def outcome(node: httpx.AsyncClient) -> list[tuple[Any, ...]]:
            found = (await node.get("/api/v1/brands", params={"q": "川妹子"})).json()["items"]
            return sorted(
                (b["id"], b["recognised_at"], b["display_name"], b["name_conflict"], tuple(b["name_conflict_with"]))
                for b in found
            )

        async def both_recognised_everywhere() -> bool:
            return all([len(await outcome(node)) == 2 for node in nodes.values()])

        await eventually(both_recognised_everywhere)
        views = [await outcome(node) for node in nodes.values()]
        assert views[0] == views[1] == views[2]
        flagged = [view for view in views[0] if view[3]]
        assert len(flagged) == 1, views[0]
        (holder,) = [view for view in views[0] if not view[3]]
        loser = flagged[0]
        assert (holder[1], holder[0][:6]) < (loser[1], loser[0][:6]), "the earliest recognition keeps the name"
        assert holder[2] == "川妹子" and loser[2] in ("川妹子（四川）", "川妹子（重庆）")
        assert (holder[4], loser[4]) == ((loser[0],), (holder[0],))
        stats = (await zj.get("/api/v1/brands/stats")).json()
        assert stats["total"]["name_conflicts"] == 1 and stats["total"]["brands"] == 3

        # A revocation propagates
        revoked = await sc.post(
            f"/api/v1/brands/{chefs}/revoke", headers=officer[SC], json={"version": 2, "reason": "品牌整合"}
        )
        assert revoked.status_code == 200, revoked.text

        async def revoked_everywhere() -> bool:
            for node in (zj, cq):
                held = await brand_on(node, chefs)
                if held is None or (held["status"], held["revocation_reason"]) != ("revoked", "品牌整合"):
                    return False
            return True

        await eventually(revoked_everywhere)
        assert (await cq.get("/api/v1/brands", params={"q": "川菜师傅"})).json()["total"] == 0

        # Redeliver every record of Sichuan's brand stream and of both inboxes: nothing changes anywhere
        async def state() -> list[Any]:
            snapshot: list[Any] = []
            for province, node in nodes.items():
                snapshot.append((await node.get("/api/v1/brands", params=EVERY_STATUS)).json())
                snapshot.append((await node.get("/api/v1/demands", headers=officer[province])).json())
            return snapshot

        before = await state()
        # each inbox: the demand or its answer, and the receipt for the message the other side sent
        streams = {events_topic(SC, "brands"): 5, inbox_topic(SC, "brands"): 2, inbox_topic(ZJ, "brands"): 2}
        readers = {events_topic(SC, "brands"): 2, inbox_topic(SC, "brands"): 1, inbox_topic(ZJ, "brands"): 1}
        records = {topic: await consume_all(private_broker.bootstrap_servers, topic, n) for topic, n in streams.items()}
        assert {topic: len(found) for topic, found in records.items()} == streams
        duplicates_before = {topic: consumed(topic, "duplicate") for topic in streams}
        stale_before = REGISTRY.get_sample_value("labornet_brands_replica_changes_total", {"result": "stale"}) or 0
        producer = AIOKafkaProducer(bootstrap_servers=private_broker.bootstrap_servers)
        await producer.start()
        try:
            for topic, found in records.items():
                for record in found:
                    await producer.send_and_wait(topic, record.value, key=record.key, headers=list(record.headers))
        finally:
            await producer.stop()

        async def duplicates_absorbed() -> bool:
            return all(
                consumed(topic, "duplicate") >= duplicates_before[topic] + streams[topic] * readers[topic]
                for topic in streams
            )

        await eventually(duplicates_absorbed)
        assert await state() == before
        assert (REGISTRY.get_sample_value("labornet_brands_replica_changes_total", {"result": "stale"}) or 0) == (
            stale_before
        )

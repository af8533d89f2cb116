"""Brand use cases, the replica and the demand messages on real databases (SQLite and PostgreSQL) at head.

A :class:`Node` runs the brands use cases against its own database and signs events with its province's key; the
events it wrote are read back from its outbox as the envelopes a partner would receive, and handed to another
node's handlers. That is the bus minus Kafka: the tests decide the order, the duplicates and the replays.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from labornet.brands.adapters.search import SearchParams, plain, search_brands
from labornet.brands.adapters.tables import brand, demand, metadata
from labornet.brands.domain.brand import (
    RECOGNISED,
    REGISTERED,
    REVOKED,
    UPDATED,
    BrandChanges,
    BrandDraft,
    BrandRuleError,
    NameTaken,
    StaleVersion,
)
from labornet.brands.domain.demand import (
    ANSWERED,
    AUTOMATIC,
    POSTED,
    DemandAnswer,
    DemandRequest,
    DemandRuleError,
    OfferTooLarge,
)
from labornet.brands.service_layer.brands import BrandService, present, refresh_gauges
from labornet.brands.service_layer.demands import DemandService
from labornet.shared.clock import today_in_china
from labornet.shared.db import create_engine, readonly_sessionmaker, sessionmaker
from labornet.shared.divisions import load_divisions
from labornet.shared.envelope import Envelope
from labornet.shared.inbox import Handler
from labornet.shared.keys import NodeKeys
from labornet.shared.migrations import upgrade
from labornet.shared.outbox import Outbox
from labornet.shared.paging import InvalidCursor
from labornet.shared.problems import Forbidden, Unprocessable
from labornet.shared.provinces import load_registry
from labornet.shared.signing import Signer
from labornet.shared.testing import outbox_events

MIGRATIONS = "labornet.brands:migrations"


def brand_draft(name_zh: str = "川菜师傅", **overrides: Any) -> BrandDraft:
    body: dict[str, Any] = {
        "name_zh": name_zh,
        "name_en": "Sichuan Chefs",
        "division_code": "510100",
        "category": "catering",
        "level": "provincial",
        "cultivating_body": {"type": "regional-public", "name": "四川省人力资源和社会保障厅"},
        "description": "川菜烹饪技能品牌，培训基地遍布成都平原。",
        "skills": ["川菜", "面点"],
        "destination_regions": ["330000"],
        "people_trained": 12000,
        "jobs_supported": 30000,
        "annual_labour_income_cny": 1_800_000_000,
    }
    body.update(overrides)
    return BrandDraft.model_validate(body)


def demand_request(brand_id: str, **overrides: Any) -> DemandRequest:
    today = today_in_china()
    body: dict[str, Any] = {
        "brand_id": brand_id,
        "workers": 20,
        "division_code": "330106",
        "period": {"start": (today + timedelta(days=10)).isoformat(), "end": (today + timedelta(days=200)).isoformat()},
        "conditions": "月薪8000元起，包食宿",
        "contact": "杭州市人社局 0571-88000000",
    }
    body.update(overrides)
    return DemandRequest.model_validate(body)


@dataclass
class Node:
    province: str
    engine: AsyncEngine
    brands: BrandService
    demands: DemandService
    _read: int = field(default=0)

    async def new_events(self) -> list[Envelope]:
        """What this node wrote to its outbox since the last call, as partners receive it."""
        envelopes, self._read = await outbox_events(self.engine, self._read)
        return envelopes

    async def apply(self, envelopes: Iterable[Envelope], handler: Handler | None = None) -> None:
        """Apply each envelope in its own transaction, as the inbox does."""
        handlers = self.demands.handlers()
        for envelope in envelopes:
            async with sessionmaker(self.engine)() as session, session.begin():
                await (handler or handlers.get(envelope.type, self.brands.apply_event))(session, envelope)

    async def search_all(self) -> list[dict[str, Any]]:
        async with readonly_sessionmaker(self.engine)() as session:
            return (await search_brands(session, SearchParams(statuses=("proposed", "recognised", "revoked")))).items

    async def shown(self, *brand_ids: str) -> list[dict[str, Any]]:
        """The brands as this node's API shows them (record and name-conflict outcome)."""
        async with readonly_sessionmaker(self.engine)() as session:
            rows = (await session.execute(select(brand).where(brand.c.id.in_(brand_ids)))).mappings().all()
            return await present(session, sorted((plain(r) for r in rows), key=lambda r: r["id"]), load_registry())


@pytest.fixture
async def make_node(
    new_database_url: Callable[[], Awaitable[str]], node_keys: dict[str, NodeKeys]
) -> AsyncIterator[Callable[[str], Awaitable[Node]]]:
    engines: list[AsyncEngine] = []

    async def make(province: str) -> Node:
        engine = create_engine(await new_database_url())
        engines.append(engine)
        await upgrade(engine, MIGRATIONS)
        signer = Signer.from_file(node_keys[province].signing_key, province)
        writer = Outbox(province, "brands", signer)
        divisions, sessions = load_divisions(), sessionmaker(engine)
        return Node(
            province,
            engine,
            BrandService(
                province=province, sessions=sessions, outbox=writer, divisions=divisions, registry=load_registry()
            ),
            DemandService(province=province, sessions=sessions, outbox=writer, divisions=divisions),
        )

    yield make
    for engine in engines:
        await engine.dispose()


NodeFactory = Callable[[str], Awaitable[Node]]


async def recognised(node: Node, name_zh: str, **overrides: Any) -> dict[str, Any]:
    row = await node.brands.register(brand_draft(name_zh, **overrides))
    return await node.brands.recognise(row["id"], 1)


def replica_changes(result: str) -> float:
    return REGISTRY.get_sample_value("labornet_brands_replica_changes_total", {"result": result}) or 0


# --- schema -----------------------------------------------------------------------------------------------


async def test_the_migrations_create_exactly_the_tables_of_the_code(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine, MIGRATIONS)
        async with engine.connect() as connection:
            diff = await connection.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(
                        sync,
                        opts={
                            "compare_type": True,
                            "include_name": lambda name, kind, _parents: kind != "table" or name in metadata.tables,
                        },
                    ),
                    metadata,
                )
            )
    finally:
        await engine.dispose()
    assert diff == []


# --- the origin's use cases -------------------------------------------------------------------------------


async def test_every_change_of_a_brand_commits_with_its_signed_event(make_node: NodeFactory) -> None:
    sc = await make_node("510000")
    row = await sc.brands.register(brand_draft())
    assert row["id"].startswith("510000-B-") and (row["status"], row["version"]) == ("proposed", 1)
    assert (row["division_name"], row["category_name"]) == ("成都市", "餐饮烹饪")
    changed = await sc.brands.update(row["id"], BrandChanges(people_trained=15000), 1)
    assert (changed["people_trained"], changed["version"]) == (15000, 2)
    with pytest.raises(StaleVersion):
        await sc.brands.recognise(row["id"], 1)
    recognition = await sc.brands.recognise(row["id"], 2)
    assert recognition["recognised_at"] is not None
    revoked = await sc.brands.revoke(row["id"], "培训基地停办", 3)
    assert (revoked["status"], revoked["revocation_reason"], revoked["version"]) == ("revoked", "培训基地停办", 4)
    with pytest.raises(BrandRuleError, match="revoked"):
        await sc.brands.update(row["id"], BrandChanges(people_trained=1), 4)

    events = await sc.new_events()
    assert [e.type for e in events] == [REGISTERED, UPDATED, RECOGNISED, REVOKED]
    assert [e.streamseq for e in events] == [1, 2, 3, 4]
    for envelope in events:
        assert envelope.stream == "510000/labornet.510000.brands.events" and envelope.destprovince is None
        assert envelope.partitionkey == envelope.subject == row["id"] and envelope.signature
    assert [e.json()["version"] for e in events] == [1, 2, 3, 4]
    assert events[-1].json()["revocation_reason"] == "培训基地停办"


async def test_a_place_outside_the_province_or_federation_is_refused(make_node: NodeFactory) -> None:
    sc = await make_node("510000")
    for draft, named in [
        (brand_draft(division_code="330106"), "division_code"),
        (brand_draft(division_code="519900"), "division_code"),
        (brand_draft(destination_regions=["330000", "110000"]), "destination_regions.1"),
    ]:
        with pytest.raises(Unprocessable) as caught:
            await sc.brands.register(draft)
        assert caught.value.extra["errors"][0]["field"] == named
    assert await sc.new_events() == []


async def test_a_name_is_unique_in_its_province_until_its_brand_is_revoked(make_node: NodeFactory) -> None:
    sc = await make_node("510000")
    first = await sc.brands.register(brand_draft("川妹子"))
    with pytest.raises(NameTaken, match=first["id"]):
        await sc.brands.register(brand_draft("川 妹子！"))
    embroidery = await sc.brands.register(brand_draft("蜀绣"))
    with pytest.raises(NameTaken):
        await sc.brands.update(embroidery["id"], BrandChanges(name_zh="川妹子"), 1)
    await sc.brands.update(embroidery["id"], BrandChanges(name_zh="蜀绣坊"), 1)
    await sc.brands.register(brand_draft("蜀绣"))  # the old name was given up by the rename
    await sc.brands.revoke(first["id"], "并入川家政品牌", 1)
    again = await sc.brands.register(brand_draft("川妹子"))
    assert again["id"] != first["id"]

    racing = await asyncio.gather(
        sc.brands.register(brand_draft("巴山背二哥")),
        sc.brands.register(brand_draft("巴山背二哥")),
        return_exceptions=True,
    )
    assert sorted(type(outcome).__name__ for outcome in racing) == ["NameTaken", "dict"]


# --- the replica ------------------------------------------------------------------------------------------


async def test_the_replica_applies_newer_versions_only_in_any_order(make_node: NodeFactory) -> None:
    sc, zj, cq = await make_node("510000"), await make_node("330000"), await make_node("500000")
    row = await sc.brands.register(brand_draft())
    await sc.brands.update(row["id"], BrandChanges(jobs_supported=31000), 1)
    await sc.brands.recognise(row["id"], 2)
    events = await sc.new_events()

    await zj.apply(events)
    stale_before = replica_changes("stale")
    await zj.apply(events)  # every event again
    assert replica_changes("stale") == stale_before + 3
    await cq.apply(reversed(events))  # the newest first: the older two change nothing
    assert replica_changes("stale") == stale_before + 5

    (origin,) = await sc.shown(row["id"])
    assert origin["version"] == 3 and origin["jobs_supported"] == 31000 and origin["status"] == "recognised"
    assert await zj.shown(row["id"]) == await cq.shown(row["id"]) == [origin]


async def test_a_replica_refuses_a_brand_its_event_does_not_vouch_for(make_node: NodeFactory) -> None:
    sc, zj = await make_node("510000"), await make_node("330000")
    await sc.brands.register(brand_draft())
    (event,) = await sc.new_events()
    with pytest.raises(ValueError, match="event from 500000 carries brand"):
        await zj.apply([dataclasses.replace(event, originprovince="500000")])
    with pytest.raises(ValueError, match="differs from brand id"):
        await zj.apply([dataclasses.replace(event, partitionkey="510000-B-OTHER")])
    forged = {**event.json(), "division_code": "330106"}
    with pytest.raises(ValueError, match="outside 510000"):
        await zj.apply([dataclasses.replace(event, data=json.dumps(forged).encode())])
    assert await zj.shown(event.partitionkey) == []


async def test_the_same_name_in_two_provinces_resolves_identically_on_every_node(make_node: NodeFactory) -> None:
    sc, cq, zj = await make_node("510000"), await make_node("500000"), await make_node("330000")
    sichuan = await sc.brands.register(brand_draft("川妹子", name_en="Chuanmeizi"))
    chongqing = await cq.brands.register(brand_draft("川 妹子", name_en="Chuanmeizi", division_code="500101"))
    sc_registered, cq_registered = await sc.new_events(), await cq.new_events()
    await sc.apply(cq_registered)
    await cq.apply(sc_registered)
    await zj.apply([*cq_registered, *sc_registered])
    ids = sorted([sichuan["id"], chongqing["id"]])
    for node in (sc, cq, zj):  # detected as soon as both registrations are known; nothing decided yet
        shown = await node.shown(*ids)
        assert [b["name_conflict_with"] for b in shown] == [[ids[1]], [ids[0]]]
        assert not any(b["name_conflict"] for b in shown)

    await cq.brands.recognise(chongqing["id"], 1)  # Chongqing recognises first
    await sc.brands.recognise(sichuan["id"], 1)
    sc_recognised, cq_recognised = await sc.new_events(), await cq.new_events()
    await zj.apply([*sc_recognised, *cq_recognised])  # Zhejiang hears of Sichuan's recognition first
    await sc.apply(cq_recognised)
    await cq.apply(sc_recognised)
    views = [await node.shown(*ids) for node in (sc, cq, zj)]
    assert views[0] == views[1] == views[2]
    outcome = {b["origin_province"]: b for b in views[0]}
    assert outcome["500000"]["recognised_at"] < outcome["510000"]["recognised_at"]
    assert (outcome["500000"]["name_conflict"], outcome["500000"]["display_name"]) == (False, "川 妹子")
    assert (outcome["510000"]["name_conflict"], outcome["510000"]["display_name"]) == (True, "川妹子（四川）")
    assert outcome["510000"]["display_name_en"] == "Chuanmeizi (Sichuan)"

    await cq.brands.revoke(chongqing["id"], "品牌整合", 2)  # the holder gives the name up
    cq_revoked = await cq.new_events()
    await sc.apply(cq_revoked)
    await zj.apply(cq_revoked)
    for node in (sc, zj):
        (sichuan_now,) = [b for b in await node.shown(*ids) if b["id"] == sichuan["id"]]
        assert (sichuan_now["name_conflict"], sichuan_now["display_name"], sichuan_now["name_conflict_with"]) == (
            False,
            "川妹子",
            [],
        )


async def test_the_gauge_counts_brands_by_origin_and_status_zeros_included(make_node: NodeFactory) -> None:
    sc, zj = await make_node("510000"), await make_node("330000")
    await recognised(sc, "川菜师傅", training_bases=[{"name": "成都川菜烹饪学校", "division_code": "510104"}])
    withdrawn = await sc.brands.register(brand_draft("蜀绣"))
    await sc.brands.revoke(withdrawn["id"], "撤回申报", 1)
    await zj.brands.register(brand_draft("西湖茶农", division_code="330106", category="agriculture"))
    await zj.apply(await sc.new_events())
    async with readonly_sessionmaker(zj.engine)() as session:
        await refresh_gauges(session)

    def gauge(province: str, status: str) -> float | None:
        labels = {"origin_province": province, "state": status}
        return REGISTRY.get_sample_value("labornet_brands_brands", labels)

    assert [gauge("510000", s) for s in ("proposed", "recognised", "revoked")] == [0, 1, 1]
    assert [gauge("330000", s) for s in ("proposed", "recognised", "revoked")] == [1, 0, 0]
    (chefs,) = [b for b in await zj.search_all() if b["name_zh"] == "川菜师傅"]
    assert chefs["training_bases"] == [{"name": "成都川菜烹饪学校", "division_code": "510104"}]


# --- demands ----------------------------------------------------------------------------------------------


async def test_a_demand_reaches_the_origin_and_its_answer_comes_back(make_node: NodeFactory) -> None:
    sc, zj = await make_node("510000"), await make_node("330000")
    chefs = await recognised(sc, "川菜师傅")
    await zj.apply(await sc.new_events())

    posted = await zj.demands.post(demand_request(chefs["id"]), "zj-officer")
    assert (posted["status"], posted["city"], posted["brand_name_zh"]) == ("open", "杭州市", "川菜师傅")
    (message,) = await zj.new_events()
    assert (message.type, message.destprovince, message.partitionkey) == (POSTED, "510000", posted["id"])
    assert message.stream == "330000/labornet.510000.brands.inbox"

    await sc.apply([message, message])  # delivered twice: recorded once
    with pytest.raises(Forbidden, match="was posted by this province"):
        await zj.demands.answer(posted["id"], DemandAnswer(decision="accepted", workers_offered=5), "zj-officer")
    with pytest.raises(OfferTooLarge):
        await sc.demands.answer(posted["id"], DemandAnswer(decision="accepted", workers_offered=21), "sc-officer")
    answered = await sc.demands.answer(
        posted["id"], DemandAnswer(decision="accepted", workers_offered=15, note="首批15人，4月到岗"), "sc-officer"
    )
    assert (answered["status"], answered["version"], answered["answered_by"]) == ("accepted", 2, "sc-officer")
    with pytest.raises(DemandRuleError, match="already answered"):
        await sc.demands.answer(posted["id"], DemandAnswer(decision="declined", note="改主意"), "sc-officer")
    (reply,) = await sc.new_events()
    assert (reply.type, reply.destprovince, reply.stream) == (ANSWERED, "330000", "510000/labornet.330000.brands.inbox")

    await zj.apply([reply, reply])
    with pytest.raises(ValueError, match="concerns 510000 as origin_province"):
        await zj.apply([message])  # a demand is never applied by the province that posted it
    seen = {}
    for node in (sc, zj):
        async with readonly_sessionmaker(node.engine)() as session:
            (row,) = (await session.execute(select(demand))).mappings().all()
        seen[node.province] = {
            k: row[k] for k in ("id", "status", "workers", "workers_offered", "answer_note", "version")
        }
    assert seen["510000"] == seen["330000"]
    assert seen["330000"] | {"id": ""} == {
        "id": "",
        "status": "accepted",
        "workers": 20,
        "workers_offered": 15,
        "answer_note": "首批15人，4月到岗",
        "version": 2,
    }


async def test_a_demand_is_refused_unless_it_names_a_partners_recognised_brand(make_node: NodeFactory) -> None:
    sc, zj = await make_node("510000"), await make_node("330000")
    chefs = await recognised(sc, "川菜师傅")
    proposal = await sc.brands.register(brand_draft("川建工", category="construction"))
    await zj.apply(await sc.new_events())
    for request, named in [
        (demand_request("510000-B-UNKNOWN"), "brand_id"),
        (demand_request(chefs["id"], division_code="510104"), "division_code"),
    ]:
        with pytest.raises(Unprocessable) as caught:
            await zj.demands.post(request, "zj-officer")
        assert caught.value.extra["errors"][0]["field"] == named
    with pytest.raises(Unprocessable, match="this province's own"):
        await sc.demands.post(demand_request(chefs["id"], division_code="510104"), "sc-officer")
    with pytest.raises(DemandRuleError, match="is proposed"):
        await zj.demands.post(demand_request(proposal["id"]), "zj-officer")
    assert await zj.new_events() == []


async def test_a_demand_for_a_brand_revoked_meanwhile_is_declined_by_the_origin_node(make_node: NodeFactory) -> None:
    sc, zj = await make_node("510000"), await make_node("330000")
    chefs = await recognised(sc, "川菜师傅")
    await zj.apply(await sc.new_events())
    posted = await zj.demands.post(demand_request(chefs["id"]), "zj-officer")
    await sc.brands.revoke(chefs["id"], "品牌撤销", 2)  # the revocation and the demand cross on the bus
    revocation = await sc.new_events()
    await sc.apply(await zj.new_events())
    (reply,) = await sc.new_events()
    assert (reply.type, reply.json()["status"], reply.json()["answered_by"]) == (ANSWERED, "declined", AUTOMATIC)
    assert "revoked" in reply.json()["answer_note"]
    await zj.apply([reply, *revocation])
    async with readonly_sessionmaker(zj.engine)() as session:
        held = (await session.execute(select(demand).where(demand.c.id == posted["id"]))).mappings().one()
    assert (held["status"], held["version"]) == ("declined", 2)
    with pytest.raises(DemandRuleError, match="is revoked"):
        await zj.demands.post(demand_request(chefs["id"]), "zj-officer")


# --- search -----------------------------------------------------------------------------------------------


async def test_search_finds_chinese_and_english_text_and_filters(make_node: NodeFactory) -> None:
    sc, cq = await make_node("510000"), await make_node("500000")
    chefs = await recognised(sc, "川菜师傅", skills=["火锅"])
    embroidery = await recognised(
        sc,
        "蜀绣",
        name_en="Shu Embroidery",
        category="traditional-crafts",
        level="national",
        division_code="510104",
        destination_regions=["320000"],
        description="",
        skills=[],
        jobs_supported=800,
    )
    await sc.brands.register(brand_draft("川厨师", description="川菜"))  # proposed: not listed by default
    await recognised(
        cq,
        "巴渝大嫂",
        name_en="Bayu Housekeepers",
        category="domestic-services",
        division_code="500101",
        description="家政服务，擅长川菜家常菜",
        skills=[],
        destination_regions=["330000", "320000"],
        jobs_supported=50000,
    )
    await sc.apply(await cq.new_events())

    async def names(**params: Any) -> list[str]:
        async with readonly_sessionmaker(sc.engine)() as session:
            page = await search_brands(session, SearchParams(limit=100, **params))
        assert page.total == len(page.items)
        return sorted(item["name_zh"] for item in page.items)

    assert await names(q="川菜") == ["川菜师傅", "巴渝大嫂"]
    assert await names(q="川菜师傅") == ["川菜师傅"]
    assert await names(q="师傅") == ["川菜师傅"]
    assert await names(q="绣") == ["蜀绣"]
    assert await names(q="embroider") == ["蜀绣"]
    assert await names(q="CHEFS") == ["川菜师傅"]
    assert await names(q="面点师") == []
    assert await names(q="川菜", statuses=("recognised", "proposed")) == ["川厨师", "川菜师傅", "巴渝大嫂"]
    assert await names(province="500000") == ["巴渝大嫂"]
    assert await names(division_code="510100") == ["川菜师傅", "蜀绣"]
    assert await names(division_code="510104") == ["蜀绣"]
    assert await names(category="traditional-crafts") == ["蜀绣"]
    assert await names(level="national") == ["蜀绣"]
    assert await names(destination="330000") == ["川菜师傅", "巴渝大嫂"]
    assert await names(body_type="enterprise") == []

    async with readonly_sessionmaker(sc.engine)() as session:
        first = await search_brands(session, SearchParams(sort="jobs", limit=2))
        assert first.items[0]["origin_province"] == "500000" and first.total == 3
        assert first.next_cursor is not None
        rest = await search_brands(session, SearchParams(sort="jobs", limit=2, cursor=first.next_cursor))
        assert [item["id"] for item in rest.items] == [embroidery["id"]] and rest.next_cursor is None
        assert chefs["id"] in [item["id"] for item in first.items]
        with pytest.raises(InvalidCursor, match="made for sort 'jobs'"):
            await search_brands(session, SearchParams(cursor=first.next_cursor))

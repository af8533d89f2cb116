"""Placements and placement statistics: the counting rules, the use cases on real databases (SQLite, and
PostgreSQL when configured) with a small in-process bus between three nodes, and the HTTP API of one node.

Sichuan (510000) is the workers' home, Zhejiang (330000) the employer's province, Chongqing (500000) a third
province that receives the statistics only.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator, FormatChecker
from prometheus_client import REGISTRY
from pydantic import ValidationError
from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from labornet.jobs.adapters.tables import placement, placement_statistics_cell, placement_statistics_origin
from labornet.jobs.app import SPEC
from labornet.jobs.domain.placements import (
    PLACEMENTS_PUBLISHED,
    Cell,
    CellFilter,
    Direction,
    Placement,
    PlacementSnapshot,
    count_placements,
    month_of,
    tally,
)
from labornet.jobs.domain.vacancy import TargetGroup
from labornet.jobs.entrypoints.placements import PlacementSettings
from labornet.jobs.service_layer.placements import (
    PlacementService,
    publish_placements,
    record_hire,
    snapshot_handler,
)
from labornet.shared.app import create_service_app
from labornet.shared.db import create_engine, outbox, readonly_sessionmaker, sessionmaker
from labornet.shared.envelope import Envelope
from labornet.shared.inbox import RuleViolation
from labornet.shared.keys import NodeKeys
from labornet.shared.migrations import upgrade
from labornet.shared.outbox import Outbox, decode_headers
from labornet.shared.problems import PROBLEM_JSON
from labornet.shared.settings import Settings
from labornet.shared.signing import Signer, generate_private_key, key_id_for
from labornet.shared.testing import assert_problem, bearer, eventually, serving
from labornet.shared.topics import events_topic

MIGRATIONS = "labornet.jobs:migrations"
SC, ZJ, CQ = "510000", "330000", "500000"
MIGRANT, GRADUATE, VETERAN = TargetGroup.MIGRANT_WORKERS, TargetGroup.COLLEGE_GRADUATES, TargetGroup.VETERANS
MARCH = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
STATISTICS, FEDERATION = "/api/v1/placements/statistics", "/api/v1/placements/statistics/federation"


def application_id(home: str, n: int) -> str:
    return f"{home}-A-{n:020X}"


def hire(n: int, *, origin: str = SC, destination: str = ZJ, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "application_id": application_id(origin, n),
        "origin_province": origin,
        "destination_province": destination,
        "hired_at": MARCH,
        "occupation_code": "7112",
        "target_groups": [MIGRANT.value],
    }
    values.update(overrides)
    return values


# The counting rules ---------------------------------------------------------------------------------------------


def test_the_month_of_a_hire_is_its_month_in_china() -> None:
    assert month_of(datetime(2026, 1, 31, 15, 59, 59, tzinfo=UTC)) == "2026-01"  # 23:59:59 in Beijing
    assert month_of(datetime(2026, 1, 31, 16, 0, tzinfo=UTC)) == "2026-02"  # midnight in Beijing
    assert month_of(datetime(2025, 12, 31, 16, 30, tzinfo=UTC)) == "2026-01"
    assert Placement(**hire(1, hired_at=datetime(2026, 2, 28, 17, 0, tzinfo=UTC))).month == "2026-03"


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"origin_province": "51000"}, "origin_province"),
        ({"destination_province": "Zhejiang"}, "destination_province"),
        ({"application_id": application_id(CQ, 1)}, "made at home province 500000"),
        ({"application_id": "510000-A-lowercasehex00000000"}, "expected <home province>-A-"),
        ({"occupation_code": "71120"}, "ISCO-08"),
        ({"target_groups": ["retirees"]}, "target_groups"),
        ({"hired_at": datetime(2026, 3, 10, 2, 0)}, "time zone"),
    ],
)
def test_a_placement_names_what_is_wrong_with_it(overrides: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        Placement(**hire(1, **overrides))


def test_cells_count_each_hire_once_and_in_each_of_its_target_groups() -> None:
    placements = [
        Placement(**hire(1, target_groups=[MIGRANT, VETERAN, MIGRANT])),  # a group named twice counts once
        Placement(**hire(2, target_groups=[MIGRANT])),
        Placement(**hire(3, target_groups=[])),
        Placement(**hire(4, occupation_code="5120", target_groups=[GRADUATE])),
        Placement(**hire(5, hired_at=datetime(2026, 3, 31, 16, 0, tzinfo=UTC))),  # April in China
        Placement(**hire(6, origin=ZJ, destination=SC, target_groups=[])),  # a Zhejiang worker hired in Sichuan
        Placement(**hire(7, destination=SC)),  # within Sichuan: in no direction
        Placement(**hire(8, origin=CQ, destination=ZJ)),  # none of Sichuan's business
    ]
    cells = count_placements(SC, placements)
    assert [(c.direction, c.counterpart_province, c.month, c.occupation_code, c.hires) for c in cells] == [
        (Direction.INBOUND, ZJ, "2026-03", "7112", 1),
        (Direction.OUTBOUND, ZJ, "2026-03", "5120", 1),
        (Direction.OUTBOUND, ZJ, "2026-03", "7112", 3),
        (Direction.OUTBOUND, ZJ, "2026-04", "7112", 1),
    ]
    assert cells[2].target_groups == {MIGRANT: 2, VETERAN: 1}
    assert cells[0].target_groups == {}

    everything = tally(cells, Direction.OUTBOUND, CellFilter())
    assert everything.total == 5  # hire 1 has two groups and is one hire
    assert everything.by_target_group == {MIGRANT: 3, VETERAN: 1, GRADUATE: 1}  # more than the total: by design
    assert sum(everything.by_month.values()) == sum(everything.by_occupation.values()) == 5
    assert everything.by_counterpart == {ZJ: 5}

    migrants = tally(cells, Direction.OUTBOUND, CellFilter(target_group=MIGRANT))
    assert (migrants.total, migrants.by_target_group) == (3, {MIGRANT: 3})
    march = tally(cells, Direction.OUTBOUND, CellFilter(month_from="2026-03", month_to="2026-03"))
    assert (march.total, march.by_month) == (4, {"2026-03": 4})
    assert tally(cells, Direction.OUTBOUND, CellFilter(month_from="2026-04")).total == 1
    assert tally(cells, Direction.OUTBOUND, CellFilter(occupation_code="5120")).total == 1
    assert tally(cells, Direction.OUTBOUND, CellFilter(counterpart_province=CQ)).total == 0
    inbound = tally(cells, Direction.INBOUND, CellFilter())
    assert (inbound.total, inbound.by_counterpart) == (1, {ZJ: 1})

    # Zhejiang counts the same hires from its side
    zhejiang = count_placements(ZJ, placements)
    assert tally(zhejiang, Direction.INBOUND, CellFilter(counterpart_province=SC)).total == 5
    assert tally(zhejiang, Direction.INBOUND, CellFilter(counterpart_province=CQ)).total == 1
    assert tally(zhejiang, Direction.OUTBOUND, CellFilter()).total == 1


def cell(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "direction": "outbound",
        "counterpart_province": ZJ,
        "month": "2026-03",
        "occupation_code": "7112",
        "hires": 2,
        "target_groups": {"migrant-workers": 2},
    }
    values.update(overrides)
    return values


@pytest.mark.parametrize(
    ("cells", "complaint"),
    [
        ([cell(counterpart_province=SC)], "names 510000 as its counterpart"),
        ([cell(), cell(hires=1, target_groups={})], "two cells"),
        ([cell(target_groups={"migrant-workers": 3})], "3 hires in a cell of 2"),
        ([cell(hires=0, target_groups={})], "hires"),
        ([cell(month="2026-13")], "month"),
        ([cell(direction="sideways")], "direction"),
        ([cell(), cell(month="2026-04")], "a cell of month 2026-04 in the snapshot of 2026-03"),
    ],
)
def test_a_snapshot_that_breaks_the_rules_is_refused(cells: list[dict[str, Any]], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        PlacementSnapshot.model_validate(
            {"origin": SC, "month": "2026-03", "generation": 1, "as_of": MARCH, "cells": cells}
        )


# The use cases on real databases -----------------------------------------------------------------------------


@dataclasses.dataclass
class Node:
    province: str
    engine: AsyncEngine
    outbox: Outbox
    service: PlacementService

    async def rows(self, table: Table) -> list[dict[str, Any]]:
        async with readonly_sessionmaker(self.engine)() as session:
            return [dict(row) for row in (await session.execute(select(table))).mappings()]

    async def record(self, **values: Any) -> bool:
        async with sessionmaker(self.engine)() as session, session.begin():
            return await record_hire(session, **values)

    async def outbound(self, province: str, **which: Any) -> int:
        return (await self.service.figures(province, CellFilter(**which))).outbound.total

    async def inbound(self, province: str, **which: Any) -> int:
        return (await self.service.figures(province, CellFilter(**which))).inbound.total


async def collect(node: Node) -> list[Envelope]:
    """What ``node`` wrote to its outbox since the last collection (marked sent, as the relay would)."""
    async with sessionmaker(node.engine)() as session, session.begin():
        rows = (await session.execute(select(outbox).where(outbox.c.sent_at.is_(None)).order_by(outbox.c.id))).all()
        await session.execute(
            update(outbox).where(outbox.c.id.in_([r.id for r in rows])).values(sent_at=datetime.now(UTC))
        )
    return [Envelope.from_kafka(r.message_key, r.payload, decode_headers(r.headers)) for r in rows]


async def deliver(node: Node, envelope: Envelope) -> None:
    async with sessionmaker(node.engine)() as session, session.begin():
        await snapshot_handler(node.province)(session, envelope)


def snapshots(result: str, origin: str = SC) -> float:
    return (
        REGISTRY.get_sample_value("labornet_jobs_placement_snapshots_total", {"origin": origin, "result": result}) or 0
    )


def recorded(direction: str) -> float:
    return REGISTRY.get_sample_value("labornet_jobs_placements_recorded_total", {"direction": direction}) or 0


@pytest.fixture
async def nodes(new_database_url: Callable[[], Awaitable[str]]) -> AsyncIterator[dict[str, Node]]:
    made: dict[str, Node] = {}
    for province in (SC, ZJ, CQ):
        engine = create_engine(await new_database_url())
        await upgrade(engine, MIGRATIONS)
        key = generate_private_key()
        writer = Outbox(province, "jobs", Signer(key_id_for(province, key.public_key()), key))
        service = PlacementService(
            province=province,
            sessions=sessionmaker(engine),
            read_sessions=readonly_sessionmaker(engine),
            outbox=writer,
            clock=lambda: MARCH,
        )
        made[province] = Node(province, engine, writer, service)
    yield made
    for node in made.values():
        await node.engine.dispose()


async def test_a_hire_is_recorded_once_at_each_end_and_bad_inputs_write_nothing(nodes: dict[str, Node]) -> None:
    sc, zj = nodes[SC], nodes[ZJ]
    assert await zj.service.rebroadcast() == []  # nothing to say yet
    assert await zj.record(**hire(1, target_groups=[VETERAN.value, MIGRANT.value]))
    assert await sc.record(**hire(1, target_groups=[VETERAN.value, MIGRANT.value]))
    # the hire again (a replayed message, a retried transaction), even with other figures: the first stands
    assert not await zj.record(**hire(1, occupation_code="5120"))
    assert not await sc.record(**hire(1))
    for node in (sc, zj):
        assert await node.rows(placement) == [
            {
                "application_id": application_id(SC, 1),
                "origin_province": SC,
                "destination_province": ZJ,
                "hired_at": MARCH if node.engine.dialect.name == "postgresql" else MARCH.replace(tzinfo=None),
                "month": "2026-03",
                "occupation_code": "7112",
                "target_groups": [MIGRANT.value, VETERAN.value],
                "announced": False,
            }
        ]
    for bad in ({"origin_province": "5100"}, {"occupation_code": "0000"}, {"target_groups": ["nobody"]}):
        with pytest.raises(ValueError):
            await zj.record(**hire(2, **bad))
    assert len(await zj.rows(placement)) == 1
    # a hire within Sichuan is kept, announced at once (there is nothing to count) and in neither direction
    assert await sc.record(**hire(3, destination=SC))
    assert [row["announced"] for row in await sc.rows(placement) if row["destination_province"] == SC] == [True]
    assert await sc.outbound(SC) == 1 and await sc.inbound(SC) == 0
    # the repair broadcast says what there is to say, once there is something
    [again] = await zj.service.rebroadcast()
    assert (again.month, again.generation, again.cells[0].hires) == ("2026-03", 1, 1)
    assert await nodes[CQ].service.rebroadcast() == []


async def test_the_background_check_with_nothing_due_takes_no_write_transaction(nodes: dict[str, Node]) -> None:
    """The publisher checks every few seconds; with nothing to publish (nearly always) it only reads, so it never
    takes SQLite's write lock from the node's writers. A hire not counted yet is published in one write."""
    sc = nodes[SC]
    writes = 0
    sessions = sc.service.sessions

    def counted() -> Any:
        nonlocal writes
        writes += 1
        return sessions()

    sc.service.sessions = counted  # type: ignore[assignment]
    for _ in range(3):
        assert await sc.service.publish_due() == []
    assert writes == 0, "a check with nothing due took a write transaction"
    sc.service.sessions = sessions
    assert await sc.record(**hire(1))
    sc.service.sessions = counted  # type: ignore[assignment]
    [published] = await sc.service.publish_due()
    assert (published.month, writes) == ("2026-03", 1)
    assert await sc.service.publish_due() == []
    assert writes == 1


async def test_statistics_reach_every_node_and_stale_or_forged_snapshots_change_nothing(
    nodes: dict[str, Node],
) -> None:
    sc, zj, cq = nodes[SC], nodes[ZJ], nodes[CQ]
    outbound_before, inbound_before = recorded("outbound"), recorded("inbound")
    for node in (sc, zj):
        assert await node.record(**hire(1))
    # nothing announced yet: the check publishes, then has nothing more to publish
    [first] = await sc.service.publish_due()
    assert (first.month, first.generation) == ("2026-03", 1)
    assert [(c.direction, c.counterpart_province, c.hires) for c in first.cells] == [(Direction.OUTBOUND, ZJ, 1)]
    assert await sc.service.publish_due() == []
    assert await zj.service.publish_due() != []
    assert (recorded("outbound"), recorded("inbound")) == (outbound_before + 1, inbound_before + 1)
    assert all(row["announced"] for row in await sc.rows(placement))

    # the snapshots travel: Sichuan's to Zhejiang and Chongqing, Zhejiang's to Sichuan and Chongqing
    sc_envelopes, zj_envelopes = await collect(sc), await collect(zj)
    assert [(e.type, e.partitionkey, e.subject) for e in sc_envelopes] == [(PLACEMENTS_PUBLISHED, SC, f"{SC}/2026-03")]
    assert [e.type for e in zj_envelopes] == [PLACEMENTS_PUBLISHED]
    for envelope in sc_envelopes:
        await deliver(zj, envelope)
        await deliver(cq, envelope)
    for envelope in zj_envelopes:
        await deliver(sc, envelope)
        await deliver(cq, envelope)
    for node in (sc, zj, cq):
        assert await node.outbound(SC, counterpart_province=ZJ, month_from="2026-03", month_to="2026-03") == 1
        assert await node.outbound(SC, occupation_code="7112", target_group=MIGRANT) == 1
        assert await node.outbound(SC, target_group=VETERAN) == 0
        assert await node.inbound(ZJ, counterpart_province=SC) == 1
        assert await node.inbound(SC) == 0 and await node.outbound(ZJ) == 0
    seen_at_cq = await cq.service.figures(SC, CellFilter())
    assert (seen_at_cq.source, seen_at_cq.generation, seen_at_cq.as_of) == ("snapshot", 1, MARCH)
    assert (await cq.service.figures(CQ, CellFilter())).source == "own"
    assert (await zj.service.figures(CQ, CellFilter())).source == "none"  # Chongqing has published nothing yet

    # a second hire, in April: only April's snapshot goes out, and March's stays as it was
    assert await sc.record(**hire(2, hired_at=datetime(2026, 3, 31, 16, 0, tzinfo=UTC)))
    [newer] = await sc.service.publish_due()
    assert (newer.month, newer.generation) == ("2026-04", 2)
    [newer_envelope] = await collect(sc)
    await deliver(cq, newer_envelope)
    assert await cq.outbound(SC) == 2 and await cq.outbound(SC, month_from="2026-04") == 1
    assert (await cq.service.figures(SC, CellFilter())).generation == 2
    # the repair broadcast: every month again under one newer generation
    repaired = await sc.service.rebroadcast()
    assert [(snapshot.month, snapshot.generation) for snapshot in repaired] == [("2026-03", 3), ("2026-04", 3)]
    for envelope in await collect(sc):
        await deliver(cq, envelope)
    assert await cq.outbound(SC) == 2
    # then the older snapshots again (a replay) and an old one under a new event id
    stored_before = await cq.rows(placement_statistics_cell), await cq.rows(placement_statistics_origin)
    stale_before = snapshots("stale")
    await deliver(cq, sc_envelopes[0])
    await deliver(cq, newer_envelope)
    async with sessionmaker(sc.engine)() as session, session.begin():
        await sc.outbox.add(  # an old generation under a new event id, properly signed by Sichuan
            session,
            topic=events_topic(SC, "jobs"),
            event_type=PLACEMENTS_PUBLISHED,
            key=SC,
            subject=SC,
            data=first,
        )
    [old_again] = await collect(sc)
    await deliver(cq, old_again)
    assert snapshots("stale") == stale_before + 3
    assert (await cq.rows(placement_statistics_cell), await cq.rows(placement_statistics_origin)) == stored_before

    # Zhejiang sends statistics "of Sichuan": refused, nothing stored
    forged = PlacementSnapshot(origin=SC, month="2026-03", generation=99, as_of=MARCH, cells=[])
    async with sessionmaker(zj.engine)() as session, session.begin():
        await zj.outbox.add(
            session, topic=events_topic(ZJ, "jobs"), event_type=PLACEMENTS_PUBLISHED, key=ZJ, subject=ZJ, data=forged
        )
    [forged_envelope] = await collect(zj)
    refused_before = snapshots("refused", ZJ)
    with pytest.raises(RuleViolation, match="of 510000 sent by 330000"):
        await deliver(cq, forged_envelope)
    # and a snapshot of Chongqing's own statistics from elsewhere is refused by Chongqing too
    with pytest.raises(RuleViolation):
        await deliver(cq, dataclasses.replace(forged_envelope, originprovince=CQ, data=b'{"origin": "500000"}'))
    assert snapshots("refused", ZJ) == refused_before + 1
    assert (await cq.rows(placement_statistics_cell), await cq.rows(placement_statistics_origin)) == stored_before


async def test_publishing_in_the_hire_transaction_counts_the_hire_or_nothing(nodes: dict[str, Node]) -> None:
    zj = nodes[ZJ]
    async with sessionmaker(zj.engine)() as session, session.begin():
        assert await record_hire(session, **hire(1))
        [snapshot] = await publish_placements(session, zj.outbox, ZJ, MARCH)
    assert [(c.direction, c.counterpart_province, c.hires) for c in snapshot.cells] == [(Direction.INBOUND, SC, 1)]
    assert [e.json()["generation"] for e in await collect(zj)] == [1]
    inbound_before = recorded("inbound")
    async with sessionmaker(zj.engine)() as session, session.begin():
        assert await publish_placements(session, zj.outbox, ZJ, MARCH) == []  # nothing new

    async def abandoned_hire() -> None:
        async with sessionmaker(zj.engine)() as session, session.begin():
            assert await record_hire(session, **hire(2))
            await publish_placements(session, zj.outbox, ZJ, MARCH)
            raise LookupError("the vacancy's version moved: the hire is abandoned")

    with pytest.raises(LookupError):
        await abandoned_hire()
    assert recorded("inbound") == inbound_before  # counted on commit only
    assert [row["application_id"] for row in await zj.rows(placement)] == [application_id(SC, 1)]
    assert await collect(zj) == []
    assert [(row["origin"], row["generation"]) for row in await zj.rows(placement_statistics_origin)] == [(ZJ, 1)]


# The HTTP API of one node -----------------------------------------------------------------------------------------


@pytest.fixture
def keys(node_keys: dict[str, NodeKeys]) -> NodeKeys:
    return node_keys[SC]


@pytest.fixture
async def client(
    make_settings: Callable[..., Settings], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    monkeypatch.setenv("LABORNET_JOBS_PLACEMENTS_PUBLISH_CHECK_INTERVAL_S", "0.05")
    monkeypatch.setenv("LABORNET_JOBS_PLACEMENTS_REBROADCAST_INTERVAL_S", "0.5")
    settings = make_settings(SC, "jobs", database_url)
    # the service without its consumers: nothing arrives from partners here
    spec = dataclasses.replace(SPEC, consumers=lambda _runtime: ())
    async with serving(create_service_app(spec, settings)) as served:
        yield served, settings


async def published(settings: Settings) -> list[dict[str, Any]]:
    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as connection:
            rows = (await connection.execute(select(outbox).order_by(outbox.c.id))).all()
    finally:
        await engine.dispose()
    envelopes = [Envelope.from_kafka(r.message_key, r.payload, decode_headers(r.headers)) for r in rows]
    return [e.json() for e in envelopes if e.type == PLACEMENTS_PUBLISHED]


def conforms(spec: dict[str, Any], response: httpx.Response, path: str) -> None:
    """The answer's status is documented for ``path`` and its body is valid for the documented schema."""
    documented = spec["paths"][path]["get"]["responses"]
    status = str(response.status_code)
    assert status in documented, (path, status, list(documented))
    media = response.headers["content-type"].split(";")[0]
    schema = documented[status]["content"][media]["schema"]
    validator = Draft202012Validator(
        {"allOf": [schema], "components": spec["components"]}, format_checker=FormatChecker()
    )
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(response.json())]
    assert not errors, (path, errors)


def test_the_operations_document_their_answers_problems_and_valid_examples(
    make_settings: Callable[..., Settings], tmp_path: Any
) -> None:
    spec = create_service_app(
        SPEC, make_settings(SC, "jobs", f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}")
    ).openapi()
    for path in (STATISTICS, FEDERATION):
        responses = spec["paths"][path]["get"]["responses"]
        assert responses["200"]["content"]["application/json"]["schema"]["$ref"].startswith("#/components/schemas/")
        assert {"401", "403", "422"} <= responses.keys()
        for problem in ("401", "403", "422"):
            assert responses[problem]["content"][PROBLEM_JSON]["schema"] == {
                "$ref": "#/components/schemas/ProblemDetails"
            }
    for name in ("PlacementStatistics", "DirectionFigures", "FederationPlacements"):
        examples = spec["components"]["schemas"][name]["examples"]
        assert examples, name
        validator = Draft202012Validator(
            {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}, format_checker=FormatChecker()
        )
        for example in examples:
            assert not [e.message for e in validator.iter_errors(example)], (name, example)
    parameters = {p["name"] for p in spec["paths"][STATISTICS]["get"]["parameters"]}
    assert parameters == {
        "province",
        "counterpart_province",
        "month_from",
        "month_to",
        "occupation_code",
        "target_group",
    }


async def test_the_statistics_api(client: tuple[httpx.AsyncClient, Settings], keys: NodeKeys) -> None:
    http, settings = client
    worker = bearer(keys, "worker", sub="worker-1")

    # a node without placements between provinces says nothing, at start-up or later
    await http.get("/readyz")
    await asyncio.sleep(0.7)
    assert await published(settings) == []

    engine = create_engine(settings.database_url)
    try:
        async with sessionmaker(engine)() as session, session.begin():
            await record_hire(session, **hire(1, target_groups=[MIGRANT.value, VETERAN.value]))
            await record_hire(session, **hire(2, destination=CQ, occupation_code="5120", target_groups=[]))
            await record_hire(session, **hire(3, origin=ZJ, destination=SC))
    finally:
        await engine.dispose()

    async def hires_published() -> bool:
        return any(len(snapshot["cells"]) == 3 for snapshot in await published(settings))

    await eventually(hires_published, timeout_s=10)  # the publisher's check found them

    async def broadcast_again() -> bool:  # and the snapshot goes out again as repair, a newer generation each time
        return len(await published(settings)) >= 3

    await eventually(broadcast_again, timeout_s=10)
    snapshots = await published(settings)
    assert [snapshot["generation"] for snapshot in snapshots] == list(range(1, len(snapshots) + 1))
    assert all(snapshot["cells"] == snapshots[0]["cells"] for snapshot in snapshots)

    spec = (await http.get("/openapi.json")).json()
    anonymous = await http.get(STATISTICS)
    assert_problem(anonymous, 401, "bearer token")
    conforms(spec, anonymous, STATISTICS)
    response = await http.get(STATISTICS, headers=worker)
    assert response.status_code == 200, response.text
    conforms(spec, response, STATISTICS)
    body = response.json()
    assert (body["province"], body["source"]) == (SC, "own")
    assert body["generation"] >= 2
    assert body["outbound"]["total"] == 2
    assert body["outbound"]["by_province"] == [{"province": ZJ, "hires": 1}, {"province": CQ, "hires": 1}]
    assert body["outbound"]["by_target_group"] == [
        {"target_group": "migrant-workers", "hires": 1},
        {"target_group": "veterans", "hires": 1},
    ]
    assert body["inbound"]["total"] == 1 and body["inbound"]["by_province"] == [{"province": ZJ, "hires": 1}]
    assert body["outbound"]["cells"][-1] == {
        "direction": "outbound",
        "counterpart_province": CQ,
        "month": "2026-03",
        "occupation_code": "5120",
        "hires": 1,
        "target_groups": {},
    }

    filtered = await http.get(
        "/api/v1/placements/statistics",
        params={
            "counterpart_province": ZJ,
            "month_from": "2026-03",
            "month_to": "2026-03",
            "occupation_code": "7112",
            "target_group": "veterans",
        },
        headers=bearer(keys, "officer"),
    )
    assert filtered.status_code == 200, filtered.text
    assert (filtered.json()["outbound"]["total"], filtered.json()["inbound"]["total"]) == (1, 0)
    migrants = await http.get(
        "/api/v1/placements/statistics", params={"target_group": "migrant-workers"}, headers=worker
    )
    assert (migrants.json()["outbound"]["total"], migrants.json()["inbound"]["total"]) == (1, 1)
    later = await http.get("/api/v1/placements/statistics", params={"month_from": "2026-04"}, headers=worker)
    assert later.json()["outbound"]["total"] == 0

    partner = (await http.get("/api/v1/placements/statistics", params={"province": ZJ}, headers=worker)).json()
    assert (partner["source"], partner["generation"], partner["outbound"]["total"]) == ("none", None, 0)

    federation = await http.get(FEDERATION, headers=worker)
    assert federation.status_code == 200, federation.text
    conforms(spec, federation, FEDERATION)
    own = next(item for item in federation.json()["provinces"] if item["province"] == SC)
    assert (own["outbound"], own["inbound"], federation.json()["placements"]) == (2, 1, 2)

    bad = {
        "province": ({"province": "990000"}, "query.province", "not a member"),
        "pattern": ({"province": "Sichuan"}, "query.province", ""),
        "counterpart": ({"counterpart_province": "990000"}, "query.counterpart_province", "not a member"),
        "month": ({"month_from": "2026-13"}, "query.month_from", ""),
        "range": ({"month_from": "2026-04", "month_to": "2026-03"}, "query.month_from", "after month_to"),
        "occupation": ({"occupation_code": "9999"}, "query.occupation_code", "ISCO-08"),
        "group": ({"target_group": "retirees"}, "query.target_group", ""),
    }
    for params, field, detail in bad.values():
        answer = await http.get(STATISTICS, params=params, headers=worker)
        conforms(spec, answer, STATISTICS)
        problem = assert_problem(answer, 422, detail)
        assert [error["field"] for error in problem["errors"]] == [field], problem  # type: ignore[attr-defined]
    problem = assert_problem(
        await http.get("/api/v1/placements/statistics/federation", params={"month_to": "March"}, headers=worker), 422
    )
    assert [error["field"] for error in problem["errors"]] == ["query.month_to"]  # type: ignore[attr-defined]


def test_the_publishing_intervals_come_from_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABORNET_JOBS_PLACEMENTS_REBROADCAST_INTERVAL_S", "600")
    monkeypatch.setenv("LABORNET_JOBS_PLACEMENTS_PUBLISH_CHECK_INTERVAL_S", "2.5")
    config = PlacementSettings()
    assert (config.rebroadcast_interval_s, config.publish_check_interval_s) == (600, 2.5)
    monkeypatch.setenv("LABORNET_JOBS_PLACEMENTS_PUBLISH_CHECK_INTERVAL_S", "0")
    with pytest.raises(ValidationError, match="publish_check_interval_s"):
        PlacementSettings()


def test_a_cell_is_the_event_and_the_response_shape() -> None:
    found = Cell.model_validate(cell())
    assert found.model_dump(mode="json") == cell()

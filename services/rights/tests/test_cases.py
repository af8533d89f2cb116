"""Case use cases and message handlers on real databases (SQLite, and PostgreSQL when configured).

Three nodes — Sichuan (home), Jiangsu (work place) and Chongqing — each with its own migrated database and outbox.
Instead of the broker, a small in-process bus reads what each node put in its outbox and hands it to the
receivers' handlers, so that the tests choose the order: duplicates, reversed and forged deliveries included.
The inbox's own de-duplication by event id is bypassed on purpose: the case versions alone must make replays
harmless. (The real broker is exercised in tests/integration/test_rights_federation.py.)
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from jsonschema import Draft202012Validator
from sqlalchemy import Table, inspect, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from labornet.rights.adapters import cases
from labornet.rights.adapters.cases import StoredCase
from labornet.rights.adapters.tables import metadata, rights_case, statistics_cell, statistics_origin
from labornet.rights.contracts import EVENTS
from labornet.rights.domain.case import (
    ACCEPTED,
    COMPLAINANT,
    REFERRED,
    WITHDRAWAL_REQUESTED,
    CaseDraft,
    CaseRuleError,
    Deadlines,
    NotCaseHolder,
    Status,
    WorkPlace,
    officer,
)
from labornet.rights.domain.statistics import STATISTICS_PUBLISHED
from labornet.rights.service_layer.cases import CaseService
from labornet.rights.service_layer.statistics import federation_statistics, statistics_handler
from labornet.shared.clock import today_in_china
from labornet.shared.db import create_engine, outbox, platform_metadata, readonly_sessionmaker, sessionmaker
from labornet.shared.envelope import Envelope, encode_data
from labornet.shared.identifiers import make_resident_id
from labornet.shared.migrations import alembic_config, upgrade
from labornet.shared.outbox import Outbox, decode_headers
from labornet.shared.signing import Signer, generate_private_key, key_id_for
from labornet.shared.workdays import Calendars

MIGRATIONS = "labornet.rights:migrations"
SC, JS, CQ = "510000", "320000", "500000"
WORKER_ID = make_resident_id("511602", date(1985, 4, 12), 37)
WORKER_NAME, WORKER_PHONE = "王小明", "13812345678"


def draft(**overrides: Any) -> CaseDraft:
    body: dict[str, Any] = {
        "complainant": {"name": WORKER_NAME, "phone": WORKER_PHONE},
        "sector": "construction",
        "employer": {
            "name": "南京某建设工程有限公司",
            "credit_code": "91350100M000100Y43",
            "address": "南京市江宁区某路 1 号",
            "province": JS,
        },
        "work_place": {"division_code": "320115"},
        "period": {"start": "2025-03-01", "end": "2025-12-31"},
        "amount_owed": "48600.00",
        "workers_affected": 12,
        "evidence": [{"name": "考勤表.pdf", "sha256": "ab" * 32, "size": 20480}],
        "facts": "工程完工后拖欠十个月工资。",
    }
    body.update(overrides)
    return CaseDraft.model_validate(body)


class Clock:
    """The system clock, moved forward when a test says so."""

    def __init__(self) -> None:
        self.ahead = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.ahead


@dataclass
class Node:
    province: str
    engine: AsyncEngine
    service: CaseService
    clock: Clock

    async def case(self, case_id: str) -> StoredCase:
        async with readonly_sessionmaker(self.engine)() as session:
            found = await cases.load(session, case_id)
        assert found is not None, f"{self.province} does not hold {case_id}"
        return found

    async def rows(self, table: Table) -> list[dict[str, Any]]:
        async with readonly_sessionmaker(self.engine)() as session:
            return [dict(row) for row in (await session.execute(select(table))).mappings()]

    async def statistics(self) -> dict[str, Any]:
        async with readonly_sessionmaker(self.engine)() as session:
            return await federation_statistics(session)


class Bus:
    """Takes the events the nodes' outboxes hold and applies them at their receivers, when the test says so."""

    def __init__(self, nodes: dict[str, Node]) -> None:
        self.nodes = nodes

    async def collect(self, province: str) -> list[Envelope]:
        """The events ``province`` wrote since the last collection (marked sent, as the relay would)."""
        engine = self.nodes[province].engine
        async with sessionmaker(engine)() as session, session.begin():
            rows = (await session.execute(select(outbox).where(outbox.c.sent_at.is_(None)).order_by(outbox.c.id))).all()
            await session.execute(
                update(outbox).where(outbox.c.id.in_([r.id for r in rows])).values(sent_at=datetime.now(UTC))
            )
        return [Envelope.from_kafka(r.message_key, r.payload, decode_headers(r.headers)) for r in rows]

    async def deliver(self, envelope: Envelope, *, to: str | None = None) -> None:
        """Apply ``envelope`` at its destination (or at ``to``; broadcast statistics at every other node)."""
        targets = [to] if to else [envelope.destprovince] if envelope.destprovince else list(self.nodes)
        for province in targets:
            if province == envelope.originprovince or province is None:
                continue
            node = self.nodes[province]
            if envelope.type == STATISTICS_PUBLISHED:
                handler = statistics_handler(province)
            else:
                handler = node.service.handlers()[envelope.type]
            async with sessionmaker(node.engine)() as session, session.begin():
                await handler(session, envelope)

    async def flush(self) -> list[Envelope]:
        """Deliver everything, in order, until the nodes have nothing more to say; return what was delivered."""
        delivered: list[Envelope] = []
        while True:
            batch = [envelope for province in self.nodes for envelope in await self.collect(province)]
            if not batch:
                return delivered
            for envelope in batch:
                await self.deliver(envelope)
            delivered.extend(batch)


@pytest.fixture
async def nodes(new_database_url: Callable[[], Awaitable[str]]) -> AsyncIterator[dict[str, Node]]:
    made: dict[str, Node] = {}
    for province in (SC, JS, CQ):
        engine = create_engine(await new_database_url())
        await upgrade(engine, MIGRATIONS)
        key = generate_private_key()
        writer = Outbox(province, "rights", Signer(key_id_for(province, key.public_key()), key))
        clock = Clock()
        service = CaseService(
            province=province,
            sessions=sessionmaker(engine),
            outbox=writer,
            deadlines=Deadlines(Calendars(official=False)),
            clock=clock,
        )
        made[province] = Node(province, engine, service, clock)
    yield made
    for node in made.values():
        await node.engine.dispose()


@pytest.fixture
def bus(nodes: dict[str, Node]) -> Bus:
    return Bus(nodes)


async def file(nodes: dict[str, Node], **overrides: Any) -> str:
    stored = await nodes[SC].service.file(
        draft(**overrides), resident_id=WORKER_ID, work_place_name="南京市", actor=COMPLAINANT
    )
    return stored.case.id


def same(a: StoredCase, b: StoredCase) -> None:
    assert a.case.model_dump() == b.case.model_dump()


async def holds_no_personal_data(node: Node, *, platform_tables: bool = True) -> None:
    """No table of ``node`` mentions the complainant (with ``platform_tables``, the outbox and inbox included)."""
    tables = [*platform_metadata.sorted_tables, *metadata.sorted_tables] if platform_tables else metadata.sorted_tables
    async with readonly_sessionmaker(node.engine)() as session:
        for table in tables:
            for row in (await session.execute(select(table))).all():
                text = repr(tuple(row)) + "".join(
                    value.decode("utf-8", "replace") for value in row if isinstance(value, bytes)
                )
                for secret in (WORKER_ID, WORKER_NAME, WORKER_PHONE, "拖欠十个月"):
                    assert secret not in text, f"{node.province}.{table.name} holds {secret}: {row}"


# Schema ---------------------------------------------------------------------------------------------------------


async def test_the_migrations_build_exactly_the_tables_and_go_down_again(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine, MIGRATIONS)
        async with engine.connect() as connection:
            diff = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), [platform_metadata, metadata])
            )
        assert diff == []
        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: command.downgrade(alembic_config(MIGRATIONS, sync), "rights_0001"))
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        assert not names & set(metadata.tables) and "outbox" in names
        await upgrade(engine, MIGRATIONS)
    finally:
        await engine.dispose()


# Referral, handling, resolution ---------------------------------------------------------------------------------


async def test_a_case_travels_to_the_work_place_and_back_with_one_timeline(nodes: dict[str, Node], bus: Bus) -> None:
    sc, js, cq = nodes[SC], nodes[JS], nodes[CQ]
    case_id = await file(nodes)
    await bus.flush()
    referred = await js.case(case_id)
    same(referred, await sc.case(case_id))
    assert referred.case.complainant.resident_id == WORKER_ID, "the handling province gets the identity"
    assert (referred.case.status, referred.case.holder, referred.redacted) == (Status.REFERRED, JS, False)

    with pytest.raises(NotCaseHolder):
        await sc.service.accept(case_id, actor=officer("sc"), note=None)
    await js.service.accept(case_id, actor=officer("js"), note="受理")
    await js.service.record_update(case_id, actor=officer("js"), note="责令限期支付")
    await js.service.resolve(
        case_id, actor=officer("js"), amount_recovered=Decimal("48600"), workers_paid=12, note="已全额支付"
    )
    delivered = await bus.flush()
    assert [e.type.rsplit(".", 2)[-2] for e in delivered if e.destprovince == SC] == ["accepted", "updated", "resolved"]
    done = await sc.case(case_id)
    same(done, await js.case(case_id))
    assert (done.case.status, done.case.version, done.case.amount_recovered) == (Status.RESOLVED, 4, Decimal("48600"))
    assert [e.kind for e in done.case.timeline] == ["filed", "referred", "accepted", "updated", "resolved"]
    assert [e.province for e in done.case.timeline] == [SC, SC, JS, JS, JS]

    # the third province knows the statistics and nothing else
    assert await cq.rows(rights_case) == []
    await holds_no_personal_data(cq)
    statistics = await cq.statistics()
    assert statistics["totals"] == {
        "cases": 1,
        "workers_affected": 12,
        "amount_owed": Decimal("48600.00"),
        "amount_recovered": Decimal("48600.00"),
    }
    assert [(row["handling_province"], row["cases"]) for row in statistics["by_handling_province"]] == [(JS, 1)]
    assert [row["status"] for row in statistics["by_status"]] == ["resolved"]
    assert statistics == await sc.statistics()
    for envelope in delivered:
        if envelope.destprovince is None:
            assert envelope.type == STATISTICS_PUBLISHED
            assert WORKER_ID.encode() not in envelope.data and WORKER_NAME.encode() not in envelope.data
            assert case_id.encode() not in envelope.data


async def test_replayed_reordered_and_duplicated_messages_change_nothing(nodes: dict[str, Node], bus: Bus) -> None:
    sc, js, cq = nodes[SC], nodes[JS], nodes[CQ]
    case_id = await file(nodes)
    referral = await bus.collect(SC)
    for envelope in referral:
        await bus.deliver(envelope)
    await js.service.accept(case_id, actor=officer("js"), note=None)
    await js.service.record_update(case_id, actor=officer("js"), note="第一次检查")
    await js.service.record_update(case_id, actor=officer("js"), note="第二次检查")
    messages = await bus.collect(JS)
    assert [m.type.rsplit(".", 2)[-2] for m in messages] == ["accepted", "updated", "updated"]

    # the newest first: it carries the whole timeline; the older ones then change nothing
    for envelope in reversed(messages):
        await bus.deliver(envelope)
    after_reversed = await sc.case(case_id)
    same(after_reversed, await js.case(case_id))
    assert len(after_reversed.case.timeline) == 5

    statistics = [e for e in await bus.collect(SC) if e.type == STATISTICS_PUBLISHED]
    rows_before = {p: await nodes[p].rows(rights_case) for p in (SC, JS)}
    for envelope in [*messages, *messages]:  # every message twice more
        await bus.deliver(envelope)
    for envelope in [*referral, *referral]:
        await bus.deliver(envelope)
    assert await bus.collect(SC) == [] and await bus.collect(JS) == [], "a stale message causes nothing"
    assert {p: await nodes[p].rows(rights_case) for p in (SC, JS)} == rows_before, "not even a timestamp"
    same(await sc.case(case_id), after_reversed)

    # statistics snapshots out of order: the highest generation wins
    for envelope in [*referral, *statistics]:
        if envelope.type == STATISTICS_PUBLISHED:
            await bus.deliver(envelope, to=CQ)
    newest = max(int(e.json()["generation"]) for e in [*referral, *statistics] if e.type == STATISTICS_PUBLISHED)
    for envelope in reversed([*referral, *statistics]):
        if envelope.type == STATISTICS_PUBLISHED:
            await bus.deliver(envelope, to=CQ)
    [origin] = await cq.rows(statistics_origin)
    assert (origin["origin"], origin["generation"]) == (SC, newest)
    assert [(c["status"], c["cases"]) for c in await cq.rows(statistics_cell)] == [("investigating", 1)]


async def test_a_change_from_a_province_that_does_not_hold_the_case_is_refused(
    nodes: dict[str, Node], bus: Bus
) -> None:
    sc, js = nodes[SC], nodes[JS]
    case_id = await file(nodes)
    await bus.flush()
    await js.service.accept(case_id, actor=officer("js"), note=None)
    [accepted] = [e for e in await bus.collect(JS) if e.type == ACCEPTED]
    before = await sc.case(case_id)

    def forged(origin: str, **changes: Any) -> Envelope:
        data = accepted.json()
        data.update(changes)
        data["timeline"][-1].update(province=origin, status=data["status"])
        return replace(accepted, originprovince=origin, data=encode_data(data))

    # Chongqing claims to have taken Jiangsu's case
    with pytest.raises(ValueError, match="held by 320000; 500000 may not change it"):
        await bus.deliver(forged(CQ, holder=CQ, handling_province=CQ), to=SC)
    # a message whose last step names another province than its sender
    with pytest.raises(ValueError, match="last step was taken by 320000"):
        await bus.deliver(replace(accepted, originprovince=CQ), to=SC)
    # the wrong message type or key for the content
    with pytest.raises(ValueError, match="last step is accepted"):
        await bus.deliver(replace(accepted, type="org.labornet.rights.case.resolved.v1"), to=SC)
    with pytest.raises(ValueError, match="differs from case"):
        await bus.deliver(replace(accepted, partitionkey="510000-R-OTHER"), to=SC)
    # the home province may not overwrite the case while Jiangsu holds it
    home_forgery = forged(SC, version=9, status="closed", closure_reason="unfounded")
    with pytest.raises(ValueError, match="held by 320000; 510000 may not change it"):
        await bus.deliver(home_forgery, to=JS)
    # a case that contradicts itself
    with pytest.raises(ValueError, match="holder 500000 is neither its home nor its handling province"):
        await bus.deliver(replace(accepted, data=encode_data({**accepted.json(), "holder": CQ})), to=SC)
    with pytest.raises(ValueError, match="is closed, but its last step left it investigating"):
        await bus.deliver(replace(accepted, data=encode_data({**accepted.json(), "status": "closed"})), to=SC)
    # a case sent to a province that is neither home nor handling
    with pytest.raises(ValueError, match="not addressed to 500000"):
        await bus.deliver(accepted, to=CQ)
    same(await sc.case(case_id), before)
    assert (await js.case(case_id)).case.status == Status.INVESTIGATING
    assert await nodes[CQ].rows(rights_case) == []

    await bus.deliver(accepted)
    assert (await sc.case(case_id)).case.status == Status.INVESTIGATING


# Decline and redirect; withdrawal ----------------------------------------------------------------------------


async def test_a_declined_case_returns_home_and_the_decliner_keeps_it_masked(nodes: dict[str, Node], bus: Bus) -> None:
    sc, js, cq = nodes[SC], nodes[JS], nodes[CQ]
    case_id = await file(nodes)
    await bus.flush()
    await js.service.decline(case_id, actor=officer("js"), reason="用工地实为重庆", suggested_province=CQ)
    await bus.flush()
    returned = await sc.case(case_id)
    assert (returned.case.status, returned.case.holder, returned.case.declined_by) == (Status.RETURNED, SC, [JS])
    kept = await js.case(case_id)
    assert kept.redacted and kept.case.timeline == returned.case.timeline
    assert kept.case.complainant.resident_id != WORKER_ID
    # (its outbox keeps the message that carried the case home until the relay's retention purges it)
    await holds_no_personal_data(js, platform_tables=False)
    with pytest.raises(NotCaseHolder):
        await js.service.accept(case_id, actor=officer("js"), note=None)

    await sc.service.refer(case_id, actor=officer("sc"), to=CQ, note="转重庆")
    await bus.flush()
    await cq.service.accept(case_id, actor=officer("cq"), note=None)
    await bus.flush()
    handled = await cq.case(case_id)
    same(handled, await sc.case(case_id))
    assert handled.case.complainant.resident_id == WORKER_ID
    assert [(e.kind, e.province) for e in handled.case.timeline] == [
        ("filed", SC),
        ("referred", SC),
        ("declined", JS),
        ("referred", SC),
        ("accepted", CQ),
    ]
    assert (await js.case(case_id)).case.version == 2, "the province that declined hears nothing more"
    await holds_no_personal_data(js, platform_tables=False)


async def test_a_withdrawal_is_honoured_exactly_once_whoever_holds_the_case(nodes: dict[str, Node], bus: Bus) -> None:
    sc, js = nodes[SC], nodes[JS]

    # 1. Jiangsu holds the case: it is asked to close it, and does
    first = await file(nodes)
    await bus.flush()
    pending = await sc.service.withdraw(first, actor=COMPLAINANT, note="已私下和解")
    assert pending.case.status == Status.REFERRED and pending.withdrawal_requested_at is not None
    again = await sc.service.withdraw(first, actor=COMPLAINANT, note=None)
    assert again.withdrawal_requested_at == pending.withdrawal_requested_at
    requests = [e for e in await bus.collect(SC) if e.destprovince == JS]
    assert len(requests) == 1, "asked once"
    await bus.deliver(requests[0])
    await bus.flush()

    # 2. the request crosses a decline: the case comes back undecided and is closed at home on arrival
    second = await file(nodes)
    await bus.flush()
    await sc.service.withdraw(second, actor=COMPLAINANT, note=None)
    request = [e for e in await bus.collect(SC) if e.destprovince == JS]
    await js.service.decline(second, actor=officer("js"), reason="非本省管辖", suggested_province=None)
    await bus.flush()
    for envelope in request:
        await bus.deliver(envelope)  # arrives after the decline: ignored

    # 3. the request crosses a resolution: the resolution stands
    third = await file(nodes)
    await bus.flush()
    await js.service.accept(third, actor=officer("js"), note=None)
    await bus.flush()
    await sc.service.withdraw(third, actor=COMPLAINANT, note=None)
    request = [e for e in await bus.collect(SC) if e.destprovince == JS]
    await js.service.resolve(third, actor=officer("js"), amount_recovered=Decimal("100"), workers_paid=1, note=None)
    await bus.flush()
    for envelope in request:
        await bus.deliver(envelope)
    await bus.flush()

    outcomes = []
    for case_id in (first, second, third):
        home = await sc.case(case_id)
        assert home.withdrawal_requested_at is None
        terminal = [e for e in home.case.timeline if e.kind in ("resolved", "closed")]
        assert len(terminal) == 1, "exactly one terminal state"
        outcomes.append((home.case.status, home.case.closure_reason, terminal[0].province))
    assert outcomes == [
        (Status.CLOSED, "withdrawn", JS),
        (Status.CLOSED, "withdrawn", SC),
        (Status.RESOLVED, None, JS),
    ]
    same(await sc.case(first), await js.case(first))
    same(await sc.case(third), await js.case(third))
    with pytest.raises(CaseRuleError, match="concluded"):
        await sc.service.withdraw(third, actor=COMPLAINANT, note=None)
    with pytest.raises(NotCaseHolder, match="withdrawn there"):
        await js.service.withdraw(third, actor=officer("js"), note=None)


async def test_a_late_investigation_is_escalated_not_extended_and_both_provinces_see_it(
    nodes: dict[str, Node], bus: Bus
) -> None:
    sc, js = nodes[SC], nodes[JS]
    case_id = await file(nodes)
    await bus.flush()
    taken = await js.service.accept(case_id, actor=officer("js"), note=None)
    await bus.flush()
    due = taken.case.investigation_due
    assert due is not None
    js.clock.ahead = timedelta(days=(due - today_in_china()).days + 40)  # forty days after the last allowed day
    with pytest.raises(CaseRuleError, match="an overdue case is not extended"):
        await js.service.extend(case_id, actor=officer("js"), reason="需调取银行流水")
    with pytest.raises(NotCaseHolder):
        await sc.service.escalate(case_id, actor=officer("sc"), reason="home does not hold it")
    await js.service.escalate(case_id, actor=officer("js"), reason="企业负责人失联，已报上级督办")
    delivered = await bus.flush()
    assert [e.type for e in delivered if e.destprovince == SC] == ["org.labornet.rights.case.escalated.v1"]
    home = await sc.case(case_id)
    same(home, await js.case(case_id))
    assert (home.case.status, home.case.extended, home.case.investigation_due) == (Status.INVESTIGATING, False, due)
    assert home.case.last_entry.kind == "escalated" and home.case.last_entry.province == JS
    assert home.case.last_entry.details["days_late"] >= 39
    with pytest.raises(CaseRuleError, match="escalated already"):
        await js.service.escalate(case_id, actor=officer("js"), reason="again")


async def test_a_re_referral_corrects_the_work_place_at_both_ends(nodes: dict[str, Node], bus: Bus) -> None:
    sc, js, cq = nodes[SC], nodes[JS], nodes[CQ]
    case_id = await file(nodes)
    await bus.flush()
    await js.service.decline(case_id, actor=officer("js"), reason="用工地实为重庆渝中区", suggested_province=CQ)
    await bus.flush()
    with pytest.raises(CaseRuleError, match="not in province 500000"):
        await sc.service.refer(
            case_id,
            actor=officer("sc"),
            to=CQ,
            note=None,
            work_place=WorkPlace(division_code="320115"),
            work_place_name="南京市",
        )
    corrected = WorkPlace(division_code="500103", site="解放碑某项目")
    await sc.service.refer(
        case_id, actor=officer("sc"), to=CQ, note="更正用工地", work_place=corrected, work_place_name="重庆市市辖区"
    )
    await bus.flush()
    handled = await cq.case(case_id)
    same(handled, await sc.case(case_id))
    assert (handled.case.work_place, handled.case.work_place_name) == (corrected, "重庆市市辖区")
    assert handled.case.last_entry.details["previous_work_place"] == {"division_code": "320115", "site": None}
    assert (await js.case(case_id)).case.work_place.division_code == "320115", "the decliner hears nothing more"


async def test_statistics_count_the_home_cases_by_handling_province_and_status(
    nodes: dict[str, Node], bus: Bus
) -> None:
    sc, js, cq = nodes[SC], nodes[JS], nodes[CQ]
    first = await file(nodes)
    await file(nodes, amount_owed="1000.50", workers_affected=1)
    local = await file(nodes, work_place={"division_code": "510104"}, category="work-injury", sector="other")
    await bus.flush()
    await js.service.accept(first, actor=officer("js"), note=None)
    await js.service.resolve(first, actor=officer("js"), amount_recovered=Decimal("40000"), workers_paid=10, note=None)
    await sc.service.accept(local, actor=officer("sc"), note=None)
    await bus.flush()

    statistics = await cq.statistics()
    assert statistics == await sc.statistics() == await js.statistics()
    assert [o["province"] for o in statistics["origins"]] == [SC]
    assert statistics["totals"] == {
        "cases": 3,
        "workers_affected": 25,
        "amount_owed": Decimal("98200.50"),
        "amount_recovered": Decimal("40000.00"),
    }
    assert [(r["handling_province"], r["cases"]) for r in statistics["by_handling_province"]] == [(JS, 2), (SC, 1)]
    assert [(r["status"], r["cases"]) for r in statistics["by_status"]] == [
        ("investigating", 1),
        ("referred", 1),
        ("resolved", 1),
    ]
    assert [(r["category"], r["cases"]) for r in statistics["by_category"]] == [("wage-arrears", 2), ("work-injury", 1)]
    assert [(r["sector"], r["cases"]) for r in statistics["by_sector"]] == [("construction", 2), ("other", 1)]


# The bus contract ---------------------------------------------------------------------------------------------


async def test_every_event_the_nodes_write_matches_the_published_contract(nodes: dict[str, Node], bus: Bus) -> None:
    """Walk cases through every step that sends something, then check each row of the three outboxes: its type is
    listed in ``labornet.rights.contracts.EVENTS`` on the right kind of channel, and its data validates against the
    JSON Schema of the listed model; every listed type was written at least once."""
    sc, js, cq = nodes[SC], nodes[JS], nodes[CQ]
    # referred, accepted, updated, extended, escalated, resolved (and the statistics of every change at home)
    first = await file(nodes)
    await bus.flush()
    await js.service.accept(first, actor=officer("js"), note="受理")
    await js.service.record_update(first, actor=officer("js"), note="约谈项目负责人")
    extended = await js.service.extend(first, actor=officer("js"), reason="需调取银行流水")
    due = extended.case.investigation_due
    assert due is not None
    js.clock.ahead = timedelta(days=(due - today_in_china()).days + 3)
    await js.service.escalate(first, actor=officer("js"), reason="用人单位拒不配合")
    await js.service.resolve(first, actor=officer("js"), amount_recovered=Decimal("48600"), workers_paid=12, note=None)
    await bus.flush()
    # declined, referred elsewhere with a corrected work place, a withdrawal asked of the holder, closed there
    second = await file(nodes)
    await bus.flush()
    await js.service.decline(second, actor=officer("js"), reason="用工地实为重庆", suggested_province=CQ)
    await bus.flush()
    corrected = WorkPlace(division_code="500103", site="解放碑某项目")
    await sc.service.refer(second, actor=officer("sc"), to=CQ, note=None, work_place=corrected, work_place_name="重庆")
    await bus.flush()
    await sc.service.withdraw(second, actor=COMPLAINANT, note="已和解")
    await bus.flush()
    assert (await sc.case(second)).case.closure_reason == "withdrawn"

    contracts = {contract.type: contract for contract in EVENTS}
    assert len(contracts) == len(EVENTS), "each type is listed once"
    validators = {
        event_type: Draft202012Validator(
            contract.model.model_json_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER
        )
        for event_type, contract in contracts.items()
    }
    seen: dict[str, int] = {}
    for node in (sc, js, cq):
        for row in await node.rows(outbox):
            envelope = Envelope.from_kafka(row["message_key"], row["payload"], decode_headers(row["headers"]))
            assert envelope.type in contracts, f"{envelope.type} is published but not in the contract"
            contract = contracts[envelope.type]
            if contract.channel == "inbox":
                assert envelope.destprovince is not None
                assert row["topic"] == f"labornet.{envelope.destprovince}.rights.inbox"
            else:
                assert envelope.destprovince is None
                assert row["topic"] == f"labornet.{node.province}.rights.events"
            data = json.loads(envelope.data)
            errors = [
                f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
                for e in validators[envelope.type].iter_errors(data)
            ]
            assert errors == [], f"{envelope.type} from {node.province}: {errors}"
            contract.model.model_validate(data)
            seen[envelope.type] = seen.get(envelope.type, 0) + 1
    assert set(seen) == set(contracts), f"listed but never written: {set(contracts) - set(seen)}"

    # the schemas are not empty promises: what the receivers would refuse, they refuse too
    case_message = json.loads((await bus_rows(sc, REFERRED))[0])
    for broken in (
        {k: v for k, v in case_message.items() if k != "timeline"},
        {**case_message, "status": "lost"},
        {**case_message, "complainant": {"name": WORKER_NAME}},
        {**case_message, "leaked": True},
    ):
        assert not validators[REFERRED].is_valid(broken), broken
    snapshot = json.loads((await bus_rows(sc, STATISTICS_PUBLISHED))[-1])
    assert snapshot["cells"], "the last snapshot counts the two cases"
    assert not validators[STATISTICS_PUBLISHED].is_valid({**snapshot, "generation": 0})
    assert not validators[STATISTICS_PUBLISHED].is_valid({**snapshot, "cells": [{**snapshot["cells"][0], "name": "x"}]})
    assert not validators[WITHDRAWAL_REQUESTED].is_valid({"case_id": first, "requested_at": "2026-01-01T00:00:00Z"})


async def bus_rows(node: Node, event_type: str) -> list[bytes]:
    """The data of the events of ``event_type`` in ``node``'s outbox."""
    envelopes = [
        Envelope.from_kafka(row["message_key"], row["payload"], decode_headers(row["headers"]))
        for row in await node.rows(outbox)
    ]
    return [envelope.data for envelope in envelopes if envelope.type == event_type]

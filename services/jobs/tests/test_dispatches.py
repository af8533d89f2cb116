"""Organised dispatch: the rules (pure), the use cases and message handlers on real databases (SQLite, and
PostgreSQL when configured), and the HTTP API of one node.

The multi-node tests run Sichuan (origin), Zhejiang (destination) and Chongqing (bystander), each with its own
migrated database and outbox. Instead of the broker, the test reads what each node put in its outbox and hands it
to the receiver's handler, so it chooses the order: duplicates, replays, reordered and forged deliveries included.
The inbox's de-duplication by event id is bypassed on purpose: the dispatch's own rules must make replays
harmless. (The real broker is exercised in tests/integration/test_dispatches_federation.py.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from fastapi.routing import APIRoute
from jsonschema import Draft202012Validator, FormatChecker
from prometheus_client import REGISTRY
from pydantic import ValidationError
from sqlalchemy import JSON, BigInteger, Boolean, Date, DateTime, Integer, String, Text, insert, inspect, select
from sqlalchemy import update as sql_update
from sqlalchemy.ext.asyncio import AsyncEngine

from labornet.jobs.adapters import dispatches as repository
from labornet.jobs.adapters.dispatches import StoredDispatch
from labornet.jobs.adapters.tables import dispatch as dispatch_table
from labornet.jobs.adapters.tables import metadata
from labornet.jobs.app import create_app
from labornet.jobs.domain.dispatch import (
    ANNOUNCED,
    ARRIVAL_CONFIRMED,
    CANCELLED,
    MESSAGE_MODELS,
    UPDATED,
    ConfirmationLimit,
    Dispatch,
    DispatchChanges,
    DispatchDraft,
    DispatchRole,
    DispatchRuleError,
    InvalidDispatch,
    MessageRefused,
    NotParty,
    StaleVersion,
    State,
    VersionRequired,
    announce,
    cancel,
    confirm_arrival,
    overdue,
    receive_arrival,
    receive_plan,
    update,
)
from labornet.jobs.entrypoints import dispatches as dispatches_api
from labornet.jobs.entrypoints.dispatches import EVENTS
from labornet.jobs.service_layer.dispatches import DispatchService
from labornet.shared.clock import today_in_china
from labornet.shared.db import create_engine, outbox, readonly_sessionmaker, sessionmaker
from labornet.shared.envelope import Envelope
from labornet.shared.inbox import RuleViolation
from labornet.shared.keys import NodeKeys
from labornet.shared.migrations import alembic_config, upgrade
from labornet.shared.outbox import Outbox, decode_headers
from labornet.shared.problems import PROBLEM_JSON
from labornet.shared.settings import Settings
from labornet.shared.signing import Signer, generate_private_key, key_id_for
from labornet.shared.testing import assert_problem, bearer, serving
from labornet.shared.topics import inbox_topic
from labornet.shared.workdays import Calendars

MIGRATIONS = "labornet.jobs:migrations"
SC, ZJ, CQ = "510000", "330000", "500000"
DEMAND = f"{ZJ}-D-0123456789ABCDEF0123"
WEEKDAYS = ConfirmationLimit(Calendars(official=False), days=2)  # Monday to Friday, no holidays
# Friday 2026-03-06: leaving at 08:30 in China, expected the same day; two working days later is Tuesday the 10th
DEPARTURE = datetime(2026, 3, 6, 0, 30, tzinfo=UTC)
RECORDED = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


def draft_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "destination_province": ZJ,
        "brand_demand_id": DEMAND,
        "employers": [{"name": "宁波某电子科技有限公司", "division_code": "330206", "site": "北仑园区"}],
        "headcount": 30,
        "transport": "special-train",
        "departure_at": DEPARTURE.isoformat(),
        "departure_place": "成都东站",
        "expected_arrival_on": "2026-03-06",
        "escort": {"name": "李建国", "phone": "138 1234 5678"},
        "note": "春风行动专列",
    }
    body.update(overrides)
    return body


def draft(**overrides: Any) -> DispatchDraft:
    return DispatchDraft.model_validate(draft_body(**overrides))


def announced(**overrides: Any) -> Dispatch:
    return announce(draft(**overrides), dispatch_id=f"{SC}-G-{'A' * 20}", origin=SC, at=RECORDED, limit=WEEKDAYS)


def arrived(dispatch: Dispatch, received: int = 29, note: str | None = "一人返乡") -> Dispatch:
    return confirm_arrival(
        dispatch,
        province=ZJ,
        expected_version=dispatch.version,
        arrived_at=DEPARTURE + timedelta(hours=30),
        headcount_received=received,
        note=note,
        at=DEPARTURE + timedelta(hours=31),
    )


# The rules -------------------------------------------------------------------------------------------------------


def test_a_dispatch_is_recorded_with_its_confirmation_limit_on_the_destinations_calendar() -> None:
    dispatch = announced()
    assert (dispatch.version, dispatch.state, dispatch.origin_province) == (1, State.ANNOUNCED, SC)
    assert dispatch.escort.phone == "13812345678"  # normalised
    assert dispatch.confirmation_due == date(2026, 3, 10)  # Friday + 2 working days, over the weekend
    holiday = ConfirmationLimit(Calendars(official=False, regional={}), days=2)
    assert holiday.due(date(2026, 3, 6), ZJ) == date(2026, 3, 10)
    assert (
        dispatch.difference is None
        and dispatch.role_of(SC) == DispatchRole.SENT
        and dispatch.role_of(ZJ) == DispatchRole.RECEIVED
    )


def test_overdue_only_after_the_last_allowed_day_and_never_once_arrived() -> None:
    dispatch = announced()
    assert not overdue(dispatch, date(2026, 3, 10))
    assert overdue(dispatch, date(2026, 3, 11))
    assert not overdue(arrived(dispatch), date(2026, 4, 1))
    assert not overdue(cancel(dispatch, province=SC, expected_version=1, reason="停运", at=RECORDED), date(2026, 4, 1))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"headcount": 0}, "headcount"),
        ({"headcount": 10_001}, "headcount"),
        ({"brand_demand_id": None}, "body"),  # neither a brand demand nor an event
        ({"brand_demand_id": "330000-D-123"}, "brand_demand_id"),
        ({"fair_id": "500000-X-0123456789ABCDEF0123"}, "fair_id"),
        ({"destination_province": "330100"}, "destination_province"),
        ({"escort": {"name": "李建国", "phone": "12345"}}, "escort"),
        ({"transport": "horse"}, "transport"),
        ({"employers": []}, "employers"),
        ({"departure_at": "2026-03-06T08:30:00"}, "departure_at"),  # no offset
    ],
)
def test_a_draft_refuses_bad_values(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        draft(**overrides)
    assert any(field in ".".join(map(str, error["loc"])) or field == "body" for error in caught.value.errors())


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"destination_province": SC}, "destination_province"),
        ({"brand_demand_id": f"{CQ}-D-0123456789ABCDEF0123"}, "brand_demand_id"),
        ({"employers": [{"name": "重庆某厂", "division_code": "500101"}]}, "employers.0.division_code"),
        ({"expected_arrival_on": "2026-03-05"}, "expected_arrival_on"),
        ({"expected_arrival_on": "2026-05-05"}, "expected_arrival_on"),
    ],
)
def test_announcing_checks_what_needs_more_than_one_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidDispatch) as caught:
        announced(**overrides)
    assert caught.value.field == field


def test_only_the_origin_changes_the_plan_naming_the_current_version() -> None:
    dispatch = announced()
    changes = DispatchChanges(headcount=32, expected_arrival_on=date(2026, 3, 9))
    with pytest.raises(NotParty):
        update(dispatch, changes, province=ZJ, expected_version=1, at=RECORDED, limit=WEEKDAYS)
    with pytest.raises(VersionRequired):
        update(dispatch, changes, province=SC, expected_version=None, at=RECORDED, limit=WEEKDAYS)
    with pytest.raises(StaleVersion):
        update(dispatch, changes, province=SC, expected_version=2, at=RECORDED, limit=WEEKDAYS)
    with pytest.raises(InvalidDispatch):
        update(dispatch, DispatchChanges(version=1), province=SC, expected_version=1, at=RECORDED, limit=WEEKDAYS)
    later = RECORDED + timedelta(hours=1)
    changed = update(dispatch, changes, province=SC, expected_version=1, at=later, limit=WEEKDAYS)
    assert (changed.version, changed.headcount, changed.changed_at) == (2, 32, later)
    assert changed.confirmation_due == date(2026, 3, 11)  # recounted from the new expected arrival (Monday)
    assert changed.announced_at == RECORDED and changed.escort == dispatch.escort


def test_a_change_names_what_it_changes_and_clears_only_the_note() -> None:
    with pytest.raises(ValidationError, match="headcount: cannot be null"):
        DispatchChanges.model_validate({"version": 1, "headcount": None})
    dispatch = announced()
    changes = DispatchChanges.model_validate({"note": None})
    cleared = update(dispatch, changes, province=SC, expected_version=1, at=RECORDED, limit=WEEKDAYS)
    assert cleared.note is None and cleared.headcount == dispatch.headcount


def test_a_confirmed_or_cancelled_dispatch_is_final() -> None:
    dispatch = announced()
    confirmed = arrived(dispatch)
    assert (confirmed.state, confirmed.difference, confirmed.version) == (State.ARRIVED, 1, 1)
    with pytest.raises(DispatchRuleError, match="final"):
        update(confirmed, DispatchChanges(headcount=1), province=SC, expected_version=1, at=RECORDED, limit=WEEKDAYS)
    with pytest.raises(DispatchRuleError, match="final"):
        cancel(confirmed, province=SC, expected_version=1, reason="x", at=RECORDED)
    with pytest.raises(DispatchRuleError, match="confirmed already"):
        arrived(confirmed)
    called_off = cancel(dispatch, province=SC, expected_version=1, reason="列车停运", at=RECORDED)
    assert (called_off.state, called_off.version) == (State.CANCELLED, 2)
    with pytest.raises(DispatchRuleError, match="cancelled"):
        arrived(called_off)


def test_only_the_destination_confirms_the_arrival_with_a_plausible_headcount() -> None:
    dispatch = announced()
    with pytest.raises(NotParty):
        confirm_arrival(
            dispatch,
            province=SC,
            expected_version=1,
            arrived_at=DEPARTURE,
            headcount_received=30,
            note=None,
            at=DEPARTURE,
        )
    with pytest.raises(InvalidDispatch) as too_many:
        arrived(dispatch, received=61)
    assert too_many.value.field == "headcount_received"
    with pytest.raises(InvalidDispatch) as unexplained:
        arrived(dispatch, received=29, note=None)
    assert unexplained.value.field == "note"
    with pytest.raises(StaleVersion):
        confirm_arrival(
            dispatch,
            province=ZJ,
            expected_version=2,
            arrived_at=DEPARTURE,
            headcount_received=30,
            note=None,
            at=DEPARTURE,
        )
    with pytest.raises(InvalidDispatch, match="future"):
        confirm_arrival(
            dispatch,
            province=ZJ,
            expected_version=1,
            arrived_at=DEPARTURE + timedelta(days=1),
            headcount_received=30,
            note=None,
            at=DEPARTURE,
        )
    assert arrived(dispatch, received=30, note=None).difference == 0
    more = arrived(dispatch, received=31, note="途中一人加入")
    assert more.difference == -1 and more.headcount_received == 31


def test_a_plan_is_taken_only_from_the_origin_and_only_when_newer() -> None:
    dispatch = announced()
    assert receive_plan(None, dispatch, sender=SC, receiver=ZJ) == dispatch
    with pytest.raises(MessageRefused):
        receive_plan(None, dispatch, sender=CQ, receiver=ZJ)  # a forged origin
    with pytest.raises(MessageRefused):
        receive_plan(None, dispatch, sender=SC, receiver=CQ)  # not addressed to Chongqing
    assert receive_plan(dispatch, dispatch, sender=SC, receiver=ZJ) is None  # a duplicate
    changed = update(
        dispatch, DispatchChanges(headcount=31), province=SC, expected_version=1, at=RECORDED, limit=WEEKDAYS
    )
    assert receive_plan(changed, dispatch, sender=SC, receiver=ZJ) is None  # an older version after a newer one
    confirmed = arrived(dispatch)
    merged = receive_plan(confirmed, changed, sender=SC, receiver=ZJ)  # the origin changed it meanwhile
    assert merged is not None and merged.arrival == confirmed.arrival and merged.headcount == 31


def test_an_arrival_is_taken_only_from_the_destination_and_once() -> None:
    dispatch = announced()
    confirmed = arrived(dispatch)
    with pytest.raises(MessageRefused):
        receive_arrival(dispatch, confirmed, sender=CQ, receiver=SC)
    with pytest.raises(MessageRefused):
        receive_arrival(None, confirmed, sender=ZJ, receiver=SC)  # never recorded at the origin
    with pytest.raises(MessageRefused):
        receive_arrival(dispatch, dispatch, sender=ZJ, receiver=SC)  # no arrival in it
    forged = confirmed.model_copy(update={"destination_province": CQ})
    with pytest.raises(MessageRefused):
        receive_arrival(dispatch, forged, sender=CQ, receiver=SC)  # redirected to the sender on the way
    at_origin = receive_arrival(dispatch, confirmed, sender=ZJ, receiver=SC)
    assert at_origin == confirmed
    assert receive_arrival(at_origin, confirmed, sender=ZJ, receiver=SC) is None


def test_a_cancellation_crossing_an_arrival_ends_the_same_on_both_sides() -> None:
    dispatch = announced()
    called_off = cancel(dispatch, province=SC, expected_version=1, reason="停运", at=RECORDED)
    confirmed = arrived(dispatch)  # the destination confirmed before the cancellation reached it
    at_origin = receive_arrival(called_off, confirmed, sender=ZJ, receiver=SC)
    at_destination = receive_plan(confirmed, called_off, sender=SC, receiver=ZJ)
    assert at_origin is not None and at_destination is not None
    assert at_origin.model_dump() == at_destination.model_dump()
    assert at_origin.state == State.ARRIVED  # the workers did arrive


def test_each_message_type_carries_only_what_its_step_leaves() -> None:
    dispatch = announced()
    data = dispatch.model_dump(mode="json")
    MESSAGE_MODELS[ANNOUNCED].model_validate(data)
    for wrong in (UPDATED, CANCELLED, ARRIVAL_CONFIRMED):
        with pytest.raises(ValidationError):
            MESSAGE_MODELS[wrong].model_validate(data)
    MESSAGE_MODELS[ARRIVAL_CONFIRMED].model_validate(arrived(dispatch).model_dump(mode="json"))
    assert {contract.type for contract in EVENTS} == set(MESSAGE_MODELS)
    assert all(contract.channel == "inbox" for contract in EVENTS)


# Use cases and handlers on real databases ---------------------------------------------------------------------------


class Clock:
    """A clock the test moves."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Node:
    province: str
    engine: AsyncEngine
    service: DispatchService
    delivered_up_to: int = 0

    async def held(self, dispatch_id: str) -> StoredDispatch | None:
        async with readonly_sessionmaker(self.engine)() as session:
            return await repository.load(session, dispatch_id)

    async def dispatch(self, dispatch_id: str) -> Dispatch:
        found = await self.held(dispatch_id)
        assert found is not None, f"{self.province} does not hold {dispatch_id}"
        return found.dispatch

    async def outbox(self) -> list[tuple[str, str | None, Envelope]]:
        async with readonly_sessionmaker(self.engine)() as session:
            rows = (await session.execute(select(outbox).order_by(outbox.c.id))).all()
        return [
            (r.topic, r.destination, Envelope.from_kafka(r.message_key, r.payload, decode_headers(r.headers)))
            for r in rows
        ]

    async def rows(self) -> list[dict[str, Any]]:
        async with readonly_sessionmaker(self.engine)() as session:
            return [dict(r) for r in (await session.execute(select(dispatch_table))).mappings()]

    async def receive(self, envelope: Envelope) -> None:
        handler = self.service.handlers()[envelope.type]
        async with sessionmaker(self.engine)() as session, session.begin():
            await handler(session, envelope)


@pytest.fixture
async def nodes(new_database_url: Callable[[], Awaitable[str]]) -> AsyncIterator[dict[str, Node]]:
    made: dict[str, Node] = {}
    clock = Clock(RECORDED)
    for province in (SC, ZJ, CQ):
        engine = create_engine(await new_database_url())
        await upgrade(engine, MIGRATIONS)
        key = generate_private_key()
        writer = Outbox(province, "jobs", Signer(key_id_for(province, key.public_key()), key))
        service = DispatchService(
            province=province, sessions=sessionmaker(engine), outbox=writer, limit=WEEKDAYS, clock=clock
        )
        made[province] = Node(province, engine, service)
    yield made
    for node in made.values():
        await node.engine.dispose()


async def last_message(node: Node) -> tuple[str, str | None, Envelope]:
    written = await node.outbox()
    assert written, f"{node.province} wrote nothing"
    return written[-1]


def conforms(envelope: Envelope) -> None:
    """The message's data validates against the JSON Schema of its type's contract."""
    [model] = [contract.model for contract in EVENTS if contract.type == envelope.type]
    Draft202012Validator(model.model_json_schema(), format_checker=FormatChecker()).validate(envelope.json())


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_the_migration_builds_exactly_the_dispatch_table_and_goes_down_again(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine, MIGRATIONS)
        async with engine.connect() as connection:
            diff = await connection.run_sync(lambda sync: compare_metadata(MigrationContext.configure(sync), metadata))
        mine = [d for d in diff if "dispatch" in repr(d) and "vacancy" not in repr(d)]
        assert mine == [], mine
        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: command.downgrade(alembic_config(MIGRATIONS, sync), "jobs_0010"))
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        assert "dispatch" not in names and "recruitment_fair" in names
        await upgrade(engine, MIGRATIONS)
    finally:
        await engine.dispose()


async def test_a_dispatch_travels_to_its_destination_only_and_its_arrival_back(nodes: dict[str, Node]) -> None:
    sc, zj, cq = nodes[SC], nodes[ZJ], nodes[CQ]
    recorded = await sc.service.announce(draft())
    dispatch_id = recorded.dispatch.id
    assert dispatch_id.startswith(f"{SC}-G-") and len(dispatch_id) == len(SC) + 3 + 20

    topic, destination, message = await last_message(sc)
    assert (topic, destination, message.type, message.partitionkey) == (
        inbox_topic(ZJ, "jobs"),
        ZJ,
        ANNOUNCED,
        dispatch_id,
    )
    conforms(message)

    await zj.receive(message)
    assert (await zj.dispatch(dispatch_id)).model_dump() == recorded.dispatch.model_dump()
    before = await zj.held(dispatch_id)
    stale = metric("labornet_jobs_dispatch_messages_total", type=ANNOUNCED, result="stale")
    await zj.receive(message)  # delivered again
    assert await zj.held(dispatch_id) == before
    assert metric("labornet_jobs_dispatch_messages_total", type=ANNOUNCED, result="stale") == stale + 1

    # the destination confirms 29 of 30, which travels back to the origin
    zj.service.clock.now = DEPARTURE + timedelta(hours=31)  # type: ignore[attr-defined]
    received_before = metric("labornet_jobs_dispatch_workers_received_total", origin_province=SC)
    sent_before = metric("labornet_jobs_dispatch_workers_sent_total", destination_province=ZJ)
    confirmed = await zj.service.confirm_arrival(
        dispatch_id,
        arrived_at=DEPARTURE + timedelta(hours=30),
        headcount_received=29,
        note="一人途中因家事返乡",
        expected_version=1,
    )
    assert confirmed.dispatch.difference == 1
    topic, destination, answer = await last_message(zj)
    assert (topic, destination, answer.type) == (inbox_topic(SC, "jobs"), SC, ARRIVAL_CONFIRMED)
    conforms(answer)
    await sc.receive(answer)
    await sc.receive(answer)  # twice: counted once
    at_origin = await sc.dispatch(dispatch_id)
    assert at_origin.model_dump() == (await zj.dispatch(dispatch_id)).model_dump()
    assert (at_origin.state, at_origin.headcount_received, at_origin.difference) == (State.ARRIVED, 29, 1)
    assert metric("labornet_jobs_dispatch_workers_received_total", origin_province=SC) == received_before + 29
    assert metric("labornet_jobs_dispatch_workers_sent_total", destination_province=ZJ) == sent_before + 30

    # an old announcement replayed after the arrival changes nothing at the destination
    await zj.receive(message)
    assert (await zj.dispatch(dispatch_id)).state == State.ARRIVED

    # Chongqing holds nothing: no row, no message
    assert await cq.rows() == [] and await cq.outbox() == []
    assert all(dest in (ZJ, SC) for _, dest, _ in [*(await sc.outbox()), *(await zj.outbox())])


async def test_a_forged_or_misaddressed_message_is_refused_and_changes_nothing(nodes: dict[str, Node]) -> None:
    sc, zj, cq = nodes[SC], nodes[ZJ], nodes[CQ]
    dispatch_id = (await sc.service.announce(draft())).dispatch.id
    _, _, message = await last_message(sc)
    refused = metric("labornet_jobs_dispatch_messages_total", type=ANNOUNCED, result="refused")
    with pytest.raises(RuleViolation, match="sent by 500000"):
        await zj.receive(dataclasses.replace(message, originprovince=CQ))
    with pytest.raises(RuleViolation, match="not to 500000"):
        await cq.receive(message)
    with pytest.raises(RuleViolation, match="differs"):
        await zj.receive(dataclasses.replace(message, partitionkey=f"{SC}-G-{'B' * 20}"))
    with pytest.raises(RuleViolation):
        await zj.receive(dataclasses.replace(message, type=UPDATED))  # version 1 is no update
    assert await zj.rows() == [] and await cq.rows() == []
    assert metric("labornet_jobs_dispatch_messages_total", type=ANNOUNCED, result="refused") == refused + 3

    await zj.receive(message)
    zj.service.clock.now = DEPARTURE + timedelta(hours=31)  # type: ignore[attr-defined]
    await zj.service.confirm_arrival(
        dispatch_id, arrived_at=DEPARTURE, headcount_received=30, note=None, expected_version=1
    )
    _, _, answer = await last_message(zj)
    held = await sc.held(dispatch_id)
    with pytest.raises(RuleViolation, match="cannot confirm"):
        await sc.receive(dataclasses.replace(answer, originprovince=CQ))  # Chongqing confirming Zhejiang's arrival
    assert await sc.held(dispatch_id) == held


async def test_updates_and_a_cancellation_reach_the_destination_in_any_order(nodes: dict[str, Node]) -> None:
    sc, zj = nodes[SC], nodes[ZJ]
    dispatch_id = (await sc.service.announce(draft())).dispatch.id
    with pytest.raises(StaleVersion):
        await sc.service.update(dispatch_id, DispatchChanges(headcount=28), expected_version=2)
    first = (await last_message(sc))[2]
    await zj.receive(first)
    with pytest.raises(NotParty):
        await zj.service.update(dispatch_id, DispatchChanges(headcount=28), expected_version=1)
    await sc.service.update(dispatch_id, DispatchChanges(headcount=28, transport="chartered-bus"), expected_version=1)
    await sc.service.cancel(dispatch_id, "列车停运，改期", expected_version=2)
    written = [envelope for _, _, envelope in await sc.outbox()]
    assert [e.type for e in written] == [ANNOUNCED, UPDATED, CANCELLED]
    for envelope in written:
        conforms(envelope)
    for envelope in reversed(written):  # the newest first: the older ones are stale (the first, again)
        await zj.receive(envelope)
    at_destination = await zj.dispatch(dispatch_id)
    assert (at_destination.state, at_destination.version, at_destination.headcount) == (State.CANCELLED, 3, 28)
    assert at_destination.model_dump() == (await sc.dispatch(dispatch_id)).model_dump()
    with pytest.raises(DispatchRuleError, match="cancelled"):
        await zj.service.confirm_arrival(
            dispatch_id, arrived_at=DEPARTURE, headcount_received=28, note=None, expected_version=3
        )
    assert len(await zj.outbox()) == 0


async def test_overdue_confirmations_show_on_both_sides_and_in_the_gauges(nodes: dict[str, Node]) -> None:
    sc, zj = nodes[SC], nodes[ZJ]
    dispatch_id = (await sc.service.announce(draft())).dispatch.id
    await zj.receive((await last_message(sc))[2])

    async def late(node: Node) -> list[str]:
        async with readonly_sessionmaker(node.engine)() as session:
            found, _ = await repository.page(
                session,
                node.province,
                role=None,
                state=None,
                overdue=True,
                difference=None,
                today=node.service.today(),
                after=None,
                limit=10,
            )
        return [held.dispatch.id for held in found]

    async def gauge(node: Node, role: str, is_late: str) -> float:
        async with readonly_sessionmaker(node.engine)() as session:
            await node.service.refresh_gauges(session)
        return metric("labornet_jobs_dispatches_awaiting_confirmation", role=role, overdue=is_late)

    sc.service.clock.now = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)  # type: ignore[attr-defined]  # 23:00 the 10th
    assert await late(sc) == [] and await late(zj) == []
    assert await gauge(zj, "received", "no") == 1 and await gauge(zj, "received", "yes") == 0
    sc.service.clock.now = datetime(2026, 3, 10, 16, 0, tzinfo=UTC)  # type: ignore[attr-defined]  # 00:00 the 11th
    assert await late(sc) == [dispatch_id] and await late(zj) == [dispatch_id]
    assert await gauge(sc, "sent", "yes") == 1 and await gauge(sc, "sent", "no") == 0

    await zj.service.confirm_arrival(
        dispatch_id, arrived_at=DEPARTURE, headcount_received=30, note=None, expected_version=1
    )
    assert await late(zj) == [] and await gauge(zj, "received", "yes") == 0


async def add_fair(node: Node, fair_id: str, organiser: str, co_organisers: list[str]) -> None:
    """A recruitment event as the node's replica holds it; the columns this part does not read get plain values."""
    fairs = metadata.tables["recruitment_fair"]
    fillers: dict[type, Any] = {
        String: "x",
        Text: "x",
        Integer: 0,
        BigInteger: 0,
        Date: date(2026, 3, 1),
        DateTime: RECORDED,
        JSON: [],
        Boolean: False,
    }
    row: dict[str, Any] = {"id": fair_id, "organiser_province": organiser, "co_organisers": co_organisers}
    for column in fairs.columns:
        if column.name not in row and not column.nullable:
            kind = next(kind for kind in fillers if isinstance(column.type, kind))
            row[column.name] = fillers[kind]
    async with sessionmaker(node.engine)() as session, session.begin():
        await session.execute(insert(fairs).values(**row))


async def test_a_linked_recruitment_event_must_have_the_origin_or_the_destination_among_its_organisers(
    nodes: dict[str, Node],
) -> None:
    sc = nodes[SC]
    joint, elsewhere = f"{CQ}-F-{'1' * 20}", f"{CQ}-F-{'2' * 20}"
    await add_fair(sc, joint, CQ, [SC])
    await add_fair(sc, elsewhere, CQ, ["520000"])
    with pytest.raises(InvalidDispatch, match="neither the origin 510000 nor the destination 330000") as caught:
        await sc.service.announce(draft(brand_demand_id=None, fair_id=elsewhere))
    assert caught.value.field == "fair_id"
    assert await sc.rows() == [] and await sc.outbox() == []
    linked = await sc.service.announce(draft(brand_demand_id=None, fair_id=joint))
    assert linked.dispatch.fair_id == joint
    not_here_yet = await sc.service.announce(draft(fair_id=f"{ZJ}-F-{'3' * 20}"))  # taken by its format
    assert not_here_yet.dispatch.fair_id == f"{ZJ}-F-{'3' * 20}"
    assert len(await sc.rows()) == 2


async def test_a_concurrent_change_is_not_lost(nodes: dict[str, Node]) -> None:
    sc = nodes[SC]
    dispatch_id = (await sc.service.announce(draft())).dispatch.id
    async with sessionmaker(sc.engine)() as session, session.begin():
        await session.execute(sql_update(dispatch_table).where(dispatch_table.c.id == dispatch_id).values(version=2))
    held = await sc.dispatch(dispatch_id)
    async with sessionmaker(sc.engine)() as session, session.begin():
        # a writer that read version 1 does not overwrite version 2
        assert not await repository.replace(session, held.model_copy(update={"version": 1}), held, at=RECORDED)


# The HTTP API of one node ---------------------------------------------------------------------------------------


async def test_the_api_answers_problems_for_bad_inputs_and_changes_nothing(
    make_settings: Callable[..., Settings], database_url: str, node_keys: dict[str, NodeKeys]
) -> None:
    officer = bearer(node_keys[SC], "officer", sub="sc-officer")
    worker = bearer(node_keys[SC], "worker", sub="worker")
    app = create_app(make_settings(SC, "jobs", database_url))
    now = datetime.now(UTC)
    departure = now - timedelta(hours=6)

    def current(**overrides: Any) -> dict[str, Any]:
        """A dispatch leaving today (the module's drafts left in March, and would be overdue now)."""
        dates = {"departure_at": departure.isoformat(), "expected_arrival_on": today_in_china(now).isoformat()}
        return draft_body(**{**dates, **overrides})

    async with serving(app) as client:
        path = "/api/v1/dispatches"
        assert_problem(await client.post(path, json=current()), 401)
        assert_problem(await client.post(path, json=current(), headers=worker), 403, "officer")
        for body, field in [
            (current(headcount=0), "headcount"),
            (current(destination_province=SC), "destination_province"),
            (current(destination_province="110000"), "destination_province"),  # not a federation member
            (current(brand_demand_id=f"{CQ}-D-0123456789ABCDEF0123"), "brand_demand_id"),
            (current(escort={"name": "李建国", "phone": "110"}), "escort.phone"),
        ]:
            problem = assert_problem(await client.post(path, json=body, headers=officer), 422)
            errors: Any = problem["errors"]
            assert field in [error["field"] for error in errors], problem
        listed = await client.get(path, headers=officer)
        assert listed.json() == {"items": [], "next_after": None}

        created = await client.post(path, json=current(), headers=officer)
        assert created.status_code == 201, created.text
        view = created.json()
        dispatch_id = view["id"]
        assert created.headers["Location"] == f"{path}/{dispatch_id}" and created.headers["ETag"] == '"1"'
        assert (view["state"], view["role"], view["difference"], view["overdue"]) == ("announced", "sent", None, False)
        assert view["escort"] == {"name": "李建国", "phone": "13812345678"}

        one = f"{path}/{dispatch_id}"
        assert_problem(await client.patch(one, json={"headcount": 31}, headers=officer), 428)
        assert_problem(
            await client.patch(one, json={"headcount": 31}, headers={**officer, "If-Match": '"2"'}), 409, "version 1"
        )
        assert_problem(await client.patch(one, json={"headcount": 0, "version": 1}, headers=officer), 422)
        arrival = {"arrived_at": now.isoformat(), "headcount_received": 30}
        assert_problem(await client.post(f"{one}/arrival", json={**arrival, "version": 1}, headers=officer), 403)
        assert_problem(await client.get(f"{path}/{SC}-G-{'0' * 20}", headers=officer), 404)
        assert (await client.get(one, headers=officer)).json() == view  # nothing changed

        changed = await client.patch(one, json={"headcount": 31}, headers={**officer, "If-Match": '"1"'})
        assert changed.status_code == 200, changed.text
        assert (changed.json()["headcount"], changed.headers["ETag"]) == (31, '"2"')
        cancelled = await client.post(f"{one}/cancel", json={"reason": "列车停运", "version": 2}, headers=officer)
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        assert_problem(await client.post(f"{one}/cancel", json={"reason": "again", "version": 3}, headers=officer), 409)

        sent = (await client.get(path, params={"role": "sent", "state": "cancelled"}, headers=officer)).json()
        assert [item["id"] for item in sent["items"]] == [dispatch_id]
        assert (await client.get(path, params={"role": "received"}, headers=officer)).json()["items"] == []
        assert (await client.get(path, params={"difference": "true"}, headers=officer)).json()["items"] == []
        assert await _outbox_types(database_url) == [ANNOUNCED, UPDATED, CANCELLED]

        for _ in range(2):
            assert (await client.post(path, json=current(headcount=5), headers=officer)).status_code == 201
        first = (await client.get(path, params={"limit": 2}, headers=officer)).json()
        assert len(first["items"]) == 2 and first["next_after"] == first["items"][-1]["id"]
        rest = (await client.get(path, params={"limit": 2, "after": first["next_after"]}, headers=officer)).json()
        assert len(rest["items"]) == 1 and rest["next_after"] is None
        everything = [item["id"] for item in [*first["items"], *rest["items"]]]
        assert everything == sorted(everything) and dispatch_id in everything
        assert_problem(await client.get(path, params={"state": "lost"}, headers=officer), 422)


async def test_a_departure_given_in_china_time_reads_back_as_the_same_instant(
    make_settings: Callable[..., Settings], database_url: str, node_keys: dict[str, NodeKeys]
) -> None:
    """SQLite keeps a time's wall clock and drops its offset: 08:30+08:00 must not come back as 08:30 UTC."""
    officer = bearer(node_keys[SC], "officer", sub="sc-officer")
    app = create_app(make_settings(SC, "jobs", database_url))
    departure = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)
    in_china = departure.astimezone(timezone(timedelta(hours=8)))
    body = draft_body(departure_at=in_china.isoformat(), expected_arrival_on=today_in_china().isoformat())
    async with serving(app) as client:
        created = await client.post("/api/v1/dispatches", json=body, headers=officer)
        assert created.status_code == 201, created.text
        read = (await client.get(f"/api/v1/dispatches/{created.json()['id']}", headers=officer)).json()
    for answer in (created.json(), read):
        assert datetime.fromisoformat(answer["departure_at"]) == departure, answer["departure_at"]


def test_every_dispatch_operation_documents_a_typed_answer_its_problems_and_a_valid_example(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    spec = create_app(make_settings(SC, "jobs", database_url)).openapi()
    operations = [
        (method.lower(), route.path)
        for route in dispatches_api.router.routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    ]
    assert len(operations) == 6
    for method, path in operations:
        responses = spec["paths"][path][method]["responses"]
        [code] = [code for code in responses if code.startswith("2")]
        [(media, body)] = responses[code]["content"].items()
        assert media == "application/json" and "$ref" in body["schema"], (method, path)
        assert {"401", "403", "422"} <= responses.keys(), (method, path)  # officers only; a bad parameter
        for problem in (code for code in responses if code[0] in "45"):
            assert responses[problem]["content"][PROBLEM_JSON]["schema"] == {
                "$ref": "#/components/schemas/ProblemDetails"
            }
        if path != "/api/v1/dispatches":  # one dispatch: unknown here is 404
            assert "404" in responses, (method, path)
    for name in ("DispatchView", "DispatchPage", "DispatchDraft", "ArrivalRequest"):
        assert name in spec["components"]["schemas"], name
    validator = Draft202012Validator(
        {"$ref": "#/components/schemas/DispatchView", "components": spec["components"]}, format_checker=FormatChecker()
    )
    [example] = spec["components"]["schemas"]["DispatchView"]["examples"]
    assert [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(example)] == []
    assert not validator.is_valid({**example, "state": "lost"})


async def _outbox_types(database_url: str) -> list[str]:
    engine = create_engine(database_url)
    try:
        async with readonly_sessionmaker(engine)() as session:
            rows = (
                await session.execute(
                    select(outbox).where(outbox.c.topic == inbox_topic(ZJ, "jobs")).order_by(outbox.c.id)
                )
            ).all()
    finally:
        await engine.dispose()
    return [Envelope.from_kafka(r.message_key, r.payload, decode_headers(r.headers)).type for r in rows]

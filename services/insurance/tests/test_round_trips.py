"""What each saga step costs the database: every statement is a round trip under the step's write transaction
(on SQLite the write lock, on PostgreSQL a connection and row locks), so a step reads nothing twice, inserts its
timeline in one statement and takes no savepoint it does not need. The transfer saga benchmark
(``python -m benchmarks saga``) measures what these round trips add up to at 100 transfers/s."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace as dataclass_replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from labornet.insurance.adapters import transfers
from labornet.insurance.adapters.config import ConfigCopy
from labornet.insurance.adapters.tables import benefit_config, transfer, transfer_step
from labornet.insurance.domain.transfer import Reason, State, Step, TimeLimits, Transfer, TransferRefused
from labornet.insurance.service_layer.records import BenefitConfigIn, PersonIn, RecordService, add_person, ensure_config
from labornet.insurance.service_layer.transfers import TransferService
from labornet.shared.db import create_engine, outbox, readonly_sessionmaker, sessionmaker
from labornet.shared.envelope import Envelope
from labornet.shared.identifiers import make_resident_id
from labornet.shared.keys import NodeKeys
from labornet.shared.migrations import upgrade
from labornet.shared.outbox import Outbox, decode_headers
from labornet.shared.signing import Signer
from labornet.shared.workdays import WorkCalendar

SC, ZJ = "510000", "330000"
RID = "11010519491231002X"


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """The SQL sent through ``engine`` while the block runs (one entry per execution: executemany counts once)."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(" ".join(statement.split()))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


def touching(sent: list[str], verb: str, table: str) -> list[str]:
    """The statements that run ``verb`` on ``table``: a SELECT from it, or an INSERT or UPDATE of it, also inside a
    data-modifying WITH (on PostgreSQL a case and its new steps are written by one statement)."""
    found = []
    for statement in sent:
        flat = f" {' '.join(statement.replace('(', ' ').split()).upper()} "
        if verb == "SELECT":
            hit = flat.startswith(" SELECT ") and f" {table.upper()} " in flat
        else:
            hit = (f" INSERT INTO {table.upper()} " if verb == "INSERT" else f" UPDATE {table.upper()} SET ") in flat
        if hit:
            found.append(statement)
    return found


@pytest.fixture
async def nodes(
    new_database_url: Callable[[], Awaitable[str]], node_keys: dict[str, NodeKeys], tmp_path: Path
) -> AsyncIterator[dict[str, tuple[AsyncEngine, TransferService]]]:
    made = {}
    for province in (SC, ZJ):
        engine = create_engine(await new_database_url())
        await upgrade(engine, "labornet.insurance:migrations")
        async with sessionmaker(engine)() as session, session.begin():
            await ensure_config(session, province)
        service = TransferService(
            province=province,
            sessions=sessionmaker(engine),
            outbox=Outbox(province, "insurance", Signer.from_file(node_keys[province].signing_key, province)),
            calendar=WorkCalendar(),
            members=[SC, ZJ],
            auto_answer=province == SC,
        )
        made[province] = (engine, service)
    async with sessionmaker(made[SC][0])() as session, session.begin():
        await add_person(
            session,
            SC,
            PersonIn.model_validate(
                {
                    "resident_id": RID,
                    "name": "王晓明",
                    "hukou_division": "511602",
                    "status": "unemployed-claiming",
                    "benefit_months_paid": 3,
                    "periods": [{"start_month": "2017-01", "end_month": "2022-12", "kind": "actual"}],
                }
            ),
        )
    yield made
    for engine, _ in made.values():
        await engine.dispose()


async def last_message(engine: AsyncEngine) -> Envelope:
    async with readonly_sessionmaker(engine)() as session:
        row = (await session.execute(select(outbox).order_by(outbox.c.id.desc()).limit(1))).mappings().one()
    return Envelope.from_kafka(row["message_key"], row["payload"], decode_headers(row["headers"]))


async def deliver(engine: AsyncEngine, service: TransferService, envelope: Envelope) -> None:
    async with sessionmaker(engine)() as session, session.begin():
        await service.handlers()[envelope.type](session, envelope)


async def test_filing_takes_no_savepoint_and_a_refusal_still_leaves_nothing(
    nodes: dict[str, tuple[AsyncEngine, TransferService]],
) -> None:
    engine, service = nodes[ZJ]
    filing = {"resident_id": RID, "name": "王晓明", "from_province": SC, "reason": Reason.CLAIMANT_RELOCATION}
    with statements(engine) as sent:
        await service.file(**filing, new_employer=None, filed_by=RID)
    assert not [s for s in sent if "SAVEPOINT" in s.upper()], sent
    assert len(touching(sent, "INSERT", "transfer_step")) == 1
    assert len(touching(sent, "SELECT", "benefit_config")) == 1

    # the second request for the same person is refused by the unique index; its transaction leaves no trace
    with pytest.raises(TransferRefused, match="already in progress"):
        await service.file(**filing, new_employer=None, filed_by=RID)
    async with readonly_sessionmaker(engine)() as session:
        assert (await session.execute(select(func.count()).select_from(transfer))).scalar_one() == 1
        assert (await session.execute(select(func.count()).select_from(transfer_step))).scalar_one() == 1
        assert (await session.execute(select(func.count()).select_from(outbox))).scalar_one() == 1
    # and the node goes on filing: the refused transaction did not leave the connection in a failed state
    await service.file(**(filing | {"resident_id": "110105194912310029"}), new_employer=None, filed_by=RID)


async def test_an_auto_answered_letter_is_stored_once_and_a_message_reads_its_case_in_one_query(
    nodes: dict[str, tuple[AsyncEngine, TransferService]],
) -> None:
    (zj_engine, zj), (sc_engine, sc) = nodes[ZJ], nodes[SC]
    filing = {"resident_id": RID, "name": "王晓明", "from_province": SC, "reason": Reason.CLAIMANT_RELOCATION}
    await zj.file(**filing, new_employer=None, filed_by=RID)
    with statements(sc_engine) as sent:
        await deliver(sc_engine, sc, await last_message(zj_engine))
    assert len(touching(sent, "SELECT", "benefit_config")) == 1, sent
    # the case goes in once with both steps, and the record is written once
    assert len(touching(sent, "INSERT", "transfer")) == 1, sent
    assert not touching(sent, "UPDATE", "transfer"), sent
    assert len(touching(sent, "INSERT", "transfer_step")) == 1, sent
    assert len(touching(sent, "UPDATE", "insured_person")) == 1, sent
    if sc_engine.dialect.name == "postgresql":  # the case and its two steps: one statement
        assert touching(sent, "INSERT", "transfer") == touching(sent, "INSERT", "transfer_step"), sent
    # the sheet goes into the outbox at commit: one counter statement for its stream, one insert
    assert len(touching(sent, "INSERT", "outbox_stream")) == 1, sent
    assert len(touching(sent, "INSERT", "outbox")) == 1, sent
    async with readonly_sessionmaker(sc_engine)() as session:
        steps = (await session.execute(select(transfer_step.c.state).order_by(transfer_step.c.id))).scalars().all()
        version = (await session.execute(select(transfer.c.version))).scalar_one()
    assert steps == ["received", "sheet-sent"]
    assert version == 2  # as if stored step by step

    # the sheet's case is read with its timeline in one query, locked (on PostgreSQL) until the step commits
    with statements(zj_engine) as sent:
        await deliver(zj_engine, zj, await last_message(sc_engine))
    reads = [s for s in sent if s.upper().startswith("SELECT") and ("FROM transfer" in s or "transfer_step" in s)]
    assert len(reads) == 1, reads
    if zj_engine.dialect.name == "postgresql":
        assert reads[0].endswith("FOR UPDATE OF transfer"), reads
    async with readonly_sessionmaker(zj_engine)() as session:
        steps = (await session.execute(select(transfer_step.c.state).order_by(transfer_step.c.id))).scalars().all()
    assert steps == ["awaiting-answer", "completed"]


async def test_a_step_written_over_another_version_writes_nothing(
    nodes: dict[str, tuple[AsyncEngine, TransferService]],
) -> None:
    """The case and its new steps go in together or not at all: two steps, then one written over the version the
    first replaced, which answers False and leaves the case and its timeline as the first left them."""
    engine, service = nodes[ZJ]
    filing = {"resident_id": RID, "name": "王晓明", "from_province": SC, "reason": Reason.CLAIMANT_RELOCATION}
    filed = await service.file(**filing, new_employer=None, filed_by=RID)
    at = filed.filed_at + timedelta(minutes=5)

    def step(case: Transfer, state: State, note: str) -> Transfer:
        return dataclass_replace(
            case,
            state=state,
            version=case.version + 1,
            timeline=(*case.timeline, Step(at=at, state=state, province=ZJ, note=note)),
        )

    first = step(filed, State.CANCELLED, "withdrawn by the worker")
    async with sessionmaker(engine)() as session, session.begin():
        assert await transfers.replace(session, filed, first)
    stale = step(filed, State.COMPLETED, "over a version already replaced")
    async with sessionmaker(engine)() as session, session.begin():
        assert not await transfers.replace(session, filed, stale)
    async with readonly_sessionmaker(engine)() as session:
        held = await transfers.load(session, filed.id)
    assert held == first
    assert [s.note for s in held.timeline][-1] == "withdrawn by the worker"


@pytest.mark.parametrize("days", [1, 5, 20])
def test_due_dates_are_the_working_day_count_of_their_own_calendar(days: int) -> None:
    plain, festive = WorkCalendar(), WorkCalendar.of(holidays=[date(2026, 10, d) for d in range(1, 9)])
    for hour in range(0, 24 * 40, 7):
        at = datetime(2026, 9, 20, tzinfo=UTC) + timedelta(hours=hour)
        for calendar in (plain, festive, plain):  # answers computed for one calendar are not the other's
            assert TimeLimits(calendar).due(at, days) == calendar.add_workdays(at, days)


async def test_the_benefit_configuration_is_read_once_and_again_after_a_change(
    new_database_url: Callable[[], Awaitable[str]], node_keys: dict[str, NodeKeys]
) -> None:
    """Steps use the process's copy of the configuration; a change through this process applies to the next step,
    one made elsewhere (another replica) once the copy is older than its maximum age."""
    engine = create_engine(await new_database_url())
    await upgrade(engine, "labornet.insurance:migrations")
    async with sessionmaker(engine)() as session, session.begin():
        await ensure_config(session, ZJ)
    now = [0.0]
    copy = ConfigCopy(ZJ, max_age_s=5.0, clock=lambda: now[0])
    service = TransferService(
        province=ZJ,
        sessions=sessionmaker(engine),
        outbox=Outbox(ZJ, "insurance", Signer.from_file(node_keys[ZJ].signing_key, ZJ)),
        calendar=WorkCalendar(),
        members=[SC, ZJ],
        benefit_config=copy,
    )
    records = RecordService(province=ZJ, sessions=sessionmaker(engine), benefit_config=copy)
    filed_at = datetime(2026, 11, 23, 9, tzinfo=UTC)  # a Monday
    service.clock = lambda: filed_at

    async def file(n: int) -> tuple[Transfer, list[str]]:
        resident_id = make_resident_id("330106", date(1990, 5, 17), n)
        with statements(engine) as sent:
            case = await service.file(
                resident_id=resident_id,
                name="李娜",
                from_province=SC,
                reason=Reason.CLAIMANT_RELOCATION,
                new_employer=None,
                filed_by=resident_id,
            )
        return case, touching(sent, "SELECT", "benefit_config")

    try:
        first, reads = await file(1)
        assert (len(reads), first.answer_due) == (1, date(2026, 11, 30))  # 5 working days
        second, reads = await file(2)
        assert (len(reads), second.answer_due) == (0, first.answer_due), "the copy serves the next step"

        current = await records.config()
        await records.set_config(BenefitConfigIn.model_validate(current | {"answer_limit_days": 2}))
        third, reads = await file(3)
        assert (len(reads), third.answer_due) == (1, date(2026, 11, 25)), "a change here applies to the next step"

        async with sessionmaker(engine)() as session, session.begin():  # another replica changes it
            await session.execute(update(benefit_config).values(answer_limit_days=3))
        now[0] += 4.9
        fourth, reads = await file(4)
        assert (len(reads), fourth.answer_due) == (0, date(2026, 11, 25))
        now[0] += 0.2
        fifth, reads = await file(5)
        assert (len(reads), fifth.answer_due) == (1, date(2026, 11, 26)), "and the copy's age is bounded"
    finally:
        await engine.dispose()

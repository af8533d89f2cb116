"""Writes that arrive together commit together (ADR 41), on real SQLite and PostgreSQL: each caller's result means
its item is committed, a bad item fails alone, a failure of the database fails the whole batch and writes nothing,
and a caller that goes away before its item is taken leaves nothing written."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Column, Integer, MetaData, String, Table, event, func, insert, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from labornet.shared.db import sessionmaker
from labornet.shared.groupcommit import GroupCommit
from labornet.shared.testing import platform_engine

state = MetaData()
entry = Table("entry", state, Column("id", String(20), primary_key=True), Column("amount", Integer, nullable=False))


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = await platform_engine(database_url, state)
    yield engine
    await engine.dispose()


class Writes:
    """The use case under test: inserts an entry per item, in the batch's transaction; counts the transactions."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.batches: list[list[str]] = []
        self.gate: asyncio.Event | None = None  # when set, the next batch waits for it inside its transaction
        self.fail_with: Exception | None = None
        self.commits = 0
        event.listen(engine.sync_engine, "commit", self._committed)

    def _committed(self, connection: Any) -> None:
        self.commits += 1

    async def __call__(self, session: AsyncSession, items: Sequence[dict[str, Any]]) -> list[str]:
        self.batches.append([item["id"] for item in items])
        await session.execute(insert(entry), list(items))
        if any(item["amount"] < 0 for item in items):  # a rule of the use case, broken by one item
            raise ValueError("an amount is never negative")
        if self.gate is not None:
            gate, self.gate = self.gate, None
            await gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return [f"written {item['id']}" for item in items]


async def held(engine: AsyncEngine) -> dict[str, int]:
    async with sessionmaker(engine)() as session:
        return {row.id: row.amount for row in await session.execute(select(entry))}


def observed_batches(name: str) -> float:
    return REGISTRY.get_sample_value("labornet_group_commit_batch_size_count", {"use_case": name}) or 0.0


async def test_concurrent_writes_commit_together_and_each_caller_gets_its_own_result(engine: AsyncEngine) -> None:
    writes = Writes(engine)
    group = GroupCommit("test-together", sessionmaker(engine), writes, max_batch=8)
    before = observed_batches("test-together")
    gate = writes.gate = asyncio.Event()
    first = asyncio.create_task(group.submit({"id": "a0", "amount": 0}))
    await asyncio.sleep(0.05)  # the first batch is in its transaction: what arrives now waits and forms the next
    rest = [asyncio.create_task(group.submit({"id": f"b{n}", "amount": n})) for n in range(20)]
    await asyncio.sleep(0.05)
    assert group.waiting == 20
    gate.set()
    results = await asyncio.gather(first, *rest)

    assert results == ["written a0", *(f"written b{n}" for n in range(20))]
    assert writes.batches[0] == ["a0"]  # a lone request is written at once, without waiting for company
    assert [len(batch) for batch in writes.batches[1:]] == [8, 8, 4]  # no batch beyond max_batch, in arrival order
    assert [item for batch in writes.batches for item in batch] == ["a0", *(f"b{n}" for n in range(20))]
    assert writes.commits == 4
    assert await held(engine) == {"a0": 0, **{f"b{n}": n for n in range(20)}}
    assert observed_batches("test-together") - before == 4
    assert group._writer is None  # nothing runs at rest


async def test_an_item_the_database_refuses_fails_alone(engine: AsyncEngine) -> None:
    async with sessionmaker(engine)() as session, session.begin():
        await session.execute(insert(entry), [{"id": "taken", "amount": 1}])
    writes = Writes(engine)
    group = GroupCommit("test-refused", sessionmaker(engine), writes)
    gate = writes.gate = asyncio.Event()
    blocker = asyncio.create_task(group.submit({"id": "first", "amount": 1}))
    await asyncio.sleep(0.05)
    batch = [
        asyncio.create_task(group.submit({"id": item, "amount": 2}))
        for item in ("before", "taken", "after")  # "taken" breaks the primary key
    ]
    await asyncio.sleep(0.05)
    gate.set()
    outcomes = await asyncio.gather(blocker, *batch, return_exceptions=True)

    assert outcomes[0] == "written first"
    assert outcomes[1] == "written before" and outcomes[3] == "written after"
    assert isinstance(outcomes[2], IntegrityError)
    # the batch of three failed, then each was written alone: the two good ones committed, the bad one not
    assert writes.batches[1] == ["before", "taken", "after"]
    assert writes.batches[2:] == [["before"], ["taken"], ["after"]]
    assert await held(engine) == {"taken": 1, "first": 1, "before": 2, "after": 2}


async def test_a_rule_one_item_breaks_fails_that_item_alone(engine: AsyncEngine) -> None:
    writes = Writes(engine)
    group = GroupCommit("test-rule", sessionmaker(engine), writes)
    outcomes = await asyncio.gather(
        *(group.submit({"id": f"r{n}", "amount": -1 if n == 2 else n}) for n in range(4)), return_exceptions=True
    )
    assert outcomes[:2] == ["written r0", "written r1"] and outcomes[3] == "written r3"
    assert isinstance(outcomes[2], ValueError)
    assert writes.batches == [["r0", "r1", "r2", "r3"], ["r0"], ["r1"], ["r2"], ["r3"]]
    assert await held(engine) == {"r0": 0, "r1": 1, "r3": 3}


async def test_a_failure_of_the_database_fails_the_whole_batch_and_writes_nothing(engine: AsyncEngine) -> None:
    writes = Writes(engine)
    group = GroupCommit("test-down", sessionmaker(engine), writes)
    writes.fail_with = OperationalError("INSERT", {}, Exception("the server closed the connection"))
    outcomes = await asyncio.gather(
        *(group.submit({"id": f"e{n}", "amount": n}) for n in range(5)), return_exceptions=True
    )

    assert all(outcome is writes.fail_with for outcome in outcomes)
    assert writes.batches == [[f"e{n}" for n in range(5)]]  # one batch, not tried again item by item
    assert await held(engine) == {}
    assert writes.commits == 0


async def test_a_caller_gone_before_its_item_is_taken_leaves_nothing_written(engine: AsyncEngine) -> None:
    writes = Writes(engine)
    group = GroupCommit("test-gone", sessionmaker(engine), writes)
    gate = writes.gate = asyncio.Event()
    first = asyncio.create_task(group.submit({"id": "first", "amount": 1}))
    await asyncio.sleep(0.05)
    gone = asyncio.create_task(group.submit({"id": "gone", "amount": 2}))
    stays = asyncio.create_task(group.submit({"id": "stays", "amount": 3}))
    await asyncio.sleep(0.05)
    gone.cancel()
    gate.set()
    assert await first == "written first" and await stays == "written stays"
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert writes.batches == [["first"], ["stays"]]
    assert await held(engine) == {"first": 1, "stays": 3}


async def test_a_caller_gone_after_its_item_is_taken_does_not_cut_the_batch_short(engine: AsyncEngine) -> None:
    writes = Writes(engine)
    group = GroupCommit("test-taken", sessionmaker(engine), writes)
    gate = writes.gate = asyncio.Event()
    taken = asyncio.create_task(group.submit({"id": "taken", "amount": 1}))
    await asyncio.sleep(0.05)  # in the batch's transaction, waiting at the gate
    taken.cancel()
    await asyncio.sleep(0.05)
    gate.set()
    await group.drain()
    assert taken.cancelled()
    assert await held(engine) == {"taken": 1}  # all of the batch or nothing: here all of it
    assert writes.commits == 1


async def test_a_write_that_answers_for_too_few_items_fails_its_callers_rather_than_leaving_them_waiting(
    engine: AsyncEngine,
) -> None:
    async def short(session: AsyncSession, items: Sequence[str]) -> list[str]:
        await session.execute(select(func.count()).select_from(entry))
        return list(items[:-1])

    group = GroupCommit("test-short", sessionmaker(engine), short)
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(group.submit(f"i{n}") for n in range(3)), return_exceptions=True), timeout=5
    )
    assert all(
        isinstance(outcome, RuntimeError) and "3 items written, 2 results" in str(outcome) for outcome in outcomes
    )


def test_a_batch_holds_at_least_one_item() -> None:
    with pytest.raises(ValueError, match="at least one"):
        GroupCommit("test-empty", None, None, max_batch=0)  # type: ignore[arg-type]


def test_a_group_outlives_an_event_loop_closed_while_its_writer_ran() -> None:
    """A loop closed with the writer still pending (a test's loop, a process stopping without its lifespan) leaves a
    task that never ran its ``finally``: the next loop's writes start a writer of their own instead of waiting."""

    async def write(session: Any, items: Sequence[str]) -> list[str]:
        await asyncio.sleep(3600 if items == ["stuck"] else 0)
        return list(items)

    class NoSessions:
        """Sessions that need no database: the test is about the writer's task, not the transaction."""

        def __call__(self) -> NoSessions:
            return self

        async def __aenter__(self) -> NoSessions:
            return self

        async def __aexit__(self, *exc: object) -> None:
            return None

        def begin(self) -> NoSessions:
            return self

    group: GroupCommit[str, str] = GroupCommit("test-loops", NoSessions(), write)  # type: ignore[arg-type]
    first = asyncio.new_event_loop()
    stuck = first.create_task(group.submit("stuck"))
    first.run_until_complete(asyncio.sleep(0.05))
    first.close()  # the writer never finished: its task is pending in a closed loop
    assert not stuck.done()
    abandoned = group._writer
    assert abandoned is not None

    second = asyncio.new_event_loop()
    try:
        assert second.run_until_complete(asyncio.wait_for(group.submit("later"), timeout=5)) == "later"
    finally:
        second.close()
    # what the collector would do to the abandoned writer: it ends without touching its closed loop
    abandoned.get_coro().close()  # type: ignore[union-attr]

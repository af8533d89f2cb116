"""The writers of one process queue for SQLite's write lock in the process (SQLiteWriters), on a real SQLite file.

Each test tries one promise: first come first served with nobody parked in SQLite's sleeping busy handler, the turn
given back however a transaction ends, a writer that waits too long refused as busy with nothing written, readers
never waiting behind writers.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, insert, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from labornet.shared.db import (
    SQLiteWriters,
    create_engine,
    outbox,
    platform_metadata,
    readonly_sessionmaker,
    sessionmaker,
    utcnow,
)
from labornet.shared.problems import database_busy
from labornet.shared.testing import eventually

GUARD_S = 30  # turns a hang into a failure; no test depends on how long anything takes


def _row(event_id: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_type": "t",
        "topic": "t",
        "headers": [],
        "payload": b"{}",
        "created_at": utcnow(),
    }


async def _engine(path: Path, **kwargs: Any) -> AsyncEngine:
    engine = create_engine(f"sqlite+aiosqlite:///{path}", **kwargs)
    async with engine.begin() as connection:
        await connection.run_sync(platform_metadata.create_all)
    return engine


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = await _engine(tmp_path / "writers.db")
    try:
        yield engine
    finally:
        await engine.dispose()


def _writers(engine: AsyncEngine) -> SQLiteWriters:
    writers = SQLiteWriters.of(engine)
    assert writers is not None
    return writers


async def _until(condition: Callable[[], bool]) -> None:
    async def check() -> bool:
        return condition()

    await eventually(check, timeout_s=GUARD_S, interval_s=0.005)


async def _stored(engine: AsyncEngine) -> list[str]:
    async with readonly_sessionmaker(engine)() as reader:
        return list((await reader.execute(select(outbox.c.event_id).order_by(outbox.c.id))).scalars())


async def _holding(engine: AsyncEngine, release: asyncio.Event, event_id: str = "first") -> None:
    """A writer that takes the turn, writes, and keeps its transaction open until ``release`` is set."""
    async with sessionmaker(engine)() as session, session.begin():
        await session.execute(insert(outbox), _row(event_id))
        await release.wait()


async def test_the_writers_of_a_process_take_the_lock_in_the_order_they_asked_and_wait_in_the_process(
    engine: AsyncEngine,
) -> None:
    """Eight writers ask while a ninth holds the lock: none of them sends BEGIN IMMEDIATE (which would park it in
    SQLite's busy handler, polled with sleeps) until its turn, and they commit in the order they asked."""
    begins: list[str] = []

    def count_begins(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement == "BEGIN IMMEDIATE":
            begins.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", count_begins)
    writers = _writers(engine)
    release = asyncio.Event()
    first = asyncio.create_task(_holding(engine, release))
    await _until(lambda: len(begins) == 1)

    async def write(n: int) -> None:
        async with sessionmaker(engine)() as session, session.begin():
            await session.execute(insert(outbox), _row(f"w{n}"))
            await asyncio.sleep(0)  # a transaction that awaits between its statements, as the services' do

    waiting = []
    for n in range(8):
        waiting.append(asyncio.create_task(write(n)))
        await _until(lambda n=n: writers.waiting() == n + 1)  # type: ignore[misc]
    assert len(begins) == 1  # the eight wait in the process, not in SQLite
    release.set()
    async with asyncio.timeout(GUARD_S):
        await asyncio.gather(first, *waiting)
    assert await _stored(engine) == ["first", *(f"w{n}" for n in range(8))]
    assert (len(begins), writers.waiting(), writers.taken()) == (9, 0, False)


async def _rolled_back_by_an_error(engine: AsyncEngine) -> None:
    async def failing() -> None:
        async with sessionmaker(engine)() as session, session.begin():
            await session.execute(insert(outbox), _row("error"))
            raise RuntimeError("the handler failed")

    with pytest.raises(RuntimeError):
        await failing()


async def _closed_without_commit(engine: AsyncEngine) -> None:
    session = sessionmaker(engine)()
    await session.execute(insert(outbox), _row("closed"))  # autobegun, never committed
    await session.close()  # the pool rolls back on return


async def _cancelled_mid_transaction(engine: AsyncEngine) -> None:
    release = asyncio.Event()
    holder = asyncio.create_task(_holding(engine, release, "cancelled"))
    await _until(_writers(engine).taken)
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder


async def _invalidated(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(insert(outbox), _row("invalidated"))
        await connection.invalidate()  # the driver's connection closed, its transaction with it


async def _refused_at_begin(engine: AsyncEngine, path: Path) -> None:
    """Another process holds SQLite's lock past the busy timeout: BEGIN IMMEDIATE itself fails."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")
        async with engine.connect() as connection:
            with pytest.raises(OperationalError) as refused:
                await connection.execute(insert(outbox), _row("refused"))
            assert database_busy(refused.value)
            assert not _writers(engine).taken()  # given back at once, the connection still in its user's hands
    finally:
        other.execute("ROLLBACK")
        other.close()


async def _committed_on_a_connection_kept_open(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(insert(outbox), _row("kept-1"))
        await connection.commit()
        assert not _writers(engine).taken()  # given back at the commit, not when the connection is returned
        await connection.execute(insert(outbox), _row("kept-2"))
        await connection.commit()


@pytest.mark.parametrize(
    "ending",
    [
        _rolled_back_by_an_error,
        _closed_without_commit,
        _cancelled_mid_transaction,
        _invalidated,
        _refused_at_begin,
        _committed_on_a_connection_kept_open,
    ],
)
async def test_the_turn_comes_back_however_a_transaction_ends(
    tmp_path: Path, ending: Callable[..., Awaitable[None]]
) -> None:
    path = tmp_path / "writers.db"
    engine = await _engine(path, busy_timeout_s=0.3)
    try:
        async with asyncio.timeout(GUARD_S):
            if ending is _refused_at_begin:
                await ending(engine, path)
            else:
                await ending(engine)
            writers = _writers(engine)
            assert not writers.taken()
            # the next writer proceeds, behind nobody
            async with sessionmaker(engine)() as session, session.begin():
                await session.execute(insert(outbox), _row("next"))
            assert (writers.taken(), writers.waiting()) == (False, 0)
        expected = ["kept-1", "kept-2", "next"] if ending is _committed_on_a_connection_kept_open else ["next"]
        assert await _stored(engine) == expected
    finally:
        await engine.dispose()


async def test_a_writer_that_waits_past_the_busy_timeout_is_refused_as_busy_with_nothing_written(
    tmp_path: Path,
) -> None:
    """The wait in the process counts against the busy timeout as SQLite's own would: the late writer is refused
    with SQLite's "database is locked" (an HTTP request answers 503 and may be sent again), wrote nothing and left
    the queue; sent again once the lock is free it passes."""
    engine = await _engine(tmp_path / "writers.db", busy_timeout_s=0.3)
    writers = _writers(engine)
    refusals: list[None] = []
    writers.on_refused = lambda: refusals.append(None)  # the service counts them in a metric
    release = asyncio.Event()

    async def late() -> None:
        async with sessionmaker(engine)() as session, session.begin():
            await session.execute(insert(outbox), _row("late"))

    try:
        async with asyncio.timeout(GUARD_S):
            holder = asyncio.create_task(_holding(engine, release))
            await _until(writers.taken)
            with pytest.raises(OperationalError) as refused:
                await late()
            assert database_busy(refused.value)
            assert refused.value.orig.sqlite_errorcode == sqlite3.SQLITE_BUSY  # type: ignore[union-attr]
            assert (writers.waiting(), len(refusals)) == (0, 1)
            release.set()
            await holder
            await late()
            assert len(refusals) == 1
        assert await _stored(engine) == ["first", "late"]
    finally:
        await engine.dispose()


async def test_a_nested_writer_of_the_same_task_is_refused_rather_than_waiting_for_ever(tmp_path: Path) -> None:
    """A transaction that opens a second writing transaction on the same database and waits for it can never be
    served (it holds the turn the second waits for): the second is refused after the busy timeout, the first can
    still commit."""
    engine = await _engine(tmp_path / "writers.db", busy_timeout_s=0.3)
    try:
        async with asyncio.timeout(GUARD_S), sessionmaker(engine)() as outer, outer.begin():
            await outer.execute(insert(outbox), _row("outer"))
            with pytest.raises(OperationalError) as refused:
                async with sessionmaker(engine)() as inner, inner.begin():
                    await inner.execute(insert(outbox), _row("inner"))
            assert database_busy(refused.value)
        assert await _stored(engine) == ["outer"]
    finally:
        await engine.dispose()


async def test_readers_never_wait_behind_the_writers(engine: AsyncEngine) -> None:
    """While a writer holds the turn with its insert uncommitted and another waits behind it, a read-only session
    reads the last committed state at once."""
    writers = _writers(engine)
    release = asyncio.Event()
    holder = asyncio.create_task(_holding(engine, release))
    await _until(writers.taken)

    async def queued() -> None:
        async with sessionmaker(engine)() as session, session.begin():
            await session.execute(insert(outbox), _row("queued"))

    behind = asyncio.create_task(queued())
    await _until(lambda: writers.waiting() == 1)
    async with asyncio.timeout(GUARD_S), readonly_sessionmaker(engine)() as reader:
        seen = (await reader.execute(select(func.count()).select_from(outbox))).scalar_one()
        assert (await reader.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
    assert (seen, writers.waiting(), writers.taken()) == (0, 1, True)
    release.set()
    async with asyncio.timeout(GUARD_S):
        await asyncio.gather(holder, behind)
    assert await _stored(engine) == ["first", "queued"]


async def test_a_server_database_has_no_queue_of_its_own() -> None:
    """PostgreSQL queues its writers itself (row locks, no database-wide write lock): nothing is installed."""
    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    try:
        assert SQLiteWriters.of(engine) is None
    finally:
        await engine.dispose()

"""The replica's public reads, straight through the database driver: a vacancy by id and a page of a search.

They are the node's hottest paths (every worker's search, every page of a vacancy), and through a session each paid
for far more than its query: on SQLite a BEGIN, the statement, the fetch and a ROLLBACK each crossed to
aiosqlite's thread and back; on PostgreSQL the isolation level set and reset and the transaction cost round trips
of their own; and SQLAlchemy built, keyed and processed the statement every time: about 2 ms of CPU for a query
that SQLite answers in 20 µs (ADR 23).

Here a statement is compiled once (a search once per shape, see :class:`labornet.jobs.adapters.search.SearchPlan`),
run by the driver, and its rows turned into what a session would give with SQLAlchemy's own result processors for
the column types, so that callers get the same values either way:

* **SQLite**: a search runs in a thread of its own (``READ_THREADS``), each with its own connection to the
  database file, ``query_only``, the file memory-mapped; a search is one hop to that thread and back, and whatever
  happens to the request the connection stays with its thread. Under WAL a reader never blocks a writer nor
  waits for one. A vacancy by id, one lookup of the primary key (about 20 µs), is read on the event loop's own
  thread through a connection of its own that never waits (``busy_timeout`` 0): the hop to a thread and back cost
  several times the lookup (futures, a condition, two wake-ups). Should the file be locked (a writer in exclusive
  locking mode, a WAL being recovered), that read waits in a reader thread instead, never on the loop.
* **PostgreSQL**: a few connections (``READ_CONNECTIONS``) taken from the engine's pool once and held; a read uses
  one of them alone. Reads that come while every one is busy wait their turn first come, first served, and are
  **gathered** meanwhile (:class:`_Gathering`): the reads by id waiting are answered together by one statement
  (``id = ANY(…)``, up to ``GATHER_MAX`` ids), and the same search asked again while it waits is answered by that
  one search. Each read waiting has arrived before its statement starts, so what it answers is at least as new as
  what it would have answered alone; a statement once started never takes a read that arrives after. Under load
  this spares the database server most of its work (32 clients asking the same search: 2.2 times the searches
  answered) and the process a round trip a read; when a connection is free the read runs alone at once.
  A connection that fails, or whose read is cancelled midway (it may be inside a query or a transaction), is
  closed and never used again; one the driver knows closed, or as old as the pool renews its own
  (``POOL_RECYCLE_S``), is replaced before use; a read that failed because its connection was gone is tried once
  more on a new one. They are closed with the engine.

A read of one statement sees one committed state (SQLite runs a statement in a read transaction of its own,
PostgreSQL on a snapshot of its own), so a vacancy changed while it is read comes back whole, at one version. A
search that needs more than one statement (a page without rows and its count, a walk past the cap) runs them in
one read transaction (SQLite's, or REPEATABLE READ on PostgreSQL).

A read for the API (:meth:`VacancyReads.one_shown`, :meth:`VacancyReads.search_shown`) writes each vacancy as the
API shows it straight from the driver's row (:class:`_Shown`): the same values as :func:`shown` of the stored row.

Anything else (an in-memory SQLite database, another driver) reads through sessions, as before.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import sqlite3
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from datetime import date, datetime
from typing import Any, Protocol

import orjson
from prometheus_client import Gauge, Histogram
from sqlalchemy import JSON, Column, Date, DateTime, any_, bindparam, event, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from labornet.jobs.adapters.search import (
    RESULT_COLUMNS,
    SEARCH_SETTINGS,
    TOTAL_CAP,
    SearchPage,
    SearchParams,
    SearchPlan,
    Statement,
    search_vacancies,
)
from labornet.jobs.adapters.tables import vacancy
from labornet.shared.db import POOL_RECYCLE_S
from labornet.shared.envelope import format_stored_time, json_fields

READ_THREADS = 2  # SQLite: two reads at once, one per core (the driver lets go of the GIL while SQLite works)
READ_CONNECTIONS = 2  # PostgreSQL: connections held out of the engine's pool for these reads
GATHER_MAX = 256  # PostgreSQL: reads by id answered by one statement at most
# SQLite: the database file is read through a memory map of up to this size (shared with the OS's page cache)
# instead of copying every page into each connection's cache of 2 MB: a search that looks up a few hundred matches
# takes half the time once the replica is larger than that cache (10,000 vacancies are 12 MB)
READ_MMAP_BYTES = 256 * 1024 * 1024


READS_WAITING = Gauge(
    "labornet_jobs_replica_reads_waiting",
    "Public reads of the replica (a vacancy, a search) waiting for one of the connections held for them (PostgreSQL)",
)
READS_PER_STATEMENT = Histogram(
    "labornet_jobs_replica_reads_per_statement",
    "Public reads of the replica answered by one statement: 1 for a read run alone, more for reads gathered while "
    "they waited for a connection (PostgreSQL)",
    ["kind"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
_LIVE: weakref.WeakSet[_PostgresReads] = weakref.WeakSet()  # what the gauge adds up at each scrape
READS_WAITING.set_function(lambda: sum(reads.waiting_reads() for reads in list(_LIVE)))


class VacancyReads(Protocol):
    async def one(self, vacancy_id: str) -> dict[str, Any] | None:
        """The vacancy's row (every column but the search tokens), as a session would give it; None if unknown."""

    async def one_shown(self, vacancy_id: str, fields: Sequence[str]) -> dict[str, Any] | None:
        """:meth:`one` as the public API shows a vacancy (:func:`shown`); None if unknown."""

    async def search(self, params: SearchParams, total_cap: int = TOTAL_CAP) -> SearchPage:
        """What :func:`labornet.jobs.adapters.search.search_vacancies` answers, read through the driver."""

    async def search_shown(self, params: SearchParams, fields: Sequence[str], total_cap: int = TOTAL_CAP) -> SearchPage:
        """:meth:`search` with every item as the public API shows a vacancy (:func:`shown`)."""


def vacancy_reads(engine: AsyncEngine, read_sessions: async_sessionmaker[AsyncSession]) -> VacancyReads:
    """The fastest reads this engine allows; they give their connections back when the engine is disposed."""
    reads: _DriverReads
    if engine.dialect.name == "sqlite" and engine.dialect.driver == "aiosqlite":
        database = engine.url.database
        if not database or database == ":memory:" or engine.url.query.get("uri"):
            return SessionReads(read_sessions)
        reads = _SqliteReads(engine.dialect, database)
    elif engine.dialect.name == "postgresql" and engine.dialect.driver == "asyncpg":
        reads = _PostgresReads(engine)
    else:
        return SessionReads(read_sessions)
    event.listen(engine.sync_engine, "engine_disposed", lambda _engine: reads.close())
    return reads


class SessionReads:
    """Reads through a read-only session: the reference the driver reads answer like."""

    def __init__(self, read_sessions: async_sessionmaker[AsyncSession]) -> None:
        self.read_sessions = read_sessions

    async def one(self, vacancy_id: str) -> dict[str, Any] | None:
        async with self.read_sessions() as session:
            found = await session.execute(select(*RESULT_COLUMNS).where(vacancy.c.id == vacancy_id))
            row = found.mappings().one_or_none()
        return None if row is None else dict(row)

    async def one_shown(self, vacancy_id: str, fields: Sequence[str]) -> dict[str, Any] | None:
        row = await self.one(vacancy_id)
        return None if row is None else shown(row, fields)

    async def search(self, params: SearchParams, total_cap: int = TOTAL_CAP) -> SearchPage:
        async with self.read_sessions() as session:
            return await search_vacancies(session, params, total_cap)

    async def search_shown(self, params: SearchParams, fields: Sequence[str], total_cap: int = TOTAL_CAP) -> SearchPage:
        page = await self.search(params, total_cap)
        return dataclasses.replace(page, items=[shown(row, fields) for row in page.items])


def shown(row: Mapping[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """A stored vacancy as the public API shows it: ``fields`` in their order, times and dates as its events write
    them (:func:`~labornet.shared.envelope.json_fields`, as ``to_event``), then the open headcount."""
    return {**json_fields(row, fields), "open_headcount": row["headcount"] - row["hired"]}


Processor = Callable[[Any], Any] | None


class _Rows:
    """Turns a driver's rows of ``columns`` into the dicts a session gives (SQLAlchemy's result processors)."""

    def __init__(self, dialect: Dialect, columns: Sequence[Column[Any]]) -> None:
        self.names = [column.name for column in columns]
        self.processors: list[tuple[int, Callable[[Any], Any]]] = []
        for index, column in enumerate(columns):
            processor = column.type.dialect_impl(dialect).result_processor(dialect, None)
            if processor is not None:
                self.processors.append((index, processor))

    def __call__(self, row: Sequence[Any], offset: int = 0) -> dict[str, Any]:
        values = list(row[offset:]) if offset else list(row)
        for index, processor in self.processors:
            if values[index] is not None:
                values[index] = processor(values[index])
        return dict(zip(self.names, values, strict=True))


class _Shown:
    """:func:`shown` of a driver's row of ``columns``, without making the stored row first.

    On SQLite a time is text as SQLAlchemy writes it (``2026-11-27 08:30:00.000000``, UTC) and is rewritten as text
    (``2026-11-27T08:30:00.000000Z``) instead of parsed into a time, made aware and written again; a date is its
    ISO text already; JSON is parsed with orjson. Other columns with a result processor go through it, as in a
    session. The choice is made once per dialect and field list: from the driver's rows to the response's bytes, a
    page of twenty vacancies took 0.28 ms of CPU through the stored rows and ``to_event``, 0.06 ms this way (with
    orjson writing the response)."""

    def __init__(self, dialect: Dialect, columns: Sequence[Column[Any]], fields: Sequence[str]) -> None:
        index = {column.name: n for n, column in enumerate(columns)}
        self.picks = [(name, index[name]) for name in fields]
        self.conversions: list[tuple[str, int, Callable[[Any], Any]]] = []
        for column in columns:
            if column.name in fields and (convert := _conversion(dialect, column)) is not None:
                self.conversions.append((column.name, index[column.name], convert))
        self.headcount, self.hired = index["headcount"], index["hired"]

    def __call__(self, row: Sequence[Any], offset: int = 0) -> dict[str, Any]:
        data = {name: row[at + offset] for name, at in self.picks}
        for name, at, convert in self.conversions:
            value = row[at + offset]
            if value is not None:
                data[name] = convert(value)
        data["open_headcount"] = row[self.headcount + offset] - row[self.hired + offset]
        return data


def _conversion(dialect: Dialect, column: Column[Any]) -> Callable[[Any], Any] | None:
    """How a driver's value of ``column`` becomes what :func:`shown` writes of it (None: as it is)."""
    sqlite = dialect.name == "sqlite"
    if isinstance(column.type, DateTime):
        return _sqlite_time if sqlite else format_stored_time
    if isinstance(column.type, Date):
        return None if sqlite else date.isoformat
    if isinstance(column.type, JSON) and sqlite:
        return orjson.loads
    return column.type.dialect_impl(dialect).result_processor(dialect, None)


def _sqlite_time(text: str) -> str:
    """A time SQLite holds (naive, UTC) as :func:`format_stored_time` writes it."""
    if len(text) == 26 and text[10] == " " and text[19] == ".":  # SQLAlchemy's own form, microseconds included
        return f"{text[:10]}T{text[11:]}Z"
    return format_stored_time(datetime.fromisoformat(text))


class _Compiled:
    """A statement's SQL in the driver's parameter style, and how to turn named values into its parameters: in
    order, through the bind processors of their types (a time becomes SQLite's text, a list PostgreSQL's JSON);
    values the statement holds itself (SQLite's ``OFFSET 0``) are taken from it."""

    def __init__(self, statement: Any, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.parameters: list[tuple[str, Any, Processor]] = []
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            self.parameters.append((name, None if bind.required else bind.value, processor))

    def values(self, given: dict[str, Any]) -> list[Any]:
        values = []
        for name, held, processor in self.parameters:
            value = given[name] if held is None else held
            values.append(processor(value) if processor is not None and value is not None else value)
        return values


_BY_ID = select(*RESULT_COLUMNS).where(vacancy.c.id == bindparam("id"))
_BY_IDS = select(*RESULT_COLUMNS).where(vacancy.c.id == any_(bindparam("ids", type_=ARRAY(vacancy.c.id.type))))
_ID_AT = [column.name for column in RESULT_COLUMNS].index("id")


class _DriverReads:
    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.rows = _Rows(dialect, RESULT_COLUMNS)
        self.by_id = _Compiled(_BY_ID, dialect).sql
        self.plans: dict[Any, _Compiled] = {}  # a search's statements by shape, compiled once
        self.shown: dict[tuple[str, ...], _Shown] = {}  # by field list

    def sql(self, plan: SearchPlan, name: Statement) -> tuple[str, list[Any]]:
        """One statement of a search plan (``page``, ``count`` or ``walk``) and its parameters in order."""
        key = (plan.shape, name)
        found = self.plans.get(key)
        if found is None:
            found = self.plans[key] = _Compiled(plan.statement(name), self.dialect)
        return found.sql, found.values(plan.values)

    async def one(self, vacancy_id: str) -> dict[str, Any] | None:
        row = await self._row(vacancy_id)
        return None if row is None else self.rows(row)

    async def one_shown(self, vacancy_id: str, fields: Sequence[str]) -> dict[str, Any] | None:
        row = await self._row(vacancy_id)
        return None if row is None else self._writer(fields)(row)

    async def search(self, params: SearchParams, total_cap: int = TOTAL_CAP) -> SearchPage:
        plan, total, rows, walked = await self._found(params, total_cap)
        items = [self.rows(row) for row in walked] if walked is not None else [self.rows(row, 1) for row in rows]
        return plan.page(items, total)

    async def search_shown(self, params: SearchParams, fields: Sequence[str], total_cap: int = TOTAL_CAP) -> SearchPage:
        writer = self._writer(fields)
        plan, total, rows, walked = await self._found(params, total_cap)
        # the statements read one row more than the page, which says whether there are more
        chosen, offset = (walked, 0) if walked is not None else (rows, 1)
        items = [writer(row, offset) for row in chosen[: params.limit]]
        return plan.shown_page(items, len(chosen) > params.limit, total)

    def _writer(self, fields: Sequence[str]) -> _Shown:
        key = tuple(fields)
        return self.shown.get(key) or self.shown.setdefault(key, _Shown(self.dialect, RESULT_COLUMNS, key))

    async def _row(self, vacancy_id: str) -> Any:
        """The driver's row of the vacancy, None if unknown."""
        raise NotImplementedError

    async def _found(self, params: SearchParams, total_cap: int) -> tuple[SearchPlan, int, list[Any], list[Any] | None]:
        """The search's plan, its count, the page statement's rows (the count first) and the walk's, if it walked."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _SqliteReads(_DriverReads):
    def __init__(self, dialect: Dialect, database: str) -> None:
        super().__init__(dialect)
        self.database = database
        self.local = threading.local()
        self.lock = threading.Lock()
        self.connections: list[sqlite3.Connection] = []
        self.threads = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="vacancy-reads")

    def _connection(self, busy_timeout_ms: int = 10_000) -> sqlite3.Connection:
        """This thread's connection (the event loop's own included), made on first use."""
        connection: sqlite3.Connection | None = getattr(self.local, "connection", None)
        if connection is None:
            # autocommit (a statement is its own read transaction); BEGIN where a read needs more than one
            connection = sqlite3.connect(self.database, isolation_level=None, check_same_thread=False)
            try:
                connection.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
                connection.execute("PRAGMA query_only=ON")
                connection.execute(f"PRAGMA mmap_size={READ_MMAP_BYTES}")
                connection.execute("PRAGMA temp_store=MEMORY")  # a search sorts its matches in memory, not a file
            except BaseException:
                connection.close()
                raise
            with self.lock:
                self.connections.append(connection)
            self.local.connection = connection
        return connection

    async def _run(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.threads, lambda: work(self._connection()))

    async def _row(self, vacancy_id: str) -> Any:
        try:  # on the loop's thread, never waiting for a lock
            return self._connection(busy_timeout_ms=0).execute(self.by_id, (vacancy_id,)).fetchone()
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
            return await self._run(lambda connection: connection.execute(self.by_id, (vacancy_id,)).fetchone())

    async def _found(self, params: SearchParams, total_cap: int) -> tuple[SearchPlan, int, list[Any], list[Any] | None]:
        plan = SearchPlan.of(params, "sqlite", total_cap)
        page_sql, page_values = self.sql(plan, "page")

        def read(connection: sqlite3.Connection) -> tuple[int, list[Any], list[Any] | None]:
            connection.execute("BEGIN")
            try:
                rows = connection.execute(page_sql, page_values).fetchall()
                total = rows[0][0] if rows else connection.execute(*self.sql(plan, "count")).fetchone()[0]
                walked = connection.execute(*self.sql(plan, "walk")).fetchall() if total > plan.total_cap else None
                return total, rows, walked
            finally:
                connection.execute("ROLLBACK")

        return (plan, *await self._run(read))

    def close(self) -> None:
        self.threads.shutdown(wait=True)
        with self.lock:
            for connection in self.connections:
                connection.close()
            self.connections.clear()
        self.local = threading.local()
        self.threads = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="vacancy-reads")


class _Held:
    """A connection of the engine's pool held for these reads, and its driver connection."""

    def __init__(self, connection: AsyncConnection, driver: Any) -> None:
        self.connection = connection
        self.driver = driver
        self.since = time.monotonic()

    def discard(self) -> None:
        """Close it for good (synchronously: this runs while a read is being cancelled)."""
        _invalidate(self.connection)


def _invalidate(connection: AsyncConnection) -> None:
    """Close a connection of the pool for good: the pool forgets it and the driver connection is terminated."""
    with suppress(Exception):
        if connection.sync_connection is not None:
            connection.sync_connection.invalidate()


class _Gathering:
    """Reads that came while every held connection was busy, to be answered together by one statement once a
    connection is free: what each wants (a vacancy id, a search) and the futures of the reads that want it."""

    def __init__(self) -> None:
        self.readers: dict[Hashable, list[asyncio.Future[Any]]] = {}

    def join(self, wanted: Hashable) -> asyncio.Future[Any]:
        reader: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.readers.setdefault(wanted, []).append(reader)
        return reader

    def waiting(self) -> int:
        """How many of its reads still wait."""
        return sum(not reader.done() for readers in self.readers.values() for reader in readers)

    def wanted(self) -> list[Hashable]:
        """What the reads still waiting want (a read cancelled meanwhile wants nothing)."""
        return [wanted for wanted, readers in self.readers.items() if not all(r.done() for r in readers)]

    def answer(self, answers: Mapping[Hashable, Any]) -> None:
        for wanted, readers in self.readers.items():
            for reader in readers:
                if not reader.done():
                    reader.set_result(answers.get(wanted))

    def fail(self, exc: BaseException) -> None:
        for readers in self.readers.values():
            for reader in readers:
                if reader.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    reader.cancel()
                else:
                    reader.set_exception(exc)


Gathered = Callable[[Any, list[Hashable]], Awaitable[Mapping[Hashable, Any]]]


class _PostgresReads(_DriverReads):
    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine.dialect)
        self.engine = engine
        self.idle: collections.deque[_Held] = collections.deque()
        # reads waiting for a connection, first come first served: a connection given back goes to the first of
        # them directly, so a read arriving meanwhile cannot take it first (an asyncio.Queue lets it, and a waiter
        # passed over that way waits again at the back: some reads waited half a second while most took a
        # millisecond)
        self.waiting: collections.deque[asyncio.Future[_Held | None]] = collections.deque()
        self.opened = 0
        self.held: set[_Held] = set()
        self.by_ids = _Compiled(_BY_IDS, self.dialect).sql
        # reads gathered while they wait, by kind ("id", or the search asked), those whose statement has not
        # started (full ones included), and the tasks that answer them
        self.gathering: dict[Hashable, _Gathering] = {}
        self.unstarted: set[_Gathering] = set()
        self.answering: set[asyncio.Task[None]] = set()
        _LIVE.add(self)

    def waiting_reads(self) -> int:
        """Reads waiting for a connection (every read waits in a gathering)."""
        return sum(gathering.waiting() for gathering in self.unstarted)

    async def _take(self) -> _Held:
        while True:
            if self.idle:
                held = self.idle.popleft()
            elif self.opened < READ_CONNECTIONS:
                self.opened += 1
                return await self._open_in_place()
            else:
                given = await self._wait()
                if given is None:  # a place freed by a connection closed for good: open one in it
                    return await self._open_in_place()
                held = given
            if not held.driver.is_closed() and time.monotonic() - held.since < POOL_RECYCLE_S:
                return held
            # the server closed it, or it is as old as the pool lets its own connections get: another in its place
            self.held.discard(held)
            held.discard()
            return await self._open_in_place()

    async def _open_in_place(self) -> _Held:
        """Open a connection in a place already counted in ``opened``."""
        try:
            held = await self._open()
        except BaseException:
            self._free_place()
            raise
        self.held.add(held)
        return held

    async def _wait(self) -> _Held | None:
        """Wait for a connection given back (or None: a place to open one in)."""
        turn: asyncio.Future[_Held | None] = asyncio.get_running_loop().create_future()
        self.waiting.append(turn)
        try:
            return await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # given its turn just as it was cancelled: pass it on
                given = turn.result()
                if given is None:
                    self._free_place()
                else:
                    self._give(given)
            else:
                with suppress(ValueError):
                    self.waiting.remove(turn)
            raise

    def _first_waiting(self) -> asyncio.Future[_Held | None] | None:
        while self.waiting:
            turn = self.waiting.popleft()
            if not turn.done():
                return turn
        return None

    def _give(self, held: _Held) -> None:
        """A connection back from a read: to the first waiting read, else kept for the next."""
        turn = self._first_waiting()
        if turn is None:
            self.idle.append(held)
        else:
            turn.set_result(held)

    def _free_place(self) -> None:
        """A connection closed for good (or never opened): the first waiting read opens one in its place."""
        turn = self._first_waiting()
        if turn is None:
            self.opened -= 1
        else:
            turn.set_result(None)

    async def _open(self) -> _Held:
        connection = await self.engine.connect()
        try:
            driver = (await connection.get_raw_connection()).driver_connection
            assert driver is not None
            # every statement planned with its own values (see search_vacancies): these connections are never
            # given back to the pool, so the settings stay with them
            await driver.execute("; ".join(f"SET {name} = '{value}'" for name, value in SEARCH_SETTINGS.items()))
        except BaseException:
            _invalidate(connection)
            raise
        return _Held(connection, driver)

    def _drop(self, held: _Held) -> None:
        if held in self.held:
            self.held.discard(held)
            held.discard()
            self._free_place()

    async def _run(self, work: Callable[[Any], Awaitable[Any]]) -> Any:
        for attempt in (1, 2):
            held = await self._take()
            try:
                result = await work(held.driver)
            except BaseException as exc:
                self._drop(held)
                if attempt == 1 and _connection_lost(exc):
                    continue
                raise
            self._give(held)
            return result
        raise AssertionError("unreachable")

    async def _gathered(self, kind: Hashable, wanted: Hashable, read: Gathered) -> Any:
        """What ``read(driver, [wanted])[wanted]`` answers: at once if a connection is free, else gathered with the
        reads of the same kind that wait (``GATHER_MAX`` things wanted at most), all answered by one ``read`` when
        a connection is."""
        gathering = self.gathering.get(kind)
        if gathering is not None and wanted not in gathering.readers and len(gathering.readers) >= GATHER_MAX:
            self._stop_gathering(kind, gathering)  # full: the reads that come now gather anew
            gathering = None
        if gathering is None:
            if self.idle or self.opened < READ_CONNECTIONS:  # a connection is free: nothing to wait for
                _per_statement(kind).observe(1)
                return (await self._run(lambda driver: read(driver, [wanted]))).get(wanted)
            gathering = self.gathering[kind] = _Gathering()
            self.unstarted.add(gathering)
            started_by = asyncio.current_task()
            name = f"reads gathered by {started_by.get_name() if started_by else 'a callback'}"
            task = asyncio.create_task(self._answer(kind, gathering, read), name=name)
            self.answering.add(task)
            task.add_done_callback(self.answering.discard)
        return await gathering.join(wanted)

    def _stop_gathering(self, kind: Hashable, gathering: _Gathering) -> None:
        if self.gathering.get(kind) is gathering:
            del self.gathering[kind]

    async def _answer(self, kind: Hashable, gathering: _Gathering, read: Gathered) -> None:
        async def answers(driver: Any) -> Mapping[Hashable, Any]:
            # from here on the reads that come are answered by a statement of their own, which starts after them
            self._stop_gathering(kind, gathering)
            waiting = gathering.waiting()
            if gathering in self.unstarted:
                self.unstarted.discard(gathering)
                if waiting:
                    _per_statement(kind).observe(waiting)
            wanted = gathering.wanted()
            return await read(driver, wanted) if wanted else {}

        try:
            gathering.answer(await self._run(answers))
        except BaseException as exc:
            self._stop_gathering(kind, gathering)
            self.unstarted.discard(gathering)
            gathering.fail(exc)
            if not isinstance(exc, Exception):
                raise

    async def _row(self, vacancy_id: str) -> Any:
        if "\x00" in vacancy_id:  # PostgreSQL's text cannot hold it: no vacancy has it (and it fails a statement)
            return None
        return await self._gathered("id", vacancy_id, self._rows_by_id)

    async def _rows_by_id(self, driver: Any, ids: list[Hashable]) -> Mapping[Hashable, Any]:
        if len(ids) == 1:
            return {ids[0]: await driver.fetchrow(self.by_id, ids[0])}
        return {row[_ID_AT]: row for row in await driver.fetch(self.by_ids, ids)}

    async def _found(self, params: SearchParams, total_cap: int) -> tuple[SearchPlan, int, list[Any], list[Any] | None]:
        plan = SearchPlan.of(params, "postgresql", total_cap)

        async def searched(driver: Any, wanted: list[Hashable]) -> Mapping[Hashable, Any]:
            return {search: await read(driver) for search in wanted}

        async def read(driver: Any) -> tuple[int, list[Any], list[Any] | None]:
            # most searches are answered by their first statement alone, on a snapshot of its own: one round trip
            rows = await driver.fetch(*self._args(plan, "page"))
            if rows and rows[0][0] <= plan.total_cap:
                return rows[0][0], rows, None
            # a page without rows needs the count, more matches than the cap a walk: all on one snapshot
            await driver.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            rows = await driver.fetch(*self._args(plan, "page"))
            total = rows[0][0] if rows else await driver.fetchval(*self._args(plan, "count"))
            walked = None
            if total > plan.total_cap:
                # the planner would collect every match and sort them: read the sort-order index instead
                await driver.execute("SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off")
                walked = await driver.fetch(*self._args(plan, "walk"))
            await driver.execute("ROLLBACK")
            return total, rows, walked

        # the same search waiting twice is asked once (the plan's values but "now" are the search's own)
        return (plan, *await self._gathered(("search", params, total_cap), params, searched))

    def _args(self, plan: SearchPlan, name: Statement) -> tuple[Any, ...]:
        text, values = self.sql(plan, name)
        return (text, *values)

    def close(self) -> None:
        for task in list(self.answering):
            task.cancel()
        self.gathering.clear()
        self.unstarted.clear()
        waiting, self.waiting = self.waiting, collections.deque()
        for turn in waiting:
            if not turn.done():
                turn.set_exception(RuntimeError("the replica's reads are closed"))
        for held in list(self.held):
            self._drop(held)
        self.idle.clear()


_PER_STATEMENT = {kind: READS_PER_STATEMENT.labels(kind) for kind in ("vacancy", "search")}


def _per_statement(kind: Hashable) -> Any:
    """The histogram's series for a kind of gathering: reads by id, or a search."""
    return _PER_STATEMENT["vacancy" if kind == "id" else "search"]


def _connection_lost(exc: BaseException) -> bool:
    """The read failed because its connection was gone, not because of what it asked."""
    import asyncpg

    return isinstance(exc, (OSError, asyncpg.exceptions.ConnectionDoesNotExistError, asyncpg.InterfaceError)) or (
        isinstance(exc, asyncpg.PostgresError) and getattr(exc, "sqlstate", "").startswith(("08", "57P"))
    )

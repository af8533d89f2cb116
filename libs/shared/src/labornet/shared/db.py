"""Database plumbing shared by every service: engines, sessions and the platform tables.

Each service owns one database. Besides its own tables it holds the platform tables defined here:

* ``outbox`` — events written in the same transaction as the state change, published by the relay;
* ``outbox_stream`` — the last sequence number given out per origin stream (gap-free, commit-ordered);
* ``inbox`` — one row per applied event and consumer, written in the same transaction as the effect;
* ``quarantine`` — records that were rejected or kept failing, for an operator to inspect and replay;
* ``bus_state`` — what the service remembers of the broker between runs (the cluster it last published to).
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    event,
    insert,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection, PoolResetState
from sqlalchemy.sql.dml import Insert, Update
from sqlalchemy.util import await_only

from labornet.shared.clock import utcnow as utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

platform_metadata = MetaData(naming_convention=NAMING_CONVENTION)

# SQLite only autoincrements INTEGER PRIMARY KEY columns.
Id = BigInteger().with_variant(Integer(), "sqlite")


def as_utc(value: datetime) -> datetime:
    """Aware UTC. Every stored time is UTC, but SQLite hands it back naive; an aware time is converted."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def as_utc_or_none(value: datetime | None) -> datetime | None:
    """:func:`as_utc` of an optional time."""
    return as_utc(value) if value is not None else None


def utc_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` for an insert or update with every aware time in UTC: SQLite keeps a time's wall clock and drops
    its offset, so a time given as 14:30+08:00 would read back as 14:30 UTC."""
    return {name: as_utc(v) if isinstance(v, datetime) and v.tzinfo is not None else v for name, v in values.items()}


# A stored time as an answer gives it: aware UTC whatever the database handed back (an RFC 3339 date-time)
StoredTime = Annotated[datetime, AfterValidator(as_utc)]


outbox = Table(
    "outbox",
    platform_metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("event_type", String(200), nullable=False),
    Column("topic", String(249), nullable=False),
    Column("message_key", LargeBinary, nullable=True),
    Column("headers", JSON, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("stream", String(300), nullable=True),
    Column("seq", BigInteger, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    # directed messages: the province addressed, and the receipt it owes (see labornet.shared.receipts)
    Column("destination", String(6), nullable=True),
    Column("expects_receipt", Boolean, nullable=False, default=False),
    Column("acked_at", DateTime(timezone=True), nullable=True),
    Column("receipt_outcome", String(20), nullable=True),
    Column("resends", Integer, nullable=False, default=0),
    Column("resend_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("stream", "seq", name="uq_outbox_stream_seq"),
)
Index(
    "ix_outbox_pending",
    outbox.c.id,
    postgresql_where=outbox.c.sent_at.is_(None),
    sqlite_where=outbox.c.sent_at.is_(None),
)

Index(
    "ix_outbox_awaiting_receipt",
    outbox.c.resend_at,
    postgresql_where=outbox.c.expects_receipt.is_(True) & outbox.c.acked_at.is_(None),
    sqlite_where=outbox.c.expects_receipt.is_(True) & outbox.c.acked_at.is_(None),
)

outbox_stream = Table(
    "outbox_stream",
    platform_metadata,
    Column("stream", String(300), primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
)

inbox = Table(
    "inbox",
    platform_metadata,
    Column("consumer", String(100), primary_key=True),
    Column("event_id", String(64), primary_key=True),
    Column("event_type", String(200), nullable=False),
    Column("origin_province", String(6), nullable=False),
    Column("stream", String(300), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("topic", String(249), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False, default=utcnow),
)
Index("ix_inbox_stream_seq", inbox.c.consumer, inbox.c.stream, inbox.c.seq)

quarantine = Table(
    "quarantine",
    platform_metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("consumer", String(100), nullable=False),
    Column("topic", String(249), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("event_id", String(64), nullable=True),
    Column("event_type", String(200), nullable=True),
    Column("origin_province", String(6), nullable=True),
    Column("fingerprint", String(64), nullable=False),
    Column("message_key", LargeBinary, nullable=True),
    Column("headers", JSON, nullable=False),
    Column("payload", LargeBinary, nullable=True),
    Column("reason", String(40), nullable=False),
    Column("error", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("status", String(20), nullable=False, default="quarantined"),
    Column("quarantined_at", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("resolved_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("consumer", "fingerprint", name="uq_quarantine_record"),
)
Index("ix_quarantine_status", quarantine.c.status, quarantine.c.id)


# What a service remembers of the bus between runs (e.g. the cluster id it last published to).
bus_state = Table(
    "bus_state",
    platform_metadata,
    Column("name", String(100), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, default=utcnow),
)


# SQLSTATEs of a transaction the server ended because of another one (serialization failure, deadlock detected): the
# same work succeeds when tried again (the inbox applies it again; an HTTP request is told to send it again)
CONFLICT_SQLSTATES = frozenset({"40001", "40P01"})

READONLY_OPTION = "labornet_readonly"


# How long a SQLite writer waits for the write lock: behind the other writers of its process (SQLiteWriters), then
# in SQLite's own busy handler behind other processes'
SQLITE_BUSY_TIMEOUT_S = 10.0


def _sqlite_pragmas(busy_timeout_s: float, dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (see SQLiteWriters.begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _info_of(connection: Any) -> dict[Any, Any] | None:
    """The ``info`` of a pool's connection or record; None for a connection the pool does not manage (the dialect's
    first connection, whose proxy has no ``info``), which never holds a writer's turn."""
    try:
        return getattr(connection, "info", None)
    except NotImplementedError:
        return None


_WRITERS: weakref.WeakKeyDictionary[Engine, SQLiteWriters] = weakref.WeakKeyDictionary()


class SQLiteWriters:
    """The writers of one process queue for a SQLite database's write lock in the process, first come first served.

    Writers take SQLite's write lock up front (``BEGIN IMMEDIATE``): a deferred transaction that reads and then
    writes fails with SQLITE_BUSY when another writer committed in between, whatever the busy timeout. But a
    ``BEGIN IMMEDIATE`` that finds the lock taken waits in SQLite's busy handler, which sleeps and tries again
    (1, 2, 5, 10 … 100 ms) and is never woken when the lock frees: under load a writer that loses a few times waits
    hundreds of milliseconds while the lock stands free. So a writer of this process first waits its turn here, on
    an asyncio lock handed from one writer to the next as each transaction ends, and only then sends
    ``BEGIN IMMEDIATE`` (which waits in SQLite's handler only for another process).

    The turn is taken in SQLAlchemy's ``begin`` event and given back as soon as the transaction ends: after the
    driver's commit or rollback, and in every way a connection can leave its user (returned to the pool, reset,
    invalidated, closed), so no path keeps it. A writer that waits longer than the busy timeout fails as SQLite's
    "database is locked" would (an HTTP request is answered 503, an inbox transaction is tried again). Read-only
    sessions (see :func:`readonly_sessionmaker`) use a plain ``BEGIN``, never wait here, and under WAL never block
    writers.
    """

    _HOLDS = "labornet.sqlite_writer_turn"

    def __init__(self, timeout_s: float = SQLITE_BUSY_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        # one lock per event loop: an asyncio lock belongs to the loop it first waited in
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()
        self._waiting = 0
        self.on_refused: Callable[[], None] | None = None  # called for each writer refused after the timeout

    @staticmethod
    def of(engine: AsyncEngine | Engine) -> SQLiteWriters | None:
        """The queue of ``engine``'s writers (None for a server database)."""
        return _WRITERS.get(engine.sync_engine if isinstance(engine, AsyncEngine) else engine)

    def install(self, engine: AsyncEngine) -> None:
        sync_engine = engine.sync_engine
        _WRITERS[sync_engine] = self
        event.listen(sync_engine, "begin", self.begin)
        # the driver's commit and rollback (the pool's rollback on return included) give the turn back once done;
        # the pool's events catch a connection that leaves its user without either
        for name in ("checkin", "invalidate", "close", "detach"):
            event.listen(sync_engine.pool, name, self._give_back_any)
        event.listen(sync_engine.pool, "reset", self._give_back_unless_rolled_back)
        dialect = sync_engine.dialect
        for method in ("do_commit", "do_rollback"):
            setattr(dialect, method, self._giving_back_after(getattr(dialect, method)))

    def waiting(self) -> int:
        """Writers of this process waiting for their turn."""
        return self._waiting

    def taken(self) -> bool:
        """Whether a writer of this process holds the turn (in the running loop)."""
        lock = self._locks.get(asyncio.get_running_loop())
        return lock is not None and lock.locked()

    def begin(self, connection: Connection) -> None:
        if connection.get_execution_options().get(READONLY_OPTION, False):
            connection.exec_driver_sql("BEGIN")
            return
        info = connection.connection.info
        if self._HOLDS not in info:
            info[self._HOLDS] = self._take_turn()
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            self._give_back(info)
            raise

    def _take_turn(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Lock]:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        if not lock.locked():  # free: taken at once, no timer needed
            await_only(lock.acquire())
            return loop, lock
        self._waiting += 1
        try:
            await_only(self._wait_for_turn(lock))
        except TimeoutError:
            if self.on_refused is not None:
                self.on_refused()
            busy = sqlite3.OperationalError("database is locked (waited for this process's other writers)")
            busy.sqlite_errorcode = sqlite3.SQLITE_BUSY
            raise OperationalError("BEGIN IMMEDIATE", None, busy) from None
        finally:
            self._waiting -= 1
        return loop, lock

    async def _wait_for_turn(self, lock: asyncio.Lock) -> None:
        # in the writer's own task (no task of its own, as wait_for would make)
        async with asyncio.timeout(self.timeout_s):
            await lock.acquire()

    def _giving_back_after(self, end: Callable[[Any], None]) -> Callable[[Any], None]:
        def ended(dbapi_connection: Any) -> None:
            try:
                end(dbapi_connection)
            finally:
                self._give_back(_info_of(dbapi_connection))

        return ended

    def _give_back_any(self, _dbapi_connection: Any, record: Any, *_: Any) -> None:
        self._give_back(_info_of(record))

    def _give_back_unless_rolled_back(self, _dbapi_connection: Any, record: Any, state: PoolResetState) -> None:
        # a connection the pool can only terminate (a task cancelled mid-transaction) is not rolled back first
        if state.terminate_only or not state.asyncio_safe:
            self._give_back(_info_of(record))

    def _give_back(self, info: dict[Any, Any] | None) -> None:
        turn = info.pop(self._HOLDS, None) if info is not None else None
        if turn is None:
            return
        loop, lock = turn
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            lock.release()
        elif not loop.is_closed():  # a connection collected as garbage on another thread
            loop.call_soon_threadsafe(lock.release)


# A server connection is replaced after this many seconds, before a firewall or proxy drops it for its age.
POOL_RECYCLE_S = 300
# A server database's connections per engine: kept open, and opened beyond them under load (closed on return).
POOL_SIZE = 10
POOL_MAX_OVERFLOW = 5


def _closed(dbapi_connection: Any) -> bool:
    """Whether the driver already knows the server closed this connection (asyncpg ``is_closed()``, psycopg
    ``closed``): a local check, no round trip."""
    driver = getattr(dbapi_connection, "driver_connection", None)
    is_closed = getattr(driver, "is_closed", None)
    return bool(is_closed()) if callable(is_closed) else bool(getattr(driver, "closed", False))


def _refuse_closed(dbapi_connection: Any, _record: ConnectionPoolEntry, _proxy: PoolProxiedConnection) -> None:
    # the pool drops the connection and checks out another (a fresh one if need be)
    if _closed(dbapi_connection):
        raise DisconnectionError("the server closed this connection while it was idle in the pool")


def create_engine(url: str, *, busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S, **kwargs: Any) -> AsyncEngine:
    """An async engine; SQLite gets WAL, a busy timeout (``busy_timeout_s``), foreign keys and its writers queued
    in the process (:class:`SQLiteWriters`), and its directory is created.

    Statement parameters are hidden from error messages and logs (``hide_parameters``): they hold event payloads
    and personal data, and a database error is logged and stored in quarantine with its message.

    A server database (PostgreSQL) is not pinged before each transaction (``pool_pre_ping`` costs three round trips,
    BEGIN, SELECT 1 and ROLLBACK, on every one). Instead a connection the server closed while it sat in the pool
    (a restart, ``pg_terminate_backend``) is seen by the driver and replaced at checkout without a round trip;
    connections are renewed after ``POOL_RECYCLE_S``; and a connection lost unnoticed (a silent network) fails
    the one transaction that used it: the error invalidates the pool, an inbox transaction is rolled back and
    applied again, an HTTP request answers 503 and may be sent again."""
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            from pathlib import Path

            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, **kwargs)
        event.listen(engine.sync_engine, "connect", functools.partial(_sqlite_pragmas, busy_timeout_s))
        SQLiteWriters(busy_timeout_s).install(engine)
        return engine
    kwargs.setdefault("pool_recycle", POOL_RECYCLE_S)
    # connections kept open: at saturation the default 5 sent every request beyond them to an overflow connection
    # opened and closed again (a server process forked for each); the most at once stays 15, as by default
    if "poolclass" not in kwargs:  # other pools (NullPool) take no sizes
        kwargs.setdefault("pool_size", POOL_SIZE)
        kwargs.setdefault("max_overflow", POOL_MAX_OVERFLOW)
    engine = create_async_engine(url, **kwargs)
    event.listen(engine.sync_engine, "checkout", _refuse_closed)
    return engine


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for units of work that write."""
    return async_sessionmaker(engine, expire_on_commit=False)


def readonly_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for queries only: on SQLite they do not take the write lock; every statement of one read sees the
    same snapshot (SQLite's WAL read transaction; REPEATABLE READ on PostgreSQL, whose default READ COMMITTED would
    let a row and its children, or a page and its count, come from two different commits)."""
    options: dict[str, Any] = {READONLY_OPTION: True}
    if engine.dialect.name == "postgresql":
        options["isolation_level"] = "REPEATABLE READ"
    return async_sessionmaker(engine.execution_options(**options), expire_on_commit=False)


@asynccontextmanager
async def transaction(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit on success, roll back on any error."""
    async with factory() as session, session.begin():
        yield session


_ON_COMMIT = "labornet.on_commit"


def on_commit(session: AsyncSession, action: Callable[[], None]) -> None:
    """Run ``action`` when the session's transaction commits, and never if it rolls back.

    For what must follow only a durable change, such as counting it in a metric: an inbox handler that fails and
    is retried would otherwise count the same change twice."""
    session.sync_session.info.setdefault(_ON_COMMIT, []).append(action)


@event.listens_for(Session, "after_commit")
def _run_on_commit(session: Session) -> None:
    for action in session.info.pop(_ON_COMMIT, ()):
        action()


@event.listens_for(Session, "after_rollback")
def _forget_on_rollback(session: Session) -> None:
    session.info.pop(_ON_COMMIT, None)


def is_sqlite(engine: AsyncEngine | Engine) -> bool:
    return engine.dialect.name == "sqlite"


# Statements built once ------------------------------------------------------------------------------------------
#
# ``insert(t).values(**row)`` and ``update(t).where(...).values(**row)`` build a new statement for every row: each
# value becomes a bound parameter object and the statement's cache key is computed again, which costs more Python
# than the database spends running it. The statements below are built once per table and the row is passed as
# parameters at execution, as for an executemany; SQLAlchemy compiles each distinct set of keys once.


def for_each_dialect(build: Callable[[Callable[[Table], Any]], Any]) -> dict[str, Any]:
    """A statement built once for each database LaborNet runs on, from that dialect's ``insert`` (the one with
    ``ON CONFLICT``); look it up with ``session.get_bind().dialect.name``."""
    return {"postgresql": build(postgresql.insert), "sqlite": build(sqlite.insert)}


@functools.cache
def insert_of(table: Table) -> Insert:
    """``INSERT INTO table``: the columns are the keys of the parameters given at execution."""
    return insert(table)


@functools.cache
def update_of(table: Table, *where: str) -> Update:
    """``UPDATE table SET <the parameters' other keys> WHERE <each named column> = :where_<column>``."""
    return update(table).where(*(table.c[name] == bindparam(f"where_{name}") for name in where))


def update_parameters(values: Mapping[str, Any], **where: Any) -> dict[str, Any]:
    """The parameters of an :func:`update_of` statement: the new ``values`` and the ``where`` columns' values."""
    return {**values, **{f"where_{name}": value for name, value in where.items()}}

"""Database plumbing shared by every service: engines, sessions and the platform tables.

Each service owns one database. Besides its own tables it holds the platform tables defined here:

* ``outbox`` — events written in the same transaction as the state change, published by the relay;
* ``outbox_stream`` — the last sequence number given out per origin stream (gap-free, commit-ordered);
* ``inbox`` — one row per applied event and consumer, written in the same transaction as the effect;
* ``quarantine`` — records that were rejected or kept failing, for an operator to inspect and replay;
* ``bus_state`` — what the service remembers of the broker between runs (the cluster it last published to).
"""

from __future__ import annotations

import functools
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
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.sql.dml import Insert, Update

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


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (see _sqlite_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    """Writers take SQLite's write lock up front (BEGIN IMMEDIATE).

    A deferred transaction that reads and then writes fails with SQLITE_BUSY when another writer committed in
    between, whatever the busy timeout; taking the lock first makes writers queue instead. Read-only sessions
    (see :func:`readonly_sessionmaker`) use a plain BEGIN and never block writers under WAL.
    """
    readonly = connection.get_execution_options().get(READONLY_OPTION, False)
    connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


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


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine; SQLite gets WAL, a busy timeout and foreign keys, and its directory is created.

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
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
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

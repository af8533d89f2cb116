"""Statements run on the driver (ADR 38): the same rows, errors, transaction and events as through the session, on
real SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    bindparam,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from labornet.shared.db import as_utc, create_engine, sessionmaker
from labornet.shared.direct import Direct
from labornet.shared.testing import platform_engine, postgres_base_url

metadata = MetaData()
sample = Table(
    "direct_sample",
    metadata,
    Column("id", String(20), primary_key=True),
    Column("doc", JSON, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("day", Date, nullable=True),
    Column("amount", Numeric(12, 2), nullable=True),
    Column("flag", Boolean, nullable=False, default=False),
    Column("blob", LargeBinary, nullable=True),
    Column("version", Integer, nullable=False, default=1),
    Column("note", String(50), nullable=True, default=lambda: "written"),
    Column("extra", JSON, nullable=True),
)

INSERT = Direct(insert(sample))
BY_ID = Direct(select(sample).where(sample.c.id == bindparam("wanted")))
BUMP = Direct(
    update(sample)
    .where(sample.c.id == bindparam("wanted"), sample.c.version == bindparam("seen"))
    .values(version=sample.c.version + 1)
)
AT = datetime(2026, 11, 28, 3, 30, 15, 123456, tzinfo=UTC)
ROW = {
    "id": "a",
    "doc": {"省": "四川", "n": [1, 2.5, None], "nested": {"k": True}},
    "at": AT,
    "day": date(2026, 2, 28),
    "amount": Decimal("1234.50"),
    "blob": b"\x00\xff",
}


async def sample_engine(database_url: str) -> AsyncEngine:
    return await platform_engine(database_url, metadata)


async def test_rows_read_on_the_driver_are_the_rows_the_session_reads(database_url: str) -> None:
    """Written with defaults left out (a callable, scalars), read back: every value and its type as SQLAlchemy gives
    them (JSON decoded, times aware, Numeric as Decimal, booleans)."""
    engine = await sample_engine(database_url)
    try:
        async with sessionmaker(engine)() as session, session.begin():
            await INSERT.execute(session, ROW)
            await INSERT.executemany(
                session, [{**ROW, "id": "b", "flag": True}, {**ROW, "id": "c", "doc": [], "flag": False}]
            )
        async with sessionmaker(engine)() as session:
            direct = (await BY_ID.execute(session, {"wanted": "a"})).rows
            through_session = (await session.execute(select(sample).where(sample.c.id == "a"))).mappings().all()
            many = (await session.execute(select(sample.c.id, sample.c.flag, sample.c.doc).order_by(sample.c.id))).all()
    finally:
        await engine.dispose()
    assert len(direct) == 1
    expected = dict(through_session[0])
    got = dict(direct[0].items())
    assert got == expected
    assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in expected.items()}
    # (SQLite gives times back naive, through the session as before: the services read them with as_utc)
    assert got["doc"] == ROW["doc"] and as_utc(got["at"]) == AT and got["amount"] == Decimal("1234.50")
    assert (got["flag"], got["version"], got["note"]) == (False, 1, "written")
    assert [tuple(r) for r in many] == [("a", False, ROW["doc"]), ("b", True, ROW["doc"]), ("c", False, [])]


async def test_none_is_written_as_the_session_writes_it(database_url: str) -> None:
    """A JSON column given None holds JSON's null (SQLAlchemy's default), not SQL's NULL, whichever path wrote it: a
    query on ``IS NULL`` finds the rows of both alike."""
    engine = await sample_engine(database_url)
    try:
        async with sessionmaker(engine)() as session, session.begin():
            await INSERT.execute(session, {**ROW, "id": "direct", "extra": None, "day": None})
            await session.execute(insert(sample), {**ROW, "id": "session", "extra": None, "day": None})
        async with sessionmaker(engine)() as session:
            null_json = (await session.execute(select(sample.c.id).where(sample.c.extra.is_(None)))).scalars()
            null_day = (await session.execute(select(sample.c.id).where(sample.c.day.is_(None)))).scalars()
            found = sorted(null_json), sorted(null_day)
    finally:
        await engine.dispose()
    assert found == ([], ["direct", "session"])


async def test_a_statement_on_the_driver_is_part_of_the_sessions_transaction(database_url: str) -> None:
    """First in its transaction (SQLAlchemy begins lazily), it is rolled back with the transaction and committed with
    it; an UPDATE says how many rows it touched."""
    engine = await sample_engine(database_url)
    try:

        async def failing_step() -> None:
            async with sessionmaker(engine)() as session, session.begin():
                await INSERT.execute(session, ROW)
                raise RuntimeError("the step failed after its first statement")

        with pytest.raises(RuntimeError):
            await failing_step()
        async with sessionmaker(engine)() as session:
            assert (await BY_ID.execute(session, {"wanted": "a"})).rows == []
        async with sessionmaker(engine)() as session, session.begin():
            await INSERT.execute(session, ROW)
            assert (await BUMP.execute(session, {"wanted": "a", "seen": 1})).rowcount == 1
            assert (await BUMP.execute(session, {"wanted": "a", "seen": 1})).rowcount == 0  # a stale version
        async with sessionmaker(engine)() as session:
            assert (await session.execute(select(sample.c.version))).scalar_one() == 2
    finally:
        await engine.dispose()


async def test_a_driver_error_is_the_error_sqlalchemy_raises(database_url: str) -> None:
    """A duplicate key is an ``IntegrityError`` (with the driver's sqlstate on PostgreSQL), the transaction is rolled
    back with nothing of it written, and the session serves the next one."""
    engine = await sample_engine(database_url)
    try:
        async with sessionmaker(engine)() as session, session.begin():
            await INSERT.execute(session, ROW)

        async def twice() -> None:
            async with sessionmaker(engine)() as session, session.begin():
                await INSERT.execute(session, {**ROW, "id": "z"})
                await INSERT.execute(session, ROW)

        with pytest.raises(IntegrityError) as raised:
            await twice()
        if engine.dialect.name == "postgresql":
            assert raised.value.orig.sqlstate == "23505"  # type: ignore[union-attr]
        # the engine hides parameters (personal data) from errors, on the driver too
        assert "parameters hidden" in str(raised.value) and "四川" not in str(raised.value)
        async with sessionmaker(engine)() as session, session.begin():
            assert (await BY_ID.execute(session, {"wanted": "z"})).rows == []
            await INSERT.execute(session, {**ROW, "id": "y"})
        async with sessionmaker(engine)() as session:
            assert sorted((await session.execute(select(sample.c.id))).scalars()) == ["a", "y"]
    finally:
        await engine.dispose()


async def test_the_engines_listeners_see_statements_run_on_the_driver(database_url: str) -> None:
    engine = await sample_engine(database_url)
    seen: list[tuple[str, bool]] = []

    def record(_conn: object, _cursor: object, statement: str, _parameters: Any, _context: Any, many: bool) -> None:
        seen.append((" ".join(statement.split()).split(" (")[0], many))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        async with sessionmaker(engine)() as session, session.begin():
            await INSERT.execute(session, ROW)
            await INSERT.executemany(session, [{**ROW, "id": "b"}, {**ROW, "id": "c"}])
            await INSERT.executemany(session, [{**ROW, "id": "d"}])
        async with sessionmaker(engine)() as session:
            written = sorted((await session.execute(select(sample.c.id))).scalars())
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
        await engine.dispose()
    assert written == ["a", "b", "c", "d"]
    inserts = [entry for entry in seen if entry[0].startswith("INSERT INTO direct_sample")]
    # a batch of one row goes as one statement, as through the session (on the driver cheaper than a batch)
    assert inserts == [
        ("INSERT INTO direct_sample", False),
        ("INSERT INTO direct_sample", True),
        ("INSERT INTO direct_sample", False),
    ]


async def test_a_parameter_not_given_is_refused_before_anything_runs(database_url: str) -> None:
    engine = await sample_engine(database_url)
    try:
        async with sessionmaker(engine)() as session:
            # on the driver a KeyError, through the session (SQLite) SQLAlchemy's own error; both name it
            refused = KeyError if engine.dialect.name == "postgresql" else StatementError
            with pytest.raises(refused, match="seen"):
                await BUMP.execute(session, {"wanted": "a"})
    finally:
        await engine.dispose()


async def test_a_list_in_IN_answers_as_through_the_session(database_url: str) -> None:
    """``IN (:list)`` runs on PostgreSQL as ``= ANY(:array)``, one statement whatever the list's length: the rows of a
    list of several ids, of one and of none are those the session finds. An expanding parameter anywhere else
    (``NOT IN``) is refused on the driver, before anything runs."""
    engine = await sample_engine(database_url)
    listed = Direct(select(sample.c.id).where(sample.c.id.in_(bindparam("ids", expanding=True))).order_by(sample.c.id))
    seen: list[str] = []
    event.listen(engine.sync_engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
    try:
        async with sessionmaker(engine)() as session, session.begin():
            await INSERT.executemany(session, [{**ROW, "id": name} for name in ("a", "b", "c")])
        async with sessionmaker(engine)() as session:
            for ids in (["c", "a", "x"], ["b"], []):
                direct = [row["id"] for row in (await listed.execute(session, {"ids": ids})).rows]
                through_session = (await session.execute(listed.statement, {"ids": ids})).scalars().all()  # type: ignore[arg-type]
                assert direct == list(through_session) == sorted(set(ids) & {"a", "b", "c"})
            if engine.dialect.name == "postgresql":
                assert any("= ANY" in statement for statement in seen)
                unlisted = Direct(select(sample.c.id).where(sample.c.id.not_in(bindparam("ids", expanding=True))))
                with pytest.raises(TypeError, match="expanding parameters"):
                    await unlisted.execute(session, {"ids": ["a"]})
    finally:
        await engine.dispose()


@pytest.mark.parametrize("db_backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
async def test_a_connection_lost_under_a_statement_on_the_driver_is_invalidated_like_sqlalchemys(
    database_url: str,
) -> None:
    """The server ends the backend in the middle of a transaction: the statement fails with the error SQLAlchemy
    raises for a lost connection (``connection_invalidated``), the pool drops that connection, and the next
    transaction runs on a new one."""
    engine = await sample_engine(database_url)
    base = postgres_base_url()
    assert base is not None
    killer = create_engine(base, poolclass=NullPool)
    try:
        pids: list[int] = []

        async def lost_midway() -> None:
            async with sessionmaker(engine)() as session, session.begin():
                await INSERT.execute(session, ROW)
                pids.append((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())
                async with killer.connect() as connection:
                    ended = await connection.execute(text("SELECT pg_terminate_backend(:p, 5000)"), {"p": pids[0]})
                    assert ended.scalar()
                await INSERT.execute(session, {**ROW, "id": "b"})

        with pytest.raises(DBAPIError) as raised:
            await lost_midway()
        assert raised.value.connection_invalidated
        async with sessionmaker(engine)() as session, session.begin():
            assert (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one() != pids[0]
            assert (await BY_ID.execute(session, {"wanted": "a"})).rows == []  # the first transaction never committed
            await INSERT.execute(session, ROW)
        async with sessionmaker(engine)() as session:
            assert (await session.execute(select(sample.c.id))).scalars().all() == ["a"]
    finally:
        await killer.dispose()
        await engine.dispose()

"""Database sessions on real SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, func, insert, select, text
from sqlalchemy.exc import InterfaceError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.pool import NullPool

from labornet.shared import db
from labornet.shared.db import create_engine, on_commit, outbox, readonly_sessionmaker, sessionmaker, utcnow
from labornet.shared.problems import install_problem_handlers
from labornet.shared.testing import platform_engine, postgres_base_url


async def test_a_read_sees_one_snapshot_across_its_statements(database_url: str) -> None:
    """A page and its count, a case and its timeline: every statement of one read sees the same data, even when a
    writer commits between them (PostgreSQL's default READ COMMITTED would not)."""
    engine = await platform_engine(database_url)
    rows = select(func.count()).select_from(outbox)
    try:
        async with readonly_sessionmaker(engine)() as reader, reader.begin():
            before = (await reader.execute(rows)).scalar_one()
            async with sessionmaker(engine)() as writer, writer.begin():
                await writer.execute(
                    insert(outbox).values(
                        event_id="e-1", event_type="t", topic="t", headers=[], payload=b"{}", created_at=utcnow()
                    )
                )
            during = (await reader.execute(rows)).scalar_one()
        async with readonly_sessionmaker(engine)() as reader:
            after = (await reader.execute(rows)).scalar_one()
    finally:
        await engine.dispose()
    assert (before, during, after) == (0, 0, 1)


async def test_on_commit_runs_after_a_commit_and_never_after_a_rollback(database_url: str) -> None:
    engine = await platform_engine(database_url)
    done: list[str] = []

    def write(session: AsyncSession, event_id: str) -> Any:
        on_commit(session, lambda: done.append(event_id))
        row = {"event_id": event_id, "event_type": "t", "topic": "t", "headers": [], "payload": b"{}"}
        return session.execute(insert(outbox).values(**row, created_at=utcnow()))

    try:
        async with sessionmaker(engine)() as session:

            async def failing_handler() -> None:
                async with session.begin():
                    await write(session, "rolled-back")
                    raise RuntimeError("the handler failed")

            with pytest.raises(RuntimeError):
                await failing_handler()
            async with session.begin():  # the same session, retried: only what commits is done
                await write(session, "committed")
                assert done == []
            async with session.begin():  # and done once
                await session.execute(select(1))
        async with readonly_sessionmaker(engine)() as reader:
            stored = (await reader.execute(select(outbox.c.event_id))).scalars().all()
    finally:
        await engine.dispose()
    assert (done, stored) == (["committed"], ["committed"])


async def _kill_pooled_connection(engine: AsyncEngine) -> tuple[int, Any]:
    """Terminate the server backend of the connection ``engine`` keeps in its pool, from another connection, and
    wait until the server has closed it; return the backend's pid and the driver's connection."""
    async with engine.connect() as connection:
        pid = int((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())
        driver = (await connection.get_raw_connection()).dbapi_connection
    base = postgres_base_url()
    assert base is not None
    killer = create_engine(base, poolclass=NullPool)
    try:
        async with killer.connect() as connection:
            # waits (up to 5 s) until the backend is gone
            assert (await connection.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})).scalar()
    finally:
        await killer.dispose()
    return pid, driver


@pytest.mark.parametrize("db_backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
async def test_a_connection_the_server_closed_between_transactions_is_replaced_without_a_ping(
    database_url: str,
) -> None:
    """No transaction pays a pre-ping (BEGIN, SELECT 1, ROLLBACK) for connections that may have died in the pool;
    one that did is seen closed at checkout and replaced, and the next unit of work commits as if nothing
    happened."""
    engine = await platform_engine(database_url)
    sent: list[str] = []
    event.listen(engine.sync_engine, "before_cursor_execute", lambda *args: sent.append(args[2].strip()))
    try:
        pid, driver = await _kill_pooled_connection(engine)
        for _ in range(200):  # the driver learns of the close when the event loop reads the socket
            if db._closed(driver):
                break
            await asyncio.sleep(0.01)
        assert db._closed(driver), "the pooled connection should be known closed without a round trip"
        sent.clear()
        async with sessionmaker(engine)() as session, session.begin():
            await session.execute(
                insert(outbox).values(
                    event_id="after-kill", event_type="t", topic="t", headers=[], payload=b"{}", created_at=utcnow()
                )
            )
            assert (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one() != pid
        async with readonly_sessionmaker(engine)() as reader:
            assert (await reader.execute(select(outbox.c.event_id))).scalars().all() == ["after-kill"]
    finally:
        await engine.dispose()
    assert not [s for s in sent if s.upper() in ("SELECT 1", "SELECT 1;")], sent


@pytest.mark.parametrize("db_backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
async def test_a_connection_lost_unnoticed_fails_one_transaction_and_the_next_one_reconnects(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the driver has not seen the close (a silent network), the transaction that used the connection fails
    with a disconnection (what the inbox rewinds and retries), nothing of it is kept, and the pool reconnects for
    the next one; an HTTP request that meets such a connection answers 503 and may be sent again."""
    engine = await platform_engine(database_url)
    monkeypatch.setattr(db, "_closed", lambda _connection: False)
    row = {"event_type": "t", "topic": "t", "headers": [], "payload": b"{}"}
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/things/{event_id}", status_code=201)
    async def add(event_id: str) -> None:
        async with sessionmaker(engine)() as session, session.begin():
            await session.execute(insert(outbox).values(event_id=event_id, **row, created_at=utcnow()))

    try:
        await _kill_pooled_connection(engine)
        with pytest.raises(InterfaceError) as failure:
            async with sessionmaker(engine)() as session, session.begin():
                await session.execute(insert(outbox).values(event_id="lost", **row, created_at=utcnow()))
        assert failure.value.connection_invalidated
        async with sessionmaker(engine)() as session, session.begin():
            await session.execute(insert(outbox).values(event_id="next", **row, created_at=utcnow()))

        # a request that meets a lost connection answers 503 with Retry-After, and its repetition goes through
        await _kill_pooled_connection(engine)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            lost = await client.post("/things/by-request")
            assert lost.status_code == 503, lost.text
            assert lost.headers["retry-after"] == "1"
            assert lost.json()["type"].endswith("/database-unavailable")
            assert (await client.post("/things/by-request")).status_code == 201
        async with readonly_sessionmaker(engine)() as reader:
            stored = (await reader.execute(select(outbox.c.event_id).order_by(outbox.c.id))).scalars().all()
        assert stored == ["next", "by-request"]
    finally:
        await engine.dispose()


async def test_a_row_statement_built_once_sets_only_the_columns_given_and_only_where_they_match(
    database_url: str,
) -> None:
    """``insert_of`` / ``update_of``: one statement per table, the row passed as parameters. An update changes only
    the columns whose values it is given, only in the row whose ``where`` columns still hold the values given (a
    version moved on meanwhile: no row), and the ``where`` values never leak into the new values."""
    engine = await platform_engine(database_url)
    row = {"event_id": "e-1", "event_type": "t", "topic": "a", "headers": [], "payload": b"{}", "attempts": 0}
    try:
        async with sessionmaker(engine)() as session, session.begin():
            await session.execute(db.insert_of(outbox), {**row, "created_at": utcnow()})
            await session.execute(db.insert_of(outbox), {**row, "event_id": "e-2", "created_at": utcnow()})
        statement = db.update_of(outbox, "event_id", "attempts")
        assert statement is db.update_of(outbox, "event_id", "attempts")  # built once
        async with sessionmaker(engine)() as session, session.begin():
            stale = await session.execute(statement, db.update_parameters({"topic": "b"}, event_id="e-1", attempts=5))
            moved = await session.execute(
                statement, db.update_parameters({"topic": "c", "attempts": 1}, event_id="e-1", attempts=0)
            )
        async with readonly_sessionmaker(engine)() as session:
            rows = (await session.execute(select(outbox.c.event_id, outbox.c.topic, outbox.c.attempts))).all()
    finally:
        await engine.dispose()
    assert (stale.rowcount, moved.rowcount) == (0, 1)  # type: ignore[attr-defined]
    assert sorted(map(tuple, rows)) == [("e-1", "c", 1), ("e-2", "a", 0)]

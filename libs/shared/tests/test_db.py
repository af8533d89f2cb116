"""Database sessions on real SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from labornet.shared.db import on_commit, outbox, readonly_sessionmaker, sessionmaker, utcnow
from labornet.shared.testing import platform_engine


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

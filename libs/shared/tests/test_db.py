"""Database sessions on real SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import func, insert, select

from labornet.shared.db import outbox, readonly_sessionmaker, sessionmaker, utcnow
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

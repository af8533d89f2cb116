"""Anti-entropy's repair of the vacancy replica (ADR 0008): the origin's copy wins whatever its version.

A replaced vacancy goes through subscription matching like an applied event, and the matches it already had
take its version and status even when the replica had held a higher (bogus) version. A vacancy the origin does not
have is removed with its matches and their webhook deliveries, so no worker is shown or sent a vacancy that does
not exist. The text index follows the row by itself (SQLite triggers, a PostgreSQL generated column).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from labornet.jobs.adapters.tables import match, vacancy, webhook_delivery
from labornet.jobs.service_layer.matching import match_vacancy
from labornet.shared.antientropy import Repair, replace_authoritative
from labornet.shared.db import utcnow


async def replace_vacancy(session: AsyncSession, row: dict[str, Any]) -> Repair:
    outcome = await replace_authoritative(session, vacancy, row)
    await session.execute(
        update(match)
        .where(match.c.vacancy_id == row["id"])
        .values(vacancy_version=row["version"], vacancy_status=row["status"], updated_at=utcnow())
    )
    await match_vacancy(session, row)
    return outcome


async def delete_vacancy(session: AsyncSession, vacancy_id: str) -> None:
    matches = select(match.c.id).where(match.c.vacancy_id == vacancy_id)
    await session.execute(delete(webhook_delivery).where(webhook_delivery.c.match_id.in_(matches)))
    await session.execute(delete(match).where(match.c.vacancy_id == vacancy_id))
    await session.execute(delete(vacancy).where(vacancy.c.id == vacancy_id))

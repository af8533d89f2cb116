"""A province's benefit configuration in the database (one ``benefit_config`` row per province)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from labornet.insurance.adapters.tables import benefit_config
from labornet.insurance.domain.transfer import Standard, TimeLimits
from labornet.shared.workdays import WorkCalendar


async def load(session: AsyncSession, province: str) -> dict[str, Any]:
    row = (await session.execute(select(benefit_config).where(benefit_config.c.province == province))).mappings().one()
    return dict(row)


def standard_of(config: Mapping[str, Any]) -> Standard:
    return Standard(Decimal(config["monthly_standard"]), Decimal(config["fund_multiplier"]))


def limits_of(config: Mapping[str, Any], calendar: WorkCalendar) -> TimeLimits:
    return TimeLimits(calendar, int(config["answer_limit_days"]), int(config["transfer_limit_days"]))


async def seed(session: AsyncSession, values: Mapping[str, Any]) -> None:
    """Insert the configuration unless the province has one already."""
    insert_ = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    await session.execute(
        insert_(benefit_config).values(**values).on_conflict_do_nothing(index_elements=[benefit_config.c.province])
    )


async def store(session: AsyncSession, province: str, values: Mapping[str, Any], at: datetime) -> None:
    await session.execute(
        update(benefit_config).where(benefit_config.c.province == province).values(**values, updated_at=at)
    )

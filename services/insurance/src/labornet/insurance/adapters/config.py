"""A province's benefit configuration in the database (one ``benefit_config`` row per province)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
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


class ConfigCopy:
    """The province's benefit configuration as this process last read it, so that a saga step does not read it again.

    Every step needs it (limits, standard, multiplier) and an officer changes it a few times a year. The copy is
    dropped when this process changes the configuration (:meth:`changed`, after the commit) and read again at most
    ``max_age_s`` after it was read, which is how long a change made through another replica of the service takes
    to reach this one (``LABORNET_INSURANCE_CONFIG_MAX_AGE_S``; 0: read it in every step)."""

    def __init__(self, province: str, max_age_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.province = province
        self.max_age_s = max_age_s
        self.clock = clock
        self._held: tuple[float, dict[str, Any]] | None = None
        self._generation = 0

    async def get(self, session: AsyncSession) -> dict[str, Any]:
        """The configuration: the copy while it is fresh, otherwise read in the transaction ``session`` is in."""
        now = self.clock()
        if self._held is not None and now - self._held[0] < self.max_age_s:
            return dict(self._held[1])
        generation = self._generation
        values = await load(session, self.province)
        if generation == self._generation:  # not changed meanwhile (that read may have seen the old values)
            self._held = (now, values)
        return dict(values)

    def changed(self) -> None:
        """This process changed the configuration (call it once the change is committed)."""
        self._generation += 1
        self._held = None


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

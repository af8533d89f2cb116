"""The platform's clock and China's date: one definition for every service.

Every stored time is UTC; every statutory day (a closing date, a working-day limit, the month a settlement falls
due) is a date in China's time zone, Asia/Shanghai (UTC+8, no daylight saving). A request made at 23:00 UTC on a
Sunday is a Monday request.

Services take a :data:`Clock` (a function returning the current UTC time) in their bootstrap and pass it down;
tests pass a fixed one instead of patching. :func:`today_in_china` reads the system clock when given no time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

CHINA = ZoneInfo("Asia/Shanghai")

Clock = Callable[[], datetime]
"""The current time, aware and in UTC."""


def utcnow() -> datetime:
    """The system clock: the current time, aware and in UTC."""
    return datetime.now(UTC)


def china_date(moment: datetime | date) -> date:
    """The date in China at ``moment`` (a date is returned as it is)."""
    return moment.astimezone(CHINA).date() if isinstance(moment, datetime) else moment


def today_in_china(now: datetime | None = None) -> date:
    """Today's date in China, at ``now`` or by the system clock."""
    return china_date(now or utcnow())

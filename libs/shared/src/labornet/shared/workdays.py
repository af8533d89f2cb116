"""Working-day clocks for statutory time limits (5 working days to answer, 20 in all, …).

Weekends are skipped; public holidays come from configuration (``LABORNET_HOLIDAYS``: ISO dates), and so do the
make-up working days China schedules on weekends (``LABORNET_EXTRA_WORKDAYS``). Days are counted in China's
time zone: a request filed at 23:00 UTC on a Sunday is a Monday request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

CHINA = ZoneInfo("Asia/Shanghai")


@dataclass(frozen=True)
class WorkCalendar:
    holidays: frozenset[date] = field(default_factory=frozenset)
    extra_workdays: frozenset[date] = field(default_factory=frozenset)

    @classmethod
    def of(cls, holidays: Iterable[date] = (), extra_workdays: Iterable[date] = ()) -> WorkCalendar:
        return cls(frozenset(holidays), frozenset(extra_workdays))

    def is_workday(self, day: date) -> bool:
        if day in self.extra_workdays:
            return True
        return day.weekday() < 5 and day not in self.holidays

    def add_workdays(self, start: datetime | date, days: int) -> date:
        """The date ``days`` working days after ``start`` (the start day itself does not count)."""
        day = start.astimezone(CHINA).date() if isinstance(start, datetime) else start
        remaining = days
        while remaining > 0:
            day += timedelta(days=1)
            if self.is_workday(day):
                remaining -= 1
        return day

    def workdays_between(self, start: datetime | date, end: datetime | date) -> int:
        """Working days after ``start`` up to and including ``end``."""
        first = start.astimezone(CHINA).date() if isinstance(start, datetime) else start
        last = end.astimezone(CHINA).date() if isinstance(end, datetime) else end
        count, day = 0, first
        while day < last:
            day += timedelta(days=1)
            count += self.is_workday(day)
        return count

    def overdue(self, start: datetime, limit_days: int, now: datetime) -> bool:
        """True once ``now`` lies after the last working day allowed."""
        return now.astimezone(CHINA).date() > self.add_workdays(start, limit_days)

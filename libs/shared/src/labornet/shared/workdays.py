"""Working-day calendars for statutory time limits (5 working days to answer, 60 to investigate, …).

A deadline is counted on the calendar of the province bound by it (a rights case's acceptance limit on the
handling province's calendar, wherever it is computed). Whether a day is a working day is decided, first match
wins, by:

1. the province's own days from the calendar file (``LABORNET_CALENDAR_PATH``, section ``provinces``): regional
   holidays such as Tibet's or Ningxia's, and the working days a region schedules to make up for them;
2. national additions from configuration: ``LABORNET_HOLIDAYS`` and ``LABORNET_EXTRA_WORKDAYS`` (JSON lists of
   ISO dates) and the calendar file's ``national`` section (for example next year's schedule, published by the
   State Council General Office before a ``chinesecalendar`` release carries it);
3. the official national schedule from the ``chinesecalendar`` package: public holidays and the weekend days
   worked instead (调休), 2004 up to the last year the installed release knows;
4. the week: Monday to Friday are working days.

A year that neither ``chinesecalendar`` nor the calendar file's ``national.years`` knows is counted by the week
alone (plus any configured days): public holidays are missing, so a deadline comes out early, never late. This is
deliberate: a limit of 60 working days set in November already ends in a year whose schedule is published only
weeks before it starts, and an error would stop officers from accepting cases each year-end. The calendar logs a
warning once per province and year and counts every such deadline in
``labornet_calendar_unknown_year_deadlines_total``; the operator adds the year's schedule to the calendar file
(see docs/operations/calendars.md) or upgrades ``chinesecalendar``.

Days are counted in China's time zone: a request filed at 23:00 UTC on a Sunday is a Monday request.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import chinese_calendar
from prometheus_client import Counter

from labornet.shared.clock import CHINA as CHINA
from labornet.shared.clock import china_date

log = logging.getLogger(__name__)

FORMAT_VERSION = 1

UNKNOWN_YEAR_DEADLINES = Counter(
    "labornet_calendar_unknown_year_deadlines_total",
    "Working-day counts that reached a year without a national holiday schedule (counted by the week alone), "
    "by the province whose calendar was used",
    ["province"],
)
_warned: set[tuple[str, int]] = set()


def official_workday(day: date) -> bool | None:
    """The State Council's schedule as ``chinesecalendar`` carries it; ``None`` for a year it does not know."""
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        return None


@dataclass(frozen=True)
class WorkCalendar:
    """The working days of one province.

    ``holidays`` and ``extra_workdays`` are configured days that override everything else. With ``official`` the
    national schedule of ``chinesecalendar`` applies (and ``known_years`` lists years the configuration covers
    beyond it); without it, the week alone: ``WorkCalendar()`` counts Monday to Friday.
    """

    holidays: frozenset[date] = field(default_factory=frozenset)
    extra_workdays: frozenset[date] = field(default_factory=frozenset)
    official: bool = False
    known_years: frozenset[int] = field(default_factory=frozenset)
    province: str = "national"

    @classmethod
    def of(cls, holidays: Iterable[date] = (), extra_workdays: Iterable[date] = ()) -> WorkCalendar:
        """Weekends and the given days only (no national schedule): for tests and fixed examples."""
        return cls(frozenset(holidays), frozenset(extra_workdays))

    def is_workday(self, day: date) -> bool:
        workday, _known = self._classify(day)
        return workday

    def _classify(self, day: date) -> tuple[bool, bool]:
        """Whether ``day`` is a working day, and whether its year's national schedule is known."""
        if day in self.extra_workdays:
            return True, True
        if day in self.holidays:
            return False, True
        if self.official:
            official = official_workday(day)
            if official is not None:
                return official, True
            if day.year not in self.known_years:
                return day.weekday() < 5, False
        return day.weekday() < 5, True

    def add_workdays(self, start: datetime | date, days: int) -> date:
        """The date ``days`` working days after ``start`` (the start day itself does not count)."""
        day = china_date(start)
        remaining = days
        unknown: set[int] = set()
        while remaining > 0:
            day += timedelta(days=1)
            workday, known = self._classify(day)
            remaining -= workday
            if not known:
                unknown.add(day.year)
        self._report(unknown)
        return day

    def workdays_between(self, start: datetime | date, end: datetime | date) -> int:
        """Working days after ``start`` up to and including ``end``."""
        first, last = china_date(start), china_date(end)
        count, day = 0, first
        unknown: set[int] = set()
        while day < last:
            day += timedelta(days=1)
            workday, known = self._classify(day)
            count += workday
            if not known:
                unknown.add(day.year)
        self._report(unknown)
        return count

    def overdue(self, start: datetime, limit_days: int, now: datetime) -> bool:
        """True once ``now`` lies after the last working day allowed."""
        return china_date(now) > self.add_workdays(start, limit_days)

    def _report(self, years: set[int]) -> None:
        if not years:
            return
        UNKNOWN_YEAR_DEADLINES.labels(self.province).inc()
        for year in sorted(years):
            if (self.province, year) not in _warned:
                _warned.add((self.province, year))
                log.warning(
                    "no national holiday schedule for %d: working days of province %s in %d are counted Monday to "
                    "Friday (public holidays missing, deadlines may come out early); add the year to the calendar "
                    "file (LABORNET_CALENDAR_PATH, docs/operations/calendars.md) or upgrade chinesecalendar",
                    year,
                    self.province,
                    year,
                )


# The federation's calendars -------------------------------------------------------------------------------------


class CalendarFileError(ValueError):
    """The calendar file cannot be read or does not follow the format."""


@dataclass(frozen=True)
class Days:
    """Holidays and working days that override a calendar."""

    holidays: frozenset[date] = frozenset()
    workdays: frozenset[date] = frozenset()


@dataclass(frozen=True)
class CalendarFile:
    """The contents of a calendar file (see docs/operations/calendars.md).

    ::

        {"version": 1,
         "national": {"years": [2027], "holidays": ["2027-01-01", ...], "workdays": ["2027-02-06", ...]},
         "provinces": {"540000": {"holidays": [...], "workdays": [...]}, ...}}

    ``national.years`` names the years whose national schedule the file gives in full (for years the installed
    ``chinesecalendar`` does not know yet); every section is optional.
    """

    national: Days = Days()
    years: frozenset[int] = frozenset()
    provinces: Mapping[str, Days] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> CalendarFile:
        source = f"calendar file {path}"
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise CalendarFileError(f"{source}: cannot be read ({exc})") from exc
        except json.JSONDecodeError as exc:
            raise CalendarFileError(f"{source}: not valid JSON ({exc})") from exc
        return cls.parse(document, source)

    @classmethod
    def parse(cls, document: Any, source: str = "calendar file") -> CalendarFile:
        _object(document, source, required={"version"}, allowed={"version", "national", "provinces"})
        if document["version"] != FORMAT_VERSION:
            raise CalendarFileError(f"{source}: unsupported version {document['version']!r}; expected {FORMAT_VERSION}")
        national_section = document.get("national", {})
        where = f"{source}: national"
        national = _days(national_section, where, allowed=("years", "holidays", "workdays"))
        years = national_section.get("years", [])
        if not isinstance(years, list) or not all(type(y) is int and 2000 <= y <= 2200 for y in years):
            raise CalendarFileError(f"{where}.years should be a list of years such as [2027], got {years!r}")
        provinces_section = document.get("provinces", {})
        _object(provinces_section, f"{source}: provinces")
        provinces: dict[str, Days] = {}
        for code, section in provinces_section.items():
            if len(code) != 6 or not code.isascii() or not code.isdigit() or not code.endswith("0000"):
                raise CalendarFileError(f"{source}: provinces: {code!r} should be a province code such as 540000")
            provinces[code] = _days(section, f"{source}: provinces.{code}")
        return cls(national=national, years=frozenset(years), provinces=provinces)


def _object(value: Any, where: str, *, required: Iterable[str] = (), allowed: Iterable[str] | None = None) -> None:
    if not isinstance(value, dict):
        raise CalendarFileError(f"{where} should be a JSON object")
    missing = sorted(set(required) - set(value))
    if missing:
        raise CalendarFileError(f"{where} lacks {', '.join(missing)}")
    if allowed is not None:
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            expected = ", ".join(sorted(allowed))
            raise CalendarFileError(f"{where} has unknown field(s) {', '.join(unknown)}; expected {expected}")


def _dates(value: Any, where: str) -> frozenset[date]:
    if not isinstance(value, list):
        raise CalendarFileError(f'{where} should be a list of ISO dates such as "2027-02-07"')
    days: set[date] = set()
    for item in value:
        try:
            days.add(date.fromisoformat(item))
        except (TypeError, ValueError):
            raise CalendarFileError(f'{where}: {item!r} is not an ISO date such as "2027-02-07"') from None
    return frozenset(days)


def _days(section: Any, where: str, allowed: Iterable[str] = ("holidays", "workdays")) -> Days:
    _object(section, where, allowed=allowed)
    holidays = _dates(section.get("holidays", []), f"{where}.holidays")
    workdays = _dates(section.get("workdays", []), f"{where}.workdays")
    both = sorted(holidays & workdays)
    if both:
        raise CalendarFileError(f"{where}: {both[0]} is listed both as a holiday and as a working day")
    return Days(holidays, workdays)


class Calendars:
    """The working-day calendar of every province as this node counts them: the same on every node given the same
    configuration. ``of(province)`` is the calendar on which a deadline binding ``province`` is counted."""

    def __init__(
        self,
        national: Days = Days(),
        *,
        years: Iterable[int] = (),
        regional: Mapping[str, Days] | None = None,
        official: bool = True,
    ) -> None:
        self.national = national
        self.years = frozenset(years)
        self.regional = dict(regional or {})
        self.official = official
        self._built: dict[str, WorkCalendar] = {}

    @classmethod
    def configured(
        cls, holidays: Iterable[date] = (), workdays: Iterable[date] = (), path: Path | None = None
    ) -> Calendars:
        """The official schedule, the node's national additions, and the calendar file at ``path`` if any."""
        loaded = load_calendar_file(path) if path is not None else CalendarFile()
        added_holidays, added_workdays = frozenset(holidays), frozenset(workdays)
        national = Days(
            (loaded.national.holidays - added_workdays) | added_holidays,
            (loaded.national.workdays - added_holidays) | added_workdays,
        )
        return cls(national, years=loaded.years, regional=loaded.provinces)

    def of(self, province: str) -> WorkCalendar:
        found = self._built.get(province)
        if found is None:
            regional = self.regional.get(province, Days())
            found = self._built[province] = WorkCalendar(
                holidays=(self.national.holidays - regional.workdays) | regional.holidays,
                extra_workdays=(self.national.workdays - regional.holidays) | regional.workdays,
                official=self.official,
                known_years=self.years,
                province=province,
            )
            UNKNOWN_YEAR_DEADLINES.labels(province)
        return found


@functools.cache
def load_calendar_file(path: Path) -> CalendarFile:
    """The calendar file at ``path``, read once per process."""
    return CalendarFile.load(path)

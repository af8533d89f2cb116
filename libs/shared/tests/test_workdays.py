"""Working-day calendars: the week, the State Council's schedules, regional days, and years nobody knows yet."""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from labornet.shared import workdays
from labornet.shared.settings import Settings
from labornet.shared.workdays import CalendarFile, CalendarFileError, Calendars, Days, WorkCalendar

SICHUAN, TIBET, NINGXIA = "510000", "540000", "640000"


def test_weekends_and_holidays_are_skipped() -> None:
    calendar = WorkCalendar.of(holidays=[date(2026, 10, 1), date(2026, 10, 2)])
    # Wednesday 30 Sept 2026 + 5 working days: Thu 1 and Fri 2 are holidays, the weekend skipped → Fri 9 Oct
    assert calendar.add_workdays(date(2026, 9, 30), 5) == date(2026, 10, 9)
    assert WorkCalendar().add_workdays(date(2026, 11, 20), 1) == date(2026, 11, 23)  # Friday → Monday


def test_make_up_workdays_count() -> None:
    calendar = WorkCalendar.of(extra_workdays=[date(2026, 11, 21)])  # a Saturday scheduled as a working day
    assert calendar.add_workdays(date(2026, 11, 20), 1) == date(2026, 11, 21)


def test_days_are_counted_in_china() -> None:
    sunday_late_utc = datetime(2026, 11, 22, 23, 0, tzinfo=UTC)  # Monday 07:00 in Beijing
    assert WorkCalendar().add_workdays(sunday_late_utc, 1) == date(2026, 11, 24)
    assert WorkCalendar().workdays_between(date(2026, 11, 20), date(2026, 11, 27)) == 5


def test_overdue_after_the_last_allowed_day() -> None:
    filed = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # Monday
    calendar = WorkCalendar()
    assert not calendar.overdue(filed, 5, datetime(2026, 11, 30, 10, 0, tzinfo=UTC))  # the fifth working day
    assert calendar.overdue(filed, 5, datetime(2026, 12, 1, 1, 0, tzinfo=UTC))


# The official schedules -----------------------------------------------------------------------------------------
#
# The State Council General Office's notices on the holiday arrangements (国务院办公厅关于2025年/2026年部分节假日
# 安排的通知), as the chinesecalendar package carries them. The start day itself never counts.


@pytest.mark.parametrize(
    ("friday", "due", "reasoning"),
    [
        (
            date(2025, 1, 24),
            date(2025, 2, 7),
            # 2025 Spring Festival: 28 Jan (Tue, New Year's Eve) to 4 Feb (Tue) off; Sun 26 Jan and Sat 8 Feb worked.
            "Sun 26 Jan (make-up) 1, Mon 27 Jan 2, 28 Jan-4 Feb off, Wed 5 Feb 3, Thu 6 Feb 4, Fri 7 Feb 5",
        ),
        (
            date(2025, 9, 26),
            date(2025, 10, 10),
            # 2025 National Day and Mid-Autumn: 1 Oct (Wed) to 8 Oct (Wed) off; Sun 28 Sep and Sat 11 Oct worked.
            "Sun 28 Sep (make-up) 1, Mon 29 Sep 2, Tue 30 Sep 3, 1-8 Oct off, Thu 9 Oct 4, Fri 10 Oct 5",
        ),
        (
            date(2026, 2, 13),
            date(2026, 2, 27),
            # 2026 Spring Festival: 15 Feb (Sun) to 23 Feb (Mon) off; Sat 14 Feb and Sat 28 Feb worked.
            "Sat 14 Feb (make-up) 1, 15-23 Feb off, Tue 24 Feb 2, Wed 25 3, Thu 26 4, Fri 27 Feb 5",
        ),
        (
            date(2026, 9, 25),
            date(2026, 10, 9),
            # 2026 Mid-Autumn: 25 Sep (Fri) to 27 Sep (Sun) off; National Day: 1 Oct (Thu) to 7 Oct (Wed) off;
            # Sun 20 Sep and Sat 10 Oct worked.
            "26-27 Sep off, Mon 28 Sep 1, Tue 29 2, Wed 30 3, 1-7 Oct off, Thu 8 Oct 4, Fri 9 Oct 5",
        ),
    ],
    ids=["spring-festival-2025", "national-day-2025", "spring-festival-2026", "national-day-2026"],
)
def test_five_working_days_from_the_friday_before_a_long_holiday(friday: date, due: date, reasoning: str) -> None:
    assert friday.weekday() == 4
    calendar = Calendars().of(SICHUAN)
    assert calendar.add_workdays(friday, 5) == due, reasoning
    assert calendar.workdays_between(friday, due) == 5
    assert WorkCalendar().add_workdays(friday, 5) < due, "counted by the week alone the limit would end too early"


def test_the_official_schedule_has_make_up_working_days() -> None:
    calendar = Calendars().of(SICHUAN)
    assert calendar.is_workday(date(2026, 2, 14)) and calendar.is_workday(date(2026, 2, 28))  # Saturdays worked
    assert not calendar.is_workday(date(2026, 2, 16)) and not calendar.is_workday(date(2026, 2, 21))
    assert calendar.is_workday(date(2026, 11, 26)) and not calendar.is_workday(date(2026, 11, 28))


# Regional days and configuration --------------------------------------------------------------------------------

# A day Tibet alone gives off (an illustrative date, as an operator would configure it), and a day Ningxia works.
TIBET_ONLY = Calendars(regional={TIBET: Days(holidays=frozenset({date(2026, 11, 16)}))})


def test_a_tibet_only_holiday_moves_a_tibet_deadline_and_not_a_sichuan_one() -> None:
    friday = date(2026, 11, 13)
    assert TIBET_ONLY.of(SICHUAN).add_workdays(friday, 1) == date(2026, 11, 16)  # Monday
    assert TIBET_ONLY.of(TIBET).add_workdays(friday, 1) == date(2026, 11, 17)  # Monday is Tibet's holiday
    assert TIBET_ONLY.of(TIBET).add_workdays(friday, 5) == date(2026, 11, 23)
    assert TIBET_ONLY.of(SICHUAN).add_workdays(friday, 5) == date(2026, 11, 20)
    assert TIBET_ONLY.of(TIBET) is TIBET_ONLY.of(TIBET), "built once per province"


def test_regional_days_override_the_national_ones(tmp_path: Path) -> None:
    path = tmp_path / "calendar.json"
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "national": {"holidays": ["2026-12-01"]},
                "provinces": {
                    NINGXIA: {"holidays": ["2026-12-02"], "workdays": ["2026-12-01", "2026-12-05"]},
                    TIBET: {"holidays": ["2026-02-14"]},
                },
            }
        )
    )
    settings = Settings(province=NINGXIA, calendar_path=path, holidays=[date(2026, 12, 3)])  # type: ignore[call-arg]
    ningxia, sichuan, tibet = (settings.calendars().of(code) for code in (NINGXIA, SICHUAN, TIBET))
    assert settings.calendar().province == NINGXIA
    # 1 Dec: a national holiday from the file that Ningxia works; 2 Dec Ningxia's own; 3 Dec the node's setting
    assert [ningxia.is_workday(date(2026, 12, d)) for d in range(1, 6)] == [True, False, False, True, True]
    assert [sichuan.is_workday(date(2026, 12, d)) for d in range(1, 6)] == [False, True, False, True, False]
    # a regional holiday on a national make-up Saturday
    assert not tibet.is_workday(date(2026, 2, 14)) and sichuan.is_workday(date(2026, 2, 14))
    assert Settings(province=NINGXIA).calendar().is_workday(date(2026, 12, 2))  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "should be a JSON object"),
        ({"national": {}}, "lacks version"),
        ({"version": 2}, "unsupported version 2"),
        ({"version": 1, "regions": {}}, "unknown field(s) regions"),
        ({"version": 1, "national": {"holidays": ["2027-02-30"]}}, "'2027-02-30' is not an ISO date"),
        ({"version": 1, "national": {"holidays": "2027-01-01"}}, "national.holidays should be a list"),
        ({"version": 1, "national": {"years": ["2027"]}}, "years should be a list of years"),
        ({"version": 1, "provinces": {"5400": {}}}, "'5400' should be a province code"),
        ({"version": 1, "provinces": {TIBET: {"years": [2027]}}}, "provinces.540000 has unknown field(s) years"),
        (
            {"version": 1, "provinces": {TIBET: {"holidays": ["2027-02-08"], "workdays": ["2027-02-08"]}}},
            "2027-02-08 is listed both as a holiday and as a working day",
        ),
    ],
)
def test_a_bad_calendar_file_says_what_is_wrong(document: object, message: str) -> None:
    with pytest.raises(CalendarFileError, match="calendar file") as caught:
        CalendarFile.parse(document)
    assert message in str(caught.value)


def test_an_unreadable_calendar_file_names_itself(tmp_path: Path) -> None:
    path = tmp_path / "calendar.json"
    path.write_text("{not json")
    with pytest.raises(CalendarFileError, match="not valid JSON"):
        CalendarFile.load(path)
    with pytest.raises(CalendarFileError, match="cannot be read"):
        CalendarFile.load(tmp_path / "missing.json")


# Years the calendar does not know ---------------------------------------------------------------------------------


def test_a_year_without_a_schedule_is_counted_by_the_week_with_a_warning(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workdays, "_warned", set())
    assert workdays.official_workday(date(2027, 1, 4)) is None, "chinesecalendar knows 2004 to 2026"
    labels = {"province": SICHUAN}
    before = REGISTRY.get_sample_value("labornet_calendar_unknown_year_deadlines_total", labels) or 0
    calendar = Calendars().of(SICHUAN)
    with caplog.at_level(logging.WARNING, logger="labornet.shared.workdays"):
        # Thursday 31 Dec 2026 + 1: Friday 1 Jan 2027 is New Year's Day, but 2027 is unknown, so it counts
        assert calendar.add_workdays(date(2026, 12, 31), 1) == date(2027, 1, 1)
        assert calendar.add_workdays(date(2026, 12, 31), 2) == date(2027, 1, 4)
        assert calendar.workdays_between(date(2026, 12, 31), date(2027, 1, 8)) == 6
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "once per province and year"
    assert "no national holiday schedule for 2027" in warnings[0] and "510000" in warnings[0]
    assert "LABORNET_CALENDAR_PATH" in warnings[0]
    after = REGISTRY.get_sample_value("labornet_calendar_unknown_year_deadlines_total", labels)
    assert after == before + 3, "every count that reached the unknown year"

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="labornet.shared.workdays"):
        assert calendar.add_workdays(date(2026, 12, 24), 1) == date(2026, 12, 25)
        assert WorkCalendar().add_workdays(date(2026, 12, 31), 1) == date(2027, 1, 1), "the week alone: no warning"
    assert caplog.records == []


def test_the_calendar_file_can_give_a_year_chinesecalendar_does_not_know(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(workdays, "_warned", set())
    path = tmp_path / "calendar.json"
    path.write_text(json.dumps({"version": 1, "national": {"years": [2027], "holidays": ["2027-01-01"]}}))
    with caplog.at_level(logging.WARNING, logger="labornet.shared.workdays"):
        known = Calendars.configured(path=path).of(SICHUAN)
        assert known.add_workdays(date(2026, 12, 31), 1) == date(2027, 1, 4)
        assert known.add_workdays(date(2027, 1, 8), 1) == date(2027, 1, 11)
    assert caplog.records == []

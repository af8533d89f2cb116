from datetime import UTC, date, datetime

from labornet.shared.workdays import WorkCalendar


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

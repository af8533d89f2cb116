"""The transfer arithmetic (domain.md, transfer section): benefit duration from contribution years, the
transfer-out information sheet, the receiving province's recomputation, and the overdue rule.

Worked example used throughout: a Sichuan claimant with 2017-01…2020-12 actual and 2021-01…2022-12 former
migrant-worker contributions (72 months, 6 years → 18 months of benefit), 3 months already paid: 15 months remain,
and 15 × 1870.00 × 1.5 = 42075.00 CNY moves with the relationship.
"""

from __future__ import annotations

from datetime import date
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labornet.insurance.domain.rules import (
    Period,
    PeriodKind,
    PersonStatus,
    entitlement_at,
    entitlement_months,
    overlapping,
    total_months,
    transfer_out_sheet,
)
from labornet.insurance.domain.transfer import Side, State, is_overdue

SC = "510000"
EXAMPLE = [
    Period(date(2017, 1, 1), date(2020, 12, 1), PeriodKind.ACTUAL, SC),
    Period(date(2021, 1, 1), date(2022, 12, 1), PeriodKind.FORMER_MIGRANT, SC),
]


@pytest.mark.parametrize(
    ("months", "entitled"),
    [(0, 0), (11, 0), (12, 12), (59, 12), (60, 18), (119, 18), (120, 24), (480, 24)],
)
def test_benefit_duration_follows_article_17_at_every_boundary(months: int, entitled: int) -> None:
    assert entitlement_months(months) == entitled


def test_the_worked_example_sheet() -> None:
    sheet = transfer_out_sheet(
        EXAMPLE,
        sending_province=SC,
        status=PersonStatus.CLAIMING,
        months_used=0,
        benefit_months_paid=3,
        monthly_standard=Decimal("1870.00"),
    )
    assert (sheet.cumulative_months, sheet.actual_months, sheet.former_migrant_months, sheet.deemed_months) == (
        72,
        48,
        24,
        0,
    )
    assert (sheet.months_available, sheet.benefit_months_remaining) == (72, 15)
    assert sheet.fund_due == Decimal("42075.00")
    at_zhejiang = entitlement_at(EXAMPLE, months_used=0, benefit_months_paid=3, monthly_standard=Decimal("2090"))
    assert (at_zhejiang.entitled_months, at_zhejiang.remaining_months, at_zhejiang.remaining_amount) == (
        18,
        15,
        Decimal("31350.00"),
    )


def test_an_employed_mover_moves_the_relationship_but_no_money() -> None:
    sheet = transfer_out_sheet(
        EXAMPLE,
        sending_province=SC,
        status=PersonStatus.EMPLOYED,
        months_used=0,
        benefit_months_paid=0,
        monthly_standard=Decimal("1870.00"),
    )
    assert (sheet.cumulative_months, sheet.fund_due, sheet.benefit_months_remaining) == (72, Decimal("0.00"), 0)


def test_under_a_year_contributed_at_the_sending_place_moves_no_money() -> None:
    periods = [
        Period(date(2015, 1, 1), date(2020, 12, 1), PeriodKind.ACTUAL, "330000"),  # carried in from Zhejiang
        Period(date(2021, 1, 1), date(2021, 11, 1), PeriodKind.ACTUAL, SC),  # 11 months in Sichuan
    ]
    sheet = transfer_out_sheet(
        periods,
        sending_province=SC,
        status=PersonStatus.CLAIMING,
        months_used=0,
        benefit_months_paid=0,
        monthly_standard=Decimal("1870.00"),
    )
    assert sheet.benefit_months_remaining == 18  # 72 + 11 = 83 months: 6.9 years of contributions
    assert sheet.fund_due == Decimal("0.00")


def test_overlapping_periods_are_found() -> None:
    clash = overlapping([*EXAMPLE, Period(date(2020, 6, 1), date(2021, 2, 1), PeriodKind.DEEMED, SC)])
    assert clash is not None and clash[1].start == date(2020, 6, 1)
    assert overlapping(EXAMPLE) is None


months = st.integers(min_value=0, max_value=40 * 12)


@st.composite
def histories(draw: st.DrawFn) -> list[Period]:
    """Non-overlapping periods of any kind, in two provinces."""
    periods, cursor = [], date(1990, 1, 1)
    for _ in range(draw(st.integers(0, 8))):
        gap = draw(st.integers(0, 24))
        length = draw(st.integers(1, 60))
        start_index = cursor.year * 12 + cursor.month - 1 + gap
        end_index = start_index + length - 1
        start = date(start_index // 12, start_index % 12 + 1, 1)
        end = date(end_index // 12, end_index % 12 + 1, 1)
        kind = draw(st.sampled_from(list(PeriodKind)))
        periods.append(Period(start, end, kind, draw(st.sampled_from([SC, "330000"]))))
        next_index = end_index + 1
        cursor = date(next_index // 12, next_index % 12 + 1, 1)
    return periods


@given(months, months)
def test_duration_never_shrinks_as_contributions_grow(a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert entitlement_months(low) <= entitlement_months(high)


@given(
    histories(),
    st.sampled_from([PersonStatus.CLAIMING, PersonStatus.EMPLOYED, PersonStatus.SUSPENDED]),
    st.integers(0, 120),
    st.integers(0, 24),
    st.decimals(min_value=Decimal("500"), max_value=Decimal("5000"), places=2),
)
def test_the_sheet_never_loses_or_invents_a_month_or_a_yuan(
    periods: list[Period], status: PersonStatus, used: int, paid: int, standard: Decimal
) -> None:
    sheet = transfer_out_sheet(
        periods,
        sending_province=SC,
        status=status,
        months_used=used,
        benefit_months_paid=paid,
        monthly_standard=standard,
    )
    assert overlapping(periods) is None
    assert sheet.cumulative_months == total_months(periods)
    assert sheet.cumulative_months == sheet.actual_months + sheet.deemed_months + sheet.former_migrant_months
    assert sheet.months_available == max(sheet.cumulative_months - used, 0)
    assert 0 <= sheet.benefit_months_remaining <= entitlement_months(sheet.months_available)
    if status != PersonStatus.CLAIMING or total_months(periods, province=SC) < 12:
        assert sheet.fund_due == 0
    else:
        exact = sheet.benefit_months_remaining * standard * Decimal("1.5")
        assert sheet.fund_due == exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP), "rounded half up, to the fen"
    # the receiving side, recomputing from the same history, finds the same months
    recomputed = entitlement_at(periods, months_used=used, benefit_months_paid=paid, monthly_standard=standard)
    assert recomputed.months_available == sheet.months_available
    if status == PersonStatus.CLAIMING:
        assert recomputed.remaining_months == sheet.benefit_months_remaining


TODAY = date(2026, 11, 23)
LATER, EARLIER = date(2026, 11, 30), date(2026, 11, 20)


@pytest.mark.parametrize(
    ("side", "state", "answer_due", "complete_due", "expected"),
    [
        (Side.SENDING, State.RECEIVED, EARLIER, LATER, True),  # contact letter unanswered past 5 working days
        (Side.SENDING, State.SHEET_SENT, EARLIER, LATER, False),  # answered in time; the total limit still runs
        (Side.RECEIVING, State.AWAITING_ANSWER, EARLIER, LATER, False),  # the answer limit binds the sender
        (Side.RECEIVING, State.AWAITING_ANSWER, EARLIER, EARLIER, True),  # past the 20-day total limit
        (Side.RECEIVING, State.COMPLETED, EARLIER, EARLIER, False),  # finished cases are never overdue
        (Side.SENDING, State.RECEIVED, TODAY, TODAY, False),  # the last allowed day is not late yet
    ],
)
def test_overdue_rule(side: Side, state: State, answer_due: date, complete_due: date, expected: bool) -> None:
    assert is_overdue(side=side, state=state, answer_due=answer_due, complete_due=complete_due, today=TODAY) is expected

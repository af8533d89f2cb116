"""The arithmetic of unemployment insurance: contribution months, benefit entitlement, the money that moves.

Rules (see docs/insurance.md for worked examples):

* contribution periods of one person add up across provinces (人社厅发〔2021〕85号);
* benefit duration from cumulative contribution years (失业保险条例 art. 17): 1 to <5 years → 12 months,
  5 to <10 → 18, ≥10 → 24; under one year → no entitlement (art. 14);
* months already used for an earlier claim do not count again; benefit months already paid reduce what remains;
* the money that moves (劳动保障部令第8号; the 2021 formula is unverified, hence configurable): for a person
  entitled to benefit, remaining months × the sending province's monthly standard × 1.5 (benefit plus medical and
  training subsidies at 50 %); for an employed mover, or when the person contributed under one year at the
  sending place, nothing but the relationship moves.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum


class PeriodKind(StrEnum):
    ACTUAL = "actual"
    DEEMED = "deemed"  # 视同缴费
    FORMER_MIGRANT = "former-migrant"  # contributions made as a migrant worker under the older rules


class PersonStatus(StrEnum):
    EMPLOYED = "insured-employed"
    CLAIMING = "unemployed-claiming"
    SUSPENDED = "suspended"
    TRANSFERRING = "transferring-out"  # the sheet has been sent: frozen, no longer an active relationship
    TRANSFERRED = "transferred-out"


ACTIVE = (PersonStatus.EMPLOYED, PersonStatus.CLAIMING)
CENT = Decimal("0.01")


@dataclass(frozen=True)
class Period:
    start: date  # first day of the first month
    end: date  # first day of the last month (inclusive)
    kind: PeriodKind
    province: str  # where the contributions were paid

    @property
    def months(self) -> int:
        return (self.end.year - self.start.year) * 12 + self.end.month - self.start.month + 1


def first_of_month(value: date) -> date:
    return value.replace(day=1)


def overlapping(periods: Sequence[Period]) -> tuple[Period, Period] | None:
    """Two periods that cover the same month, if any (a month is contributed once)."""
    ordered = sorted(periods, key=lambda p: p.start)
    for earlier, later in itertools.pairwise(ordered):
        if later.start <= earlier.end:
            return earlier, later
    return None


def total_months(periods: Iterable[Period], kind: PeriodKind | None = None, province: str | None = None) -> int:
    return sum(
        p.months for p in periods if (kind is None or p.kind == kind) and (province is None or p.province == province)
    )


def entitlement_months(contribution_months: int) -> int:
    """Maximum benefit duration (art. 17) for the given months of contributions."""
    years = contribution_months / 12
    if years < 1:
        return 0
    if years < 5:
        return 12
    if years < 10:
        return 18
    return 24


def money(value: Decimal | int | str) -> Decimal:
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class TransferOutSheet:
    """What the sending office answers (转出信息表)."""

    cumulative_months: int
    actual_months: int
    deemed_months: int
    former_migrant_months: int
    months_used: int
    months_available: int
    benefit_months_paid: int
    benefit_months_remaining: int
    monthly_standard: Decimal
    fund_due: Decimal


def transfer_out_sheet(
    periods: Sequence[Period],
    *,
    sending_province: str,
    status: PersonStatus,
    months_used: int,
    benefit_months_paid: int,
    monthly_standard: Decimal,
    fund_multiplier: Decimal = Decimal("1.5"),
) -> TransferOutSheet:
    cumulative = total_months(periods)
    available = max(cumulative - months_used, 0)
    claiming = status == PersonStatus.CLAIMING
    remaining = max(entitlement_months(available) - benefit_months_paid, 0) if claiming else 0
    contributed_here = total_months(periods, province=sending_province)
    fund = money(remaining * monthly_standard * fund_multiplier) if claiming and contributed_here >= 12 else money(0)
    return TransferOutSheet(
        cumulative_months=cumulative,
        actual_months=total_months(periods, PeriodKind.ACTUAL),
        deemed_months=total_months(periods, PeriodKind.DEEMED),
        former_migrant_months=total_months(periods, PeriodKind.FORMER_MIGRANT),
        months_used=months_used,
        months_available=available,
        benefit_months_paid=benefit_months_paid,
        benefit_months_remaining=remaining,
        monthly_standard=money(monthly_standard),
        fund_due=fund,
    )


@dataclass(frozen=True)
class Entitlement:
    """The receiving province's recomputation under its own standard."""

    months_available: int
    entitled_months: int
    remaining_months: int
    monthly_standard: Decimal
    remaining_amount: Decimal


def entitlement_at(
    periods: Sequence[Period], *, months_used: int, benefit_months_paid: int, monthly_standard: Decimal
) -> Entitlement:
    available = max(total_months(periods) - months_used, 0)
    entitled = entitlement_months(available)
    remaining = max(entitled - benefit_months_paid, 0)
    return Entitlement(available, entitled, remaining, money(monthly_standard), money(remaining * monthly_standard))

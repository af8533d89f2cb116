"""The arithmetic of unemployment insurance: contribution months, benefit entitlement, the money that moves.

Rules (docs/insurance-rules.md has them with their sources and worked examples):

* contribution periods of one person add up across provinces (人社厅发〔2021〕85号);
* benefit duration from cumulative contribution years (失业保险条例 art. 17 first paragraph): 1 to <5 years → 12
  months, 5 to <10 → 18, ≥10 → 24; under one year → no new entitlement (art. 14);
* months already used for an earlier claim do not count again (art. 17 second paragraph: contribution time is
  counted anew); the unclaimed months of that earlier entitlement are carried and combined with the new one, the
  combined total capped at 24 months; benefit months already paid reduce what remains;
* the money that moves (劳动保障部令第8号; the 2021 formula is unverified, hence configurable): for a person
  entitled to benefit, remaining months × the sending province's monthly standard × 1.5 (benefit plus medical and
  training subsidies at 50 %); for an employed mover, or when the person contributed under one year at the
  sending place, nothing but the relationship moves — unless the claimant's fund came to the sending place with
  the relationship: then it moves on with it, so that one province at a time holds the money of an entitlement.
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
MAX_COMBINED_MONTHS = 24  # art. 17 second paragraph: the combined entitlement never exceeds 24 months


@dataclass(frozen=True)
class Period:
    start: date  # first day of the first month
    end: date  # first day of the last month (inclusive)
    kind: PeriodKind
    province: str  # where the contributions were paid
    employer_credit_code: str | None = None

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


def combined_entitlement(available_months: int, earlier_unclaimed_months: int) -> int:
    """The benefit duration after art. 17 second paragraph: the new entitlement (from the months not used by an
    earlier claim) plus the unclaimed months of the earlier one, at most 24 months."""
    return min(entitlement_months(available_months) + earlier_unclaimed_months, MAX_COMBINED_MONTHS)


def unclaimed_after(entitled_months: int, benefit_months_paid: int) -> int:
    """What an entitlement leaves unclaimed when the claim ends (re-employment): carried to the next claim."""
    return max(entitled_months - benefit_months_paid, 0)


@dataclass(frozen=True)
class BenefitHistory:
    """What moves with the worker besides the contribution periods, each counted once wherever it is held.

    ``months_used``: contribution months an earlier, concluded claim was based on (they do not count again);
    ``earlier_unclaimed_months``: the months of that claim's entitlement never drawn (art. 17 second paragraph);
    ``benefit_months_paid``: the months drawn of the current entitlement.
    """

    months_used: int = 0
    benefit_months_paid: int = 0
    earlier_unclaimed_months: int = 0

    def __add__(self, other: BenefitHistory) -> BenefitHistory:
        return BenefitHistory(
            self.months_used + other.months_used,
            self.benefit_months_paid + other.benefit_months_paid,
            min(self.earlier_unclaimed_months + other.earlier_unclaimed_months, MAX_COMBINED_MONTHS),
        )


NO_HISTORY = BenefitHistory()


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
    earlier_unclaimed_months: int = 0
    entitled_months: int = 0

    @property
    def history(self) -> BenefitHistory:
        """What the receiving province takes over, exactly as the sending province held it."""
        return BenefitHistory(self.months_used, self.benefit_months_paid, self.earlier_unclaimed_months)


def transfer_out_sheet(
    periods: Sequence[Period],
    *,
    sending_province: str,
    status: PersonStatus,
    months_used: int,
    benefit_months_paid: int,
    monthly_standard: Decimal,
    fund_multiplier: Decimal = Decimal("1.5"),
    earlier_unclaimed_months: int = 0,
    fund_held: bool = False,
) -> TransferOutSheet:
    """The sheet; ``fund_held``: the claimant's fund came here with the relationship (it moves on with it)."""
    cumulative = total_months(periods)
    available = max(cumulative - months_used, 0)
    entitled = combined_entitlement(available, earlier_unclaimed_months)
    claiming = status == PersonStatus.CLAIMING
    remaining = max(entitled - benefit_months_paid, 0) if claiming else 0
    contributed_here = total_months(periods, province=sending_province)
    moves_money = claiming and (contributed_here >= 12 or fund_held)
    fund = money(remaining * monthly_standard * fund_multiplier) if moves_money else money(0)
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
        earlier_unclaimed_months=earlier_unclaimed_months,
        entitled_months=entitled,
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
    periods: Sequence[Period],
    *,
    months_used: int,
    benefit_months_paid: int,
    monthly_standard: Decimal,
    earlier_unclaimed_months: int = 0,
) -> Entitlement:
    available = max(total_months(periods) - months_used, 0)
    entitled = combined_entitlement(available, earlier_unclaimed_months)
    remaining = max(entitled - benefit_months_paid, 0)
    return Entitlement(available, entitled, remaining, money(monthly_standard), money(remaining * monthly_standard))

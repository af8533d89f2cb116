"""Migrant-worker rights cases (wage arrears first): what is filed, how a case moves, and its time limits.

A case is filed at the complainant's **home** province, which refers it to the province of the **work place**
(保障农民工工资支付条例: the labour department where the work was done has jurisdiction). Both provinces hold the
same case. At any moment exactly one of them, the **holder**, may change it; every change raises ``version`` and
appends to the timeline, and the holder sends the whole case to the other side, which applies it only when its
version is newer than the one it holds. The holder hands the case over by changing it: a referral hands it to the
handling province, a decline hands it back. So both provinces see the same timeline, replays and reordered
messages change nothing, and a case ends in exactly one terminal state.

::

    referred ──accept──▶ investigating ──resolve (amount recovered)──▶ resolved
       │                  │     ▲ update, extend (once, +30 working days)
       │                  └──close (referred to police / unfounded)──▶ closed
       └──decline (reason)──▶ returned ──refer (redirect to another province, may correct the work place)──▶ …
                                 └──close──▶ closed
    referred | investigating | returned ──withdraw (the complainant)──▶ closed (withdrawn)
    referred | investigating, past a limit ──escalate (reason)──▶ the same status, escalated

Time limits (working days, configuration with these defaults): the handling province decides on acceptance
within 5 working days of the referral; the investigation finishes within 60 working days of acceptance, extendable
once by 30 while the limit has not passed. Each limit is counted on the handling province's calendar, the province
bound by it, whichever node counts it. A case past a limit is overdue: it is no longer extended, only escalated
(to the supervising labour department, with a reason), once per limit missed; it may still be accepted, resolved
or closed.

Everything here is plain rules over immutable values; storage, messages and HTTP live elsewhere.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from labornet.shared.bounds import PositiveInt32
from labornet.shared.clock import china_date, today_in_china
from labornet.shared.identifiers import (
    CreditCodeStr,
    DivisionCodeStr,
    PhoneStr,
    ProvinceCodeStr,
    ResidentIdStr,
    mask_name,
    mask_phone,
    mask_resident_id,
)
from labornet.shared.workdays import Calendars

# Directed messages between the home and the handling province (each carries the whole case).
REFERRED = "org.labornet.rights.case.referred.v1"
ACCEPTED = "org.labornet.rights.case.accepted.v1"
DECLINED = "org.labornet.rights.case.declined.v1"
UPDATED = "org.labornet.rights.case.updated.v1"
EXTENDED = "org.labornet.rights.case.extended.v1"
ESCALATED = "org.labornet.rights.case.escalated.v1"
RESOLVED = "org.labornet.rights.case.resolved.v1"
CLOSED = "org.labornet.rights.case.closed.v1"
# The complainant withdraws while the other province holds the case: a request, not a change.
WITHDRAWAL_REQUESTED = "org.labornet.rights.case.withdrawal-requested.v1"

MAX_AMOUNT = Decimal("100000000.00")  # one hundred million yuan
MAX_WORKERS = 100_000
MAX_EVIDENCE = 20
MAX_EVIDENCE_BYTES = 100 * 1024 * 1024
EARLIEST_PERIOD = date(1990, 1, 1)


class Category(StrEnum):
    WAGE_ARREARS = "wage-arrears"
    UNPAID_SOCIAL_INSURANCE = "unpaid-social-insurance"
    WORK_INJURY = "work-injury"
    CONTRACT_DISPUTE = "contract-dispute"


class Sector(StrEnum):
    CONSTRUCTION = "construction"
    OTHER = "other"


class Status(StrEnum):
    REFERRED = "referred"
    INVESTIGATING = "investigating"
    RETURNED = "returned"
    RESOLVED = "resolved"
    CLOSED = "closed"


TERMINAL = frozenset({Status.RESOLVED, Status.CLOSED})


class ClosureReason(StrEnum):
    REFERRED_TO_POLICE = "referred-to-police"  # suspected criminal refusal to pay (a status, not a message)
    UNFOUNDED = "unfounded"
    WITHDRAWN = "withdrawn"


class EntryKind(StrEnum):
    FILED = "filed"
    REFERRED = "referred"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    UPDATED = "updated"
    EXTENDED = "extended"
    ESCALATED = "escalated"
    RESOLVED = "resolved"
    CLOSED = "closed"


# The message that carries a change, by the kind of the change's last timeline entry.
MESSAGE_TYPES: dict[EntryKind, str] = {
    EntryKind.REFERRED: REFERRED,
    EntryKind.ACCEPTED: ACCEPTED,
    EntryKind.DECLINED: DECLINED,
    EntryKind.UPDATED: UPDATED,
    EntryKind.EXTENDED: EXTENDED,
    EntryKind.ESCALATED: ESCALATED,
    EntryKind.RESOLVED: RESOLVED,
    EntryKind.CLOSED: CLOSED,
}
CASE_MESSAGE_TYPES = tuple(MESSAGE_TYPES.values())


class Overdue(StrEnum):
    ACCEPTANCE = "acceptance"
    INVESTIGATION = "investigation"


class CaseRuleError(Exception):
    """A change the case's rules do not allow now (wrong state, already extended…); the message says why."""


class NotCaseHolder(CaseRuleError):
    """The acting province has no standing for this change (another province handles the case)."""


# Field types ---------------------------------------------------------------------------------------------------

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _sha256(value: str) -> str:
    digest = value.strip().lower()
    if not _SHA256.match(digest):
        raise ValueError(f"SHA-256 {value[:80]!r}: expected 64 hexadecimal characters (the hex digest of the document)")
    return digest


Sha256Str = Annotated[str, AfterValidator(_sha256)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Note = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
CENT = Decimal("0.01")


def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT)


Cents = Annotated[Decimal, Field(max_digits=11, decimal_places=2), AfterValidator(_cents)]
Money = Annotated[Decimal, Field(gt=0, le=MAX_AMOUNT, max_digits=11, decimal_places=2), AfterValidator(_cents)]


# What a case holds ---------------------------------------------------------------------------------------------


class Complainant(BaseModel):
    """The person who complains. Only the home and the handling province ever hold these values."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    resident_id: str = Field(max_length=18, description="masked wherever the caller may not see it")
    name: str = Field(max_length=50)
    phone: str = Field(max_length=20)


class Employer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
    name: ShortText
    credit_code: CreditCodeStr
    address: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
    province: ProvinceCodeStr = Field(description="where the employer is registered")


class WorkPlace(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
    division_code: DivisionCodeStr = Field(description="prefecture or county code of where the work was done")
    site: str | None = Field(None, max_length=200, description="e.g. the construction site's name")


class Period(BaseModel):
    """The months worked and not paid (both days included)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    start: date
    end: date

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end < self.start:
            raise ValueError(f"period end {self.end} is before its start {self.start}")
        if self.start < EARLIEST_PERIOD:
            raise ValueError(f"period start {self.start} is before {EARLIEST_PERIOD}")
        today = today_in_china()
        if self.end > today:
            raise ValueError(f"period end {self.end} is in the future (today is {today} in China)")
        return self


class Evidence(BaseModel):
    """A document's fingerprint. The file itself stays at the filing node; only name, hash and size travel."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
    name: ShortText
    sha256: Sha256Str
    size: int = Field(gt=0, le=MAX_EVIDENCE_BYTES, description="bytes")


class Entry(BaseModel):
    """One step of the timeline, written by the province that held the case."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    seq: PositiveInt32
    at: datetime
    province: str = Field(pattern=r"^\d{2}0000$")
    actor: str = Field(max_length=220, description="complainant, or officer:<sub>")
    kind: EntryKind
    status: Status = Field(description="the case's status after this step")
    note: str | None = Field(None, max_length=2000)
    details: dict[str, Any] = Field(default_factory=dict)


class Case(BaseModel):
    """The whole case as both provinces hold it and as the directed messages carry it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(max_length=40)
    version: PositiveInt32
    home_province: str = Field(pattern=r"^\d{2}0000$")
    handling_province: str | None = Field(pattern=r"^\d{2}0000$", description="null while returned")
    holder: str = Field(pattern=r"^\d{2}0000$", description="the one province that may change the case now")
    status: Status
    closure_reason: ClosureReason | None = None
    category: Category
    sector: Sector
    complainant: Complainant
    employer: Employer
    work_place: WorkPlace
    work_place_name: str = Field(max_length=100)
    period: Period
    amount_owed: Cents
    workers_affected: int = Field(ge=1, le=MAX_WORKERS)
    evidence: list[Evidence] = Field(max_length=MAX_EVIDENCE)
    facts: str = Field(max_length=5000)
    filed_at: datetime
    referred_at: datetime | None = None
    acceptance_due: date | None = None
    accepted_at: datetime | None = None
    investigation_due: date | None = None
    extended: bool = False
    concluded_at: datetime | None = None
    amount_recovered: Cents | None = None
    workers_paid: int | None = None
    declined_by: list[str] = Field(default_factory=list)
    timeline: list[Entry] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if [entry.seq for entry in self.timeline] != list(range(1, len(self.timeline) + 1)):
            raise ValueError(f"case {self.id}: the timeline must be numbered 1, 2, 3… without gaps")
        if self.timeline[-1].status != self.status:
            raise ValueError(f"case {self.id} is {self.status}, but its last step left it {self.timeline[-1].status}")
        if self.holder not in (self.home_province, self.handling_province):
            raise ValueError(f"case {self.id}: holder {self.holder} is neither its home nor its handling province")
        return self

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def last_entry(self) -> Entry:
        return self.timeline[-1]


# Filing --------------------------------------------------------------------------------------------------------


class ComplainantIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    resident_id: ResidentIdStr | None = Field(
        None, description="officers: whom the case is for; workers file for themselves (taken from the token)"
    )
    name: Name
    phone: PhoneStr
    home_province: ProvinceCodeStr | None = Field(
        None, description="the province the case is filed in (this node); given only to be checked"
    )


class CaseDraft(BaseModel):
    """What a worker (or an officer on a worker's behalf) files."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    complainant: ComplainantIn
    category: Category = Category.WAGE_ARREARS
    sector: Sector
    employer: Employer
    work_place: WorkPlace
    period: Period
    amount_owed: Money = Field(description="CNY")
    workers_affected: int = Field(1, ge=1, le=MAX_WORKERS)
    evidence: list[Evidence] = Field(default_factory=list, max_length=MAX_EVIDENCE)
    facts: str = Field("", max_length=5000, description="what happened, in the complainant's words")

    @model_validator(mode="after")
    def _distinct_evidence(self) -> Self:
        seen: set[str] = set()
        for item in self.evidence:
            if item.sha256 in seen:
                raise ValueError(f"evidence {item.sha256} is listed twice")
            seen.add(item.sha256)
        return self


def new_case_id(province: str) -> str:
    return f"{province}-R-{uuid.uuid4().hex[:16].upper()}"


# Time limits ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deadlines:
    """The statutory limits in working days, each counted on the calendar of ``province``, the handling province
    bound by it (weekends, public holidays, make-up days and the province's own days)."""

    calendars: Calendars
    acceptance_days: int = 5
    investigation_days: int = 60
    extension_days: int = 30

    def acceptance_due(self, referred_at: datetime, province: str) -> date:
        return self.calendars.of(province).add_workdays(referred_at, self.acceptance_days)

    def investigation_due(self, accepted_at: datetime, province: str) -> date:
        return self.calendars.of(province).add_workdays(accepted_at, self.investigation_days)

    def extended(self, due: date, province: str) -> date:
        return self.calendars.of(province).add_workdays(due, self.extension_days)


def overdue(case: Case, today: date) -> Overdue | None:
    """Which limit an open case has passed: the last allowed day lies before ``today`` (in China)."""
    if case.status == Status.REFERRED and case.acceptance_due is not None and today > case.acceptance_due:
        return Overdue.ACCEPTANCE
    if case.status == Status.INVESTIGATING and case.investigation_due is not None and today > case.investigation_due:
        return Overdue.INVESTIGATION
    return None


_LIMIT_STATUS = {Overdue.ACCEPTANCE: Status.REFERRED, Overdue.INVESTIGATION: Status.INVESTIGATING}


def last_allowed_day(case: Case, limit: Overdue) -> date | None:
    return case.acceptance_due if limit == Overdue.ACCEPTANCE else case.investigation_due


def escalated(case: Case) -> Overdue | None:
    """The limit the case was escalated for, while that limit still runs (same status, same due date)."""
    for entry in reversed(case.timeline):
        if entry.kind == EntryKind.ESCALATED:
            limit = Overdue(entry.details["deadline"])
            current = case.status == _LIMIT_STATUS[limit] and entry.details.get("due") == _iso(
                last_allowed_day(case, limit)
            )
            return limit if current else None
    return None


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day is not None else None


# Changes -------------------------------------------------------------------------------------------------------


def officer(sub: str) -> str:
    return f"officer:{sub}"


COMPLAINANT = "complainant"


def _change(
    case: Case,
    *,
    province: str,
    actor: str,
    at: datetime,
    kind: EntryKind,
    status: Status,
    note: str | None = None,
    details: Mapping[str, Any] | None = None,
    **fields: Any,
) -> Case:
    entry = Entry(
        seq=len(case.timeline) + 1,
        at=at,
        province=province,
        actor=actor,
        kind=kind,
        status=status,
        note=note,
        details=dict(details or {}),
    )
    return case.model_copy(
        update={"version": case.version + 1, "status": status, "timeline": [*case.timeline, entry], **fields}
    )


def _open_and_held(case: Case, province: str) -> None:
    if case.terminal:
        raise CaseRuleError(f"case {case.id} is {case.status}; a concluded case does not change")
    if case.holder != province:
        raise NotCaseHolder(f"case {case.id} is with province {case.holder} now; province {province} cannot change it")


def _handled_here(case: Case, province: str, *allowed: Status) -> None:
    if case.handling_province != province and not case.terminal:
        raise NotCaseHolder(
            f"case {case.id} is handled by {case.handling_province or 'no province (returned home)'}, not by {province}"
        )
    _open_and_held(case, province)
    if case.status not in allowed:
        wanted = " or ".join(allowed)
        raise CaseRuleError(f"case {case.id} is {case.status}; this needs a case that is {wanted}")


def open_case(
    draft: CaseDraft,
    *,
    case_id: str,
    home: str,
    resident_id: str,
    work_place_name: str,
    actor: str,
    at: datetime,
    deadlines: Deadlines,
) -> Case:
    """A new case, filed at ``home`` and referred to the province of the work place in the same step."""
    handling = draft.work_place.division_code[:2] + "0000"
    filed = Entry(seq=1, at=at, province=home, actor=actor, kind=EntryKind.FILED, status=Status.REFERRED)
    referred = Entry(
        seq=2,
        at=at,
        province=home,
        actor=actor,
        kind=EntryKind.REFERRED,
        status=Status.REFERRED,
        details={"to": handling},
    )
    return Case(
        id=case_id,
        version=1,
        home_province=home,
        handling_province=handling,
        holder=handling,
        status=Status.REFERRED,
        category=draft.category,
        sector=draft.sector,
        complainant=Complainant(resident_id=resident_id, name=draft.complainant.name, phone=draft.complainant.phone),
        employer=draft.employer,
        work_place=draft.work_place,
        work_place_name=work_place_name,
        period=draft.period,
        amount_owed=draft.amount_owed,
        workers_affected=draft.workers_affected,
        evidence=draft.evidence,
        facts=draft.facts,
        filed_at=at,
        referred_at=at,
        acceptance_due=deadlines.acceptance_due(at, handling),
        timeline=[filed, referred],
    )


def accept(case: Case, *, province: str, actor: str, at: datetime, deadlines: Deadlines, note: str | None) -> Case:
    _handled_here(case, province, Status.REFERRED)
    return _change(
        case,
        province=province,
        actor=actor,
        at=at,
        kind=EntryKind.ACCEPTED,
        status=Status.INVESTIGATING,
        note=note,
        accepted_at=at,
        investigation_due=deadlines.investigation_due(at, province),
    )


def decline(
    case: Case, *, province: str, actor: str, at: datetime, reason: str, suggested_province: str | None
) -> Case:
    """Not this province's case (e.g. the work was done elsewhere): it returns to the home province."""
    _handled_here(case, province, Status.REFERRED)
    details: dict[str, Any] = {"suggested_province": suggested_province} if suggested_province else {}
    return _change(
        case,
        province=province,
        actor=actor,
        at=at,
        kind=EntryKind.DECLINED,
        status=Status.RETURNED,
        note=reason,
        details=details,
        handling_province=None,
        holder=case.home_province,
        acceptance_due=None,
        declined_by=[*case.declined_by, province],
    )


def refer(
    case: Case,
    *,
    province: str,
    actor: str,
    at: datetime,
    deadlines: Deadlines,
    to: str,
    note: str | None,
    work_place: WorkPlace | None = None,
    work_place_name: str | None = None,
) -> Case:
    """The home province sends a returned case to another province (or keeps it: ``to`` is itself).

    The referral may correct the work place (the province that declined often says where the work was really
    done); a corrected work place lies in ``to``, and ``work_place_name`` is its registered name.
    """
    if case.home_province != province:
        raise NotCaseHolder(f"case {case.id} was filed in {case.home_province}; only that province refers it")
    _open_and_held(case, province)
    if case.status != Status.RETURNED:
        raise CaseRuleError(f"case {case.id} is {case.status}; only a returned case is referred again")
    details: dict[str, Any] = {"to": to}
    place: dict[str, Any] = {}
    if work_place is not None:
        if work_place.division_code[:2] != to[:2]:
            raise CaseRuleError(
                f"work place {work_place.division_code} is not in province {to}; a case is referred to the province "
                "of its work place"
            )
        if work_place_name is None:
            raise ValueError("a corrected work place needs its registered name")
        place = {"work_place": work_place, "work_place_name": work_place_name}
        details.update(
            work_place=work_place.model_dump(mode="json"),
            previous_work_place=case.work_place.model_dump(mode="json"),
        )
    return _change(
        case,
        province=province,
        actor=actor,
        at=at,
        kind=EntryKind.REFERRED,
        status=Status.REFERRED,
        note=note,
        details=details,
        handling_province=to,
        holder=to,
        referred_at=at,
        acceptance_due=deadlines.acceptance_due(at, to),
        **place,
    )


def record_update(case: Case, *, province: str, actor: str, at: datetime, note: str) -> Case:
    """An investigation step (an inspection, a hearing, an order to pay…)."""
    _handled_here(case, province, Status.INVESTIGATING)
    return _change(
        case, province=province, actor=actor, at=at, kind=EntryKind.UPDATED, status=Status.INVESTIGATING, note=note
    )


def extend(case: Case, *, province: str, actor: str, at: datetime, deadlines: Deadlines, reason: str) -> Case:
    """The one extension of the investigation the rules allow, asked for before its limit has passed."""
    _handled_here(case, province, Status.INVESTIGATING)
    if case.extended:
        raise CaseRuleError(f"case {case.id} was extended already; the investigation is extended once only")
    assert case.investigation_due is not None
    today = china_date(at)
    if overdue(case, today) is not None:
        raise CaseRuleError(
            f"case {case.id}: the investigation's limit passed on {case.investigation_due} "
            f"({(today - case.investigation_due).days} days ago, today is {today} in China); an overdue case is "
            "not extended, it is escalated with a reason"
        )
    due = deadlines.extended(case.investigation_due, province)
    return _change(
        case,
        province=province,
        actor=actor,
        at=at,
        kind=EntryKind.EXTENDED,
        status=Status.INVESTIGATING,
        note=reason,
        details={"investigation_due": due.isoformat()},
        investigation_due=due,
        extended=True,
    )


def escalate(case: Case, *, province: str, actor: str, at: datetime, reason: str) -> Case:
    """Report an overdue case to the supervising labour department, with the reason it is late.

    Only a case past a limit is escalated, once for each limit missed (an extension granted before the limit
    passed gives a new limit). The case keeps its status and its limits: it stays overdue until it moves on.
    """
    _handled_here(case, province, Status.REFERRED, Status.INVESTIGATING)
    today = china_date(at)
    late = overdue(case, today)
    if late is None:
        raise CaseRuleError(
            f"case {case.id} is within its limits (acceptance due {case.acceptance_due}, investigation due "
            f"{case.investigation_due}); only an overdue case is escalated"
        )
    if escalated(case) == late:
        raise CaseRuleError(f"case {case.id} was escalated already for its {late.value} limit")
    due = last_allowed_day(case, late)
    return _change(
        case,
        province=province,
        actor=actor,
        at=at,
        kind=EntryKind.ESCALATED,
        status=case.status,
        note=reason,
        details={"deadline": late.value, "due": _iso(due), "days_late": (today - due).days if due else None},
    )


def resolve(
    case: Case,
    *,
    province: str,
    actor: str,
    at: datetime,
    amount_recovered: Decimal,
    workers_paid: int,
    note: str | None,
) -> Case:
    """The wages were paid: how much was recovered, for how many of the workers affected."""
    _handled_here(case, province, Status.INVESTIGATING)
    if workers_paid > case.workers_affected:
        raise CaseRuleError(
            f"workers_paid {workers_paid} is more than the {case.workers_affected} workers affected by case {case.id}"
        )
    return _change(
        case,
        province=province,
        actor=actor,
        at=at,
        kind=EntryKind.RESOLVED,
        status=Status.RESOLVED,
        note=note,
        details={"amount_recovered": f"{amount_recovered:.2f}", "workers_paid": workers_paid},
        amount_recovered=amount_recovered,
        workers_paid=workers_paid,
        concluded_at=at,
    )


def close(case: Case, *, province: str, actor: str, at: datetime, reason: ClosureReason, note: str | None) -> Case:
    """Close without recovery: referred to the police, unfounded, or withdrawn by the complainant.

    The handling province closes a case it investigates; the home province closes a returned one. Withdrawal
    closes any open case its holder has.
    """
    _open_and_held(case, province)
    if reason != ClosureReason.WITHDRAWN:
        allowed = Status.RETURNED if case.handling_province is None else Status.INVESTIGATING
        if case.status != allowed:
            raise CaseRuleError(
                f"case {case.id} is {case.status}; it is closed as {reason} only once accepted (or when returned "
                "home); a referral that is not this province's is declined"
            )
    return _change(
        case,
        province=province,
        actor=actor,
        at=at,
        kind=EntryKind.CLOSED,
        status=Status.CLOSED,
        note=note,
        details={"reason": reason.value},
        closure_reason=reason,
        concluded_at=at,
    )


def recipients(case: Case, province: str) -> list[str]:
    """Who must receive a change ``province`` made: the other party among home and handling province."""
    return sorted({p for p in (case.home_province, case.handling_province) if p is not None and p != province})


def message_type(case: Case) -> str:
    return MESSAGE_TYPES[case.last_entry.kind]


def masked(complainant: Complainant) -> Complainant:
    return Complainant(
        resident_id=mask_resident_id(complainant.resident_id),
        name=mask_name(complainant.name),
        phone=mask_phone(complainant.phone),
    )


def redacted(case: Case) -> Case:
    """What a province keeps of a case it is no longer part of (it declined): no identity, no phone, no facts."""
    return case.model_copy(update={"complainant": masked(case.complainant), "facts": ""})

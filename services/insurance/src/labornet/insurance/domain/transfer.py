"""The transfer saga between a receiving and a sending office: the ``Transfer`` aggregate, its states, the
messages each step raises and what moves with the worker.

Each province holds its own side of a transfer (its own case number); every message names both sides' case
numbers (the receiving case is known from the first message, the sending case from the sending office's first
answer), like EESSI's U001/U002 flow. A side is changed only by its own province (the *holder*), by its officers
or by a message from the other side's province; every change raises ``version`` and appends to the timeline.

Receiving side:  awaiting-answer ─sheet→ completed (receipt sent)
                                 ─refused→ refused
                 awaiting-answer ─worker cancels→ cancel-requested ─confirmed→ cancelled
                                                                 ─sheet (crossed)→ completed, noted
Sending side:    received ─officer (or auto) sends the sheet→ sheet-sent ─receipt→ completed
                          ─refusal→ refused      received ─cancellation→ cancelled
                 sheet-sent | completed ─cancellation (late)→ unchanged, noted

What moves, each counted once: the live contribution periods, and the :class:`BenefitHistory` (months used,
benefit months paid, earlier unclaimed entitlement) exactly as the sending province held it. The receiving
province adds it to what it holds *live* of the person; a record it transferred out earlier holds nothing live
(everything left with that transfer), so a worker who comes back is not counted twice.

Everything here is plain rules over immutable values with the clock passed in; storage, messages and HTTP live
elsewhere. A transition returns an :class:`Outcome`: the new transfer and the events it raised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from typing import Any

from labornet.insurance.domain.events import Message
from labornet.insurance.domain.rules import (
    ACTIVE,
    NO_HISTORY,
    BenefitHistory,
    Period,
    PeriodKind,
    PersonStatus,
    entitlement_at,
    transfer_out_sheet,
)
from labornet.insurance.domain.settlement import Direction, Settlement, SettlementStatus, scheduled_message
from labornet.shared.clock import china_date
from labornet.shared.workdays import WorkCalendar

CONTACT_LETTER = "org.labornet.insurance.transfer.contact-letter.v1"
INFORMATION_SHEET = "org.labornet.insurance.transfer.information-sheet.v1"
REFUSAL = "org.labornet.insurance.transfer.refused.v1"
RECEIPT = "org.labornet.insurance.transfer.receipt.v1"
CANCELLATION = "org.labornet.insurance.transfer.cancellation.v1"
CANCELLATION_CONFIRMED = "org.labornet.insurance.transfer.cancellation-confirmed.v1"
MESSAGE_TYPES = (CONTACT_LETTER, INFORMATION_SHEET, REFUSAL, RECEIPT, CANCELLATION, CANCELLATION_CONFIRMED)

LATE_CANCELLATION = "the worker's cancellation arrived after the information sheet was sent; the sheet stands"


class Side(StrEnum):
    RECEIVING = "receiving"
    SENDING = "sending"


class State(StrEnum):
    AWAITING_ANSWER = "awaiting-answer"
    CANCEL_REQUESTED = "cancel-requested"
    RECEIVED = "received"
    SHEET_SENT = "sheet-sent"
    COMPLETED = "completed"
    REFUSED = "refused"
    CANCELLED = "cancelled"


TERMINAL = (State.COMPLETED, State.REFUSED, State.CANCELLED)


def is_overdue(*, side: str, state: str, answer_due: date, complete_due: date, today: date) -> bool:
    """A case past its time limit: open past the total limit (20 working days by default), or, on the sending
    side, a contact letter still unanswered past the answer limit (5 working days)."""
    if state in TERMINAL:
        return False
    if complete_due < today:
        return True
    return side == Side.SENDING and state == State.RECEIVED and answer_due < today


class Reason(StrEnum):
    """Why the relationship moves (the five situations of the national transfer rules; configurable wording)."""

    NEW_EMPLOYMENT = "new-employment"  # an insured worker took a job in another province
    CLAIMANT_RELOCATION = "claimant-relocation"  # a claimant moves while drawing benefit
    RETURN_TO_HUKOU = "return-to-hukou"  # an unemployed person returns to the household-registration province
    UNEMPLOYED_NOT_CLAIMING = "unemployed-not-claiming"  # unemployed, not yet claiming, moving residence
    MIGRANT_WORKER = "migrant-worker"  # former migrant-worker contributions consolidated at the new place


class TransferRefused(Exception):
    """The receiving office refuses to send a contact letter; the message says why."""


class WrongNode(TransferRefused):
    """The request was made at a node that cannot take it; ``file_at`` names the province whose node can."""

    def __init__(self, message: str, file_at: str | None) -> None:
        super().__init__(message)
        self.file_at = file_at


class TransferRuleError(TransferRefused):
    """A change the transfer's rules do not allow now (wrong state, not this province's side…)."""


class SheetAlreadySent(TransferRuleError):
    """The worker cancels after the sending office has sent the information sheet: too late."""


# The aggregate --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One entry of a side's timeline, written by the province holding that side."""

    at: datetime
    state: State
    province: str
    note: str


@dataclass(frozen=True)
class TimeLimits:
    """Working-day limits of the province bound by them (benefit configuration)."""

    calendar: WorkCalendar
    answer_days: int = 5
    transfer_days: int = 20

    def due(self, at: datetime, days: int) -> date:
        """The date ``days`` working days after ``at`` (China's date); the same for every case filed that day."""
        return _add_workdays(self.calendar, china_date(at), days)


@lru_cache(maxsize=256)
def _add_workdays(calendar: WorkCalendar, day: date, days: int) -> date:
    # Counting day by day through the national schedule took about 5 % of a node's CPU at 100 transfers/s; the
    # calendar is a frozen value, so the answer for one day is computed once.
    return calendar.add_workdays(day, days)


@dataclass(frozen=True)
class Standard:
    """The province's benefit standard, as the arithmetic needs it."""

    monthly_standard: Decimal
    fund_multiplier: Decimal = Decimal("1.5")


@dataclass(frozen=True)
class InsuredPerson:
    """A person's record in one province."""

    resident_id: str
    name: str
    hukou_division: str
    status: PersonStatus
    employer_credit_code: str | None
    history: BenefitHistory
    transfer_lock: str | None  # the transfer case holding this person, if any
    version: int

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def live_history(self) -> BenefitHistory:
        """What this province still holds of the person's history: nothing once it was transferred out."""
        return NO_HISTORY if self.status == PersonStatus.TRANSFERRED else self.history


@dataclass(frozen=True)
class Transfer:
    """One province's side of a transfer."""

    id: str
    side: Side
    peer_case: str | None
    resident_id: str
    person_name: str  # as the request names the person
    from_province: str
    to_province: str
    reason: Reason
    new_employer_credit_code: str | None
    state: State
    filed_by: str
    filed_at: datetime
    answer_due: date
    complete_due: date
    version: int
    timeline: tuple[Step, ...]
    sheet: dict[str, Any] | None = None
    entitlement: dict[str, Any] | None = None
    refusal_reason: str | None = None
    closed_at: datetime | None = None
    name_on_record: str | None = None  # sending side: the name the record holds, when it differs from the request

    @property
    def holder(self) -> str:
        """The province whose node holds (and alone changes) this side."""
        return self.to_province if self.side == Side.RECEIVING else self.from_province

    @property
    def peer(self) -> str:
        return self.from_province if self.side == Side.RECEIVING else self.to_province

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def name_mismatch(self) -> bool:
        return self.name_on_record is not None and self.name_on_record != self.person_name


@dataclass(frozen=True)
class Outcome:
    """What a step leaves behind: the transfer, the messages it raised, and its effect on the person's record."""

    transfer: Transfer
    events: tuple[Message, ...] = ()
    person: InsuredPerson | None = None  # the record as the step leaves it, when the step changed it
    carried_in: tuple[Period, ...] = ()  # periods the relationship brings here
    carried_out: bool = False  # the live periods leave with this transfer
    settlement: Settlement | None = None

    @property
    def changed(self) -> bool:
        return bool(self.events) or self.person is not None or self.settlement is not None or self.carried_out


def _move(transfer: Transfer, state: State, *, at: datetime, note: str, **fields: Any) -> Transfer:
    step = Step(at=at, state=state, province=transfer.holder, note=note)
    if state in TERMINAL and transfer.closed_at is None:
        fields["closed_at"] = at
    return replace(transfer, state=state, version=transfer.version + 1, timeline=(*transfer.timeline, step), **fields)


def _note(transfer: Transfer, *, at: datetime, note: str) -> Transfer:
    """A timeline entry that does not change the state."""
    return _move(transfer, transfer.state, at=at, note=note)


def _held_by(transfer: Transfer, province: str, side: Side) -> None:
    if transfer.side != side or transfer.holder != province:
        raise TransferRuleError(f"transfer {transfer.id} is not a {side} case of {province}")


def _from_peer(transfer: Transfer, origin: str) -> None:
    """A message about this side comes only from the province holding the other side."""
    if origin != transfer.peer:
        raise ValueError(f"{origin} sent a message about transfer {transfer.id}, whose other side is {transfer.peer}")


def _unlocked(person: InsuredPerson | None, transfer: Transfer) -> InsuredPerson | None:
    if person is None or person.transfer_lock != transfer.id:
        return None
    return replace(person, transfer_lock=None, version=person.version + 1)


def periods_json(periods: Sequence[Period]) -> list[dict[str, Any]]:
    return [
        {
            "start_month": p.start.isoformat(),
            "end_month": p.end.isoformat(),
            "kind": p.kind.value,
            "province": p.province,
            "employer_credit_code": p.employer_credit_code,
        }
        for p in periods
    ]


def periods_of(data: Sequence[dict[str, Any]]) -> tuple[Period, ...]:
    return tuple(
        Period(
            date.fromisoformat(p["start_month"]),
            date.fromisoformat(p["end_month"]),
            PeriodKind(p["kind"]),
            p["province"],
            p.get("employer_credit_code"),
        )
        for p in data
    )


def jsonable(value: Any) -> dict[str, Any]:
    return {k: (f"{v:.2f}" if isinstance(v, Decimal) else v) for k, v in asdict(value).items()}


# Receiving side -------------------------------------------------------------------------------------------------


def file(
    *,
    case_id: str,
    province: str,
    resident_id: str,
    name: str,
    from_province: str,
    reason: Reason,
    new_employer: str | None,
    filed_by: str,
    at: datetime,
    person: InsuredPerson | None,
    limits: TimeLimits,
    members: Sequence[str],
    to_province: str | None = None,
) -> Outcome:
    """A request to bring the relationship here: the contact letter to the sending office, or a refusal."""
    if to_province is not None and to_province != province:
        raise WrongNode(
            f"this is the insurance service of {province}; a transfer to {to_province} is filed at the insurance "
            f"service of {to_province} (the receiving office), which asks {from_province} for the record",
            file_at=to_province,
        )
    if from_province == province:
        raise WrongNode(
            f"{province} is the sending office for a transfer out of {province}: file the request at the insurance "
            "service of the province the worker moves to (the receiving office), naming "
            f"from_province {province}; that office asks this one for the record",
            file_at=to_province,
        )
    if from_province not in members:
        raise TransferRefused(f"province {from_province} is not a member of the federation")
    if reason == Reason.NEW_EMPLOYMENT and not new_employer:
        raise TransferRefused("a transfer for new employment needs the new employer's credit code")
    if person is not None and person.active:
        raise TransferRefused("this person is already insured in this province")
    transfer = Transfer(
        id=case_id,
        side=Side.RECEIVING,
        peer_case=None,
        resident_id=resident_id,
        person_name=name,
        from_province=from_province,
        to_province=province,
        reason=reason,
        new_employer_credit_code=new_employer,
        state=State.AWAITING_ANSWER,
        filed_by=filed_by,
        filed_at=at,
        answer_due=limits.due(at, limits.answer_days),
        complete_due=limits.due(at, limits.transfer_days),
        version=1,
        timeline=(Step(at, State.AWAITING_ANSWER, province, "contact letter sent"),),
    )
    letter = Message(
        to=from_province,
        type=CONTACT_LETTER,
        key=case_id,
        data={
            "receiving_case": case_id,
            "sending_case": None,
            "person": {"resident_id": resident_id, "name": name},
            "from_province": from_province,
            "to_province": province,
            "reason": reason.value,
            "new_employer_credit_code": new_employer,
            "filed_at": at.isoformat(),
            "complete_due": transfer.complete_due.isoformat(),
        },
    )
    return Outcome(transfer, (letter,))


def cancel(transfer: Transfer, *, province: str, at: datetime) -> Outcome:
    """The worker withdraws the request; allowed only until the sending office has answered.

    A cancellation after the sheet was received here is refused (409) saying so; one that crosses the sheet on
    the way is noted in both timelines and the sheet wins.
    """
    _held_by(transfer, province, Side.RECEIVING)
    if transfer.state == State.COMPLETED:
        raise SheetAlreadySent(
            f"transfer {transfer.id}: {transfer.from_province} already sent the information sheet and the "
            f"relationship is open in {province}; a completed transfer cannot be cancelled"
        )
    if transfer.state != State.AWAITING_ANSWER:
        raise TransferRuleError(
            f"transfer {transfer.id} is {transfer.state}: it can be cancelled only while awaiting the answer"
        )
    cancelled = _move(transfer, State.CANCEL_REQUESTED, at=at, note="cancellation requested")
    message = Message(
        to=transfer.from_province,
        type=CANCELLATION,
        key=transfer.id,
        data={"receiving_case": transfer.id, "sending_case": transfer.peer_case},
    )
    return Outcome(cancelled, (message,))


def open_relationship(
    transfer: Transfer,
    message: dict[str, Any],
    *,
    origin: str,
    at: datetime,
    person: InsuredPerson | None,
    live_periods: Sequence[Period],
    standard: Standard,
) -> Outcome:
    """The information sheet arrives: open the relationship with the carried history and send the receipt."""
    _from_peer(transfer, origin)
    if transfer.state not in (State.AWAITING_ANSWER, State.CANCEL_REQUESTED):
        return Outcome(transfer)  # a repeated or late sheet changes nothing
    sheet = message["sheet"]
    carried = BenefitHistory(
        int(sheet["months_used"]), int(sheet["benefit_months_paid"]), int(sheet.get("earlier_unclaimed_months", 0))
    )
    history = (person.live_history if person is not None else NO_HISTORY) + carried
    periods = periods_of(message["periods"])
    status = (
        PersonStatus.CLAIMING
        if int(sheet["benefit_months_remaining"]) > 0 and transfer.reason != Reason.NEW_EMPLOYMENT
        else PersonStatus.EMPLOYED
    )
    opened = InsuredPerson(
        resident_id=transfer.resident_id,
        name=person.name if person is not None else transfer.person_name,
        hukou_division=person.hukou_division if person is not None else message["hukou_division"],
        status=status,
        employer_credit_code=transfer.new_employer_credit_code,
        history=history,
        transfer_lock=None,
        version=person.version + 1 if person is not None else 1,
    )
    entitlement = entitlement_at(
        [*live_periods, *periods],
        months_used=history.months_used,
        benefit_months_paid=history.benefit_months_paid,
        earlier_unclaimed_months=history.earlier_unclaimed_months,
        monthly_standard=standard.monthly_standard,
    )
    note = "relationship opened; receipt sent"
    if transfer.state == State.CANCEL_REQUESTED:
        note = "the cancellation crossed the information sheet, which was already sent: the transfer completes; " + note
    completed = _move(
        transfer,
        State.COMPLETED,
        at=at,
        note=note,
        peer_case=message["sending_case"],
        sheet=sheet,
        entitlement=jsonable(entitlement),
    )
    receipt = Message(
        to=transfer.from_province,
        type=RECEIPT,
        key=transfer.id,
        data={"receiving_case": transfer.id, "sending_case": message["sending_case"], "opened_at": at.isoformat()},
    )
    return Outcome(completed, (receipt,), person=opened, carried_in=periods)


def refused(transfer: Transfer, message: dict[str, Any], *, origin: str, at: datetime) -> Outcome:
    _from_peer(transfer, origin)
    if transfer.terminal:
        return Outcome(transfer)
    reason = str(message["reason"])
    return Outcome(
        _move(
            transfer,
            State.REFUSED,
            at=at,
            note=f"refused by {transfer.from_province}: {reason}",
            peer_case=message["sending_case"],
            refusal_reason=reason,
        )
    )


def cancellation_confirmed(transfer: Transfer, message: dict[str, Any], *, origin: str, at: datetime) -> Outcome:
    _from_peer(transfer, origin)
    if transfer.state != State.CANCEL_REQUESTED:
        return Outcome(transfer)
    return Outcome(
        _move(
            transfer,
            State.CANCELLED,
            at=at,
            note="cancellation confirmed by the sending office",
            peer_case=message["sending_case"],
        )
    )


# Sending side ---------------------------------------------------------------------------------------------------


def receive_letter(
    letter: dict[str, Any],
    *,
    case_id: str,
    province: str,
    origin: str,
    at: datetime,
    person: InsuredPerson | None,
    limits: TimeLimits,
) -> Outcome:
    """A contact letter arrives: the sending case, refused at once when the record does not allow a transfer.

    A name on the letter that differs from the record's is flagged for the officer, who decides.
    """
    name = str(letter["person"]["name"])
    transfer = Transfer(
        id=case_id,
        side=Side.SENDING,
        peer_case=letter["receiving_case"],
        resident_id=letter["person"]["resident_id"],
        person_name=name,
        from_province=province,
        to_province=origin,
        reason=Reason(letter["reason"]),
        new_employer_credit_code=letter.get("new_employer_credit_code"),
        state=State.RECEIVED,
        filed_by=f"province:{origin}",
        filed_at=at,
        answer_due=limits.due(at, limits.answer_days),
        complete_due=date.fromisoformat(letter["complete_due"]),
        version=1,
        timeline=(),
        name_on_record=person.name if person is not None and person.name != name else None,
    )
    refusal = None
    if person is None:
        refusal = f"no insurance record for this person in {province}"
    elif person.status in (PersonStatus.TRANSFERRED, PersonStatus.TRANSFERRING):
        refusal = "the relationship has already been transferred out"
    elif person.transfer_lock is not None:
        refusal = "another transfer for this person is already in progress"
    elif person.status == PersonStatus.SUSPENDED:
        refusal = "the relationship is suspended"
    note = f"contact letter {letter['receiving_case']} received"
    if transfer.name_mismatch:
        note += f"; the request names {name!r}, the record {transfer.name_on_record!r}: the officer decides"
    received = replace(transfer, timeline=(Step(at, State.RECEIVED, province, note),))
    if refusal is not None:
        return _refusal(received, refusal, at=at)
    assert person is not None
    return Outcome(received, person=replace(person, transfer_lock=case_id, version=person.version + 1))


def send_sheet(
    transfer: Transfer,
    *,
    province: str,
    at: datetime,
    person: InsuredPerson,
    live_periods: Sequence[Period],
    standard: Standard,
    fund_held: bool = False,
) -> Outcome:
    """The officer (or the automatic answer) sends the information sheet; the record is frozen until the receipt.

    ``fund_held``: the claimant's fund came here with the relationship, so it moves on with it."""
    _held_by(transfer, province, Side.SENDING)
    if transfer.state != State.RECEIVED:
        raise TransferRuleError(f"transfer {transfer.id} is {transfer.state}; only a received request is answered")
    ordered = sorted(live_periods, key=lambda p: p.start)
    sheet = jsonable(
        transfer_out_sheet(
            ordered,
            sending_province=province,
            status=person.status,
            months_used=person.history.months_used,
            benefit_months_paid=person.history.benefit_months_paid,
            earlier_unclaimed_months=person.history.earlier_unclaimed_months,
            monthly_standard=standard.monthly_standard,
            fund_multiplier=standard.fund_multiplier,
            fund_held=fund_held,
        )
    )
    sent = _move(transfer, State.SHEET_SENT, at=at, note="information sheet sent", sheet=sheet)
    message = Message(
        to=transfer.to_province,
        type=INFORMATION_SHEET,
        key=str(transfer.peer_case),
        data={
            "receiving_case": transfer.peer_case,
            "sending_case": transfer.id,
            "sheet": sheet,
            "hukou_division": person.hukou_division,
            "periods": periods_json(ordered),
        },
    )
    frozen = replace(person, status=PersonStatus.TRANSFERRING, version=person.version + 1)
    return Outcome(sent, (message,), person=frozen)


def refuse(transfer: Transfer, *, province: str, at: datetime, reason: str, person: InsuredPerson | None) -> Outcome:
    """The officer refuses the request, with a reason; the record is released."""
    _held_by(transfer, province, Side.SENDING)
    if transfer.state != State.RECEIVED:
        raise TransferRuleError(f"transfer {transfer.id} is {transfer.state}; only a received request is answered")
    outcome = _refusal(transfer, reason, at=at)
    return replace(outcome, person=_unlocked(person, transfer))


def _refusal(transfer: Transfer, reason: str, *, at: datetime) -> Outcome:
    message = Message(
        to=transfer.to_province,
        type=REFUSAL,
        key=str(transfer.peer_case),
        data={"receiving_case": transfer.peer_case, "sending_case": transfer.id, "reason": reason},
    )
    return Outcome(_move(transfer, State.REFUSED, at=at, note=reason, refusal_reason=reason), (message,))


def close_relationship(
    transfer: Transfer,
    *,
    origin: str,
    at: datetime,
    person: InsuredPerson | None,
    settlement_id: str,
    settlement_due: date,
) -> Outcome:
    """The receipt arrives: the relationship is closed here, its periods leave, and the money is scheduled."""
    _from_peer(transfer, origin)
    if transfer.state != State.SHEET_SENT:
        return Outcome(transfer)
    assert transfer.sheet is not None and transfer.peer_case is not None
    amount = Decimal(str(transfer.sheet["fund_due"]))
    closed_person = (
        replace(person, status=PersonStatus.TRANSFERRED, transfer_lock=None, version=person.version + 1)
        if person is not None
        else None
    )
    if amount <= 0:
        completed = _move(
            transfer, State.COMPLETED, at=at, note="receipt received; relationship closed, no money moves"
        )
        return Outcome(completed, person=closed_person, carried_out=True)
    settlement = Settlement(
        id=settlement_id,
        direction=Direction.OUTGOING,
        transfer_id=transfer.id,
        peer_case=transfer.peer_case,
        resident_id=transfer.resident_id,
        from_province=transfer.from_province,
        to_province=transfer.to_province,
        amount=amount,
        due_month=settlement_due,
        status=SettlementStatus.PENDING,
        created_at=at,
    )
    completed = _move(
        transfer,
        State.COMPLETED,
        at=at,
        note=f"receipt received; relationship closed, {amount:.2f} CNY due in the plan of {settlement_due:%Y-%m}",
    )
    return Outcome(
        completed, (scheduled_message(settlement),), person=closed_person, carried_out=True, settlement=settlement
    )


def withdrawn(transfer: Transfer, *, origin: str, at: datetime, person: InsuredPerson | None) -> Outcome:
    """The worker's cancellation arrives: the request is closed if still unanswered; after the sheet, it is
    only noted (once) and the sheet stands."""
    _from_peer(transfer, origin)
    if transfer.state in (State.SHEET_SENT, State.COMPLETED):
        if any(step.note == LATE_CANCELLATION for step in transfer.timeline):
            return Outcome(transfer)
        return Outcome(_note(transfer, at=at, note=LATE_CANCELLATION))
    if transfer.state != State.RECEIVED:
        return Outcome(transfer)  # refused or cancelled already
    confirmation = Message(
        to=transfer.to_province,
        type=CANCELLATION_CONFIRMED,
        key=str(transfer.peer_case),
        data={"receiving_case": transfer.peer_case, "sending_case": transfer.id},
    )
    cancelled = _move(transfer, State.CANCELLED, at=at, note="cancelled at the worker's request")
    return Outcome(cancelled, (confirmation,), person=_unlocked(person, transfer))

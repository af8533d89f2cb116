"""Organised labour dispatch (有组织劳务输出): a group of workers sent by an origin province to a destination.

The **origin** (the labour-exporting province) records the group transfer — chartered bus, special train or
chartered flight — linked to a brand demand of the destination or to a joint recruitment event, and may change or
cancel it until its arrival is confirmed. The **destination** confirms the arrival once: when, and how many
workers it received. Both provinces hold the same dispatch and nobody else does: the escort's name and phone are
the only personal data it carries (no roster of the workers travels; the origin keeps its roster outside LaborNet).

The dispatch has two parts, each with one writer, so that concurrent steps of the two provinces never collide:

* the **plan** (everything but the arrival) is written by the origin only; every change raises ``version``, a
  newer version wins, older or equal ones change nothing;
* the **arrival** is written by the destination only, once; a second confirmation is refused, a repeated
  message changes nothing.

::

    announced ──update (origin)──▶ announced (version + 1)
        │
        ├──cancel (origin)──▶ cancelled
        └──confirm arrival (destination, once)──▶ arrived (final)

The state follows from the parts: arrived once an arrival is recorded, else cancelled once cancelled, else
announced. Should the origin cancel (or change) a dispatch while the destination confirms its arrival, both nodes
end with both parts — the workers did arrive, so the dispatch is arrived, and the counts are those of the last
plan. Each change travels whole, so a node that missed an earlier version still ends right.

Confirmation is due within ``N`` working days after the expected arrival date, counted on the destination's
calendar (the province that must confirm). The origin computes the last allowed day when it records or changes
the expected arrival and sends it with the plan, so both nodes call the same dispatch overdue on the same day.

Everything here is plain rules over immutable values; storage, messages and HTTP live elsewhere.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from labornet.shared.bounds import INT32_MAX, PositiveInt32
from labornet.shared.clock import china_date
from labornet.shared.identifiers import (
    CreditCodeStr,
    DivisionCodeStr,
    PhoneStr,
    ProvinceCodeStr,
)
from labornet.shared.workdays import Calendars

# Directed messages between the origin and the destination (each carries the whole dispatch).
ANNOUNCED = "org.labornet.jobs.dispatch.announced.v1"
UPDATED = "org.labornet.jobs.dispatch.updated.v1"
CANCELLED = "org.labornet.jobs.dispatch.cancelled.v1"
ARRIVAL_CONFIRMED = "org.labornet.jobs.dispatch.arrival-confirmed.v1"
PLAN_MESSAGE_TYPES = (ANNOUNCED, UPDATED, CANCELLED)
MESSAGE_TYPES = (*PLAN_MESSAGE_TYPES, ARRIVAL_CONFIRMED)

MAX_HEADCOUNT = 10_000
# More workers may arrive than were sent (joined on the way); recorded, flagged, but not beyond this factor,
# which catches a typing slip (300 for 30).
RECEIVED_FACTOR = 2
MAX_EMPLOYERS = 20
MAX_JOURNEY_DAYS = 30
# an arrival time a little ahead of the node's clock is a clock difference, not a prophecy
ARRIVAL_CLOCK_SKEW = timedelta(minutes=10)

DISPATCH_ID = r"^\d{2}0000-G-[0-9A-F]{20}$"
_BRAND_DEMAND_ID = re.compile(r"^(\d{2}0000)-D-[0-9A-F]{20}$")
_FAIR_ID = re.compile(r"^(\d{2}0000)-F-[0-9A-F]{20}$")
_PROVINCE = r"^\d{2}0000$"


class State(StrEnum):
    ANNOUNCED = "announced"
    ARRIVED = "arrived"
    CANCELLED = "cancelled"


class Transport(StrEnum):
    CHARTERED_BUS = "chartered-bus"  # 包车
    SPECIAL_TRAIN = "special-train"  # 专列
    CHARTERED_FLIGHT = "chartered-flight"  # 包机
    OTHER = "other"


class DispatchRole(StrEnum):
    """A province's part in a dispatch: it sent the workers, or it received them."""

    SENT = "sent"
    RECEIVED = "received"


class DispatchRuleError(Exception):
    """A step the dispatch's rules do not allow now (cancelled, confirmed already…); the message says why."""


class NotParty(DispatchRuleError):
    """The acting province has no standing for this step (the destination changing the plan, the origin
    confirming the arrival)."""


class StaleVersion(DispatchRuleError):
    """The step names a version of the plan that is not the current one."""


class VersionRequired(DispatchRuleError):
    """A change of the plan must name the version it was read at."""


class InvalidDispatch(DispatchRuleError):
    """A value breaks a rule that needs more than its field to check (a date before another, a link to a
    province that does not take part); ``field`` names the value."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class MessageRefused(DispatchRuleError):
    """A message whose sender has no standing for what it carries, or that breaks the dispatch's rules."""


# Field types ---------------------------------------------------------------------------------------------------


def _brand_demand_id(value: str) -> str:
    if not _BRAND_DEMAND_ID.match(value):
        raise ValueError(
            f"brand demand {value[:60]!r}: expected `<demanding province>-D-<20 upper-case hex digits>`, "
            "e.g. 330000-D-0123456789ABCDEF0123"
        )
    return value


def _fair_id(value: str) -> str:
    if not _FAIR_ID.match(value):
        raise ValueError(
            f"recruitment event {value[:60]!r}: expected `<organiser province>-F-<20 upper-case hex digits>`, "
            "e.g. 500000-F-0123456789ABCDEF0123"
        )
    return value


BrandDemandId = Annotated[str, Field(max_length=40), AfterValidator(_brand_demand_id)]
FairId = Annotated[str, Field(max_length=40), AfterValidator(_fair_id)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Note = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
Headcount = Annotated[int, Field(ge=1, le=MAX_HEADCOUNT, description=f"workers sent, 1 to {MAX_HEADCOUNT}")]


def brand_demand_province(brand_demand_id: str) -> str:
    return brand_demand_id[:6]


def fair_organiser(fair_id: str) -> str:
    return fair_id[:6]


# What a dispatch holds ------------------------------------------------------------------------------------------


class Contact(BaseModel):
    """The escort travelling with the group, or the origin's contact for it: the only personal data here."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
    name: Name
    phone: PhoneStr


class DispatchEmployer(BaseModel):
    """An employer taking workers of the group, and where they will work (in the destination province)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
    name: ShortText
    credit_code: CreditCodeStr | None = Field(None, description="its unified social credit code, if known")
    division_code: DivisionCodeStr = Field(description="prefecture or county code of the work place")
    site: str | None = Field(None, max_length=200, description="e.g. the factory or the construction site")


Employers = Annotated[list[DispatchEmployer], Field(min_length=1, max_length=MAX_EMPLOYERS)]


class Arrival(BaseModel):
    """What the destination confirmed: when the group arrived and how many workers it received."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    arrived_at: AwareDatetime
    headcount_received: int = Field(ge=0, le=RECEIVED_FACTOR * MAX_HEADCOUNT)
    note: str | None = Field(None, max_length=2000)
    confirmed_at: AwareDatetime
    plan_version: PositiveInt32 = Field(description="the version of the plan the destination confirmed against")


class Dispatch(BaseModel):
    """The whole dispatch as both provinces hold it and as the directed messages carry it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=DISPATCH_ID, description="`<origin province>-G-<20 hex digits>`")
    version: PositiveInt32 = Field(description="the plan's version: raised by every change the origin makes")
    origin_province: str = Field(pattern=_PROVINCE)
    destination_province: str = Field(pattern=_PROVINCE)
    brand_demand_id: str | None = Field(None, max_length=40)
    fair_id: str | None = Field(None, max_length=40)
    employers: Employers
    headcount: Headcount
    transport: Transport
    departure_at: AwareDatetime
    departure_place: str = Field(max_length=200)
    expected_arrival_on: date
    confirmation_due: date = Field(description="the last day (China time) on which the arrival is confirmed in time")
    escort: Contact
    note: str | None = Field(None, max_length=2000)
    announced_at: AwareDatetime
    changed_at: AwareDatetime = Field(description="the plan's last change")
    cancelled_at: AwareDatetime | None = None
    cancellation_reason: str | None = Field(None, max_length=2000)
    arrival: Arrival | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.id[:6] != self.origin_province:
            raise ValueError(f"dispatch {self.id} was not recorded by its origin {self.origin_province}")
        if self.destination_province == self.origin_province:
            raise ValueError(f"dispatch {self.id} goes from {self.origin_province} to itself")
        if self.brand_demand_id is not None and brand_demand_province(self.brand_demand_id) != (
            self.destination_province
        ):
            raise ValueError(f"dispatch {self.id}: brand demand {self.brand_demand_id} is not the destination's")
        if (self.cancelled_at is None) != (self.cancellation_reason is None):
            raise ValueError(f"dispatch {self.id}: a cancellation has both a time and a reason")
        return self

    @property
    def state(self) -> State:
        if self.arrival is not None:
            return State.ARRIVED
        if self.cancelled_at is not None:
            return State.CANCELLED
        return State.ANNOUNCED

    @property
    def headcount_received(self) -> int | None:
        return self.arrival.headcount_received if self.arrival is not None else None

    @property
    def difference(self) -> int | None:
        """Workers sent minus workers received (negative when more arrived than were sent); None before arrival."""
        received = self.headcount_received
        return self.headcount - received if received is not None else None

    def role_of(self, province: str) -> DispatchRole:
        return DispatchRole.SENT if province == self.origin_province else DispatchRole.RECEIVED


# The messages' data, one model per type (the contract's schemas and what a receiver accepts) ----------------------


class AnnouncedDispatch(Dispatch):
    """A dispatch just recorded by its origin: version 1, neither cancelled nor arrived."""

    version: Literal[1]
    cancelled_at: None = None
    cancellation_reason: None = None
    arrival: None = None


class UpdatedDispatch(Dispatch):
    """The plan after a change by the origin: a later version, neither cancelled nor arrived."""

    version: Annotated[int, Field(ge=2, le=INT32_MAX)]
    cancelled_at: None = None
    cancellation_reason: None = None
    arrival: None = None


class CancelledDispatch(Dispatch):
    """The plan cancelled by the origin before any arrival was confirmed to it."""

    version: Annotated[int, Field(ge=2, le=INT32_MAX)]
    cancelled_at: AwareDatetime
    cancellation_reason: str = Field(max_length=2000)
    arrival: None = None


class ConfirmedDispatch(Dispatch):
    """The dispatch with the arrival its destination confirmed."""

    arrival: Arrival


MESSAGE_MODELS: dict[str, type[Dispatch]] = {
    ANNOUNCED: AnnouncedDispatch,
    UPDATED: UpdatedDispatch,
    CANCELLED: CancelledDispatch,
    ARRIVAL_CONFIRMED: ConfirmedDispatch,
}


# What an officer of the origin records ---------------------------------------------------------------------------


def _check_journey(departure_at: datetime, expected_arrival_on: date) -> None:
    departure_day = china_date(departure_at)
    if expected_arrival_on < departure_day:
        raise InvalidDispatch(
            "expected_arrival_on",
            f"expected arrival {expected_arrival_on} is before the departure on {departure_day} (China time)",
        )
    if (expected_arrival_on - departure_day).days > MAX_JOURNEY_DAYS:
        raise InvalidDispatch(
            "expected_arrival_on",
            f"expected arrival {expected_arrival_on} is more than {MAX_JOURNEY_DAYS} days after the departure on "
            f"{departure_day}; record the journey's real dates",
        )


def _check_employers(employers: list[DispatchEmployer], destination: str) -> None:
    for n, employer in enumerate(employers):
        if employer.division_code[:2] != destination[:2]:
            raise InvalidDispatch(
                f"employers.{n}.division_code",
                f"work place {employer.division_code} is not in the destination province {destination}",
            )


class DispatchDraft(BaseModel):
    """A group transfer as the origin's officer records it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    destination_province: ProvinceCodeStr = Field(description="the member province receiving the workers")
    brand_demand_id: BrandDemandId | None = Field(
        None, description="the destination's brand demand the group answers (`<destination>-D-…`)"
    )
    fair_id: FairId | None = Field(
        None, description="the joint recruitment event the group comes from (`<organiser>-F-…`)"
    )
    employers: Employers = Field(description="who takes the workers, and where, in the destination province")
    headcount: Headcount
    transport: Transport = Field(
        description="chartered-bus (包车), special-train (专列), chartered-flight (包机), other"
    )
    departure_at: AwareDatetime = Field(description="when the group leaves, with its offset")
    departure_place: ShortText = Field(description="e.g. 成都东站")
    expected_arrival_on: date = Field(description="the day the group is expected at the destination (China time)")
    escort: Contact = Field(description="who travels with the group, or answers for it")
    note: Note | None = None

    @model_validator(mode="after")
    def _linked(self) -> Self:
        if self.brand_demand_id is None and self.fair_id is None:
            raise ValueError("a dispatch answers a brand demand or comes from a recruitment event: give one of them")
        return self


class DispatchChanges(BaseModel):
    """What the origin may change before the arrival is confirmed (the rest stays as recorded)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    version: PositiveInt32 | None = Field(None, description="the version you read (or send it as If-Match)")
    employers: Employers | None = None
    headcount: Headcount | None = None
    transport: Transport | None = None
    departure_at: AwareDatetime | None = None
    departure_place: ShortText | None = None
    expected_arrival_on: date | None = None
    escort: Contact | None = None
    note: Note | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> Self:
        cleared = sorted(name for name in self.model_fields_set - {"version", "note"} if getattr(self, name) is None)
        if cleared:
            raise ValueError(f"{', '.join(cleared)}: cannot be null; leave a field out to keep it as it is")
        return self

    def given(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.model_fields_set if name != "version"}


def new_dispatch_id(province: str) -> str:
    return f"{province}-G-{uuid.uuid4().hex[:20].upper()}"


# Time limit ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfirmationLimit:
    """The destination confirms an arrival within ``days`` working days after the expected arrival date, counted
    on its own calendar."""

    calendars: Calendars
    days: int = 2

    def due(self, expected_arrival_on: date, destination: str) -> date:
        return self.calendars.of(destination).add_workdays(expected_arrival_on, self.days)


def overdue(dispatch: Dispatch, today: date) -> bool:
    """Still awaiting its arrival confirmation after the last allowed day (``today`` in China)."""
    return dispatch.state == State.ANNOUNCED and today > dispatch.confirmation_due


# Steps -------------------------------------------------------------------------------------------------------------


def _check_version(dispatch: Dispatch, expected_version: int | None) -> None:
    if expected_version is None:
        raise VersionRequired(
            f"dispatch {dispatch.id}: name the version you read (If-Match or `version`); it is at {dispatch.version}"
        )
    if expected_version != dispatch.version:
        raise StaleVersion(
            f"dispatch {dispatch.id} is at version {dispatch.version}, not {expected_version}; read it again"
        )


def _open_plan(dispatch: Dispatch, province: str, step: str) -> None:
    if province != dispatch.origin_province:
        raise NotParty(f"dispatch {dispatch.id} is {dispatch.origin_province}'s; only its origin may {step} it")
    if dispatch.state == State.ARRIVED:
        raise DispatchRuleError(
            f"dispatch {dispatch.id}: {dispatch.destination_province} confirmed its arrival; it is final"
        )
    if dispatch.state == State.CANCELLED:
        raise DispatchRuleError(f"dispatch {dispatch.id} was cancelled; a cancelled dispatch does not change")


def announce(
    draft: DispatchDraft, *, dispatch_id: str, origin: str, at: datetime, limit: ConfirmationLimit
) -> Dispatch:
    """A new dispatch recorded by ``origin``."""
    destination = draft.destination_province
    if destination == origin:
        raise InvalidDispatch(
            "destination_province", f"a dispatch goes to another province; {origin} is the origin itself"
        )
    if draft.brand_demand_id is not None and brand_demand_province(draft.brand_demand_id) != destination:
        raise InvalidDispatch(
            "brand_demand_id",
            f"brand demand {draft.brand_demand_id} is {brand_demand_province(draft.brand_demand_id)}'s; a dispatch "
            f"answers a demand of its destination {destination}",
        )
    _check_employers(draft.employers, destination)
    _check_journey(draft.departure_at, draft.expected_arrival_on)
    return Dispatch(
        id=dispatch_id,
        version=1,
        origin_province=origin,
        destination_province=destination,
        brand_demand_id=draft.brand_demand_id,
        fair_id=draft.fair_id,
        employers=draft.employers,
        headcount=draft.headcount,
        transport=draft.transport,
        departure_at=draft.departure_at,
        departure_place=draft.departure_place,
        expected_arrival_on=draft.expected_arrival_on,
        confirmation_due=limit.due(draft.expected_arrival_on, destination),
        escort=draft.escort,
        note=draft.note,
        announced_at=at,
        changed_at=at,
    )


def update(
    dispatch: Dispatch,
    changes: DispatchChanges,
    *,
    province: str,
    expected_version: int | None,
    at: datetime,
    limit: ConfirmationLimit,
) -> Dispatch:
    """The origin changes the plan (headcount, transport, times, employers, escort, note)."""
    _open_plan(dispatch, province, "change")
    _check_version(dispatch, expected_version)
    given = changes.given()
    if not given:
        raise InvalidDispatch("body", "nothing to change: give at least one field besides the version")
    after = dispatch.model_copy(update=given)
    if "employers" in given:
        _check_employers(after.employers, after.destination_province)
    _check_journey(after.departure_at, after.expected_arrival_on)
    return Dispatch.model_validate(
        {
            **dict(after),
            "version": dispatch.version + 1,
            "changed_at": at,
            "confirmation_due": limit.due(after.expected_arrival_on, after.destination_province),
        }
    )


def cancel(dispatch: Dispatch, *, province: str, expected_version: int | None, reason: str, at: datetime) -> Dispatch:
    """The origin calls the transfer off before its arrival is confirmed."""
    _open_plan(dispatch, province, "cancel")
    _check_version(dispatch, expected_version)
    return dispatch.model_copy(
        update={"version": dispatch.version + 1, "changed_at": at, "cancelled_at": at, "cancellation_reason": reason}
    )


def confirm_arrival(
    dispatch: Dispatch,
    *,
    province: str,
    expected_version: int | None,
    arrived_at: datetime,
    headcount_received: int,
    note: str | None,
    at: datetime,
) -> Dispatch:
    """The destination confirms, once, when the group arrived and how many workers it received.

    A difference from the headcount sent must be explained in ``note``; more workers than sent may be recorded (up
    to twice the headcount) and show as a negative difference.
    """
    if province != dispatch.destination_province:
        raise NotParty(
            f"dispatch {dispatch.id} goes to {dispatch.destination_province}; only the destination confirms its arrival"
        )
    if dispatch.state == State.ARRIVED:
        raise DispatchRuleError(
            f"dispatch {dispatch.id}: the arrival was confirmed already at "
            f"{dispatch.arrival.confirmed_at.isoformat() if dispatch.arrival else ''}; a confirmation is final"
        )
    if dispatch.state == State.CANCELLED:
        raise DispatchRuleError(f"dispatch {dispatch.id} was cancelled by {dispatch.origin_province}")
    _check_version(dispatch, expected_version)
    most = RECEIVED_FACTOR * dispatch.headcount
    if headcount_received > most:
        raise InvalidDispatch(
            "headcount_received",
            f"{headcount_received} workers received on a dispatch of {dispatch.headcount}: at most {most} "
            f"({RECEIVED_FACTOR} × the headcount sent) can be recorded",
        )
    if headcount_received != dispatch.headcount and note is None:
        raise InvalidDispatch(
            "note",
            f"{headcount_received} received of {dispatch.headcount} sent: say what explains the difference",
        )
    if arrived_at > at + ARRIVAL_CLOCK_SKEW:
        raise InvalidDispatch("arrived_at", f"arrival {arrived_at.isoformat()} is in the future")
    if arrived_at < dispatch.departure_at:
        raise InvalidDispatch(
            "arrived_at",
            f"arrival {arrived_at.isoformat()} is before the departure {dispatch.departure_at.isoformat()}",
        )
    arrival = Arrival(
        arrived_at=arrived_at,
        headcount_received=headcount_received,
        note=note,
        confirmed_at=at,
        plan_version=dispatch.version,
    )
    return dispatch.model_copy(update={"arrival": arrival})


def message_type(dispatch: Dispatch, *, by: str) -> str:
    """The message carrying the step ``by`` (a party) just took."""
    if by == dispatch.destination_province:
        return ARRIVAL_CONFIRMED
    if dispatch.cancelled_at is not None:
        return CANCELLED
    return ANNOUNCED if dispatch.version == 1 else UPDATED


# Messages received -------------------------------------------------------------------------------------------------


def receive_plan(held: Dispatch | None, incoming: Dispatch, *, sender: str, receiver: str) -> Dispatch | None:
    """The dispatch after the origin's plan ``incoming`` arrives at the destination ``receiver``; None when it
    changes nothing (a version held already). The destination's own arrival is kept."""
    if sender != incoming.origin_province:
        raise MessageRefused(
            f"dispatch {incoming.id} of origin {incoming.origin_province} was sent by {sender}; only its origin "
            "changes the plan"
        )
    if receiver != incoming.destination_province:
        raise MessageRefused(f"dispatch {incoming.id} goes to {incoming.destination_province}, not to {receiver}")
    if held is not None:
        if (held.origin_province, held.destination_province) != (incoming.origin_province, receiver):
            raise MessageRefused(f"dispatch {incoming.id} changes its origin or destination")
        if incoming.version <= held.version:
            return None
        return incoming.model_copy(update={"arrival": held.arrival})
    return incoming


def receive_arrival(held: Dispatch | None, incoming: Dispatch, *, sender: str, receiver: str) -> Dispatch | None:
    """The dispatch after the destination's arrival confirmation arrives at the origin ``receiver``; None when it
    changes nothing (confirmed already). The origin's plan is kept: the destination does not write it."""
    if incoming.arrival is None:
        raise MessageRefused(f"dispatch {incoming.id}: an arrival confirmation without an arrival")
    if sender != incoming.destination_province:
        raise MessageRefused(
            f"dispatch {incoming.id} goes to {incoming.destination_province}; {sender} cannot confirm its arrival"
        )
    if receiver != incoming.origin_province:
        raise MessageRefused(f"dispatch {incoming.id} was sent by {incoming.origin_province}, not by {receiver}")
    if held is None:
        raise MessageRefused(f"dispatch {incoming.id} was never recorded here, its origin")
    if held.destination_province != sender:
        raise MessageRefused(
            f"dispatch {incoming.id} goes to {held.destination_province}; {sender} cannot confirm its arrival"
        )
    if held.arrival is not None:
        return None
    if incoming.arrival.plan_version > held.version:
        raise MessageRefused(
            f"dispatch {incoming.id}: the arrival names plan version {incoming.arrival.plan_version}, which its "
            f"origin never wrote (it is at {held.version})"
        )
    return held.model_copy(update={"arrival": incoming.arrival})

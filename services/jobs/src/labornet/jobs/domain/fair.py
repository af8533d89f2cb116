"""Joint recruitment events (劳务对接活动, 招聘会): what an organiser publishes, how the event moves, who may act.

An event belongs to its **organiser**, the province whose officer created it; only that province changes it, and
every change raises its ``version``. The **co-organisers** (federation members named by the organiser) each keep a
**listing** of their own province's vacancies at the event, a small aggregate of its own that only that province
writes. Every node keeps a replica of both; newer versions win. Workers **register** at their home node, which
sends the registration to the organiser alone.

::

    scheduled ──update (before the end)──▶ scheduled
        ├──cancel (before the end, a reason)──▶ cancelled
        └──record outcomes (once started)──▶ concluded ──record outcomes again (a correction)──▶ concluded

The phase (upcoming, ongoing, past) follows the dates in China; registration is open while the event is not
cancelled and its registration has not closed (by default at the end of its last day). A registration submitted
before the close that reaches the organiser after it is still accepted.

Everything here is plain rules over immutable values; storage, messages and HTTP live elsewhere.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    AnyUrl,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    UrlConstraints,
    model_validator,
)

from labornet.jobs.domain.vacancy import OccupationCode
from labornet.shared.bounds import NonNegativeInt32, PositiveInt32, PositiveInt64
from labornet.shared.clock import CHINA, china_date
from labornet.shared.identifiers import PhoneStr

# Broadcast on the organiser's jobs events stream: the whole event as the organiser holds it after the change.
PUBLISHED = "org.labornet.jobs.fair.published.v1"
UPDATED = "org.labornet.jobs.fair.updated.v1"
CANCELLED = "org.labornet.jobs.fair.cancelled.v1"
OUTCOMES_RECORDED = "org.labornet.jobs.fair.outcomes-recorded.v1"
FAIR_EVENT_TYPES = (PUBLISHED, UPDATED, CANCELLED, OUTCOMES_RECORDED)
# Broadcast by each organising province on its own stream: the vacancies it lists at the event.
LISTING = "org.labornet.jobs.fair.listing.v1"
# Broadcast by the organiser: anonymous counts of the registrations it received, by home province.
STATISTICS = "org.labornet.jobs.fair.statistics.v1"
# Directed: home → organiser (a worker registers, cancels), organiser → home (accepted or refused).
REGISTRATION = "org.labornet.jobs.fair.registration.v1"
REGISTRATION_CANCELLED = "org.labornet.jobs.fair.registration-cancelled.v1"
REGISTRATION_ANSWERED = "org.labornet.jobs.fair.registration-answered.v1"

MAX_DAYS_AHEAD = 366  # an event starts within a year
MAX_DURATION_DAYS = 92  # a campaign month, a quarter at most
MAX_CAPACITY = 1_000_000
MAX_VACANCIES = 200  # one province's listing at one event
MAX_COUNT = 10_000_000  # any outcome count


class Campaign(StrEnum):
    SPRING_BREEZE_ACTION = "spring-breeze-action"  # 春风行动
    EMPLOYMENT_ASSISTANCE_MONTH = "employment-assistance-month"  # 就业援助月
    PRIVATE_ENTERPRISE_SERVICE_MONTH = "private-enterprise-service-month"  # 民营企业服务月
    MIGRANT_WORKER_SPECIAL = "migrant-worker-special"  # 农民工专场
    GRADUATE_SPECIAL = "graduate-special"  # 高校毕业生专场
    LABOUR_BRAND_DOCKING = "labour-brand-docking"  # 劳务品牌对接
    OTHER = "other"


class Mode(StrEnum):
    ONLINE = "online"
    VENUE = "venue"


class FairStatus(StrEnum):
    SCHEDULED = "scheduled"
    CANCELLED = "cancelled"
    CONCLUDED = "concluded"  # outcomes recorded


class Phase(StrEnum):
    UPCOMING = "upcoming"
    ONGOING = "ongoing"
    PAST = "past"


class RegistrationStatus(StrEnum):
    SUBMITTED = "submitted"  # at home, on its way to the organiser
    ACCEPTED = "accepted"
    REFUSED = "refused"
    CANCELLED = "cancelled"


ACTIVE_REGISTRATION = frozenset({RegistrationStatus.SUBMITTED, RegistrationStatus.ACCEPTED})


class RefusalReason(StrEnum):
    CLOSED = "registration-closed"  # submitted after the close
    FULL = "capacity-full"
    CANCELLED = "event-cancelled"


class Answer(StrEnum):
    ACCEPTED = "accepted"
    REFUSED = "refused"


class FairRuleError(Exception):
    """A change the event's rules do not allow now (cancelled, ended, closed…); the message says why."""


class NotOrganiser(FairRuleError):
    """The acting province has no standing for this change."""


class StaleVersion(FairRuleError):
    """The change names a version other than the one held."""


class VersionRequired(FairRuleError):
    """A change that does not say which version it applies to."""


class InvalidFair(ValueError):
    """What the federation's configuration refuses in a body (a co-organiser that is no member, a division outside
    the organiser's province); ``errors`` name each field."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors


# Field types ---------------------------------------------------------------------------------------------------

_PROVINCE = r"^\d{2}0000$"
_VACANCY_ID = r"^\d{2}0000-V-[0-9A-Za-z]{1,30}$"


ProvinceCode = Annotated[str, Field(pattern=_PROVINCE)]
VacancyId = Annotated[str, Field(pattern=_VACANCY_ID, max_length=40)]
Title = Annotated[str, Field(min_length=1, max_length=200)]
EventUrl = Annotated[AnyUrl, UrlConstraints(max_length=500, allowed_schemes=["https", "http"])]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
# Every time an event holds or carries is UTC (a date in China is a date): what is stored is what is sent
UtcTime = Annotated[AwareDatetime, AfterValidator(lambda value: value.astimezone(UTC))]


def end_of_day(day: date) -> datetime:
    """The last moment of ``day`` in China: midnight at the start of the next day (China time)."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=CHINA)


class Venue(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
    division_code: str = Field(pattern=r"^\d{6}$", description="prefecture or county code, in the organiser's province")
    address: str = Field(min_length=1, max_length=300)


# The event -----------------------------------------------------------------------------------------------------


class _EventFields(BaseModel):
    """What an organiser decides about an event, held to the rules that need no configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
    title: Title
    description: str = Field("", max_length=5000)
    campaign: Campaign
    co_organisers: list[ProvinceCode] = Field(
        default_factory=list, max_length=40, description="federation members other than the organiser, each once"
    )
    mode: Mode
    url: EventUrl | None = Field(None, description="online: where the event takes place; venue: a live stream")
    venue: Venue | None = Field(None, description="venue: where it takes place (none for an online event)")
    starts_on: date = Field(description="first day, China time")
    ends_on: date = Field(description="last day, China time")
    registration_closes_at: UtcTime | None = Field(
        None, description="default: the end of the last day (China time); at the latest then"
    )
    capacity: PositiveInt32 | None = Field(None, le=MAX_CAPACITY, description="registrations taken at most")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.ends_on < self.starts_on:
            raise ValueError(f"ends_on {self.ends_on} is before starts_on {self.starts_on}")
        if (self.ends_on - self.starts_on).days >= MAX_DURATION_DAYS:
            raise ValueError(f"an event lasts at most {MAX_DURATION_DAYS} days ({self.starts_on} to {self.ends_on})")
        if self.mode == Mode.ONLINE and (self.url is None or self.venue is not None):
            raise ValueError("an online event has a url and no venue")
        if self.mode == Mode.VENUE and self.venue is None:
            raise ValueError("a venue event has a venue (division_code and address)")
        if len(set(self.co_organisers)) != len(self.co_organisers):
            raise ValueError(f"co_organisers {self.co_organisers} lists a province twice")
        closes = self.registration_closes_at
        if closes is not None and closes > end_of_day(self.ends_on):
            raise ValueError(
                f"registration_closes_at {closes.isoformat()} is after the event's last day {self.ends_on}"
            )
        return self


class FairDraft(_EventFields):
    """What an officer sends to create an event (the organiser is the officer's province)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "title": "2027 春风行动 川渝劳务协作专场招聘会",
                    "description": "川渝两地联合举办，现场签约，提供包车返岗。",
                    "campaign": "spring-breeze-action",
                    "co_organisers": ["510000"],
                    "mode": "venue",
                    "venue": {"division_code": "500103", "address": "重庆市渝中区人力资源市场一楼"},
                    "starts_on": "2027-02-10",
                    "ends_on": "2027-02-12",
                    "capacity": 2000,
                }
            ]
        }
    )


class FairChanges(BaseModel):
    """A partial update of an event: the fields sent replace those held; ``version`` (or If-Match) names the
    version changed."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    title: Title | None = None
    description: str | None = Field(None, max_length=5000)
    campaign: Campaign | None = None
    co_organisers: list[ProvinceCode] | None = Field(None, max_length=40)
    mode: Mode | None = None
    url: EventUrl | None = None
    venue: Venue | None = None
    starts_on: date | None = None
    ends_on: date | None = None
    registration_closes_at: UtcTime | None = None
    capacity: PositiveInt32 | None = Field(None, le=MAX_CAPACITY)
    version: PositiveInt32 | None = Field(None, description="the version changed (or If-Match)")


class Outcomes(BaseModel):
    """What the event achieved, as the organiser counted it."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
    employers_attending: Count
    jobseekers_attending: Count | None = Field(None, description="if counted")
    intentions_reached: Count = Field(description="employment intentions (意向) signed at the event")
    hires: Count = Field(description="hired at or because of the event; at most intentions_reached")
    note: str | None = Field(None, max_length=2000)

    @model_validator(mode="after")
    def _hires_within_intentions(self) -> Self:
        if self.hires > self.intentions_reached:
            raise ValueError(
                f"hires {self.hires} is more than intentions_reached {self.intentions_reached}: every hire at an "
                "event is first an intention reached"
            )
        return self


class RecordedOutcomes(Outcomes):
    recorded_at: UtcTime


class Fair(_EventFields):
    """The whole event as its organiser holds it and as the broadcast events carry it."""

    model_config = ConfigDict(extra="ignore")  # a later version may add optional fields
    id: str = Field(max_length=40, description="`<organiser>-F-<20 hex>`")
    version: PositiveInt32
    organiser_province: ProvinceCode
    registration_closes_at: UtcTime  # always set once created
    status: FairStatus
    cancel_reason: str | None = Field(None, max_length=500)
    outcomes: RecordedOutcomes | None = None
    created_at: UtcTime
    updated_at: UtcTime

    @model_validator(mode="after")
    def _fair_consistent(self) -> Self:
        if not re.fullmatch(rf"{self.organiser_province}-F-[0-9A-F]{{20}}", self.id):
            raise ValueError(f"event id {self.id} is not an id of province {self.organiser_province}")
        if self.organiser_province in self.co_organisers:
            raise ValueError(f"event {self.id}: the organiser {self.organiser_province} is not its own co-organiser")
        if self.venue is not None and self.venue.division_code[:2] != self.organiser_province[:2]:
            raise ValueError(f"event {self.id}: venue {self.venue.division_code} is outside the organiser's province")
        if (self.status == FairStatus.CONCLUDED) != (self.outcomes is not None):
            raise ValueError(f"event {self.id} is {self.status}; outcomes go with a concluded event only")
        if (self.status == FairStatus.CANCELLED) != (self.cancel_reason is not None):
            raise ValueError(f"event {self.id} is {self.status}; a cancel reason goes with a cancelled event only")
        if self.updated_at < self.created_at:
            raise ValueError(f"event {self.id} was updated at {self.updated_at}, before it was created")
        return self

    @property
    def provinces(self) -> list[str]:
        """The organising provinces: the organiser first, then the co-organisers."""
        return [self.organiser_province, *self.co_organisers]

    def phase(self, today: date) -> Phase:
        if today < self.starts_on:
            return Phase.UPCOMING
        return Phase.ONGOING if today <= self.ends_on else Phase.PAST

    def ended(self, at: datetime) -> bool:
        return at >= end_of_day(self.ends_on)

    def registration_open(self, at: datetime) -> bool:
        return self.status != FairStatus.CANCELLED and at < self.registration_closes_at


def new_fair_id(province: str) -> str:
    return f"{province}-F-{uuid.uuid4().hex[:20].upper()}"


def check_federation(fields: _EventFields, *, organiser: str, members: Collection[str]) -> None:
    """The co-organisers are other members of the federation; :class:`InvalidFair` naming each field otherwise.
    (The venue's division is checked against the division registry by the use case.)"""
    errors = []
    for i, code in enumerate(fields.co_organisers):
        if code == organiser:
            errors.append({"field": f"co_organisers.{i}", "message": f"{code} is the organiser itself"})
        elif code not in members:
            errors.append(
                {"field": f"co_organisers.{i}", "message": f"{code} is not a member (members: {', '.join(members)})"}
            )
    if errors:
        raise InvalidFair(errors)


def _check_dates(fields: _EventFields, *, at: datetime, held: Fair | None) -> None:
    """New dates lie ahead: the start within a year (unless it is the one held), the last day not past, a
    registration close named anew not past."""
    today = china_date(at)
    errors = []
    if held is None or held.starts_on != fields.starts_on:
        if fields.starts_on < today:
            errors.append({"field": "starts_on", "message": f"{fields.starts_on} is past (today is {today} in China)"})
        elif fields.starts_on > today + timedelta(days=MAX_DAYS_AHEAD):
            errors.append({"field": "starts_on", "message": f"more than {MAX_DAYS_AHEAD} days ahead"})
    if fields.ends_on < today:
        errors.append({"field": "ends_on", "message": f"{fields.ends_on} is past (today is {today} in China)"})
    closes = fields.registration_closes_at
    if closes is not None and closes <= at and (held is None or closes != held.registration_closes_at):
        errors.append({"field": "registration_closes_at", "message": f"{closes.isoformat()} is past"})
    if errors:
        raise InvalidFair(errors)


def open_fair(draft: FairDraft, *, fair_id: str, organiser: str, members: Collection[str], at: datetime) -> Fair:
    check_federation(draft, organiser=organiser, members=members)
    _check_dates(draft, at=at, held=None)
    return Fair.model_validate(
        {
            **draft.model_dump(),
            "registration_closes_at": draft.registration_closes_at or end_of_day(draft.ends_on),
            "id": fair_id,
            "version": 1,
            "organiser_province": organiser,
            "status": FairStatus.SCHEDULED,
            "created_at": at,
            "updated_at": at,
        }
    )


def check_version(fair: Fair, expected: int | None) -> None:
    if expected is None:
        raise VersionRequired(
            f"name the version of event {fair.id} you change (If-Match or version): it is {fair.version}"
        )
    if expected != fair.version:
        raise StaleVersion(f"event {fair.id} is at version {fair.version}, not {expected}; reload it and try again")


def _changeable(fair: Fair, province: str, at: datetime, change: str) -> None:
    """``change`` (e.g. "changed", "cancelled") is allowed: by the organiser, on a scheduled event not yet over."""
    if fair.organiser_province != province:
        raise NotOrganiser(f"event {fair.id} is organised by {fair.organiser_province}; only that province acts on it")
    if fair.status != FairStatus.SCHEDULED:
        raise FairRuleError(f"event {fair.id} is {fair.status}; only a scheduled event is {change}")
    if fair.ended(at):
        raise FairRuleError(f"event {fair.id} ended on {fair.ends_on}; an event that has ended is not {change}")


_EVENT_FIELDS = tuple(_EventFields.model_fields)


def update_fair(
    fair: Fair, changes: FairChanges, *, province: str, members: Collection[str], at: datetime, version: int | None
) -> Fair:
    """The fields sent replace those held. A registration close left at its default follows a new last day."""
    _changeable(fair, province, at, "changed")
    check_version(fair, version)
    sent = changes.model_dump(exclude_unset=True, exclude={"version"})
    held = fair.model_dump(include=set(_EVENT_FIELDS))
    if "registration_closes_at" not in sent and fair.registration_closes_at == end_of_day(fair.ends_on):
        held["registration_closes_at"] = None
    if sent.get("mode") == Mode.ONLINE and "venue" not in sent:
        held["venue"] = None
    merged = _EventFields.model_validate({**held, **sent})
    check_federation(merged, organiser=province, members=members)
    _check_dates(merged, at=at, held=fair)
    return Fair.model_validate(
        {
            **fair.model_dump(),
            **merged.model_dump(),
            "registration_closes_at": merged.registration_closes_at or end_of_day(merged.ends_on),
            "version": fair.version + 1,
            "updated_at": at,
        }
    )


def cancel_fair(fair: Fair, *, province: str, at: datetime, version: int | None, reason: str) -> Fair:
    _changeable(fair, province, at, "cancelled")
    check_version(fair, version)
    return fair.model_copy(
        update={"status": FairStatus.CANCELLED, "cancel_reason": reason, "version": fair.version + 1, "updated_at": at}
    )


def record_outcomes(fair: Fair, outcomes: Outcomes, *, province: str, at: datetime, version: int | None) -> Fair:
    """Outcomes are recorded once the event has started, and may be recorded again to correct them."""
    if fair.organiser_province != province:
        raise NotOrganiser(f"event {fair.id} is organised by {fair.organiser_province}; only that province records it")
    if fair.status == FairStatus.CANCELLED:
        raise FairRuleError(f"event {fair.id} was cancelled; a cancelled event has no outcomes")
    today = china_date(at)
    if today < fair.starts_on:
        raise FairRuleError(
            f"event {fair.id} starts on {fair.starts_on} (today is {today} in China); outcomes come after"
        )
    if version is not None:
        check_version(fair, version)
    recorded = RecordedOutcomes(**outcomes.model_dump(), recorded_at=at)
    return fair.model_copy(
        update={"status": FairStatus.CONCLUDED, "outcomes": recorded, "version": fair.version + 1, "updated_at": at}
    )


def event_type_of(fair: Fair) -> str:
    """The broadcast event that carries this version of the event."""
    if fair.version == 1:
        return PUBLISHED
    if fair.status == FairStatus.CANCELLED:
        return CANCELLED
    return OUTCOMES_RECORDED if fair.status == FairStatus.CONCLUDED else UPDATED


# Which status and versions each event type may carry.
_EVENT_STATUS = {
    PUBLISHED: (FairStatus.SCHEDULED,),
    UPDATED: (FairStatus.SCHEDULED,),
    CANCELLED: (FairStatus.CANCELLED,),
    OUTCOMES_RECORDED: (FairStatus.CONCLUDED,),
}


def check_replicated(event_type: str, fair: Fair) -> None:
    """The event type fits the event it carries (``ValueError`` saying what does not)."""
    if fair.status not in _EVENT_STATUS[event_type]:
        raise ValueError(f"{event_type} cannot carry event {fair.id} with status {fair.status}")
    if (event_type == PUBLISHED) != (fair.version == 1):
        raise ValueError(f"{event_type} cannot carry version {fair.version} of event {fair.id}")


# A province's vacancies at an event ----------------------------------------------------------------------------


class ListingRequest(BaseModel):
    """The vacancies of the caller's province at the event; it replaces the province's previous list."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"vacancy_ids": ["510000-V-88C3B9F30C444A6395CB"]}]},
    )
    vacancy_ids: list[VacancyId] = Field(max_length=MAX_VACANCIES, description="open vacancies of your province")
    version: PositiveInt32 | None = Field(
        None, description="the listing's version you replace (or If-Match); none for a province's first listing"
    )

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        if len(set(self.vacancy_ids)) != len(self.vacancy_ids):
            raise ValueError("vacancy_ids lists a vacancy twice")
        return self


class Listing(BaseModel):
    """One organising province's vacancies at one event, as it broadcasts them."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    fair_id: str = Field(max_length=40)
    province: ProvinceCode = Field(description="the province listing its vacancies, the only writer of this list")
    version: PositiveInt32
    fair_version: PositiveInt32 = Field(description="the event's version the province acted on")
    vacancy_ids: list[VacancyId] = Field(max_length=MAX_VACANCIES)
    updated_at: UtcTime

    @model_validator(mode="after")
    def _own_vacancies(self) -> Self:
        foreign = [v for v in self.vacancy_ids if not v.startswith(f"{self.province}-V-")]
        if foreign:
            raise ValueError(f"listing of {self.province} at {self.fair_id} names vacancies of others: {foreign}")
        return self


def check_listing_standing(fair: Fair, province: str, at: datetime) -> None:
    """Only an organising province lists vacancies, while the event is neither cancelled nor over."""
    if province not in fair.provinces:
        raise NotOrganiser(
            f"province {province} neither organises nor co-organises event {fair.id} "
            f"(organisers: {', '.join(fair.provinces)})"
        )
    if fair.status == FairStatus.CANCELLED:
        raise FairRuleError(f"event {fair.id} was cancelled; no vacancies are listed at it")
    if fair.ended(at):
        raise FairRuleError(f"event {fair.id} ended on {fair.ends_on}; its listings are closed")


def new_listing(
    fair: Fair, held: Listing | None, vacancy_ids: list[str], *, province: str, at: datetime, version: int | None
) -> Listing:
    check_listing_standing(fair, province, at)
    if held is not None and version is not None and version != held.version:
        raise StaleVersion(
            f"the listing of {province} at {fair.id} is at version {held.version}, not {version}; reload it"
        )
    return Listing(
        fair_id=fair.id,
        province=province,
        version=held.version + 1 if held else 1,
        fair_version=fair.version,
        vacancy_ids=vacancy_ids,
        updated_at=at,
    )


# Registrations -------------------------------------------------------------------------------------------------


class RegistrationDraft(BaseModel):
    """What a worker sends to register for an event at their home node."""

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={
            "examples": [{"name": "王小明", "phone": "13812345678", "occupations": ["7112"], "note": "想找砌筑工作"}]
        },
    )
    name: str = Field(min_length=1, max_length=50)
    phone: PhoneStr
    occupations: list[OccupationCode] = Field(
        default_factory=list, max_length=10, description="ISCO-08 codes of the work sought (optional)"
    )
    note: str | None = Field(None, max_length=500)

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        if len(set(self.occupations)) != len(self.occupations):
            raise ValueError("occupations lists a code twice")
        return self


class RegistrationMessage(BaseModel):
    """A registration as the home node sends it to the organiser (personal data: those two provinces only)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    id: str = Field(max_length=40, description="`<home>-R-<20 hex>`")
    fair_id: str = Field(max_length=40)
    organiser_province: ProvinceCode
    home_province: ProvinceCode
    name: str = Field(min_length=1, max_length=50)
    phone: PhoneStr
    occupations: list[OccupationCode] = Field(max_length=10)
    note: str | None = Field(None, max_length=500)
    submitted_at: UtcTime

    @model_validator(mode="after")
    def _ids(self) -> Self:
        if not re.fullmatch(rf"{self.home_province}-R-[0-9A-F]{{20}}", self.id):
            raise ValueError(f"registration id {self.id} is not an id of province {self.home_province}")
        if not self.fair_id.startswith(f"{self.organiser_province}-F-"):
            raise ValueError(f"event {self.fair_id} is not organised by {self.organiser_province}")
        return self


class RegistrationCancellation(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    id: str = Field(max_length=40)
    fair_id: str = Field(max_length=40)
    cancelled_at: UtcTime


class RegistrationAnswer(BaseModel):
    """The organiser's answer to a registration, sent back to the worker's home node."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    id: str = Field(max_length=40)
    fair_id: str = Field(max_length=40)
    result: Answer
    reason: RefusalReason | None = None
    answered_at: UtcTime

    @model_validator(mode="after")
    def _reason_with_refusal(self) -> Self:
        if (self.result == Answer.REFUSED) != (self.reason is not None):
            raise ValueError("a refusal has a reason, an acceptance none")
        return self


def new_registration_id(province: str) -> str:
    return f"{province}-R-{uuid.uuid4().hex[:20].upper()}"


def check_registration(fair: Fair, *, at: datetime, taken: int) -> None:
    """Whether a worker may register now, as far as the home node knows (``taken``: registrations it counts)."""
    if fair.status == FairStatus.CANCELLED:
        raise FairRuleError(f"event {fair.id} was cancelled ({fair.cancel_reason}); it takes no registrations")
    if not fair.registration_open(at):
        raise FairRuleError(
            f"registration for event {fair.id} closed at {fair.registration_closes_at.astimezone(CHINA).isoformat()}"
        )
    if fair.capacity is not None and taken >= fair.capacity:
        raise FairRuleError(f"event {fair.id} is full: {taken} registrations for {fair.capacity} places")


def answer_registration(fair: Fair, message: RegistrationMessage, *, accepted: int) -> RefusalReason | None:
    """The organiser's decision on a registration that reached it: None to accept it, else why it is refused.
    What counts is when the worker submitted it, not when it arrived."""
    if fair.status == FairStatus.CANCELLED:
        return RefusalReason.CANCELLED
    if message.submitted_at >= fair.registration_closes_at:
        return RefusalReason.CLOSED
    if fair.capacity is not None and accepted >= fair.capacity:
        return RefusalReason.FULL
    return None


# Anonymous statistics ------------------------------------------------------------------------------------------


class RegistrationCount(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    home_province: ProvinceCode
    accepted: NonNegativeInt32 = Field(description="registrations taken (cancelled ones excluded)")
    refused: NonNegativeInt32
    cancelled: NonNegativeInt32


class FairStatistics(BaseModel):
    """Counts of the registrations an organiser received for one event, by home province: no name, no phone."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    fair_id: str = Field(max_length=40)
    organiser_province: ProvinceCode
    generation: PositiveInt64 = Field(description="a newer snapshot of the same event has a higher generation")
    as_of: UtcTime
    registrations: list[RegistrationCount] = Field(max_length=100)


def taken_by_others(counts: Sequence[Mapping[str, Any]], home: str) -> int:
    return sum(int(c["accepted"]) for c in counts if c["home_province"] != home)

"""Applications across provinces: a worker applies from the home province to a vacancy of any member province.

An application is made at the worker's **home** node and belongs to the vacancy's **owner** province, whose
officers move it; both provinces hold the same application and no other does (it carries a person's name and
phone). Every change raises ``version`` and appends to the timeline; the owner sends the whole application home
after each change, and the home applies it only when its version is newer. The worker withdraws at home: while the
application is with the owner, the home sends a request (:class:`WithdrawalRequest`), not a change.

::

    received ──▶ shortlisted ──▶ interview ──▶ offer ──hire──▶ hired
        │             │           │  ▲ (another round,  │
        │             │           └──┘  a new time)     │
        └─────────────┴───────────┴─────────────────────┴──▶ not-selected (reason) | withdrawn

Moves go forward only. Shortlisting and the interview may be skipped (an employer may offer on the papers); a hire
needs an offer first, since the offer states the salary and start date the worker accepts. An interview may be
set again (a second round, or a new time). ``hired``, ``not-selected`` and ``withdrawn`` are final.

No resident identity number travels (data minimisation): the owner needs a name and a phone to reach the
applicant, not their identity; the worker's account (the token's ``sub``) stays at the home node.

Everything here is plain rules over immutable values; storage, messages and HTTP live elsewhere.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from labornet.jobs.domain.vacancy import Status as VacancyStatus
from labornet.jobs.domain.vacancy import TargetGroup
from labornet.shared.bounds import PositiveInt32
from labornet.shared.clock import china_date
from labornet.shared.identifiers import PhoneStr

# Directed messages between the worker's home province and the vacancy's owner province.
SUBMITTED = "org.labornet.jobs.application.submitted.v1"  # home → owner, version 1
CHANGED = "org.labornet.jobs.application.changed.v1"  # owner → home, every later version
WITHDRAWAL_REQUESTED = "org.labornet.jobs.application.withdrawal-requested.v1"  # home → owner
MESSAGE_TYPES = (SUBMITTED, CHANGED, WITHDRAWAL_REQUESTED)

MAX_SALARY = 1_000_000  # CNY per month, as a vacancy's salary
APPLICANT = "applicant"  # the actor of the worker's own steps; the worker's account never travels


class ApplicationState(StrEnum):
    RECEIVED = "received"
    SHORTLISTED = "shortlisted"
    INTERVIEW = "interview"
    OFFER = "offer"
    HIRED = "hired"
    NOT_SELECTED = "not-selected"
    WITHDRAWN = "withdrawn"


FINAL = frozenset({ApplicationState.HIRED, ApplicationState.NOT_SELECTED, ApplicationState.WITHDRAWN})
# Ended without a hire: the worker may apply to the same vacancy again.
ENDED_UNHIRED = frozenset({ApplicationState.NOT_SELECTED, ApplicationState.WITHDRAWN})
_ORDER = {
    ApplicationState.RECEIVED: 0,
    ApplicationState.SHORTLISTED: 1,
    ApplicationState.INTERVIEW: 2,
    ApplicationState.OFFER: 3,
}


class EntryKind(StrEnum):
    SUBMITTED = "submitted"
    SHORTLISTED = "shortlisted"
    INTERVIEW = "interview"
    OFFER = "offer"
    HIRED = "hired"
    NOT_SELECTED = "not-selected"
    WITHDRAWN = "withdrawn"


class ApplicationRuleError(Exception):
    """A change the application's rules do not allow now (wrong state, no places left…); the message says why."""


class NoStanding(ApplicationRuleError):
    """The acting province may not take this step (only the owner province moves an application)."""


class VacancyNotOpen(ApplicationRuleError):
    """The vacancy takes no applications (or no hires) now: closed, past its closing date, or no places left."""


class StaleApplication(ApplicationRuleError):
    """The caller named a version that is not the one held: someone changed the application since."""


# Field types ---------------------------------------------------------------------------------------------------

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]
Item = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]
Note = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
Place = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Salary = Annotated[int, Field(ge=0, le=MAX_SALARY, description="CNY per month")]
_PROVINCE = r"^\d{2}0000$"


class Profile(BaseModel):
    """What the applicant tells the employer. Only the home and the owner province ever hold it."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
    name: Name
    phone: PhoneStr
    skills: list[Item] = Field(default_factory=list, max_length=30)
    certificates: list[Item] = Field(
        default_factory=list, max_length=20, description="e.g. 中式烹调师四级, a driving licence class"
    )
    experience_years: int = Field(ge=0, le=60, description="years of experience in the occupation")
    expected_salary: Salary | None = Field(None, description="CNY per month")
    available_from: date = Field(description="the first day the applicant can start (China time)")
    target_groups: list[TargetGroup] = Field(
        default_factory=list, max_length=6, description="the groups the applicant belongs to (counted in statistics)"
    )
    cover_note: str = Field("", max_length=1000, description="a short note to the employer")

    @field_validator("skills", "certificates", "target_groups")
    @classmethod
    def _distinct(cls, value: list[Any]) -> list[Any]:
        return list(dict.fromkeys(value))


class VacancyRef(BaseModel):
    """What an application keeps of its vacancy when it is made (the vacancy itself lives in the replica)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(max_length=40)
    title: str = Field(max_length=200)
    employer_name: str = Field(max_length=200)
    occupation_code: str = Field(pattern=r"^\d{1,4}$")
    city: str = Field(max_length=100)


class Interview(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
    at: datetime = Field(description="when (with its offset)")
    place: Place = Field(description="where: an address, or the video meeting's link")


class Offer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    salary: Salary
    start_date: date = Field(description="the first working day (China time)")


class Entry(BaseModel):
    """One step of the timeline, written by the province that took it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    seq: PositiveInt32
    at: datetime
    province: str = Field(pattern=_PROVINCE)
    actor: str = Field(max_length=220, description="applicant, or officer:<sub>")
    kind: EntryKind
    state: ApplicationState = Field(description="the application's state after this step")
    note: str | None = Field(None, max_length=2000)
    details: dict[str, Any] = Field(default_factory=dict)


class Application(BaseModel):
    """The whole application as both provinces hold it and as the directed messages carry it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^\d{2}0000-A-[0-9A-F]{20}$", description="`<home province>-A-<20 hex>`")
    version: PositiveInt32
    home_province: str = Field(pattern=_PROVINCE, description="the worker's province, where the application was made")
    owner_province: str = Field(pattern=_PROVINCE, description="the vacancy's province, the one that moves it")
    vacancy: VacancyRef
    profile: Profile
    state: ApplicationState
    submitted_at: datetime
    interview: Interview | None = None
    offer: Offer | None = None
    hired_at: datetime | None = None
    reason: str | None = Field(None, max_length=2000, description="why not selected")
    timeline: list[Entry] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not self.id.startswith(f"{self.home_province}-A-"):
            raise ValueError(f"application {self.id} was not made in its home province {self.home_province}")
        if not self.vacancy.id.startswith(f"{self.owner_province}-V-"):
            raise ValueError(f"application {self.id}: vacancy {self.vacancy.id} is not of {self.owner_province}")
        if [entry.seq for entry in self.timeline] != list(range(1, len(self.timeline) + 1)):
            raise ValueError(f"application {self.id}: the timeline must be numbered 1, 2, 3… without gaps")
        if self.timeline[-1].state != self.state:
            raise ValueError(
                f"application {self.id} is {self.state}, but its last step left it {self.timeline[-1].state}"
            )
        if self.version != len(self.timeline):
            raise ValueError(f"application {self.id}: version {self.version} with {len(self.timeline)} steps")
        if (self.state == ApplicationState.HIRED) != (self.hired_at is not None):
            raise ValueError(f"application {self.id}: a hire time goes with the state hired, and only with it")
        return self

    @property
    def final(self) -> bool:
        return self.state in FINAL

    @property
    def last_entry(self) -> Entry:
        return self.timeline[-1]


class WithdrawalRequest(BaseModel):
    """The worker withdraws while the owner holds the application: it is withdrawn there if still open."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    application_id: str = Field(pattern=r"^\d{2}0000-A-[0-9A-F]{20}$")
    vacancy_id: str = Field(max_length=40, description="the application's vacancy: its province is the addressee")
    version: PositiveInt32 = Field(description="the application's version at home when the worker withdrew")
    requested_at: datetime
    note: str | None = Field(None, max_length=2000)


def new_application_id(province: str) -> str:
    return f"{province}-A-{uuid.uuid4().hex[:20].upper()}"


def officer(sub: str) -> str:
    return f"officer:{sub}"


# Applying --------------------------------------------------------------------------------------------------------


def check_open(found: Mapping[Any, Any] | None, vacancy_id: str, today: date) -> None:
    """The vacancy takes applications: it exists, is open, has places left and its closing date has not passed."""
    if found is None:
        raise LookupError(f"no vacancy {vacancy_id} on this node")
    if found["status"] != VacancyStatus.OPEN:
        raise VacancyNotOpen(f"vacancy {vacancy_id} is {found['status']}; it takes no applications")
    if found["closing_date"] < today:
        raise VacancyNotOpen(
            f"vacancy {vacancy_id} closed for applications on {found['closing_date']} (today is {today} in China)"
        )
    if found["headcount"] - found["hired"] <= 0:
        raise VacancyNotOpen(
            f"vacancy {vacancy_id} has no places left ({found['hired']} of {found['headcount']} hired)"
        )


def submit(
    profile: Profile, *, application_id: str, home: str, vacancy: Mapping[Any, Any], at: datetime
) -> Application:
    """A new application made at ``home`` for ``vacancy`` (a row of the vacancy replica, checked open)."""
    entry = Entry(
        seq=1,
        at=at,
        province=home,
        actor=APPLICANT,
        kind=EntryKind.SUBMITTED,
        state=ApplicationState.RECEIVED,
        note=None,
    )
    return Application(
        id=application_id,
        version=1,
        home_province=home,
        owner_province=vacancy["owner_province"],
        vacancy=VacancyRef(
            id=vacancy["id"],
            title=vacancy["title"],
            employer_name=vacancy["employer_name"],
            occupation_code=vacancy["occupation_code"],
            city=vacancy["city"],
        ),
        profile=profile,
        state=ApplicationState.RECEIVED,
        submitted_at=at,
        timeline=[entry],
    )


# Changes by the owner province ---------------------------------------------------------------------------------


def _change(
    application: Application,
    *,
    province: str,
    actor: str,
    at: datetime,
    kind: EntryKind,
    state: ApplicationState,
    note: str | None = None,
    details: Mapping[str, Any] | None = None,
    **fields: Any,
) -> Application:
    entry = Entry(
        seq=len(application.timeline) + 1,
        at=at,
        province=province,
        actor=actor,
        kind=kind,
        state=state,
        note=note,
        details=dict(details or {}),
    )
    return application.model_copy(
        update={
            "version": application.version + 1,
            "state": state,
            "timeline": [*application.timeline, entry],
            **fields,
        }
    )


def _movable(application: Application, province: str, expected_version: int | None) -> None:
    if application.owner_province != province:
        raise NoStanding(
            f"application {application.id} is for a vacancy of province {application.owner_province}; "
            f"only its officers move it"
        )
    if application.final:
        raise ApplicationRuleError(f"application {application.id} is {application.state}; it does not change any more")
    if expected_version is not None and expected_version != application.version:
        raise StaleApplication(
            f"application {application.id} is at version {application.version}, not {expected_version}; "
            "reload and retry"
        )


def _forward(application: Application, to: ApplicationState) -> None:
    here, there = _ORDER[application.state], _ORDER[to]
    again = to == ApplicationState.INTERVIEW == application.state
    if there < here or (there == here and not again):
        raise ApplicationRuleError(
            f"application {application.id} is {application.state}; it cannot go back to {to} (moves go forward only)"
        )


def shortlist(
    application: Application, *, province: str, actor: str, at: datetime, expected_version: int | None, note: str | None
) -> Application:
    _movable(application, province, expected_version)
    _forward(application, ApplicationState.SHORTLISTED)
    return _change(
        application,
        province=province,
        actor=actor,
        at=at,
        kind=EntryKind.SHORTLISTED,
        state=ApplicationState.SHORTLISTED,
        note=note,
    )


def invite(
    application: Application,
    *,
    province: str,
    actor: str,
    at: datetime,
    expected_version: int | None,
    interview: Interview,
    note: str | None,
) -> Application:
    """Set (or set again) the interview: when and where."""
    _movable(application, province, expected_version)
    _forward(application, ApplicationState.INTERVIEW)
    return _change(
        application,
        province=province,
        actor=actor,
        at=at,
        kind=EntryKind.INTERVIEW,
        state=ApplicationState.INTERVIEW,
        note=note,
        details={"at": interview.at.isoformat(), "place": interview.place},
        interview=interview,
    )


def make_offer(
    application: Application,
    *,
    province: str,
    actor: str,
    at: datetime,
    expected_version: int | None,
    offer: Offer,
    note: str | None,
) -> Application:
    _movable(application, province, expected_version)
    _forward(application, ApplicationState.OFFER)
    if offer.start_date < china_date(at):
        raise ApplicationRuleError(
            f"the start date {offer.start_date} is in the past (today is {china_date(at)} in China)"
        )
    return _change(
        application,
        province=province,
        actor=actor,
        at=at,
        kind=EntryKind.OFFER,
        state=ApplicationState.OFFER,
        note=note,
        details={"salary": offer.salary, "start_date": offer.start_date.isoformat()},
        offer=offer,
    )


def hire(
    application: Application,
    *,
    province: str,
    actor: str,
    at: datetime,
    expected_version: int | None,
    vacancy: Mapping[Any, Any],
    note: str | None,
) -> Application:
    """The applicant accepted the offer. ``vacancy`` is the owner's row of it: a hire takes one of its places left.

    A vacancy past its closing date (expired) still takes hires: the date ends applications, not the recruitment;
    a withdrawn or filled vacancy takes none."""
    _movable(application, province, expected_version)
    if application.state != ApplicationState.OFFER:
        raise ApplicationRuleError(
            f"application {application.id} is {application.state}; a hire follows an offer (salary and start date)"
        )
    if vacancy["status"] not in (VacancyStatus.OPEN, VacancyStatus.EXPIRED):
        raise VacancyNotOpen(f"vacancy {vacancy['id']} is {vacancy['status']}; it takes no more hires")
    if vacancy["hired"] >= vacancy["headcount"]:
        raise VacancyNotOpen(
            f"vacancy {vacancy['id']} has no places left: {vacancy['hired']} of {vacancy['headcount']} hired"
        )
    return _change(
        application,
        province=province,
        actor=actor,
        at=at,
        kind=EntryKind.HIRED,
        state=ApplicationState.HIRED,
        note=note,
        hired_at=at,
    )


def not_selected(
    application: Application,
    *,
    province: str,
    actor: str,
    at: datetime,
    expected_version: int | None,
    reason: str,
) -> Application:
    _movable(application, province, expected_version)
    return _change(
        application,
        province=province,
        actor=actor,
        at=at,
        kind=EntryKind.NOT_SELECTED,
        state=ApplicationState.NOT_SELECTED,
        note=reason,
        reason=reason,
    )


def withdraw(
    application: Application,
    *,
    province: str,
    actor: str,
    at: datetime,
    expected_version: int | None,
    note: str | None,
) -> Application:
    """The applicant withdraws: told an officer of the owner province (by phone), or through the home node."""
    _movable(application, province, expected_version)
    return _change(
        application,
        province=province,
        actor=actor,
        at=at,
        kind=EntryKind.WITHDRAWN,
        state=ApplicationState.WITHDRAWN,
        note=note,
    )


def check_sender(incoming: Application, origin: str, receiver: str, held: Application | None) -> None:
    """Whether ``origin`` may have sent ``incoming`` to ``receiver``; ``ApplicationRuleError`` saying why not.

    Only the home and the owner hold an application. Version 1 is made at home and sent to the owner; every later
    version is made by the owner and sent home. A newer version extends the timeline held, never rewrites it."""
    if receiver not in (incoming.home_province, incoming.owner_province):
        raise NoStanding(
            f"application {incoming.id} (home {incoming.home_province}, owner {incoming.owner_province}) "
            f"is not addressed to {receiver}"
        )
    if incoming.last_entry.province != origin:
        raise NoStanding(
            f"application {incoming.id}: its last step was taken by {incoming.last_entry.province}, "
            f"but {origin} sent it"
        )
    if incoming.version == 1:
        if origin != incoming.home_province or receiver != incoming.owner_province or origin == receiver:
            raise NoStanding(f"application {incoming.id} is submitted by its home province to the vacancy's owner")
    elif origin != incoming.owner_province or receiver != incoming.home_province:
        raise NoStanding(f"application {incoming.id} is changed by the vacancy's owner {incoming.owner_province} only")
    if held is not None:
        if (held.home_province, held.owner_province, held.vacancy.id) != (
            incoming.home_province,
            incoming.owner_province,
            incoming.vacancy.id,
        ):
            raise NoStanding(f"application {incoming.id} changes its provinces or its vacancy")
        if (held.profile, held.submitted_at) != (incoming.profile, incoming.submitted_at):
            raise NoStanding(f"application {incoming.id}: only the applicant's home province makes the profile")
        if incoming.timeline[: len(held.timeline)] != held.timeline:
            raise NoStanding(f"application {incoming.id} version {incoming.version} rewrites its timeline")

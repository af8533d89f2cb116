"""Vacancies: what an officer may publish, the rules of their life, and the events they cause.

A vacancy belongs to the province that posted it; only that province changes it, and every change raises its
``version``. Partners keep a replica that applies a change only when its version is newer than what they hold.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from importlib.resources import files
from typing import Annotated, Any, Self

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from labornet.shared.bounds import PositiveInt32
from labornet.shared.clock import china_date, today_in_china
from labornet.shared.identifiers import CreditCodeStr

MAX_OPEN_DAYS = 365

PUBLISHED = "org.labornet.jobs.vacancy.published.v1"
UPDATED = "org.labornet.jobs.vacancy.updated.v1"
CLOSED = "org.labornet.jobs.vacancy.closed.v1"
EVENT_TYPES = (PUBLISHED, UPDATED, CLOSED)


class Status(StrEnum):
    OPEN = "open"
    FILLED = "filled"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"


class EmploymentType(StrEnum):
    FULL_TIME = "full-time"
    PART_TIME = "part-time"
    SEASONAL = "seasonal"
    INTERNSHIP = "internship"


class TargetGroup(StrEnum):
    MIGRANT_WORKERS = "migrant-workers"
    COLLEGE_GRADUATES = "college-graduates"
    LIFTED_OUT_OF_POVERTY = "lifted-out-of-poverty"
    PEOPLE_WITH_DISABILITIES = "people-with-disabilities"
    RETURNING_ENTREPRENEURS = "returning-entrepreneurs"
    VETERANS = "veterans"


class VacancyRuleError(ValueError):
    """A change the vacancy's rules do not allow (closed vacancy, stale version…)."""


class BrandNotUsable(VacancyRuleError):
    """The labour-service brand a vacancy names is not in the federation's brand register, or was revoked."""


@dataclass(frozen=True)
class BrandRef:
    """What a vacancy needs to know of the brand it names."""

    id: str
    status: str  # proposed, recognised or revoked (labornet.brands)
    name_zh: str


def check_brand(brand_id: str, found: BrandRef | None) -> None:
    """A vacancy may name a brand that exists and is not revoked; :class:`BrandNotUsable` says why not."""
    if found is None:
        raise BrandNotUsable(
            f"brand {brand_id} is not in the federation's brand register; name an existing brand "
            "(GET /api/v1/brands on the brands service) or leave brand_id out"
        )
    if found.status == "revoked":
        raise BrandNotUsable(f"brand {brand_id} ({found.name_zh}) was revoked; a vacancy cannot name it any more")


_BRAND_ID = re.compile(r"^\d{2}0000-B-[0-9A-Z]{1,40}$")


def _brand_id(value: str) -> str:
    if not _BRAND_ID.match(value):
        raise ValueError(f"brand id {value[:80]!r}: expected a brand id such as 510000-B-8F14E45FCEEA167A5A36")
    return value


BrandId = Annotated[str, AfterValidator(_brand_id)]


@functools.cache
def occupations() -> dict[str, dict[str, str]]:
    document = json.loads(files("labornet.jobs").joinpath("data/occupations.json").read_text("utf-8"))
    return {item["code"]: item for item in document["occupations"]}


def _known_occupation(code: str) -> str:
    if code not in occupations():
        examples = ", ".join(f"{c} {o['zh']}" for c, o in list(occupations().items())[9:14])
        raise ValueError(f"occupation code {code!r} is not in the federation's ISCO-08 list (e.g. {examples})")
    return code


OccupationCode = Annotated[str, AfterValidator(_known_occupation)]
ShortText = Annotated[str, Field(min_length=1, max_length=200)]


class Employer(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    name: ShortText
    credit_code: CreditCodeStr


class SalaryRange(BaseModel):
    """Monthly salary in CNY."""

    model_config = ConfigDict(extra="forbid")
    min: int = Field(ge=0, le=1_000_000)
    max: int = Field(ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min > self.max:
            raise ValueError(f"salary min {self.min} is greater than max {self.max}")
        return self


def _closing_date_ahead(value: date) -> date:
    today = today_in_china()
    if value < today:
        raise ValueError(f"closing date {value} is in the past (today is {today} in China)")
    if value > today + timedelta(days=MAX_OPEN_DAYS):
        raise ValueError(f"closing date {value} is more than {MAX_OPEN_DAYS} days ahead")
    return value


ClosingDate = Annotated[date, AfterValidator(_closing_date_ahead)]
Skill = Annotated[str, Field(min_length=1, max_length=50)]


Salary = Annotated[int, Field(ge=0, le=1_000_000, description="CNY per month")]

_EMPLOYER_FORMS = "the employer as employer_name and employer_credit_code, or as the deprecated employer object"
_SALARY_FORMS = "the salary as salary_min and salary_max, or as the deprecated salary object"
_DEPRECATED_EMPLOYER = (
    "Deprecated: send employer_name and employer_credit_code, the fields a vacancy is read with. Still accepted "
    "(not together with them)."
)
_DEPRECATED_SALARY = (
    "Deprecated: send salary_min and salary_max, the fields a vacancy is read with. Still accepted (not together "
    "with them)."
)


def ignored(description: str) -> Any:
    """A field a body may carry as it was read, which the node sets itself: documented read-only, and ignored."""
    return Field(None, description=f"read-only, ignored: {description}", json_schema_extra={"readOnly": True})


class _AsRead(BaseModel):
    """The fields a vacancy is read with that the node sets itself: accepted so that a client can send back what
    it read, and ignored (:data:`READ_ONLY`)."""

    id: str | None = ignored("the node gives the id")
    owner_province: str | None = ignored("the province of the node that publishes")
    occupation_name: str | None = ignored("follows occupation_code")
    posted_at: datetime | None = ignored("set when the vacancy is published")
    updated_at: datetime | None = ignored("set by every change")
    hired: int | None = ignored("counts the applicants hired through the platform")
    open_headcount: int | None = ignored("headcount - hired")


READ_ONLY = frozenset(_AsRead.model_fields)
_REQUIRED_READ_FORM = ("employer_name", "employer_credit_code", "salary_min", "salary_max")


class VacancyDraft(_AsRead):
    """What an officer sends to publish a vacancy: the fields a vacancy is read with (a vacancy read from the API
    can be sent back as it is; what the node sets itself is ignored). The employer and the salary may still come
    in the earlier nested form, ``employer {name, credit_code}`` and ``salary {min, max}`` (deprecated)."""

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={
            "examples": [
                {
                    "employer_name": "成都川味餐饮有限公司",
                    "employer_credit_code": "91350100M000100Y43",
                    "title": "川菜厨师 Sichuan chef",
                    "description": "负责川菜热菜制作，提供住宿。",
                    "occupation_code": "5120",
                    "division_code": "510104",
                    "headcount": 3,
                    "salary_min": 6000,
                    "salary_max": 9000,
                    "employment_type": "full-time",
                    "target_groups": ["migrant-workers"],
                    "skills": ["川菜", "刀工"],
                    "contact": "028-86000000",
                    "closing_date": "2026-04-30",
                }
            ]
        },
    )
    employer_name: ShortText | None = Field(None, description="required, unless the deprecated employer is sent")
    employer_credit_code: CreditCodeStr | None = Field(
        None, description="unified social credit code (GB 32100); required, unless the deprecated employer is sent"
    )
    employer: Employer | None = Field(None, description=_DEPRECATED_EMPLOYER, json_schema_extra={"deprecated": True})
    title: ShortText
    description: str = Field("", max_length=5000)
    occupation_code: OccupationCode
    division_code: str = Field(pattern=r"^\d{6}$", description="work location: prefecture or county code")
    city: str | None = Field(None, max_length=100, description="defaults to the prefecture's name")
    headcount: int = Field(ge=1, le=100_000)
    salary_min: Salary | None = Field(None, description="required, unless the deprecated salary is sent")
    salary_max: Salary | None = Field(None, description="at least salary_min; required, unless salary is sent")
    salary: SalaryRange | None = Field(None, description=_DEPRECATED_SALARY, json_schema_extra={"deprecated": True})
    employment_type: EmploymentType
    target_groups: list[TargetGroup] = Field(default_factory=list, max_length=10)
    skills: list[Skill] = Field(default_factory=list, max_length=30)
    brand_id: BrandId | None = Field(None, description="a labour-service brand of the federation's brand register")
    contact: ShortText
    closing_date: ClosingDate
    status: Status | None = ignored("a vacancy is published open")
    version: int | None = ignored("a vacancy is published at version 1")

    @field_validator("target_groups", "skills")
    @classmethod
    def _distinct(cls, value: list[Any]) -> list[Any]:
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        _take_nested_forms(self)
        missing = [name for name in _REQUIRED_READ_FORM if getattr(self, name) is None]
        if missing:
            raise ValueError(f"{', '.join(missing)} required: send {_EMPLOYER_FORMS}, and {_SALARY_FORMS}")
        return self


# Fields a change may set to null: brand_id (the vacancy names no brand any more), version (If-Match says it) and
# the ignored ones; any other null would empty a required field.
_NULLABLE_CHANGES = frozenset({"brand_id", "version", *READ_ONLY, "status"})


class VacancyChanges(_AsRead):
    """A partial update; ``version`` (or the If-Match header) must name the version being changed.

    The fields are those a vacancy is read with, so a client may send back the vacancy it read with its changes;
    what the node sets itself is ignored, ``status`` changes only through ``POST …/close``. ``employer`` and
    ``salary`` in the earlier nested form are still accepted (deprecated)."""

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={"examples": [{"version": 2, "title": "川菜主厨", "salary_max": 9500}]},
    )
    version: PositiveInt32 | None = None
    employer_name: ShortText | None = None
    employer_credit_code: CreditCodeStr | None = None
    employer: Employer | None = Field(None, description=_DEPRECATED_EMPLOYER, json_schema_extra={"deprecated": True})
    title: ShortText | None = None
    description: str | None = Field(None, max_length=5000)
    occupation_code: OccupationCode | None = None
    division_code: str | None = Field(None, pattern=r"^\d{6}$")
    city: str | None = Field(None, max_length=100)
    headcount: int | None = Field(None, ge=1, le=100_000)
    salary_min: Salary | None = None
    salary_max: Salary | None = None
    salary: SalaryRange | None = Field(None, description=_DEPRECATED_SALARY, json_schema_extra={"deprecated": True})
    employment_type: EmploymentType | None = None
    target_groups: list[TargetGroup] | None = Field(None, max_length=10)
    skills: list[Skill] | None = Field(None, max_length=30)
    brand_id: BrandId | None = Field(None, description="null: the vacancy names no brand any more")
    contact: ShortText | None = None
    closing_date: ClosingDate | None = None
    status: Status | None = Field(
        None,
        description="read-only: a vacancy that can be changed is open, and an open status is ignored; close it "
        "with POST /api/v1/vacancies/{id}/close",
        json_schema_extra={"readOnly": True},
    )

    @field_validator("status")
    @classmethod
    def _still_open(cls, value: Status | None) -> Status | None:
        if value not in (None, Status.OPEN):
            raise ValueError(f"status {value}: a change keeps a vacancy open; close it with POST …/close")
        return value

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        nulls = sorted(name for name in self.model_fields_set - _NULLABLE_CHANGES if getattr(self, name) is None)
        if nulls:
            raise ValueError(f"{', '.join(nulls)} cannot be null; leave a field out to keep its value")
        _take_nested_forms(self)
        return self


def _take_nested_forms(body: VacancyDraft | VacancyChanges) -> None:
    """Move the deprecated nested employer and salary into the fields a vacancy is read with."""
    if body.employer is not None:
        if body.employer_name is not None or body.employer_credit_code is not None:
            raise ValueError(f"send {_EMPLOYER_FORMS}, not both")
        body.employer_name, body.employer_credit_code = body.employer.name, body.employer.credit_code
    if body.salary is not None:
        if body.salary_min is not None or body.salary_max is not None:
            raise ValueError(f"send {_SALARY_FORMS}, not both")
        body.salary_min, body.salary_max = body.salary.min, body.salary.max
    if body.salary_min is not None and body.salary_max is not None and body.salary_min > body.salary_max:
        raise ValueError(f"salary_min {body.salary_min} is greater than salary_max {body.salary_max}")


class CloseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Status = Field(description="filled or withdrawn")
    version: PositiveInt32 | None = None

    @field_validator("reason")
    @classmethod
    def _closing_reason(cls, value: Status) -> Status:
        if value not in (Status.FILLED, Status.WITHDRAWN):
            raise ValueError("reason must be filled or withdrawn")
        return value


def new_vacancy_id(province: str) -> str:
    return f"{province}-V-{uuid.uuid4().hex[:20].upper()}"


def flatten(draft: VacancyDraft | VacancyChanges) -> dict[str, Any]:
    """Request fields as vacancy columns (only the fields that were given; what the node sets itself left out)."""
    given = draft.model_dump(
        mode="json", exclude_unset=True, exclude={"version", "status", "employer", "salary", *READ_ONLY}
    )
    return {name: date.fromisoformat(value) if name == "closing_date" else value for name, value in given.items()}


def check_headcount(headcount: int, hired: int) -> None:
    """An open vacancy keeps a place for at least one more hire: its headcount stays above those hired already
    (:class:`HeadcountBelowHired`); to stop at the hires made, close it as filled."""
    if headcount <= hired:
        raise HeadcountBelowHired(
            f"headcount {headcount}: {hired} applicants were hired already; an open vacancy needs a headcount of at "
            f"least {hired + 1} (close it as filled to stop at {hired})"
        )


class HeadcountBelowHired(ValueError):
    """A change that would leave an open vacancy no place beyond those filled."""


def check_change(current: dict[str, Any], expected_version: int | None) -> None:
    if current["status"] != Status.OPEN:
        raise VacancyRuleError(f"vacancy {current['id']} is {current['status']}; only open vacancies change")
    if expected_version is None:
        raise VersionRequired("say which version you change: an If-Match header or a version field")
    if expected_version != current["version"]:
        raise StaleVersion(
            f"vacancy {current['id']} is at version {current['version']}, not {expected_version}; reload and retry"
        )


class StaleVersion(VacancyRuleError):
    """Someone changed the vacancy since the caller read it."""


class VersionRequired(VacancyRuleError):
    """A change that does not say which version it applies to."""


def now() -> datetime:
    return datetime.now(UTC)


# The vacancy on the wire ----------------------------------------------------------------------------------------


class VacancyRecord(BaseModel):
    """A vacancy as events and snapshots carry it, held to the rules the owner's API enforces.

    A replica applies nothing its owner's API would have refused: a signature proves who sent an event, not that
    the sender was right (a bug at the origin, a restored backup). Receivers ignore fields they do not know, so a
    later version may add optional ones. Which divisions a province has is configuration, checked by the use case.
    """

    model_config = ConfigDict(extra="ignore")
    id: str = Field(max_length=40)
    owner_province: str = Field(pattern=r"^\d{2}0000$")
    employer_name: ShortText
    employer_credit_code: CreditCodeStr
    title: ShortText
    description: str = Field(max_length=5000)
    occupation_code: OccupationCode
    occupation_name: ShortText
    division_code: str = Field(pattern=r"^\d{6}$")
    city: str = Field(min_length=1, max_length=100)
    headcount: int = Field(ge=1, le=100_000)
    hired: int = Field(0, ge=0, le=100_000, description="applicants hired through the platform, at most headcount")
    salary_min: int = Field(ge=0, le=1_000_000)
    salary_max: int = Field(ge=0, le=1_000_000)
    employment_type: EmploymentType
    target_groups: list[TargetGroup] = Field(max_length=10)
    skills: list[Skill] = Field(max_length=30)
    brand_id: str | None = Field(max_length=64)
    contact: ShortText
    posted_at: AwareDatetime
    closing_date: date
    status: Status
    version: PositiveInt32
    updated_at: AwareDatetime

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not self.id.startswith(f"{self.owner_province}-V-"):
            raise ValueError(f"vacancy id {self.id} does not belong to province {self.owner_province}")
        if self.division_code[:2] != self.owner_province[:2]:
            raise ValueError(f"vacancy {self.id}: division {self.division_code} is outside {self.owner_province}")
        if self.salary_min > self.salary_max:
            raise ValueError(f"vacancy {self.id}: salary min {self.salary_min} is greater than max {self.salary_max}")
        if self.hired > self.headcount:
            raise ValueError(f"vacancy {self.id}: {self.hired} hired is more than its headcount {self.headcount}")
        if self.updated_at < self.posted_at:
            raise ValueError(f"vacancy {self.id} was updated at {self.updated_at}, before it was posted")
        # The closing date was ahead when it was set (a day of slack: the API reads the date a moment before it
        # stamps the time) and at most MAX_OPEN_DAYS after the change that set it.
        posted, changed = china_date(self.posted_at), china_date(self.updated_at)
        if not posted - timedelta(days=1) <= self.closing_date <= changed + timedelta(days=MAX_OPEN_DAYS):
            raise ValueError(
                f"vacancy {self.id}: closing date {self.closing_date} is not between its posting day {posted} and "
                f"{MAX_OPEN_DAYS} days after its last change ({changed})"
            )
        return self


# Which statuses and versions each event type can carry: publishing opens version 1, an update changes an open
# vacancy, a close ends it.
_EVENT_STATUSES = {
    PUBLISHED: (Status.OPEN,),
    UPDATED: (Status.OPEN,),
    CLOSED: (Status.FILLED, Status.WITHDRAWN, Status.EXPIRED),
}


def check_replicated(event_type: str, row: Mapping[str, Any]) -> None:
    """The event type fits the vacancy it carries; :class:`VacancyRuleError` saying what does not."""
    statuses = _EVENT_STATUSES.get(event_type)
    if statuses is None:
        raise VacancyRuleError(f"{event_type} is not a vacancy event")
    if row["status"] not in statuses:
        raise VacancyRuleError(f"{event_type} cannot carry vacancy {row['id']} with status {row['status']}")
    if (event_type == PUBLISHED) != (row["version"] == 1):
        raise VacancyRuleError(f"{event_type} cannot carry version {row['version']} of vacancy {row['id']}")

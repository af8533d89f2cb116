"""Vacancies: what an officer may publish, the rules of their life, and the events they cause.

A vacancy belongs to the province that posted it; only that province changes it, and every change raises its
``version``. Partners keep a replica that applies a change only when its version is newer than what they hold.
"""

from __future__ import annotations

import functools
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from importlib.resources import files
from typing import Annotated, Any, Self
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from labornet.shared.identifiers import CreditCodeStr

CHINA = ZoneInfo("Asia/Shanghai")
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


def today_in_china() -> date:
    return datetime.now(CHINA).date()


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


class VacancyDraft(BaseModel):
    """What an officer sends to publish a vacancy."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    employer: Employer
    title: ShortText
    description: str = Field("", max_length=5000)
    occupation_code: OccupationCode
    division_code: str = Field(pattern=r"^\d{6}$", description="work location: prefecture or county code")
    city: str | None = Field(None, max_length=100, description="defaults to the prefecture's name")
    headcount: int = Field(ge=1, le=100_000)
    salary: SalaryRange
    employment_type: EmploymentType
    target_groups: list[TargetGroup] = Field(default_factory=list, max_length=10)
    skills: list[Skill] = Field(default_factory=list, max_length=30)
    brand_id: str | None = Field(None, max_length=64)
    contact: ShortText
    closing_date: ClosingDate

    @field_validator("target_groups", "skills")
    @classmethod
    def _distinct(cls, value: list[Any]) -> list[Any]:
        return list(dict.fromkeys(value))


class VacancyChanges(BaseModel):
    """A partial update; ``version`` (or the If-Match header) must name the version being changed."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    version: int | None = Field(None, ge=1)
    employer: Employer | None = None
    title: ShortText | None = None
    description: str | None = Field(None, max_length=5000)
    occupation_code: OccupationCode | None = None
    division_code: str | None = Field(None, pattern=r"^\d{6}$")
    city: str | None = Field(None, max_length=100)
    headcount: int | None = Field(None, ge=1, le=100_000)
    salary: SalaryRange | None = None
    employment_type: EmploymentType | None = None
    target_groups: list[TargetGroup] | None = Field(None, max_length=10)
    skills: list[Skill] | None = Field(None, max_length=30)
    brand_id: str | None = Field(None, max_length=64)
    contact: ShortText | None = None
    closing_date: ClosingDate | None = None


class CloseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Status = Field(description="filled or withdrawn")
    version: int | None = Field(None, ge=1)

    @field_validator("reason")
    @classmethod
    def _closing_reason(cls, value: Status) -> Status:
        if value not in (Status.FILLED, Status.WITHDRAWN):
            raise ValueError("reason must be filled or withdrawn")
        return value


def new_vacancy_id(province: str) -> str:
    return f"{province}-V-{uuid.uuid4().hex[:20].upper()}"


def flatten(draft: VacancyDraft | VacancyChanges) -> dict[str, Any]:
    """Request fields as vacancy columns (only the fields that were given)."""
    given = draft.model_dump(mode="json", exclude_unset=True, exclude={"version"})
    columns: dict[str, Any] = {}
    for name, value in given.items():
        if name == "employer":
            columns["employer_name"], columns["employer_credit_code"] = value["name"], value["credit_code"]
        elif name == "salary":
            columns["salary_min"], columns["salary_max"] = value["min"], value["max"]
        elif name == "closing_date":
            columns[name] = date.fromisoformat(value)
        else:
            columns[name] = value
    return columns


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

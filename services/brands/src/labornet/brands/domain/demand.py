"""Demand for a brand's workers: the channel of organised labour transfer between two provinces.

An officer of a *demanding* province asks a partner for workers of one of its recognised brands: how many, where,
for which period and on which conditions. The demand travels as a directed message to the brand's *origin*
province, whose officer answers once — accepted, with the number of workers it can send, or declined, with a
reason — and the answer travels back. Both nodes keep the demand and its answer.

Life: ``open`` → ``accepted`` | ``declined``. The demanding province writes version 1 (the demand), the origin
writes version 2 (the answer); each side applies the other's message only when it is newer than what it holds, so
duplicates and replays change nothing. A demand that reaches the origin after the brand was revoked there is
declined at once by the origin node, with that reason.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator, model_validator

from labornet.brands.domain.brand import UtcTime
from labornet.shared.bounds import PositiveInt32
from labornet.shared.clock import today_in_china
from labornet.shared.identifiers import DivisionCodeStr

POSTED = "org.labornet.brands.demand.posted.v1"
ANSWERED = "org.labornet.brands.demand.answered.v1"
EVENT_TYPES = (POSTED, ANSWERED)

MAX_WORKERS = 100_000
MAX_LEAD_DAYS = 366  # a demand names a period starting within a year
MAX_PERIOD_DAYS = 3 * 366
AUTOMATIC = "labornet:automatic"  # answered_by of an answer the origin node gave without an officer


class DemandStatus(StrEnum):
    OPEN = "open"
    ACCEPTED = "accepted"
    DECLINED = "declined"


class Decision(StrEnum):
    ACCEPTED = "accepted"
    DECLINED = "declined"


class DemandRuleError(ValueError):
    """An answer the demand's rules do not allow (already answered…)."""


class OfferTooLarge(DemandRuleError):
    """An acceptance offering more workers than were asked for."""


def new_demand_id(province: str) -> str:
    return f"{province}-D-{uuid.uuid4().hex[:20].upper()}"


BrandId = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\d{6}-B-[0-9A-Z]{1,30}$")]
Workers = Annotated[int, Field(ge=1, le=MAX_WORKERS)]
Note = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


def check_start(start: date) -> date:
    today = today_in_china()
    if start < today:
        raise ValueError(f"period start {start} is in the past (today is {today} in China)")
    if start > today + timedelta(days=MAX_LEAD_DAYS):
        raise ValueError(f"period start {start} is more than {MAX_LEAD_DAYS} days ahead")
    return start


def check_end(start: date, end: date) -> date:
    if end < start:
        raise ValueError(f"period end {end} is before its start {start}")
    if (end - start).days > MAX_PERIOD_DAYS:
        raise ValueError(f"period is longer than {MAX_PERIOD_DAYS} days")
    return end


class Period(BaseModel):
    """The working period the workers are wanted for (dates in China).

    Deprecated request form: a demand shows its period as ``period_start`` and ``period_end``, and
    :class:`DemandRequest` takes that form too."""

    model_config = ConfigDict(extra="forbid")
    start: date
    end: date

    @model_validator(mode="after")
    def _sensible(self) -> Self:
        check_start(self.start)
        check_end(self.start, self.end)
        return self


class DemandRequest(BaseModel):
    """What an officer of the demanding province posts; the period as a demand shows it (``period_start``,
    ``period_end``) or, deprecated, as one ``period`` object."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    brand_id: BrandId = Field(description="a recognised brand of a partner province")
    workers: Workers = Field(description="how many workers are wanted")
    division_code: DivisionCodeStr = Field(description="where they will work: a prefecture or county of this province")
    city: str | None = Field(None, max_length=100, description="defaults to the prefecture's name")
    period_start: date | None = Field(
        None,
        description="first day of work (in China), from today to a year ahead; required unless `period` is sent",
    )
    period_end: date | None = Field(
        None, description="last day of work, at most three years after the start; sent with period_start"
    )
    period: Period | None = Field(
        None,
        description="Deprecated: the period as one object {start, end}. Send period_start and period_end instead, "
        "the form in which a demand is shown.",
        json_schema_extra={"deprecated": True},
    )
    conditions: Note = Field(description="wages, housing, transport, training…")
    contact: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] = Field(
        description="whom the origin province contacts"
    )

    @field_validator("period_start")
    @classmethod
    def _start(cls, value: date | None) -> date | None:
        return None if value is None else check_start(value)

    @field_validator("period_end")
    @classmethod
    def _end(cls, value: date | None, info: ValidationInfo) -> date | None:
        start = info.data.get("period_start")
        return value if value is None or start is None else check_end(start, value)

    @model_validator(mode="after")
    def _one_period(self) -> Self:
        if "period" in self.model_fields_set:
            if self.model_fields_set & {"period_start", "period_end"}:
                raise ValueError(
                    "give the period either as period_start and period_end (as the demand shows it) or as the "
                    "deprecated period object, not both"
                )
            if self.period is None:
                raise ValueError("period cannot be null: send period_start and period_end")
            self.period_start, self.period_end = self.period.start, self.period.end
            return self
        missing = [name for name in ("period_start", "period_end") if getattr(self, name) is None]
        if missing:
            raise ValueError(f"{' and '.join(missing)} missing: send the period as period_start and period_end")
        return self


class DemandAnswer(BaseModel):
    """What an officer of the brand's origin province answers; once."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    decision: Decision
    workers_offered: Workers | None = Field(None, description="accepted: how many workers the province can send")
    note: Note | None = Field(None, description="accepted: arrangements (optional); declined: the reason")

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.decision == Decision.ACCEPTED and self.workers_offered is None:
            raise ValueError("an acceptance says how many workers the province can send (workers_offered)")
        if self.decision == Decision.DECLINED:
            if self.workers_offered is not None:
                raise ValueError("a decline offers no workers; leave workers_offered out")
            if self.note is None:
                raise ValueError("a decline needs the reason in note")
        return self


def check_answer(current: dict[str, Any], answer: DemandAnswer) -> None:
    if current["status"] != DemandStatus.OPEN:
        raise DemandRuleError(f"demand {current['id']} was already answered: {current['status']}")
    if answer.workers_offered is not None and answer.workers_offered > current["workers"]:
        raise OfferTooLarge(
            f"workers_offered {answer.workers_offered} is more than the {current['workers']} workers asked for"
        )


ProvinceCode = Annotated[str, StringConstraints(pattern=r"^\d{2}0000$")]
Text = Annotated[str, StringConstraints(max_length=2000)]
Text200 = Annotated[str, StringConstraints(max_length=200)]

ANSWER_FIELDS = ("status", "workers_offered", "answer_note", "answered_by", "answered_at", "updated_at", "version")


class DemandRecord(BaseModel):
    """A demand as both directed events carry it and the API shows it (``demand.posted.v1``, ``demand.answered.v1``)."""

    model_config = ConfigDict(extra="ignore")
    id: str = Field(max_length=40)
    brand_id: str = Field(max_length=40)
    brand_name_zh: str = Field(max_length=50)
    origin_province: ProvinceCode
    demanding_province: ProvinceCode
    workers: int = Field(ge=1, le=MAX_WORKERS)
    division_code: str = Field(pattern=r"^\d{6}$")
    city: str = Field(max_length=100)
    period_start: date
    period_end: date
    conditions: Text
    contact: Text200
    posted_by: Text200
    posted_at: UtcTime
    status: DemandStatus
    workers_offered: int | None = Field(None, ge=1, le=MAX_WORKERS)
    answer_note: Text | None
    answered_by: Text200 | None
    answered_at: UtcTime | None
    updated_at: UtcTime
    version: PositiveInt32

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not self.id.startswith(f"{self.demanding_province}-D-"):
            raise ValueError(f"demand id {self.id} was not made by province {self.demanding_province}")
        if not self.brand_id.startswith(f"{self.origin_province}-B-"):
            raise ValueError(f"brand {self.brand_id} is not of province {self.origin_province}")
        if self.origin_province == self.demanding_province:
            raise ValueError(f"demand {self.id} is addressed to its own province")
        if self.division_code[:2] != self.demanding_province[:2]:
            raise ValueError(f"demand {self.id}: work place {self.division_code} is outside the demanding province")
        answered = self.status != DemandStatus.OPEN
        if answered != (self.answered_at is not None):
            raise ValueError(f"demand {self.id} is {self.status} but answered_at says otherwise")
        if (self.status == DemandStatus.ACCEPTED) != (self.workers_offered is not None):
            raise ValueError(f"demand {self.id}: workers_offered goes with an acceptance, and only with one")
        if self.workers_offered is not None and self.workers_offered > self.workers:
            raise ValueError(f"demand {self.id} offers more workers than were asked for")
        if self.status == DemandStatus.DECLINED and not self.answer_note:
            raise ValueError(f"demand {self.id} is declined without a reason")
        return self


RECORD_FIELDS = tuple(DemandRecord.model_fields)

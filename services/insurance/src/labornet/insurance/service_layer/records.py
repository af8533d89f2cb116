"""Insured-person records kept by a province's officers: persons, contribution periods, benefit configuration,
and the bulk CSV import of existing records (all or nothing, with a row-level error report)."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib.resources import files
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from labornet.insurance.adapters import config, transfers
from labornet.insurance.adapters.tables import contribution_period, insured_person
from labornet.insurance.domain.rules import Period, PeriodKind, PersonStatus, overlapping
from labornet.shared.clock import Clock, utcnow
from labornet.shared.identifiers import CreditCodeStr, DivisionCodeStr, ResidentIdStr, mask_resident_id

MONTH = r"^\d{4}-(0[1-9]|1[0-2])(-01)?$"
MONTH_FORMS = (
    "YYYY-MM-01, the month's first day as records show it; YYYY-MM (the month alone) is still accepted but deprecated"
)


def month(value: str) -> date:
    return date.fromisoformat(value + "-01")


class PeriodIn(BaseModel):
    """A contribution period; its months in the form records show them (``2019-01-01``) or as ``2019-01``."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    start_month: str = Field(pattern=MONTH, description=f"the first month: {MONTH_FORMS}", examples=["2019-01-01"])
    end_month: str = Field(
        pattern=MONTH, description=f"the last month, inclusive: {MONTH_FORMS}", examples=["2021-06-01"]
    )
    kind: PeriodKind = PeriodKind.ACTUAL
    employer_credit_code: CreditCodeStr | None = None

    @field_validator("start_month", "end_month")
    @classmethod
    def _the_month(cls, value: str) -> str:
        """One form inside: ``YYYY-MM``."""
        return value[:7]

    @model_validator(mode="after")
    def _ordered(self) -> PeriodIn:
        if self.end_month < self.start_month:
            raise ValueError(f"end_month {self.end_month} is before start_month {self.start_month}")
        today = datetime.now(UTC).strftime("%Y-%m")
        if self.end_month > today:
            raise ValueError(f"end_month {self.end_month} is in the future")
        return self


class PersonIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    resident_id: ResidentIdStr
    name: str = Field(min_length=1, max_length=100)
    hukou_division: DivisionCodeStr
    status: PersonStatus = PersonStatus.EMPLOYED
    employer_credit_code: CreditCodeStr | None = None
    months_used: int = Field(0, ge=0, le=1200, description="contribution months an earlier, concluded claim used")
    benefit_months_paid: int = Field(0, ge=0, le=24, description="months drawn of the current entitlement")
    earlier_unclaimed_months: int = Field(
        0, ge=0, le=24, description="months of the earlier claim's entitlement never drawn (art. 17 second paragraph)"
    )
    periods: list[PeriodIn] = Field(default_factory=list, max_length=600)

    @model_validator(mode="after")
    def _months_once(self) -> PersonIn:
        clash = overlapping(domain_periods("", self.periods))
        if clash:
            raise ValueError(
                f"periods {clash[0].start:%Y-%m}…{clash[0].end:%Y-%m} and {clash[1].start:%Y-%m}…{clash[1].end:%Y-%m} "
                "overlap: a month is contributed once"
            )
        return self

    @field_validator("status")
    @classmethod
    def _recordable(cls, value: PersonStatus) -> PersonStatus:
        if value in (PersonStatus.TRANSFERRING, PersonStatus.TRANSFERRED):
            raise ValueError("transfer states are set by transfers, not by records")
        return value


class RecordConflict(ValueError):
    """The record clashes with what the province already holds."""


def domain_periods(province: str, periods: Sequence[PeriodIn]) -> list[Period]:
    return [Period(month(p.start_month), month(p.end_month), p.kind, province) for p in periods]


async def add_person(session: AsyncSession, province: str, person: PersonIn) -> None:
    """Record a person; their periods were checked for overlaps when ``person`` was validated."""
    exists = (
        await session.execute(select(insured_person.c.status).where(insured_person.c.resident_id == person.resident_id))
    ).scalar()
    if exists is not None:
        raise RecordConflict("this person already has a record in this province")
    moment = datetime.now(UTC)
    await session.execute(
        insert(insured_person).values(
            resident_id=person.resident_id,
            name=person.name,
            hukou_division=person.hukou_division,
            status=person.status.value,
            employer_credit_code=person.employer_credit_code,
            months_used=person.months_used,
            benefit_months_paid=person.benefit_months_paid,
            earlier_unclaimed_months=person.earlier_unclaimed_months,
            transfer_lock=None,
            version=1,
            created_at=moment,
            updated_at=moment,
        )
    )
    for period in person.periods:
        await session.execute(
            insert(contribution_period).values(
                resident_id=person.resident_id,
                start_month=month(period.start_month),
                end_month=month(period.end_month),
                kind=period.kind.value,
                province=province,
                employer_credit_code=period.employer_credit_code,
            )
        )


CSV_COLUMNS = (
    "resident_id",
    "name",
    "hukou_division",
    "status",
    "employer_credit_code",
    "months_used",
    "benefit_months_paid",
    "start_month",
    "end_month",
    "kind",
    "period_employer_credit_code",
)


def parse_csv(text: str) -> tuple[list[PersonIn], list[dict[str, Any]]]:
    """Persons from a CSV of one contribution period per row; errors name the line and the field.

    An ``earlier_unclaimed_months`` column is optional (0 when absent). A line ends at CR, LF or CRLF; a file the
    csv module cannot read (a field beyond its size limit) is one error naming the line, not a server error."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    grouped: dict[str, list[tuple[int, dict[str, str]]]] = defaultdict(list)
    try:
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            return [], [{"line": 1, "field": ",".join(missing), "message": f"missing columns: {', '.join(missing)}"}]
        for line, row in enumerate(reader, start=2):
            grouped[(row.get("resident_id") or "").strip().upper()].append((line, row))
    except csv.Error as exc:
        return [], [{"line": reader.reader.line_num, "field": "row", "message": f"not readable as CSV: {exc}"}]
    persons, errors = [], []
    for rows in grouped.values():
        line, first = rows[0]
        period_rows = [(row_line, row) for row_line, row in rows if (row.get("start_month") or "").strip()]
        try:
            persons.append(
                PersonIn.model_validate(
                    {
                        "resident_id": first["resident_id"],
                        "name": first["name"],
                        "hukou_division": first["hukou_division"],
                        "status": first["status"] or PersonStatus.EMPLOYED.value,
                        "employer_credit_code": first["employer_credit_code"] or None,
                        "months_used": first["months_used"] or 0,
                        "benefit_months_paid": first["benefit_months_paid"] or 0,
                        "earlier_unclaimed_months": first.get("earlier_unclaimed_months") or 0,
                        "periods": [
                            {
                                "start_month": row["start_month"],
                                "end_month": row["end_month"],
                                "kind": row["kind"] or PeriodKind.ACTUAL.value,
                                "employer_credit_code": row["period_employer_credit_code"] or None,
                            }
                            for _, row in period_rows
                        ],
                    }
                )
            )
        except ValidationError as exc:
            for error in exc.errors():
                where = [str(part) for part in error["loc"]]
                in_period = where[:1] == ["periods"] and len(where) > 1 and where[1].isdigit()
                row_line = period_rows[int(where[1])][0] if in_period else line
                message = str(error.get("ctx", {}).get("error", error["msg"])).removeprefix("Value error, ")
                errors.append({"line": row_line, "field": ".".join(where) or "row", "message": message})
    return persons, errors


def default_config(province: str) -> dict[str, Any]:
    document = json.loads(files("labornet.insurance").joinpath("data/benefits.json").read_text("utf-8"))
    values = document["provinces"].get(province)
    if values is None:
        raise LookupError(f"no default benefit configuration for {province}; set one with PUT /api/v1/benefit-config")
    defaults = document["defaults"]
    return {
        "province": province,
        "monthly_standard": Decimal(values["monthly_standard"]),
        "minimum_wage": Decimal(values["minimum_wage"]),
        "subsistence_line": Decimal(values["subsistence_line"]),
        "answer_limit_days": int(defaults["answer_limit_days"]),
        "transfer_limit_days": int(defaults["transfer_limit_days"]),
        "fund_multiplier": Decimal(defaults["fund_multiplier"]),
        "updated_at": datetime.now(UTC),
    }


async def ensure_config(session: AsyncSession, province: str) -> None:
    """Seed the province's benefit configuration from the bundled defaults, once."""
    await config.seed(session, default_config(province))


class BenefitConfigIn(BaseModel):
    """The configuration to set; what ``GET /api/v1/benefit-config`` answered may be sent back as it is."""

    model_config = ConfigDict(extra="forbid")
    province: str | None = Field(
        None, description="optional, as read: it must be this node's province (the configuration is per province)"
    )
    updated_at: datetime | None = Field(None, description="optional, as read; ignored (read-only)")
    monthly_standard: Decimal = Field(gt=0, max_digits=10, decimal_places=2)
    minimum_wage: Decimal = Field(gt=0, max_digits=10, decimal_places=2)
    subsistence_line: Decimal = Field(gt=0, max_digits=10, decimal_places=2)
    answer_limit_days: int = Field(5, ge=1, le=60)
    transfer_limit_days: int = Field(20, ge=1, le=120)
    fund_multiplier: Decimal = Field(Decimal("1.5"), ge=0, le=5, max_digits=4, decimal_places=2)

    @model_validator(mode="after")
    def _between_lines(self) -> BenefitConfigIn:
        if not self.subsistence_line < self.monthly_standard < self.minimum_wage:
            raise ValueError(
                "the monthly standard must lie above the subsistence line and below the minimum wage "
                f"({self.subsistence_line} < {self.monthly_standard} < {self.minimum_wage} does not hold)"
            )
        return self


READ_ONLY_CONFIG = {"province", "updated_at"}


class RecordService:
    """Use cases of the province's records and benefit configuration (one transaction each)."""

    def __init__(
        self,
        *,
        province: str,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock = utcnow,
        benefit_config: config.ConfigCopy | None = None,
    ) -> None:
        self.province = province
        self.sessions = sessions
        self.clock = clock
        self.benefit_config = benefit_config

    async def add(self, person: PersonIn) -> None:
        try:
            async with self.sessions() as session, session.begin():
                await add_person(session, self.province, person)
        except IntegrityError as exc:
            raise RecordConflict("this person already has a record in this province") from exc

    async def import_all(self, persons: Sequence[PersonIn]) -> list[dict[str, Any]]:
        """Import every person or none; the errors say which rows clash with records held here."""
        errors: list[dict[str, Any]] = []
        async with self.sessions() as session:
            try:
                async with session.begin():
                    for line, person in enumerate(persons):
                        try:
                            async with session.begin_nested():
                                await add_person(session, self.province, person)
                        except (RecordConflict, IntegrityError) as exc:
                            reason = str(exc) if isinstance(exc, RecordConflict) else "already has a record here"
                            errors.append(
                                {
                                    "line": line + 2,
                                    "field": "resident_id",
                                    "message": f"{mask_resident_id(person.resident_id)}: {reason}",
                                }
                            )
                    if errors:
                        raise RecordConflict("rolled back")
            except RecordConflict:
                pass
        return errors

    async def record(self, resident_id: str) -> dict[str, Any] | None:
        async with self.sessions() as session:
            return await transfers.person_record(session, resident_id)

    async def config(self) -> dict[str, Any]:
        async with self.sessions() as session:
            return await config.load(session, self.province)

    async def set_config(self, body: BenefitConfigIn) -> dict[str, Any]:
        async with self.sessions() as session, session.begin():
            await config.store(session, self.province, body.model_dump(exclude=READ_ONLY_CONFIG), self.clock())
        if self.benefit_config is not None:
            self.benefit_config.changed()
        return await self.config()

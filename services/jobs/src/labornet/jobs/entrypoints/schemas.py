"""What the jobs API answers: a vacancy, a page of search results, a worker's subscriptions and matches.

A vacancy is public: everyone reads the same fields, officers of its province included, and they are the fields its
events carry (``to_event``). Nothing in it is a person's data: the employer is a company, the contact is the
employer's. A worker's subscriptions and matches are shown to that worker only; the secret that signs a
subscription's webhooks appears once, in the answer that creates it (``CreatedSubscription``).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, computed_field

from labornet.jobs.domain.application import ApplicationState
from labornet.jobs.domain.vacancy import EmploymentType, Status, TargetGroup
from labornet.shared.db import as_utc

# A vacancy's times as its events write them (``format_time``: UTC, microseconds, ``Z``). They reach the response
# already written by ``to_event``; parsing and writing them again would triple the cost of a page of results.
EventTime = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]

_PROVINCE = r"^\d{2}0000$"

# No null in an example: the OpenAPI document leaves null values out of it (FastAPI writes it without None).
VACANCY_EXAMPLE: dict[str, Any] = {
    "id": "510000-V-88C3B9F30C444A6395CB",
    "owner_province": "510000",
    "employer_name": "成都川味餐饮有限公司",
    "employer_credit_code": "91350100M000100Y43",
    "title": "川菜厨师 Sichuan chef",
    "description": "负责川菜热菜制作，提供住宿。",
    "occupation_code": "5120",
    "occupation_name": "厨师",
    "division_code": "510104",
    "city": "成都市",
    "headcount": 3,
    "hired": 1,
    "open_headcount": 2,
    "salary_min": 6000,
    "salary_max": 9000,
    "employment_type": "full-time",
    "target_groups": ["migrant-workers"],
    "skills": ["川菜", "刀工"],
    "brand_id": "510000-B-8F14E45FCEEA167A5A36",
    "contact": "028-86000000",
    "posted_at": "2026-03-02T01:20:00.000000Z",
    "closing_date": "2026-04-30",
    "status": "open",
    "version": 2,
    "updated_at": "2026-03-05T08:00:00.000000Z",
}


class Vacancy(BaseModel):
    """A vacancy as this node holds it (its own province's or a partner's, from the replica)."""

    model_config = ConfigDict(json_schema_extra={"examples": [VACANCY_EXAMPLE]})
    id: str = Field(description="`<owner province>-V-<random>`")
    owner_province: str = Field(pattern=_PROVINCE, description="the province that posted it, the only one to change it")
    employer_name: str
    employer_credit_code: str = Field(description="the employer's unified social credit code (GB 32100)")
    title: str
    description: str
    occupation_code: str = Field(description="ISCO-08 unit group, e.g. 5120 (cooks)")
    occupation_name: str = Field(description="the occupation's Chinese name")
    division_code: str = Field(pattern=r"^\d{6}$", description="where the work is: a division of the owner province")
    city: str
    headcount: int
    hired: int = Field(
        description="applicants hired through the platform; the vacancy is filled when it reaches headcount"
    )
    salary_min: int = Field(description="CNY per month")
    salary_max: int = Field(description="CNY per month, at least salary_min")
    employment_type: EmploymentType
    target_groups: list[TargetGroup]
    skills: list[str]
    brand_id: str | None = Field(description="the labour-service brand it names, if any")
    contact: str = Field(description="the employer's contact for applicants")
    posted_at: EventTime
    closing_date: date = Field(description="the last day it is open (China time); it expires the day after")
    status: Status
    version: int = Field(description="raised by every change; send it back as If-Match or `version` to change it")
    updated_at: EventTime

    @computed_field(description="places left: headcount - hired")  # type: ignore[prop-decorator]
    @property
    def open_headcount(self) -> int:
        return self.headcount - self.hired


# the stored fields a Vacancy shows, in its order (the reads write them straight from the replica's rows)
VACANCY_FIELDS = tuple(Vacancy.model_fields)


class VacancyPage(BaseModel):
    """One page of a search, in the order asked for."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [VACANCY_EXAMPLE],
                    "next_cursor": "bmV3ZXN0OjE3NDA4ODA0MDA6NTEwMDAw",
                    "total": 27,
                    "total_exact": True,
                }
            ]
        }
    )
    items: list[Vacancy]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")
    total: int = Field(description="vacancies matching the filters, whatever the cursor (capped: see total_exact)")
    total_exact: bool = Field(description="false when total stopped at the cap: read it as 'total or more'")


SUBSCRIPTION_EXAMPLE: dict[str, Any] = {
    "id": "4b0d6a1e-2f8a-4f7e-9a51-0c3c2b1d9e77",
    "occupation_codes": ["51"],
    "provinces": ["330000"],
    "division_codes": [],
    "min_salary": 6000,
    "keywords": ["厨师"],
    "target_group": "migrant-workers",
    "webhook_url": "https://example.org/hooks/wang",
    "active": True,
    "created_at": "2026-03-02T01:20:00.123456Z",
}


class SubscriptionView(BaseModel):
    """A worker's subscription: its criteria (see ``SubscriptionCriteria``) and whether it still matches."""

    model_config = ConfigDict(json_schema_extra={"examples": [SUBSCRIPTION_EXAMPLE]})
    id: str
    occupation_codes: list[str]
    provinces: list[str]
    division_codes: list[str]
    min_salary: int | None
    keywords: list[str]
    target_group: TargetGroup | None
    webhook_url: str | None
    active: bool = Field(description="false once deleted: no new matches, the matches found so far stay")
    created_at: UtcDatetime


class CreatedSubscription(SubscriptionView):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    **SUBSCRIPTION_EXAMPLE,
                    "webhook_secret": "Q2hhbmdlIG1lOiB0aGlzIGlzIGFuIGV4YW1wbGU",
                    "initial_matches": 5,
                }
            ]
        }
    )
    webhook_secret: str | None = Field(
        description="HMAC-SHA256 key of X-LaborNet-Signature; shown only in this answer, keep it"
    )
    initial_matches: int = Field(description="open vacancies already in the replica that this subscription matched")


class SubscriptionList(BaseModel):
    items: list[SubscriptionView] = Field(description="the caller's active subscriptions, newest first")


class VacancySummary(BaseModel):
    """What a match shows of its vacancy; the whole vacancy is at ``GET /api/v1/vacancies/{id}``."""

    id: str
    title: str
    city: str
    owner_province: str
    salary_min: int
    salary_max: int
    status: Status
    version: int


MATCH_EXAMPLE: dict[str, Any] = {
    "id": 42,
    "subscription_id": SUBSCRIPTION_EXAMPLE["id"],
    "vacancy_id": "330000-V-6F1C2D3E4A5B6C7D8E9F",
    "vacancy_status": "open",
    "vacancy_version": 1,
    "matched_at": "2026-03-02T01:20:00.654321Z",
    "updated_at": "2026-03-02T01:20:00.654321Z",
    "vacancy": {
        "id": "330000-V-6F1C2D3E4A5B6C7D8E9F",
        "title": "川菜厨师",
        "city": "杭州市",
        "owner_province": "330000",
        "salary_min": 6000,
        "salary_max": 9000,
        "status": "open",
        "version": 1,
    },
}


class VacancyMatch(BaseModel):
    """A vacancy one of the worker's subscriptions matched (once per subscription and vacancy, ever)."""

    model_config = ConfigDict(json_schema_extra={"examples": [MATCH_EXAMPLE]})
    id: int = Field(description="rises with every match; the event id of the match stream")
    subscription_id: str
    vacancy_id: str
    vacancy_status: Status = Field(description="the vacancy's status as last seen by this match")
    vacancy_version: int
    matched_at: UtcDatetime
    updated_at: UtcDatetime
    vacancy: VacancySummary | None = Field(description="the vacancy now; null if it left the replica")


class MatchPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [MATCH_EXAMPLE], "next_cursor": "YmVmb3JlOjQy"}]}
    )
    items: list[VacancyMatch] = Field(description="newest first")
    next_cursor: str | None = Field(description="pass as cursor for the next (older) page; null on the last page")


APPLICATION_NOTICE_EXAMPLE: dict[str, Any] = {
    "id": 7,
    "application_id": "510000-A-3F2A9C1D0B8E7F6A5B4C",
    "version": 3,
    "state": "interview",
    "vacancy_id": "330000-V-6F1C2D3E4A5B6C7D8E9F",
    "vacancy_title": "川菜厨师",
    "at": "2026-03-03T02:00:00.123456Z",
}


class ApplicationNotice(BaseModel):
    """One of the worker's applications reached a new version at their home node (the whole application is at
    ``GET /api/v1/applications/{application_id}``)."""

    model_config = ConfigDict(json_schema_extra={"examples": [APPLICATION_NOTICE_EXAMPLE]})
    id: int = Field(description="rises with every notice: the second part of the match stream's event id")
    application_id: str
    version: int
    state: ApplicationState
    vacancy_id: str
    vacancy_title: str
    at: UtcDatetime = Field(description="when the change reached the home node")

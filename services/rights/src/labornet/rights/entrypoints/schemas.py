"""What the rights API answers: the case as a caller may see it, a page of cases, the federation's statistics.

A case view is the case as both provinces hold it (``Case``, with its timeline or without it in lists) plus what
this node says about it: its side in the case, the limit it is past, the limit it was escalated for, a pending
withdrawal and whether this node keeps only a redacted copy. The complainant appears in full (``Complainant``) to
the complainant and to officers of the home or the handling province, masked (``MaskedComplainant``) to everyone
else who may see the case: officers of a province that declined it, whose copy is redacted.

The statistics are anonymous: counts and sums, no case, no person, no employer.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from labornet.rights.domain.case import (
    Category,
    ClosureReason,
    Complainant,
    Employer,
    Entry,
    Evidence,
    Overdue,
    Period,
    Sector,
    Status,
    WorkPlace,
)

Side = Literal["home", "handling", "former"]

# The moment a withdrawal was asked for has always been written with its offset (``+00:00``), unlike the case's
# own times (``Z``); both are RFC 3339 date-times, and the response keeps the form clients already read.
OffsetDateTime = Annotated[
    datetime,
    PlainSerializer(lambda value: value.isoformat(), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization"),
]

_PROVINCE = r"^\d{2}0000$"

CASE_EXAMPLE: dict[str, Any] = {
    "id": "510000-R-91FBC3CACC81436A",
    "version": 4,
    "home_province": "510000",
    "handling_province": "320000",
    "holder": "320000",
    "status": "investigating",
    "closure_reason": None,
    "category": "wage-arrears",
    "sector": "construction",
    "complainant": {"resident_id": "511602198504120376", "name": "王小明", "phone": "13812345678"},
    "employer": {
        "name": "南京某建设工程有限公司",
        "credit_code": "91350100M000100Y43",
        "address": "南京市江宁区某路 1 号",
        "province": "320000",
    },
    "work_place": {"division_code": "320115", "site": "江宁某安置房项目"},
    "work_place_name": "南京市",
    "period": {"start": "2025-03-01", "end": "2025-12-31"},
    "amount_owed": "48600.00",
    "workers_affected": 12,
    "evidence": [{"name": "考勤表.pdf", "sha256": "ab" * 32, "size": 20480}],
    "facts": "工程完工后拖欠十个月工资。",
    "filed_at": "2026-03-02T01:20:00Z",
    "referred_at": "2026-03-02T01:20:00Z",
    "acceptance_due": "2026-03-09",
    "accepted_at": "2026-03-03T02:00:00Z",
    "investigation_due": "2026-05-29",
    "extended": False,
    "concluded_at": None,
    "amount_recovered": None,
    "workers_paid": None,
    "declined_by": [],
    "side": "home",
    "overdue": None,
    "escalated": None,
    "withdrawal_requested_at": None,
    "redacted": False,
}
TIMELINE_EXAMPLE: list[dict[str, Any]] = [
    {
        "seq": 1,
        "at": "2026-03-02T01:20:00Z",
        "province": "510000",
        "actor": "complainant",
        "kind": "filed",
        "status": "referred",
        "note": None,
        "details": {},
    },
    {
        "seq": 2,
        "at": "2026-03-02T01:20:00Z",
        "province": "510000",
        "actor": "complainant",
        "kind": "referred",
        "status": "referred",
        "note": None,
        "details": {"to": "320000"},
    },
    {
        "seq": 3,
        "at": "2026-03-03T02:00:00Z",
        "province": "320000",
        "actor": "officer:js-officer",
        "kind": "accepted",
        "status": "investigating",
        "note": "予以受理",
        "details": {},
    },
    {
        "seq": 4,
        "at": "2026-03-10T06:30:00Z",
        "province": "320000",
        "actor": "officer:js-officer",
        "kind": "updated",
        "status": "investigating",
        "note": "约谈项目负责人",
        "details": {},
    },
]

CASE_VIEW_EXAMPLE: dict[str, Any] = {**CASE_EXAMPLE, "timeline": TIMELINE_EXAMPLE}


class MaskedComplainant(BaseModel):
    """The complainant as a caller who may not see them is shown: only enough to recognise the case."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={"examples": [{"resident_id": "5116**********0376", "name": "王**", "phone": "138****5678"}]},
    )
    resident_id: str = Field(max_length=18, description="the first four and last four characters; the rest is `*`")
    name: str = Field(max_length=50, description="the surname; the rest is `*`")
    phone: str = Field(max_length=20, description="the first three and last four digits; the rest is `*`")


class CaseSummary(BaseModel):
    """A case as a list shows it: everything but the timeline."""

    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [CASE_EXAMPLE]})
    id: str = Field(max_length=40, description="`<home province>-R-<16 hex digits>`")
    version: int = Field(ge=1, description="raised by every change; the same on the home and the handling node")
    home_province: str = Field(pattern=_PROVINCE, description="where the case was filed (the complainant's home)")
    handling_province: str | None = Field(
        pattern=_PROVINCE, description="the province of the work place that handles it; null while returned home"
    )
    holder: str = Field(pattern=_PROVINCE, description="the one province that may change the case now")
    status: Status
    closure_reason: ClosureReason | None = Field(description="why a closed case was closed; null otherwise")
    category: Category
    sector: Sector
    complainant: Complainant | MaskedComplainant = Field(
        description="in full for the complainant and for officers of the home or the handling province; masked "
        "for anyone else who may see the case (officers of a province that declined it)"
    )
    employer: Employer
    work_place: WorkPlace
    work_place_name: str = Field(max_length=100, description="the registered name of the work place's division")
    period: Period
    amount_owed: Decimal = Field(description="CNY owed, with two decimals (a string, e.g. `48600.00`)")
    workers_affected: int = Field(ge=1)
    evidence: list[Evidence] = Field(description="fingerprints of the documents; the files stay with the filing office")
    facts: str = Field(max_length=5000, description="in the complainant's words; empty in a redacted copy")
    filed_at: datetime
    referred_at: datetime | None = Field(description="the latest referral")
    acceptance_due: date | None = Field(description="last working day to accept or decline the latest referral")
    accepted_at: datetime | None
    investigation_due: date | None = Field(description="last working day of the investigation (after any extension)")
    extended: bool = Field(description="the one extension of the investigation was granted")
    concluded_at: datetime | None = Field(description="when the case was resolved or closed")
    amount_recovered: Decimal | None = Field(description="CNY paid to the workers once resolved (a string)")
    workers_paid: int | None = Field(description="how many of the workers affected were paid, once resolved")
    declined_by: list[str] = Field(description="the provinces that declined the case, in order")
    side: Side = Field(
        description="this node's part in the case: home, handling, or former (it declined the case and keeps a "
        "redacted copy)"
    )
    overdue: Overdue | None = Field(description="the time limit an open case is past (in China's date), if any")
    escalated: Overdue | None = Field(
        description="the limit the case was escalated for, while that same limit is still passed; null otherwise"
    )
    withdrawal_requested_at: OffsetDateTime | None = Field(
        description="the complainant's withdrawal on its way to the province holding the case; null otherwise"
    )
    redacted: bool = Field(description="this node keeps only a masked copy (complainant masked, facts removed)")


class CaseView(CaseSummary):
    """One case with its timeline, as the home and the handling province both show it."""

    model_config = ConfigDict(json_schema_extra={"examples": [CASE_VIEW_EXAMPLE]})
    timeline: list[Entry] = Field(
        description="every step, numbered from 1, each written by the province that held the case. `details` by "
        "kind: referred `{to, work_place?, previous_work_place?}`, declined `{suggested_province?}`, extended "
        "`{investigation_due}`, escalated `{deadline, due, days_late}`, resolved `{amount_recovered, "
        "workers_paid}`, closed `{reason}`; otherwise `{}`"
    )


class CasePage(BaseModel):
    """A page of cases in id order; pass ``next_after`` as ``after`` for the next page."""

    model_config = ConfigDict(frozen=True)
    items: list[CaseSummary]
    next_after: str | None = Field(description="the cursor of the next page; null on the last page")


# Statistics -------------------------------------------------------------------------------------------------------


class Totals(BaseModel):
    """Cases counted and summed."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {"cases": 5, "workers_affected": 30, "amount_owed": "72102.99", "amount_recovered": "30000.00"}
            ]
        },
    )
    cases: int = Field(ge=0)
    workers_affected: int = Field(ge=0)
    amount_owed: Decimal = Field(description="CNY, two decimals (a string)")
    amount_recovered: Decimal = Field(description="CNY, two decimals (a string)")


class HomeProvinceTotals(Totals):
    home_province: str = Field(pattern=_PROVINCE, description="where the cases were filed")


class HandlingProvinceTotals(Totals):
    handling_province: str | None = Field(pattern=_PROVINCE, description="null for cases returned home")


class CategoryTotals(Totals):
    category: Category


class SectorTotals(Totals):
    sector: Sector


class StatusTotals(Totals):
    status: Status


class OriginSnapshot(BaseModel):
    """The latest snapshot this node holds of a member's cases."""

    model_config = ConfigDict(frozen=True)
    province: str = Field(pattern=_PROVINCE, description="the home province whose cases it counts")
    generation: int = Field(ge=1, description="a newer snapshot of the same province has a higher generation")
    as_of: datetime


class FederationStatistics(BaseModel):
    """Every member's latest anonymous snapshot, summed: no case number, name, identity number or employer."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "origins": [{"province": "510000", "generation": 17, "as_of": "2026-11-26T04:36:00.189366Z"}],
                    "totals": {
                        "cases": 2,
                        "workers_affected": 12,
                        "amount_owed": "72000.00",
                        "amount_recovered": "36000.00",
                    },
                    "by_home_province": [
                        {
                            "home_province": "510000",
                            "cases": 2,
                            "workers_affected": 12,
                            "amount_owed": "72000.00",
                            "amount_recovered": "36000.00",
                        }
                    ],
                    "by_handling_province": [
                        {
                            "handling_province": "500000",
                            "cases": 1,
                            "workers_affected": 6,
                            "amount_owed": "36000.00",
                            "amount_recovered": "0.00",
                        },
                        {
                            "handling_province": "510000",
                            "cases": 1,
                            "workers_affected": 6,
                            "amount_owed": "36000.00",
                            "amount_recovered": "36000.00",
                        },
                    ],
                    "by_category": [
                        {
                            "category": "wage-arrears",
                            "cases": 2,
                            "workers_affected": 12,
                            "amount_owed": "72000.00",
                            "amount_recovered": "36000.00",
                        }
                    ],
                    "by_sector": [
                        {
                            "sector": "construction",
                            "cases": 2,
                            "workers_affected": 12,
                            "amount_owed": "72000.00",
                            "amount_recovered": "36000.00",
                        }
                    ],
                    "by_status": [
                        {
                            "status": "referred",
                            "cases": 1,
                            "workers_affected": 6,
                            "amount_owed": "36000.00",
                            "amount_recovered": "0.00",
                        },
                        {
                            "status": "resolved",
                            "cases": 1,
                            "workers_affected": 6,
                            "amount_owed": "36000.00",
                            "amount_recovered": "36000.00",
                        },
                    ],
                    "generated_at": "2026-11-26T04:40:00.000000Z",
                }
            ]
        },
    )
    origins: list[OriginSnapshot] = Field(description="the snapshots summed, one per member that published one")
    totals: Totals
    by_home_province: list[HomeProvinceTotals]
    by_handling_province: list[HandlingProvinceTotals] = Field(description="cases returned home last (null)")
    by_category: list[CategoryTotals]
    by_sector: list[SectorTotals]
    by_status: list[StatusTotals]
    generated_at: datetime = Field(description="when this node summed the snapshots")

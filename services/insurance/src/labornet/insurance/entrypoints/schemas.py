"""What the insurance API answers: one model per resource view, each exactly the shape the routes have always
returned (amounts as text with two decimals, months as their first day, times in ISO 8601 with their UTC offset).

Only the person concerned and this province's officers ever see a transfer or a record, and both see the same
fields: there is no public view of either. The benefit configuration holds no personal data and is public.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from labornet.insurance.contracts import AmountText, Province, TransferOutSheet
from labornet.insurance.domain.rules import PeriodKind, PersonStatus
from labornet.insurance.domain.settlement import Direction, SettlementStatus
from labornet.insurance.domain.transfer import Reason, Side, State
from labornet.shared.db import as_utc

Timestamp = Annotated[datetime, AfterValidator(as_utc)]
"""A stored time, always shown in UTC with its offset (SQLite hands stored times back naive)."""
Amount = Annotated[Decimal, Field(description="yuan (CNY), as text with two decimals", examples=["42075.00"])]

FILED_AT = "2026-11-23T02:00:00Z"


class SheetView(TransferOutSheet):
    """The information sheet as the case holds it; a partner node's newer fields are kept."""

    model_config = ConfigDict(extra="allow")


class EntitlementView(BaseModel):
    """The receiving province's recomputation of the entitlement under its own standard (completed cases)."""

    months_available: int = Field(ge=0, description="contribution months that count for this entitlement")
    entitled_months: int = Field(ge=0, description="benefit months of the entitlement, at most 24")
    remaining_months: int = Field(ge=0, description="benefit months still to draw")
    monthly_standard: AmountText = Field(description="the receiving province's monthly benefit standard")
    remaining_amount: AmountText = Field(description="remaining months × the monthly standard")


class TimelineStep(BaseModel):
    """One entry of a case's timeline, written by the province holding that side."""

    at: Timestamp
    state: State
    province: Province
    note: str


class TransferView(BaseModel):
    """One province's side of a transfer of the unemployment-insurance relationship."""

    id: str = Field(description="this side's case number (T: receiving, C: sending)")
    side: Side = Field(description="receiving: the province moved to; sending: the last place of insurance")
    peer_case: str | None = Field(description="the other side's case number, once its first message arrived")
    resident_id: str = Field(description="the person's resident identity number")
    person_name: str = Field(description="the person's name as the request gives it")
    from_province: Province = Field(description="the sending province")
    to_province: Province = Field(description="the receiving province")
    reason: Reason
    new_employer_credit_code: str | None = Field(description="new employment only: the new employer's credit code")
    state: State
    filed_by: str = Field(description="who filed it: the worker, an officer, or province:<code> for a letter")
    filed_at: Timestamp
    answer_due: date = Field(description="the last day for the sending office's answer (working days)")
    complete_due: date = Field(description="the last day of the total time limit (working days)")
    sheet: SheetView | None = Field(description="the information sheet, once sent (sending) or received (receiving)")
    entitlement: EntitlementView | None = Field(description="receiving side, completed: the recomputed entitlement")
    refusal_reason: str | None
    closed_at: Timestamp | None = Field(description="when it reached a terminal state")
    version: int = Field(ge=1, description="raised by every change")
    name_on_record: str | None = Field(description="sending side: the record's name, when the request's differs")
    name_mismatch: bool = Field(description="the request names the person otherwise than the record")
    overdue: bool = Field(description="open past its time limit")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "330000-T-3F2A9C1B7D4E5A60",
                    "side": "receiving",
                    "peer_case": None,
                    "resident_id": "511602198803070014",
                    "person_name": "王晓明",
                    "from_province": "510000",
                    "to_province": "330000",
                    "reason": "claimant-relocation",
                    "new_employer_credit_code": None,
                    "state": "awaiting-answer",
                    "filed_by": "511602198803070014",
                    "filed_at": FILED_AT,
                    "answer_due": "2026-11-30",
                    "complete_due": "2026-12-21",
                    "sheet": None,
                    "entitlement": None,
                    "refusal_reason": None,
                    "closed_at": None,
                    "version": 1,
                    "name_on_record": None,
                    "name_mismatch": False,
                    "overdue": False,
                }
            ]
        }
    )


class TransferDetail(TransferView):
    """A case with its timeline."""

    timeline: list[TimelineStep]

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "330000-T-3F2A9C1B7D4E5A60",
                    "side": "receiving",
                    "peer_case": "510000-C-9B1E22D0A47C3F18",
                    "resident_id": "511602198803070014",
                    "person_name": "王晓明",
                    "from_province": "510000",
                    "to_province": "330000",
                    "reason": "claimant-relocation",
                    "new_employer_credit_code": None,
                    "state": "completed",
                    "filed_by": "511602198803070014",
                    "filed_at": FILED_AT,
                    "answer_due": "2026-11-30",
                    "complete_due": "2026-12-21",
                    "sheet": {
                        "cumulative_months": 96,
                        "actual_months": 96,
                        "deemed_months": 0,
                        "former_migrant_months": 0,
                        "months_used": 0,
                        "months_available": 96,
                        "benefit_months_paid": 3,
                        "benefit_months_remaining": 15,
                        "monthly_standard": "1870.00",
                        "fund_due": "42075.00",
                        "earlier_unclaimed_months": 0,
                        "entitled_months": 18,
                    },
                    "entitlement": {
                        "months_available": 96,
                        "entitled_months": 18,
                        "remaining_months": 15,
                        "monthly_standard": "2090.00",
                        "remaining_amount": "31350.00",
                    },
                    "refusal_reason": None,
                    "closed_at": "2026-11-24T06:12:40Z",
                    "version": 2,
                    "name_on_record": None,
                    "name_mismatch": False,
                    "overdue": False,
                    "timeline": [
                        {
                            "at": FILED_AT,
                            "state": "awaiting-answer",
                            "province": "330000",
                            "note": "contact letter sent",
                        },
                        {
                            "at": "2026-11-24T06:12:40Z",
                            "state": "completed",
                            "province": "330000",
                            "note": "relationship opened; receipt sent",
                        },
                    ],
                }
            ]
        }
    )


class TransferPage(BaseModel):
    """Cases in case-number order; ``next_after`` is the ``after`` of the next page (null: the last page)."""

    items: list[TransferView]
    next_after: str | None = Field(description="pass it as `after` for the next page; null when none follows")


# Records -----------------------------------------------------------------------------------------------------


class PersonCreated(BaseModel):
    resident_id: str
    periods: int = Field(ge=0, description="how many contribution periods were recorded")


class ImportSummary(BaseModel):
    imported_persons: int = Field(ge=0)
    imported_periods: int = Field(ge=0)


class RecordPeriod(BaseModel):
    """A contribution period the province holds or held of the person."""

    start_month: date = Field(description="the first day of its first month")
    end_month: date = Field(description="the first day of its last month (inclusive)")
    kind: PeriodKind
    province: Province = Field(description="where the contributions were paid")
    employer_credit_code: str | None
    carried_in_by: str | None = Field(description="the transfer case that brought it here")
    carried_out_by: str | None = Field(description="the transfer case that took it away (no longer live here)")


class InsuredPersonView(BaseModel):
    """A person's record in this province with every contribution period it ever held."""

    resident_id: str
    name: str
    hukou_division: str = Field(description="household-registration division (6 digits)")
    status: PersonStatus
    employer_credit_code: str | None
    months_used: int = Field(ge=0, description="contribution months an earlier, concluded claim used")
    benefit_months_paid: int = Field(ge=0, description="months drawn of the current entitlement")
    earlier_unclaimed_months: int = Field(ge=0, description="months of an earlier entitlement never drawn")
    transfer_lock: str | None = Field(description="the transfer case holding the record, if any")
    version: int = Field(ge=1)
    created_at: Timestamp
    updated_at: Timestamp
    periods: list[RecordPeriod]

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "resident_id": "330106199005170018",
                    "name": "李娜",
                    "hukou_division": "330106",
                    "status": "insured-employed",
                    "employer_credit_code": "91350100M000100Y43",
                    "months_used": 0,
                    "benefit_months_paid": 0,
                    "earlier_unclaimed_months": 0,
                    "transfer_lock": None,
                    "version": 1,
                    "created_at": FILED_AT,
                    "updated_at": FILED_AT,
                    "periods": [
                        {
                            "start_month": "2019-01-01",
                            "end_month": "2021-06-01",
                            "kind": "actual",
                            "province": "330000",
                            "employer_credit_code": None,
                            "carried_in_by": None,
                            "carried_out_by": None,
                        }
                    ],
                }
            ]
        }
    )


# Settlements and configuration -------------------------------------------------------------------------------


class SettlementView(BaseModel):
    """The money that follows a completed transfer, as this province holds it."""

    id: str = Field(description="the settlement's number, the same in both provinces")
    direction: Direction = Field(description="outgoing: this province pays; incoming: it is owed")
    transfer_id: str = Field(description="this node's transfer case")
    peer_case: str = Field(description="the other province's transfer case")
    resident_id: str
    from_province: Province = Field(description="the paying province")
    to_province: Province = Field(description="the province owed")
    amount: Amount
    due_month: date = Field(description="the first day of the month of the paying province's disbursement plan")
    status: SettlementStatus
    created_at: Timestamp
    paid_at: Timestamp | None
    paid_by: str | None = Field(description="the paying officer, or province:<code> on the side owed")
    payment_reference: str | None

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "510000-S-5C0D6E2F9A8B7C41",
                    "direction": "outgoing",
                    "transfer_id": "510000-C-9B1E22D0A47C3F18",
                    "peer_case": "330000-T-3F2A9C1B7D4E5A60",
                    "resident_id": "511602198803070014",
                    "from_province": "510000",
                    "to_province": "330000",
                    "amount": "42075.00",
                    "due_month": "2026-12-01",
                    "status": "paid",
                    "created_at": "2026-11-24T06:12:41Z",
                    "paid_at": "2026-12-03T01:30:00Z",
                    "paid_by": "officer-510000",
                    "payment_reference": "SC-2026-12-0042",
                }
            ]
        }
    )


class SettlementList(BaseModel):
    """Settlements by due month."""

    items: list[SettlementView]


class BenefitConfigView(BaseModel):
    """A province's benefit standard and the time limits of its transfers."""

    province: Province
    monthly_standard: Amount = Field(description="the monthly unemployment benefit, yuan")
    minimum_wage: Amount
    subsistence_line: Amount
    answer_limit_days: int = Field(description="working days for the sending office's answer")
    transfer_limit_days: int = Field(description="working days for the whole transfer")
    fund_multiplier: Decimal = Field(description="money moved per remaining benefit yuan, as text", examples=["1.50"])
    updated_at: Timestamp

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "province": "330000",
                    "monthly_standard": "2090.00",
                    "minimum_wage": "2490.00",
                    "subsistence_line": "1050.00",
                    "answer_limit_days": 5,
                    "transfer_limit_days": 20,
                    "fund_multiplier": "1.50",
                    "updated_at": FILED_AT,
                }
            ]
        }
    )

"""The insurance service's bus contract: the directed messages of the transfer saga and of its settlements.

Every message goes to one province's insurance inbox (``labornet.<destination>.insurance.inbox``): the receiving
office writes to the sending office and back, keyed by the receiving case; nothing is broadcast. Each model below
is the CloudEvent's ``data`` exactly as :mod:`labornet.insurance.domain.transfer` and
:mod:`labornet.insurance.domain.settlement` build it. Amounts travel as text with two decimals (``"42075.00"``),
times as ISO 8601 with their UTC offset, months as their first day (``"2026-12-01"``).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from labornet.insurance.domain.rules import PeriodKind
from labornet.insurance.domain.settlement import SETTLEMENT_PAID, SETTLEMENT_SCHEDULED
from labornet.insurance.domain.transfer import (
    CANCELLATION,
    CANCELLATION_CONFIRMED,
    CONTACT_LETTER,
    INFORMATION_SHEET,
    RECEIPT,
    REFUSAL,
    Reason,
)
from labornet.shared.contracts import EventContract

AmountText = Annotated[
    str,
    Field(pattern=r"^-?\d+\.\d{2}$", description="yuan (CNY) with two decimals, as text", examples=["42075.00"]),
]
Province = Annotated[str, Field(pattern=r"^\d{2}0000$", description="a province's code", examples=["510000"])]
ReceivingCase = Annotated[str, Field(description="the receiving province's case number", examples=["330000-T-…"])]
SendingCase = Annotated[str, Field(description="the sending province's case number", examples=["510000-C-…"])]
Months = Annotated[int, Field(ge=0)]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TransferOutSheet(Message):
    """The sending office's information sheet (转出信息表): months contributed, used and paid, and the money that
    moves, computed under the sending province's standard."""

    cumulative_months: Months = Field(description="contribution months of every live period")
    actual_months: Months
    deemed_months: Months = Field(description="months deemed contributed (视同缴费)")
    former_migrant_months: Months = Field(description="months contributed as a migrant worker under older rules")
    months_used: Months = Field(description="contribution months an earlier, concluded claim used")
    months_available: Months = Field(description="contribution months that count for a new entitlement")
    benefit_months_paid: Months = Field(description="months drawn of the current entitlement")
    benefit_months_remaining: Months = Field(description="months still to draw (0 unless claiming)")
    monthly_standard: AmountText = Field(description="the sending province's monthly benefit standard")
    fund_due: AmountText = Field(description="what the sending province pays the receiving one (0.00: no money)")
    earlier_unclaimed_months: Months = Field(
        0, description="months of an earlier claim's entitlement never drawn (art. 17 second paragraph)"
    )
    entitled_months: Months = Field(0, description="the combined entitlement, at most 24 months")


class CarriedPeriod(Message):
    """A contribution period that moves with the relationship."""

    start_month: date = Field(description="the first day of its first month")
    end_month: date = Field(description="the first day of its last month (inclusive)")
    kind: PeriodKind
    province: Province = Field(description="where the contributions were paid")
    employer_credit_code: str | None = None


class LetterPerson(Message):
    resident_id: str = Field(description="the resident identity number")
    name: str = Field(description="the name as the request gives it")


class ContactLetter(Message):
    """The receiving office asks the sending office for the record (联系函)."""

    receiving_case: ReceivingCase
    sending_case: None = Field(description="always null: the sending case is opened by this letter")
    person: LetterPerson
    from_province: Province = Field(description="the sending province, the letter's destination")
    to_province: Province = Field(description="the receiving province, the letter's origin")
    reason: Reason
    new_employer_credit_code: str | None = Field(description="new employment only: the new employer")
    filed_at: datetime
    complete_due: date = Field(description="the last day of the total time limit, binding both sides")


class InformationSheet(Message):
    """The sending office answers with the sheet and the live periods; its record is frozen until the receipt."""

    receiving_case: ReceivingCase
    sending_case: SendingCase
    sheet: TransferOutSheet
    hukou_division: str = Field(description="the person's household-registration division (6 digits)")
    periods: list[CarriedPeriod]


class Refusal(Message):
    """The sending office refuses the request (no record, already transferred, suspended, or its officer's call)."""

    receiving_case: ReceivingCase
    sending_case: SendingCase
    reason: str


class Receipt(Message):
    """The receiving office opened the relationship: the sending office closes its own and schedules the money."""

    receiving_case: ReceivingCase
    sending_case: SendingCase
    opened_at: datetime


class Cancellation(Message):
    """The worker withdrew the request before the answer."""

    receiving_case: ReceivingCase
    sending_case: SendingCase | None = Field(description="null until the sending office's answer is known")


class CancellationConfirmed(Message):
    """The sending office closed its case unanswered, at the worker's request."""

    receiving_case: ReceivingCase
    sending_case: SendingCase


class SettlementScheduled(Message):
    """The sending province scheduled the money that follows a completed transfer, in its next monthly plan."""

    settlement: str = Field(description="the settlement's number, the same on both sides", examples=["510000-S-…"])
    receiving_case: ReceivingCase
    sending_case: SendingCase
    amount: AmountText
    resident_id: str
    due_month: date = Field(description="the first day of the month of the disbursement plan")


class SettlementPaid(Message):
    """The sending province paid a settlement; the receiving province marks its copy paid."""

    settlement: str = Field(description="the settlement's number, the same on both sides", examples=["510000-S-…"])
    receiving_case: ReceivingCase
    sending_case: SendingCase
    amount: AmountText
    paid_at: datetime
    payment_reference: str | None = Field(description="the disbursement's reference, when the payer gave one")


EVENTS: list[EventContract] = [
    EventContract(
        CONTACT_LETTER,
        ContactLetter,
        "inbox",
        "A transfer is filed: the receiving office's contact letter to the sending office",
    ),
    EventContract(
        INFORMATION_SHEET,
        InformationSheet,
        "inbox",
        "The sending office's information sheet, with the periods that move",
    ),
    EventContract(REFUSAL, Refusal, "inbox", "The sending office refuses the transfer, with a reason"),
    EventContract(
        RECEIPT, Receipt, "inbox", "The receiving office opened the relationship; the sending office closes its own"
    ),
    EventContract(CANCELLATION, Cancellation, "inbox", "The worker withdrew the request before the answer"),
    EventContract(
        CANCELLATION_CONFIRMED,
        CancellationConfirmed,
        "inbox",
        "The sending office closed its case at the worker's request",
    ),
    EventContract(
        SETTLEMENT_SCHEDULED,
        SettlementScheduled,
        "inbox",
        "The money that follows a completed transfer is scheduled by the paying province",
    ),
    EventContract(SETTLEMENT_PAID, SettlementPaid, "inbox", "The paying province paid a settlement"),
]

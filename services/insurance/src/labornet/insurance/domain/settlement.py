"""The money that follows a completed transfer: one settlement, held by both provinces.

The sending province schedules it when the receipt closes its side (in its next monthly disbursement plan: the
month after China's date of the receipt) and tells the receiving province; the receiving province keeps the same
settlement as money owed to it. Only the sending (paying) province marks it paid, with the payment reference,
and that too reaches the receiving province as a directed message. A transfer that moves no money (an employed
mover, or under a year contributed at the sending place) has no settlement.

::

    outgoing (sending province):  pending ──officer: paid (reference)──▶ paid
    incoming (receiving province): pending ──the payer's message──▶ paid
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from labornet.insurance.domain.events import Message
from labornet.shared.clock import china_date

SETTLEMENT_SCHEDULED = "org.labornet.insurance.settlement.scheduled.v1"
SETTLEMENT_PAID = "org.labornet.insurance.settlement.paid.v1"
SETTLEMENT_MESSAGE_TYPES = (SETTLEMENT_SCHEDULED, SETTLEMENT_PAID)


class SettlementRuleError(Exception):
    """A change of a settlement its rules do not allow (already paid, not this province's to pay)."""


class SettlementStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"


class Direction(StrEnum):
    OUTGOING = "outgoing"  # this province pays
    INCOMING = "incoming"  # this province is owed


@dataclass(frozen=True)
class Settlement:
    id: str
    direction: Direction
    transfer_id: str  # this node's case
    peer_case: str  # the other province's case
    resident_id: str
    from_province: str  # who pays
    to_province: str  # who is owed
    amount: Decimal
    due_month: date  # the first day of the month of the disbursement plan
    status: SettlementStatus
    created_at: datetime
    paid_at: datetime | None = None
    paid_by: str | None = None
    payment_reference: str | None = None


def due_month(at: datetime) -> date:
    """The sending province's next monthly disbursement plan, by China's date (not UTC's)."""
    today = china_date(at)
    return date(today.year + today.month // 12, today.month % 12 + 1, 1)


def _message(settlement: Settlement, event_type: str, **details: Any) -> Message:
    """A message about ``settlement`` to the province owed it, naming both cases (keyed like the transfer's)."""
    return Message(
        to=settlement.to_province,
        type=event_type,
        key=settlement.peer_case,
        data={
            "settlement": settlement.id,
            "receiving_case": settlement.peer_case,
            "sending_case": settlement.transfer_id,
            "amount": f"{settlement.amount:.2f}",
            **details,
        },
    )


def scheduled_message(settlement: Settlement) -> Message:
    return _message(
        settlement,
        SETTLEMENT_SCHEDULED,
        resident_id=settlement.resident_id,
        due_month=settlement.due_month.isoformat(),
    )


def pay(
    settlement: Settlement, *, province: str, by: str, reference: str | None, at: datetime
) -> tuple[Settlement, Message]:
    """The paying province's officer records the payment; the receiving province is told."""
    if settlement.direction != Direction.OUTGOING or settlement.from_province != province:
        raise SettlementRuleError(
            f"settlement {settlement.id} is owed to this province by {settlement.from_province}; "
            "only the paying province marks it paid"
        )
    if settlement.status != SettlementStatus.PENDING:
        raise SettlementRuleError(f"settlement {settlement.id} is already {settlement.status}")
    paid = replace(settlement, status=SettlementStatus.PAID, paid_at=at, paid_by=by, payment_reference=reference)
    return paid, _message(settlement, SETTLEMENT_PAID, paid_at=at.isoformat(), payment_reference=reference)


def owed(data: dict[str, Any], *, origin: str, province: str, receiving_case: str, at: datetime) -> Settlement:
    """The receiving province's copy of a settlement the sending province scheduled."""
    return Settlement(
        id=str(data["settlement"]),
        direction=Direction.INCOMING,
        transfer_id=receiving_case,
        peer_case=str(data["sending_case"]),
        resident_id=str(data["resident_id"]),
        from_province=origin,
        to_province=province,
        amount=Decimal(str(data["amount"])),
        due_month=date.fromisoformat(str(data["due_month"])),
        status=SettlementStatus.PENDING,
        created_at=at,
    )


def paid_by_payer(settlement: Settlement, data: dict[str, Any], *, origin: str) -> Settlement:
    """The payer's "paid" applied to the receiving province's copy (a repeated message changes nothing)."""
    if settlement.direction != Direction.INCOMING or settlement.from_province != origin:
        raise ValueError(f"{origin} reports a payment of settlement {settlement.id}, which it does not owe")
    if settlement.status == SettlementStatus.PAID:
        return settlement
    return replace(
        settlement,
        status=SettlementStatus.PAID,
        paid_at=datetime.fromisoformat(str(data["paid_at"])),
        paid_by=f"province:{origin}",
        payment_reference=data.get("payment_reference"),
    )

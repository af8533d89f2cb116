"""Receipts for directed messages: delivered until acknowledged, whatever happens to the broker's log.

A directed message (a contact letter, an information sheet, a rights referral, a brand demand…) is addressed to
one province. As in eDelivery AS4, the receiver answers each one it has durably taken with a signed **receipt**,
written to its outbox in the same transaction as the effect (or, for a duplicate, as the duplicate check), and
sent to the sender's inbox topic. The sender keeps the message in its outbox until the receipt arrives and
publishes it again with exponential backoff while none has; the receiver's inbox drops the repeats and answers
each with a receipt again, so a lost receipt costs one more resend and nothing else.

Receipts say what happened: ``applied`` or ``duplicate`` (the message is held), or ``rejected`` (it broke the
receiver's rules and is in the receiver's quarantine; resending the same bytes cannot help). A message whose
handler failed for another reason gets no receipt: the sender keeps resending, which is what lets a message that
arrived before its predecessor (after a log was lost) apply once the predecessor is there.

An answer can carry the acknowledgement instead (ADR 39). Suppose the transaction that applies a message also sends
the message's sender a directed message on the same service (Sichuan's information sheet answering Zhejiang's
contact letter), and the message said ``ce_ackinanswer``. Then the answer lists the message in ``ce_acknowledges``,
and no receipt is written; the sender applies the list as receipts with outcome ``applied``.

Receipts themselves are never acknowledged. Only the province a message was addressed to can acknowledge it:
the receipt is signed by its origin and matched on the message's destination.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import bindparam, update
from sqlalchemy.ext.asyncio import AsyncSession

from labornet.shared.db import outbox, utcnow
from labornet.shared.direct import Direct
from labornet.shared.envelope import Envelope
from labornet.shared.outbox import ACK_IN_ANSWER, ACKNOWLEDGES, Outbox
from labornet.shared.topics import inbox_topic

log = logging.getLogger(__name__)

RECEIPT = "org.labornet.platform.receipt.v1"

RECEIPTS = Counter(
    "labornet_receipts_total",
    "Receipts for directed messages, by direction (sent, received) and outcome",
    ["service", "direction", "outcome"],
)


class ReceiptOutcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


def init_receipt_metrics(service: str) -> None:
    """Every receipt series of a service that reads an inbox topic, at 0 from start-up (it sends receipts and gets
    them back), so that ``increase()`` sees the first refusal or unmatched receipt."""
    for outcome in ReceiptOutcome:
        RECEIPTS.labels(service, "sent", outcome.value)
        RECEIPTS.labels(service, "received", outcome.value)
    RECEIPTS.labels(service, "received", "unmatched")


class Receipt(BaseModel):
    """The data of a receipt event."""

    model_config = ConfigDict(extra="forbid")
    event_id: str = Field(max_length=64, description="the id of the directed message received")
    event_type: str = Field(max_length=200)
    outcome: ReceiptOutcome
    received_at: datetime


async def send_receipt(session: AsyncSession, writer: Outbox, envelope: Envelope, outcome: ReceiptOutcome) -> None:
    """Answer the directed message ``envelope`` with a receipt, written when the transaction ``session`` is in
    commits (with the other events of the transaction: a run of inbox records adds no statement per receipt).

    The receipt is keyed like the message it acknowledges (its ``partitionkey``, the aggregate it is about): the
    answers the transaction sends to the same province about the same aggregate share its partition, so the sender
    takes the receipt in the same run and transaction as the answer. Keyed by the message's id, receipts scattered
    over the partitions and, at a low rate, each cost the sender a transaction of its own (the saga at 20
    transfers/s: about 9 % less CPU a transfer keyed so; at 100/s runs hold many records either way)."""
    writer.queue(
        session,
        topic=inbox_topic(envelope.originprovince, writer.service),
        event_type=RECEIPT,
        key=envelope.partitionkey or envelope.id,
        subject=envelope.id,
        destination=envelope.originprovince,
        data=Receipt(event_id=envelope.id, event_type=envelope.type, outcome=outcome, received_at=utcnow()),
        expects_receipt=False,
        # an answer of the same transaction to the same province may carry it instead (ADR 39)
        acknowledging=(
            envelope.id if outcome is ReceiptOutcome.APPLIED and envelope.extra.get(ACK_IN_ANSWER) == "true" else None
        ),
    )
    RECEIPTS.labels(writer.service, "sent", outcome.value).inc()


async def apply_receipt(session: AsyncSession, envelope: Envelope, service: str) -> bool:
    """Mark the message a receipt acknowledges; ``False`` when it names no message this service sent its origin."""
    (matched,) = await apply_receipts(session, [envelope], service)
    return matched


# built once (it runs for every receipt); parameters of the WHERE clause are named unlike any column of the outbox,
# the SET clause's after the columns they set
_ACKNOWLEDGE = Direct(  # run on the driver (ADR 38)
    update(outbox)
    .where(
        outbox.c.event_id.in_(bindparam("acknowledged", expanding=True)),
        outbox.c.destination == bindparam("receipt_from"),
        outbox.c.expects_receipt.is_(True),
        outbox.c.acked_at.is_(None),
    )
    .values(resend_at=None)
    .returning(outbox.c.event_id)
)


async def apply_receipts(session: AsyncSession, envelopes: Sequence[Envelope], service: str) -> list[bool]:
    """:func:`apply_receipt` for receipts in the order they came, with one statement per sender and outcome however
    the receipts are interleaved with each other (and, in an inbox run, with the messages around them: see
    :meth:`labornet.shared.inbox.EventConsumer._apply_run`). The first receipt a sender gives for a message wins, as
    it would alone; a later one for the same message matches nothing. Whether each one matched a message, in order.
    """
    return await apply_answers(session, (), service, receipts=envelopes)


def acknowledged_in(envelope: Envelope) -> list[str]:
    """The ids of messages that the directed message ``envelope`` acknowledges as applied (``ce_acknowledges``,
    ADR 39); none for any other event."""
    listed = envelope.extra.get(ACKNOWLEDGES)
    if not listed or envelope.destprovince is None or envelope.type == RECEIPT:
        return []
    return listed.split()


async def apply_answers(
    session: AsyncSession, envelopes: Sequence[Envelope], service: str, receipts: Sequence[Envelope] = ()
) -> list[bool]:
    """Acknowledge the messages that directed messages ``envelopes`` list in ``ce_acknowledges``, as receipts with
    outcome ``applied`` from their origin would, together with ``receipts`` (an inbox run's, in one statement per
    sender and outcome for both); whether each receipt, then each listed id, matched a message, in order."""
    entries: list[tuple[str, str, ReceiptOutcome, str | None]] = [
        (envelope.originprovince, receipt.event_id, receipt.outcome, receipt.event_type)
        for envelope in receipts
        for receipt in [Receipt.model_validate_json(envelope.data)]
    ]
    entries += [
        (envelope.originprovince, event_id, ReceiptOutcome.APPLIED, None)
        for envelope in envelopes
        for event_id in acknowledged_in(envelope)
    ]
    return await _acknowledge(session, entries, service) if entries else []


async def _acknowledge(
    session: AsyncSession, entries: Sequence[tuple[str, str, ReceiptOutcome, str | None]], service: str
) -> list[bool]:
    """Acknowledge ``(sender, message id, outcome, message type)`` entries with one statement per sender and outcome.

    Grouping across the order is the same as applying one by one because, once a sender's repeats are set aside,
    no two statements can touch the same outbox row: a row is acknowledged only by its destination, so the entries
    of two senders for one message never both match, and one sender's entries for a message are one entry."""
    first: set[tuple[str, str]] = set()
    order: list[tuple[str, str, ReceiptOutcome, str | None] | None] = []  # None: a repeat within the call
    groups: dict[tuple[str, ReceiptOutcome], list[str]] = {}
    for origin, event_id, outcome, event_type in entries:
        if (origin, event_id) in first:
            order.append(None)
            continue
        first.add((origin, event_id))
        order.append((origin, event_id, outcome, event_type))
        groups.setdefault((origin, outcome), []).append(event_id)
    acknowledged: set[tuple[str, str]] = set()
    for (origin, outcome), group in groups.items():
        result = await _ACKNOWLEDGE.execute(
            session,
            {
                "acknowledged": group,
                "receipt_from": origin,
                "acked_at": utcnow(),
                "receipt_outcome": outcome.value,
            },
        )
        acknowledged.update((origin, event_id) for event_id in result.scalars())
    matched: list[bool] = []
    for entry in order:
        if entry is None:
            matched.append(False)
            RECEIPTS.labels(service, "received", "unmatched").inc()
            continue
        origin, event_id, outcome, event_type = entry
        hit = (origin, event_id) in acknowledged
        matched.append(hit)
        RECEIPTS.labels(service, "received", outcome.value if hit else "unmatched").inc()
        if hit and outcome is ReceiptOutcome.REJECTED:
            log.warning(
                "%s refused directed message %s (%s): it broke the receiver's rules and is in its quarantine",
                origin,
                event_id,
                event_type,
            )
    return matched

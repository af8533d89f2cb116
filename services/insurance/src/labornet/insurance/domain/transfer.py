"""The transfer saga between a receiving and a sending office, as data: messages, states, reasons.

Every message names both sides' case numbers (the receiving case is known from the first message; the sending
case from the sending office's first answer), like EESSI's U001/U002 flow.

Receiving side:  awaiting-answer ─sheet→ completed (receipt sent)
                                 ─refused→ refused
                 awaiting-answer ─worker cancels→ cancel-requested ─confirmed→ cancelled
                                                                 ─sheet (crossed)→ completed
Sending side:    received ─officer (or auto) sends the sheet→ sheet-sent ─receipt→ completed
                          ─refusal→ refused      received ─cancellation→ cancelled
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum

CONTACT_LETTER = "org.labornet.insurance.transfer.contact-letter.v1"
INFORMATION_SHEET = "org.labornet.insurance.transfer.information-sheet.v1"
REFUSAL = "org.labornet.insurance.transfer.refused.v1"
RECEIPT = "org.labornet.insurance.transfer.receipt.v1"
CANCELLATION = "org.labornet.insurance.transfer.cancellation.v1"
CANCELLATION_CONFIRMED = "org.labornet.insurance.transfer.cancellation-confirmed.v1"
MESSAGE_TYPES = (CONTACT_LETTER, INFORMATION_SHEET, REFUSAL, RECEIPT, CANCELLATION, CANCELLATION_CONFIRMED)


class Side(StrEnum):
    RECEIVING = "receiving"
    SENDING = "sending"


class State(StrEnum):
    AWAITING_ANSWER = "awaiting-answer"
    CANCEL_REQUESTED = "cancel-requested"
    RECEIVED = "received"
    SHEET_SENT = "sheet-sent"
    COMPLETED = "completed"
    REFUSED = "refused"
    CANCELLED = "cancelled"


TERMINAL = (State.COMPLETED, State.REFUSED, State.CANCELLED)


def is_overdue(*, side: str, state: str, answer_due: date, complete_due: date, today: date) -> bool:
    """A case past its time limit: open past the total limit (20 working days by default), or, on the sending
    side, a contact letter still unanswered past the answer limit (5 working days)."""
    if state in TERMINAL:
        return False
    if complete_due < today:
        return True
    return side == Side.SENDING and state == State.RECEIVED and answer_due < today


class Reason(StrEnum):
    """Why the relationship moves (the five situations of the national transfer rules; configurable wording)."""

    NEW_EMPLOYMENT = "new-employment"  # an insured worker took a job in another province
    CLAIMANT_RELOCATION = "claimant-relocation"  # a claimant moves while drawing benefit
    RETURN_TO_HUKOU = "return-to-hukou"  # an unemployed person returns to the household-registration province
    UNEMPLOYED_NOT_CLAIMING = "unemployed-not-claiming"  # unemployed, not yet claiming, moving residence
    MIGRANT_WORKER = "migrant-worker"  # former migrant-worker contributions consolidated at the new place


class TransferRefused(Exception):
    """The receiving office refuses to send a contact letter; the message says why."""

"""The rights service's bus contract: every event type it publishes, where it travels and the model of its data.

Case messages are directed: the province holding a case sends the whole case to the other party (home or
handling province) on that province's rights inbox, so only the two provinces of a case ever receive the
complainant. The statistics are broadcast to every member on the origin's rights events stream and are anonymous.
"""

from __future__ import annotations

from labornet.rights.domain.case import (
    ACCEPTED,
    CLOSED,
    DECLINED,
    ESCALATED,
    EXTENDED,
    REFERRED,
    RESOLVED,
    UPDATED,
    WITHDRAWAL_REQUESTED,
    Case,
)
from labornet.rights.domain.statistics import STATISTICS_PUBLISHED, StatisticsSnapshot
from labornet.rights.service_layer.cases import WithdrawalRequest
from labornet.shared.contracts import EventContract

_WHOLE_CASE = (
    "The data is the whole case, timeline included, as the sender holds it after the step: the receiver applies "
    "it only if its version is newer than the one it holds and the sender held the case in that version. "
    "Keyed by the case id. Carries personal data (the complainant's identity number, name and phone, the facts): "
    "it is sent only to the home or the handling province of the case."
)


def _case_message(event_type: str, summary: str) -> EventContract:
    return EventContract(type=event_type, model=Case, channel="inbox", summary=summary, description=_WHOLE_CASE)


EVENTS: list[EventContract] = [
    _case_message(
        REFERRED,
        "The home province refers a case to the province of its work place (or again, after a "
        "decline, to another province)",
    ),
    _case_message(ACCEPTED, "The handling province accepts the case; the investigation's time limit starts"),
    _case_message(DECLINED, "The handling province declines the case; it returns to the home province"),
    _case_message(UPDATED, "The handling province records an investigation step"),
    _case_message(EXTENDED, "The handling province extends the investigation once"),
    _case_message(ESCALATED, "The handling province escalates an overdue case to the supervising labour department"),
    _case_message(RESOLVED, "The workers were paid: the case is resolved with the amount recovered"),
    _case_message(CLOSED, "The case is closed: referred to the police, unfounded, or withdrawn by the complainant"),
    EventContract(
        type=WITHDRAWAL_REQUESTED,
        model=WithdrawalRequest,
        channel="inbox",
        summary="The complainant withdraws a case the other province holds: the home province asks it to close it",
        description="Sent by the home province to the province holding the case, keyed by the case id. The holder "
        "closes the case (as withdrawn) if it is still open and still held there; otherwise the version it already "
        "sent home answers the request.",
    ),
    EventContract(
        type=STATISTICS_PUBLISHED,
        model=StatisticsSnapshot,
        channel="events",
        summary="A province's anonymous statistics of the cases filed there",
        description="Counts and sums by handling province, category, sector and status; no case number, name, "
        "identity number, phone or employer. Keyed by the origin province. Published with every change to a case "
        "filed there, at start-up and periodically; a snapshot replaces the previous one of the same origin when "
        "its generation is higher.",
    ),
]

"""Today's work: everything waiting for this province's officers, one list, the nearest deadline first.

Built from what the services' list endpoints answer (plain JSON), with the working days left counted on this
province's calendar from today in China. An item whose last allowed day has passed is overdue; items without a
deadline (a case returned to the home province, a quarantined event) come after those with one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any

from labornet.shared.workdays import WorkCalendar


class Kind(StrEnum):
    CONTACT_LETTER = "contact-letter"  # sending side: answer with the information sheet or refuse
    TRANSFER_AWAITING_SHEET = "transfer-awaiting-sheet"  # receiving side: the partner has not answered yet
    TRANSFER_AWAITING_RECEIPT = "transfer-awaiting-receipt"  # sending side: sheet sent, no receipt yet
    SETTLEMENT_PAYABLE = "settlement-payable"
    SETTLEMENT_OWED = "settlement-owed"
    CASE_AWAITING_ACCEPTANCE = "case-awaiting-acceptance"
    CASE_NEAR_LIMIT = "case-near-limit"
    CASE_RETURNED = "case-returned"
    DEMAND_AWAITING_ANSWER = "demand-awaiting-answer"
    APPLICATION_RECEIVED = "application-received"  # owner side: a new application awaiting a first decision
    DISPATCH_AWAITING_ARRIVAL = "dispatch-awaiting-arrival"  # destination: confirm the group's arrival
    DISPATCH_CONFIRMATION_OVERDUE = "dispatch-confirmation-overdue"  # origin: the destination has not confirmed
    QUARANTINED_EVENTS = "quarantined-events"
    PARTNER_OUT_OF_SYNC = "partner-out-of-sync"


Detail = tuple[str, str]
"""One fact of an item's summary, as (what it is, value): ``province``, ``reason``, ``category``, ``money`` (CNY) or
``text``; the page shows each in its language (a province by its name, a reason by its words)."""


@dataclass(frozen=True)
class WorkItem:
    kind: Kind
    reference: str  # the case, settlement or demand id; a service name for the operations items
    href: str
    details: tuple[Detail, ...]
    due: date | None
    workdays_left: int | None
    overdue: bool

    @property
    def sort_key(self) -> tuple[int, date, str]:
        return (0, self.due, self.reference) if self.due is not None else (1, date.max, self.reference)


def workdays_left(calendar: WorkCalendar, today: date, due: date) -> int:
    """Working days from today up to the due day (0 on the day itself); negative once it has passed."""
    if due >= today:
        return calendar.workdays_between(today, due)
    return -max(1, calendar.workdays_between(due, today))


def item(
    kind: Kind,
    reference: str,
    href: str,
    details: tuple[Detail, ...],
    due: date | None,
    calendar: WorkCalendar,
    today: date,
) -> WorkItem:
    if due is None:
        return WorkItem(kind, reference, href, details, None, None, False)
    return WorkItem(kind, reference, href, details, due, workdays_left(calendar, today, due), today > due)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _day(value: Any) -> date | None:
    return date.fromisoformat(str(value)[:10]) if value else None


def transfer_items(transfers: Iterable[Mapping[str, Any]], calendar: WorkCalendar, today: date) -> list[WorkItem]:
    found = []
    for case in transfers:
        side, state, ref = case.get("side"), case.get("state"), str(case["id"])
        href = f"/transfers/{ref}"
        if side == "sending" and state == "received":
            kind, due = Kind.CONTACT_LETTER, _day(case.get("answer_due"))
        elif side == "receiving" and state == "awaiting-answer":
            kind, due = Kind.TRANSFER_AWAITING_SHEET, _day(case.get("complete_due"))
        elif side == "sending" and state == "sheet-sent":
            kind, due = Kind.TRANSFER_AWAITING_RECEIPT, _day(case.get("complete_due"))
        else:
            continue
        details = (
            ("province", _text(case.get("from_province"))),
            ("province", _text(case.get("to_province"))),
            ("reason", _text(case.get("reason"))),
        )
        found.append(item(kind, ref, href, details, due, calendar, today))
    return found


def last_day_of_month(first: date) -> date:
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return date.fromordinal(following.toordinal() - 1)


def settlement_items(settlements: Iterable[Mapping[str, Any]], calendar: WorkCalendar, today: date) -> list[WorkItem]:
    """Pending settlements: what this province pays (by the end of the plan's month) and what it is owed."""
    found = []
    for settlement in settlements:
        if settlement.get("status") != "pending":
            continue
        month = _day(settlement.get("due_month"))
        due = last_day_of_month(month) if month else None
        kind = Kind.SETTLEMENT_PAYABLE if settlement.get("direction") == "outgoing" else Kind.SETTLEMENT_OWED
        details = (
            ("money", _text(settlement.get("amount"))),
            ("province", _text(settlement.get("from_province"))),
            ("province", _text(settlement.get("to_province"))),
        )
        href = f"/transfers/{settlement.get('transfer_id')}"
        found.append(item(kind, str(settlement["id"]), href, details, due, calendar, today))
    return found


def case_items(
    cases: Iterable[Mapping[str, Any]], province: str, calendar: WorkCalendar, today: date, near_days: int
) -> list[WorkItem]:
    found = []
    for case in cases:
        ref, status = str(case["id"]), case.get("status")
        href = f"/cases/{ref}"
        summary = (
            ("category", _text(case.get("category"))),
            ("text", _text(case.get("work_place_name"))),
            ("money", _text(case.get("amount_owed"))),
        )
        if status == "referred" and case.get("handling_province") == province:
            found.append(
                item(
                    Kind.CASE_AWAITING_ACCEPTANCE, ref, href, summary, _day(case.get("acceptance_due")), calendar, today
                )
            )
        elif status == "investigating" and case.get("handling_province") == province:
            due = _day(case.get("investigation_due"))
            if due is not None and workdays_left(calendar, today, due) <= near_days:
                found.append(item(Kind.CASE_NEAR_LIMIT, ref, href, summary, due, calendar, today))
        elif status == "returned" and case.get("home_province") == province:
            found.append(item(Kind.CASE_RETURNED, ref, href, summary, None, calendar, today))
    return found


def demand_items(demands: Iterable[Mapping[str, Any]], calendar: WorkCalendar, today: date) -> list[WorkItem]:
    """Open demands received for this province's brands; the workers are wanted from the period's first day."""
    return [
        item(
            Kind.DEMAND_AWAITING_ANSWER,
            str(demand["id"]),
            "/demands",
            (
                ("text", _text(demand.get("brand_name_zh"))),
                ("province", _text(demand.get("demanding_province"))),
                ("text", _text(demand.get("workers"))),
                ("text", _text(demand.get("city"))),
            ),
            _day(demand.get("period_start")),
            calendar,
            today,
        )
        for demand in demands
        if demand.get("side") == "received" and demand.get("status") == "open"
    ]


def application_items(applications: Iterable[Mapping[str, Any]]) -> list[WorkItem]:
    """Applications received for this province's vacancies that no officer has decided on yet (no deadline: the
    service sets none; they come after the items with one, oldest reference first)."""
    return [
        WorkItem(
            Kind.APPLICATION_RECEIVED,
            str(application["id"]),
            f"/applications/{application['id']}",
            (
                ("text", _text((application.get("vacancy") or {}).get("title"))),
                ("province", _text(application.get("home_province"))),
                ("text", _text(application.get("submitted_at"))[:10]),
            ),
            None,
            None,
            False,
        )
        for application in applications
        if application.get("state") == "received" and application.get("side") in ("owner", "both")
    ]


def dispatch_items(dispatches: Iterable[Mapping[str, Any]], calendar: WorkCalendar, today: date) -> list[WorkItem]:
    """Dispatches on their way: those this province receives await its arrival confirmation by
    ``confirmation_due``; those it sent appear once the destination's confirmation is overdue."""
    found = []
    for dispatch in dispatches:
        if dispatch.get("state") != "announced":
            continue
        ref = str(dispatch["id"])
        details = (
            ("province", _text(dispatch.get("origin_province"))),
            ("province", _text(dispatch.get("destination_province"))),
            ("text", _text(dispatch.get("headcount"))),
        )
        due = _day(dispatch.get("confirmation_due"))
        if dispatch.get("role") == "received":
            kind = Kind.DISPATCH_AWAITING_ARRIVAL
        elif dispatch.get("role") == "sent" and dispatch.get("overdue"):
            kind = Kind.DISPATCH_CONFIRMATION_OVERDUE
        else:
            continue
        found.append(item(kind, ref, f"/dispatches/{ref}", details, due, calendar, today))
    return found


OUT_OF_SYNC = frozenset({"unreachable", "refused", "failed"})  # anti-entropy's last round did not end in sync


def operations_items(
    quarantined: Mapping[str, int], replicas: Mapping[str, Sequence[Mapping[str, Any]]]
) -> list[WorkItem]:
    """Admins: services holding quarantined events, and partner replicas that anti-entropy found differing."""
    found = [
        WorkItem(Kind.QUARANTINED_EVENTS, service, "/federation", (("text", str(count)),), None, None, False)
        for service, count in sorted(quarantined.items())
        if count
    ]
    for service, states in sorted(replicas.items()):
        for state in states:
            if state.get("status") in OUT_OF_SYNC:
                origin = str(state.get("origin", ""))
                summary = (("text", service), ("province", origin), ("text", _text(state.get("kind"))))
                found.append(
                    WorkItem(Kind.PARTNER_OUT_OF_SYNC, f"{service}:{origin}", "/federation", summary, None, None, False)
                )
    return found


def todays_work(items: Iterable[WorkItem]) -> list[WorkItem]:
    return sorted(items, key=lambda found: found.sort_key)

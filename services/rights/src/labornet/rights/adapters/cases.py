"""Cases in the database: a :class:`Case` is one ``rights_case`` row plus its ``case_entry`` timeline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, insert, or_, select, update
from sqlalchemy import case as sql_case
from sqlalchemy.ext.asyncio import AsyncSession

from labornet.rights.adapters.tables import case_entry, rights_case
from labornet.rights.domain.case import CENT, Case, Entry, Overdue, Status
from labornet.shared.db import as_utc


def to_fen(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value())


def from_fen(fen: int) -> Decimal:
    return (Decimal(fen) / 100).quantize(CENT)


@dataclass(frozen=True)
class StoredCase:
    """A case as this node holds it, with the node's own bookkeeping."""

    case: Case
    redacted: bool
    withdrawal_requested_at: datetime | None
    updated_at: datetime


def case_columns(case: Case) -> dict[str, Any]:
    """The ``rights_case`` columns of ``case`` (without this node's bookkeeping)."""
    return {
        "id": case.id,
        "version": case.version,
        "home_province": case.home_province,
        "handling_province": case.handling_province,
        "holder": case.holder,
        "status": case.status.value,
        "closure_reason": case.closure_reason.value if case.closure_reason else None,
        "category": case.category.value,
        "sector": case.sector.value,
        "complainant_resident_id": case.complainant.resident_id,
        "complainant_name": case.complainant.name,
        "complainant_phone": case.complainant.phone,
        "employer_name": case.employer.name,
        "employer_credit_code": case.employer.credit_code,
        "employer_address": case.employer.address,
        "employer_province": case.employer.province,
        "work_division": case.work_place.division_code,
        "work_site": case.work_place.site,
        "work_place_name": case.work_place_name,
        "period_start": case.period.start,
        "period_end": case.period.end,
        "amount_owed_fen": to_fen(case.amount_owed),
        "workers_affected": case.workers_affected,
        "evidence": [item.model_dump(mode="json") for item in case.evidence],
        "facts": case.facts,
        "filed_at": case.filed_at,
        "referred_at": case.referred_at,
        "acceptance_due": case.acceptance_due,
        "accepted_at": case.accepted_at,
        "investigation_due": case.investigation_due,
        "extended": case.extended,
        "concluded_at": case.concluded_at,
        "amount_recovered_fen": to_fen(case.amount_recovered) if case.amount_recovered is not None else None,
        "workers_paid": case.workers_paid,
        "declined_by": list(case.declined_by),
    }


def _optional_time(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None


def case_of(row: Mapping[Any, Any], entries: Sequence[Mapping[Any, Any]]) -> Case:
    recovered = row["amount_recovered_fen"]
    return Case.model_validate(
        {
            "id": row["id"],
            "version": row["version"],
            "home_province": row["home_province"],
            "handling_province": row["handling_province"],
            "holder": row["holder"],
            "status": row["status"],
            "closure_reason": row["closure_reason"],
            "category": row["category"],
            "sector": row["sector"],
            "complainant": {
                "resident_id": row["complainant_resident_id"],
                "name": row["complainant_name"],
                "phone": row["complainant_phone"],
            },
            "employer": {
                "name": row["employer_name"],
                "credit_code": row["employer_credit_code"],
                "address": row["employer_address"],
                "province": row["employer_province"],
            },
            "work_place": {"division_code": row["work_division"], "site": row["work_site"]},
            "work_place_name": row["work_place_name"],
            "period": {"start": row["period_start"], "end": row["period_end"]},
            "amount_owed": from_fen(row["amount_owed_fen"]),
            "workers_affected": row["workers_affected"],
            "evidence": row["evidence"],
            "facts": row["facts"],
            "filed_at": as_utc(row["filed_at"]),
            "referred_at": _optional_time(row["referred_at"]),
            "acceptance_due": row["acceptance_due"],
            "accepted_at": _optional_time(row["accepted_at"]),
            "investigation_due": row["investigation_due"],
            "extended": row["extended"],
            "concluded_at": _optional_time(row["concluded_at"]),
            "amount_recovered": from_fen(recovered) if recovered is not None else None,
            "workers_paid": row["workers_paid"],
            "declined_by": row["declined_by"],
            "timeline": [
                {
                    "seq": e["seq"],
                    "at": as_utc(e["at"]),
                    "province": e["province"],
                    "actor": e["actor"],
                    "kind": e["kind"],
                    "status": e["status"],
                    "note": e["note"],
                    "details": e["details"],
                }
                for e in entries
            ],
        }
    )


async def timeline_of(session: AsyncSession, case_id: str) -> list[Mapping[Any, Any]]:
    rows = await session.execute(select(case_entry).where(case_entry.c.case_id == case_id).order_by(case_entry.c.seq))
    return list(rows.mappings().all())


async def timelines_of(session: AsyncSession, case_ids: Sequence[str]) -> dict[str, list[Mapping[Any, Any]]]:
    """The timelines of several cases in one query."""
    found: dict[str, list[Mapping[Any, Any]]] = {case_id: [] for case_id in case_ids}
    rows = await session.execute(
        select(case_entry).where(case_entry.c.case_id.in_(case_ids)).order_by(case_entry.c.case_id, case_entry.c.seq)
    )
    for row in rows.mappings():
        found[row["case_id"]].append(row)
    return found


async def load(session: AsyncSession, case_id: str, *, for_update: bool = False) -> StoredCase | None:
    query = select(rights_case).where(rights_case.c.id == case_id)
    if for_update:
        query = query.with_for_update()
    row = (await session.execute(query)).mappings().one_or_none()
    if row is None:
        return None
    return stored(row, await timeline_of(session, case_id))


def stored(row: Mapping[Any, Any], entries: Sequence[Mapping[Any, Any]]) -> StoredCase:
    requested = row["withdrawal_requested_at"]
    return StoredCase(
        case=case_of(row, entries),
        redacted=bool(row["redacted"]),
        withdrawal_requested_at=as_utc(requested) if requested is not None else None,
        updated_at=as_utc(row["updated_at"]),
    )


async def _append(session: AsyncSession, case_id: str, entries: Sequence[Entry]) -> None:
    for entry in entries:
        await session.execute(
            insert(case_entry).values(
                case_id=case_id,
                seq=entry.seq,
                at=entry.at,
                province=entry.province,
                actor=entry.actor,
                kind=entry.kind.value,
                status=entry.status.value,
                note=entry.note,
                details=entry.details,
            )
        )


async def add(session: AsyncSession, case: Case, *, redacted: bool, at: datetime) -> None:
    await session.execute(
        insert(rights_case).values(**case_columns(case), redacted=redacted, withdrawal_requested_at=None, updated_at=at)
    )
    await _append(session, case.id, case.timeline)


async def replace(
    session: AsyncSession, before: Case, after: Case, *, redacted: bool, at: datetime, **bookkeeping: Any
) -> bool:
    """Store ``after`` over ``before`` (same id); False if someone else changed the row in between.

    Timeline entries are never rewritten: a newer version of a case only ever appends to its timeline.
    """
    held = len(before.timeline)
    if after.timeline[:held] != before.timeline:
        # a newer version extends the timeline held, never rewrites it
        raise ValueError(f"case {after.id} version {after.version} rewrites the timeline of version {before.version}")
    result = await session.execute(
        update(rights_case)
        .where(rights_case.c.id == before.id, rights_case.c.version == before.version)
        .values(**case_columns(after), redacted=redacted, updated_at=at, **bookkeeping)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    await _append(session, after.id, after.timeline[held:])
    return True


async def set_withdrawal_requested(session: AsyncSession, case_id: str, at: datetime | None) -> None:
    await session.execute(update(rights_case).where(rights_case.c.id == case_id).values(withdrawal_requested_at=at))


def overdue_condition(today: date, deadline: Overdue | None = None) -> ColumnElement[bool]:
    """Open cases whose last allowed day lies before ``today``: not accepted in time, or not concluded in time."""
    late_acceptance = and_(rights_case.c.status == Status.REFERRED.value, rights_case.c.acceptance_due < today)
    late_investigation = and_(
        rights_case.c.status == Status.INVESTIGATING.value, rights_case.c.investigation_due < today
    )
    if deadline == Overdue.ACCEPTANCE:
        return late_acceptance
    if deadline == Overdue.INVESTIGATION:
        return late_investigation
    return or_(late_acceptance, late_investigation)


def side_of(province: str) -> ColumnElement[str]:
    """This node's part in a case: ``home`` (filed here), ``handling`` (referred here), ``former`` (declined)."""
    return sql_case(
        (rights_case.c.home_province == province, "home"),
        (rights_case.c.handling_province == province, "handling"),
        else_="former",
    )

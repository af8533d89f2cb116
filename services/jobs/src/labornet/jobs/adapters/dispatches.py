"""Dispatches in the database: a :class:`Dispatch` is one ``dispatch`` row."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, insert, select, update
from sqlalchemy import case as sql_case
from sqlalchemy.ext.asyncio import AsyncSession

from labornet.jobs.adapters.tables import dispatch as dispatch_table
from labornet.jobs.adapters.tables import metadata
from labornet.jobs.domain.dispatch import Dispatch, DispatchRole, State
from labornet.shared.db import as_utc, as_utc_or_none, utc_values

FAIR_TABLE = "recruitment_fair"


def columns(dispatch: Dispatch) -> dict[str, Any]:
    """The ``dispatch`` columns of ``dispatch`` (without this node's bookkeeping)."""
    arrival = dispatch.arrival
    return utc_values(
        {
            "id": dispatch.id,
            "version": dispatch.version,
            "origin_province": dispatch.origin_province,
            "destination_province": dispatch.destination_province,
            "state": dispatch.state.value,
            "brand_demand_id": dispatch.brand_demand_id,
            "fair_id": dispatch.fair_id,
            "employers": [employer.model_dump(mode="json") for employer in dispatch.employers],
            "headcount": dispatch.headcount,
            "transport": dispatch.transport.value,
            "departure_at": dispatch.departure_at,
            "departure_place": dispatch.departure_place,
            "expected_arrival_on": dispatch.expected_arrival_on,
            "confirmation_due": dispatch.confirmation_due,
            "escort_name": dispatch.escort.name,
            "escort_phone": dispatch.escort.phone,
            "note": dispatch.note,
            "announced_at": dispatch.announced_at,
            "changed_at": dispatch.changed_at,
            "cancelled_at": dispatch.cancelled_at,
            "cancellation_reason": dispatch.cancellation_reason,
            "arrived_at": arrival.arrived_at if arrival else None,
            "headcount_received": arrival.headcount_received if arrival else None,
            "arrival_note": arrival.note if arrival else None,
            "arrival_confirmed_at": arrival.confirmed_at if arrival else None,
            "arrival_plan_version": arrival.plan_version if arrival else None,
        }
    )


def dispatch_of(row: Mapping[Any, Any]) -> Dispatch:
    arrival = None
    if row["arrival_confirmed_at"] is not None:
        arrival = {
            "arrived_at": as_utc(row["arrived_at"]),
            "headcount_received": row["headcount_received"],
            "note": row["arrival_note"],
            "confirmed_at": as_utc(row["arrival_confirmed_at"]),
            "plan_version": row["arrival_plan_version"],
        }
    return Dispatch.model_validate(
        {
            "id": row["id"],
            "version": row["version"],
            "origin_province": row["origin_province"],
            "destination_province": row["destination_province"],
            "brand_demand_id": row["brand_demand_id"],
            "fair_id": row["fair_id"],
            "employers": row["employers"],
            "headcount": row["headcount"],
            "transport": row["transport"],
            "departure_at": as_utc(row["departure_at"]),
            "departure_place": row["departure_place"],
            "expected_arrival_on": row["expected_arrival_on"],
            "confirmation_due": row["confirmation_due"],
            "escort": {"name": row["escort_name"], "phone": row["escort_phone"]},
            "note": row["note"],
            "announced_at": as_utc(row["announced_at"]),
            "changed_at": as_utc(row["changed_at"]),
            "cancelled_at": as_utc_or_none(row["cancelled_at"]),
            "cancellation_reason": row["cancellation_reason"],
            "arrival": arrival,
        }
    )


@dataclass(frozen=True)
class StoredDispatch:
    dispatch: Dispatch
    updated_at: datetime


def stored(row: Mapping[Any, Any]) -> StoredDispatch:
    return StoredDispatch(dispatch_of(row), as_utc(row["updated_at"]))


async def load(session: AsyncSession, dispatch_id: str, *, for_update: bool = False) -> StoredDispatch | None:
    query = select(dispatch_table).where(dispatch_table.c.id == dispatch_id)
    if for_update:
        query = query.with_for_update()
    row = (await session.execute(query)).mappings().one_or_none()
    return stored(row) if row is not None else None


async def add(session: AsyncSession, dispatch: Dispatch, *, at: datetime) -> None:
    await session.execute(insert(dispatch_table).values(**columns(dispatch), updated_at=at))


async def replace(session: AsyncSession, before: Dispatch, after: Dispatch, *, at: datetime) -> bool:
    """Store ``after`` over ``before`` (same id); False if the row changed in between (another plan version, or
    an arrival recorded meanwhile)."""
    unchanged = [dispatch_table.c.id == before.id, dispatch_table.c.version == before.version]
    confirmed = dispatch_table.c.arrival_confirmed_at
    unchanged.append(confirmed.is_(None) if before.arrival is None else confirmed.is_not(None))
    result = await session.execute(update(dispatch_table).where(*unchanged).values(**columns(after), updated_at=at))
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def fair_parties(session: AsyncSession, fair_id: str) -> set[str] | None:
    """The organiser and co-organisers of the recruitment event ``fair_id`` as this node holds it (every node
    holds every event); None when this node does not know it."""
    fairs = metadata.tables.get(FAIR_TABLE)
    if fairs is None:
        return None
    row = (
        await session.execute(select(fairs.c.organiser_province, fairs.c.co_organisers).where(fairs.c.id == fair_id))
    ).one_or_none()
    if row is None:
        return None
    return {row.organiser_province, *(row.co_organisers or [])}


# Queries ------------------------------------------------------------------------------------------------------------


def role_of(province: str) -> ColumnElement[str]:
    """This node's part in each dispatch: ``sent`` (it is the origin) or ``received`` (the destination)."""
    return sql_case(
        (dispatch_table.c.origin_province == province, DispatchRole.SENT.value), else_=DispatchRole.RECEIVED.value
    )


def overdue_condition(today: date) -> ColumnElement[bool]:
    """Still awaiting the arrival confirmation after the last allowed day."""
    return and_(dispatch_table.c.state == State.ANNOUNCED.value, dispatch_table.c.confirmation_due < today)


def with_difference() -> ColumnElement[bool]:
    """Arrived with a headcount received other than the headcount sent."""
    return and_(
        dispatch_table.c.headcount_received.is_not(None),
        dispatch_table.c.headcount_received != dispatch_table.c.headcount,
    )


async def page(
    session: AsyncSession,
    province: str,
    *,
    role: DispatchRole | None,
    state: State | None,
    overdue: bool | None,
    difference: bool | None,
    today: date,
    after: str | None,
    limit: int,
) -> tuple[list[StoredDispatch], bool]:
    """One page of the dispatches this node holds, in id order, and whether more follow."""
    query = select(dispatch_table).order_by(dispatch_table.c.id).limit(limit + 1)
    if role == DispatchRole.SENT:
        query = query.where(dispatch_table.c.origin_province == province)
    elif role == DispatchRole.RECEIVED:
        query = query.where(dispatch_table.c.destination_province == province)
    if state is not None:
        query = query.where(dispatch_table.c.state == state.value)
    if overdue is not None:
        late = overdue_condition(today)
        query = query.where(late if overdue else ~late)
    if difference is not None:
        differs = with_difference()
        query = query.where(differs if difference else ~differs)
    if after is not None:
        query = query.where(dispatch_table.c.id > after)
    rows = (await session.execute(query)).mappings().all()
    return [stored(row) for row in rows[:limit]], len(rows) > limit


async def awaiting_confirmation(session: AsyncSession, province: str, today: date) -> dict[tuple[str, bool], int]:
    """Dispatches awaiting their arrival confirmation, by this node's role and whether they are overdue."""
    role = role_of(province).label("role")
    late = sql_case((dispatch_table.c.confirmation_due < today, True), else_=False).label("late")
    rows = await session.execute(
        select(role, late, func.count()).where(dispatch_table.c.state == State.ANNOUNCED.value).group_by(role, late)
    )
    return {(str(name), bool(is_late)): int(count) for name, is_late, count in rows}

"""Settlements in the database: one ``settlement`` row per settlement on each side (outgoing where it is paid,
incoming where it is owed)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from labornet.insurance.adapters.tables import settlement
from labornet.insurance.domain.settlement import Direction, Settlement, SettlementStatus
from labornet.shared.db import as_utc, insert_of, update_of, update_parameters
from labornet.shared.direct import Direct


def settlement_of(row: Mapping[Any, Any], province: str) -> Settlement:
    return Settlement(
        id=row["id"],
        direction=Direction(row["direction"]),
        transfer_id=row["transfer_id"],
        peer_case=row["peer_case"],
        resident_id=row["resident_id"],
        from_province=row["from_province"] or province,
        to_province=row["to_province"],
        amount=Decimal(row["amount"]).quantize(Decimal("0.01")),
        due_month=row["due_month"],
        status=SettlementStatus(row["status"]),
        created_at=as_utc(row["created_at"]),
        paid_at=as_utc(row["paid_at"]) if row["paid_at"] is not None else None,
        paid_by=row["paid_by"],
        payment_reference=row["payment_reference"],
    )


def _columns(item: Settlement) -> dict[str, Any]:
    values = asdict(item)
    values["direction"] = item.direction.value
    values["status"] = item.status.value
    return values


# a transfer's steps add and read settlements: built once, run on the driver (ADR 38)
_ADD = Direct(insert_of(settlement))
_BY_ID = select(settlement).where(settlement.c.id == bindparam("settlement_id"))
_LOAD = {False: Direct(_BY_ID), True: Direct(_BY_ID.with_for_update())}


async def add(session: AsyncSession, item: Settlement) -> None:
    await _ADD.execute(session, _columns(item))


async def load(
    session: AsyncSession, settlement_id: str, province: str, *, for_update: bool = False
) -> Settlement | None:
    row = (await _LOAD[for_update].execute(session, {"settlement_id": settlement_id})).first()
    return settlement_of(row, province) if row is not None else None


async def replace(session: AsyncSession, before: Settlement, after: Settlement) -> bool:
    """Store ``after`` over ``before``; False if its status changed in between."""
    result = await session.execute(
        update_of(settlement, "id", "status"),
        update_parameters(_columns(after), id=before.id, status=before.status.value),
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def listed(
    session: AsyncSession, province: str, *, direction: Direction | None, status: SettlementStatus | None
) -> list[Settlement]:
    query = select(settlement).order_by(settlement.c.due_month, settlement.c.id)
    if direction is not None:
        query = query.where(settlement.c.direction == direction.value)
    if status is not None:
        query = query.where(settlement.c.status == status.value)
    return [settlement_of(row, province) for row in (await session.execute(query)).mappings()]


async def pending_amounts(session: AsyncSession) -> dict[Direction, Decimal]:
    """CNY not yet paid, by direction (what this province owes, and what it is owed)."""
    rows = await session.execute(
        select(settlement.c.direction, func.coalesce(func.sum(settlement.c.amount), 0))
        .where(settlement.c.status == SettlementStatus.PENDING.value)
        .group_by(settlement.c.direction)
    )
    found = {Direction(direction): Decimal(amount) for direction, amount in rows}
    return {direction: found.get(direction, Decimal(0)) for direction in Direction}

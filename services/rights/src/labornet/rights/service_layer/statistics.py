"""Federation-wide anonymous statistics: publish this province's snapshot, keep every partner's latest one.

A snapshot is published in the transaction of every change to a case filed here (through the outbox, on this
province's broadcast ``labornet.<province>.rights.events`` stream) and once at start-up. Its generation comes from
a counter row that is updated *before* the cases are counted: on PostgreSQL the row lock makes a concurrent
publisher wait, and the count it then makes sees the committed change of the other, so a higher generation never
counts less than a lower one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from prometheus_client import Counter
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from labornet.rights.adapters.cases import from_fen, to_fen
from labornet.rights.adapters.tables import rights_case, statistics_cell, statistics_origin
from labornet.rights.domain.statistics import STATISTICS_PUBLISHED, Cell, StatisticsSnapshot
from labornet.shared.db import as_utc
from labornet.shared.envelope import Envelope
from labornet.shared.inbox import Handler
from labornet.shared.outbox import Outbox
from labornet.shared.topics import events_topic

SNAPSHOTS = Counter(
    "labornet_rights_statistics_snapshots_total",
    "Statistics snapshots of partner provinces received, by result (applied, stale)",
    ["province", "origin", "result"],
)


async def _next_generation(session: AsyncSession, province: str, at: datetime) -> int:
    insert_ = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert_(statistics_origin)
        .values(origin=province, generation=1, as_of=at)
        .on_conflict_do_update(
            index_elements=[statistics_origin.c.origin],
            set_={"generation": statistics_origin.c.generation + 1, "as_of": at},
        )
        .returning(statistics_origin.c.generation)
    )
    return int((await session.execute(statement)).scalar_one())


async def count_cases(session: AsyncSession, province: str) -> list[Cell]:
    """The cases filed in ``province``, counted by handling province, category, sector and status."""
    dimensions = (rights_case.c.handling_province, rights_case.c.category, rights_case.c.sector, rights_case.c.status)
    rows = await session.execute(
        select(
            *dimensions,
            func.count(),
            func.sum(rights_case.c.workers_affected),
            func.sum(rights_case.c.amount_owed_fen),
            func.sum(func.coalesce(rights_case.c.amount_recovered_fen, 0)),
        )
        .where(rights_case.c.home_province == province)
        .group_by(*dimensions)
        .order_by(*dimensions)
    )
    return [
        Cell(
            handling_province=handling,
            category=category,
            sector=sector,
            status=status,
            cases=int(cases),
            workers_affected=int(workers),
            amount_owed=from_fen(int(owed)),
            amount_recovered=from_fen(int(recovered)),
        )
        for handling, category, sector, status, cases, workers, owed, recovered in rows
    ]


async def _store(session: AsyncSession, snapshot: StatisticsSnapshot) -> None:
    await session.execute(delete(statistics_cell).where(statistics_cell.c.origin == snapshot.origin))
    if snapshot.cells:
        await session.execute(
            insert(statistics_cell),
            [
                {
                    "origin": snapshot.origin,
                    "handling_province": cell.handling_province,
                    "category": cell.category.value,
                    "sector": cell.sector.value,
                    "status": cell.status.value,
                    "cases": cell.cases,
                    "workers_affected": cell.workers_affected,
                    "amount_owed_fen": to_fen(cell.amount_owed),
                    "amount_recovered_fen": to_fen(cell.amount_recovered),
                }
                for cell in snapshot.cells
            ],
        )


async def publish_statistics(session: AsyncSession, outbox: Outbox, province: str, at: datetime) -> StatisticsSnapshot:
    """Count this province's cases, keep the result and broadcast it, all in the caller's transaction."""
    generation = await _next_generation(session, province, at)
    snapshot = StatisticsSnapshot(
        origin=province, generation=generation, as_of=at, cells=await count_cases(session, province)
    )
    await _store(session, snapshot)
    await outbox.add(
        session,
        topic=events_topic(province, "rights"),
        event_type=STATISTICS_PUBLISHED,
        key=province,
        subject=province,
        data=snapshot,
    )
    return snapshot


def statistics_handler(province: str) -> Handler:
    async def apply_statistics(session: AsyncSession, envelope: Envelope) -> None:
        """Keep a partner's snapshot if it is newer than the one held; an older or equal one changes nothing."""
        snapshot = StatisticsSnapshot.model_validate(envelope.json())
        if snapshot.origin != envelope.originprovince:
            raise ValueError(f"statistics of {snapshot.origin} sent by {envelope.originprovince}")
        held = (
            await session.execute(
                select(statistics_origin.c.generation)
                .where(statistics_origin.c.origin == snapshot.origin)
                .with_for_update()
            )
        ).scalar()
        if held is not None and held >= snapshot.generation:
            SNAPSHOTS.labels(province, snapshot.origin, "stale").inc()
            return
        if held is None:
            await session.execute(
                insert(statistics_origin).values(
                    origin=snapshot.origin, generation=snapshot.generation, as_of=snapshot.as_of
                )
            )
        else:
            await session.execute(
                update(statistics_origin)
                .where(statistics_origin.c.origin == snapshot.origin)
                .values(generation=snapshot.generation, as_of=snapshot.as_of)
            )
        await _store(session, snapshot)
        SNAPSHOTS.labels(province, snapshot.origin, "applied").inc()

    return apply_statistics


def _totals(cells: Iterable[dict[str, Any]]) -> dict[str, Any]:
    cases = workers = owed = recovered = 0
    for cell in cells:
        cases += cell["cases"]
        workers += cell["workers_affected"]
        owed += cell["amount_owed_fen"]
        recovered += cell["amount_recovered_fen"]
    return {
        "cases": cases,
        "workers_affected": workers,
        "amount_owed": from_fen(owed),
        "amount_recovered": from_fen(recovered),
    }


def _grouped(cells: list[dict[str, Any]], dimension: str) -> list[dict[str, Any]]:
    groups: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for cell in cells:
        groups[cell[dimension]].append(cell)
    return [{dimension: key, **_totals(groups[key])} for key in sorted(groups, key=lambda k: (k is None, k or ""))]


async def federation_statistics(session: AsyncSession) -> dict[str, Any]:
    """Every member's latest snapshot, summed: totals and breakdowns by home and handling province, category,
    sector and status."""
    origins = (await session.execute(select(statistics_origin).order_by(statistics_origin.c.origin))).mappings()
    cells = [dict(row) for row in (await session.execute(select(statistics_cell))).mappings()]
    for cell in cells:
        cell["home_province"] = cell["origin"]
    return {
        "origins": [
            {"province": row["origin"], "generation": row["generation"], "as_of": as_utc(row["as_of"])}
            for row in origins
        ],
        "totals": _totals(cells),
        "by_home_province": _grouped(cells, "home_province"),
        "by_handling_province": _grouped(cells, "handling_province"),
        "by_category": _grouped(cells, "category"),
        "by_sector": _grouped(cells, "sector"),
        "by_status": _grouped(cells, "status"),
    }

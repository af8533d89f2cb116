"""Placements: record a hire between two provinces, publish this province's placement statistics, keep every
partner's latest snapshots, and answer the statistics reads.

Recording and publishing. :func:`record_hire` runs in the caller's transaction (the hire at the vacancy's owner,
the applied ``hired`` message at the worker's home) and keeps the placement with ``announced`` false. The statistics
go out as one snapshot per month (a snapshot stays small however many years of hires there are):
:func:`publish_placements` marks the new placements announced and broadcasts the snapshot of each of their months
through the outbox, in the caller's transaction. A caller that has the outbox at hand may call it right after
:func:`record_hire`; the placements' background task calls it through :meth:`PlacementService.publish_due` every
few seconds. A hire committed without its snapshot is therefore published by the next check, even after a crash:
the flag is in the same transaction as the placement. A province that has placements between provinces broadcasts
the snapshots of all its months again at start-up and periodically as repair (:func:`rebroadcast`, ADR 0008); a
node without any says nothing, and partners show it as having no snapshot (all zero).

Hires within one province are recorded (so that a hire is recorded once) and counted in neither direction: the
statistics count workers placed outside their home province.

One generation counter per origin orders its snapshots; a receiver keeps, per origin and month, the snapshot of
the highest generation. The counter row is updated *before* the placements are counted: on PostgreSQL its row lock
makes a concurrent publisher wait, so a higher generation never counts less than a lower one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from prometheus_client import Counter
from sqlalchemy import delete, exists, insert, or_, select, update
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from labornet.jobs.adapters.tables import (
    placement,
    placement_statistics_cell,
    placement_statistics_month,
    placement_statistics_origin,
)
from labornet.jobs.domain.placements import (
    PLACEMENTS_PUBLISHED,
    Cell,
    CellFilter,
    Direction,
    Placement,
    PlacementSnapshot,
    Tally,
    count_placements,
    tally,
)
from labornet.shared.clock import Clock, utcnow
from labornet.shared.db import as_utc
from labornet.shared.envelope import Envelope
from labornet.shared.inbox import Handler, RuleViolation
from labornet.shared.outbox import Outbox
from labornet.shared.topics import events_topic

PLACEMENTS = Counter(
    "labornet_jobs_placements_recorded_total",
    "Hires between provinces counted in this province's placement statistics, by direction (outbound: its workers "
    "hired elsewhere; inbound: workers from elsewhere hired here)",
    ["direction"],
)
SNAPSHOTS = Counter(
    "labornet_jobs_placement_snapshots_total",
    "Placement statistics snapshots of partner provinces received, by origin and result (applied, stale, refused)",
    ["origin", "result"],
)
SNAPSHOT_RESULTS = ("applied", "stale", "refused")


def _insert(session: AsyncSession) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


async def record_hire(
    session: AsyncSession,
    *,
    application_id: str,
    origin_province: str,
    destination_province: str,
    hired_at: datetime,
    occupation_code: str,
    target_groups: Sequence[str],
) -> bool:
    """Keep the placement of a hire, in the caller's transaction; False when this application's hire is already
    recorded (the first record stands). Raises ``ValueError`` (a pydantic ``ValidationError``) naming what is wrong
    with a bad input: a province code that is not ``NN0000``, an application id not made at the origin province, an
    occupation code outside the federation's ISCO-08 list, an unknown target group or a naive ``hired_at``.

    The statistics that count it are published by :func:`publish_placements` (in this transaction, if the caller
    calls it) or by the background task's next check."""
    hire = Placement(
        application_id=application_id,
        origin_province=origin_province,
        destination_province=destination_province,
        hired_at=hired_at,
        occupation_code=occupation_code,
        target_groups=tuple(target_groups),  # validated into TargetGroup
    )
    statement = (
        _insert(session)(placement)
        .values(
            application_id=hire.application_id,
            origin_province=hire.origin_province,
            destination_province=hire.destination_province,
            hired_at=as_utc(hire.hired_at),
            month=hire.month,
            occupation_code=hire.occupation_code,
            target_groups=[group.value for group in hire.target_groups],
            # a hire within one province is in no statistics: nothing to announce
            announced=not hire.across_provinces,
        )
        .on_conflict_do_nothing(index_elements=[placement.c.application_id])
    )
    result = await session.execute(statement)
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _placement(row: Any) -> Placement:
    return Placement(
        application_id=row.application_id,
        origin_province=row.origin_province,
        destination_province=row.destination_province,
        hired_at=as_utc(row.hired_at),
        occupation_code=row.occupation_code,
        target_groups=tuple(row.target_groups),
    )


def _of(province: str) -> Any:
    return or_(placement.c.origin_province == province, placement.c.destination_province == province)


async def own_cells(session: AsyncSession, province: str, which: CellFilter | None = None) -> list[Cell]:
    """This province's statistics, counted from the placements it holds (only those ``which`` may count: the
    filter's province, months and occupation narrow the rows read; its target group is applied to the cells)."""
    statement = select(placement).where(_of(province), placement.c.origin_province != placement.c.destination_province)
    if which is not None:
        if which.counterpart_province is not None:
            statement = statement.where(
                or_(
                    placement.c.origin_province == which.counterpart_province,
                    placement.c.destination_province == which.counterpart_province,
                )
            )
        if which.month_from is not None:
            statement = statement.where(placement.c.month >= which.month_from)
        if which.month_to is not None:
            statement = statement.where(placement.c.month <= which.month_to)
        if which.occupation_code is not None:
            statement = statement.where(placement.c.occupation_code == which.occupation_code)
    return count_placements(province, (_placement(row) for row in await session.execute(statement)))


async def _next_generation(session: AsyncSession, province: str, at: datetime) -> int:
    statement = (
        _insert(session)(placement_statistics_origin)
        .values(origin=province, generation=1, as_of=at)
        .on_conflict_do_update(
            index_elements=[placement_statistics_origin.c.origin],
            set_={"generation": placement_statistics_origin.c.generation + 1, "as_of": at},
        )
        .returning(placement_statistics_origin.c.generation)
    )
    return int((await session.execute(statement)).scalar_one())


_ANNOUNCED = "labornet_placements_announced"


def _count_when_committed(session: AsyncSession, outbound: int, inbound: int) -> None:
    """Add to the placements counter once the transaction commits (nothing if it rolls back)."""
    sync_session = session.sync_session
    pending: dict[str, int] | None = sync_session.info.get(_ANNOUNCED)
    if pending is None:
        pending = sync_session.info[_ANNOUNCED] = {Direction.OUTBOUND.value: 0, Direction.INBOUND.value: 0}

        def on_commit(committed: Session) -> None:
            for direction, count in committed.info.pop(_ANNOUNCED, {}).items():
                PLACEMENTS.labels(direction).inc(count)

        def on_rollback(rolled_back: Session, _transaction: object) -> None:
            rolled_back.info.pop(_ANNOUNCED, None)

        sa_event.listen(sync_session, "after_commit", on_commit, once=True)
        sa_event.listen(sync_session, "after_soft_rollback", on_rollback, once=True)
    pending[Direction.OUTBOUND.value] += outbound
    pending[Direction.INBOUND.value] += inbound


async def _announce(session: AsyncSession, province: str) -> set[str]:
    """Mark this province's new placements announced and return their months; they count in the metric once the
    transaction commits."""
    rows = (
        await session.execute(
            update(placement)
            .where(placement.c.announced.is_(False), _of(province))
            .values(announced=True)
            .returning(placement.c.origin_province, placement.c.month)
        )
    ).all()
    outbound = sum(1 for row in rows if row.origin_province == province)
    if rows:
        _count_when_committed(session, outbound, len(rows) - outbound)
    return {row.month for row in rows}


async def _publish(
    session: AsyncSession, outbox: Outbox, province: str, at: datetime, months: Iterable[str]
) -> list[PlacementSnapshot]:
    """Broadcast this province's snapshot of each of ``months`` under one new generation."""
    wanted = sorted(set(months))
    if not wanted:
        return []
    generation = await _next_generation(session, province, at)
    cells = await own_cells(session, province, CellFilter(month_from=wanted[0], month_to=wanted[-1]))
    snapshots = [
        PlacementSnapshot(
            origin=province,
            month=month,
            generation=generation,
            as_of=at,
            cells=[cell for cell in cells if cell.month == month],
        )
        for month in wanted
    ]
    for snapshot in snapshots:
        await outbox.add(
            session,
            topic=events_topic(province, "jobs"),
            event_type=PLACEMENTS_PUBLISHED,
            key=province,
            subject=f"{province}/{snapshot.month}",
            data=snapshot,
        )
    return snapshots


async def publish_placements(
    session: AsyncSession, outbox: Outbox, province: str, at: datetime
) -> list[PlacementSnapshot]:
    """Broadcast the snapshot of every month in which this province recorded a placement its published statistics
    do not count yet, in the caller's transaction (after :func:`record_hire`, or from the background check); nothing
    when there is none."""
    return await _publish(session, outbox, province, at, await _announce(session, province))


async def rebroadcast(session: AsyncSession, outbox: Outbox, province: str, at: datetime) -> list[PlacementSnapshot]:
    """Broadcast the snapshot of every month with placements between provinces again (start-up, periodic repair):
    a node without any says nothing, and partners show it as having no snapshot (all zero)."""
    await _announce(session, province)
    months = await session.scalars(
        select(placement.c.month)
        .where(_of(province), placement.c.origin_province != placement.c.destination_province)
        .distinct()
    )
    return await _publish(session, outbox, province, at, months)


async def _store(session: AsyncSession, snapshot: PlacementSnapshot) -> None:
    await session.execute(
        delete(placement_statistics_cell).where(
            placement_statistics_cell.c.origin == snapshot.origin, placement_statistics_cell.c.month == snapshot.month
        )
    )
    if snapshot.cells:
        await session.execute(
            insert(placement_statistics_cell),
            [
                {
                    "origin": snapshot.origin,
                    "direction": cell.direction.value,
                    "counterpart_province": cell.counterpart_province,
                    "month": cell.month,
                    "occupation_code": cell.occupation_code,
                    "hires": cell.hires,
                    "target_groups": {group.value: count for group, count in cell.target_groups.items()},
                }
                for cell in snapshot.cells
            ],
        )


async def _keep_newest(session: AsyncSession, snapshot: PlacementSnapshot) -> None:
    """The origin's row says which is the newest snapshot received of any of its months."""
    held = (
        await session.execute(
            select(placement_statistics_origin.c.generation).where(
                placement_statistics_origin.c.origin == snapshot.origin
            )
        )
    ).scalar()
    values = {"generation": snapshot.generation, "as_of": snapshot.as_of}
    if held is None:
        await session.execute(insert(placement_statistics_origin).values(origin=snapshot.origin, **values))
    elif held < snapshot.generation:
        await session.execute(
            update(placement_statistics_origin)
            .where(placement_statistics_origin.c.origin == snapshot.origin)
            .values(**values)
        )


def snapshot_handler(province: str) -> Handler:
    async def apply_snapshot(session: AsyncSession, envelope: Envelope) -> None:
        """Keep a partner's snapshot of a month if it is newer than the one held of that month; an older or equal
        one changes nothing. A snapshot of another origin than its sender, or of this province, is refused."""
        try:
            snapshot = PlacementSnapshot.model_validate(envelope.json())
        except ValueError as error:
            SNAPSHOTS.labels(envelope.originprovince, "refused").inc()
            raise RuleViolation(f"placement statistics from {envelope.originprovince}: {error}") from error
        if snapshot.origin != envelope.originprovince or snapshot.origin == province:
            SNAPSHOTS.labels(envelope.originprovince, "refused").inc()
            raise RuleViolation(
                f"placement statistics of {snapshot.origin} sent by {envelope.originprovince}: a province publishes "
                "its own statistics only"
            )
        month = (placement_statistics_month.c.origin == snapshot.origin) & (
            placement_statistics_month.c.month == snapshot.month
        )
        held = (
            await session.execute(select(placement_statistics_month.c.generation).where(month).with_for_update())
        ).scalar()
        if held is not None and held >= snapshot.generation:
            SNAPSHOTS.labels(snapshot.origin, "stale").inc()
            return
        values = {"generation": snapshot.generation, "as_of": snapshot.as_of}
        if held is None:
            await session.execute(
                insert(placement_statistics_month).values(origin=snapshot.origin, month=snapshot.month, **values)
            )
        else:
            await session.execute(update(placement_statistics_month).where(month).values(**values))
        await _keep_newest(session, snapshot)
        await _store(session, snapshot)
        SNAPSHOTS.labels(snapshot.origin, "applied").inc()

    return apply_snapshot


async def latest(session: AsyncSession, origin: str) -> tuple[int, datetime] | None:
    """The generation and time of the latest snapshot of ``origin`` (published here or received)."""
    row = (
        await session.execute(
            select(placement_statistics_origin.c.generation, placement_statistics_origin.c.as_of).where(
                placement_statistics_origin.c.origin == origin
            )
        )
    ).first()
    return None if row is None else (int(row.generation), as_utc(row.as_of))


async def partner_cells(session: AsyncSession, origin: str) -> list[Cell]:
    rows = await session.execute(select(placement_statistics_cell).where(placement_statistics_cell.c.origin == origin))
    return [
        Cell(
            direction=Direction(row.direction),
            counterpart_province=row.counterpart_province,
            month=row.month,
            occupation_code=row.occupation_code,
            hires=row.hires,
            target_groups=row.target_groups,
        )
        for row in rows
    ]


@dataclass(frozen=True)
class ProvinceFigures:
    """One province's placement figures as this node knows them: its own counted from its placements, a partner's
    from the latest snapshot received (``source`` none: no snapshot has arrived yet, every figure is 0)."""

    province: str
    source: Literal["own", "snapshot", "none"]
    generation: int | None
    as_of: datetime | None
    outbound: Tally
    inbound: Tally


class PlacementService:
    """The placements use cases of one node: publish its statistics, read anyone's."""

    def __init__(
        self,
        *,
        province: str,
        sessions: async_sessionmaker[AsyncSession],
        read_sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        clock: Clock = utcnow,
    ) -> None:
        self.province = province
        self.sessions = sessions
        self.read_sessions = read_sessions
        self.outbox = outbox
        self.clock = clock

    async def rebroadcast(self) -> list[PlacementSnapshot]:
        """Broadcast this province's statistics again, if it has any (start-up, the periodic repair)."""
        async with self.sessions() as session, session.begin():
            return await rebroadcast(session, self.outbox, self.province, self.clock())

    async def publish_due(self) -> list[PlacementSnapshot]:
        """Broadcast the months of recorded hires the published statistics do not count yet (none: nothing).

        The frequent case, nothing to publish, is found by a read: it takes neither the generation's row lock nor,
        on SQLite, the database's write lock (a write session begins with BEGIN IMMEDIATE), which the background
        check took every few seconds from the writers of the node's requests and events."""
        async with self.read_sessions() as session:
            due = exists().where(placement.c.announced.is_(False), _of(self.province))
            if not await session.scalar(select(due)):
                return []
        async with self.sessions() as session, session.begin():
            # what another replica announced meanwhile is not announced again: nothing then
            return await publish_placements(session, self.outbox, self.province, self.clock())

    async def _figures(self, session: AsyncSession, province: str, which: CellFilter) -> ProvinceFigures:
        held = await latest(session, province)
        if province == self.province:
            cells = await own_cells(session, province, which)
            source: Literal["own", "snapshot", "none"] = "own"
        elif held is not None:
            cells = await partner_cells(session, province)
            source = "snapshot"
        else:
            cells, source = [], "none"
        return ProvinceFigures(
            province=province,
            source=source,
            generation=None if held is None else held[0],
            as_of=None if held is None else held[1],
            outbound=tally(cells, Direction.OUTBOUND, which),
            inbound=tally(cells, Direction.INBOUND, which),
        )

    async def figures(self, province: str, which: CellFilter) -> ProvinceFigures:
        async with self.read_sessions() as session:
            return await self._figures(session, province, which)

    async def federation(self, members: Sequence[str], which: CellFilter) -> list[ProvinceFigures]:
        async with self.read_sessions() as session:
            return [await self._figures(session, code, which) for code in members]

"""Recruitment events in the database: the event (``recruitment_fair``), each organising province's listing
(``recruitment_fair_listing``) and registrations (``fair_registration``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from labornet.jobs.adapters.tables import fair_registration, recruitment_fair, recruitment_fair_listing, vacancy
from labornet.jobs.domain.fair import (
    Fair,
    FairStatistics,
    FairStatus,
    Listing,
    Phase,
    RegistrationCount,
    RegistrationStatus,
)
from labornet.shared.db import as_utc, utc_values


def provinces_text(provinces: Sequence[str]) -> str:
    return " " + " ".join(provinces) + " "


def fair_columns(fair: Fair) -> dict[str, Any]:
    return utc_values(
        {
            "id": fair.id,
            "version": fair.version,
            "organiser_province": fair.organiser_province,
            "co_organisers": list(fair.co_organisers),
            "provinces": provinces_text(fair.provinces),
            "title": fair.title,
            "description": fair.description,
            "campaign": fair.campaign.value,
            "mode": fair.mode.value,
            "url": str(fair.url) if fair.url is not None else None,
            "division_code": fair.venue.division_code if fair.venue else None,
            "address": fair.venue.address if fair.venue else None,
            "starts_on": fair.starts_on,
            "ends_on": fair.ends_on,
            "registration_closes_at": fair.registration_closes_at,
            "capacity": fair.capacity,
            "status": fair.status.value,
            "cancel_reason": fair.cancel_reason,
            "outcomes": fair.outcomes.model_dump(mode="json") if fair.outcomes else None,
            "created_at": fair.created_at,
            "updated_at": fair.updated_at,
        }
    )


def fair_of(row: Mapping[Any, Any]) -> Fair:
    venue = {"division_code": row["division_code"], "address": row["address"]} if row["division_code"] else None
    return Fair.model_validate(
        {
            "id": row["id"],
            "version": row["version"],
            "organiser_province": row["organiser_province"],
            "co_organisers": row["co_organisers"],
            "title": row["title"],
            "description": row["description"],
            "campaign": row["campaign"],
            "mode": row["mode"],
            "url": row["url"],
            "venue": venue,
            "starts_on": row["starts_on"],
            "ends_on": row["ends_on"],
            "registration_closes_at": as_utc(row["registration_closes_at"]),
            "capacity": row["capacity"],
            "status": row["status"],
            "cancel_reason": row["cancel_reason"],
            "outcomes": row["outcomes"],
            "created_at": as_utc(row["created_at"]),
            "updated_at": as_utc(row["updated_at"]),
        }
    )


@dataclass(frozen=True)
class StoredFair:
    """An event as this node holds it, with the organiser's latest registration counts."""

    fair: Fair
    statistics_generation: int
    statistics_as_of: datetime | None
    registration_counts: list[dict[str, Any]]

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> StoredFair:
        as_of = row["statistics_as_of"]
        return cls(
            fair=fair_of(row),
            statistics_generation=int(row["statistics_generation"]),
            statistics_as_of=as_utc(as_of) if as_of is not None else None,
            registration_counts=list(row["registration_counts"]),
        )


async def load_fair(session: AsyncSession, fair_id: str, *, for_update: bool = False) -> StoredFair | None:
    query = select(recruitment_fair).where(recruitment_fair.c.id == fair_id)
    if for_update:
        query = query.with_for_update()
    row = (await session.execute(query)).mappings().one_or_none()
    return StoredFair.of(row) if row is not None else None


async def add_fair(session: AsyncSession, fair: Fair) -> None:
    await session.execute(
        insert(recruitment_fair).values(
            **fair_columns(fair),
            statistics_generation=0,
            statistics_as_of=None,
            registration_counts=[],
            statistics_due=False,
        )
    )


async def replace_fair(session: AsyncSession, before: Fair, after: Fair) -> bool:
    """Store ``after`` over ``before``; False if the row is no longer at ``before``'s version."""
    result = await session.execute(
        update(recruitment_fair)
        .where(recruitment_fair.c.id == before.id, recruitment_fair.c.version == before.version)
        .values(**fair_columns(after))
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def apply_fair(session: AsyncSession, fair: Fair, held: Fair | None) -> str:
    """Keep a replicated event if it is newer than the copy held: "inserted", "updated" or "stale"."""
    if held is None:
        await add_fair(session, fair)
        return "inserted"
    if fair.version <= held.version:
        return "stale"
    await replace_fair(session, held, fair)
    return "updated"


# Listings ------------------------------------------------------------------------------------------------------


def listing_of(row: Mapping[Any, Any]) -> Listing:
    return Listing.model_validate({**row, "updated_at": as_utc(row["updated_at"])})


async def load_listing(session: AsyncSession, fair_id: str, province: str) -> Listing | None:
    row = (
        (
            await session.execute(
                select(recruitment_fair_listing)
                .where(recruitment_fair_listing.c.fair_id == fair_id, recruitment_fair_listing.c.province == province)
                .with_for_update()
            )
        )
        .mappings()
        .one_or_none()
    )
    return listing_of(row) if row is not None else None


async def store_listing(session: AsyncSession, listing: Listing, held: Listing | None) -> str:
    """Keep ``listing`` if newer than ``held``: "inserted", "updated" or "stale"."""
    values = listing.model_dump(mode="python")
    if held is None:
        await session.execute(insert(recruitment_fair_listing).values(**values))
        return "inserted"
    if listing.version <= held.version:
        return "stale"
    await session.execute(
        update(recruitment_fair_listing)
        .where(
            recruitment_fair_listing.c.fair_id == listing.fair_id,
            recruitment_fair_listing.c.province == listing.province,
        )
        .values(**values)
    )
    return "updated"


async def listings_of(session: AsyncSession, fair_id: str) -> list[Listing]:
    rows = await session.execute(
        select(recruitment_fair_listing)
        .where(recruitment_fair_listing.c.fair_id == fair_id)
        .order_by(recruitment_fair_listing.c.province)
    )
    return [listing_of(row) for row in rows.mappings()]


async def vacancies_by_id(session: AsyncSession, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The replica's vacancies among ``ids``: what an event's page shows of each."""
    if not ids:
        return {}
    columns = [
        vacancy.c.id,
        vacancy.c.title,
        vacancy.c.employer_name,
        vacancy.c.owner_province,
        vacancy.c.city,
        vacancy.c.headcount,
        vacancy.c.status,
    ]
    hired = vacancy.c.get("hired")  # the applicants hired through the platform, where applications run
    rows = await session.execute(
        select(*columns, *([hired] if hired is not None else [])).where(vacancy.c.id.in_(list(ids)))
    )
    found = {}
    for row in rows.mappings():
        item = dict(row)
        taken = int(item.pop("hired", 0) or 0)
        item["open_headcount"] = max(item["headcount"] - taken, 0) if item["status"] == "open" else 0
        found[item["id"]] = item
    return found


# Statistics ----------------------------------------------------------------------------------------------------


async def count_registrations(session: AsyncSession, fair_id: str) -> list[RegistrationCount]:
    """The registrations this node (the organiser) received for an event, by home province and status."""
    rows = await session.execute(
        select(fair_registration.c.home_province, fair_registration.c.status, func.count())
        .where(fair_registration.c.fair_id == fair_id, fair_registration.c.status != RegistrationStatus.SUBMITTED)
        .group_by(fair_registration.c.home_province, fair_registration.c.status)
    )
    counts: dict[str, dict[str, int]] = {}
    for home, status, count in rows:
        counts.setdefault(home, {"accepted": 0, "refused": 0, "cancelled": 0})[status] = int(count)
    return [RegistrationCount(home_province=home, **counts[home]) for home in sorted(counts)]


async def store_statistics(session: AsyncSession, statistics: FairStatistics, *, due: bool = False) -> None:
    await session.execute(
        update(recruitment_fair)
        .where(recruitment_fair.c.id == statistics.fair_id)
        .values(
            statistics_generation=statistics.generation,
            statistics_as_of=statistics.as_of,
            registration_counts=[c.model_dump() for c in statistics.registrations],
            statistics_due=due,
        )
    )


async def mark_statistics_due(session: AsyncSession, fair_id: str) -> None:
    await session.execute(update(recruitment_fair).where(recruitment_fair.c.id == fair_id).values(statistics_due=True))


async def statistics_due(session: AsyncSession, organiser: str) -> list[str]:
    rows = await session.execute(
        select(recruitment_fair.c.id).where(
            recruitment_fair.c.organiser_province == organiser, recruitment_fair.c.statistics_due.is_(True)
        )
    )
    return list(rows.scalars())


# Registrations -------------------------------------------------------------------------------------------------


async def load_registration(session: AsyncSession, registration_id: str) -> dict[str, Any] | None:
    row = (
        (
            await session.execute(
                select(fair_registration).where(fair_registration.c.id == registration_id).with_for_update()
            )
        )
        .mappings()
        .one_or_none()
    )
    return dict(row) if row is not None else None


async def add_registration(session: AsyncSession, row: Mapping[str, Any]) -> None:
    await session.execute(insert(fair_registration).values(**row))


async def set_registration(session: AsyncSession, registration_id: str, **values: Any) -> None:
    await session.execute(update(fair_registration).where(fair_registration.c.id == registration_id).values(**values))


async def active_registration(session: AsyncSession, fair_id: str, worker: str) -> str | None:
    return (
        await session.execute(
            select(fair_registration.c.id).where(
                fair_registration.c.worker == worker, fair_registration.c.active_fair == fair_id
            )
        )
    ).scalar()


async def count_active(session: AsyncSession, fair_id: str, *, home: str | None = None) -> int:
    """Active registrations of an event on this node (accepted ones only at the organiser's)."""
    condition: ColumnElement[bool] = fair_registration.c.active_fair == fair_id
    if home is not None:
        condition = and_(condition, fair_registration.c.home_province == home)
    return int((await session.execute(select(func.count()).where(condition))).scalar_one())


async def count_accepted(session: AsyncSession, fair_id: str) -> int:
    return int(
        (
            await session.execute(
                select(func.count()).where(
                    fair_registration.c.fair_id == fair_id, fair_registration.c.status == RegistrationStatus.ACCEPTED
                )
            )
        ).scalar_one()
    )


# Reading -------------------------------------------------------------------------------------------------------


def phase_condition(phase: Phase, today: date) -> ColumnElement[bool]:
    if phase == Phase.UPCOMING:
        return recruitment_fair.c.starts_on > today
    if phase == Phase.PAST:
        return recruitment_fair.c.ends_on < today
    return and_(recruitment_fair.c.starts_on <= today, recruitment_fair.c.ends_on >= today)


async def find_fairs(
    session: AsyncSession,
    *,
    campaign: str | None,
    province: str | None,
    phase: Phase | None,
    status: FairStatus | None,
    today: date,
    after: tuple[date, str] | None,
    limit: int,
) -> list[StoredFair]:
    """Events by start date then id (keyset paging after ``after``), at most ``limit``."""
    conditions: list[ColumnElement[bool]] = []
    if campaign is not None:
        conditions.append(recruitment_fair.c.campaign == campaign)
    if province is not None:
        conditions.append(recruitment_fair.c.provinces.like(f"% {province} %"))
    if phase is not None:
        conditions.append(phase_condition(phase, today))
    if status is not None:
        conditions.append(recruitment_fair.c.status == status.value)
    if after is not None:
        starts, last_id = after
        conditions.append(
            or_(
                recruitment_fair.c.starts_on > starts,
                and_(recruitment_fair.c.starts_on == starts, recruitment_fair.c.id > last_id),
            )
        )
    rows = await session.execute(
        select(recruitment_fair)
        .where(*conditions)
        .order_by(recruitment_fair.c.starts_on, recruitment_fair.c.id)
        .limit(limit)
    )
    return [StoredFair.of(row) for row in rows.mappings()]


async def fairs_to_rebroadcast(session: AsyncSession, organiser: str, since: date) -> list[StoredFair]:
    """This province's events not yet over before ``since``: what partners may still need."""
    rows = await session.execute(
        select(recruitment_fair).where(
            recruitment_fair.c.organiser_province == organiser, recruitment_fair.c.ends_on >= since
        )
    )
    return [StoredFair.of(row) for row in rows.mappings()]


async def own_listings_to_rebroadcast(session: AsyncSession, province: str, since: date) -> list[Listing]:
    rows = await session.execute(
        select(recruitment_fair_listing)
        .join(recruitment_fair, recruitment_fair.c.id == recruitment_fair_listing.c.fair_id)
        .where(recruitment_fair_listing.c.province == province, recruitment_fair.c.ends_on >= since)
    )
    return [listing_of(row) for row in rows.mappings()]


async def fair_counts(session: AsyncSession, today: date) -> dict[tuple[str, str], int]:
    """The events this node holds, by state and phase."""
    phase = case(
        (recruitment_fair.c.starts_on > today, Phase.UPCOMING.value),
        (recruitment_fair.c.ends_on < today, Phase.PAST.value),
        else_=Phase.ONGOING.value,
    )
    rows = await session.execute(
        select(recruitment_fair.c.status, phase, func.count()).group_by(recruitment_fair.c.status, phase)
    )
    return {(status, when): int(count) for status, when, count in rows}


async def worker_registrations(session: AsyncSession, worker: str) -> list[dict[str, Any]]:
    """A worker's registrations at their home node, newest first, with the title, status and dates of each event."""
    rows = await session.execute(
        select(
            fair_registration,
            recruitment_fair.c.title.label("fair_title"),
            recruitment_fair.c.status.label("fair_status"),
            recruitment_fair.c.starts_on,
            recruitment_fair.c.ends_on,
        )
        .join(recruitment_fair, recruitment_fair.c.id == fair_registration.c.fair_id)
        .where(fair_registration.c.worker == worker)
        .order_by(fair_registration.c.submitted_at.desc(), fair_registration.c.id)
        .limit(500)
    )
    return [dict(row) for row in rows.mappings()]


async def fair_registrations(
    session: AsyncSession, fair_id: str, *, status: str | None, home: str | None, after: str | None, limit: int
) -> list[dict[str, Any]]:
    """The registrations an organiser holds for one of its events, by id (keyset paging after ``after``)."""
    conditions: list[ColumnElement[bool]] = [fair_registration.c.fair_id == fair_id]
    if status is not None:
        conditions.append(fair_registration.c.status == status)
    if home is not None:
        conditions.append(fair_registration.c.home_province == home)
    if after is not None:
        conditions.append(fair_registration.c.id > after)
    rows = await session.execute(
        select(fair_registration).where(*conditions).order_by(fair_registration.c.id).limit(limit)
    )
    return [dict(row) for row in rows.mappings()]

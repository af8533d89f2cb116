"""Applications in the database: an :class:`Application` is one ``job_application`` row plus its
``application_entry`` timeline; the home node adds the worker's account and its pending withdrawal request."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from labornet.jobs.adapters.tables import application_entry, application_notice, job_application, vacancy
from labornet.jobs.domain.application import ENDED_UNHIRED, FINAL, Application, ApplicationState, Entry
from labornet.jobs.domain.vacancy import Status as VacancyStatus
from labornet.shared.db import as_utc, as_utc_or_none, utc_values


@dataclass(frozen=True)
class StoredApplication:
    """An application as this node holds it, with the node's own bookkeeping."""

    application: Application
    worker: str | None  # the applicant's account, at the home node only
    withdrawal_requested_at: datetime | None
    updated_at: datetime


def columns(application: Application) -> dict[str, Any]:
    """The ``job_application`` columns of ``application`` (without this node's bookkeeping)."""
    profile, interview, offer = application.profile, application.interview, application.offer
    return utc_values(
        {
            "id": application.id,
            "version": application.version,
            "home_province": application.home_province,
            "owner_province": application.owner_province,
            "vacancy_id": application.vacancy.id,
            "vacancy_title": application.vacancy.title,
            "employer_name": application.vacancy.employer_name,
            "occupation_code": application.vacancy.occupation_code,
            "city": application.vacancy.city,
            "open_for": None if application.state in ENDED_UNHIRED else application.vacancy.id,
            "applicant_name": profile.name,
            "applicant_phone": profile.phone,
            "skills": list(profile.skills),
            "certificates": list(profile.certificates),
            "experience_years": profile.experience_years,
            "expected_salary": profile.expected_salary,
            "available_from": profile.available_from,
            "target_groups": [group.value for group in profile.target_groups],
            "cover_note": profile.cover_note,
            "state": application.state.value,
            "submitted_at": application.submitted_at,
            "interview_at": interview.at if interview else None,
            "interview_place": interview.place if interview else None,
            "offer_salary": offer.salary if offer else None,
            "offer_start_date": offer.start_date if offer else None,
            "hired_at": application.hired_at,
            "reason": application.reason,
        }
    )


def application_of(row: Mapping[Any, Any], entries: Sequence[Mapping[Any, Any]]) -> Application:
    interview_at = row["interview_at"]
    return Application.model_validate(
        {
            "id": row["id"],
            "version": row["version"],
            "home_province": row["home_province"],
            "owner_province": row["owner_province"],
            "vacancy": {
                "id": row["vacancy_id"],
                "title": row["vacancy_title"],
                "employer_name": row["employer_name"],
                "occupation_code": row["occupation_code"],
                "city": row["city"],
            },
            "profile": {
                "name": row["applicant_name"],
                "phone": row["applicant_phone"],
                "skills": row["skills"],
                "certificates": row["certificates"],
                "experience_years": row["experience_years"],
                "expected_salary": row["expected_salary"],
                "available_from": row["available_from"],
                "target_groups": row["target_groups"],
                "cover_note": row["cover_note"],
            },
            "state": row["state"],
            "submitted_at": as_utc(row["submitted_at"]),
            "interview": (
                {"at": as_utc(interview_at), "place": row["interview_place"]} if interview_at is not None else None
            ),
            "offer": (
                {"salary": row["offer_salary"], "start_date": row["offer_start_date"]}
                if row["offer_salary"] is not None
                else None
            ),
            "hired_at": as_utc_or_none(row["hired_at"]),
            "reason": row["reason"],
            "timeline": [
                {
                    "seq": e["seq"],
                    "at": as_utc(e["at"]),
                    "province": e["province"],
                    "actor": e["actor"],
                    "kind": e["kind"],
                    "state": e["state"],
                    "note": e["note"],
                    "details": e["details"],
                }
                for e in entries
            ],
        }
    )


def stored(row: Mapping[Any, Any], entries: Sequence[Mapping[Any, Any]]) -> StoredApplication:
    return StoredApplication(
        application=application_of(row, entries),
        worker=row["worker"],
        withdrawal_requested_at=as_utc_or_none(row["withdrawal_requested_at"]),
        updated_at=as_utc(row["updated_at"]),
    )


async def timelines_of(session: AsyncSession, ids: Sequence[str]) -> dict[str, list[Mapping[Any, Any]]]:
    """The timelines of several applications in one query."""
    found: dict[str, list[Mapping[Any, Any]]] = {application_id: [] for application_id in ids}
    if not ids:
        return found
    rows = await session.execute(
        select(application_entry)
        .where(application_entry.c.application_id.in_(ids))
        .order_by(application_entry.c.application_id, application_entry.c.seq)
    )
    for row in rows.mappings():
        found[row["application_id"]].append(row)
    return found


async def load(session: AsyncSession, application_id: str, *, for_update: bool = False) -> StoredApplication | None:
    query = select(job_application).where(job_application.c.id == application_id)
    if for_update:
        query = query.with_for_update()
    row = (await session.execute(query)).mappings().one_or_none()
    if row is None:
        return None
    return stored(row, (await timelines_of(session, [application_id]))[application_id])


async def unended(session: AsyncSession, worker: str, vacancy_id: str) -> str | None:
    """The id of the worker's application to the vacancy that has not ended without a hire, if any."""
    query = select(job_application.c.id).where(
        job_application.c.worker == worker, job_application.c.open_for == vacancy_id
    )
    found: str | None = (await session.execute(query)).scalar()
    return found


async def _append(session: AsyncSession, application_id: str, entries: Sequence[Entry]) -> None:
    if not entries:
        return
    await session.execute(
        insert(application_entry),
        [
            {
                "application_id": application_id,
                "seq": entry.seq,
                "at": entry.at,
                "province": entry.province,
                "actor": entry.actor,
                "kind": entry.kind.value,
                "state": entry.state.value,
                "note": entry.note,
                "details": entry.details,
            }
            for entry in entries
        ],
    )


async def add(session: AsyncSession, application: Application, *, worker: str | None, at: datetime) -> None:
    await session.execute(
        insert(job_application).values(
            **columns(application), worker=worker, withdrawal_requested_at=None, updated_at=at
        )
    )
    await _append(session, application.id, application.timeline)


async def replace(
    session: AsyncSession, before: Application, after: Application, *, at: datetime, **bookkeeping: Any
) -> bool:
    """Store ``after`` over ``before`` (same id); False if someone else changed the row in between. The timeline
    is only ever appended to."""
    held = len(before.timeline)
    if after.timeline[:held] != before.timeline:
        raise ValueError(f"application {after.id} version {after.version} rewrites its timeline")
    result = await session.execute(
        update(job_application)
        .where(job_application.c.id == before.id, job_application.c.version == before.version)
        .values(**columns(after), updated_at=at, **bookkeeping)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    await _append(session, after.id, after.timeline[held:])
    return True


async def open_at_ended_vacancies(session: AsyncSession, province: str, limit: int) -> list[tuple[str, str]]:
    """Open applications to this province's vacancies that can no longer be hired (the vacancy is filled or
    withdrawn): (application id, vacancy status), oldest first."""
    query = (
        select(job_application.c.id, vacancy.c.status)
        .join(vacancy, vacancy.c.id == job_application.c.vacancy_id)
        .where(
            job_application.c.owner_province == province,
            job_application.c.state.not_in([state.value for state in FINAL]),
            vacancy.c.status.in_([VacancyStatus.FILLED.value, VacancyStatus.WITHDRAWN.value]),
        )
        .order_by(job_application.c.submitted_at, job_application.c.id)
        .limit(limit)
    )
    return [(application_id, status) for application_id, status in await session.execute(query)]


async def add_notice(session: AsyncSession, worker: str, application: Application, *, at: datetime) -> None:
    """Tell the worker's match stream that their application reached a new version (at the home node)."""
    await session.execute(
        insert(application_notice).values(
            worker=worker,
            application_id=application.id,
            version=application.version,
            state=application.state.value,
            vacancy_id=application.vacancy.id,
            vacancy_title=application.vacancy.title,
            at=at,
        )
    )


async def set_withdrawal_requested(session: AsyncSession, application_id: str, at: datetime | None) -> None:
    await session.execute(
        update(job_application).where(job_application.c.id == application_id).values(withdrawal_requested_at=at)
    )


async def count_by_state(session: AsyncSession, province: str) -> dict[tuple[str, ...], float]:
    """Applications this node holds by role (``sent``: made by this province's workers, ``received``: to this
    province's vacancies; an application within the province is both) and state."""
    counts: dict[tuple[str, ...], float] = {}
    for role, column in (("sent", job_application.c.home_province), ("received", job_application.c.owner_province)):
        rows = await session.execute(
            select(job_application.c.state, func.count()).where(column == province).group_by(job_application.c.state)
        )
        for state, count in rows:
            counts[(role, state)] = count
    for role in ("sent", "received"):
        for state in ApplicationState:
            counts.setdefault((role, state.value), 0)
    return counts

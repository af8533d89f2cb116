"""The jobs service's bus contract: the vacancy events it broadcasts on ``labornet.<province>.jobs.events``.

Every event carries the whole vacancy as its owner holds it after the change (``VacancyRecord``, what partners
validate before they apply it to their replica); the types differ in the statuses and versions they may carry, as
``check_replicated`` holds them: publishing opens version 1, an update changes an open vacancy, a close ends it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from labornet.jobs.domain.vacancy import CLOSED, PUBLISHED, UPDATED, Status, VacancyRecord
from labornet.jobs.entrypoints import applications, dispatches, fairs, placements
from labornet.shared.bounds import INT32_MAX
from labornet.shared.contracts import EventContract

LaterVersion = Annotated[int, Field(ge=2, le=INT32_MAX)]


class PublishedVacancy(VacancyRecord):
    """A vacancy just published: open, at version 1."""

    status: Literal[Status.OPEN]
    version: Literal[1]


class UpdatedVacancy(VacancyRecord):
    """An open vacancy after a change: its version is one more than the one changed."""

    status: Literal[Status.OPEN]
    version: LaterVersion


class ClosedVacancy(VacancyRecord):
    """A vacancy at its end: filled or withdrawn by an officer, or expired after its closing date. It is the
    explicit removal: a replica that missed earlier versions still ends right."""

    status: Literal[Status.FILLED, Status.WITHDRAWN, Status.EXPIRED]
    version: LaterVersion


EVENTS: list[EventContract] = [
    EventContract(
        type=PUBLISHED,
        model=PublishedVacancy,
        channel="events",
        summary="A province published a vacancy.",
        description="Written with the vacancy's insert (POST /api/v1/vacancies); the subject is the vacancy id.",
    ),
    EventContract(
        type=UPDATED,
        model=UpdatedVacancy,
        channel="events",
        summary="A province changed one of its open vacancies.",
        description="Written with the change (PATCH /api/v1/vacancies/{id}); the whole vacancy as changed.",
    ),
    EventContract(
        type=CLOSED,
        model=ClosedVacancy,
        channel="events",
        summary="A vacancy was filled, withdrawn or expired.",
        description="Written by POST /api/v1/vacancies/{id}/close, or by the sweep that expires a vacancy the day "
        "after its closing date.",
    ),
]
EVENTS += [*applications.EVENTS, *placements.EVENTS, *fairs.EVENTS, *dispatches.EVENTS]

"""Use cases of the vacancy lifecycle, each one unit of work: state change and event commit together.

The owner node publishes, updates, closes and expires its vacancies and writes the event into the outbox in the
same transaction; every node (the owner included) runs the matching of subscriptions in that transaction too.
Partners apply the events to their replica through :meth:`VacancyService.apply_events`, which holds them to the
same rules first.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date
from typing import Any

from prometheus_client import Counter, Gauge
from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from labornet.jobs.adapters.brands import BrandRegister, BrandRegisterUnavailable
from labornet.jobs.adapters.tables import vacancy
from labornet.jobs.domain import text
from labornet.jobs.domain.vacancy import (
    CLOSED,
    PUBLISHED,
    UPDATED,
    BrandNotUsable,
    HeadcountBelowHired,
    Status,
    VacancyChanges,
    VacancyDraft,
    VacancyRecord,
    VacancyRuleError,
    check_brand,
    check_change,
    check_headcount,
    check_replicated,
    flatten,
    new_vacancy_id,
    now,
    occupations,
)
from labornet.jobs.service_layer.matching import match_vacancies, match_vacancy
from labornet.shared.clock import today_in_china
from labornet.shared.db import insert_of, update_of, update_parameters
from labornet.shared.direct import Direct
from labornet.shared.divisions import DivisionRegistry, InvalidDivision
from labornet.shared.envelope import Envelope, json_fields
from labornet.shared.groupcommit import GroupCommit
from labornet.shared.inbox import Handler, RuleViolation, batched, check_version_continuity, describe
from labornet.shared.observability import current_traceparent, set_counts
from labornet.shared.outbox import Outbox
from labornet.shared.problems import Forbidden, NotFound, Problem, Unprocessable
from labornet.shared.replica import check_owner, upsert_newer
from labornet.shared.topics import events_topic

log = logging.getLogger(__name__)
# a vacancy published through the API: run on the driver (ADR 38)
_INSERT_VACANCY = Direct(insert_of(vacancy))
# the versions the replica holds of a run's vacancies (partners' events): run on the driver (ADR 38)
_HELD_VERSIONS = Direct(
    select(vacancy.c.id, vacancy.c.version).where(vacancy.c.id.in_(bindparam("ids", expanding=True)))
)

VACANCIES = Gauge("labornet_jobs_vacancies", "Vacancies held by this node, by state", ["owner_province", "state"])
REPLICA_CHANGES = Counter(
    "labornet_jobs_replica_changes_total", "Partner vacancy events applied to the replica, by result", ["result"]
)


@dataclass(frozen=True)
class _Publication:
    """A vacancy to publish: its row, not yet written, and the trace of the request that published it."""

    row: dict[str, Any]
    traceparent: str | None


EVENT_FIELDS = tuple(c.name for c in vacancy.columns if c.name != "search_tokens")


def search_tokens(row: Mapping[str, Any]) -> str:
    return text.document(
        [
            row["title"],
            row["description"],
            row["employer_name"],
            row["occupation_name"],
            row["city"],
            " ".join(row["skills"]),
        ]
    )


def to_event(row: Mapping[str, Any]) -> dict[str, Any]:
    """The vacancy as carried by events and APIs (JSON types)."""
    return json_fields(row, EVENT_FIELDS)


def from_event(data: Mapping[str, Any]) -> dict[str, Any]:
    """A vacancy row from an event's data; ``ValueError`` (pydantic's ValidationError) naming the rule it breaks."""
    record = VacancyRecord.model_validate(data)
    row = record.model_dump()
    row.update(
        employment_type=record.employment_type.value,
        target_groups=[group.value for group in record.target_groups],
        status=record.status.value,
        posted_at=record.posted_at.astimezone(UTC),
        updated_at=record.updated_at.astimezone(UTC),
    )
    row["search_tokens"] = search_tokens(row)
    return row


class VacancyService:
    def __init__(
        self,
        *,
        province: str,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        divisions: DivisionRegistry,
        brands: BrandRegister,
        max_version_jump: int = 0,
    ) -> None:
        self.province = province
        self.sessions = sessions
        self.outbox = outbox
        self.divisions = divisions
        self.brands = brands
        self.max_version_jump = max_version_jump  # LABORNET_REPLICA_MAX_VERSION_JUMP; 0 = no limit
        self.topic = events_topic(province, "jobs")
        # the consumer's handler of every vacancy event type: one event at a time, or a run's events together
        self.apply_event: Handler = batched(self.apply_events)
        self._publishing = GroupCommit("vacancy-publish", sessions, self._write_published)

    def _place(self, division_code: str, city: str | None) -> tuple[str, str]:
        try:
            division = self.divisions.resolve(self.province, division_code)
        except InvalidDivision as exc:
            raise Unprocessable(str(exc), errors=[{"field": "body.division_code", "message": str(exc)}]) from exc
        return division.code, city or division.name

    async def _check_brand(self, brand_id: str | None) -> None:
        """A named brand exists in the federation's brand register and is not revoked (422 naming brand_id)."""
        if brand_id is None:
            return
        try:
            check_brand(brand_id, await self.brands.find(brand_id))
        except BrandNotUsable as exc:
            raise Unprocessable(str(exc), errors=[{"field": "body.brand_id", "message": str(exc)}]) from exc
        except BrandRegisterUnavailable as exc:
            raise Problem(
                f"brand {brand_id} cannot be checked now: {exc}; try again shortly",
                status=503,
                slug="brand-register-unavailable",
            ) from exc

    async def publish(self, draft: VacancyDraft) -> dict[str, Any]:
        """Publish a vacancy of this province: the row, its event and its matches, committed together with the
        vacancies published at the same moment (:class:`~labornet.shared.groupcommit.GroupCommit`, ADR 41)."""
        await self._check_brand(draft.brand_id)
        row = self.new_vacancy(draft)
        return await self._publishing.submit(_Publication(row, current_traceparent.get()))

    async def finish_publishing(self) -> None:
        """Wait until the publications handed so far are committed or refused (the service stopping)."""
        await self._publishing.drain()

    async def _write_published(
        self, session: AsyncSession, publications: Sequence[_Publication]
    ) -> list[dict[str, Any]]:
        rows = [publication.row for publication in publications]
        await self.insert_published(session, rows, [publication.traceparent for publication in publications])
        return rows

    def new_vacancy(self, draft: VacancyDraft) -> dict[str, Any]:
        """The row a draft is published as (the division resolved; 422 naming it otherwise), not yet written."""
        row = flatten(draft)
        row["division_code"], row["city"] = self._place(draft.division_code, draft.city)
        moment = now()
        row.update(
            id=new_vacancy_id(self.province),
            owner_province=self.province,
            occupation_name=occupations()[draft.occupation_code]["zh"],
            posted_at=moment,
            updated_at=moment,
            status=Status.OPEN.value,
            version=1,
            hired=0,
            description=draft.description,
            brand_id=draft.brand_id,
            target_groups=row.get("target_groups", []),
            skills=row.get("skills", []),
        )
        row["search_tokens"] = search_tokens(row)
        return row

    async def insert_published(
        self,
        session: AsyncSession,
        rows: Sequence[Mapping[str, Any]],
        traceparents: Sequence[str | None] | None = None,
    ) -> None:
        """Write new vacancies and their ``vacancy.published`` events in the caller's transaction (the API's
        publications committed together, the bulk import's batches).

        The rows go in with one statement and are matched together (:func:`match_vacancies`: the active
        subscriptions are read once for all of them); the events are numbered and signed together at the commit.
        Each event is in the trace of ``traceparents`` at its row's position (by default the current one)."""
        await _INSERT_VACANCY.executemany(session, rows)
        for row, traceparent in zip(rows, traceparents or [None] * len(rows), strict=True):
            self._write_event(session, PUBLISHED, row, traceparent=traceparent)
        await match_vacancies(session, rows, new=True)

    async def update(self, vacancy_id: str, changes: VacancyChanges, if_match: int | None) -> dict[str, Any]:
        await self._check_brand(changes.brand_id)
        async with self.sessions() as session, session.begin():
            current = await self._own(session, vacancy_id)
            check_change(current, changes.version or if_match)
            row = {**current, **flatten(changes)}
            if changes.division_code is not None or changes.city is not None:
                row["division_code"], row["city"] = self._place(row["division_code"], changes.city)
            if changes.occupation_code is not None:
                row["occupation_name"] = occupations()[changes.occupation_code]["zh"]
            if row["salary_min"] > row["salary_max"]:
                raise Unprocessable("salary min is greater than max")
            if changes.headcount is not None:
                try:
                    check_headcount(changes.headcount, current["hired"])
                except HeadcountBelowHired as exc:
                    raise Unprocessable(str(exc), errors=[{"field": "body.headcount", "message": str(exc)}]) from exc
            row.update(version=current["version"] + 1, updated_at=now())
            row["search_tokens"] = search_tokens(row)
            await self._save(session, current, row)
            await self._emit(session, UPDATED, row)
        return row

    async def close(self, vacancy_id: str, status: Status, expected_version: int | None) -> dict[str, Any]:
        async with self.sessions() as session, session.begin():
            current = await self._own(session, vacancy_id)
            check_change(current, expected_version)
            row = {**current, "status": status.value, "version": current["version"] + 1, "updated_at": now()}
            await self._save(session, current, row)
            await self._emit(session, CLOSED, row)
        return row

    async def record_hire(self, session: AsyncSession, vacancy_id: str) -> dict[str, Any]:
        """One more applicant hired, in the caller's transaction: a new version of the vacancy and its event.

        The vacancy closes as filled with the hire that takes its last place (``vacancy.closed``); otherwise it is
        a change (``vacancy.updated``, or ``vacancy.closed`` again for an expired one). The caller has checked the
        hire against the vacancy's rules; a concurrent change of the vacancy is a :class:`VacancyRuleError`."""
        current = await self._own(session, vacancy_id)
        hired = current["hired"] + 1
        filled = hired >= current["headcount"]
        status = Status.FILLED.value if filled else current["status"]
        row = {**current, "hired": hired, "status": status, "version": current["version"] + 1, "updated_at": now()}
        await self._save(session, current, row)
        await self._emit(session, UPDATED if status == Status.OPEN else CLOSED, row)
        return row

    async def expire_due(self, today: date | None = None) -> int:
        """Close this province's open vacancies whose closing date has passed; return how many."""
        day = today or today_in_china()
        async with self.sessions() as session, session.begin():
            due = (
                (
                    await session.execute(
                        select(vacancy).where(
                            vacancy.c.owner_province == self.province,
                            vacancy.c.status == Status.OPEN.value,
                            vacancy.c.closing_date < day,
                        )
                    )
                )
                .mappings()
                .all()
            )
            for current in due:
                row = {
                    **current,
                    "status": Status.EXPIRED.value,
                    "version": current["version"] + 1,
                    "updated_at": now(),
                }
                await self._save(session, dict(current), row)
                await self._emit(session, CLOSED, row)
        if due:
            log.info("expired %d vacancies whose closing date passed", len(due))
        return len(due)

    async def _own(self, session: AsyncSession, vacancy_id: str) -> dict[str, Any]:
        found = (await session.execute(select(vacancy).where(vacancy.c.id == vacancy_id))).mappings().one_or_none()
        if found is None:
            raise NotFound(f"no vacancy {vacancy_id}")
        if found["owner_province"] != self.province:
            raise Forbidden(
                f"vacancy {vacancy_id} belongs to province {found['owner_province']}; only its officers change it"
            )
        return dict(found)

    async def _save(self, session: AsyncSession, current: Mapping[str, Any], row: Mapping[str, Any]) -> None:
        result = await session.execute(
            update_of(vacancy, "id", "version"),
            update_parameters(
                {k: v for k, v in row.items() if k != "id"}, id=current["id"], version=current["version"]
            ),
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise VacancyRuleError(f"vacancy {current['id']} changed concurrently; reload and retry")

    async def _emit(self, session: AsyncSession, event_type: str, row: Mapping[str, Any]) -> None:
        self._write_event(session, event_type, row)
        await match_vacancy(session, row)

    def _write_event(
        self, session: AsyncSession, event_type: str, row: Mapping[str, Any], traceparent: str | None = None
    ) -> None:
        self.outbox.queue(
            session,
            topic=self.topic,
            event_type=event_type,
            key=row["id"],
            subject=row["id"],
            data=to_event(row),
            traceparent=traceparent,
        )

    async def apply_events(self, session: AsyncSession, envelopes: Sequence[Envelope]) -> None:
        """Apply partners' vacancy events to the replica, in order: newer versions win, older or equal ones change
        nothing (the consumer hands over the consecutive events of a run; one event is a run of one).

        Each event is first held to the rules the owner's API enforces (:class:`VacancyRecord`, the division
        registry, what its type may carry) and to version continuity
        (:func:`~labornet.shared.inbox.check_version_continuity`); one that breaks any is a :class:`RuleViolation`,
        quarantined at once (the consumer finds it by applying a failed run's events one by one).

        The work is one read of the held versions, one upsert of the newest row of each vacancy and one round of
        matching for them all, whatever the number of events. A vacancy changed several times in one run is
        matched in its last version: one that opened and closed within the run matches no subscription."""
        rows: list[tuple[Envelope, dict[str, Any]]] = []
        for envelope in envelopes:
            try:
                row = from_event(envelope.json())
                check_replicated(envelope.type, row)
                check_owner(row, envelope, "owner_province", "vacancy")
                self.divisions.resolve(row["owner_province"], row["division_code"])
            except ValueError as exc:  # pydantic's ValidationError, VacancyRuleError, InvalidDivision, bad JSON
                raise RuleViolation(
                    f"vacancy event {envelope.id} breaks the publishing rules: {describe(exc)}"
                ) from exc
            rows.append((envelope, row))
        found = await _HELD_VERSIONS.execute(session, {"ids": sorted({row["id"] for _, row in rows})})
        held: dict[str, int] = {stored["id"]: stored["version"] for stored in found.rows}
        newest: dict[str, dict[str, Any]] = {}
        results: list[str] = []
        for envelope, row in rows:
            current = held.get(row["id"])
            check_version_continuity(envelope, row["version"], current, self.max_version_jump)
            if current is not None and row["version"] <= current:
                results.append("stale")
                continue
            results.append("inserted" if current is None else "updated")
            held[row["id"]] = row["version"]
            newest[row["id"]] = row
        await apply_replica_rows(session, list(newest.values()))
        for result in results:
            REPLICA_CHANGES.labels(result).inc()


async def apply_replica_rows(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Upsert partners' vacancies already known to be newer than the replica's copies (distinct ids), with one
    statement, and match them. The upsert itself keeps a held copy of a higher version (a concurrent writer)."""
    if not rows:
        return
    await _replica_upsert(tuple(rows[0])).executemany(session, rows)
    await match_vacancies(session, rows)


@functools.lru_cache(maxsize=8)
def _replica_upsert(columns: tuple[str, ...]) -> Direct:
    """The replica's upsert of rows with ``columns``, built once per set of columns (building it, its ``excluded``
    alias above all, costs more than running it for a run of a few events); run on the driver (ADR 38)."""

    def build(dialect: Any) -> Any:
        statement = dialect.insert(vacancy)
        return statement.on_conflict_do_update(
            index_elements=[vacancy.c.id],
            set_={name: statement.excluded[name] for name in columns if name != "id"},
            where=vacancy.c.version < statement.excluded.version,
        )

    return Direct({"postgresql": build(postgresql), "sqlite": build(sqlite)})


async def apply_replica_row(session: AsyncSession, row: dict[str, Any]) -> str:
    """Insert or update a partner's vacancy if ``row`` is newer than the replica's copy; say what happened."""
    result = await upsert_newer(session, vacancy, row)
    REPLICA_CHANGES.labels(result).inc()
    if result != "stale":
        await match_vacancy(session, row)
    return result


async def refresh_gauges(session: AsyncSession) -> None:
    rows = await session.execute(
        select(vacancy.c.owner_province, vacancy.c.status, func.count()).group_by(
            vacancy.c.owner_province, vacancy.c.status
        )
    )
    counts = {(province, status): count for province, status, count in rows}
    # every status of every province held, zeros included (and set_counts zeroes what is no longer held)
    set_counts(
        VACANCIES,
        {
            (province, status.value): counts.get((province, status.value), 0)
            for province, _ in counts
            for status in Status
        },
    )

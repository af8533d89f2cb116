"""Use cases of joint recruitment events and the handlers of what partners send about them.

Each change is one transaction on the node that may make it, with the events it causes written to the outbox:

* the organiser creates, changes, cancels an event and records its outcomes; the whole event goes out on its
  broadcast jobs stream, and every node keeps the newest version it received;
* each organising province replaces its own listing of vacancies at the event, broadcast on its own stream;
* a worker registers at their home node, which sends the registration to the organiser alone (a directed message,
  delivered until acknowledged); the organiser decides (a registration submitted before the close is taken even if
  it arrives after it; capacity counts what the organiser accepted) and sends its answer back home;
* the organiser publishes anonymous counts of the registrations by home province: at once when outcomes are
  recorded, otherwise at most every ``LABORNET_JOBS_FAIRS_STATISTICS_INTERVAL_S`` while registrations come.

Receivers hold what they apply to the rules the sender's API enforces, and to who may send it: an event from
another province than its organiser, a listing from a province that does not organise the event, a registration
for an event organised elsewhere are refused (:class:`RuleViolation`, quarantined at once). A listing or statistics
of an event not known yet (or older than the one the sender acted on) is retried until the event arrives (the
organiser's own listing and statistics share their event's partition key, so they arrive after it; one the inbox
gives up on is quarantined, and the periodic rebroadcast of current events, listings and statistics
(``LABORNET_JOBS_FAIRS_REBROADCAST_INTERVAL_S``) brings it again, also to a node that missed an event). Versions
(events, listings), generations (statistics) and ids (registrations) make duplicates and replays change nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter, Gauge
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from labornet.jobs.adapters import fairs as store
from labornet.jobs.adapters.fairs import StoredFair
from labornet.jobs.adapters.tables import vacancy
from labornet.jobs.domain.fair import (
    ACTIVE_REGISTRATION,
    FAIR_EVENT_TYPES,
    LISTING,
    REGISTRATION,
    REGISTRATION_ANSWERED,
    REGISTRATION_CANCELLED,
    STATISTICS,
    Answer,
    Fair,
    FairChanges,
    FairDraft,
    FairRuleError,
    FairStatistics,
    FairStatus,
    InvalidFair,
    Listing,
    Outcomes,
    Phase,
    RegistrationAnswer,
    RegistrationCancellation,
    RegistrationDraft,
    RegistrationMessage,
    RegistrationStatus,
    _EventFields,
    answer_registration,
    cancel_fair,
    check_federation,
    check_listing_standing,
    check_registration,
    check_replicated,
    event_type_of,
    new_fair_id,
    new_listing,
    new_registration_id,
    open_fair,
    record_outcomes,
    taken_by_others,
    update_fair,
)
from labornet.shared.clock import Clock, today_in_china, utcnow
from labornet.shared.divisions import DivisionRegistry, InvalidDivision
from labornet.shared.envelope import Envelope
from labornet.shared.inbox import Handler, RuleViolation, describe
from labornet.shared.observability import set_counts
from labornet.shared.outbox import Outbox
from labornet.shared.topics import events_topic, inbox_topic

log = logging.getLogger(__name__)

FAIRS = Gauge(
    "labornet_jobs_fairs",
    "Recruitment events (job fairs, docking events) held by this node, its own and partners', by state and phase",
    ["state", "phase"],
)
REGISTRATIONS = Counter(
    "labornet_jobs_fair_registrations_total",
    "Registrations for recruitment events: sent for this node's workers (submitted, cancelled, and the organiser's "
    "answers accepted or refused) and received as the organiser (accepted, refused, cancelled, duplicate)",
    ["direction", "result"],
)
FAIR_REPLICA_CHANGES = Counter(
    "labornet_jobs_fair_replica_changes_total",
    "Partners' recruitment events, listings and registration statistics applied to this node, by result",
    ["kind", "result"],
)
SENT_RESULTS = ("submitted", "cancelled", "accepted", "refused")
RECEIVED_RESULTS = ("accepted", "refused", "cancelled", "duplicate")
REPLICA_KINDS = ("fair", "listing", "statistics")
REPLICA_RESULTS = ("inserted", "updated", "stale")


def init_metrics() -> None:
    """Every series whose labels are known at start-up, at 0."""
    for status in FairStatus:
        for phase in Phase:
            FAIRS.labels(status.value, phase.value)
    for result in SENT_RESULTS:
        REGISTRATIONS.labels("sent", result)
    for result in RECEIVED_RESULTS:
        REGISTRATIONS.labels("received", result)
    for kind in REPLICA_KINDS:
        for result in REPLICA_RESULTS:
            FAIR_REPLICA_CHANGES.labels(kind, result)


class FairSettings(BaseSettings):
    """Recruitment events, from ``LABORNET_JOBS_FAIRS_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="LABORNET_JOBS_FAIRS_", env_file=".env", extra="ignore")

    statistics_interval_s: float = Field(
        30.0, gt=0, description="at most one registration statistics snapshot per event this often while they come"
    )
    sweep_interval_s: float = Field(60.0, gt=0, description="how often the event gauges are refreshed")
    rebroadcast_interval_s: float = Field(
        3600.0, gt=0, description="how often this province's current events and listings are broadcast again"
    )
    rebroadcast_past_days: int = Field(
        30, ge=0, description="events that ended longer ago than this are no longer broadcast again"
    )


class FairNotFound(LookupError):
    """No event with this id on this node."""


class RegistrationNotFound(LookupError):
    """No registration with this id for this worker (or on this node)."""


class AlreadyRegistered(FairRuleError):
    """The worker holds an active registration for the event."""


class ConcurrentChange(FairRuleError):
    """Another transaction changed the event between reading and writing it."""


class FairService:
    def __init__(
        self,
        *,
        province: str,
        members: Collection[str],
        sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        divisions: DivisionRegistry,
        clock: Clock = utcnow,
        rebroadcast_past_days: int = 30,
    ) -> None:
        self.province = province
        self.rebroadcast_past_days = rebroadcast_past_days
        self.members = tuple(members)
        self.sessions = sessions
        self.outbox = outbox
        self.divisions = divisions
        self.clock = clock
        self.topic = events_topic(province, "jobs")

    # The organiser's event ----------------------------------------------------------------------------------

    async def create(self, draft: FairDraft) -> StoredFair:
        at = self.clock()
        errors: list[dict[str, str]] = []
        checks: list[Callable[[], None]] = [
            lambda: check_federation(draft, organiser=self.province, members=self.members),
            lambda: self._check_venue(draft),
        ]
        for check in checks:  # every field the federation's configuration refuses, not the first only
            try:
                check()
            except InvalidFair as exc:
                errors += exc.errors
        if errors:
            raise InvalidFair(errors)
        fair = open_fair(
            draft, fair_id=new_fair_id(self.province), organiser=self.province, members=self.members, at=at
        )
        async with self.sessions() as session, session.begin():
            await store.add_fair(session, fair)
            await self._broadcast(session, fair)
        return StoredFair(fair, 0, None, [])

    async def update(self, fair_id: str, changes: FairChanges, version: int | None) -> StoredFair:
        def change(fair: Fair, at: datetime) -> Fair:
            after = update_fair(fair, changes, province=self.province, members=self.members, at=at, version=version)
            self._check_venue(after)
            return after

        return await self._change(fair_id, change)

    async def cancel(self, fair_id: str, version: int | None, reason: str) -> StoredFair:
        return await self._change(
            fair_id, lambda fair, at: cancel_fair(fair, province=self.province, at=at, version=version, reason=reason)
        )

    async def record_outcomes(self, fair_id: str, outcomes: Outcomes, version: int | None) -> StoredFair:
        """Record (or correct) the outcomes and publish the registration counts with them."""
        async with self.sessions() as session, session.begin():
            stored = await self._load(session, fair_id)
            at = self.clock()
            after = record_outcomes(stored.fair, outcomes, province=self.province, at=at, version=version)
            await self._commit(session, stored.fair, after)
            statistics = await self._publish_statistics(session, after, at)
        return StoredFair(after, statistics.generation, at, [count.model_dump() for count in statistics.registrations])

    # A province's listing -----------------------------------------------------------------------------------

    async def list_vacancies(self, fair_id: str, vacancy_ids: list[str], version: int | None) -> Listing:
        """Replace this province's vacancies at the event; each must be an open vacancy of this province."""
        async with self.sessions() as session, session.begin():
            stored = await self._load(session, fair_id)
            at = self.clock()
            check_listing_standing(stored.fair, self.province, at)  # 403 / 409 before the vacancies are looked at
            await self._check_vacancies(session, vacancy_ids)
            held = await store.load_listing(session, fair_id, self.province)
            listing = new_listing(stored.fair, held, vacancy_ids, province=self.province, at=at, version=version)
            await store.store_listing(session, listing, held)
            await self.outbox.add(
                session, topic=self.topic, event_type=LISTING, key=listing.fair_id, subject=fair_id, data=listing
            )
        return listing

    async def _check_vacancies(self, session: AsyncSession, ids: list[str]) -> None:
        rows = await session.execute(
            select(vacancy.c.id, vacancy.c.owner_province, vacancy.c.status).where(vacancy.c.id.in_(ids))
        )
        found = {row.id: row for row in rows}
        errors = []
        for i, vacancy_id in enumerate(ids):
            row = found.get(vacancy_id)
            if row is None:
                message = f"no vacancy {vacancy_id} on this node"
            elif row.owner_province != self.province:
                message = f"vacancy {vacancy_id} belongs to {row.owner_province}; list vacancies of {self.province}"
            elif row.status != "open":
                message = f"vacancy {vacancy_id} is {row.status}; only open vacancies are listed"
            else:
                continue
            errors.append({"field": f"vacancy_ids.{i}", "message": message})
        if errors:
            raise InvalidFair(errors)

    # Registrations at the worker's home ---------------------------------------------------------------------

    async def register(self, fair_id: str, worker: str, draft: RegistrationDraft) -> dict[str, Any]:
        try:
            async with self.sessions() as session, session.begin():
                return await self._register(session, fair_id, worker, draft)
        except IntegrityError as exc:  # a concurrent registration of the same worker won the unique constraint
            raise AlreadyRegistered(f"you are registered for event {fair_id} already") from exc

    async def _register(
        self, session: AsyncSession, fair_id: str, worker: str, draft: RegistrationDraft
    ) -> dict[str, Any]:
        stored = await self._load(session, fair_id)
        fair = stored.fair
        held = await store.active_registration(session, fair_id, worker)
        if held is not None:
            raise AlreadyRegistered(f"you are registered for event {fair_id} already ({held})")
        at = self.clock()
        organising = fair.organiser_province == self.province
        if organising:
            taken = await store.count_accepted(session, fair_id)
        else:
            counted = taken_by_others(stored.registration_counts, self.province)
            taken = counted + await store.count_active(session, fair_id, home=self.province)
        check_registration(fair, at=at, taken=taken)
        row: dict[str, Any] = {
            "id": new_registration_id(self.province),
            "fair_id": fair_id,
            "organiser_province": fair.organiser_province,
            "home_province": self.province,
            "worker": worker,
            "active_fair": fair_id,
            "name": draft.name,
            "phone": draft.phone,
            "occupations": list(draft.occupations),
            "note": draft.note,
            "status": RegistrationStatus.ACCEPTED if organising else RegistrationStatus.SUBMITTED,
            "reason": None,
            "submitted_at": at,
            "received_at": at if organising else None,
            "answered_at": at if organising else None,
            "cancelled_at": None,
        }
        await store.add_registration(session, row)
        if organising:
            await store.mark_statistics_due(session, fair_id)
        else:
            message = RegistrationMessage.model_validate({**row, "occupations": row["occupations"]})
            await self._send(session, fair.organiser_province, REGISTRATION, message.id, message)
        REGISTRATIONS.labels("sent", "submitted").inc()
        return row

    async def cancel_registration(self, registration_id: str, worker: str) -> dict[str, Any]:
        async with self.sessions() as session, session.begin():
            row = await store.load_registration(session, registration_id)
            if row is None or row["worker"] != worker:
                raise RegistrationNotFound(f"you have no registration {registration_id}")
            if row["status"] not in ACTIVE_REGISTRATION:
                raise FairRuleError(f"registration {registration_id} is {row['status']}; there is nothing to cancel")
            stored = await self._load(session, row["fair_id"])
            at = self.clock()
            if stored.fair.ended(at):
                raise FairRuleError(f"event {stored.fair.id} ended on {stored.fair.ends_on}; its registrations stay")
            changes = {"status": RegistrationStatus.CANCELLED, "active_fair": None, "cancelled_at": at}
            await store.set_registration(session, registration_id, **changes)
            if stored.fair.organiser_province == self.province:
                await store.mark_statistics_due(session, stored.fair.id)
            else:
                cancellation = RegistrationCancellation(id=registration_id, fair_id=row["fair_id"], cancelled_at=at)
                await self._send(
                    session, stored.fair.organiser_province, REGISTRATION_CANCELLED, registration_id, cancellation
                )
            REGISTRATIONS.labels("sent", "cancelled").inc()
        return {**row, **changes}

    # What partners send ---------------------------------------------------------------------------------------

    def broadcast_handlers(self) -> dict[str, Handler]:
        return {
            **dict.fromkeys(FAIR_EVENT_TYPES, self.on_fair),
            LISTING: self.on_listing,
            STATISTICS: self.on_statistics,
        }

    def inbox_handlers(self) -> dict[str, Handler]:
        return {
            REGISTRATION: self.on_registration,
            REGISTRATION_CANCELLED: self.on_registration_cancelled,
            REGISTRATION_ANSWERED: self.on_registration_answered,
        }

    async def on_fair(self, session: AsyncSession, envelope: Envelope) -> None:
        """A partner's event, applied if newer than the copy held; only its organiser may send it."""
        try:
            fair = Fair.model_validate(envelope.json())
            check_replicated(envelope.type, fair)
            if fair.organiser_province != envelope.originprovince:
                raise ValueError(
                    f"{envelope.originprovince} sent event {fair.id} organised by {fair.organiser_province}"
                )
            if fair.id != envelope.partitionkey:
                raise ValueError(f"event key {envelope.partitionkey} differs from event {fair.id}")
            self._check_venue(fair)
        except (ValueError, InvalidFair) as exc:
            raise RuleViolation(f"recruitment event {envelope.id} breaks the rules: {describe(exc)}") from exc
        held = await store.load_fair(session, fair.id, for_update=True)
        result = await store.apply_fair(session, fair, held.fair if held else None)
        FAIR_REPLICA_CHANGES.labels("fair", result).inc()

    async def on_listing(self, session: AsyncSession, envelope: Envelope) -> None:
        """An organising province's vacancies at an event; only that province may send its own listing."""
        try:
            listing = Listing.model_validate(envelope.json())
            if listing.province != envelope.originprovince:
                raise ValueError(f"{envelope.originprovince} sent the listing of {listing.province}")
            if listing.fair_id != envelope.partitionkey:
                raise ValueError(f"listing key {envelope.partitionkey} differs from its event {listing.fair_id}")
        except ValueError as exc:
            raise RuleViolation(f"event listing {envelope.id} breaks the rules: {describe(exc)}") from exc
        stored = await store.load_fair(session, listing.fair_id)
        if stored is None or stored.fair.version < listing.fair_version:
            # the event (or the version naming this co-organiser) travels on the organiser's stream: wait for it
            held = stored.fair.version if stored else "none"
            raise LookupError(
                f"listing of {listing.province} acts on event {listing.fair_id} version {listing.fair_version}; "
                f"this node holds {held}: retried until it arrives"
            )
        if listing.province not in stored.fair.provinces:
            raise RuleViolation(
                f"province {listing.province} does not organise event {listing.fair_id} "
                f"(organisers: {', '.join(stored.fair.provinces)}); its listing is refused"
            )
        held_listing = await store.load_listing(session, listing.fair_id, listing.province)
        FAIR_REPLICA_CHANGES.labels("listing", await store.store_listing(session, listing, held_listing)).inc()

    async def on_statistics(self, session: AsyncSession, envelope: Envelope) -> None:
        try:
            statistics = FairStatistics.model_validate(envelope.json())
            if statistics.organiser_province != envelope.originprovince:
                raise ValueError(f"{envelope.originprovince} sent statistics of {statistics.organiser_province}")
        except ValueError as exc:
            raise RuleViolation(f"event statistics {envelope.id} break the rules: {describe(exc)}") from exc
        stored = await store.load_fair(session, statistics.fair_id, for_update=True)
        if stored is None:
            raise LookupError(f"statistics of event {statistics.fair_id}, not known here yet: retried until it is")
        if stored.fair.organiser_province != statistics.organiser_province:
            raise RuleViolation(
                f"event {statistics.fair_id} is organised by {stored.fair.organiser_province}, "
                f"not {statistics.organiser_province}"
            )
        if statistics.generation <= stored.statistics_generation:
            FAIR_REPLICA_CHANGES.labels("statistics", "stale").inc()
            return
        await store.store_statistics(session, statistics)
        FAIR_REPLICA_CHANGES.labels("statistics", "updated").inc()

    async def on_registration(self, session: AsyncSession, envelope: Envelope) -> None:
        """A registration for one of this province's events: accepted or refused, the answer sent home."""
        try:
            message = RegistrationMessage.model_validate(envelope.json())
            if message.home_province != envelope.originprovince:
                raise ValueError(f"{envelope.originprovince} sent a registration made in {message.home_province}")
            if message.organiser_province != self.province:
                raise ValueError(f"a registration for an event of {message.organiser_province} reached {self.province}")
            if message.id != envelope.partitionkey:
                raise ValueError(f"message key {envelope.partitionkey} differs from registration {message.id}")
        except ValueError as exc:
            raise RuleViolation(f"registration {envelope.id} breaks the rules: {describe(exc)}") from exc
        stored = await store.load_fair(session, message.fair_id, for_update=True)
        if stored is None or stored.fair.organiser_province != self.province:
            raise RuleViolation(f"registration {message.id} names event {message.fair_id}, not organised here")
        if await store.load_registration(session, message.id) is not None:
            REGISTRATIONS.labels("received", "duplicate").inc()
            return
        at = self.clock()
        refusal = answer_registration(
            stored.fair, message, accepted=await store.count_accepted(session, message.fair_id)
        )
        status = RegistrationStatus.REFUSED if refusal else RegistrationStatus.ACCEPTED
        await store.add_registration(
            session,
            {
                **message.model_dump(),
                "worker": None,
                "active_fair": None if refusal else message.fair_id,
                "status": status,
                "reason": refusal.value if refusal else None,
                "received_at": at,
                "answered_at": at,
                "cancelled_at": None,
            },
        )
        answer = RegistrationAnswer(
            id=message.id,
            fair_id=message.fair_id,
            result=Answer.REFUSED if refusal else Answer.ACCEPTED,
            reason=refusal,
            answered_at=at,
        )
        await self._send(session, message.home_province, REGISTRATION_ANSWERED, message.id, answer)
        await store.mark_statistics_due(session, message.fair_id)
        REGISTRATIONS.labels("received", status.value).inc()

    async def on_registration_cancelled(self, session: AsyncSession, envelope: Envelope) -> None:
        try:
            cancellation = RegistrationCancellation.model_validate(envelope.json())
        except ValueError as exc:
            raise RuleViolation(f"registration cancellation {envelope.id} breaks the rules: {describe(exc)}") from exc
        row = await store.load_registration(session, cancellation.id)
        if row is None:
            raise LookupError(f"cancellation of registration {cancellation.id}, not received yet: retried")
        if row["home_province"] != envelope.originprovince or row["fair_id"] != cancellation.fair_id:
            raise RuleViolation(
                f"{envelope.originprovince} cancels registration {cancellation.id} made in {row['home_province']} "
                f"for event {row['fair_id']}"
            )
        if row["status"] != RegistrationStatus.ACCEPTED:
            REGISTRATIONS.labels("received", "duplicate").inc()
            return
        await store.set_registration(
            session,
            cancellation.id,
            status=RegistrationStatus.CANCELLED,
            active_fair=None,
            cancelled_at=cancellation.cancelled_at,
        )
        await store.mark_statistics_due(session, cancellation.fair_id)
        REGISTRATIONS.labels("received", "cancelled").inc()

    async def on_registration_answered(self, session: AsyncSession, envelope: Envelope) -> None:
        """The organiser's answer to one of this node's workers' registrations."""
        try:
            answer = RegistrationAnswer.model_validate(envelope.json())
        except ValueError as exc:
            raise RuleViolation(f"registration answer {envelope.id} breaks the rules: {describe(exc)}") from exc
        row = await store.load_registration(session, answer.id)
        if row is None or row["home_province"] != self.province:
            raise RuleViolation(f"answer to registration {answer.id}, which was not made here")
        if row["organiser_province"] != envelope.originprovince or row["fair_id"] != answer.fair_id:
            raise RuleViolation(
                f"{envelope.originprovince} answers registration {answer.id} for event {row['fair_id']} "
                f"organised by {row['organiser_province']}"
            )
        if row["status"] != RegistrationStatus.SUBMITTED:
            return  # answered already, or cancelled by the worker meanwhile (the cancellation is on its way)
        refused = answer.result == Answer.REFUSED
        await store.set_registration(
            session,
            answer.id,
            status=RegistrationStatus.REFUSED if refused else RegistrationStatus.ACCEPTED,
            reason=answer.reason.value if answer.reason else None,
            answered_at=answer.answered_at,
            active_fair=None if refused else row["active_fair"],
        )
        REGISTRATIONS.labels("sent", answer.result.value).inc()

    # Background work ------------------------------------------------------------------------------------------

    async def publish_due_statistics(self) -> int:
        """Publish the registration counts of this province's events that changed since they were last published."""
        async with self.sessions() as session:
            due = await store.statistics_due(session, self.province)
        for fair_id in due:
            async with self.sessions() as session, session.begin():
                stored = await store.load_fair(session, fair_id, for_update=True)
                if stored is not None:
                    await self._publish_statistics(session, stored.fair, self.clock())
        return len(due)

    async def rebroadcast(self) -> int:
        """Broadcast again this province's events and listings that are current or recently ended, as held (the
        same versions and generation: a partner that has them changes nothing, one that missed them catches up)."""
        at = self.clock()
        since = today_in_china(at) - timedelta(days=self.rebroadcast_past_days)
        async with self.sessions() as session, session.begin():
            fairs = await store.fairs_to_rebroadcast(session, self.province, since)
            for stored in fairs:
                await self._broadcast(session, stored.fair)
                if stored.statistics_generation > 0 and stored.statistics_as_of is not None:
                    statistics = FairStatistics.model_validate(
                        {
                            "fair_id": stored.fair.id,
                            "organiser_province": self.province,
                            "generation": stored.statistics_generation,
                            "as_of": stored.statistics_as_of,
                            "registrations": stored.registration_counts,
                        }
                    )
                    await self.outbox.add(
                        session,
                        topic=self.topic,
                        event_type=STATISTICS,
                        key=stored.fair.id,
                        subject=stored.fair.id,
                        data=statistics,
                    )
            listings = await store.own_listings_to_rebroadcast(session, self.province, since)
            for listing in listings:
                await self.outbox.add(
                    session,
                    topic=self.topic,
                    event_type=LISTING,
                    key=listing.fair_id,
                    subject=listing.fair_id,
                    data=listing,
                )
        return len(fairs) + len(listings)

    async def refresh_gauges(self) -> None:
        async with self.sessions() as session:
            counts = await store.fair_counts(session, today_in_china(self.clock()))
        set_counts(FAIRS, {(s.value, p.value): counts.get((s.value, p.value), 0) for s in FairStatus for p in Phase})

    # Internals ------------------------------------------------------------------------------------------------

    def _check_venue(self, fields: _EventFields | Fair) -> None:
        organiser = fields.organiser_province if isinstance(fields, Fair) else self.province
        if fields.venue is None:
            return
        try:
            self.divisions.resolve(organiser, fields.venue.division_code)
        except InvalidDivision as exc:
            raise InvalidFair([{"field": "venue.division_code", "message": str(exc)}]) from exc

    async def _load(self, session: AsyncSession, fair_id: str) -> StoredFair:
        stored = await store.load_fair(session, fair_id, for_update=True)
        if stored is None:
            raise FairNotFound(f"no recruitment event {fair_id} on this node")
        return stored

    async def _change(self, fair_id: str, transition: Callable[[Fair, datetime], Fair]) -> StoredFair:
        async with self.sessions() as session, session.begin():
            stored = await self._load(session, fair_id)
            after = transition(stored.fair, self.clock())
            await self._commit(session, stored.fair, after)
        return StoredFair(after, stored.statistics_generation, stored.statistics_as_of, stored.registration_counts)

    async def _commit(self, session: AsyncSession, before: Fair, after: Fair) -> None:
        if not await store.replace_fair(session, before, after):
            raise ConcurrentChange(f"event {after.id} was changed meanwhile; reload it and try again")
        await self._broadcast(session, after)

    async def _broadcast(self, session: AsyncSession, fair: Fair) -> None:
        await self.outbox.add(
            session, topic=self.topic, event_type=event_type_of(fair), key=fair.id, subject=fair.id, data=fair
        )

    async def _publish_statistics(self, session: AsyncSession, fair: Fair, at: datetime) -> FairStatistics:
        """Count the registrations of one of this province's events and broadcast the counts (the caller holds
        the event's row lock: generations never go backwards)."""
        held = await store.load_fair(session, fair.id, for_update=True)
        generation = (held.statistics_generation if held else 0) + 1
        statistics = FairStatistics(
            fair_id=fair.id,
            organiser_province=self.province,
            generation=generation,
            as_of=at,
            registrations=await store.count_registrations(session, fair.id),
        )
        await store.store_statistics(session, statistics)
        await self.outbox.add(
            session, topic=self.topic, event_type=STATISTICS, key=fair.id, subject=fair.id, data=statistics
        )
        return statistics

    async def _send(self, session: AsyncSession, to: str, event_type: str, key: str, data: BaseModel) -> None:
        await self.outbox.add(
            session,
            topic=inbox_topic(to, "jobs"),
            destination=to,
            event_type=event_type,
            key=key,
            subject=key,
            data=data,
        )


async def every(interval_s: Callable[[], float], work: Callable[[], Any], what: str) -> None:
    """Run ``work`` now and then every ``interval_s()`` seconds; a failure is logged and retried next time."""
    while True:
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; retrying at the next interval", what)
        with contextlib.suppress(TimeoutError):
            await asyncio.sleep(interval_s())

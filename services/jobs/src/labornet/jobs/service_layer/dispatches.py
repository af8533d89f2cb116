"""Use cases of organised dispatch and the handlers of the messages between origin and destination.

Each step is one transaction on the node taking it: the dispatch as changed and the message carrying it whole to
the other province (through the outbox, to that province's jobs inbox, delivered until acknowledged) commit
together. A received dispatch is applied by the rules of :mod:`labornet.jobs.domain.dispatch`: the plan only from
the origin and only when newer, the arrival only from the destination and only once; so duplicates, replays and
reordered deliveries change nothing, and a message from a province without standing is refused (quarantined).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import date, datetime

from prometheus_client import Counter, Gauge
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from labornet.jobs.adapters import dispatches
from labornet.jobs.adapters.dispatches import StoredDispatch
from labornet.jobs.domain.dispatch import (
    ARRIVAL_CONFIRMED,
    MESSAGE_MODELS,
    MESSAGE_TYPES,
    PLAN_MESSAGE_TYPES,
    ConfirmationLimit,
    Dispatch,
    DispatchChanges,
    DispatchDraft,
    DispatchRole,
    DispatchRuleError,
    InvalidDispatch,
    MessageRefused,
    announce,
    cancel,
    confirm_arrival,
    fair_organiser,
    message_type,
    new_dispatch_id,
    receive_arrival,
    receive_plan,
    update,
)
from labornet.shared.clock import Clock, today_in_china, utcnow
from labornet.shared.db import on_commit
from labornet.shared.envelope import Envelope
from labornet.shared.inbox import Handler, RuleViolation
from labornet.shared.outbox import Outbox
from labornet.shared.topics import inbox_topic
from labornet.shared.workdays import Calendars

log = logging.getLogger(__name__)

MESSAGE_RESULTS = ("applied", "stale", "refused")

AWAITING = Gauge(
    "labornet_jobs_dispatches_awaiting_confirmation",
    "Organised dispatches whose arrival is not confirmed yet, by this province's role (sent, received) and whether "
    "the confirmation is overdue (yes, no)",
    ["role", "overdue"],
)
WORKERS_SENT = Counter(
    "labornet_jobs_dispatch_workers_sent_total",
    "Workers this province sent on organised dispatches whose arrival was confirmed, by destination province "
    "(counted when the confirmation reaches the origin)",
    ["destination_province"],
)
WORKERS_RECEIVED = Counter(
    "labornet_jobs_dispatch_workers_received_total",
    "Workers this province confirmed as arrived on organised dispatches, by origin province",
    ["origin_province"],
)
MESSAGES = Counter(
    "labornet_jobs_dispatch_messages_total",
    "Dispatch messages received from partner provinces, by type and result (applied, stale, refused)",
    ["type", "result"],
)


def init_metrics(province: str, members: Sequence[str]) -> None:
    """Every series whose labels are known at start-up exists at 0 from then on."""
    for role in DispatchRole:
        for late in ("yes", "no"):
            AWAITING.labels(role.value, late)
    for code in members:
        if code != province:
            WORKERS_SENT.labels(code)
            WORKERS_RECEIVED.labels(code)
    for message_type_ in MESSAGE_TYPES:
        for result in MESSAGE_RESULTS:
            MESSAGES.labels(message_type_, result)


class DispatchSettings(BaseSettings):
    """Settings of organised dispatch, from ``LABORNET_JOBS_DISPATCH_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="LABORNET_JOBS_DISPATCH_", env_file=".env", extra="ignore")

    confirmation_limit_days: int = Field(
        2,
        ge=0,
        le=60,
        description="working days after the expected arrival date (on the destination's calendar) within which "
        "the destination confirms the arrival; later, the dispatch shows as overdue on both sides",
    )
    sweep_interval_s: float = Field(15.0, gt=0, description="how often the dispatch gauges are refreshed")

    def limit(self, calendars: Calendars) -> ConfirmationLimit:
        return ConfirmationLimit(calendars=calendars, days=self.confirmation_limit_days)


class DispatchNotFound(LookupError):
    """No dispatch with this id on this node."""


class ConcurrentChange(DispatchRuleError):
    """Another transaction changed the dispatch between reading and writing it."""


class DispatchService:
    def __init__(
        self,
        *,
        province: str,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        limit: ConfirmationLimit,
        clock: Clock = utcnow,
    ) -> None:
        self.province = province
        self.sessions = sessions
        self.outbox = outbox
        self.limit = limit
        self.clock = clock

    def today(self) -> date:
        return today_in_china(self.clock())

    # Steps ----------------------------------------------------------------------------------------------------

    async def announce(self, draft: DispatchDraft) -> StoredDispatch:
        """Record a dispatch of this province (the origin) and tell the destination."""
        at = self.clock()
        dispatch = announce(
            draft, dispatch_id=new_dispatch_id(self.province), origin=self.province, at=at, limit=self.limit
        )
        async with self.sessions() as session, session.begin():
            if dispatch.fair_id is not None:
                await self._check_fair(session, dispatch)
            await dispatches.add(session, dispatch, at=at)
            await self._send(session, dispatch)
        return StoredDispatch(dispatch, at)

    async def update(self, dispatch_id: str, changes: DispatchChanges, expected_version: int | None) -> StoredDispatch:
        return await self._change(
            dispatch_id,
            lambda dispatch, at: update(
                dispatch,
                changes,
                province=self.province,
                expected_version=expected_version,
                at=at,
                limit=self.limit,
            ),
        )

    async def cancel(self, dispatch_id: str, reason: str, expected_version: int | None) -> StoredDispatch:
        return await self._change(
            dispatch_id,
            lambda dispatch, at: cancel(
                dispatch, province=self.province, expected_version=expected_version, reason=reason, at=at
            ),
        )

    async def confirm_arrival(
        self,
        dispatch_id: str,
        *,
        arrived_at: datetime,
        headcount_received: int,
        note: str | None,
        expected_version: int | None,
    ) -> StoredDispatch:
        return await self._change(
            dispatch_id,
            lambda dispatch, at: confirm_arrival(
                dispatch,
                province=self.province,
                expected_version=expected_version,
                arrived_at=arrived_at,
                headcount_received=headcount_received,
                note=note,
                at=at,
            ),
        )

    # Messages from the other province -------------------------------------------------------------------------

    def handlers(self) -> dict[str, Handler]:
        return {**dict.fromkeys(PLAN_MESSAGE_TYPES, self.on_plan), ARRIVAL_CONFIRMED: self.on_arrival}

    async def on_plan(self, session: AsyncSession, envelope: Envelope) -> None:
        """The origin recorded, changed or cancelled a dispatch to this province."""
        await self._receive(session, envelope, receive_plan)

    async def on_arrival(self, session: AsyncSession, envelope: Envelope) -> None:
        """The destination confirmed the arrival of a dispatch this province sent."""
        await self._receive(session, envelope, receive_arrival)

    async def _receive(
        self,
        session: AsyncSession,
        envelope: Envelope,
        merge: Callable[..., Dispatch | None],
    ) -> None:
        try:
            incoming = MESSAGE_MODELS[envelope.type].model_validate(envelope.json())
            if incoming.id != envelope.partitionkey:
                raise MessageRefused(f"message key {envelope.partitionkey} differs from dispatch {incoming.id}")
            held = await dispatches.load(session, incoming.id, for_update=True)
            after = merge(
                held.dispatch if held else None, incoming, sender=envelope.originprovince, receiver=self.province
            )
        except (ValidationError, MessageRefused) as exc:
            MESSAGES.labels(envelope.type, "refused").inc()
            raise RuleViolation(f"{envelope.type} from {envelope.originprovince}: {exc}") from exc
        if after is None:
            MESSAGES.labels(envelope.type, "stale").inc()
            return
        at = self.clock()
        if held is None:
            await dispatches.add(session, after, at=at)
        elif not await dispatches.replace(session, held.dispatch, after, at=at):
            raise ConcurrentChange(f"dispatch {after.id} changed while a message was applied; retried")
        if after.arrival is not None and (held is None or held.dispatch.arrival is None):
            self._count_workers(session, after)
        on_commit(session, lambda: MESSAGES.labels(envelope.type, "applied").inc())

    # Internals ------------------------------------------------------------------------------------------------

    async def _check_fair(self, session: AsyncSession, dispatch: Dispatch) -> None:
        """A linked recruitment event that this node knows must have the origin or the destination among its
        organisers; one it does not know yet (not replicated here yet) is taken by the id's format alone."""
        assert dispatch.fair_id is not None
        parties = await dispatches.fair_parties(session, dispatch.fair_id)
        if parties is not None and not parties & {dispatch.origin_province, dispatch.destination_province}:
            organisers = ", ".join(sorted(parties))
            raise InvalidDispatch(
                "fair_id",
                f"recruitment event {dispatch.fair_id} is organised by {organisers}; neither the origin "
                f"{dispatch.origin_province} nor the destination {dispatch.destination_province} takes part",
            )
        if parties is None:
            log.info(
                "dispatch %s links recruitment event %s (organiser %s), not known on this node yet",
                dispatch.id,
                dispatch.fair_id,
                fair_organiser(dispatch.fair_id),
            )

    async def _load(self, session: AsyncSession, dispatch_id: str) -> StoredDispatch:
        held = await dispatches.load(session, dispatch_id, for_update=True)
        if held is None:
            raise DispatchNotFound(f"no dispatch {dispatch_id} on this node")
        return held

    async def _change(self, dispatch_id: str, step: Callable[[Dispatch, datetime], Dispatch]) -> StoredDispatch:
        async with self.sessions() as session, session.begin():
            held = await self._load(session, dispatch_id)
            at = self.clock()
            after = step(held.dispatch, at)
            if not await dispatches.replace(session, held.dispatch, after, at=at):
                raise ConcurrentChange(f"dispatch {dispatch_id} was changed meanwhile; read it again and retry")
            await self._send(session, after)
            if after.arrival is not None:
                self._count_workers(session, after)
        return StoredDispatch(after, at)

    def _count_workers(self, session: AsyncSession, dispatch: Dispatch) -> None:
        """Count a confirmed arrival once, on each side, when it commits."""
        assert dispatch.arrival is not None
        if self.province == dispatch.origin_province:
            counter, workers = WORKERS_SENT.labels(dispatch.destination_province), dispatch.headcount
        else:
            counter, workers = WORKERS_RECEIVED.labels(dispatch.origin_province), dispatch.arrival.headcount_received
        on_commit(session, lambda: counter.inc(workers))

    async def _send(self, session: AsyncSession, dispatch: Dispatch) -> None:
        """The whole dispatch to the other province, and to nobody else."""
        to = dispatch.destination_province if self.province == dispatch.origin_province else dispatch.origin_province
        await self.outbox.add(
            session,
            topic=inbox_topic(to, "jobs"),
            destination=to,
            event_type=message_type(dispatch, by=self.province),
            key=dispatch.id,
            subject=dispatch.id,
            data=dispatch,
        )

    # Gauges ---------------------------------------------------------------------------------------------------

    async def refresh_gauges(self, session: AsyncSession) -> None:
        counts = await dispatches.awaiting_confirmation(session, self.province, self.today())
        for role in DispatchRole:
            for late in (True, False):
                AWAITING.labels(role.value, "yes" if late else "no").set(counts.get((role.value, late), 0))


async def sweep(service: DispatchService, read_sessions: async_sessionmaker[AsyncSession], interval_s: float) -> None:
    """Refresh the dispatch gauges now and then (overdue confirmations appear as the days pass)."""
    while True:
        try:
            async with read_sessions() as session:
                await service.refresh_gauges(session)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("dispatch gauges could not be refreshed; retrying at the next interval")
        with contextlib.suppress(TimeoutError):
            await asyncio.sleep(interval_s)

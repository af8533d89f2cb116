"""Use cases of applications and the handlers of the directed messages between home and owner province.

Each change is one transaction on the node that makes it: the new version of the application and its new
timeline entries, the message carrying the whole application to the other province (through the outbox, to that
province's jobs inbox) and, for a hire, the vacancy's new hired count with its broadcast event and the placement
record commit together.

A received application is applied only if it is newer than the version held *and* comes from the province with
standing for that version (version 1 from the home province, every later one from the owner); older or equal
versions change nothing, so duplicates, replays and reordered deliveries are harmless, and a message from, or to,
a province that is neither home nor owner is a :class:`~labornet.shared.inbox.RuleViolation` (quarantined at once).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Gauge
from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from labornet.jobs.adapters import applications as repository
from labornet.jobs.adapters.applications import StoredApplication
from labornet.jobs.adapters.tables import vacancy
from labornet.jobs.domain.application import (
    APPLICANT,
    CHANGED,
    SUBMITTED,
    WITHDRAWAL_REQUESTED,
    Application,
    ApplicationRuleError,
    ApplicationState,
    EntryKind,
    Interview,
    NoStanding,
    Offer,
    Profile,
    VacancyNotOpen,
    WithdrawalRequest,
    check_open,
    check_sender,
    hire,
    invite,
    make_offer,
    new_application_id,
    not_selected,
    shortlist,
    submit,
    withdraw,
)
from labornet.jobs.service_layer.placements import record_hire
from labornet.jobs.service_layer.vacancies import VacancyService
from labornet.shared.clock import Clock, today_in_china, utcnow
from labornet.shared.envelope import Envelope
from labornet.shared.inbox import Handler, RuleViolation, describe
from labornet.shared.observability import set_counts
from labornet.shared.outbox import Outbox
from labornet.shared.topics import inbox_topic

log = logging.getLogger(__name__)

APPLICATIONS = Gauge(
    "labornet_jobs_applications",
    "Applications held by this node, by role (sent: made by this province's workers; received: to this province's "
    "vacancies) and state",
    ["role", "state"],
)
CHANGES = Counter(
    "labornet_jobs_application_changes_total",
    "Changes this node made to applications, by kind (submitted, shortlisted, interview, offer, hired, "
    "not-selected, withdrawn)",
    ["kind"],
)
MESSAGES = Counter(
    "labornet_jobs_application_messages_total",
    "Application messages received from partner provinces, by type and result (applied, stale, ignored)",
    ["type", "result"],
)
MESSAGE_RESULTS = ("applied", "stale", "ignored")
SYSTEM = "labornet"  # the actor of an automatic answer (an application arriving for a vacancy that closed)


def init_metrics() -> None:
    """Every series whose labels are known at start-up exists at 0 from then on."""
    for kind in EntryKind:
        CHANGES.labels(kind.value)
    for message_type in (SUBMITTED, CHANGED, WITHDRAWAL_REQUESTED):
        for result in MESSAGE_RESULTS:
            MESSAGES.labels(message_type, result)
    for role in ("sent", "received"):
        for state in ApplicationState:
            APPLICATIONS.labels(role, state.value)


class ApplicationNotFound(LookupError):
    """No application with this id on this node."""


class VacancyNotFound(LookupError):
    """No vacancy with this id in this node's replica."""


class AlreadyApplied(ApplicationRuleError):
    """The worker has an application to this vacancy that has not ended (or ended hired)."""

    def __init__(self, message: str, application_id: str) -> None:
        super().__init__(message)
        self.application_id = application_id


class VersionRequired(ApplicationRuleError):
    """An officer's step that does not say which version of the application it applies to."""


class ConcurrentChange(ApplicationRuleError):
    """Another transaction changed the application (or its vacancy) between reading and writing it."""


class ApplicationService:
    def __init__(
        self,
        *,
        province: str,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        vacancies: VacancyService,
        clock: Clock = utcnow,
    ) -> None:
        self.province = province
        self.sessions = sessions
        self.outbox = outbox
        self.vacancies = vacancies
        self.clock = clock

    # Applying (at the worker's home) ------------------------------------------------------------------------------

    async def apply(self, vacancy_id: str, profile: Profile, *, worker: str) -> StoredApplication:
        """The worker applies to a vacancy of the replica; the application goes to the owner province."""
        at = self.clock()
        try:
            async with self.sessions() as session, session.begin():
                found = (await session.execute(select(vacancy).where(vacancy.c.id == vacancy_id))).mappings().first()
                if found is None:
                    raise VacancyNotFound(f"no vacancy {vacancy_id} on this node")
                check_open(found, vacancy_id, today_in_china(at))
                earlier = await repository.unended(session, worker, vacancy_id)
                if earlier is not None:
                    raise await self._already(session, earlier, vacancy_id)
                application = submit(
                    profile, application_id=new_application_id(self.province), home=self.province, vacancy=found, at=at
                )
                await repository.add(session, application, worker=worker, at=at)
                stored = StoredApplication(application, worker, withdrawal_requested_at=None, updated_at=at)
                if application.owner_province != self.province:
                    await self._send(session, application.owner_province, SUBMITTED, application.id, application)
                CHANGES.labels(EntryKind.SUBMITTED.value).inc()
        except IntegrityError as exc:  # the same worker applied to the same vacancy at the same moment
            async with self.sessions() as session:
                earlier = await repository.unended(session, worker, vacancy_id)
            if earlier is None:
                raise
            raise await self._already(None, earlier, vacancy_id) from exc
        return stored

    async def _already(self, session: AsyncSession | None, earlier: str, vacancy_id: str) -> AlreadyApplied:
        if session is None:
            async with self.sessions() as reading:
                held = await repository.load(reading, earlier)
        else:
            held = await repository.load(session, earlier)
        state = held.application.state if held is not None else "open"
        return AlreadyApplied(
            f"you applied to vacancy {vacancy_id} already: application {earlier} is {state}; a new application is "
            "possible once it ends without a hire (withdraw it first)",
            earlier,
        )

    async def withdraw(self, application_id: str, *, note: str | None) -> StoredApplication:
        """The applicant withdraws (at home). Withdrawn at once when this province owns the vacancy; otherwise the
        owner is asked, and ``withdrawal_requested_at`` shows the request until the owner's answer arrives."""
        async with self.sessions() as session, session.begin():
            stored = await self._load(session, application_id)
            application = stored.application
            if application.home_province != self.province:
                raise NoStanding(
                    f"application {application_id} was made in {application.home_province}; withdraw it there"
                )
            if application.final:
                raise ApplicationRuleError(
                    f"application {application_id} is {application.state}; it cannot be withdrawn"
                )
            at = self.clock()
            if application.owner_province == self.province:
                after = withdraw(
                    application, province=self.province, actor=APPLICANT, at=at, expected_version=None, note=note
                )
                return await self._commit(session, stored, after, at)
            if stored.withdrawal_requested_at is not None:
                return stored  # asked already; the owner's answer is on its way
            await repository.set_withdrawal_requested(session, application_id, at)
            request = WithdrawalRequest(
                application_id=application_id,
                vacancy_id=application.vacancy.id,
                version=application.version,
                requested_at=at,
                note=note,
            )
            await self._send(session, application.owner_province, WITHDRAWAL_REQUESTED, application_id, request)
            return StoredApplication(application, stored.worker, at, stored.updated_at)

    # Steps of the owner province -------------------------------------------------------------------------------------

    async def shortlist(
        self, application_id: str, *, actor: str, version: int | None, note: str | None
    ) -> StoredApplication:
        return await self._change(
            application_id,
            version,
            lambda a, at: shortlist(a, province=self.province, actor=actor, at=at, expected_version=version, note=note),
        )

    async def invite(
        self, application_id: str, *, actor: str, version: int | None, interview: Interview, note: str | None
    ) -> StoredApplication:
        return await self._change(
            application_id,
            version,
            lambda a, at: invite(
                a, province=self.province, actor=actor, at=at, expected_version=version, interview=interview, note=note
            ),
        )

    async def offer(
        self, application_id: str, *, actor: str, version: int | None, offer: Offer, note: str | None
    ) -> StoredApplication:
        return await self._change(
            application_id,
            version,
            lambda a, at: make_offer(
                a, province=self.province, actor=actor, at=at, expected_version=version, offer=offer, note=note
            ),
        )

    async def not_selected(
        self, application_id: str, *, actor: str, version: int | None, reason: str
    ) -> StoredApplication:
        return await self._change(
            application_id,
            version,
            lambda a, at: not_selected(
                a, province=self.province, actor=actor, at=at, expected_version=version, reason=reason
            ),
        )

    async def withdrawn(
        self, application_id: str, *, actor: str, version: int | None, note: str | None
    ) -> StoredApplication:
        """The applicant told an officer of the owner province (by phone, in person) that they withdraw."""
        return await self._change(
            application_id,
            version,
            lambda a, at: withdraw(a, province=self.province, actor=actor, at=at, expected_version=version, note=note),
        )

    async def hire(
        self, application_id: str, *, actor: str, version: int | None, note: str | None
    ) -> StoredApplication:
        """The applicant accepted the offer: in one transaction the application is hired, the vacancy's hired count
        rises (a new version, broadcast; filled when it reaches the headcount), the application goes home and the
        placement is recorded."""
        _required(version)
        async with self.sessions() as session, session.begin():
            stored = await self._load(session, application_id)
            application = stored.application
            found = (
                (await session.execute(select(vacancy).where(vacancy.c.id == application.vacancy.id)))
                .mappings()
                .first()
            )
            if found is None and application.owner_province == self.province:
                raise VacancyNotOpen(f"vacancy {application.vacancy.id} is no longer held here; it takes no hire")
            at = self.clock()
            after = hire(
                application,
                province=self.province,
                actor=actor,
                at=at,
                expected_version=version,
                vacancy=found or {},
                note=note,
            )
            try:
                await self.vacancies.record_hire(session, application.vacancy.id)
            except ValueError as exc:  # VacancyRuleError: the vacancy changed meanwhile
                raise ConcurrentChange(str(exc)) from exc
            result = await self._commit(session, stored, after, at)
            await self._record_placement(session, after)
            return result

    async def answer_ended_vacancies(self, batch: int = 100) -> int:
        """End the open applications to this province's vacancies that filled or were withdrawn (not selected,
        reason "vacancy closed"), so their applicants learn it; return how many. Run by the sweep: it covers every
        way a vacancy ends (the last hire, an officer's close, a repair of the replica)."""
        at = self.clock()
        async with self.sessions() as session, session.begin():
            ended = await repository.open_at_ended_vacancies(session, self.province, batch)
            for application_id, status in ended:
                stored = await self._load(session, application_id)
                vacancy_id = stored.application.vacancy.id
                answer = not_selected(
                    stored.application,
                    province=self.province,
                    actor=SYSTEM,
                    at=at,
                    expected_version=None,
                    reason=f"vacancy closed: vacancy {vacancy_id} is {status}; it takes no more hires",
                )
                await self._commit(session, stored, answer, at)
        if ended:
            log.info("answered %d open applications whose vacancy ended", len(ended))
        return len(ended)

    # Messages from the other province ------------------------------------------------------------------------------

    def handlers(self) -> dict[str, Handler]:
        return {
            SUBMITTED: self.on_application,
            CHANGED: self.on_application,
            WITHDRAWAL_REQUESTED: self.on_withdrawal_request,
        }

    async def on_application(self, session: AsyncSession, envelope: Envelope) -> None:
        """An application submitted by its home province (at the owner) or changed by its owner (at home)."""
        try:
            incoming = Application.model_validate(envelope.json())
            if incoming.id != envelope.partitionkey:
                raise ValueError(f"message key {envelope.partitionkey} differs from application {incoming.id}")
            if (envelope.type == SUBMITTED) != (incoming.version == 1):
                raise ValueError(f"a {envelope.type} message cannot carry version {incoming.version}")
            check_sender(incoming, envelope.originprovince, self.province, None)
        except (ValidationError, ValueError, NoStanding) as exc:
            raise RuleViolation(f"application message {envelope.id}: {describe(exc)}") from exc
        stored = await repository.load(session, incoming.id, for_update=True)
        if stored is not None and incoming.version <= stored.application.version:
            MESSAGES.labels(envelope.type, "stale").inc()
            return
        if stored is None and incoming.version > 1:
            raise RuleViolation(
                f"application {incoming.id} version {incoming.version} is unknown here: it was not made here"
            )
        try:
            check_sender(incoming, envelope.originprovince, self.province, stored.application if stored else None)
        except NoStanding as exc:
            raise RuleViolation(f"application message {envelope.id}: {exc}") from exc
        at = self.clock()
        if stored is None:
            await self._receive(session, incoming, at)
        else:
            await self._apply_change(session, stored, incoming, at)
        MESSAGES.labels(envelope.type, "applied").inc()

    async def _receive(self, session: AsyncSession, incoming: Application, at: datetime) -> None:
        """A new application at the owner: kept, or answered at once when its vacancy closed meanwhile."""
        await repository.add(session, incoming, worker=None, at=at)
        stored = StoredApplication(incoming, None, None, at)
        found = (await session.execute(select(vacancy).where(vacancy.c.id == incoming.vacancy.id))).mappings().first()
        try:
            if found is None or found["owner_province"] != self.province:
                raise VacancyNotOpen(f"vacancy {incoming.vacancy.id} is not held by province {self.province}")
            check_open(found, incoming.vacancy.id, today_in_china(at))
        except VacancyNotOpen as exc:
            answer = not_selected(
                incoming,
                province=self.province,
                actor=SYSTEM,
                at=at,
                expected_version=None,
                reason=f"vacancy closed: {exc}",
            )
            await self._commit(session, stored, answer, at)

    async def _apply_change(
        self, session: AsyncSession, stored: StoredApplication, incoming: Application, at: datetime
    ) -> None:
        """A newer version from the owner, at home: stored, the worker told, a hire recorded as a placement."""
        bookkeeping: dict[str, Any] = {"withdrawal_requested_at": None} if incoming.final else {}
        if not await repository.replace(session, stored.application, incoming, at=at, **bookkeeping):
            raise ConcurrentChange(f"application {incoming.id} changed while applying version {incoming.version}")
        requested = None if incoming.final else stored.withdrawal_requested_at
        await self._home_changed(session, StoredApplication(incoming, stored.worker, requested, at))
        if incoming.state == ApplicationState.HIRED:
            await self._record_placement(session, incoming)

    async def on_withdrawal_request(self, session: AsyncSession, envelope: Envelope) -> None:
        try:
            request = WithdrawalRequest.model_validate(envelope.json())
            if request.application_id != envelope.partitionkey:
                raise ValueError(f"message key {envelope.partitionkey} differs from {request.application_id}")
            if not request.application_id.startswith(f"{envelope.originprovince}-A-"):
                raise ValueError(f"{envelope.originprovince} asks to withdraw {request.application_id}, not its own")
            if not request.vacancy_id.startswith(f"{self.province}-V-"):
                raise ValueError(
                    f"the withdrawal of {request.application_id} (vacancy {request.vacancy_id}) is not addressed to "
                    f"{self.province}"
                )
        except ValueError as exc:
            raise RuleViolation(f"withdrawal request {envelope.id}: {describe(exc)}") from exc
        stored = await repository.load(session, request.application_id, for_update=True)
        if stored is None:
            # the submission is on its way still (retried until it has arrived)
            raise ApplicationNotFound(f"withdrawal requested for application {request.application_id}, not held here")
        application = stored.application
        if envelope.originprovince != application.home_province or application.owner_province != self.province:
            raise RuleViolation(
                f"{envelope.originprovince} asks {self.province} to withdraw application {application.id} "
                f"(home {application.home_province}, owner {application.owner_province})"
            )
        if application.final:
            # ended meanwhile: the version already sent home answers the request
            MESSAGES.labels(envelope.type, "ignored").inc()
            return
        at = self.clock()
        after = withdraw(
            application,
            province=self.province,
            actor=APPLICANT,
            at=at,
            expected_version=None,
            note=request.note or "withdrawn by the applicant",
        )
        await self._commit(session, stored, after, at)
        MESSAGES.labels(envelope.type, "applied").inc()

    # Internals -------------------------------------------------------------------------------------------------------

    async def _load(self, session: AsyncSession, application_id: str) -> StoredApplication:
        stored = await repository.load(session, application_id, for_update=True)
        if stored is None:
            raise ApplicationNotFound(f"no application {application_id} on this node")
        return stored

    async def _change(
        self, application_id: str, version: int | None, transition: Callable[[Application, datetime], Application]
    ) -> StoredApplication:
        _required(version)
        async with self.sessions() as session, session.begin():
            stored = await self._load(session, application_id)
            at = self.clock()
            return await self._commit(session, stored, transition(stored.application, at), at)

    async def _commit(
        self, session: AsyncSession, stored: StoredApplication, after: Application, at: datetime
    ) -> StoredApplication:
        """Store this node's change and send it home (unless home is here: then the worker is told directly)."""
        bookkeeping: dict[str, Any] = {"withdrawal_requested_at": None} if after.final else {}
        if not await repository.replace(session, stored.application, after, at=at, **bookkeeping):
            raise ConcurrentChange(f"application {after.id} was changed meanwhile; reload it and try again")
        requested = None if after.final else stored.withdrawal_requested_at
        result = StoredApplication(after, stored.worker, requested, at)
        if after.home_province != self.province:
            await self._send(session, after.home_province, CHANGED, after.id, after)
        else:
            await self._home_changed(session, result)
        CHANGES.labels(after.last_entry.kind.value).inc()
        return result

    async def _home_changed(self, session: AsyncSession, stored: StoredApplication) -> None:
        """A change of a worker's application landed here, at home: the worker's match stream tells them."""
        if stored.worker is not None and stored.application.version > 1:
            await repository.add_notice(session, stored.worker, stored.application, at=stored.updated_at)

    async def _record_placement(self, session: AsyncSession, application: Application) -> None:
        assert application.hired_at is not None
        await record_hire(
            session,
            application_id=application.id,
            origin_province=application.home_province,
            destination_province=application.owner_province,
            hired_at=application.hired_at,
            occupation_code=application.vacancy.occupation_code,
            target_groups=[group.value for group in application.profile.target_groups],
        )

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


def _required(version: int | None) -> None:
    if version is None:
        raise VersionRequired("say which version you change: an If-Match header or a version field")


async def refresh_gauges(session: AsyncSession, province: str) -> None:
    set_counts(APPLICATIONS, await repository.count_by_state(session, province))

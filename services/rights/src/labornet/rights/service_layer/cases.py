"""Use cases of rights cases and the handlers of the directed messages between home and handling province.

Each change is one transaction on the node that holds the case: the new version of the case, its new timeline
entries, the message carrying the whole case to the other party (through the outbox, to that province's rights
inbox) and, on the home node, the refreshed anonymous statistics commit together.

A received case is applied only if it is newer than the version held *and* comes from the province that held the
case in that version (the only one allowed to change it); older or equal versions change nothing, so duplicates,
replays and reordered deliveries are harmless, and a forged change by a third province is refused (the inbox
retries and then quarantines it). A province that declined a case keeps it masked: no identity number, no phone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from labornet.rights.adapters import cases
from labornet.rights.adapters.cases import StoredCase
from labornet.rights.domain.case import (
    CASE_MESSAGE_TYPES,
    COMPLAINANT,
    WITHDRAWAL_REQUESTED,
    Case,
    CaseDraft,
    CaseRuleError,
    ClosureReason,
    Deadlines,
    NotCaseHolder,
    WorkPlace,
    accept,
    close,
    decline,
    escalate,
    extend,
    message_type,
    new_case_id,
    open_case,
    recipients,
    record_update,
    redacted,
    refer,
    resolve,
)
from labornet.rights.service_layer.statistics import publish_statistics
from labornet.shared.bounds import PositiveInt32
from labornet.shared.clock import Clock, utcnow
from labornet.shared.envelope import Envelope
from labornet.shared.identifiers import validate_resident_id
from labornet.shared.inbox import Handler
from labornet.shared.outbox import Outbox
from labornet.shared.topics import inbox_topic

log = logging.getLogger(__name__)

CHANGES = Counter(
    "labornet_rights_case_changes_total", "Changes this node made to rights cases, by kind", ["province", "kind"]
)
MESSAGES = Counter(
    "labornet_rights_case_messages_total",
    "Case messages received from partner provinces, by result (applied, stale, ignored)",
    ["province", "type", "result"],
)


class CaseNotFound(LookupError):
    """No case with this id on this node."""


class ConcurrentChange(CaseRuleError):
    """Another transaction changed the case between reading and writing it."""


class WithdrawalRequest(BaseModel):
    """The complainant withdraws while the handling province holds the case; it closes it if still open."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    case_id: str = Field(max_length=40)
    version: PositiveInt32 = Field(description="the case's version at the home province when the request was made")
    requested_at: datetime
    note: str | None = Field(None, max_length=2000)


class CaseService:
    def __init__(
        self,
        *,
        province: str,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        deadlines: Deadlines,
        clock: Clock = utcnow,
    ) -> None:
        self.province = province
        self.sessions = sessions
        self.outbox = outbox
        self.deadlines = deadlines
        self.clock = clock

    # Filing ---------------------------------------------------------------------------------------------------

    async def file(self, draft: CaseDraft, *, resident_id: str, work_place_name: str, actor: str) -> StoredCase:
        """Open a case here (the home province) and refer it to the province of the work place."""
        at = self.clock()
        case = open_case(
            draft,
            case_id=new_case_id(self.province),
            home=self.province,
            resident_id=resident_id,
            work_place_name=work_place_name,
            actor=actor,
            at=at,
            deadlines=self.deadlines,
        )
        async with self.sessions() as session, session.begin():
            await cases.add(session, case, redacted=False, at=at)
            await self._announce(session, case, at)
        return StoredCase(case, redacted=False, withdrawal_requested_at=None, updated_at=at)

    # Changes by the province holding the case --------------------------------------------------------------

    async def accept(self, case_id: str, *, actor: str, note: str | None) -> StoredCase:
        return await self._change(
            case_id,
            lambda case, at: accept(
                case, province=self.province, actor=actor, at=at, deadlines=self.deadlines, note=note
            ),
        )

    async def decline(self, case_id: str, *, actor: str, reason: str, suggested_province: str | None) -> StoredCase:
        return await self._change(
            case_id,
            lambda case, at: decline(
                case,
                province=self.province,
                actor=actor,
                at=at,
                reason=reason,
                suggested_province=suggested_province,
            ),
        )

    async def refer(
        self,
        case_id: str,
        *,
        actor: str,
        to: str,
        note: str | None,
        work_place: WorkPlace | None = None,
        work_place_name: str | None = None,
    ) -> StoredCase:
        return await self._change(
            case_id,
            lambda case, at: refer(
                case,
                province=self.province,
                actor=actor,
                at=at,
                deadlines=self.deadlines,
                to=to,
                note=note,
                work_place=work_place,
                work_place_name=work_place_name,
            ),
        )

    async def record_update(self, case_id: str, *, actor: str, note: str) -> StoredCase:
        return await self._change(
            case_id, lambda case, at: record_update(case, province=self.province, actor=actor, at=at, note=note)
        )

    async def extend(self, case_id: str, *, actor: str, reason: str) -> StoredCase:
        return await self._change(
            case_id,
            lambda case, at: extend(
                case, province=self.province, actor=actor, at=at, deadlines=self.deadlines, reason=reason
            ),
        )

    async def escalate(self, case_id: str, *, actor: str, reason: str) -> StoredCase:
        return await self._change(
            case_id, lambda case, at: escalate(case, province=self.province, actor=actor, at=at, reason=reason)
        )

    async def resolve(
        self, case_id: str, *, actor: str, amount_recovered: Decimal, workers_paid: int, note: str | None
    ) -> StoredCase:
        return await self._change(
            case_id,
            lambda case, at: resolve(
                case,
                province=self.province,
                actor=actor,
                at=at,
                amount_recovered=amount_recovered,
                workers_paid=workers_paid,
                note=note,
            ),
        )

    async def close(self, case_id: str, *, actor: str, reason: ClosureReason, note: str | None) -> StoredCase:
        return await self._change(
            case_id, lambda case, at: close(case, province=self.province, actor=actor, at=at, reason=reason, note=note)
        )

    async def withdraw(self, case_id: str, *, actor: str, note: str | None) -> StoredCase:
        """The complainant withdraws the complaint (at the home province).

        If this province holds the case it is closed at once; otherwise the holder is asked to close it, and this
        node remembers the request: should the case come back undecided (declined), it is closed on arrival.
        """
        async with self.sessions() as session, session.begin():
            stored = await self._load(session, case_id)
            case = stored.case
            if case.home_province != self.province:
                raise NotCaseHolder(f"case {case_id} was filed in {case.home_province}; it is withdrawn there")
            if case.terminal:
                raise CaseRuleError(f"case {case_id} is {case.status}; a concluded case cannot be withdrawn")
            if case.holder == self.province:
                at = self.clock()
                after = close(
                    case, province=self.province, actor=actor, at=at, reason=ClosureReason.WITHDRAWN, note=note
                )
                return await self._commit(session, stored, after, at)
            if stored.withdrawal_requested_at is not None:
                return stored  # asked already; the holder's answer is on its way
            at = self.clock()
            await cases.set_withdrawal_requested(session, case_id, at)
            request = WithdrawalRequest(case_id=case_id, version=case.version, requested_at=at, note=note)
            await self._send(session, case.holder, WITHDRAWAL_REQUESTED, case_id, request)
            return StoredCase(case, stored.redacted, withdrawal_requested_at=at, updated_at=stored.updated_at)

    # Messages from the other province ----------------------------------------------------------------------

    def handlers(self) -> dict[str, Handler]:
        return {**dict.fromkeys(CASE_MESSAGE_TYPES, self.on_case), WITHDRAWAL_REQUESTED: self.on_withdrawal_request}

    async def on_case(self, session: AsyncSession, envelope: Envelope) -> None:
        """Apply a newer version of a case sent by the province that held it."""
        incoming = Case.model_validate(envelope.json())
        validate_resident_id(incoming.complainant.resident_id)
        if incoming.id != envelope.partitionkey:
            raise ValueError(f"message key {envelope.partitionkey} differs from case {incoming.id}")
        if envelope.type != message_type(incoming):
            raise ValueError(f"a {envelope.type} message whose last step is {incoming.last_entry.kind}")
        stored = await cases.load(session, incoming.id, for_update=True)
        if stored is not None and incoming.version <= stored.case.version:
            MESSAGES.labels(self.province, envelope.type, "stale").inc()
            return
        self._check_sender(incoming, envelope.originprovince, stored)
        at = self.clock()
        if stored is None:
            await cases.add(session, incoming, redacted=False, at=at)
        elif not await cases.replace(session, stored.case, incoming, redacted=False, at=at):
            raise ConcurrentChange(f"case {incoming.id} changed while applying version {incoming.version}")
        MESSAGES.labels(self.province, envelope.type, "applied").inc()
        if incoming.home_province != self.province:
            return
        requested = stored.withdrawal_requested_at if stored is not None else None
        if requested is not None and incoming.terminal:
            await cases.set_withdrawal_requested(session, incoming.id, None)
        if requested is not None and not incoming.terminal and incoming.holder == self.province:
            # the case came back undecided while the complainant's withdrawal was on its way: honour it now
            after = close(
                incoming,
                province=self.province,
                actor=COMPLAINANT,
                at=at,
                reason=ClosureReason.WITHDRAWN,
                note=f"withdrawn at the complainant's request of {requested.isoformat()}",
            )
            current = StoredCase(incoming, False, requested, at)
            await self._commit(session, current, after, at)
            return
        await publish_statistics(session, self.outbox, self.province, at)

    async def on_withdrawal_request(self, session: AsyncSession, envelope: Envelope) -> None:
        request = WithdrawalRequest.model_validate(envelope.json())
        stored = await cases.load(session, request.case_id, for_update=True)
        if stored is None:
            raise CaseNotFound(f"withdrawal requested for case {request.case_id}, which this node does not hold")
        case = stored.case
        if envelope.originprovince != case.home_province:
            raise ValueError(f"{envelope.originprovince} asks to withdraw case {case.id} filed in {case.home_province}")
        if case.terminal or case.holder != self.province:
            # concluded or handed back meanwhile: the version already sent home answers the request
            log.info(
                "withdrawal of case %s (asked at version %d) ignored: it is %s at version %d, held by %s",
                case.id,
                request.version,
                case.status,
                case.version,
                case.holder,
            )
            MESSAGES.labels(self.province, envelope.type, "ignored").inc()
            return
        at = self.clock()
        after = close(
            case,
            province=self.province,
            actor=COMPLAINANT,
            at=at,
            reason=ClosureReason.WITHDRAWN,
            note=request.note or "withdrawn by the complainant",
        )
        await self._commit(session, stored, after, at)
        MESSAGES.labels(self.province, envelope.type, "applied").inc()

    # Internals ---------------------------------------------------------------------------------------------

    def _check_sender(self, incoming: Case, origin: str, stored: StoredCase | None) -> None:
        """Only the province that held the case may have changed it, and only home and handling receive it."""
        if incoming.last_entry.province != origin:
            raise ValueError(
                f"case {incoming.id}: the last step was taken by {incoming.last_entry.province}, but {origin} sent it"
            )
        if self.province not in (incoming.home_province, incoming.handling_province):
            raise ValueError(
                f"case {incoming.id} (home {incoming.home_province}, handling {incoming.handling_province}) "
                f"is not addressed to {self.province}"
            )
        if stored is None:
            if incoming.holder != self.province or origin != incoming.home_province:
                raise ValueError(f"case {incoming.id} is unknown here and was not referred here by its home province")
            return
        if stored.case.home_province != incoming.home_province:
            raise ValueError(f"case {incoming.id} changes its home province")
        if stored.case.holder != origin:
            raise ValueError(
                f"case {incoming.id} version {stored.case.version} is held by {stored.case.holder}; "
                f"{origin} may not change it"
            )

    async def _load(self, session: AsyncSession, case_id: str) -> StoredCase:
        stored = await cases.load(session, case_id, for_update=True)
        if stored is None:
            raise CaseNotFound(f"no case {case_id} on this node")
        return stored

    async def _change(self, case_id: str, transition: Callable[[Case, datetime], Case]) -> StoredCase:
        async with self.sessions() as session, session.begin():
            stored = await self._load(session, case_id)
            at = self.clock()
            return await self._commit(session, stored, transition(stored.case, at), at)

    async def _commit(self, session: AsyncSession, stored: StoredCase, after: Case, at: datetime) -> StoredCase:
        """Store this node's change, send it to the other party, refresh the statistics if the case is ours."""
        involved = self.province in (after.home_province, after.handling_province)
        kept = after if involved else redacted(after)
        bookkeeping: dict[str, Any] = {"withdrawal_requested_at": None} if after.terminal else {}
        if not await cases.replace(session, stored.case, kept, redacted=not involved, at=at, **bookkeeping):
            raise ConcurrentChange(f"case {after.id} was changed meanwhile; reload it and try again")
        await self._announce(session, after, at)
        requested = None if after.terminal else stored.withdrawal_requested_at
        return StoredCase(kept, redacted=not involved, withdrawal_requested_at=requested, updated_at=at)

    async def _announce(self, session: AsyncSession, case: Case, at: datetime) -> None:
        for province in recipients(case, self.province):
            await self._send(session, province, message_type(case), case.id, case)
        if case.home_province == self.province:
            await publish_statistics(session, self.outbox, self.province, at)
        CHANGES.labels(self.province, case.last_entry.kind.value).inc()

    async def _send(self, session: AsyncSession, to: str, event_type: str, key: str, data: BaseModel) -> None:
        await self.outbox.add(
            session,
            topic=inbox_topic(to, "rights"),
            destination=to,
            event_type=event_type,
            key=key,
            subject=key,
            data=data,
        )

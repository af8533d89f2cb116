"""The transfer saga's use cases and the handlers of the directed messages between insurance services.

Each step is one transaction on one node: the rules in :mod:`labornet.insurance.domain.transfer` decide, and the
new side of the transfer, its timeline, the person's record, the periods that move, the settlement and the
directed messages the step raised (through the outbox) commit together. Messages are applied by the platform
inbox exactly once; the aggregate additionally ignores anything that no longer fits the case's state, so
duplicated, replayed or crossed messages change nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any

from prometheus_client import Histogram
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from labornet.insurance.adapters import config, settlements, transfers
from labornet.insurance.domain import settlement as money
from labornet.insurance.domain import transfer as rules
from labornet.insurance.domain.events import Message
from labornet.insurance.domain.settlement import (
    SETTLEMENT_PAID,
    SETTLEMENT_SCHEDULED,
    Direction,
    Settlement,
    SettlementStatus,
)
from labornet.insurance.domain.transfer import (
    CANCELLATION,
    CANCELLATION_CONFIRMED,
    CONTACT_LETTER,
    INFORMATION_SHEET,
    RECEIPT,
    REFUSAL,
    Outcome,
    Reason,
    Transfer,
    TransferRefused,
    TransferRuleError,
)
from labornet.shared.clock import Clock, utcnow
from labornet.shared.envelope import Envelope
from labornet.shared.inbox import Handler
from labornet.shared.outbox import Outbox
from labornet.shared.topics import inbox_topic
from labornet.shared.workdays import WorkCalendar

log = logging.getLogger(__name__)

STEP_DURATION = Histogram(
    "labornet_insurance_transfer_step_seconds",
    "Time from filing to each state of a transfer, by side and state",
    ["side", "state"],
    buckets=(0.05, 0.25, 1, 5, 30, 300, 3600, 86400, 5 * 86400, 20 * 86400),
)


class TransferNotFound(LookupError):
    """No such case on this node (or a message overtook the one it answers: the inbox retries it)."""


class ConcurrentChange(TransferRuleError):
    """Another transaction changed the case or the record between reading and writing it."""


def new_id(province: str, kind: str) -> str:
    return f"{province}-{kind}-{uuid.uuid4().hex[:16].upper()}"


class TransferService:
    def __init__(
        self,
        *,
        province: str,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        calendar: WorkCalendar,
        members: Sequence[str],
        auto_answer: bool = False,
        clock: Clock = utcnow,
        benefit_config: config.ConfigCopy | None = None,
    ) -> None:
        self.province = province
        self.sessions = sessions
        self.outbox = outbox
        self.calendar = calendar
        self.members = list(members)
        self.auto_answer = auto_answer
        self.clock = clock
        # shared with the records' use cases, which drop it when an officer changes the configuration
        self.benefit_config = benefit_config or config.ConfigCopy(province, max_age_s=0)

    # Receiving side: filing and cancelling ----------------------------------------------------------

    async def file(
        self,
        *,
        resident_id: str,
        name: str,
        from_province: str,
        reason: Reason,
        new_employer: str | None,
        filed_by: str,
        to_province: str | None = None,
    ) -> Transfer:
        """Check the request and send the contact letter, or raise :class:`TransferRefused`."""
        at = self.clock()
        async with self.sessions() as session, session.begin():
            outcome = rules.file(
                case_id=new_id(self.province, "T"),
                province=self.province,
                resident_id=resident_id,
                name=name,
                from_province=from_province,
                reason=reason,
                new_employer=new_employer,
                filed_by=filed_by,
                at=at,
                person=await transfers.load_person(session, resident_id),
                limits=config.limits_of(await self.benefit_config.get(session), self.calendar),
                members=self.members,
                to_province=to_province,
            )
            try:
                # no savepoint (two round trips on every filing): the refusal rolls the whole transaction back
                await transfers.add(session, outcome.transfer)
            except IntegrityError as exc:
                raise TransferRefused("another transfer for this person is already in progress") from exc
            await self._apply(session, outcome, None, at)
        return outcome.transfer

    async def cancel(self, case_id: str) -> Transfer:
        """The worker withdraws the request; allowed only until the sending office has answered."""
        return await self._change(case_id, lambda case, _session, at: rules.cancel(case, province=self.province, at=at))

    # Sending side: the officer's answer -------------------------------------------------------------

    async def answer(self, case_id: str, *, send_sheet: bool, reason: str | None) -> Transfer:
        async with self.sessions() as session, session.begin():
            case = await self._load(session, case_id)
            at = self.clock()
            person = await transfers.load_person(session, case.resident_id, for_update=True)
            if send_sheet:
                if person is None:
                    raise TransferRuleError(f"transfer {case_id}: no record of this person in {self.province}")
                outcome = await self._sheet(session, case, person, at)
            else:
                outcome = rules.refuse(
                    case,
                    province=self.province,
                    at=at,
                    reason=reason or "refused by the sending office",
                    person=person,
                )
            await self._commit(session, case, outcome, person, at)
        return outcome.transfer

    # Message handlers -------------------------------------------------------------------------------

    def handlers(self) -> dict[str, Handler]:
        return {
            CONTACT_LETTER: self.on_contact_letter,
            INFORMATION_SHEET: self.on_information_sheet,
            REFUSAL: self.on_refusal,
            RECEIPT: self.on_receipt,
            CANCELLATION: self.on_cancellation,
            CANCELLATION_CONFIRMED: self.on_cancellation_confirmed,
            SETTLEMENT_SCHEDULED: self.on_settlement_scheduled,
            SETTLEMENT_PAID: self.on_settlement_paid,
        }

    async def on_contact_letter(self, session: AsyncSession, envelope: Envelope) -> None:
        letter = envelope.json()
        if await transfers.load_sending(session, letter["receiving_case"]) is not None:
            return
        at = self.clock()
        resident_id = letter["person"]["resident_id"]
        person = await transfers.load_person(session, resident_id, for_update=True)
        settings = await self.benefit_config.get(session)
        outcome = rules.receive_letter(
            letter,
            case_id=new_id(self.province, "C"),
            province=self.province,
            origin=envelope.originprovince,
            at=at,
            person=person,
            limits=config.limits_of(settings, self.calendar),
        )
        if self.auto_answer and outcome.person is not None and not outcome.transfer.name_mismatch:
            # both steps decided first, then stored once: the case goes in with its two steps and the record is
            # updated once, instead of inserted, updated and the record written twice under the write lock
            self._observe(outcome.transfer)
            sheet = await self._sheet(session, outcome.transfer, outcome.person, at, settings)
            outcome = Outcome(
                sheet.transfer,
                events=outcome.events + sheet.events,
                person=sheet.person or outcome.person,
                carried_in=outcome.carried_in + sheet.carried_in,
                carried_out=outcome.carried_out or sheet.carried_out,
                settlement=sheet.settlement or outcome.settlement,
            )
        await transfers.add(session, outcome.transfer)
        await self._apply(session, outcome, person, at)

    async def on_information_sheet(self, session: AsyncSession, envelope: Envelope) -> None:
        message = envelope.json()
        case = await self._load(session, message["receiving_case"])
        at = self.clock()
        person = await transfers.load_person(session, case.resident_id, for_update=True)
        outcome = rules.open_relationship(
            case,
            message,
            origin=envelope.originprovince,
            at=at,
            person=person,
            live_periods=await transfers.live_periods(session, case.resident_id),
            standard=config.standard_of(await self.benefit_config.get(session)),
        )
        await self._commit(session, case, outcome, person, at)

    async def on_refusal(self, session: AsyncSession, envelope: Envelope) -> None:
        message = envelope.json()
        case = await self._load(session, message["receiving_case"])
        outcome = rules.refused(case, message, origin=envelope.originprovince, at=self.clock())
        await self._commit(session, case, outcome, None, self.clock())

    async def on_receipt(self, session: AsyncSession, envelope: Envelope) -> None:
        message = envelope.json()
        case = await self._load(session, message["sending_case"])
        at = self.clock()
        person = await transfers.load_person(session, case.resident_id, for_update=True)
        outcome = rules.close_relationship(
            case,
            origin=envelope.originprovince,
            at=at,
            person=person,
            settlement_id=new_id(self.province, "S"),
            settlement_due=money.due_month(at),
        )
        await self._commit(session, case, outcome, person, at)

    async def on_cancellation(self, session: AsyncSession, envelope: Envelope) -> None:
        message = envelope.json()
        case = await transfers.load_sending(session, message["receiving_case"], for_update=True)
        if case is None:
            raise TransferNotFound(f"cancellation for unknown transfer {message['receiving_case']}")
        at = self.clock()
        person = await transfers.load_person(session, case.resident_id, for_update=True)
        outcome = rules.withdrawn(case, origin=envelope.originprovince, at=at, person=person)
        await self._commit(session, case, outcome, person, at)

    async def on_cancellation_confirmed(self, session: AsyncSession, envelope: Envelope) -> None:
        message = envelope.json()
        case = await self._load(session, message["receiving_case"])
        outcome = rules.cancellation_confirmed(case, message, origin=envelope.originprovince, at=self.clock())
        await self._commit(session, case, outcome, None, self.clock())

    async def on_settlement_scheduled(self, session: AsyncSession, envelope: Envelope) -> None:
        """The sending province scheduled the money owed to this one: keep it as an incoming settlement."""
        message = envelope.json()
        if await settlements.load(session, message["settlement"], self.province) is not None:
            return
        case = await self._load(session, message["receiving_case"])
        if case.side != rules.Side.RECEIVING or case.from_province != envelope.originprovince:
            raise ValueError(f"{envelope.originprovince} schedules money for transfer {case.id}, which it did not send")
        await settlements.add(
            session,
            money.owed(
                message, origin=envelope.originprovince, province=self.province, receiving_case=case.id, at=self.clock()
            ),
        )

    async def on_settlement_paid(self, session: AsyncSession, envelope: Envelope) -> None:
        message = envelope.json()
        held = await settlements.load(session, message["settlement"], self.province, for_update=True)
        if held is None:  # it overtook the scheduling message: the inbox retries it later
            raise TransferNotFound(f"payment of settlement {message['settlement']}, not yet known here")
        paid = money.paid_by_payer(held, message, origin=envelope.originprovince)
        if paid != held and not await settlements.replace(session, held, paid):
            raise ConcurrentChange(f"settlement {held.id} changed while its payment was applied")

    # Reading --------------------------------------------------------------------------------------------

    async def get(self, case_id: str) -> Transfer | None:
        """A case with its timeline."""
        async with self.sessions() as session:
            return await transfers.load(session, case_id)

    async def listed(
        self,
        *,
        limit: int,
        resident_id: str | None = None,
        side: str | None = None,
        state: str | None = None,
        overdue_on: date | None = None,
        after: str | None = None,
    ) -> list[Transfer]:
        """Cases in case-number order, ``limit + 1`` at most (the extra one says that more follow)."""
        async with self.sessions() as session:
            return await transfers.listed(
                session,
                limit=limit,
                resident_id=resident_id,
                side=side,
                state=state,
                overdue_on=overdue_on,
                after=after,
            )

    # Settlements ------------------------------------------------------------------------------------

    async def settlements(
        self, *, direction: Direction | None = None, status: SettlementStatus | None = None
    ) -> list[Settlement]:
        async with self.sessions() as session:
            return await settlements.listed(session, self.province, direction=direction, status=status)

    async def mark_paid(self, settlement_id: str, *, by: str, reference: str | None) -> Settlement:
        """The paying province's officer records the payment; the receiving province is told."""
        async with self.sessions() as session, session.begin():
            held = await settlements.load(session, settlement_id, self.province, for_update=True)
            if held is None:
                raise TransferNotFound(f"no settlement {settlement_id}")
            paid, message = money.pay(held, province=self.province, by=by, reference=reference, at=self.clock())
            if not await settlements.replace(session, held, paid):
                raise ConcurrentChange(f"settlement {settlement_id} was changed meanwhile; reload it")
            await self._send(session, message)
        return paid

    # Internals --------------------------------------------------------------------------------------

    async def _load(self, session: AsyncSession, case_id: str) -> Transfer:
        case = await transfers.load(session, case_id, for_update=True)
        if case is None:
            raise TransferNotFound(f"no transfer {case_id} on this node")
        return case

    async def _sheet(
        self,
        session: AsyncSession,
        case: Transfer,
        person: rules.InsuredPerson,
        at: datetime,
        settings: dict[str, Any] | None = None,
    ) -> Outcome:
        """The information sheet; ``settings`` is the benefit configuration when the step has read it already."""
        return rules.send_sheet(
            case,
            province=self.province,
            at=at,
            person=person,
            live_periods=await transfers.live_periods(session, case.resident_id),
            standard=config.standard_of(settings or await self.benefit_config.get(session)),
            fund_held=await transfers.fund_carried_in(session, case.resident_id),
        )

    async def _change(
        self, case_id: str, transition: Callable[[Transfer, AsyncSession, datetime], Outcome]
    ) -> Transfer:
        async with self.sessions() as session, session.begin():
            case = await self._load(session, case_id)
            at = self.clock()
            outcome = transition(case, session, at)
            await self._commit(session, case, outcome, None, at)
        return outcome.transfer

    async def _commit(
        self,
        session: AsyncSession,
        before: Transfer,
        outcome: Outcome,
        person: rules.InsuredPerson | None,
        at: datetime,
    ) -> None:
        """Store what the step changed and send what it raised; nothing if it changed nothing."""
        if outcome.transfer == before:
            log.info("%s: a message that no longer fits the case (%s) changed nothing", before.id, before.state)
            return
        if not await transfers.replace(session, before, outcome.transfer):
            raise ConcurrentChange(f"transfer {before.id} was changed meanwhile; reload it and try again")
        await self._apply(session, outcome, person, at)

    async def _apply(
        self, session: AsyncSession, outcome: Outcome, person: rules.InsuredPerson | None, at: datetime
    ) -> None:
        case = outcome.transfer
        if outcome.person is not None and not await transfers.save_person(session, person, outcome.person, at):
            raise ConcurrentChange(f"the record of the person of transfer {case.id} changed meanwhile")
        if outcome.carried_in:
            await transfers.add_periods(session, case.resident_id, outcome.carried_in, carried_in_by=case.id)
        if outcome.carried_out:
            await transfers.carry_out(session, case.resident_id, case.id)
        if outcome.settlement is not None:
            await settlements.add(session, outcome.settlement)
        for message in outcome.events:
            await self._send(session, message)
        self._observe(case)

    @staticmethod
    def _observe(case: Transfer) -> None:
        if case.timeline:
            STEP_DURATION.labels(case.side.value, case.state.value).observe(
                max((case.timeline[-1].at - case.filed_at).total_seconds(), 0.0)
            )

    async def _send(self, session: AsyncSession, message: Message) -> None:
        # written when the step commits, with the receipts of the inbox run it is part of
        self.outbox.queue(
            session,
            topic=inbox_topic(message.to, "insurance"),
            destination=message.to,
            event_type=message.type,
            key=message.key,
            subject=message.key,
            data=message.data,
        )


def jsonable_transfer(case: Transfer) -> dict[str, Any]:
    """The stored columns of a case, as the API shows them (without the timeline)."""
    return transfers.transfer_columns(case) | {"name_mismatch": case.name_mismatch}

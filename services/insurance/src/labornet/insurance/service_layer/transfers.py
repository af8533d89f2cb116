"""The transfer saga: use cases on the receiving side, message handlers on both sides.

Each step is one transaction on one node: the state change, the timeline entry and the directed message to the
other side (through the outbox) commit together. Messages are applied by the platform inbox exactly once; the
state machine below additionally ignores anything that no longer fits the case's state, so duplicated, replayed
or crossed messages change nothing.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from prometheus_client import Histogram
from sqlalchemy import ColumnElement, and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from labornet.insurance.adapters.tables import (
    benefit_config,
    contribution_period,
    insured_person,
    settlement,
    transfer,
    transfer_step,
)
from labornet.insurance.domain.rules import (
    ACTIVE,
    Period,
    PeriodKind,
    PersonStatus,
    entitlement_at,
    transfer_out_sheet,
)
from labornet.insurance.domain.transfer import (
    CANCELLATION,
    CANCELLATION_CONFIRMED,
    CONTACT_LETTER,
    INFORMATION_SHEET,
    RECEIPT,
    REFUSAL,
    TERMINAL,
    Reason,
    Side,
    State,
    TransferRefused,
)
from labornet.shared.db import as_utc
from labornet.shared.envelope import Envelope, format_time
from labornet.shared.outbox import Outbox
from labornet.shared.topics import inbox_topic
from labornet.shared.workdays import CHINA, WorkCalendar

log = logging.getLogger(__name__)

STEP_DURATION = Histogram(
    "labornet_insurance_transfer_step_seconds",
    "Time from filing to each state of a transfer, by side and state",
    ["side", "state"],
    buckets=(0.05, 0.25, 1, 5, 30, 300, 3600, 86400, 5 * 86400, 20 * 86400),
)


def now() -> datetime:
    return datetime.now(UTC)


def today_in_china() -> date:
    """Time limits are working days in China: "today" is China's date."""
    return datetime.now(CHINA).date()


def overdue_clause(today: date) -> ColumnElement[bool]:
    """SQL form of :func:`labornet.insurance.domain.transfer.is_overdue`."""
    return and_(
        transfer.c.state.not_in(TERMINAL),
        or_(
            transfer.c.complete_due < today,
            and_(transfer.c.side == Side.SENDING, transfer.c.state == State.RECEIVED, transfer.c.answer_due < today),
        ),
    )


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


async def periods_of(session: AsyncSession, resident_id: str) -> list[Period]:
    rows = await session.execute(
        select(contribution_period).where(
            contribution_period.c.resident_id == resident_id, contribution_period.c.carried_out_by.is_(None)
        )
    )
    return [Period(r.start_month, r.end_month, PeriodKind(r.kind), r.province) for r in rows.mappings()]


async def config_of(session: AsyncSession, province: str) -> Mapping[str, Any]:
    row = (await session.execute(select(benefit_config).where(benefit_config.c.province == province))).mappings().one()
    return dict(row)


class TransferService:
    def __init__(
        self,
        *,
        province: str,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        calendar: WorkCalendar,
        members: list[str],
        auto_answer: bool = False,
    ) -> None:
        self.province = province
        self.sessions = sessions
        self.outbox = outbox
        self.calendar = calendar
        self.members = members
        self.auto_answer = auto_answer

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
    ) -> dict[str, Any]:
        """Check the request and send the contact letter, or raise :class:`TransferRefused`."""
        if from_province == self.province:
            raise TransferRefused("the relationship is already in this province; nothing to transfer")
        if from_province not in self.members:
            raise TransferRefused(f"province {from_province} is not a member of the federation")
        if reason == Reason.NEW_EMPLOYMENT and not new_employer:
            raise TransferRefused("a transfer for new employment needs the new employer's credit code")
        moment = now()
        async with self.sessions() as session, session.begin():
            person = (
                (await session.execute(select(insured_person).where(insured_person.c.resident_id == resident_id)))
                .mappings()
                .one_or_none()
            )
            if person is not None and person["status"] in ACTIVE:
                raise TransferRefused("this person is already insured in this province")
            config = await config_of(session, self.province)
            case: dict[str, Any] = {
                "id": f"{self.province}-T-{uuid.uuid4().hex[:16].upper()}",
                "side": Side.RECEIVING.value,
                "peer_case": None,
                "resident_id": resident_id,
                "person_name": name,
                "from_province": from_province,
                "to_province": self.province,
                "reason": reason.value,
                "new_employer_credit_code": new_employer,
                "state": State.AWAITING_ANSWER.value,
                "filed_by": filed_by,
                "filed_at": moment,
                "answer_due": self.calendar.add_workdays(moment, int(config["answer_limit_days"])),
                "complete_due": self.calendar.add_workdays(moment, int(config["transfer_limit_days"])),
                "version": 1,
            }
            try:
                async with session.begin_nested():
                    await session.execute(insert(transfer).values(**case))
            except IntegrityError as exc:
                raise TransferRefused("another transfer for this person is already in progress") from exc
            await self._step(session, case, State.AWAITING_ANSWER, "contact letter sent")
            await self._send(
                session,
                from_province,
                CONTACT_LETTER,
                case["id"],
                {
                    "receiving_case": case["id"],
                    "sending_case": None,
                    "person": {"resident_id": resident_id, "name": name},
                    "from_province": from_province,
                    "to_province": self.province,
                    "reason": reason.value,
                    "new_employer_credit_code": new_employer,
                    "filed_at": format_time(moment),
                    "complete_due": case["complete_due"].isoformat(),
                },
            )
        return case

    async def cancel(self, case_id: str) -> dict[str, Any]:
        """The worker withdraws the request; allowed only until the sending office has answered."""
        async with self.sessions() as session, session.begin():
            case = await self._case(session, case_id)
            if case["side"] != Side.RECEIVING or case["state"] != State.AWAITING_ANSWER:
                raise TransferRefused(
                    f"transfer {case_id} is {case['state']}: it can be cancelled only while awaiting the answer"
                )
            case = await self._move(session, case, State.CANCEL_REQUESTED, "cancellation requested")
            await self._send(
                session,
                case["from_province"],
                CANCELLATION,
                case["id"],
                {"receiving_case": case["id"], "sending_case": case["peer_case"]},
            )
        return case

    # Sending side: the officer's answer -------------------------------------------------------------

    async def answer(self, case_id: str, *, send_sheet: bool, reason: str | None) -> dict[str, Any]:
        async with self.sessions() as session, session.begin():
            case = await self._case(session, case_id)
            if case["side"] != Side.SENDING or case["state"] != State.RECEIVED:
                raise TransferRefused(f"transfer {case_id} is {case['state']}; only a received request is answered")
            if send_sheet:
                case = await self._send_sheet(session, case)
            else:
                case = await self._refuse(session, case, reason or "refused by the sending office")
        return case

    # Message handlers -------------------------------------------------------------------------------

    async def on_contact_letter(self, session: AsyncSession, envelope: Envelope) -> None:
        letter = envelope.json()
        receiving_case = letter["receiving_case"]
        known = (
            await session.execute(
                select(transfer.c.id).where(transfer.c.side == Side.SENDING, transfer.c.peer_case == receiving_case)
            )
        ).scalar()
        if known is not None:
            return
        moment = now()
        config = await config_of(session, self.province)
        resident_id = letter["person"]["resident_id"]
        case: dict[str, Any] = {
            "id": f"{self.province}-C-{uuid.uuid4().hex[:16].upper()}",
            "side": Side.SENDING.value,
            "peer_case": receiving_case,
            "resident_id": resident_id,
            "person_name": letter["person"]["name"],
            "from_province": self.province,
            "to_province": envelope.originprovince,
            "reason": letter["reason"],
            "new_employer_credit_code": letter.get("new_employer_credit_code"),
            "state": State.RECEIVED.value,
            "filed_by": f"province:{envelope.originprovince}",
            "filed_at": moment,
            "answer_due": self.calendar.add_workdays(moment, int(config["answer_limit_days"])),
            "complete_due": date.fromisoformat(letter["complete_due"]),
            "version": 1,
        }
        person = (
            (
                await session.execute(
                    select(insured_person).where(insured_person.c.resident_id == resident_id).with_for_update()
                )
            )
            .mappings()
            .one_or_none()
        )
        refusal = None
        if person is None:
            refusal = f"no insurance record for this person in {self.province}"
        elif person["status"] == PersonStatus.TRANSFERRED or person["status"] == PersonStatus.TRANSFERRING:
            refusal = "the relationship has already been transferred out"
        elif person["transfer_lock"] is not None:
            refusal = "another transfer for this person is already in progress"
        elif person["status"] == PersonStatus.SUSPENDED:
            refusal = "the relationship is suspended"
        if refusal is not None:
            case["state"] = State.REFUSED.value
            await session.execute(insert(transfer).values(**case))
            await self._refuse(session, {**case, "state": State.RECEIVED.value}, refusal, insert_step_only=True)
            return
        await session.execute(insert(transfer).values(**case))
        await session.execute(
            update(insured_person).where(insured_person.c.resident_id == resident_id).values(transfer_lock=case["id"])
        )
        await self._step(session, case, State.RECEIVED, f"contact letter {receiving_case} received")
        if self.auto_answer:
            await self._send_sheet(session, case)

    async def on_information_sheet(self, session: AsyncSession, envelope: Envelope) -> None:
        message = envelope.json()
        case = await self._case(session, message["receiving_case"], for_update=True)
        if case["state"] not in (State.AWAITING_ANSWER, State.CANCEL_REQUESTED):
            log.info("information sheet for %s ignored: the case is %s", case["id"], case["state"])
            return
        sheet = message["sheet"]
        resident_id = case["resident_id"]
        person = (
            (
                await session.execute(
                    select(insured_person).where(insured_person.c.resident_id == resident_id).with_for_update()
                )
            )
            .mappings()
            .one_or_none()
        )
        moment = now()
        status = (
            PersonStatus.CLAIMING
            if sheet["benefit_months_remaining"] > 0 and case["reason"] != Reason.NEW_EMPLOYMENT
            else PersonStatus.EMPLOYED
        )
        if person is None:
            await session.execute(
                insert(insured_person).values(
                    resident_id=resident_id,
                    name=case["person_name"],
                    hukou_division=message["hukou_division"],
                    status=status.value,
                    employer_credit_code=case["new_employer_credit_code"],
                    months_used=sheet["months_used"],
                    benefit_months_paid=sheet["benefit_months_paid"],
                    transfer_lock=None,
                    version=1,
                    created_at=moment,
                    updated_at=moment,
                )
            )
        else:
            await session.execute(
                update(insured_person)
                .where(insured_person.c.resident_id == resident_id)
                .values(
                    status=status.value,
                    employer_credit_code=case["new_employer_credit_code"],
                    months_used=person["months_used"] + sheet["months_used"],
                    benefit_months_paid=person["benefit_months_paid"] + sheet["benefit_months_paid"],
                    version=person["version"] + 1,
                    updated_at=moment,
                )
            )
        for period in message["periods"]:
            await session.execute(
                insert(contribution_period).values(
                    resident_id=resident_id,
                    start_month=date.fromisoformat(period["start_month"]),
                    end_month=date.fromisoformat(period["end_month"]),
                    kind=period["kind"],
                    province=period["province"],
                    employer_credit_code=period.get("employer_credit_code"),
                    carried_in_by=case["id"],
                )
            )
        config = await config_of(session, self.province)
        refreshed = (
            (await session.execute(select(insured_person).where(insured_person.c.resident_id == resident_id)))
            .mappings()
            .one()
        )
        entitlement = entitlement_at(
            await periods_of(session, resident_id),
            months_used=refreshed["months_used"],
            benefit_months_paid=refreshed["benefit_months_paid"],
            monthly_standard=Decimal(config["monthly_standard"]),
        )
        await session.execute(
            update(transfer)
            .where(transfer.c.id == case["id"])
            .values(peer_case=message["sending_case"], sheet=sheet, entitlement=jsonable(asdict(entitlement)))
        )
        case = {**case, "peer_case": message["sending_case"]}
        await self._move(session, case, State.COMPLETED, "relationship opened; receipt sent")
        await self._send(
            session,
            case["from_province"],
            RECEIPT,
            case["id"],
            {"receiving_case": case["id"], "sending_case": message["sending_case"], "opened_at": format_time(moment)},
        )

    async def on_refusal(self, session: AsyncSession, envelope: Envelope) -> None:
        message = envelope.json()
        case = await self._case(session, message["receiving_case"], for_update=True)
        if case["state"] in TERMINAL:
            return
        await session.execute(
            update(transfer)
            .where(transfer.c.id == case["id"])
            .values(peer_case=message["sending_case"], refusal_reason=message["reason"])
        )
        await self._move(session, case, State.REFUSED, f"refused by {case['from_province']}: {message['reason']}")

    async def on_receipt(self, session: AsyncSession, envelope: Envelope) -> None:
        message = envelope.json()
        case = await self._case(session, message["sending_case"], for_update=True)
        if case["state"] != State.SHEET_SENT:
            return
        moment = now()
        resident_id = case["resident_id"]
        await session.execute(
            update(insured_person)
            .where(insured_person.c.resident_id == resident_id)
            .values(status=PersonStatus.TRANSFERRED.value, transfer_lock=None, updated_at=moment)
        )
        await session.execute(
            update(contribution_period)
            .where(contribution_period.c.resident_id == resident_id, contribution_period.c.carried_out_by.is_(None))
            .values(carried_out_by=case["id"])
        )
        due_month = (moment.date().replace(day=28) + timedelta(days=4)).replace(day=1)  # next month's plan
        await session.execute(
            insert(settlement).values(
                id=f"{self.province}-S-{uuid.uuid4().hex[:16].upper()}",
                transfer_id=case["id"],
                peer_case=case["peer_case"],
                resident_id=resident_id,
                to_province=case["to_province"],
                amount=Decimal(case["sheet"]["fund_due"]),
                due_month=due_month,
                status="pending",
                created_at=moment,
            )
        )
        await self._move(session, case, State.COMPLETED, "receipt received; relationship closed, settlement due")

    async def on_cancellation(self, session: AsyncSession, envelope: Envelope) -> None:
        message = envelope.json()
        found = (
            await session.execute(
                select(transfer.c.id).where(
                    transfer.c.side == Side.SENDING, transfer.c.peer_case == message["receiving_case"]
                )
            )
        ).scalar()
        if found is None:
            raise LookupError(f"cancellation for unknown transfer {message['receiving_case']}")
        case = await self._case(session, found, for_update=True)
        if case["state"] != State.RECEIVED:
            return  # already answered: the sheet (or refusal) is on its way and wins
        await session.execute(
            update(insured_person)
            .where(insured_person.c.resident_id == case["resident_id"], insured_person.c.transfer_lock == case["id"])
            .values(transfer_lock=None)
        )
        await self._move(session, case, State.CANCELLED, "cancelled at the worker's request")
        await self._send(
            session,
            case["to_province"],
            CANCELLATION_CONFIRMED,
            case["peer_case"],
            {"receiving_case": case["peer_case"], "sending_case": case["id"]},
        )

    async def on_cancellation_confirmed(self, session: AsyncSession, envelope: Envelope) -> None:
        message = envelope.json()
        case = await self._case(session, message["receiving_case"], for_update=True)
        if case["state"] != State.CANCEL_REQUESTED:
            return
        await session.execute(
            update(transfer).where(transfer.c.id == case["id"]).values(peer_case=message["sending_case"])
        )
        await self._move(session, case, State.CANCELLED, "cancellation confirmed by the sending office")

    def handlers(self) -> dict[str, Any]:
        return {
            CONTACT_LETTER: self.on_contact_letter,
            INFORMATION_SHEET: self.on_information_sheet,
            REFUSAL: self.on_refusal,
            RECEIPT: self.on_receipt,
            CANCELLATION: self.on_cancellation,
            CANCELLATION_CONFIRMED: self.on_cancellation_confirmed,
        }

    # Internals --------------------------------------------------------------------------------------

    async def _send_sheet(self, session: AsyncSession, case: dict[str, Any]) -> dict[str, Any]:
        resident_id = case["resident_id"]
        person = (
            (await session.execute(select(insured_person).where(insured_person.c.resident_id == resident_id)))
            .mappings()
            .one()
        )
        config = await config_of(session, self.province)
        rows = (
            (
                await session.execute(
                    select(contribution_period)
                    .where(
                        contribution_period.c.resident_id == resident_id, contribution_period.c.carried_out_by.is_(None)
                    )
                    .order_by(contribution_period.c.start_month)
                )
            )
            .mappings()
            .all()
        )
        periods = [Period(r.start_month, r.end_month, PeriodKind(r.kind), r.province) for r in rows]
        sheet = transfer_out_sheet(
            periods,
            sending_province=self.province,
            status=PersonStatus(person["status"]),
            months_used=person["months_used"],
            benefit_months_paid=person["benefit_months_paid"],
            monthly_standard=Decimal(config["monthly_standard"]),
            fund_multiplier=Decimal(config["fund_multiplier"]),
        )
        sheet_json = jsonable(asdict(sheet))
        await session.execute(update(transfer).where(transfer.c.id == case["id"]).values(sheet=sheet_json))
        await session.execute(
            update(insured_person)
            .where(insured_person.c.resident_id == resident_id)
            .values(status=PersonStatus.TRANSFERRING.value, updated_at=now(), version=person["version"] + 1)
        )
        case = await self._move(session, {**case, "sheet": sheet_json}, State.SHEET_SENT, "information sheet sent")
        await self._send(
            session,
            case["to_province"],
            INFORMATION_SHEET,
            case["peer_case"],
            {
                "receiving_case": case["peer_case"],
                "sending_case": case["id"],
                "sheet": sheet_json,
                "hukou_division": person["hukou_division"],
                "periods": [
                    {
                        "start_month": r.start_month.isoformat(),
                        "end_month": r.end_month.isoformat(),
                        "kind": r.kind,
                        "province": r.province,
                        "employer_credit_code": r.employer_credit_code,
                    }
                    for r in rows
                ],
            },
        )
        return case

    async def _refuse(
        self, session: AsyncSession, case: dict[str, Any], reason: str, insert_step_only: bool = False
    ) -> dict[str, Any]:
        if not insert_step_only:
            await session.execute(
                update(insured_person)
                .where(
                    insured_person.c.resident_id == case["resident_id"], insured_person.c.transfer_lock == case["id"]
                )
                .values(transfer_lock=None)
            )
            await session.execute(update(transfer).where(transfer.c.id == case["id"]).values(refusal_reason=reason))
            case = await self._move(session, case, State.REFUSED, reason)
        else:
            await session.execute(update(transfer).where(transfer.c.id == case["id"]).values(refusal_reason=reason))
            await self._step(session, case, State.REFUSED, reason)
        await self._send(
            session,
            case["to_province"],
            REFUSAL,
            case["peer_case"],
            {"receiving_case": case["peer_case"], "sending_case": case["id"], "reason": reason},
        )
        return case

    async def _case(self, session: AsyncSession, case_id: str, for_update: bool = False) -> dict[str, Any]:
        query = select(transfer).where(transfer.c.id == case_id)
        if for_update:
            query = query.with_for_update()
        row = (await session.execute(query)).mappings().one_or_none()
        if row is None:
            raise LookupError(f"no transfer {case_id} on this node")
        return dict(row)

    async def _move(self, session: AsyncSession, case: dict[str, Any], state: State, note: str) -> dict[str, Any]:
        values: dict[str, Any] = {"state": state.value, "version": case["version"] + 1}
        if state in TERMINAL:
            values["closed_at"] = now()
        await session.execute(update(transfer).where(transfer.c.id == case["id"]).values(**values))
        case = {**case, **values}
        await self._step(session, case, state, note)
        return case

    async def _step(self, session: AsyncSession, case: Mapping[str, Any], state: State, note: str) -> None:
        moment = now()
        await session.execute(
            insert(transfer_step).values(
                transfer_id=case["id"], at=moment, state=state.value, province=self.province, note=note
            )
        )
        STEP_DURATION.labels(case["side"], state.value).observe(
            max((moment - as_utc(case["filed_at"])).total_seconds(), 0.0)
        )

    async def _send(self, session: AsyncSession, to: str, event_type: str, key: str, data: dict[str, Any]) -> None:
        await self.outbox.add(
            session,
            topic=inbox_topic(to, "insurance"),
            destination=to,
            event_type=event_type,
            key=key,
            subject=key,
            data=data,
        )

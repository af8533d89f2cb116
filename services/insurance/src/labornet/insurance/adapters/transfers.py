"""Transfers and insured persons in the database: a :class:`Transfer` is one ``transfer`` row plus its
``transfer_step`` timeline; an :class:`InsuredPerson` one ``insured_person`` row with its contribution periods."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import MultipleResultsFound
from sqlalchemy.ext.asyncio import AsyncSession

from labornet.insurance.adapters.tables import contribution_period, insured_person, transfer, transfer_step
from labornet.insurance.domain.rules import BenefitHistory, Period, PeriodKind, PersonStatus
from labornet.insurance.domain.transfer import (
    TERMINAL,
    InsuredPerson,
    Reason,
    Side,
    State,
    Step,
    Transfer,
)
from labornet.shared.db import as_utc, insert_of, update_of, update_parameters
from labornet.shared.direct import Direct

# Transfers ------------------------------------------------------------------------------------------------------


def transfer_columns(case: Transfer) -> dict[str, Any]:
    return {
        "id": case.id,
        "side": case.side.value,
        "peer_case": case.peer_case,
        "resident_id": case.resident_id,
        "person_name": case.person_name,
        "from_province": case.from_province,
        "to_province": case.to_province,
        "reason": case.reason.value,
        "new_employer_credit_code": case.new_employer_credit_code,
        "state": case.state.value,
        "filed_by": case.filed_by,
        "filed_at": case.filed_at,
        "answer_due": case.answer_due,
        "complete_due": case.complete_due,
        "sheet": case.sheet,
        "entitlement": case.entitlement,
        "refusal_reason": case.refusal_reason,
        "closed_at": case.closed_at,
        "version": case.version,
        "name_on_record": case.name_on_record,
    }


def transfer_of(row: Mapping[Any, Any], steps: Sequence[Mapping[Any, Any]] = ()) -> Transfer:
    return Transfer(
        id=row["id"],
        side=Side(row["side"]),
        peer_case=row["peer_case"],
        resident_id=row["resident_id"],
        person_name=row["person_name"],
        from_province=row["from_province"],
        to_province=row["to_province"],
        reason=Reason(row["reason"]),
        new_employer_credit_code=row["new_employer_credit_code"],
        state=State(row["state"]),
        filed_by=row["filed_by"],
        filed_at=as_utc(row["filed_at"]),
        answer_due=row["answer_due"],
        complete_due=row["complete_due"],
        version=row["version"],
        timeline=tuple(
            Step(at=as_utc(s["at"]), state=State(s["state"]), province=s["province"], note=s["note"] or "")
            for s in steps
        ),
        sheet=row["sheet"],
        entitlement=row["entitlement"],
        refusal_reason=row["refusal_reason"],
        closed_at=as_utc(row["closed_at"]) if row["closed_at"] is not None else None,
        name_on_record=row["name_on_record"],
    )


_STEP_COLUMNS = [
    transfer_step.c.id.label("step_id"),
    transfer_step.c.at.label("step_at"),
    transfer_step.c.state.label("step_state"),
    transfer_step.c.province.label("step_province"),
    transfer_step.c.note.label("step_note"),
]


def _load_query(condition: ColumnElement[bool], for_update: bool) -> Any:
    """The case and its timeline in one query (one row per step; a case has a handful)."""
    query = (
        select(transfer, *_STEP_COLUMNS)
        .select_from(transfer.outerjoin(transfer_step, transfer_step.c.transfer_id == transfer.c.id))
        .where(condition)
        .order_by(transfer_step.c.id)
    )
    return query.with_for_update(of=transfer) if for_update else query


# The saga's reads and writes are built once, the values passed as parameters: building a statement costs more
# Python than the database spends running it, and every step of every transfer runs several. They run on the
# driver (ADR 38): SQLAlchemy's execution costs three times the driver's.
_BY_ID = transfer.c.id == bindparam("case_id")
_SENDING_FOR = and_(transfer.c.side == Side.SENDING.value, transfer.c.peer_case == bindparam("receiving_case"))
_LOAD = {for_update: Direct(_load_query(_BY_ID, for_update)) for for_update in (False, True)}
_LOAD_SENDING = {for_update: Direct(_load_query(_SENDING_FOR, for_update)) for for_update in (False, True)}


async def _loaded(session: AsyncSession, query: Direct, parameters: dict[str, Any]) -> Transfer | None:
    rows = (await query.execute(session, parameters)).rows
    if not rows:
        return None
    if len({row["id"] for row in rows}) > 1:
        raise MultipleResultsFound("more than one transfer matches")
    steps = [
        {"at": r["step_at"], "state": r["step_state"], "province": r["step_province"], "note": r["step_note"]}
        for r in rows
        if r["step_id"] is not None
    ]
    return transfer_of(rows[0], steps)


async def load(session: AsyncSession, case_id: str, *, for_update: bool = False) -> Transfer | None:
    return await _loaded(session, _LOAD[for_update], {"case_id": case_id})


async def load_sending(session: AsyncSession, receiving_case: str, *, for_update: bool = False) -> Transfer | None:
    """This node's sending case answering ``receiving_case`` (another province's case number)."""
    return await _loaded(session, _LOAD_SENDING[for_update], {"receiving_case": receiving_case})


_INSERT_STEP = Direct(insert(transfer_step))
_INSERT_TRANSFER = Direct(insert_of(transfer))
_REPLACE_TRANSFER = Direct(update_of(transfer, "id", "version"))

# On PostgreSQL a case written and its new steps are one statement, a data-modifying WITH (a round trip less for
# each of the saga's steps on either node): the steps come as arrays, one per column, inserted in timeline order.
_STEP_FIELDS = ("at", "state", "province", "note")


def _new_steps(case_id: Any) -> Any:
    """``SELECT <case id>, at, state, province, note FROM unnest(<step arrays>) WITH ORDINALITY``, in order."""
    arrays = [bindparam(f"step_{name}", type_=ARRAY(transfer_step.c[name].type)) for name in _STEP_FIELDS]
    steps = func.unnest(*arrays).table_valued(*_STEP_FIELDS, with_ordinality="position").render_derived()
    return select(case_id, *(steps.c[name] for name in _STEP_FIELDS)).select_from(steps).order_by(steps.c.position)


def _with_steps(written: Any) -> Any:
    """The statement that runs ``written`` (an INSERT or UPDATE of the case, returning its id) and inserts the new
    steps for the case it returned; it answers the number of cases written (0: an UPDATE found another version)."""
    case = written.returning(transfer.c.id).cte("written_case")
    steps = (
        insert(transfer_step)
        .from_select(["transfer_id", *_STEP_FIELDS], _new_steps(case.c.id).select_from(case))
        .cte("written_steps")
    )
    return select(func.count()).select_from(case).add_cte(steps)


_CASE_VALUES = {column.name: bindparam(column.name, type_=column.type) for column in transfer.c}
_ADD_WITH_STEPS = Direct(_with_steps(insert(transfer).values(_CASE_VALUES)))
_REPLACE_WITH_STEPS = Direct(
    _with_steps(
        update(transfer)
        .where(transfer.c.id == bindparam("where_id"), transfer.c.version == bindparam("where_version"))
        .values(_CASE_VALUES)
    )
)


def _step_arrays(steps: Sequence[Step]) -> dict[str, list[Any]]:
    return {
        "step_at": [s.at for s in steps],
        "step_state": [s.state.value for s in steps],
        "step_province": [s.province for s in steps],
        "step_note": [s.note for s in steps],
    }


async def _append(session: AsyncSession, case_id: str, steps: Sequence[Step]) -> None:
    """The new steps in one statement (ids in timeline order: the rows are inserted in the order given). An
    executemany rather than a multi-row VALUES, whose SQL differs with the number of rows and is compiled again
    every time."""
    if not steps:
        return
    await _INSERT_STEP.executemany(
        session,
        [
            {"transfer_id": case_id, "at": s.at, "state": s.state.value, "province": s.province, "note": s.note}
            for s in steps
        ],
    )


async def add(session: AsyncSession, case: Transfer) -> None:
    """Store a new case (an IntegrityError if the person has another open case here)."""
    if session.get_bind().dialect.name == "postgresql":
        await _ADD_WITH_STEPS.execute(session, {**transfer_columns(case), **_step_arrays(case.timeline)})
        return
    await _INSERT_TRANSFER.execute(session, transfer_columns(case))
    await _append(session, case.id, case.timeline)


async def replace(session: AsyncSession, before: Transfer, after: Transfer) -> bool:
    """Store ``after`` over ``before``; False if the row changed in between. The timeline only grows."""
    held = len(before.timeline)
    if after.timeline[:held] != before.timeline:
        raise ValueError(f"transfer {after.id} version {after.version} rewrites the timeline of {before.version}")
    parameters = update_parameters(transfer_columns(after), id=before.id, version=before.version)
    if session.get_bind().dialect.name == "postgresql":
        parameters |= _step_arrays(after.timeline[held:])
        return bool((await _REPLACE_WITH_STEPS.execute(session, parameters)).scalar_one())
    result = await _REPLACE_TRANSFER.execute(session, parameters)
    if result.rowcount != 1:
        return False
    await _append(session, after.id, after.timeline[held:])
    return True


def overdue_clause(today: date) -> ColumnElement[bool]:
    """SQL form of :func:`labornet.insurance.domain.transfer.is_overdue`."""
    return and_(
        transfer.c.state.not_in(TERMINAL),
        or_(
            transfer.c.complete_due < today,
            and_(transfer.c.side == Side.SENDING, transfer.c.state == State.RECEIVED, transfer.c.answer_due < today),
        ),
    )


async def listed(
    session: AsyncSession,
    *,
    limit: int,
    resident_id: str | None = None,
    side: str | None = None,
    state: str | None = None,
    overdue_on: date | None = None,
    after: str | None = None,
) -> list[Transfer]:
    """Cases in case-number order (without their timelines), ``limit + 1`` at most to tell if more follow."""
    query = select(transfer).order_by(transfer.c.id).limit(limit + 1)
    if resident_id is not None:
        query = query.where(transfer.c.resident_id == resident_id)
    if side:
        query = query.where(transfer.c.side == side)
    if state:
        query = query.where(transfer.c.state == state)
    if overdue_on is not None:
        query = query.where(overdue_clause(overdue_on))
    if after:
        query = query.where(transfer.c.id > after)
    return [transfer_of(row) for row in (await session.execute(query)).mappings()]


_LAST_CARRIED_IN = Direct(
    select(transfer.c.sheet)
    .where(
        transfer.c.resident_id == bindparam("resident_id"),
        transfer.c.side == Side.RECEIVING.value,
        transfer.c.state == State.COMPLETED.value,
    )
    .order_by(transfer.c.closed_at.desc(), transfer.c.id.desc())
    .limit(1)
)


async def fund_carried_in(session: AsyncSession, resident_id: str) -> bool:
    """Whether the transfer that last brought the person here brought their fund too."""
    sheet = (await _LAST_CARRIED_IN.execute(session, {"resident_id": resident_id})).scalar()
    return sheet is not None and Decimal(str(sheet["fund_due"])) > 0


async def counts(session: AsyncSession) -> dict[tuple[str, ...], float]:
    rows = await session.execute(
        select(
            transfer.c.side, transfer.c.state, transfer.c.from_province, transfer.c.to_province, func.count()
        ).group_by(transfer.c.side, transfer.c.state, transfer.c.from_province, transfer.c.to_province)
    )
    return {(side, state, source, target): count for side, state, source, target, count in rows}


async def overdue_count(session: AsyncSession, side: Side, today: date) -> int:
    query = select(func.count()).where(transfer.c.side == side.value, overdue_clause(today))
    return int((await session.execute(query)).scalar_one())


# Insured persons ------------------------------------------------------------------------------------------------


def person_of(row: Mapping[Any, Any]) -> InsuredPerson:
    return InsuredPerson(
        resident_id=row["resident_id"],
        name=row["name"],
        hukou_division=row["hukou_division"],
        status=PersonStatus(row["status"]),
        employer_credit_code=row["employer_credit_code"],
        history=BenefitHistory(row["months_used"], row["benefit_months_paid"], row["earlier_unclaimed_months"]),
        transfer_lock=row["transfer_lock"],
        version=row["version"],
    )


def person_columns(person: InsuredPerson) -> dict[str, Any]:
    return {
        "resident_id": person.resident_id,
        "name": person.name,
        "hukou_division": person.hukou_division,
        "status": person.status.value,
        "employer_credit_code": person.employer_credit_code,
        "months_used": person.history.months_used,
        "benefit_months_paid": person.history.benefit_months_paid,
        "earlier_unclaimed_months": person.history.earlier_unclaimed_months,
        "transfer_lock": person.transfer_lock,
        "version": person.version,
    }


_PERSON_QUERY = select(insured_person).where(insured_person.c.resident_id == bindparam("resident_id"))
_PERSON = {False: Direct(_PERSON_QUERY), True: Direct(_PERSON_QUERY.with_for_update())}
_INSERT_PERSON = Direct(insert_of(insured_person))
_UPDATE_PERSON = Direct(update_of(insured_person, "resident_id", "version"))


async def load_person(session: AsyncSession, resident_id: str, *, for_update: bool = False) -> InsuredPerson | None:
    rows = (await _PERSON[for_update].execute(session, {"resident_id": resident_id})).rows
    if len(rows) > 1:
        raise MultipleResultsFound(f"more than one record of {resident_id}")
    return person_of(rows[0]) if rows else None


async def save_person(session: AsyncSession, before: InsuredPerson | None, after: InsuredPerson, at: datetime) -> bool:
    """Insert or update the record; False if it changed since ``before`` was read."""
    if before is None:
        await _INSERT_PERSON.execute(session, {**person_columns(after), "created_at": at, "updated_at": at})
        return True
    result = await _UPDATE_PERSON.execute(
        session,
        update_parameters(
            {**person_columns(after), "updated_at": at}, resident_id=before.resident_id, version=before.version
        ),
    )
    return result.rowcount == 1


async def person_record(session: AsyncSession, resident_id: str) -> dict[str, Any] | None:
    """The record as officers see it: the row with every contribution period it ever held."""
    row = (
        (await session.execute(select(insured_person).where(insured_person.c.resident_id == resident_id)))
        .mappings()
        .one_or_none()
    )
    if row is None:
        return None
    periods = await session.execute(
        select(contribution_period)
        .where(contribution_period.c.resident_id == resident_id)
        .order_by(contribution_period.c.start_month, contribution_period.c.id)
    )
    return dict(row) | {
        "periods": [{k: v for k, v in p.items() if k not in ("id", "resident_id")} for p in periods.mappings()]
    }


def _period(row: Any) -> Period:
    return Period(
        row["start_month"], row["end_month"], PeriodKind(row["kind"]), row["province"], row["employer_credit_code"]
    )


# (parameters of an update are named unlike the table's columns: a parameter named after a column sets it)
_LIVE = and_(contribution_period.c.resident_id == bindparam("person"), contribution_period.c.carried_out_by.is_(None))
_LIVE_PERIODS = Direct(select(contribution_period).where(_LIVE).order_by(contribution_period.c.start_month))
_CARRY_OUT = Direct(update(contribution_period).where(_LIVE).values(carried_out_by=bindparam("carried_by")))
_ADD_PERIODS = Direct(insert(contribution_period))


async def live_periods(session: AsyncSession, resident_id: str) -> list[Period]:
    """The periods this province holds of the person (not carried out by a transfer)."""
    return [_period(row) for row in (await _LIVE_PERIODS.execute(session, {"person": resident_id})).rows]


async def add_periods(
    session: AsyncSession, resident_id: str, periods: Sequence[Period], *, carried_in_by: str | None
) -> None:
    """The periods in one statement."""
    if not periods:
        return
    await _ADD_PERIODS.executemany(
        session,
        [
            {
                "resident_id": resident_id,
                "start_month": period.start,
                "end_month": period.end,
                "kind": period.kind.value,
                "province": period.province,
                "employer_credit_code": period.employer_credit_code,
                "carried_in_by": carried_in_by,
            }
            for period in periods
        ],
    )


async def carry_out(session: AsyncSession, resident_id: str, case_id: str) -> None:
    await _CARRY_OUT.execute(session, {"person": resident_id, "carried_by": case_id})

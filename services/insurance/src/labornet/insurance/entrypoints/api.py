"""HTTP API of the insurance service.

Workers (role ``worker``; the token's ``resident_id`` claim, or its ``sub``, is their resident identity number)
file transfers to this province, follow and cancel their own. Officers of this province file on a worker's
behalf, answer requests addressed to this province, manage records, settlements and the benefit configuration.
Another person's transfer or record answers 404, never 403, so existence does not leak. Identity numbers are
shown in full only to the person and to this province's officers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from labornet.insurance.adapters.tables import (
    benefit_config,
    contribution_period,
    insured_person,
    settlement,
    transfer,
    transfer_step,
)
from labornet.insurance.domain.transfer import Reason, TransferRefused, is_overdue
from labornet.insurance.service_layer.records import (
    BenefitConfigIn,
    PersonIn,
    RecordConflict,
    add_person,
    parse_csv,
)
from labornet.insurance.service_layer.transfers import TransferService, overdue_clause, today_in_china
from labornet.shared.app import Runtime, RuntimeDep
from labornet.shared.auth import Principal, Role, current_principal, require_province_role
from labornet.shared.identifiers import (
    CreditCodeStr,
    ResidentIdStr,
    mask_resident_id,
)
from labornet.shared.problems import Conflict, Forbidden, NotFound, Problem, Unprocessable

router = APIRouter(prefix="/api/v1", tags=["insurance"])
OfficerDep = Annotated[Principal, Depends(require_province_role(Role.OFFICER))]
CallerDep = Annotated[Principal, Depends(current_principal)]


def transfers(runtime: Runtime) -> TransferService:
    service: TransferService = runtime.extras["transfers"]
    return service


def own_resident_id(principal: Principal) -> str:
    if principal.resident_id is None:
        raise Forbidden("your token does not carry a resident identity number (claim resident_id or sub)")
    return principal.resident_id


def is_officer_here(principal: Principal, runtime: Runtime) -> bool:
    return principal.has(Role.OFFICER) and principal.province == runtime.settings.province


def shown(resident_id: str, principal: Principal, runtime: Runtime) -> str:
    if is_officer_here(principal, runtime):
        return resident_id
    if principal.resident_id == resident_id:
        return resident_id
    return mask_resident_id(resident_id)


def present(row: Any, principal: Principal, runtime: Runtime) -> dict[str, Any]:
    data = dict(row)
    if "resident_id" in data:
        data["resident_id"] = shown(data["resident_id"], principal, runtime)
    if "complete_due" in data:  # a transfer case: flag it when past a time limit
        data["overdue"] = is_overdue(
            side=data["side"],
            state=data["state"],
            answer_due=data["answer_due"],
            complete_due=data["complete_due"],
            today=today_in_china(),
        )
    return data


def allowed_to_see(case: Any, principal: Principal, runtime: Runtime) -> bool:
    if is_officer_here(principal, runtime):
        return True
    return bool(case["side"] == "receiving" and principal.resident_id == case["resident_id"])


# Transfers -------------------------------------------------------------------------------------------


class TransferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    from_province: str = Field(pattern=r"^\d{2}0000$", description="the last place of insurance")
    reason: Reason
    name: str = Field(min_length=1, max_length=100, description="the person's name as registered")
    new_employer_credit_code: CreditCodeStr | None = None
    resident_id: ResidentIdStr | None = Field(None, description="officers only: whom the request is for")

    @model_validator(mode="after")
    def _employer_for_employment(self) -> TransferRequest:
        if self.reason == Reason.NEW_EMPLOYMENT and self.new_employer_credit_code is None:
            raise ValueError("new_employer_credit_code is required when the reason is new-employment")
        return self


@router.post("/transfers", status_code=status.HTTP_201_CREATED)
async def file_transfer(
    body: TransferRequest, runtime: RuntimeDep, principal: CallerDep, response: Response
) -> dict[str, Any]:
    """File a transfer of the unemployment-insurance relationship *to* this province."""
    if body.from_province not in runtime.registry:
        raise Unprocessable(
            f"province {body.from_province} is not a member of the federation",
            errors=[{"field": "body.from_province", "message": "not a federation member"}],
        )
    if is_officer_here(principal, runtime):
        if body.resident_id is None:
            raise Unprocessable(
                "officers say whom the request is for: resident_id",
                errors=[{"field": "body.resident_id", "message": "required for officers"}],
            )
        resident_id = body.resident_id
    elif principal.has(Role.WORKER):
        resident_id = own_resident_id(principal)
        if body.resident_id is not None and body.resident_id != resident_id:
            raise Forbidden("workers file transfers for themselves only")
    else:
        raise Forbidden("filing a transfer needs the role worker, or officer of this province")
    try:
        case = await transfers(runtime).file(
            resident_id=resident_id,
            name=body.name,
            from_province=body.from_province,
            reason=body.reason,
            new_employer=body.new_employer_credit_code,
            filed_by=principal.sub,
        )
    except TransferRefused as exc:
        raise Conflict(str(exc), slug="transfer-refused") from exc
    response.headers["Location"] = f"/api/v1/transfers/{case['id']}"
    return present(case, principal, runtime)


@router.get("/transfers")
async def list_transfers(
    runtime: RuntimeDep,
    principal: CallerDep,
    state: str | None = None,
    side: Literal["receiving", "sending"] | None = None,
    overdue: bool = False,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: Annotated[str | None, Query(max_length=60)] = None,
) -> dict[str, Any]:
    """Officers: every case of this node (filters); workers: their own requests."""
    query = select(transfer).order_by(transfer.c.id).limit(limit + 1)
    if not is_officer_here(principal, runtime):
        if not principal.has(Role.WORKER):
            raise Forbidden("listing transfers needs the role worker, or officer of this province")
        query = query.where(transfer.c.side == "receiving", transfer.c.resident_id == own_resident_id(principal))
    if state:
        query = query.where(transfer.c.state == state)
    if side:
        query = query.where(transfer.c.side == side)
    if overdue:
        query = query.where(overdue_clause(today_in_china()))
    if after:
        query = query.where(transfer.c.id > after)
    async with runtime.read_sessions() as session:
        rows = (await session.execute(query)).mappings().all()
    items = [present(r, principal, runtime) for r in rows[:limit]]
    return {"items": items, "next_after": items[-1]["id"] if len(rows) > limit else None}


@router.get("/transfers/{case_id}")
async def get_transfer(case_id: str, runtime: RuntimeDep, principal: CallerDep) -> dict[str, Any]:
    """One case with its timeline."""
    async with runtime.read_sessions() as session:
        case = (await session.execute(select(transfer).where(transfer.c.id == case_id))).mappings().one_or_none()
        if case is None or not allowed_to_see(case, principal, runtime):
            raise NotFound(f"no transfer {case_id}")
        steps = (
            (
                await session.execute(
                    select(transfer_step.c.at, transfer_step.c.state, transfer_step.c.province, transfer_step.c.note)
                    .where(transfer_step.c.transfer_id == case_id)
                    .order_by(transfer_step.c.id)
                )
            )
            .mappings()
            .all()
        )
    return present(case, principal, runtime) | {"timeline": [dict(s) for s in steps]}


@router.post("/transfers/{case_id}/cancel")
async def cancel_transfer(case_id: str, runtime: RuntimeDep, principal: CallerDep) -> dict[str, Any]:
    async with runtime.read_sessions() as session:
        case = (await session.execute(select(transfer).where(transfer.c.id == case_id))).mappings().one_or_none()
    if case is None or not allowed_to_see(case, principal, runtime):
        raise NotFound(f"no transfer {case_id}")
    try:
        return present(await transfers(runtime).cancel(case_id), principal, runtime)
    except TransferRefused as exc:
        raise Conflict(str(exc), slug="not-cancellable") from exc


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["send-sheet", "refuse"]
    reason: str | None = Field(None, max_length=500)


@router.post("/transfers/{case_id}/answer")
async def answer_transfer(case_id: str, body: Answer, runtime: RuntimeDep, principal: OfficerDep) -> dict[str, Any]:
    """The sending office answers a contact letter: the information sheet, or a refusal with a reason."""
    if body.decision == "refuse" and not body.reason:
        raise Unprocessable("a refusal needs a reason", errors=[{"field": "body.reason", "message": "required"}])
    try:
        return present(
            await transfers(runtime).answer(case_id, send_sheet=body.decision == "send-sheet", reason=body.reason),
            principal,
            runtime,
        )
    except LookupError as exc:
        raise NotFound(str(exc)) from exc
    except TransferRefused as exc:
        raise Conflict(str(exc), slug="not-answerable") from exc


# Records ---------------------------------------------------------------------------------------------


@router.post("/insured-persons", status_code=status.HTTP_201_CREATED)
async def create_person(body: PersonIn, runtime: RuntimeDep, _officer: OfficerDep) -> dict[str, Any]:
    try:
        async with runtime.sessions() as session, session.begin():
            await add_person(session, runtime.settings.province, body)
    except RecordConflict as exc:
        raise Conflict(str(exc)) from exc
    except IntegrityError as exc:
        raise Conflict("this person already has a record in this province") from exc
    return {"resident_id": body.resident_id, "periods": len(body.periods)}


@router.get("/insured-persons/{resident_id}")
async def get_person(resident_id: str, runtime: RuntimeDep, principal: CallerDep) -> dict[str, Any]:
    """A record with its contribution periods (officers; a worker sees their own only)."""
    if not is_officer_here(principal, runtime) and not (
        principal.has(Role.WORKER) and own_resident_id(principal) == resident_id
    ):
        raise NotFound(f"no record {mask_resident_id(resident_id)}")
    async with runtime.read_sessions() as session:
        person = (
            (await session.execute(select(insured_person).where(insured_person.c.resident_id == resident_id)))
            .mappings()
            .one_or_none()
        )
        if person is None:
            raise NotFound(f"no record {mask_resident_id(resident_id)}")
        periods = (
            (
                await session.execute(
                    select(contribution_period)
                    .where(contribution_period.c.resident_id == resident_id)
                    .order_by(contribution_period.c.start_month)
                )
            )
            .mappings()
            .all()
        )
    return present(person, principal, runtime) | {
        "periods": [{k: v for k, v in p.items() if k not in ("id", "resident_id")} for p in periods]
    }


@router.post("/insured-persons/import")
async def import_persons(request: Request, runtime: RuntimeDep, _officer: OfficerDep) -> dict[str, Any]:
    """Bulk import of existing records from CSV (UTF-8, one contribution period per row): all or nothing."""
    raw = await request.body()
    if len(raw) > 20 * 1024 * 1024:
        raise Problem("the file is larger than 20 MiB; split it", status=413, slug="too-large")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Unprocessable("the file is not UTF-8 text") from exc
    persons, errors = parse_csv(text)
    if not errors:
        async with runtime.sessions() as session:
            try:
                async with session.begin():
                    for line, person in enumerate(persons):
                        try:
                            async with session.begin_nested():
                                await add_person(session, runtime.settings.province, person)
                        except (RecordConflict, IntegrityError) as exc:
                            errors.append(
                                {
                                    "line": line + 2,
                                    "field": "resident_id",
                                    "message": f"{mask_resident_id(person.resident_id)}: {exc}",
                                }
                            )
                    if errors:
                        raise RecordConflict("rolled back")
            except RecordConflict:
                pass
    if errors:
        raise Unprocessable(
            f"{len(errors)} row(s) are not valid; nothing was imported", slug="import-rejected", errors=errors
        )
    return {"imported_persons": len(persons), "imported_periods": sum(len(p.periods) for p in persons)}


# Settlements and configuration -----------------------------------------------------------------------


@router.get("/settlements")
async def list_settlements(
    runtime: RuntimeDep, _officer: OfficerDep, status_: Annotated[str | None, Query(alias="status")] = None
) -> dict[str, Any]:
    query = select(settlement).order_by(settlement.c.due_month, settlement.c.id)
    if status_:
        query = query.where(settlement.c.status == status_)
    async with runtime.read_sessions() as session:
        rows = (await session.execute(query)).mappings().all()
    return {"items": [dict(r) for r in rows]}


@router.post("/settlements/{settlement_id}/paid")
async def mark_paid(settlement_id: str, runtime: RuntimeDep, officer: OfficerDep) -> dict[str, Any]:
    async with runtime.sessions() as session, session.begin():
        result = await session.execute(
            update(settlement)
            .where(settlement.c.id == settlement_id, settlement.c.status == "pending")
            .values(status="paid", paid_at=datetime.now(UTC), paid_by=officer.sub)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            exists = (
                await session.execute(select(settlement.c.status).where(settlement.c.id == settlement_id))
            ).scalar()
            if exists is None:
                raise NotFound(f"no settlement {settlement_id}")
            raise Conflict(f"settlement {settlement_id} is already {exists}")
        row = (await session.execute(select(settlement).where(settlement.c.id == settlement_id))).mappings().one()
    return dict(row)


@router.get("/benefit-config")
async def get_config(runtime: RuntimeDep) -> dict[str, Any]:
    """This province's benefit standard and time limits (public)."""
    async with runtime.read_sessions() as session:
        row = (
            (
                await session.execute(
                    select(benefit_config).where(benefit_config.c.province == runtime.settings.province)
                )
            )
            .mappings()
            .one()
        )
    return dict(row)


@router.put("/benefit-config")
async def put_config(body: BenefitConfigIn, runtime: RuntimeDep, _officer: OfficerDep) -> dict[str, Any]:
    async with runtime.sessions() as session, session.begin():
        await session.execute(
            update(benefit_config)
            .where(benefit_config.c.province == runtime.settings.province)
            .values(**body.model_dump(), updated_at=datetime.now(UTC))
        )
    return await get_config(runtime)

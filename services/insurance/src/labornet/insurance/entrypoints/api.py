"""HTTP API of the insurance service.

Workers (role ``worker``; the token's ``resident_id`` claim, or its ``sub``, is their resident identity number)
file transfers to this province, follow and cancel their own. Officers of this province file on a worker's
behalf, answer requests addressed to this province, manage records, settlements and the benefit configuration.
Another person's transfer or record answers 404, never 403, so existence does not leak. Identity numbers are
shown in full only to the person and to this province's officers.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from labornet.insurance.domain.settlement import Direction, Settlement, SettlementRuleError, SettlementStatus
from labornet.insurance.domain.transfer import (
    Reason,
    SheetAlreadySent,
    State,
    Transfer,
    TransferRefused,
    WrongNode,
    is_overdue,
)
from labornet.insurance.entrypoints.schemas import (
    BenefitConfigView,
    ImportSummary,
    InsuredPersonView,
    PersonCreated,
    SettlementList,
    SettlementView,
    TransferDetail,
    TransferPage,
    TransferView,
)
from labornet.insurance.service_layer.records import (
    BenefitConfigIn,
    PersonIn,
    RecordConflict,
    RecordService,
    parse_csv,
)
from labornet.insurance.service_layer.transfers import TransferService, jsonable_transfer
from labornet.shared.app import Runtime, RuntimeDep
from labornet.shared.auth import Principal, Role, current_principal, require_province_role
from labornet.shared.clock import today_in_china
from labornet.shared.identifiers import (
    CreditCodeStr,
    ResidentIdStr,
    mask_resident_id,
)
from labornet.shared.problems import Conflict, Forbidden, NotFound, Unprocessable, problem_responses

router = APIRouter(prefix="/api/v1", tags=["insurance"])
OfficerDep = Annotated[Principal, Depends(require_province_role(Role.OFFICER))]
CallerDep = Annotated[Principal, Depends(current_principal)]


def transfers(runtime: Runtime) -> TransferService:
    service: TransferService = runtime.extras["transfers"]
    return service


def records(runtime: Runtime) -> RecordService:
    service: RecordService = runtime.extras["records"]
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


def present(case: Transfer, principal: Principal, runtime: Runtime) -> dict[str, Any]:
    """A case as the caller may see it (:class:`TransferView`), flagged when past a time limit or when the names
    differ."""
    data = jsonable_transfer(case)
    data["resident_id"] = shown(case.resident_id, principal, runtime)
    data["overdue"] = is_overdue(
        side=case.side,
        state=case.state,
        answer_due=case.answer_due,
        complete_due=case.complete_due,
        today=today_in_china(),
    )
    return data


def allowed_to_see(case: Transfer, principal: Principal, runtime: Runtime) -> bool:
    if is_officer_here(principal, runtime):
        return True
    return bool(case.side == "receiving" and principal.resident_id == case.resident_id)


# Transfers -------------------------------------------------------------------------------------------


class TransferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    from_province: str = Field(pattern=r"^\d{2}0000$", description="the last place of insurance")
    reason: Reason
    person_name: str | None = Field(
        None, min_length=1, max_length=100, description="the person's name as registered (as transfers show it)"
    )
    name: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="deprecated: the same as person_name, which transfers show; still accepted",
        json_schema_extra={"deprecated": True},
    )
    new_employer_credit_code: CreditCodeStr | None = None
    resident_id: ResidentIdStr | None = Field(None, description="officers only: whom the request is for")
    to_province: str | None = Field(
        None, pattern=r"^\d{2}0000$", description="optional: the province moved to, checked against this node"
    )

    @model_validator(mode="after")
    def _employer_for_employment(self) -> TransferRequest:
        if self.reason == Reason.NEW_EMPLOYMENT and self.new_employer_credit_code is None:
            raise ValueError("new_employer_credit_code is required when the reason is new-employment")
        return self

    @model_validator(mode="after")
    def _one_name(self) -> TransferRequest:
        if self.person_name is None and self.name is None:
            raise ValueError("person_name is required: the person's name as registered")
        if self.person_name is not None and self.name is not None and self.person_name != self.name:
            raise ValueError("person_name and name (its deprecated form) differ: send person_name alone")
        return self

    @property
    def registered_name(self) -> str:
        name = self.person_name or self.name
        assert name is not None  # checked by _one_name
        return name


@router.post(
    "/transfers",
    status_code=status.HTTP_201_CREATED,
    responses={
        201: {"headers": {"Location": {"description": "the case's address", "schema": {"type": "string"}}}},
        **problem_responses(401, 403, 409, 413, 422),
    },
)
async def file_transfer(
    body: TransferRequest, runtime: RuntimeDep, principal: CallerDep, response: Response
) -> TransferView:
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
            name=body.registered_name,
            from_province=body.from_province,
            reason=body.reason,
            new_employer=body.new_employer_credit_code,
            filed_by=principal.sub,
            to_province=body.to_province,
        )
    except WrongNode as exc:
        raise Conflict(str(exc), slug="wrong-node", file_at=exc.file_at) from exc
    except TransferRefused as exc:
        raise Conflict(str(exc), slug="transfer-refused") from exc
    response.headers["Location"] = f"/api/v1/transfers/{case.id}"
    return TransferView.model_validate(present(case, principal, runtime))


@router.get("/transfers", responses=problem_responses(401, 403, 422))
async def list_transfers(
    runtime: RuntimeDep,
    principal: CallerDep,
    state: Annotated[
        str | None, Query(description=f"one of {', '.join(s.value for s in State)}; another value finds nothing")
    ] = None,
    side: Literal["receiving", "sending"] | None = None,
    overdue: bool = False,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: Annotated[str | None, Query(max_length=60)] = None,
) -> TransferPage:
    """Officers: every case of this node (filters); workers: their own requests."""
    resident_id = None
    if not is_officer_here(principal, runtime):
        if not principal.has(Role.WORKER):
            raise Forbidden("listing transfers needs the role worker, or officer of this province")
        resident_id, side = own_resident_id(principal), "receiving"
    cases = await transfers(runtime).listed(
        limit=limit,
        resident_id=resident_id,
        side=side,
        state=state,
        overdue_on=today_in_china() if overdue else None,
        after=after,
    )
    items = [present(c, principal, runtime) for c in cases[:limit]]
    return TransferPage.model_validate({"items": items, "next_after": items[-1]["id"] if len(cases) > limit else None})


@router.get("/transfers/{case_id}", responses=problem_responses(401, 404))
async def get_transfer(case_id: str, runtime: RuntimeDep, principal: CallerDep) -> TransferDetail:
    """One case with its timeline."""
    case = await transfers(runtime).get(case_id)
    if case is None or not allowed_to_see(case, principal, runtime):
        raise NotFound(f"no transfer {case_id}")
    return TransferDetail.model_validate(
        present(case, principal, runtime) | {"timeline": [asdict(step) for step in case.timeline]}
    )


@router.post("/transfers/{case_id}/cancel", responses=problem_responses(401, 404, 409))
async def cancel_transfer(case_id: str, runtime: RuntimeDep, principal: CallerDep) -> TransferView:
    """The worker withdraws the request while the sending office has not answered. Once the information sheet
    has arrived the answer is 409 ``sheet-already-sent``; a cancellation that crosses the sheet is noted in both
    timelines and the transfer completes."""
    case = await transfers(runtime).get(case_id)
    if case is None or not allowed_to_see(case, principal, runtime):
        raise NotFound(f"no transfer {case_id}")
    try:
        cancelled = await transfers(runtime).cancel(case_id)
        return TransferView.model_validate(present(cancelled, principal, runtime))
    except SheetAlreadySent as exc:
        raise Conflict(str(exc), slug="sheet-already-sent") from exc
    except TransferRefused as exc:
        raise Conflict(str(exc), slug="not-cancellable") from exc


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["send-sheet", "refuse"]
    reason: str | None = Field(None, max_length=500)


@router.post("/transfers/{case_id}/answer", responses=problem_responses(401, 403, 404, 409, 413, 422))
async def answer_transfer(case_id: str, body: Answer, runtime: RuntimeDep, principal: OfficerDep) -> TransferView:
    """The sending office answers a contact letter: the information sheet, or a refusal with a reason. A case
    whose request names the person otherwise than the record (``name_mismatch``) is the officer's call."""
    if body.decision == "refuse" and not body.reason:
        raise Unprocessable("a refusal needs a reason", errors=[{"field": "body.reason", "message": "required"}])
    try:
        answered = await transfers(runtime).answer(
            case_id, send_sheet=body.decision == "send-sheet", reason=body.reason
        )
    except LookupError as exc:
        raise NotFound(str(exc)) from exc
    except TransferRefused as exc:
        raise Conflict(str(exc), slug="not-answerable") from exc
    return TransferView.model_validate(present(answered, principal, runtime))


# Records ---------------------------------------------------------------------------------------------


@router.post(
    "/insured-persons", status_code=status.HTTP_201_CREATED, responses=problem_responses(401, 403, 409, 413, 422)
)
async def create_person(body: PersonIn, runtime: RuntimeDep, _officer: OfficerDep) -> PersonCreated:
    """Record a person with their contribution periods (officers of this province)."""
    try:
        await records(runtime).add(body)
    except RecordConflict as exc:
        raise Conflict(str(exc)) from exc
    return PersonCreated(resident_id=body.resident_id, periods=len(body.periods))


@router.get("/insured-persons/{resident_id}", responses=problem_responses(401, 403, 404))
async def get_person(resident_id: str, runtime: RuntimeDep, principal: CallerDep) -> InsuredPersonView:
    """A record with its contribution periods (officers; a worker sees their own only)."""
    if not is_officer_here(principal, runtime) and not (
        principal.has(Role.WORKER) and own_resident_id(principal) == resident_id
    ):
        raise NotFound(f"no record {mask_resident_id(resident_id)}")
    record = await records(runtime).record(resident_id)
    if record is None:
        raise NotFound(f"no record {mask_resident_id(resident_id)}")
    return InsuredPersonView.model_validate(record | {"resident_id": shown(resident_id, principal, runtime)})


CSV_BODY = {
    "required": True,
    "content": {
        "text/csv": {
            "schema": {"type": "string"},
            "example": "resident_id,name,hukou_division,status,employer_credit_code,months_used,benefit_months_paid,"
            "start_month,end_month,kind,period_employer_credit_code\n"
            "330106199005170018,李娜,330106,insured-employed,,0,0,2019-01,2021-06,actual,\n",
        }
    },
}


@router.post(
    "/insured-persons/import",
    responses=problem_responses(401, 403, 413, 422),
    openapi_extra={"requestBody": CSV_BODY},
)
async def import_persons(request: Request, runtime: RuntimeDep, _officer: OfficerDep) -> ImportSummary:
    """Bulk import of existing records from CSV (UTF-8, one contribution period per row): all or nothing. The file
    may reach LABORNET_REQUEST_MAX_IMPORT_BYTES (20 MiB by default); a larger one is refused with 413 unread."""
    raw = await request.body()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Unprocessable("the file is not UTF-8 text") from exc
    persons, errors = parse_csv(text)
    if not errors:
        errors = await records(runtime).import_all(persons)
    if errors:
        raise Unprocessable(
            f"{len(errors)} row(s) are not valid; nothing was imported", slug="import-rejected", errors=errors
        )
    return ImportSummary(imported_persons=len(persons), imported_periods=sum(len(p.periods) for p in persons))


# Settlements and configuration -----------------------------------------------------------------------


def settlement_view(item: Settlement) -> SettlementView:
    return SettlementView.model_validate(asdict(item))


@router.get("/settlements", responses=problem_responses(401, 403, 422))
async def list_settlements(
    runtime: RuntimeDep,
    _officer: OfficerDep,
    status_: Annotated[SettlementStatus | None, Query(alias="status")] = None,
    direction: Annotated[
        Direction | None, Query(description="outgoing: this province pays; incoming: it is owed")
    ] = None,
) -> SettlementList:
    """Settlements this province pays (outgoing) and is owed (incoming), by due month."""
    items = await transfers(runtime).settlements(direction=direction, status=status_)
    return SettlementList(items=[settlement_view(item) for item in items])


class Payment(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    payment_reference: str | None = Field(
        None, min_length=1, max_length=100, description="the disbursement's reference, passed to the receiver"
    )


@router.post("/settlements/{settlement_id}/paid", responses=problem_responses(401, 403, 404, 409, 413, 422))
async def mark_paid(
    settlement_id: str, runtime: RuntimeDep, officer: OfficerDep, body: Payment | None = None
) -> SettlementView:
    """The paying province records the payment; the receiving province is told (with the reference)."""
    try:
        paid = await transfers(runtime).mark_paid(
            settlement_id, by=officer.sub, reference=body.payment_reference if body is not None else None
        )
    except LookupError as exc:
        raise NotFound(str(exc)) from exc
    except (SettlementRuleError, TransferRefused) as exc:
        raise Conflict(str(exc)) from exc
    return settlement_view(paid)


@router.get("/benefit-config")
async def get_config(runtime: RuntimeDep) -> BenefitConfigView:
    """This province's benefit standard and time limits (public)."""
    return BenefitConfigView.model_validate(await records(runtime).config())


@router.put("/benefit-config", responses=problem_responses(401, 403, 413, 422))
async def put_config(body: BenefitConfigIn, runtime: RuntimeDep, _officer: OfficerDep) -> BenefitConfigView:
    """Set the benefit standard and time limits (officers of this province). What GET answered may be sent back
    as it is: ``province`` must then be this node's, ``updated_at`` is ignored."""
    if body.province is not None and body.province != runtime.settings.province:
        raise Unprocessable(
            f"this is the benefit configuration of {runtime.settings.province}, not of {body.province}",
            errors=[{"field": "body.province", "message": f"expected {runtime.settings.province}"}],
        )
    return BenefitConfigView.model_validate(await records(runtime).set_config(body))

"""HTTP API of rights cases.

* Workers (role ``worker``; the token's ``resident_id`` claim, or its ``sub``, is their resident identity number)
  file a case for themselves at their home province, follow it and withdraw it. Another person's case answers
  404, never 403, so existence does not leak.
* Officers of this province file on a worker's behalf, see every case this node holds, and take the steps their
  province may take: the handling province accepts or declines a referral, records investigation updates, extends
  the investigation once before its limit passes, escalates an overdue case with a reason, resolves or closes; the
  home province refers a returned case to another province, correcting the work place if need be.
* Identity numbers, names and phones are shown in full only to the complainant and to officers of a province
  that is part of the case (home or handling); everyone else sees them masked.
* ``GET /api/v1/statistics`` is public: the federation's anonymous statistics as this node holds them.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from labornet.rights.adapters import cases
from labornet.rights.adapters.cases import StoredCase, overdue_condition, side_of
from labornet.rights.adapters.tables import rights_case
from labornet.rights.domain.case import (
    COMPLAINANT,
    CaseDraft,
    CaseRuleError,
    Category,
    ClosureReason,
    Money,
    NotCaseHolder,
    Note,
    Overdue,
    Status,
    WorkPlace,
    escalated,
    masked,
    officer,
    overdue,
)
from labornet.rights.entrypoints.schemas import (
    CasePage,
    CaseSummary,
    CaseView,
    FederationStatistics,
    MaskedComplainant,
    Side,
)
from labornet.rights.service_layer.cases import CaseNotFound, CaseService
from labornet.rights.service_layer.statistics import federation_statistics
from labornet.shared.app import Runtime, RuntimeDep
from labornet.shared.auth import Principal, Role, current_principal, require_province_role
from labornet.shared.bounds import PositiveInt32
from labornet.shared.clock import today_in_china
from labornet.shared.divisions import DivisionRegistry, InvalidDivision
from labornet.shared.identifiers import ProvinceCodeStr
from labornet.shared.problems import Conflict, Forbidden, NotFound, problem_responses

router = APIRouter(prefix="/api/v1", tags=["rights"])
CallerDep = Annotated[Principal, Depends(current_principal)]
OfficerDep = Annotated[Principal, Depends(require_province_role(Role.OFFICER))]
FilerDep = Annotated[Principal, Depends(require_province_role(Role.WORKER, Role.OFFICER))]
# what a step of a case may answer: the token, the role and province, the case, its rules, the body (the edge's
# 413, 429 and 500 are documented for every operation by the platform)
STEP_PROBLEMS = problem_responses(401, 403, 404, 409, 422)


def service(runtime: Runtime) -> CaseService:
    found: CaseService = runtime.extras["cases"]
    return found


def divisions(runtime: Runtime) -> DivisionRegistry:
    found: DivisionRegistry = runtime.extras["divisions"]
    return found


# Who sees what ------------------------------------------------------------------------------------------------


def is_officer_here(principal: Principal, runtime: Runtime) -> bool:
    return principal.has(Role.OFFICER) and principal.province == runtime.settings.province


def is_complainant(stored: StoredCase, principal: Principal) -> bool:
    own = principal.resident_id
    return own is not None and not stored.redacted and stored.case.complainant.resident_id == own


def may_see(stored: StoredCase, principal: Principal, runtime: Runtime) -> bool:
    return is_officer_here(principal, runtime) or is_complainant(stored, principal)


def today(runtime: Runtime) -> date:
    """Today in China by the service's clock."""
    return today_in_china(service(runtime).clock())


def _view(stored: StoredCase, principal: Principal, runtime: Runtime) -> dict[str, Any]:
    """The fields of a case's view: the case, the complainant masked unless the caller may see them, and what this
    node says about the case."""
    province = runtime.settings.province
    case = stored.case
    part_of_case = province in (case.home_province, case.handling_province)
    shown = is_complainant(stored, principal) or (is_officer_here(principal, runtime) and part_of_case)
    late = overdue(case, today(runtime))
    reported = escalated(case)
    return {
        **dict(case),
        "complainant": case.complainant if shown else MaskedComplainant.model_validate(dict(masked(case.complainant))),
        "side": "home" if case.home_province == province else "handling" if part_of_case else "former",
        "overdue": late,
        "escalated": reported if reported is not None and reported == late else None,
        "withdrawal_requested_at": stored.withdrawal_requested_at,
        "redacted": stored.redacted,
    }


def present(stored: StoredCase, principal: Principal, runtime: Runtime) -> CaseView:
    return CaseView.model_validate(_view(stored, principal, runtime))


def summary(stored: StoredCase, principal: Principal, runtime: Runtime) -> CaseSummary:
    view = _view(stored, principal, runtime)
    del view["timeline"]
    return CaseSummary.model_validate(view)


async def visible_case(case_id: str, principal: Principal, runtime: Runtime) -> StoredCase:
    async with runtime.read_sessions() as session:
        stored = await cases.load(session, case_id)
    if stored is None or not may_see(stored, principal, runtime):
        raise NotFound(f"no case {case_id}")
    return stored


def invalid(field: tuple[str, ...], message: str, value: object) -> RequestValidationError:
    """A 422 in the same shape as the body parser's, naming the field."""
    return RequestValidationError([{"loc": ("body", *field), "msg": message, "type": "value_error", "input": value}])


def member(runtime: Runtime, code: str, field: tuple[str, ...]) -> str:
    if code not in runtime.registry:
        members = ", ".join(runtime.registry.codes())
        raise invalid(field, f"province {code} is not a member of the federation ({members})", code)
    return code


async def run(runtime: Runtime, principal: Principal, change: Awaitable[StoredCase]) -> CaseView:
    """Carry out a step and present its result; the case's rules answer 404, 403 or 409."""
    try:
        stored = await change
    except CaseNotFound as exc:
        raise NotFound(str(exc)) from exc
    except NotCaseHolder as exc:
        raise Forbidden(str(exc), slug="not-case-holder") from exc
    except CaseRuleError as exc:
        raise Conflict(str(exc), slug="case-rule") from exc
    return present(stored, principal, runtime)


# Filing and reading ---------------------------------------------------------------------------------------------


@router.post(
    "/cases",
    status_code=status.HTTP_201_CREATED,
    responses={
        201: {"headers": {"Location": {"description": "the case's address", "schema": {"type": "string"}}}},
        **problem_responses(401, 403, 422),
    },
)
async def file_case(body: CaseDraft, runtime: RuntimeDep, principal: FilerDep, response: Response) -> CaseView:
    """File a case at the complainant's home province (this node); it is referred to the work place's province."""
    province = runtime.settings.province
    if principal.has(Role.OFFICER):
        if body.complainant.resident_id is None:
            raise invalid(("complainant", "resident_id"), "officers say whom the case is for", None)
        resident_id, actor = body.complainant.resident_id, officer(principal.sub)
    else:
        own = principal.resident_id
        if own is None:
            raise Forbidden("your token does not carry a resident identity number (claim resident_id or sub)")
        if body.complainant.resident_id not in (None, own):
            raise Forbidden("workers file cases for themselves only")
        resident_id, actor = own, COMPLAINANT
    if body.complainant.home_province not in (None, province):
        raise invalid(
            ("complainant", "home_province"),
            f"a case is filed at the complainant's home province; this node is {province}",
            body.complainant.home_province,
        )
    code = body.work_place.division_code
    handling = member(runtime, code[:2] + "0000", ("work_place", "division_code"))
    try:
        place = divisions(runtime).resolve(handling, code)
    except InvalidDivision as exc:
        raise invalid(("work_place", "division_code"), str(exc), code) from exc
    stored = await service(runtime).file(body, resident_id=resident_id, work_place_name=place.name, actor=actor)
    response.headers["Location"] = f"{router.prefix}/cases/{stored.case.id}"
    return present(stored, principal, runtime)


@router.get("/cases", responses=problem_responses(401, 403, 422))
async def list_cases(
    runtime: RuntimeDep,
    principal: CallerDep,
    status_: Annotated[Status | None, Query(alias="status")] = None,
    side: Side | None = None,
    category: Category | None = None,
    handling_province: Annotated[str | None, Query(pattern=r"^\d{2}0000$")] = None,
    overdue_: Annotated[bool, Query(alias="overdue", description="only cases past a time limit")] = False,
    deadline: Annotated[Overdue | None, Query(description="with overdue: which limit was passed")] = None,
    after: Annotated[str | None, Query(max_length=40, description="cursor: the last id of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> CasePage:
    """Officers: every case this node holds (filters); workers: their own cases. Without the timelines."""
    query = select(rights_case).order_by(rights_case.c.id).limit(limit + 1)
    if not is_officer_here(principal, runtime):
        own = principal.resident_id
        if own is None:
            raise Forbidden("listing cases needs the role worker (with an identity number), or officer here")
        query = query.where(rights_case.c.complainant_resident_id == own, rights_case.c.redacted.is_(False))
    if status_ is not None:
        query = query.where(rights_case.c.status == status_.value)
    if side is not None:
        query = query.where(side_of(runtime.settings.province) == side)
    if category is not None:
        query = query.where(rights_case.c.category == category.value)
    if handling_province is not None:
        query = query.where(rights_case.c.handling_province == handling_province)
    if overdue_ or deadline is not None:
        query = query.where(overdue_condition(today(runtime), deadline))
    if after:
        query = query.where(rights_case.c.id > after)
    async with runtime.read_sessions() as session:
        found = (await session.execute(query)).mappings().all()
        rows, more = found[:limit], len(found) > limit
        timelines = await cases.timelines_of(session, [row["id"] for row in rows])
    items = [summary(cases.stored(row, timelines[row["id"]]), principal, runtime) for row in rows]
    return CasePage(items=items, next_after=items[-1].id if more else None)


@router.get("/cases/{case_id}", responses=problem_responses(401, 403, 404))
async def get_case(case_id: str, runtime: RuntimeDep, principal: CallerDep) -> CaseView:
    """One case with its timeline (the same on the home and the handling node)."""
    return present(await visible_case(case_id, principal, runtime), principal, runtime)


# Steps of the handling province -----------------------------------------------------------------------------


class AcceptRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: Note | None = None


class DeclineRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Note = Field(description="why this province does not take the case, e.g. the work was done elsewhere")
    suggested_province: ProvinceCodeStr | None = Field(None, description="where the case belongs, if known")


class UpdateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: Note = Field(description="what was done: inspection, hearing, order to pay…")


class ExtendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Note


class EscalateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Note = Field(description="why the case is late, for the supervising labour department")


class ResolveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount_recovered: Money = Field(description="CNY paid to the workers")
    workers_paid: PositiveInt32 = Field(description="how many of the workers affected were paid")
    note: Note | None = None


class CloseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Literal[ClosureReason.REFERRED_TO_POLICE, ClosureReason.UNFOUNDED] = Field(
        description="referred-to-police or unfounded; the complainant withdraws through /withdraw"
    )
    note: Note


class ReferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    province: ProvinceCodeStr = Field(description="the member province to handle the case")
    work_place: WorkPlace | None = Field(
        None, description="the corrected work place, in that province; without it the work place stays as filed"
    )
    note: Note | None = None


class WithdrawRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: Note | None = None


@router.post("/cases/{case_id}/accept", responses=STEP_PROBLEMS)
async def accept_case(case_id: str, body: AcceptRequest, runtime: RuntimeDep, principal: OfficerDep) -> CaseView:
    """The handling province takes the case; the investigation's time limit starts."""
    return await run(runtime, principal, service(runtime).accept(case_id, actor=officer(principal.sub), note=body.note))


@router.post("/cases/{case_id}/decline", responses=STEP_PROBLEMS)
async def decline_case(case_id: str, body: DeclineRequest, runtime: RuntimeDep, principal: OfficerDep) -> CaseView:
    """Not this province's case: it returns to the home province, which may refer it elsewhere."""
    if body.suggested_province is not None:
        member(runtime, body.suggested_province, ("suggested_province",))
    change = service(runtime).decline(
        case_id, actor=officer(principal.sub), reason=body.reason, suggested_province=body.suggested_province
    )
    return await run(runtime, principal, change)


@router.post("/cases/{case_id}/updates", responses=STEP_PROBLEMS)
async def record_update(case_id: str, body: UpdateRequest, runtime: RuntimeDep, principal: OfficerDep) -> CaseView:
    """An investigation step, added to the timeline both provinces see."""
    change = service(runtime).record_update(case_id, actor=officer(principal.sub), note=body.note)
    return await run(runtime, principal, change)


@router.post("/cases/{case_id}/extend", responses=STEP_PROBLEMS)
async def extend_case(case_id: str, body: ExtendRequest, runtime: RuntimeDep, principal: OfficerDep) -> CaseView:
    """Extend the investigation once (30 working days by default), before its limit has passed (409 after)."""
    change = service(runtime).extend(case_id, actor=officer(principal.sub), reason=body.reason)
    return await run(runtime, principal, change)


@router.post("/cases/{case_id}/escalate", responses=STEP_PROBLEMS)
async def escalate_case(case_id: str, body: EscalateRequest, runtime: RuntimeDep, principal: OfficerDep) -> CaseView:
    """Escalate an overdue case to the supervising labour department, with the reason (409 unless overdue)."""
    change = service(runtime).escalate(case_id, actor=officer(principal.sub), reason=body.reason)
    return await run(runtime, principal, change)


@router.post("/cases/{case_id}/resolve", responses=STEP_PROBLEMS)
async def resolve_case(case_id: str, body: ResolveRequest, runtime: RuntimeDep, principal: OfficerDep) -> CaseView:
    """The workers were paid: the amount recovered and for how many workers."""
    change = service(runtime).resolve(
        case_id,
        actor=officer(principal.sub),
        amount_recovered=body.amount_recovered,
        workers_paid=body.workers_paid,
        note=body.note,
    )
    return await run(runtime, principal, change)


@router.post("/cases/{case_id}/close", responses=STEP_PROBLEMS)
async def close_case(case_id: str, body: CloseRequest, runtime: RuntimeDep, principal: OfficerDep) -> CaseView:
    """Close without recovery: referred to the police (suspected criminal refusal to pay) or unfounded."""
    change = service(runtime).close(case_id, actor=officer(principal.sub), reason=body.reason, note=body.note)
    return await run(runtime, principal, change)


# Steps of the home province -----------------------------------------------------------------------------------


@router.post("/cases/{case_id}/refer", responses=STEP_PROBLEMS)
async def refer_case(case_id: str, body: ReferRequest, runtime: RuntimeDep, principal: OfficerDep) -> CaseView:
    """Refer a returned case to another member province (or to this one, to handle it here).

    ``work_place`` corrects where the work was done; its division code must lie in the province referred to.
    """
    to = member(runtime, body.province, ("province",))
    place_name = None
    if body.work_place is not None:
        code = body.work_place.division_code
        try:
            place_name = divisions(runtime).resolve(to, code).name
        except InvalidDivision as exc:
            raise invalid(("work_place", "division_code"), str(exc), code) from exc
    change = service(runtime).refer(
        case_id,
        actor=officer(principal.sub),
        to=to,
        note=body.note,
        work_place=body.work_place,
        work_place_name=place_name,
    )
    return await run(runtime, principal, change)


@router.post(
    "/cases/{case_id}/withdraw",
    status_code=status.HTTP_200_OK,
    responses={
        200: {"description": "withdrawn: the case, closed"},
        202: {"model": CaseView, "description": "asked of the province holding the case; the case, still open"},
        **STEP_PROBLEMS,
    },
)
async def withdraw_case(
    case_id: str, body: WithdrawRequest, runtime: RuntimeDep, principal: CallerDep, response: Response
) -> CaseView:
    """The complainant (or an officer of the home province for them) withdraws the complaint.

    Answers 200 with the closed case when this province holds it; otherwise 202: the handling province is asked
    to close it, and ``withdrawal_requested_at`` shows the request until its answer arrives.
    """
    stored = await visible_case(case_id, principal, runtime)
    if not (is_complainant(stored, principal) or is_officer_here(principal, runtime)):
        raise NotFound(f"no case {case_id}")
    actor = COMPLAINANT if is_complainant(stored, principal) else officer(principal.sub)
    view = await run(runtime, principal, service(runtime).withdraw(case_id, actor=actor, note=body.note))
    if view.status != Status.CLOSED:
        response.status_code = status.HTTP_202_ACCEPTED
    return view


# Statistics -------------------------------------------------------------------------------------------------------


@router.get("/statistics", tags=["statistics"])
async def statistics(runtime: RuntimeDep) -> FederationStatistics:
    """The federation's anonymous case statistics: every member's latest snapshot (public; no personal data)."""
    async with runtime.read_sessions() as session:
        result = await federation_statistics(session)
    return FederationStatistics.model_validate({**result, "generated_at": datetime.now(UTC)})

"""Applications across provinces: a worker applies from the home node, the vacancy's owner moves the application
(directed messages between the two provinces only).

* Workers (role ``worker``, at their home node): ``POST /api/v1/vacancies/{id}/applications`` with a profile,
  ``GET /api/v1/applications`` (their own, newest first), ``GET /api/v1/applications/{id}`` (with the timeline),
  ``POST /api/v1/applications/{id}/withdraw``. Another worker's application answers 404.
* Officers of the owner province move an application one step per call (``/shortlist``, ``/interview``,
  ``/offer``, ``/hire``, ``/not-selected``, ``/withdrawn``) naming the version they read (If-Match or
  ``version``): a stale one is 409, none is 428.
* Officers of the home province follow their workers' applications (``role=sent``): the state, the vacancy and
  the timeline, with the applicant's name and phone masked and without the cover note: the employer's side needs
  the contact, the home side only the outcome. A province that is neither home nor owner holds no trace (404).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Coroutine
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import and_, or_, select

from labornet.jobs.adapters import applications as repository
from labornet.jobs.adapters.applications import StoredApplication
from labornet.jobs.adapters.tables import job_application
from labornet.jobs.domain.application import (
    CHANGED,
    SUBMITTED,
    WITHDRAWAL_REQUESTED,
    Application,
    ApplicationRuleError,
    ApplicationState,
    EntryKind,
    Interview,
    NoStanding,
    Note,
    Offer,
    Profile,
    StaleApplication,
    VacancyNotOpen,
    WithdrawalRequest,
    officer,
)
from labornet.jobs.domain.vacancy import TargetGroup
from labornet.jobs.service_layer.applications import (
    AlreadyApplied,
    ApplicationNotFound,
    ApplicationService,
    ConcurrentChange,
    VacancyNotFound,
    VersionRequired,
    init_metrics,
    refresh_gauges,
)
from labornet.jobs.service_layer.vacancies import VacancyService
from labornet.shared.app import Runtime, RuntimeDep
from labornet.shared.auth import Principal, Role, require_province_role
from labornet.shared.bounds import PositiveInt32
from labornet.shared.contracts import EventContract
from labornet.shared.db import StoredTime
from labornet.shared.identifiers import mask_name, mask_phone
from labornet.shared.inbox import Handler
from labornet.shared.paging import InvalidCursor, decode_sort_cursor, encode_sort_cursor
from labornet.shared.problems import (
    Conflict,
    Forbidden,
    NotFound,
    Problem,
    Unprocessable,
    if_match_version,
    problem_responses,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["applications"])
WorkerDep = Annotated[Principal, Depends(require_province_role(Role.WORKER))]
OfficerDep = Annotated[Principal, Depends(require_province_role(Role.OFFICER))]
ReaderDep = Annotated[Principal, Depends(require_province_role(Role.WORKER, Role.OFFICER))]
# an officer's step: 401/403 the token, 404 unknown here, 409 stale or not allowed now, 422 the body, 428 no version
STEP_PROBLEMS = problem_responses(400, 401, 403, 404, 409, 422, 428)
_ETAG = {"ETag": {"description": 'the version, e.g. "3": send it back as If-Match', "schema": {"type": "string"}}}
SERVICE = "applications"


# Messages ------------------------------------------------------------------------------------------------------


class SubmittedApplication(Application):
    """An application as its home province made it: version 1, received, one timeline entry."""

    version: Literal[1]
    state: Literal[ApplicationState.RECEIVED]


class ChangedApplication(Application):
    """An application after a step of the owner province: the whole application at its new version."""

    version: Annotated[int, Field(ge=2)]


EVENTS: list[EventContract] = [
    EventContract(
        type=SUBMITTED,
        model=SubmittedApplication,
        channel="inbox",
        summary="A worker applied to a vacancy of the receiving province (home → owner).",
        description="Written with the application at the worker's home node (POST /api/v1/vacancies/{id}/"
        "applications); the key and subject are the application id. It carries the applicant's name and phone: it "
        "goes to the vacancy's owner only. An application for a vacancy that closed meanwhile is answered with "
        f"{CHANGED} at once (not-selected, reason vacancy closed).",
    ),
    EventContract(
        type=CHANGED,
        model=ChangedApplication,
        channel="inbox",
        summary="The owner province moved an application (owner → home).",
        description="Written with each step of the owner's officers (shortlisted, interview, offer, hired, "
        "not-selected, withdrawn); the whole application at its new version. The home applies a newer version "
        "only, and records the placement when it is hired.",
    ),
    EventContract(
        type=WITHDRAWAL_REQUESTED,
        model=WithdrawalRequest,
        channel="inbox",
        summary="The applicant withdraws an application the owner province holds (home → owner).",
        description="Written by POST /api/v1/applications/{id}/withdraw at home; the owner withdraws the "
        f"application if it is still open and sends it home ({CHANGED}), or ignores it when it has ended.",
    ),
]


# Answers -------------------------------------------------------------------------------------------------------

_TIMELINE_EXAMPLE = [
    {
        "seq": 1,
        "at": "2026-03-02T01:20:00Z",
        "province": "510000",
        "actor": "applicant",
        "kind": "submitted",
        "state": "received",
        "details": {},
    },
    {
        "seq": 2,
        "at": "2026-03-03T02:00:00Z",
        "province": "330000",
        "actor": "officer:zj-officer",
        "kind": "shortlisted",
        "state": "shortlisted",
        "details": {},
    },
]
APPLICATION_EXAMPLE: dict[str, Any] = {
    "id": "510000-A-3F2A9C1D0B8E7F6A5B4C",
    "version": 2,
    "home_province": "510000",
    "owner_province": "330000",
    "side": "home",
    "vacancy": {
        "id": "330000-V-6F1C2D3E4A5B6C7D8E9F",
        "title": "川菜厨师",
        "employer_name": "杭州川味餐饮有限公司",
        "occupation_code": "5120",
        "city": "杭州市",
    },
    "profile": {
        "name": "王小明",
        "phone": "13812345678",
        "skills": ["川菜", "刀工"],
        "certificates": ["中式烹调师四级"],
        "experience_years": 6,
        "expected_salary": 8000,
        "available_from": "2026-03-15",
        "target_groups": ["migrant-workers"],
        "cover_note": "在成都做过六年川菜厨师。",
    },
    "profile_masked": False,
    "state": "shortlisted",
    "submitted_at": "2026-03-02T01:20:00Z",
    "updated_at": "2026-03-03T02:00:01Z",
    "timeline": _TIMELINE_EXAMPLE,
}


class TimelineEntry(BaseModel):
    seq: int
    at: StoredTime
    province: str = Field(description="the province that took the step")
    actor: str = Field(description="applicant, officer:<sub>, or labornet (an automatic answer)")
    kind: EntryKind
    state: ApplicationState = Field(description="the application's state after this step")
    note: str | None = None
    details: dict[str, Any] = Field(description="interview: at, place; offer: salary, start_date")


class VacancyOfApplication(BaseModel):
    id: str
    title: str
    employer_name: str
    occupation_code: str
    city: str


class ProfileView(BaseModel):
    name: str = Field(description="masked for the home province's officers")
    phone: str = Field(description="masked for the home province's officers")
    skills: list[str]
    certificates: list[str]
    experience_years: int
    expected_salary: int | None = Field(description="CNY per month")
    available_from: date
    target_groups: list[TargetGroup]
    cover_note: str = Field(description="empty for the home province's officers")


class InterviewView(BaseModel):
    at: datetime
    place: str


class OfferView(BaseModel):
    salary: int = Field(description="CNY per month")
    start_date: date


class ApplicationSummary(BaseModel):
    """An application without its timeline (lists)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{k: v for k, v in APPLICATION_EXAMPLE.items() if k != "timeline"}]}
    )
    id: str = Field(description="`<home province>-A-<20 hex>`")
    version: int = Field(description="raised by every step; send it back as If-Match or `version` to take the next")
    home_province: str = Field(description="the worker's province, where the application was made")
    owner_province: str = Field(description="the vacancy's province, whose officers move the application")
    side: Literal["home", "owner", "both"] = Field(description="this node's part: both when a province's own vacancy")
    vacancy: VacancyOfApplication
    profile: ProfileView
    profile_masked: bool = Field(description="true when name and phone are masked and the cover note left out")
    state: ApplicationState
    submitted_at: StoredTime
    interview: InterviewView | None = None
    offer: OfferView | None = None
    hired_at: StoredTime | None = None
    reason: str | None = Field(None, description="why not selected")
    withdrawal_requested_at: StoredTime | None = Field(
        None, description="home: the applicant's withdrawal is asked of the owner and its answer not yet arrived"
    )
    updated_at: StoredTime = Field(description="when this node last stored the application")


class ApplicationView(ApplicationSummary):
    """An application with its timeline (the same on the home and the owner node)."""

    model_config = ConfigDict(json_schema_extra={"examples": [APPLICATION_EXAMPLE]})
    timeline: list[TimelineEntry]


NEXT_CURSOR_EXAMPLE = "eyJzb3J0IjoibmV3ZXN0Iiwia2V5IjoiMjAyNi0wMy0wMlQwMToyMDowMFoiLCJpZCI6IjUxMDAwMC1BLTMifQ"


class ApplicationPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [{k: v for k, v in APPLICATION_EXAMPLE.items() if k != "timeline"}],
                    "next_cursor": NEXT_CURSOR_EXAMPLE,
                }
            ]
        }
    )
    items: list[ApplicationSummary] = Field(description="newest first")
    next_cursor: str | None = Field(description="pass as `cursor` for the next (older) page; null on the last page")


# Requests ------------------------------------------------------------------------------------------------------


class ApplicationDraft(Profile):
    """What a worker sends to apply: a short profile. No identity number: the owner reaches the applicant by phone."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        str_strip_whitespace=True,
        json_schema_extra={"examples": [APPLICATION_EXAMPLE["profile"]]},
    )


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: PositiveInt32 | None = Field(None, description="the version you read (or send If-Match)")
    note: Note | None = None


class InterviewStep(Step):
    at: datetime = Field(description="when the interview is, with its offset")
    place: Annotated[str, Field(min_length=1, max_length=200)] = Field(description="an address or a meeting link")


class OfferStep(Step):
    salary: Annotated[int, Field(ge=0, le=1_000_000)] = Field(description="CNY per month")
    start_date: date = Field(description="the first working day (China time), today or later")


class NotSelectedStep(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: PositiveInt32 | None = Field(None, description="the version you read (or send If-Match)")
    reason: Note = Field(description="why, for the applicant")


class WithdrawRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: Note | None = None


# Wiring --------------------------------------------------------------------------------------------------------


def service(runtime: Runtime) -> ApplicationService:
    found: ApplicationService = runtime.extras[SERVICE]
    return found


def setup(runtime: Runtime) -> None:
    """Wire this part's services into the runtime (called once, before the consumers start)."""
    init_metrics()
    vacancies: VacancyService = runtime.extras["vacancies"]
    runtime.extras[SERVICE] = ApplicationService(
        province=runtime.settings.province, sessions=runtime.sessions, outbox=runtime.outbox, vacancies=vacancies
    )


def inbox_handlers(runtime: Runtime) -> dict[str, Handler]:
    """Handlers of the directed messages of this part arriving on the province's jobs inbox."""
    return service(runtime).handlers()


def broadcast_handlers(runtime: Runtime) -> dict[str, Handler]:
    """Applications are never broadcast: nothing of them reaches a partner's events topic."""
    return {}


async def sweep(runtime: Runtime) -> None:
    """At the jobs sweep's interval: answer the open applications whose vacancy ended, refresh the gauges."""
    while True:
        try:
            while await service(runtime).answer_ended_vacancies() > 0:
                pass
            async with runtime.read_sessions() as session:
                await refresh_gauges(session, runtime.settings.province)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("application sweep failed; retrying at the next interval")
        with contextlib.suppress(TimeoutError):
            await asyncio.sleep(runtime.settings.jobs_sweep_interval_s)


def background(runtime: Runtime) -> list[Coroutine[Any, Any, None]]:
    """This part's long-running tasks: the sweep (ended vacancies' applications, gauges)."""
    return [sweep(runtime)]


# Who sees what -------------------------------------------------------------------------------------------------


def is_officer_here(principal: Principal, runtime: Runtime) -> bool:
    return principal.has(Role.OFFICER) and principal.province == runtime.settings.province


def may_see(stored: StoredApplication, principal: Principal, runtime: Runtime) -> bool:
    if is_officer_here(principal, runtime):
        return runtime.settings.province in (stored.application.home_province, stored.application.owner_province)
    return principal.has(Role.WORKER) and stored.worker is not None and stored.worker == principal.sub


def _view(stored: StoredApplication, principal: Principal, runtime: Runtime) -> dict[str, Any]:
    province = runtime.settings.province
    application = stored.application
    home, owner = application.home_province == province, application.owner_province == province
    masked = not owner and not (
        stored.worker is not None and stored.worker == principal.sub and principal.has(Role.WORKER)
    )
    profile = application.profile.model_dump()
    if masked:
        profile.update(name=mask_name(profile["name"]), phone=mask_phone(profile["phone"]), cover_note="")
    return {
        **dict(application),
        "vacancy": application.vacancy.model_dump(),
        "profile": profile,
        "profile_masked": masked,
        "interview": application.interview.model_dump() if application.interview else None,
        "offer": application.offer.model_dump() if application.offer else None,
        "timeline": [entry.model_dump() for entry in application.timeline],
        "side": "both" if home and owner else "home" if home else "owner",
        "withdrawal_requested_at": stored.withdrawal_requested_at,
        "updated_at": stored.updated_at,
    }


def present(stored: StoredApplication, principal: Principal, runtime: Runtime) -> ApplicationView:
    return ApplicationView.model_validate(_view(stored, principal, runtime))


async def visible(application_id: str, principal: Principal, runtime: Runtime) -> StoredApplication:
    async with runtime.read_sessions() as session:
        stored = await repository.load(session, application_id)
    if stored is None or not may_see(stored, principal, runtime):
        raise NotFound(f"no application {application_id}")
    return stored


async def run(change: Awaitable[StoredApplication]) -> StoredApplication:
    """Carry out a step; the application's rules answer 404, 403, 409 or 428."""
    try:
        return await change
    except (ApplicationNotFound, VacancyNotFound) as exc:
        raise NotFound(str(exc)) from exc
    except NoStanding as exc:
        raise Forbidden(str(exc), slug="not-application-owner") from exc
    except AlreadyApplied as exc:
        raise Conflict(str(exc), slug="already-applied", application_id=exc.application_id) from exc
    except StaleApplication as exc:
        raise Conflict(str(exc), slug="stale-version") from exc
    except VersionRequired as exc:
        raise Problem(str(exc), status=428, slug="version-required") from exc
    except VacancyNotOpen as exc:
        raise Conflict(str(exc), slug="vacancy-closed") from exc
    except ConcurrentChange as exc:
        raise Conflict(str(exc), slug="concurrent-change") from exc
    except ApplicationRuleError as exc:
        raise Conflict(str(exc), slug="application-rule") from exc


def _respond(stored: StoredApplication, principal: Principal, runtime: Runtime, response: Response) -> ApplicationView:
    response.headers["ETag"] = f'"{stored.application.version}"'
    return present(stored, principal, runtime)


# Applying and reading ------------------------------------------------------------------------------------------


@router.post(
    "/vacancies/{vacancy_id}/applications",
    status_code=status.HTTP_201_CREATED,
    response_model=ApplicationView,
    responses={
        201: {
            "description": "made, at version 1; on its way to the vacancy's province",
            "headers": {**_ETAG, "Location": {"description": "the application", "schema": {"type": "string"}}},
        },
        **problem_responses(400, 401, 403, 404, 409, 422),
    },
)
async def apply(
    vacancy_id: str, body: ApplicationDraft, runtime: RuntimeDep, worker: WorkerDep, response: Response
) -> ApplicationView:
    """Apply to a vacancy of any member province, from the worker's home node (this one).

    The vacancy must be in this node's replica (404), open, with places left and its closing date not passed (409
    `vacancy-closed`). A worker has one application per vacancy until it ends without a hire (409
    `already-applied`, naming it). Nothing is written on a refusal. Only the vacancy's province receives the
    application; no identity number travels."""
    profile = Profile.model_validate(body.model_dump())
    stored = await run(service(runtime).apply(vacancy_id, profile, worker=worker.sub))
    response.headers["Location"] = f"{router.prefix}/applications/{stored.application.id}"
    return _respond(stored, worker, runtime, response)


@router.get("/applications", response_model=ApplicationPage, responses=problem_responses(401, 403, 422))
async def list_applications(
    runtime: RuntimeDep,
    principal: ReaderDep,
    role: Annotated[
        Literal["received", "sent"] | None,
        Query(description="officers: received (to this province's vacancies, the default) or sent (by its workers)"),
    ] = None,
    state: ApplicationState | None = None,
    vacancy_id: Annotated[str | None, Query(max_length=40)] = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ApplicationPage:
    """Workers: their own applications. Officers: the applications to this province's vacancies (`role=received`)
    or of its workers (`role=sent`). Newest first, without the timelines."""
    province = runtime.settings.province
    query = select(job_application)
    if is_officer_here(principal, runtime):
        column = job_application.c.home_province if role == "sent" else job_application.c.owner_province
        query = query.where(column == province)
    else:
        query = query.where(job_application.c.worker == principal.sub)
    if state is not None:
        query = query.where(job_application.c.state == state.value)
    if vacancy_id is not None:
        query = query.where(job_application.c.vacancy_id == vacancy_id)
    if cursor is not None:
        try:
            key, last_id = decode_sort_cursor(cursor, "newest", ("newest",))
        except InvalidCursor as exc:
            raise Unprocessable(str(exc), errors=[{"field": "query.cursor", "message": str(exc)}]) from exc
        query = query.where(
            or_(
                job_application.c.submitted_at < key,
                and_(job_application.c.submitted_at == key, job_application.c.id < last_id),
            )
        )
    query = query.order_by(job_application.c.submitted_at.desc(), job_application.c.id.desc()).limit(limit + 1)
    async with runtime.read_sessions() as session:
        found = (await session.execute(query)).mappings().all()
        rows, more = found[:limit], len(found) > limit
        timelines = await repository.timelines_of(session, [row["id"] for row in rows])
    items = []
    for row in rows:
        view = _view(repository.stored(row, timelines[row["id"]]), principal, runtime)
        del view["timeline"]
        items.append(ApplicationSummary.model_validate(view))
    last = items[-1] if more else None
    return ApplicationPage(
        items=items, next_cursor=encode_sort_cursor("newest", last.submitted_at, last.id) if last else None
    )


@router.get(
    "/applications/{application_id}",
    response_model=ApplicationView,
    responses={200: {"headers": _ETAG}, **problem_responses(401, 403, 404)},
)
async def get_application(
    application_id: str, runtime: RuntimeDep, principal: ReaderDep, response: Response
) -> ApplicationView:
    """One application with its timeline: the applicant, and officers of its home or owner province."""
    return _respond(await visible(application_id, principal, runtime), principal, runtime, response)


@router.post(
    "/applications/{application_id}/withdraw",
    response_model=ApplicationView,
    responses={
        200: {"description": "withdrawn: the vacancy is this province's"},
        202: {"model": ApplicationView, "description": "asked of the vacancy's province; the application, still open"},
        **problem_responses(400, 401, 403, 404, 409, 422),
    },
)
async def withdraw_application(
    application_id: str, body: WithdrawRequest, runtime: RuntimeDep, worker: WorkerDep, response: Response
) -> ApplicationView:
    """The applicant withdraws. 200 when withdrawn here; 202 when the vacancy's province is asked, and
    `withdrawal_requested_at` shows the request until its answer arrives (409 once the application has ended)."""
    await visible(application_id, worker, runtime)  # another worker's application: 404
    after = await run(service(runtime).withdraw(application_id, note=body.note))
    if after.application.state != ApplicationState.WITHDRAWN:
        response.status_code = status.HTTP_202_ACCEPTED
    return present(after, worker, runtime)


# Steps of the owner province -----------------------------------------------------------------------------------


def _version(body_version: int | None, if_match: str | None) -> int | None:
    return body_version or if_match_version(if_match, "application")


IfMatch = Annotated[str | None, Header()]


@router.post(
    "/applications/{application_id}/shortlist",
    response_model=ApplicationView,
    responses={200: {"headers": _ETAG}, **STEP_PROBLEMS},
)
async def shortlist_application(
    application_id: str,
    body: Step,
    runtime: RuntimeDep,
    principal: OfficerDep,
    response: Response,
    if_match: IfMatch = None,
) -> ApplicationView:
    """The employer keeps the applicant in the running."""
    change = service(runtime).shortlist(
        application_id, actor=officer(principal.sub), version=_version(body.version, if_match), note=body.note
    )
    return _respond(await run(change), principal, runtime, response)


@router.post(
    "/applications/{application_id}/interview",
    response_model=ApplicationView,
    responses={200: {"headers": _ETAG}, **STEP_PROBLEMS},
)
async def invite_application(
    application_id: str,
    body: InterviewStep,
    runtime: RuntimeDep,
    principal: OfficerDep,
    response: Response,
    if_match: IfMatch = None,
) -> ApplicationView:
    """Set the interview (when and where); set it again for another round or a new time."""
    change = service(runtime).invite(
        application_id,
        actor=officer(principal.sub),
        version=_version(body.version, if_match),
        interview=Interview(at=body.at, place=body.place),
        note=body.note,
    )
    return _respond(await run(change), principal, runtime, response)


@router.post(
    "/applications/{application_id}/offer",
    response_model=ApplicationView,
    responses={200: {"headers": _ETAG}, **STEP_PROBLEMS},
)
async def offer_application(
    application_id: str,
    body: OfferStep,
    runtime: RuntimeDep,
    principal: OfficerDep,
    response: Response,
    if_match: IfMatch = None,
) -> ApplicationView:
    """Offer the job: the monthly salary and the start date (today or later)."""
    change = service(runtime).offer(
        application_id,
        actor=officer(principal.sub),
        version=_version(body.version, if_match),
        offer=Offer(salary=body.salary, start_date=body.start_date),
        note=body.note,
    )
    return _respond(await run(change), principal, runtime, response)


@router.post(
    "/applications/{application_id}/hire",
    response_model=ApplicationView,
    responses={200: {"headers": _ETAG}, **STEP_PROBLEMS},
)
async def hire_application(
    application_id: str,
    body: Step,
    runtime: RuntimeDep,
    principal: OfficerDep,
    response: Response,
    if_match: IfMatch = None,
) -> ApplicationView:
    """The applicant accepted the offer. The vacancy's hired count rises by one (a new version, on every node; it is
    filled with its last place); a vacancy withdrawn, filled or without places left is a 409 and nothing changes."""
    change = service(runtime).hire(
        application_id, actor=officer(principal.sub), version=_version(body.version, if_match), note=body.note
    )
    return _respond(await run(change), principal, runtime, response)


@router.post(
    "/applications/{application_id}/not-selected",
    response_model=ApplicationView,
    responses={200: {"headers": _ETAG}, **STEP_PROBLEMS},
)
async def not_selected_application(
    application_id: str,
    body: NotSelectedStep,
    runtime: RuntimeDep,
    principal: OfficerDep,
    response: Response,
    if_match: IfMatch = None,
) -> ApplicationView:
    """The applicant is not selected, with the reason they are told."""
    change = service(runtime).not_selected(
        application_id, actor=officer(principal.sub), version=_version(body.version, if_match), reason=body.reason
    )
    return _respond(await run(change), principal, runtime, response)


@router.post(
    "/applications/{application_id}/withdrawn",
    response_model=ApplicationView,
    responses={200: {"headers": _ETAG}, **STEP_PROBLEMS},
)
async def withdrawn_application(
    application_id: str,
    body: Step,
    runtime: RuntimeDep,
    principal: OfficerDep,
    response: Response,
    if_match: IfMatch = None,
) -> ApplicationView:
    """Record a withdrawal the applicant told an officer of the vacancy's province (by phone, in person)."""
    change = service(runtime).withdrawn(
        application_id, actor=officer(principal.sub), version=_version(body.version, if_match), note=body.note
    )
    return _respond(await run(change), principal, runtime, response)

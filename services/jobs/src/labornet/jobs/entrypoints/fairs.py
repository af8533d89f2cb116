"""Joint recruitment events (docking events, job fairs): organised by one province with co-organisers, replicated to
every node, registrations directed to the organiser.

* Officers of the organising province create an event (``POST /api/v1/fairs``), change or cancel it before it
  ends (``PATCH``, ``POST …/cancel``; If-Match or ``version``) and record its outcomes once it has started
  (``POST …/outcomes``). Officers of the organiser and of each co-organiser list their own province's open
  vacancies at it (``PUT …/vacancies``), replacing their previous list.
* Everyone reads every event on every node (``GET /api/v1/fairs``, ``GET /api/v1/fairs/{id}``): the event, the
  vacancies each organising province lists (from this node's vacancy replica), the outcomes and the organiser's
  anonymous registration counts by home province.
* Workers register at their home node (``POST …/registrations``), list their registrations
  (``GET /api/v1/fairs/registrations``) and cancel one (``POST /api/v1/fairs/registrations/{id}/cancel``). The
  registration travels to the organiser only; its answer (accepted, or refused with a reason: submitted after the
  close, the event full or cancelled) comes back and shows in the worker's list.
* The organiser's officers list the registrations received (``GET …/registrations``); any other node answers 403
  (an event it only replicates) or 404.
"""

from __future__ import annotations

from collections.abc import Coroutine
from datetime import date
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Header, Query, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from labornet.jobs.adapters import fairs as store
from labornet.jobs.adapters.fairs import StoredFair
from labornet.jobs.domain.fair import (
    CANCELLED,
    LISTING,
    OUTCOMES_RECORDED,
    PUBLISHED,
    REGISTRATION,
    REGISTRATION_ANSWERED,
    REGISTRATION_CANCELLED,
    STATISTICS,
    UPDATED,
    Campaign,
    Fair,
    FairChanges,
    FairDraft,
    FairRuleError,
    FairStatistics,
    FairStatus,
    InvalidFair,
    Listing,
    ListingRequest,
    Mode,
    NotOrganiser,
    Outcomes,
    Phase,
    RecordedOutcomes,
    RefusalReason,
    RegistrationAnswer,
    RegistrationCancellation,
    RegistrationCount,
    RegistrationDraft,
    RegistrationMessage,
    RegistrationStatus,
    StaleVersion,
    Venue,
    VersionRequired,
)
from labornet.jobs.service_layer.fairs import (
    AlreadyRegistered,
    FairNotFound,
    FairService,
    FairSettings,
    RegistrationNotFound,
    every,
    init_metrics,
)
from labornet.shared.app import Runtime, RuntimeDep
from labornet.shared.auth import Principal, Role, require_province_role
from labornet.shared.bounds import INT32_MAX, PositiveInt32
from labornet.shared.clock import today_in_china
from labornet.shared.contracts import EventContract
from labornet.shared.db import StoredTime
from labornet.shared.divisions import load_divisions
from labornet.shared.inbox import Handler
from labornet.shared.paging import decode_cursor, encode_cursor
from labornet.shared.problems import (
    Conflict,
    Forbidden,
    NotFound,
    Problem,
    Unprocessable,
    if_match_version,
    problem_responses,
)

T = TypeVar("T")
router = APIRouter(prefix="/api/v1", tags=["fairs"])
OfficerDep = Annotated[Principal, Depends(require_province_role(Role.OFFICER))]
WorkerDep = Annotated[Principal, Depends(require_province_role(Role.WORKER))]

SERVICE = "fairs"  # key of the FairService in Runtime.extras
SETTINGS = "fair_settings"
_PROVINCE = r"^\d{2}0000$"
_ETAG = {"ETag": {"description": 'the version, e.g. "3": send it back as If-Match', "schema": {"type": "string"}}}
# a change of an event: 400 a body that is not JSON, 403 not the organiser, 404 unknown, 409 stale, cancelled or
# over, 422 the body, 428 without a version
_CHANGE_PROBLEMS = problem_responses(400, 401, 403, 404, 409, 422, 428)
_OPTIONALLY_VERSIONED = problem_responses(400, 401, 403, 404, 409, 422)  # the version may be left out


# Answers -------------------------------------------------------------------------------------------------------

FAIR_EXAMPLE: dict[str, Any] = {
    "id": "500000-F-3F2A9C1B7D6E5A4B3C2D",
    "version": 2,
    "organiser_province": "500000",
    "co_organisers": ["510000"],
    "title": "2027 春风行动 川渝劳务协作专场招聘会",
    "description": "川渝两地联合举办，现场签约，提供包车返岗。",
    "campaign": "spring-breeze-action",
    "mode": "venue",
    "venue": {"division_code": "500103", "address": "重庆市渝中区人力资源市场一楼"},
    "starts_on": "2027-02-10",
    "ends_on": "2027-02-12",
    "registration_closes_at": "2027-02-12T16:00:00Z",
    "capacity": 2000,
    "status": "scheduled",
    "created_at": "2027-01-05T02:00:00Z",
    "updated_at": "2027-01-06T03:30:00Z",
    "phase": "upcoming",
    "registration_open": True,
    "statistics": {
        "generation": 4,
        "as_of": "2027-01-20T08:00:00Z",
        "accepted": 2,
        "refused": 0,
        "cancelled": 1,
        "by_home_province": [{"home_province": "510000", "accepted": 2, "refused": 0, "cancelled": 1}],
    },
}


class RegistrationStatisticsView(BaseModel):
    """The organiser's latest anonymous counts of registrations (none before its first snapshot)."""

    generation: int = Field(ge=0, description="0: no snapshot received yet")
    as_of: StoredTime | None
    accepted: int = Field(ge=0)
    refused: int = Field(ge=0)
    cancelled: int = Field(ge=0)
    by_home_province: list[RegistrationCount]


class FairSummary(BaseModel):
    """An event as this node holds it (every node holds every event)."""

    model_config = ConfigDict(json_schema_extra={"examples": [FAIR_EXAMPLE]})
    id: str = Field(description="`<organiser>-F-<20 hex>`")
    version: int = Field(ge=1)
    organiser_province: str = Field(pattern=_PROVINCE, description="the only province that changes the event")
    co_organisers: list[str]
    title: str
    description: str
    campaign: Campaign
    mode: Mode
    url: str | None = Field(None, description="online: where it takes place; venue: a live stream, if any")
    venue: Venue | None = None
    starts_on: date = Field(description="first day, China time")
    ends_on: date = Field(description="last day, China time")
    registration_closes_at: StoredTime
    capacity: int | None = None
    status: FairStatus
    cancel_reason: str | None = None
    outcomes: RecordedOutcomes | None = None
    created_at: StoredTime
    updated_at: StoredTime
    phase: Phase = Field(description="by today's date in China")
    registration_open: bool
    statistics: RegistrationStatisticsView


class FairPage(BaseModel):
    items: list[FairSummary]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")


class ListedVacancy(BaseModel):
    """A vacancy listed at an event, as this node's vacancy replica holds it (``known`` false: not arrived yet)."""

    id: str
    known: bool
    title: str | None = None
    employer_name: str | None = None
    owner_province: str | None = None
    city: str | None = None
    headcount: int | None = None
    open_headcount: int | None = Field(None, description="places not yet filled through the platform")
    status: str | None = Field(None, description="open, filled, withdrawn or expired")


class ListingView(BaseModel):
    """One organising province's vacancies at the event."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "fair_id": "500000-F-3F2A9C1B7D6E5A4B3C2D",
                    "province": "510000",
                    "version": 1,
                    "updated_at": "2027-01-08T02:00:00Z",
                    "vacancies": [{"id": "510000-V-88C3B9F30C444A6395CB", "known": True, "status": "open"}],
                }
            ]
        }
    )
    fair_id: str
    province: str = Field(pattern=_PROVINCE)
    version: int = Field(ge=1, description="send it back as If-Match or `version` to replace the list")
    updated_at: StoredTime
    vacancies: list[ListedVacancy]


class FairView(FairSummary):
    """An event with the vacancies listed by each of its organising provinces (the organiser's and current
    co-organisers' listings only)."""

    listings: list[ListingView]


class RegistrationView(BaseModel):
    """A worker's registration as their home node holds it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "510000-R-0A1B2C3D4E5F60718293",
                    "fair_id": "500000-F-3F2A9C1B7D6E5A4B3C2D",
                    "organiser_province": "500000",
                    "home_province": "510000",
                    "name": "王小明",
                    "phone": "13812345678",
                    "occupations": ["7112"],
                    "status": "accepted",
                    "submitted_at": "2027-01-20T02:00:00Z",
                    "answered_at": "2027-01-20T02:00:03Z",
                }
            ]
        }
    )
    id: str = Field(description="`<home>-R-<20 hex>`")
    fair_id: str
    fair_title: str | None = None
    fair_status: FairStatus | None = Field(None, description="the event's status (e.g. cancelled by its organiser)")
    starts_on: date | None = None
    ends_on: date | None = None
    organiser_province: str
    home_province: str
    name: str
    phone: str
    occupations: list[str]
    note: str | None = None
    status: RegistrationStatus = Field(description="submitted (on its way), accepted, refused or cancelled")
    reason: RefusalReason | None = Field(None, description="why the organiser refused it")
    submitted_at: StoredTime
    received_at: StoredTime | None = Field(None, description="when the organiser received it (organiser's node)")
    answered_at: StoredTime | None = None
    cancelled_at: StoredTime | None = None


class RegistrationList(BaseModel):
    items: list[RegistrationView]


class RegistrationPage(BaseModel):
    items: list[RegistrationView]
    next_cursor: str | None


class FairCancellation(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    reason: str = Field(min_length=1, max_length=500)
    version: PositiveInt32 | None = Field(None, description="the version cancelled (or If-Match)")


class OutcomesRequest(Outcomes):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"employers_attending": 120, "intentions_reached": 860, "hires": 310}]}
    )
    version: PositiveInt32 | None = Field(None, description="optional: the version the outcomes are recorded on")


# Wiring --------------------------------------------------------------------------------------------------------


def service(runtime: Runtime) -> FairService:
    found: FairService = runtime.extras[SERVICE]
    return found


def _statistics(stored: StoredFair) -> RegistrationStatisticsView:
    counts = [RegistrationCount.model_validate(c) for c in stored.registration_counts]
    return RegistrationStatisticsView(
        generation=stored.statistics_generation,
        as_of=stored.statistics_as_of,
        accepted=sum(c.accepted for c in counts),
        refused=sum(c.refused for c in counts),
        cancelled=sum(c.cancelled for c in counts),
        by_home_province=counts,
    )


def _summary_fields(stored: StoredFair, runtime: Runtime) -> dict[str, Any]:
    fair = stored.fair
    at = service(runtime).clock()
    return {
        **fair.model_dump(mode="json"),
        "phase": fair.phase(today_in_china(at)),
        "registration_open": fair.registration_open(at),
        "statistics": _statistics(stored),
    }


def summary(stored: StoredFair, runtime: Runtime) -> FairSummary:
    return FairSummary.model_validate(_summary_fields(stored, runtime))


async def _view(stored: StoredFair, runtime: Runtime, response: Response) -> FairView:
    async with runtime.read_sessions() as session:
        listings = [
            listing
            for listing in await store.listings_of(session, stored.fair.id)
            if listing.province in stored.fair.provinces
        ]
        found = await store.vacancies_by_id(session, [v for listing in listings for v in listing.vacancy_ids])
    views = [
        ListingView(
            fair_id=listing.fair_id,
            province=listing.province,
            version=listing.version,
            updated_at=listing.updated_at,
            vacancies=[
                ListedVacancy(known=True, **found[v]) if v in found else ListedVacancy(id=v, known=False)
                for v in listing.vacancy_ids
            ],
        )
        for listing in sorted(listings, key=lambda item: stored.fair.provinces.index(item.province))
    ]
    response.headers["ETag"] = f'"{stored.fair.version}"'
    return FairView.model_validate({**_summary_fields(stored, runtime), "listings": views})


async def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """The use case's answer, its refusals as problems."""
    try:
        return await coroutine
    except (FairNotFound, RegistrationNotFound) as exc:
        raise NotFound(str(exc)) from exc
    except NotOrganiser as exc:
        raise Forbidden(str(exc), slug="not-organiser") from exc
    except StaleVersion as exc:
        raise Conflict(str(exc), slug="stale-version") from exc
    except VersionRequired as exc:
        raise Problem(str(exc), status=428, slug="version-required") from exc
    except AlreadyRegistered as exc:
        raise Conflict(str(exc), slug="already-registered") from exc
    except FairRuleError as exc:
        raise Conflict(str(exc), slug="fair-rule") from exc
    except InvalidFair as exc:
        raise Unprocessable(str(exc), errors=exc.errors) from exc
    except ValidationError as exc:  # a change merged with what is held breaks a rule of the event
        raise RequestValidationError(exc.errors(include_url=False)) from exc


# The event -----------------------------------------------------------------------------------------------------


@router.post(
    "/fairs",
    status_code=status.HTTP_201_CREATED,
    response_model=FairView,
    responses={
        201: {
            "description": "created, at version 1, and broadcast to every node",
            "headers": {**_ETAG, "Location": {"description": "the new event", "schema": {"type": "string"}}},
        },
        **problem_responses(400, 401, 403, 422),
    },
)
async def create_fair(draft: FairDraft, runtime: RuntimeDep, _officer: OfficerDep, response: Response) -> FairView:
    """Create a recruitment event organised by this province (officers of this province). The co-organisers are
    other members of the federation; a venue lies in this province; the first day is today or later."""
    stored = await _run(service(runtime).create(draft))
    response.headers["Location"] = f"/api/v1/fairs/{stored.fair.id}"
    return await _view(stored, runtime, response)


@router.get("/fairs", response_model=FairPage, responses=problem_responses(422))
async def list_fairs(
    runtime: RuntimeDep,
    campaign: Campaign | None = None,
    province: Annotated[str | None, Query(pattern=_PROVINCE, description="organiser or co-organiser")] = None,
    phase: Annotated[Phase | None, Query(description="by today's date in China")] = None,
    status_: Annotated[FairStatus | None, Query(alias="status")] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> FairPage:
    """Every province's recruitment events as this node holds them (public), by first day then id."""
    after = None
    if cursor is not None:
        try:
            payload = decode_cursor(cursor)
            after = (date.fromisoformat(payload["s"]), str(payload["i"]))
        except (ValueError, KeyError, TypeError) as exc:
            message = "not a cursor this API gave out; start again without one"
            raise Unprocessable(
                f"cursor {cursor!r}: {message}", errors=[{"field": "query.cursor", "message": message}]
            ) from exc
    today = today_in_china(service(runtime).clock())
    async with runtime.read_sessions() as session:
        found = await store.find_fairs(
            session,
            campaign=campaign.value if campaign else None,
            province=province,
            phase=phase,
            status=status_,
            today=today,
            after=after,
            limit=limit + 1,
        )
    page = found[:limit]
    next_cursor = None
    if len(found) > limit:
        last = page[-1].fair
        next_cursor = encode_cursor({"s": last.starts_on.isoformat(), "i": last.id})
    return FairPage(items=[summary(stored, runtime) for stored in page], next_cursor=next_cursor)


# Registrations at the worker's home (declared before /fairs/{fair_id}: "registrations" is no event id) -----------


def _registration(row: dict[str, Any]) -> RegistrationView:
    return RegistrationView.model_validate(row)


@router.get("/fairs/registrations", response_model=RegistrationList, responses=problem_responses(401, 403))
async def my_registrations(worker: WorkerDep, runtime: RuntimeDep) -> RegistrationList:
    """The calling worker's registrations (newest first), with the organiser's answer when it has come."""
    async with runtime.read_sessions() as session:
        rows = await store.worker_registrations(session, worker.sub)
    return RegistrationList(items=[_registration(row) for row in rows])


@router.post(
    "/fairs/registrations/{registration_id}/cancel",
    response_model=RegistrationView,
    responses=problem_responses(401, 403, 404, 409),
)
async def cancel_registration(registration_id: str, worker: WorkerDep, runtime: RuntimeDep) -> RegistrationView:
    """Cancel one of your registrations before the event ends; the organiser is told."""
    row = await _run(service(runtime).cancel_registration(registration_id, worker.sub))
    return _registration(row)


@router.get("/fairs/{fair_id}", response_model=FairView, responses={200: {"headers": _ETAG}, **problem_responses(404)})
async def get_fair(fair_id: str, runtime: RuntimeDep, response: Response) -> FairView:
    """One event with the vacancies its organising provinces list, its outcomes and registration counts (public)."""
    async with runtime.read_sessions() as session:
        stored = await store.load_fair(session, fair_id)
    if stored is None:
        raise NotFound(f"no recruitment event {fair_id} on this node")
    return await _view(stored, runtime, response)


@router.patch(
    "/fairs/{fair_id}",
    response_model=FairView,
    responses={200: {"description": "the event as changed", "headers": _ETAG}, **_CHANGE_PROBLEMS},
)
async def change_fair(
    fair_id: str,
    changes: FairChanges,
    runtime: RuntimeDep,
    _officer: OfficerDep,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> FairView:
    """Change a scheduled event before it ends (the organiser's officers); name the version you read."""
    version = changes.version or if_match_version(if_match, "event")
    stored = await _run(service(runtime).update(fair_id, changes, version))
    return await _view(stored, runtime, response)


@router.post(
    "/fairs/{fair_id}/cancel",
    response_model=FairView,
    responses={200: {"description": "the event, cancelled", "headers": _ETAG}, **_CHANGE_PROBLEMS},
)
async def cancel_fair(
    fair_id: str,
    request: FairCancellation,
    runtime: RuntimeDep,
    _officer: OfficerDep,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> FairView:
    """Cancel a scheduled event before it ends, with a reason; registrations that arrive after are refused."""
    version = request.version or if_match_version(if_match, "event")
    stored = await _run(service(runtime).cancel(fair_id, version, request.reason))
    return await _view(stored, runtime, response)


@router.post(
    "/fairs/{fair_id}/outcomes",
    response_model=FairView,
    responses={200: {"description": "the event, concluded", "headers": _ETAG}, **_OPTIONALLY_VERSIONED},
)
async def record_outcomes(
    fair_id: str,
    request: OutcomesRequest,
    runtime: RuntimeDep,
    _officer: OfficerDep,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> FairView:
    """Record what the event achieved, once it has started (again to correct it); hires are at most the
    intentions reached. The registration counts are published with them."""
    version = request.version or if_match_version(if_match, "event")
    outcomes = Outcomes.model_validate(request.model_dump(exclude={"version"}))
    stored = await _run(service(runtime).record_outcomes(fair_id, outcomes, version))
    return await _view(stored, runtime, response)


@router.put(
    "/fairs/{fair_id}/vacancies",
    response_model=ListingView,
    responses={200: {"description": "this province's listing, as replaced"}, **_OPTIONALLY_VERSIONED},
)
async def list_vacancies(
    fair_id: str,
    request: ListingRequest,
    runtime: RuntimeDep,
    _officer: OfficerDep,
    if_match: Annotated[str | None, Header()] = None,
) -> ListingView:
    """Replace the vacancies this province lists at the event (officers of the organiser or of a co-organiser):
    open vacancies of this province only (422 naming each other one)."""
    version = request.version or if_match_version(if_match, "listing")
    listing = await _run(service(runtime).list_vacancies(fair_id, request.vacancy_ids, version))
    async with runtime.read_sessions() as session:
        found = await store.vacancies_by_id(session, listing.vacancy_ids)
    return ListingView(
        fair_id=listing.fair_id,
        province=listing.province,
        version=listing.version,
        updated_at=listing.updated_at,
        vacancies=[ListedVacancy(known=True, **found[v]) for v in listing.vacancy_ids if v in found],
    )


@router.post(
    "/fairs/{fair_id}/registrations",
    status_code=status.HTTP_201_CREATED,
    response_model=RegistrationView,
    responses={
        201: {"description": "registered here and sent to the organiser (status submitted until it answers)"},
        **problem_responses(400, 401, 403, 404, 409, 422),
    },
)
async def register(
    fair_id: str, draft: RegistrationDraft, worker: WorkerDep, runtime: RuntimeDep, response: Response
) -> RegistrationView:
    """Register for an event at your home node. 409 when the event is cancelled, its registration has closed, you
    are registered already, or it is full as far as this node knows."""
    row = await _run(service(runtime).register(fair_id, worker.sub, draft))
    response.headers["Location"] = f"/api/v1/fairs/registrations/{row['id']}"
    async with runtime.read_sessions() as session:
        stored = await store.load_fair(session, fair_id)
    if stored is not None:
        row = {
            **row,
            "fair_title": stored.fair.title,
            "fair_status": stored.fair.status,
            "starts_on": stored.fair.starts_on,
            "ends_on": stored.fair.ends_on,
        }
    return _registration(row)


@router.get(
    "/fairs/{fair_id}/registrations", response_model=RegistrationPage, responses=problem_responses(401, 403, 404, 422)
)
async def fair_registrations(
    fair_id: str,
    runtime: RuntimeDep,
    _officer: OfficerDep,
    status_: Annotated[RegistrationStatus | None, Query(alias="status")] = None,
    home_province: Annotated[str | None, Query(pattern=_PROVINCE)] = None,
    cursor: Annotated[str | None, Query(max_length=40, description="the last id of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> RegistrationPage:
    """The registrations received for one of this province's events (its officers only; names and phones)."""
    async with runtime.read_sessions() as session:
        stored = await store.load_fair(session, fair_id)
        if stored is None:
            raise NotFound(f"no recruitment event {fair_id} on this node")
        if stored.fair.organiser_province != runtime.settings.province:
            raise Forbidden(
                f"event {fair_id} is organised by {stored.fair.organiser_province}; its registrations are held there"
            )
        rows = await store.fair_registrations(
            session,
            fair_id,
            status=status_.value if status_ else None,
            home=home_province,
            after=cursor,
            limit=limit + 1,
        )
    page = rows[:limit]
    return RegistrationPage(
        items=[_registration(row) for row in page], next_cursor=page[-1]["id"] if len(rows) > limit else None
    )


# The part's wiring ---------------------------------------------------------------------------------------------

LaterVersion = Annotated[int, Field(ge=2, le=INT32_MAX)]


class PublishedFair(Fair):
    """An event just created: scheduled, at version 1."""

    status: Literal[FairStatus.SCHEDULED]
    version: Literal[1]


class UpdatedFair(Fair):
    """A scheduled event after a change by its organiser."""

    status: Literal[FairStatus.SCHEDULED]
    version: LaterVersion


class CancelledFair(Fair):
    """An event its organiser cancelled before it ended (``cancel_reason`` says why)."""

    status: Literal[FairStatus.CANCELLED]
    version: LaterVersion


class ConcludedFair(Fair):
    """An event with its outcomes recorded (or corrected)."""

    status: Literal[FairStatus.CONCLUDED]
    version: LaterVersion
    outcomes: RecordedOutcomes


EVENTS: list[EventContract] = [
    EventContract(
        type=PUBLISHED,
        model=PublishedFair,
        channel="events",
        summary="A province created a joint recruitment event (docking event, job fair).",
        description="Written with the event's insert (POST /api/v1/fairs); the whole event at version 1, status "
        "scheduled; the key and subject are the event id.",
    ),
    EventContract(
        type=UPDATED,
        model=UpdatedFair,
        channel="events",
        summary="The organiser changed a scheduled event.",
        description="Written with the change (PATCH /api/v1/fairs/{id}); the whole event as changed.",
    ),
    EventContract(
        type=CANCELLED,
        model=CancelledFair,
        channel="events",
        summary="The organiser cancelled an event before it ended.",
        description="Written by POST /api/v1/fairs/{id}/cancel; status cancelled with the reason.",
    ),
    EventContract(
        type=OUTCOMES_RECORDED,
        model=ConcludedFair,
        channel="events",
        summary="The organiser recorded (or corrected) an event's outcomes.",
        description="Written by POST /api/v1/fairs/{id}/outcomes; status concluded with the outcomes.",
    ),
    EventContract(
        type=LISTING,
        model=Listing,
        channel="events",
        summary="An organising province replaced the list of its vacancies at an event.",
        description="Written by PUT /api/v1/fairs/{id}/vacancies on the listing province's own stream; the key is "
        "the event id (the organiser's listing follows its event on one partition). Receivers refuse a listing of a "
        "province that does not organise the event and retry one that acts on a version of the event they do not "
        "hold yet.",
    ),
    EventContract(
        type=STATISTICS,
        model=FairStatistics,
        channel="events",
        summary="The organiser's anonymous counts of an event's registrations, by home province.",
        description="Written when outcomes are recorded and at most every LABORNET_JOBS_FAIRS_STATISTICS_INTERVAL_S "
        "while registrations come; counts only. A higher generation replaces a lower one.",
    ),
    EventContract(
        type=REGISTRATION,
        model=RegistrationMessage,
        channel="inbox",
        summary="A worker registered for an event at their home node (to the organiser only).",
        description="Personal data (name, phone): the home and the organiser hold it, nobody else. The key is the "
        "registration id.",
    ),
    EventContract(
        type=REGISTRATION_CANCELLED,
        model=RegistrationCancellation,
        channel="inbox",
        summary="A worker cancelled their registration (to the organiser).",
    ),
    EventContract(
        type=REGISTRATION_ANSWERED,
        model=RegistrationAnswer,
        channel="inbox",
        summary="The organiser accepted or refused a registration (to the worker's home node).",
        description="Refused when submitted after the registration closed, the event was full or cancelled.",
    ),
]


def setup(runtime: Runtime) -> None:
    """Wire this part's services into the runtime (called once, before the consumers start)."""
    init_metrics()
    settings = FairSettings()
    runtime.extras[SETTINGS] = settings
    runtime.extras[SERVICE] = FairService(
        province=runtime.settings.province,
        members=runtime.registry.codes(),
        sessions=runtime.sessions,
        outbox=runtime.outbox,
        divisions=load_divisions(runtime.settings.divisions_path),
        rebroadcast_past_days=settings.rebroadcast_past_days,
    )


def inbox_handlers(runtime: Runtime) -> dict[str, Handler]:
    """Handlers of the directed messages of this part arriving on the province's jobs inbox."""
    return service(runtime).inbox_handlers()


def broadcast_handlers(runtime: Runtime) -> dict[str, Handler]:
    """Handlers of this part's events broadcast by partners on their jobs events topics."""
    return service(runtime).broadcast_handlers()


def background(runtime: Runtime) -> list[Coroutine[Any, Any, None]]:
    """Publishing due registration counts, the event gauges, and broadcasting current events again."""
    fairs = service(runtime)
    settings: FairSettings = runtime.extras[SETTINGS]
    return [
        every(lambda: settings.statistics_interval_s, fairs.publish_due_statistics, "event statistics"),
        every(lambda: settings.sweep_interval_s, fairs.refresh_gauges, "event gauges"),
        every(lambda: settings.rebroadcast_interval_s, fairs.rebroadcast, "event rebroadcast"),
    ]

"""Organised labour dispatch: a group of workers sent by an origin province to a destination, which confirms arrival.

* Officers of the origin record a dispatch (``POST /api/v1/dispatches``), change it (``PATCH``, naming the version
  read) or cancel it until its arrival is confirmed.
* Officers of the destination confirm the arrival once (``POST /api/v1/dispatches/{id}/arrival``): when, and how
  many workers were received; a difference from the headcount sent must be explained.
* Officers of both provinces see the dispatch with its state, the headcount sent and received, the difference and
  whether the confirmation is overdue; every other province holds nothing of it (404). No worker roster travels:
  the escort's name and phone are the only personal data, seen by the two provinces' officers only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Coroutine
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from labornet.jobs.adapters import dispatches as repository
from labornet.jobs.adapters.dispatches import StoredDispatch
from labornet.jobs.domain.dispatch import (
    ANNOUNCED,
    ARRIVAL_CONFIRMED,
    CANCELLED,
    MAX_HEADCOUNT,
    RECEIVED_FACTOR,
    UPDATED,
    AnnouncedDispatch,
    Arrival,
    CancelledDispatch,
    ConfirmedDispatch,
    Contact,
    DispatchChanges,
    DispatchDraft,
    DispatchEmployer,
    DispatchRole,
    DispatchRuleError,
    InvalidDispatch,
    Note,
    NotParty,
    StaleVersion,
    State,
    Transport,
    UpdatedDispatch,
    VersionRequired,
    overdue,
)
from labornet.jobs.entrypoints.api import OfficerDep
from labornet.jobs.service_layer.dispatches import (
    DispatchNotFound,
    DispatchService,
    DispatchSettings,
    init_metrics,
    sweep,
)
from labornet.shared.app import Runtime, RuntimeDep
from labornet.shared.contracts import EventContract
from labornet.shared.inbox import Handler
from labornet.shared.problems import (
    Conflict,
    Forbidden,
    NotFound,
    Problem,
    Unprocessable,
    if_match_version,
    problem_responses,
)

router = APIRouter(prefix="/api/v1", tags=["dispatches"])

# a step: 400 a body that is not JSON, 401/403 the token, 404 unknown here, 403 the other province's step,
# 409 the dispatch's state or a stale version, 422 a bad value, 428 without a version
STEP_PROBLEMS = problem_responses(400, 401, 403, 404, 409, 422, 428)
ETAG = {
    "ETag": {"description": 'the plan\'s version, e.g. "3": send it back as If-Match', "schema": {"type": "string"}}
}

# the events of this part of the jobs service, listed in labornet.jobs.contracts.EVENTS
EVENTS: list[EventContract] = [
    EventContract(
        type=ANNOUNCED,
        model=AnnouncedDispatch,
        channel="inbox",
        summary="An origin province recorded a group transfer of workers to the destination.",
        description="Written by POST /api/v1/dispatches, to the destination's jobs inbox only; the whole dispatch "
        "(the escort's name and phone included, no worker roster); the key and subject are the dispatch id.",
    ),
    EventContract(
        type=UPDATED,
        model=UpdatedDispatch,
        channel="inbox",
        summary="The origin changed a dispatch (headcount, transport, times, employers, escort).",
        description="Written by PATCH /api/v1/dispatches/{id}; the whole dispatch at its new plan version. The "
        "destination applies a version newer than the one it holds, and keeps its own arrival confirmation.",
    ),
    EventContract(
        type=CANCELLED,
        model=CancelledDispatch,
        channel="inbox",
        summary="The origin cancelled a dispatch before its arrival was confirmed.",
        description="Written by POST /api/v1/dispatches/{id}/cancel; the whole dispatch with the reason.",
    ),
    EventContract(
        type=ARRIVAL_CONFIRMED,
        model=ConfirmedDispatch,
        channel="inbox",
        summary="The destination confirmed the arrival of a dispatch and the headcount received.",
        description="Written by POST /api/v1/dispatches/{id}/arrival, to the origin's jobs inbox only; once per "
        "dispatch (a confirmation is final). The origin takes the arrival from it and keeps its own plan.",
    ),
]


def service(runtime: Runtime) -> DispatchService:
    found: DispatchService = runtime.extras["dispatches"]
    return found


def setup(runtime: Runtime) -> None:
    """Wire this part's services into the runtime (called once, before the consumers start)."""
    config = DispatchSettings()
    init_metrics(runtime.settings.province, runtime.registry.codes())
    runtime.extras["dispatch_settings"] = config
    runtime.extras["dispatches"] = DispatchService(
        province=runtime.settings.province,
        sessions=runtime.sessions,
        outbox=runtime.outbox,
        limit=config.limit(runtime.settings.calendars()),
    )


def inbox_handlers(runtime: Runtime) -> dict[str, Handler]:
    """Handlers of the directed messages of this part arriving on the province's jobs inbox."""
    return service(runtime).handlers()


def broadcast_handlers(runtime: Runtime) -> dict[str, Handler]:
    """Dispatch has no broadcast events: everything it carries travels between the two provinces only."""
    return {}


def background(runtime: Runtime) -> list[Coroutine[Any, Any, None]]:
    """The sweep refreshing the dispatch gauges (overdue confirmations)."""
    config: DispatchSettings = runtime.extras["dispatch_settings"]
    return [sweep(service(runtime), runtime.read_sessions, config.sweep_interval_s)]


# What the API answers -----------------------------------------------------------------------------------------------

DISPATCH_EXAMPLE: dict[str, Any] = {
    "id": "510000-G-3F2A9C0D4B5E6F708192",
    "version": 2,
    "origin_province": "510000",
    "destination_province": "330000",
    "brand_demand_id": "330000-D-0123456789ABCDEF0123",
    "employers": [
        {
            "name": "宁波某电子科技有限公司",
            "credit_code": "91350100M000100Y43",
            "division_code": "330206",
            "site": "北仑园区二号厂房",
        }
    ],
    "headcount": 30,
    "transport": "special-train",
    "departure_at": "2026-02-20T00:30:00Z",
    "departure_place": "成都东站",
    "expected_arrival_on": "2026-02-21",
    "confirmation_due": "2026-02-24",
    "escort": {"name": "李建国", "phone": "13812345678"},
    "note": "春风行动专列",
    "announced_at": "2026-02-10T02:00:00Z",
    "changed_at": "2026-02-12T03:00:00Z",
    "arrival": {
        "arrived_at": "2026-02-21T06:40:00Z",
        "headcount_received": 29,
        "note": "一人途中因家事返乡",
        "confirmed_at": "2026-02-21T08:00:00Z",
        "plan_version": 2,
    },
    "state": "arrived",
    "role": "sent",
    "headcount_received": 29,
    "difference": 1,
    "more_than_sent": False,
    "overdue": False,
}


class DispatchView(BaseModel):
    """A dispatch as both provinces hold it, plus what this node says about it: its role, the difference and
    whether the arrival confirmation is overdue (computed the same way on both nodes)."""

    model_config = ConfigDict(json_schema_extra={"examples": [DISPATCH_EXAMPLE]})
    id: str = Field(description="`<origin province>-G-<20 hex digits>`")
    version: int = Field(description="the plan's version: send it back as If-Match or `version` to change it")
    origin_province: str = Field(description="the labour-exporting province that sent the group")
    destination_province: str = Field(description="the province receiving the group, which confirms its arrival")
    brand_demand_id: str | None = Field(None, description="the destination's brand demand the group answers")
    fair_id: str | None = Field(None, description="the recruitment event the group comes from")
    employers: list[DispatchEmployer]
    headcount: int = Field(description="workers sent")
    transport: Transport
    departure_at: datetime
    departure_place: str
    expected_arrival_on: date = Field(description="China time")
    confirmation_due: date = Field(description="the last day the arrival is confirmed in time (China time)")
    escort: Contact = Field(description="the escort or contact of the group (officers of the two provinces only)")
    note: str | None = None
    announced_at: datetime
    changed_at: datetime = Field(description="the plan's last change")
    cancelled_at: datetime | None = None
    cancellation_reason: str | None = None
    arrival: Arrival | None = Field(None, description="what the destination confirmed; final")
    state: State = Field(description="announced, arrived or cancelled")
    role: DispatchRole = Field(description="this province's part: sent (origin) or received (destination)")
    headcount_received: int | None = Field(None, description="workers the destination received")
    difference: int | None = Field(
        None, description="headcount sent minus headcount received (negative: more arrived than were sent)"
    )
    more_than_sent: bool = Field(description="more workers arrived than were sent: check the record")
    overdue: bool = Field(description="the arrival is not confirmed and the last day to confirm it has passed")


class DispatchPage(BaseModel):
    """One page of dispatches, in id order."""

    items: list[DispatchView]
    next_after: str | None = Field(description="pass as `after` for the next page; null on the last page")


class DispatchCancellation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Note = Field(description="why the transfer is called off")
    version: int | None = Field(None, ge=1, description="the version you read (or send it as If-Match)")


class ArrivalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    arrived_at: AwareDatetime = Field(description="when the group arrived, with its offset")
    headcount_received: int = Field(
        ge=0,
        le=RECEIVED_FACTOR * MAX_HEADCOUNT,
        description=f"workers received: 0 up to {RECEIVED_FACTOR} × the headcount sent (more than sent is flagged)",
    )
    note: Note | None = Field(None, description="what explains a difference from the headcount sent (required then)")
    version: int | None = Field(None, ge=1, description="the plan version you confirm against (or If-Match)")


def present(held: StoredDispatch, runtime: Runtime) -> DispatchView:
    dispatch = held.dispatch
    received = dispatch.headcount_received
    return DispatchView.model_validate(
        {
            **dict(dispatch),
            "state": dispatch.state,
            "role": dispatch.role_of(runtime.settings.province),
            "headcount_received": received,
            "difference": dispatch.difference,
            "more_than_sent": received is not None and received > dispatch.headcount,
            "overdue": overdue(dispatch, service(runtime).today()),
        }
    )


def respond(held: StoredDispatch, runtime: Runtime, response: Response) -> DispatchView:
    response.headers["ETag"] = f'"{held.dispatch.version}"'
    return present(held, runtime)


def invalid(field: str, message: str) -> Unprocessable:
    return Unprocessable(message, errors=[{"field": field, "message": message}])


async def run(change: Awaitable[StoredDispatch]) -> StoredDispatch:
    """Carry out a step; the dispatch's rules answer 403, 404, 409, 422 or 428."""
    try:
        return await change
    except DispatchNotFound as exc:
        raise NotFound(str(exc)) from exc
    except NotParty as exc:
        raise Forbidden(str(exc), slug="not-dispatch-party") from exc
    except StaleVersion as exc:
        raise Conflict(str(exc), slug="stale-version") from exc
    except VersionRequired as exc:
        raise Problem(str(exc), status=428, slug="version-required") from exc
    except InvalidDispatch as exc:
        raise invalid(exc.field, str(exc)) from exc
    except DispatchRuleError as exc:
        raise Conflict(str(exc), slug="dispatch-rule") from exc


# Routes ---------------------------------------------------------------------------------------------------------------


@router.post(
    "/dispatches",
    status_code=status.HTTP_201_CREATED,
    responses={
        201: {
            "description": "recorded, at version 1, and on its way to the destination",
            "headers": {**ETAG, "Location": {"description": "the dispatch's address", "schema": {"type": "string"}}},
        },
        **problem_responses(400, 401, 403, 422),
    },
)
async def record_dispatch(
    body: DispatchDraft, runtime: RuntimeDep, _officer: OfficerDep, response: Response
) -> DispatchView:
    """Record a group transfer of this province's workers to a member province (officers of the origin).

    It answers a brand demand of the destination (`<destination>-D-…`) and/or comes from a joint recruitment
    event (`<organiser>-F-…`) in which the origin or the destination takes part."""
    destination = body.destination_province
    if destination not in runtime.registry:
        members = ", ".join(runtime.registry.codes())
        raise invalid("destination_province", f"province {destination} is not a member of the federation ({members})")
    held = await run(service(runtime).announce(body))
    response.headers["Location"] = f"{router.prefix}/dispatches/{held.dispatch.id}"
    return respond(held, runtime, response)


@router.get("/dispatches", responses=problem_responses(401, 403, 422))
async def list_dispatches(
    runtime: RuntimeDep,
    _officer: OfficerDep,
    role: Annotated[
        DispatchRole | None, Query(description="sent: this province is the origin; received: the destination")
    ] = None,
    state: State | None = None,
    overdue_: Annotated[
        bool | None, Query(alias="overdue", description="true: only overdue confirmations; false: none of them")
    ] = None,
    difference: Annotated[
        bool | None, Query(description="true: only arrivals whose headcount received differs from the sent one")
    ] = None,
    after: Annotated[str | None, Query(max_length=40, description="cursor: the last id of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> DispatchPage:
    """The dispatches this province sent or received (officers of this province)."""
    async with runtime.read_sessions() as session:
        found, more = await repository.page(
            session,
            runtime.settings.province,
            role=role,
            state=state,
            overdue=overdue_,
            difference=difference,
            today=service(runtime).today(),
            after=after,
            limit=limit,
        )
    items = [present(held, runtime) for held in found]
    return DispatchPage(items=items, next_after=items[-1].id if more and items else None)


@router.get(
    "/dispatches/{dispatch_id}",
    responses={200: {"headers": ETAG}, **problem_responses(401, 403, 404)},
)
async def get_dispatch(dispatch_id: str, runtime: RuntimeDep, _officer: OfficerDep, response: Response) -> DispatchView:
    """One dispatch this province sent or received (the same on both nodes)."""
    async with runtime.read_sessions() as session:
        held = await repository.load(session, dispatch_id)
    if held is None:
        raise NotFound(f"no dispatch {dispatch_id} on this node")
    return respond(held, runtime, response)


@router.patch(
    "/dispatches/{dispatch_id}",
    responses={200: {"description": "the dispatch as changed", "headers": ETAG}, **STEP_PROBLEMS},
)
async def change_dispatch(
    dispatch_id: str,
    body: DispatchChanges,
    runtime: RuntimeDep,
    _officer: OfficerDep,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> DispatchView:
    """The origin changes the plan until the arrival is confirmed; name the version you read (a stale one is 409).

    The destination and the links stay as recorded: a group sent elsewhere is a new dispatch."""
    version = body.version or if_match_version(if_match, "dispatch")
    held = await run(service(runtime).update(dispatch_id, body, version))
    return respond(held, runtime, response)


@router.post(
    "/dispatches/{dispatch_id}/cancel",
    responses={200: {"description": "the dispatch, cancelled", "headers": ETAG}, **STEP_PROBLEMS},
)
async def cancel_dispatch(
    dispatch_id: str,
    body: DispatchCancellation,
    runtime: RuntimeDep,
    _officer: OfficerDep,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> DispatchView:
    """The origin calls the transfer off before its arrival is confirmed."""
    version = body.version or if_match_version(if_match, "dispatch")
    held = await run(service(runtime).cancel(dispatch_id, body.reason, version))
    return respond(held, runtime, response)


@router.post(
    "/dispatches/{dispatch_id}/arrival",
    responses={200: {"description": "the dispatch, arrived", "headers": ETAG}, **STEP_PROBLEMS},
)
async def confirm_arrival(
    dispatch_id: str,
    body: ArrivalRequest,
    runtime: RuntimeDep,
    _officer: OfficerDep,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> DispatchView:
    """The destination confirms, once, when the group arrived and how many workers it received.

    A difference from the headcount sent needs a `note`; more than sent is recorded and flagged (`more_than_sent`).
    The confirmation is final: a second one is 409."""
    version = body.version or if_match_version(if_match, "dispatch")
    change = service(runtime).confirm_arrival(
        dispatch_id,
        arrived_at=body.arrived_at,
        headcount_received=body.headcount_received,
        note=body.note,
        expected_version=version,
    )
    return respond(await run(change), runtime, response)

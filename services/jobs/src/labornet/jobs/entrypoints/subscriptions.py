"""A worker's subscriptions and the vacancies they matched: ``/api/v1/me/…`` (role ``worker``, own data only).

* ``POST /subscriptions`` — criteria (see :mod:`labornet.jobs.domain.subscriptions`) and an optional
  ``webhook_url``; answers 201 with a ``Location`` and, once only, the ``webhook_secret`` that signs deliveries.
  The open vacancies already in the replica are matched in the same transaction (the most recent
  ``LABORNET_SUBSCRIPTIONS_INITIAL_MATCH_LIMIT`` candidates, 500 by default).
* ``GET /subscriptions``, ``GET /subscriptions/{id}``, ``DELETE /subscriptions/{id}`` (deactivates: no new matches,
  pending webhook deliveries are dropped, the matches found so far stay visible).
* ``GET /matches`` — newest first, keyset-paged with an opaque ``cursor``.
* ``GET /matches/stream`` — Server-Sent Events: ``event: match`` for every new match and ``event: application``
  for every change of one of the worker's applications that lands at this (home) node, resumable with
  ``Last-Event-ID``; ``: keep-alive`` comments while nothing happens. The event id is the stream position: the
  last match id, and after ``:`` the last application notice id when there is one (``42`` or ``42:7``), so a
  reconnection misses neither kind, and a client that only ever saw matches resumes with the match id as before.
  It polls the database, so it works whichever replica wrote the match. A stream ends after
  ``LABORNET_SUBSCRIPTIONS_STREAM_MAX_DURATION_S`` (30 s) and the client reconnects (EventSource does so by
  itself) with the last id it saw: uvicorn waits for open responses on shutdown, and this bounds the wait.

Another worker's subscription is answered with 404, as if it did not exist.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Coroutine, Sequence
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import AnyUrl, ConfigDict, Field, UrlConstraints, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import Select, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import StreamingResponse

from labornet.jobs.adapters.tables import application_notice, match, subscription, vacancy
from labornet.jobs.adapters.webhooks import UnsafeTarget, WebhookDispatcher, check_webhook_url
from labornet.jobs.domain.subscriptions import SubscriptionCriteria
from labornet.jobs.domain.vacancy import ignored
from labornet.jobs.entrypoints.schemas import (
    APPLICATION_NOTICE_EXAMPLE,
    MATCH_EXAMPLE,
    ApplicationNotice,
    CreatedSubscription,
    MatchPage,
    SubscriptionList,
    SubscriptionView,
    VacancyMatch,
    VacancySummary,
)
from labornet.jobs.metrics import MATCH_DELIVERIES
from labornet.jobs.service_layer.matching import match_open_vacancies
from labornet.shared.app import Runtime, RuntimeDep
from labornet.shared.auth import Principal, Role, require_role
from labornet.shared.bounds import parse_non_negative_int64
from labornet.shared.db import utcnow
from labornet.shared.problems import Conflict, NotFound, Unprocessable, problem_responses
from labornet.shared.provinces import ProvinceRegistry

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/me", tags=["subscriptions"])

WEBHOOK_DISPATCHER = "webhook_dispatcher"  # key of the running dispatcher in Runtime.extras


class SubscriptionSettings(BaseSettings):
    """Subscriptions and the match stream, from ``LABORNET_SUBSCRIPTIONS_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="LABORNET_SUBSCRIPTIONS_", env_file=".env", extra="ignore")

    max_per_worker: int = Field(20, ge=1, description="active subscriptions one worker may hold")
    initial_match_limit: int = Field(500, ge=0, description="open vacancies looked at when a subscription is made")
    stream_poll_interval_s: float = Field(0.5, gt=0, description="how often a match stream looks for new matches")
    stream_heartbeat_s: float = Field(15.0, gt=0, description="a keep-alive comment after this much silence")
    stream_batch_size: int = Field(100, ge=1, le=1000, description="matches read per poll")
    stream_max_duration_s: float = Field(
        30.0,
        gt=0,
        description="a stream ends after this long and the client reconnects with Last-Event-ID; bounds how long "
        "a shutting-down server waits for its open streams",
    )
    stream_retry_ms: int = Field(1000, ge=0, description="reconnection delay announced to clients (SSE retry)")
    stream_late_commit_grace_s: float = Field(
        10.0,
        ge=0,
        description="how long a stream keeps looking below the newest match id it sent, for matches whose "
        "transaction committed after a later one (ids come from a sequence, commits in any order)",
    )


@functools.cache
def subscription_settings() -> SubscriptionSettings:
    return SubscriptionSettings()


WorkerDep = Annotated[Principal, Depends(require_role(Role.WORKER))]
SettingsDep = Annotated[SubscriptionSettings, Depends(subscription_settings)]


WebhookUrl = Annotated[AnyUrl, UrlConstraints(max_length=500, allowed_schemes=["http", "https"])]


class NewSubscription(SubscriptionCriteria):
    """A subscription's criteria and webhook. A subscription read from the API can be sent back as it is (to
    subscribe again to what a deleted one asked for): what the node sets itself is ignored."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"occupation_codes": ["51"], "provinces": ["330000"], "min_salary": 6000, "keywords": ["厨师"]},
                {"keywords": ["电工"], "webhook_url": "https://example.org/hooks/wang"},
            ]
        }
    )

    webhook_url: WebhookUrl | None = Field(
        None, description="http(s) URL that receives a signed POST for every match (see the webhooks documentation)"
    )
    id: str | None = ignored("the node gives the id")
    active: bool | None = ignored("a new subscription is active")
    created_at: datetime | None = ignored("set when the subscription is made")


# Subscriptions -------------------------------------------------------------------------------------------------


def _with_federation(body: NewSubscription, registry: ProvinceRegistry) -> SubscriptionCriteria:
    """The criteria, validated again with the node's province registry (which the body parser cannot know)."""
    try:
        return SubscriptionCriteria.model_validate(
            body.model_dump(include=set(SubscriptionCriteria.model_fields)), context={"registry": registry}
        )
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from exc


async def _own_subscription(session: AsyncSession, subscription_id: str, worker: Principal) -> SubscriptionView:
    row = (
        await session.execute(
            select(subscription).where(subscription.c.id == subscription_id, subscription.c.worker == worker.sub)
        )
    ).first()
    if row is None:
        raise NotFound(f"you have no subscription {subscription_id}")
    return SubscriptionView.model_validate(row, from_attributes=True)


@router.post(
    "/subscriptions",
    status_code=201,
    responses={
        201: {"headers": {"Location": {"description": "the new subscription", "schema": {"type": "string"}}}},
        **problem_responses(400, 401, 403, 409, 422),
    },
)
async def create_subscription(
    body: NewSubscription, worker: WorkerDep, runtime: RuntimeDep, settings: SettingsDep, response: Response
) -> CreatedSubscription:
    """Subscribe: the open vacancies already in the replica are matched at once (``initial_matches``); 409 when
    the worker holds the most active subscriptions allowed."""
    criteria = _with_federation(body, runtime.registry)
    if body.webhook_url is not None:
        try:
            # the dispatcher's settings, loaded once at start-up: the rule checked here is the one deliveries keep
            check_webhook_url(str(body.webhook_url), runtime.extras[WEBHOOK_DISPATCHER].settings)
        except UnsafeTarget as exc:
            raise Unprocessable(
                str(exc), errors=[{"field": "webhook_url", "message": str(exc), "input": str(body.webhook_url)}]
            ) from exc
    now = utcnow()
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "worker": worker.sub,
        **criteria.model_dump(mode="json"),
        "webhook_url": str(body.webhook_url) if body.webhook_url else None,
        "webhook_secret": secrets.token_urlsafe(32) if body.webhook_url else None,
        "active": True,
        "created_at": now,
    }
    async with runtime.sessions() as session, session.begin():
        active = (
            await session.execute(
                select(func.count()).where(subscription.c.worker == worker.sub, subscription.c.active.is_(True))
            )
        ).scalar_one()
        if active >= settings.max_per_worker:
            raise Conflict(
                f"you already have {active} active subscriptions, the most allowed; delete one first",
                slug="too-many-subscriptions",
            )
        await session.execute(subscription.insert().values(**values))
        initial = await match_open_vacancies(
            session, values["id"], criteria, limit=settings.initial_match_limit, now=now
        )
    response.headers["Location"] = f"{router.prefix}/subscriptions/{values['id']}"
    return CreatedSubscription.model_validate({**values, "initial_matches": len(initial)})


@router.get("/subscriptions", responses=problem_responses(401, 403))
async def list_subscriptions(worker: WorkerDep, runtime: RuntimeDep) -> SubscriptionList:
    """The caller's active subscriptions, newest first."""
    query = (
        select(subscription)
        .where(subscription.c.worker == worker.sub, subscription.c.active.is_(True))
        .order_by(subscription.c.created_at.desc(), subscription.c.id)
    )
    async with runtime.read_sessions() as session:
        rows = (await session.execute(query)).all()
    return SubscriptionList(items=[SubscriptionView.model_validate(row, from_attributes=True) for row in rows])


@router.get("/subscriptions/{subscription_id}", responses=problem_responses(401, 403, 404))
async def get_subscription(subscription_id: str, worker: WorkerDep, runtime: RuntimeDep) -> SubscriptionView:
    """One of the caller's subscriptions, active or deleted (another worker's is a 404)."""
    async with runtime.read_sessions() as session:
        return await _own_subscription(session, subscription_id, worker)


@router.delete(
    "/subscriptions/{subscription_id}",
    status_code=204,
    response_class=Response,
    responses={204: {"description": "deactivated (again, if it already was)"}, **problem_responses(401, 403, 404)},
)
async def delete_subscription(subscription_id: str, worker: WorkerDep, runtime: RuntimeDep) -> Response:
    """Deactivate: no new matches or webhook deliveries; the matches found so far stay in the list."""
    async with runtime.sessions() as session, session.begin():
        result = await session.execute(
            update(subscription)
            .where(subscription.c.id == subscription_id, subscription.c.worker == worker.sub)
            .values(active=False)
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFound(f"you have no subscription {subscription_id}")
    return Response(status_code=204)


# Matches -------------------------------------------------------------------------------------------------------

_VACANCY_COLUMNS = tuple(VacancySummary.model_fields)


def _matches_of(worker: str) -> Select[Any]:
    return (
        select(match, *(vacancy.c[name].label(f"v_{name}") for name in _VACANCY_COLUMNS))
        .select_from(match.outerjoin(vacancy, vacancy.c.id == match.c.vacancy_id))
        .where(match.c.worker == worker)
    )


def _vacancy_match(row: Any) -> VacancyMatch:
    values = row._mapping
    summary = None
    if values["v_id"] is not None:
        summary = VacancySummary.model_validate({name: values[f"v_{name}"] for name in _VACANCY_COLUMNS})
    return VacancyMatch.model_validate({**{c.name: values[c.name] for c in match.columns}, "vacancy": summary})


def _encode_cursor(match_id: int) -> str:
    return base64.urlsafe_b64encode(f"before:{match_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        kind, _, value = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().partition(":")
        match_id = parse_non_negative_int64(value) if kind == "before" else None
        if match_id is not None:
            return match_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    message = "not a cursor this API gave out; pass the next_cursor of the previous page unchanged"
    raise Unprocessable(
        f"cursor {cursor!r}: {message}", errors=[{"field": "query.cursor", "message": message, "input": cursor}]
    )


@router.get("/matches", responses=problem_responses(401, 403, 422))
async def list_matches(
    worker: WorkerDep,
    runtime: RuntimeDep,
    cursor: Annotated[str | None, Query(max_length=100, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> MatchPage:
    """The vacancies the caller's subscriptions matched, newest first."""
    query = _matches_of(worker.sub).order_by(match.c.id.desc()).limit(limit + 1)
    if cursor is not None:
        query = query.where(match.c.id < _decode_cursor(cursor))
    async with runtime.read_sessions() as session:
        rows = (await session.execute(query)).all()
    items = [_vacancy_match(row) for row in rows[:limit]]
    return MatchPage(items=items, next_cursor=_encode_cursor(items[-1].id) if len(rows) > limit else None)


_Item = TypeVar("_Item", VacancyMatch, ApplicationNotice)


class _StreamPosition:
    """Which matches (or application notices: a stream keeps one position of each) a stream has sent.

    Match ids come from a sequence, but on PostgreSQL two transactions may commit in the opposite order of their
    ids, so a match can appear below the newest id already sent. The stream therefore keeps reading from a floor
    that only rises past a sent id once that id has been sent ``grace_s`` ago, and skips what it already sent.
    """

    def __init__(self, after: int, grace_s: float) -> None:
        self.floor = after
        self.grace_s = grace_s
        self.sent: dict[int, float] = {}  # match (notice) id → when it was sent (loop time)

    def settle(self, now: float) -> None:
        settled = [match_id for match_id, sent_at in self.sent.items() if now - sent_at >= self.grace_s]
        if settled:
            self.floor = max(self.floor, *settled)
            self.sent = {match_id: at for match_id, at in self.sent.items() if match_id > self.floor}

    def unsent(self, items: Sequence[_Item]) -> list[_Item]:
        return [item for item in items if item.id not in self.sent]


def stream_id(match_id: int, notice_id: int) -> str:
    """The stream position as an event id: ``42`` while the worker has had no application notice, else ``42:7``."""
    return f"{match_id}:{notice_id}" if notice_id else str(match_id)


def parse_stream_id(value: str) -> tuple[int, int] | None:
    """The match and notice ids of an event id of :func:`stream_id` (a bare match id: no notice yet); None if it is
    not one."""
    match_part, separator, notice_part = value.partition(":")
    match_id = parse_non_negative_int64(match_part)
    notice_id = parse_non_negative_int64(notice_part) if separator else 0
    if match_id is None or notice_id is None:
        return None
    return match_id, notice_id


async def _match_events(
    request: Request,
    runtime: Runtime,
    worker: str,
    positions: tuple[_StreamPosition, _StreamPosition],
    settings: SubscriptionSettings,
) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    matches, notices = positions
    # the position the client has seen, the id of every event: the last match and the last notice sent (a late
    # commit below them is sent again after a reconnection rather than missed)
    last = [matches.floor, notices.floor]
    # the id sets the client's Last-Event-ID even before any event, so that its reconnection misses nothing
    yield f"retry: {settings.stream_retry_ms}\nid: {stream_id(*last)}\n\n"
    last_write = loop.time()
    deadline = last_write + settings.stream_max_duration_s
    while loop.time() < deadline and not await request.is_disconnected():
        now = loop.time()
        matches.settle(now)
        notices.settle(now)
        query = (
            _matches_of(worker)
            .where(match.c.id > matches.floor)
            .order_by(match.c.id)
            .limit(settings.stream_batch_size + len(matches.sent))
        )
        notice_query = (
            select(application_notice)
            .where(application_notice.c.worker == worker, application_notice.c.id > notices.floor)
            .order_by(application_notice.c.id)
            .limit(settings.stream_batch_size + len(notices.sent))
        )
        try:
            async with runtime.read_sessions() as session:
                rows = (await session.execute(query)).all()
                notice_rows = (await session.execute(notice_query)).mappings().all()
        except (SQLAlchemyError, OSError) as exc:
            log.warning("match stream: reading matches failed, trying again: %s", exc)
            rows, notice_rows = [], []
        fresh = matches.unsent([_vacancy_match(row) for row in rows])[: settings.stream_batch_size]
        for item in fresh:
            last[0] = item.id
            yield f"id: {stream_id(*last)}\nevent: match\ndata: {item.model_dump_json()}\n\n"
            MATCH_DELIVERIES.labels("stream", "sent").inc()
            matches.sent[item.id] = now
            last_write = now
        changes = notices.unsent([ApplicationNotice.model_validate(dict(row)) for row in notice_rows])
        for notice in changes[: settings.stream_batch_size]:
            last[1] = notice.id
            yield f"id: {stream_id(*last)}\nevent: application\ndata: {notice.model_dump_json()}\n\n"
            notices.sent[notice.id] = now
            last_write = now
        if not fresh and not changes and now - last_write >= settings.stream_heartbeat_s:
            yield ": keep-alive\n\n"
            last_write = now
        if len(fresh) < settings.stream_batch_size and len(changes) < settings.stream_batch_size:
            await asyncio.sleep(settings.stream_poll_interval_s)


_STREAM_EXAMPLE = (
    "retry: 1000\nid: 41:6\n\n"
    "id: 42:6\nevent: match\ndata: "
    + json.dumps(MATCH_EXAMPLE, ensure_ascii=False, separators=(",", ":"))
    + "\n\nid: 42:7\nevent: application\ndata: "
    + json.dumps(APPLICATION_NOTICE_EXAMPLE, ensure_ascii=False, separators=(",", ":"))
    + "\n\n: keep-alive\n\n"
)


@router.get(
    "/matches/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-Sent Events: first `retry` and the `id` to resume from, then an `event: match` "
            "per new match whose `data` is a VacancyMatch (JSON, one line), an `event: application` per change of "
            "one of the worker's applications that lands at this node whose `data` is an ApplicationNotice, and "
            "`: keep-alive` comments while nothing happens. Every `id` is the stream position: the last match id, "
            "followed by `:` and the last application notice id once there is one (`42`, `42:7`). The stream ends "
            "after LABORNET_SUBSCRIPTIONS_STREAM_MAX_DURATION_S; reconnect with Last-Event-ID.",
            "content": {
                "text/event-stream": {
                    # one event of the stream, as the OpenAPI specification's generic text/event-stream schema
                    # describes it (OpenAPI 3.1 tools take `schema` as the schema of each event)
                    "schema": {
                        "type": "object",
                        "description": "one Server-Sent Event; its data is one line of JSON: a VacancyMatch for "
                        "`event: match`, an ApplicationNotice for `event: application`",
                        "required": ["event", "data"],
                        "properties": {
                            "event": {"type": "string", "enum": ["match", "application"]},
                            "id": {
                                "type": "string",
                                "pattern": r"^\d+(:\d+)?$",
                                "description": "the stream position: the last match id, then `:` and the last "
                                "application notice id once there is one",
                            },
                            "data": {"type": "string", "contentMediaType": "application/json"},
                            "retry": {"type": "integer", "minimum": 0},
                        },
                    },
                    "example": _STREAM_EXAMPLE,
                }
            },
        },
        **problem_responses(401, 403, 422),
    },
)
async def stream_matches(
    request: Request,
    worker: WorkerDep,
    runtime: RuntimeDep,
    settings: SettingsDep,
    last_event_id: Annotated[
        str | None,
        Header(
            max_length=41,
            description="resume after this event id (sent by EventSource): a match id, or a match id and an "
            "application notice id as `42:7`",
        ),
    ] = None,
) -> StreamingResponse:
    """New matches and changes of the worker's applications as they happen; without Last-Event-ID the stream starts
    after the newest existing ones. A bare match id as Last-Event-ID (what a client that only ever saw matches
    holds) resumes the matches after it and sends every application notice."""
    if last_event_id is not None:
        after = parse_stream_id(last_event_id)
        if after is None:
            message = "expected the id of the last event received (a match id such as 42, or 42:7)"
            raise Unprocessable(
                f"Last-Event-ID {last_event_id!r}: {message}",
                errors=[{"field": "header.last-event-id", "message": message, "input": last_event_id}],
            )
    else:
        async with runtime.read_sessions() as session:
            newest = await session.execute(select(func.max(match.c.id)).where(match.c.worker == worker.sub))
            latest = await session.execute(
                select(func.max(application_notice.c.id)).where(application_notice.c.worker == worker.sub)
            )
            after = (newest.scalar() or 0, latest.scalar() or 0)
    grace = settings.stream_late_commit_grace_s
    positions = (_StreamPosition(after[0], grace), _StreamPosition(after[1], grace))
    return StreamingResponse(
        _match_events(request, runtime, worker.sub, positions, settings),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# Webhook delivery ----------------------------------------------------------------------------------------------


def webhook_background(runtime: Runtime) -> list[Coroutine[Any, Any, None]]:
    """For ``ServiceSpec.background``: the webhook dispatcher's loop, kept in ``runtime.extras`` to be stopped."""
    dispatcher = WebhookDispatcher(runtime.sessions, runtime.read_sessions)
    runtime.extras[WEBHOOK_DISPATCHER] = dispatcher
    return [dispatcher.run()]

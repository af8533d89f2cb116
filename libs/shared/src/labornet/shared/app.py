"""The application factory every service uses: lifespan, platform routes, wiring.

A service describes itself with a :class:`ServiceSpec` (its routers, its migrations, the consumers it runs) and
gets a FastAPI app with ``/livez``, ``/readyz``, ``/metrics``, ``/api/v1/whoami``, the operator's quarantine
endpoints, problem+json errors and HTTP metrics. Engines, producers and consumers are built in the lifespan,
never at import time; :class:`Runtime` is the one place that holds them (the bootstrap).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from sqlalchemy import func, literal, select, table, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from labornet.shared import migrations
from labornet.shared.antientropy import AntiEntropy, ReplicaSpec, ReplicaSyncState, VerifyReport
from labornet.shared.asyncapi import asyncapi_router
from labornet.shared.auth import Principal, Role, TokenVerifier, current_principal, require_province_role
from labornet.shared.bounds import Int64, NonNegativeInt64
from labornet.shared.brokerwatch import BrokerWatch
from labornet.shared.db import (
    SQLiteWriters,
    StoredTime,
    create_engine,
    outbox,
    quarantine,
    readonly_sessionmaker,
    sessionmaker,
)
from labornet.shared.edge import AddressRateLimit, BodyLimit, RateLimits
from labornet.shared.inbox import EventConsumer, EventRejected, Handler
from labornet.shared.kafka import client_config, ensure_topics, make_consumer, make_producer
from labornet.shared.observability import (
    DB_WRITERS_REFUSED,
    DB_WRITERS_WAITING,
    HttpMetrics,
    configure_logging,
    init_bus_metrics,
)
from labornet.shared.outbox import Outbox, OutboxRelay, decode_headers
from labornet.shared.problems import (
    Conflict,
    NotFound,
    document_edge_problems,
    install_problem_handlers,
    problem_responses,
)
from labornet.shared.provinces import ProvinceRegistry, load_registry
from labornet.shared.settings import Settings
from labornet.shared.signing import Signer, TrustListFile
from labornet.shared.topics import deadletter_topic, node_topics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConsumerSpec:
    """One consumer group of a service: which topics it reads and which handler applies each event type."""

    name: str
    topics: Sequence[str]
    handlers: dict[str, Handler]


@dataclass
class ServiceSpec:
    name: str
    version: str
    migrations: str  # alembic script location, e.g. "labornet.jobs:migrations"
    routers: Sequence[APIRouter] = ()
    # wires the service's own objects into runtime.extras (called once the runtime exists, before consumers)
    setup: Callable[[Runtime], None] = lambda _runtime: None
    # async start-up work after setup and before consumers (seeding configuration rows…)
    startup: Callable[[Runtime], Awaitable[None]] | None = None
    consumers: Callable[[Runtime], Sequence[ConsumerSpec]] = lambda _runtime: ()
    # long-running tasks of the service (expiry sweeps, webhook delivery…), started after the consumers
    background: Callable[[Runtime], Sequence[Coroutine[Any, Any, None]]] = lambda _runtime: ()
    # the kinds this service replicates from every partner: anti-entropy rounds run over them (ADR 0008)
    replicas: Sequence[ReplicaSpec] = ()
    # a table of the service's own that /readyz reads besides the platform tables (e.g. "vacancy")
    readiness_table: str | None = None
    # bulk imports, whose bodies may reach LABORNET_REQUEST_MAX_IMPORT_BYTES (e.g. "/api/v1/insured-persons/import")
    import_paths: Sequence[str] = ()
    description: str = ""


@dataclass
class Runtime:
    """Everything a running service holds; built in the lifespan and reachable as ``app.state.runtime``."""

    settings: Settings
    registry: ProvinceRegistry
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    read_sessions: async_sessionmaker[AsyncSession]
    outbox: Outbox
    trust: TrustListFile
    relay: OutboxRelay
    broker: BrokerWatch
    consumers: list[EventConsumer] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    # work finished before anything stops: writes a group commit has taken (ADR 41)
    finishing: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    antientropy: AntiEntropy = field(init=False)  # set by start_runtime right after the runtime is built

    def consumer(self, name: str) -> EventConsumer:
        for consumer in self.consumers:
            if consumer.name == name:
                return consumer
        raise LookupError(f"no consumer named {name}")


async def start_runtime(spec: ServiceSpec, settings: Settings) -> Runtime:
    registry = load_registry(settings.provinces_path)
    registry.get(settings.province)  # refuses a province that is not a federation member
    engine = create_engine(settings.database_url)
    writers = SQLiteWriters.of(engine)
    if writers is not None:
        DB_WRITERS_WAITING.labels(spec.name).set_function(writers.waiting)
        writers.on_refused = DB_WRITERS_REFUSED.labels(spec.name).inc
    if settings.migrate_on_start:
        await migrations.upgrade(engine, spec.migrations)
    assert settings.signing_key_path is not None and settings.trust_list_path is not None
    signer = Signer.from_file(settings.signing_key_path, settings.province, settings.signing_key_id)
    trust = TrustListFile(
        settings.trust_list_path,
        check_interval_s=settings.trust_reload_interval_s,
        clock_skew=timedelta(seconds=settings.trust_clock_skew_s),
    )
    sessions = sessionmaker(engine)
    read_sessions = readonly_sessionmaker(engine)
    writer = Outbox(settings.province, spec.name, signer)
    relay = OutboxRelay(
        sessions,
        read_sessions,
        lambda: make_producer(settings),
        writer,
        service=spec.name,
        batch_size=settings.outbox_batch_size,
        poll_interval_s=settings.outbox_poll_interval_s,
        max_backoff_s=settings.outbox_max_backoff_s,
        retention=timedelta(hours=settings.outbox_retention_hours),
        create_topics=(lambda names: ensure_topics(settings, names)) if settings.kafka_create_topics else None,
        receipt_wait_s=settings.receipt_wait_s,
        receipt_wait_max_s=settings.receipt_wait_max_s,
        republish_window=timedelta(seconds=settings.outbox_republish_window_s),
    )
    broker = BrokerWatch(
        settings_client=client_config(settings),
        service=spec.name,
        topics=node_topics(settings.province, spec.name, registry.codes()),
        partitions=settings.kafka_topic_partitions,
        replication=settings.kafka_topic_replication,
        create=settings.kafka_create_topics,
        sessions=sessions,
        published=lambda: relay.published,
        on_log_lost=relay.republish,
        interval_s=settings.broker_check_interval_s,
        offsets_interval_s=settings.broker_offsets_check_interval_s,
    )
    runtime = Runtime(settings, registry, engine, sessions, read_sessions, writer, trust, relay, broker)
    runtime.antientropy = AntiEntropy(
        settings=settings,
        service=spec.name,
        partners=[code for code in registry.codes() if code != settings.province],
        specs=spec.replicas,
        sessions=sessions,
        read_sessions=read_sessions,
        signer=signer,
        trust=trust,
    )
    if settings.kafka_create_topics:
        try:
            await asyncio.wait_for(
                ensure_topics(settings, node_topics(settings.province, spec.name, registry.codes())), 15
            )
        except Exception as exc:  # the relay and consumers retry on their own; topics come with the broker
            log.warning("could not create topics now (%s); continuing", exc)
    spec.setup(runtime)
    if spec.startup is not None:
        await spec.startup(runtime)
    for consumer_spec in spec.consumers(runtime):
        runtime.consumers.append(
            EventConsumer(
                name=consumer_spec.name,
                province=settings.province,
                service=spec.name,
                topics=consumer_spec.topics,
                handlers=consumer_spec.handlers,
                sessions=sessions,
                outbox=writer,
                trust=trust,
                consumer_factory=functools.partial(make_consumer, settings),
                deadletter_topic=deadletter_topic(settings.province, spec.name),
                max_attempts=settings.inbox_max_attempts,
                retry_backoff_s=settings.inbox_retry_backoff_s,
                cluster=lambda: broker.cluster_id,
            )
        )
    inbox_consumers = [consumer for consumer in runtime.consumers if consumer.reads_inbox]

    def expect_answers() -> None:
        for consumer in inbox_consumers:
            consumer.expect_records()

    # a node that just asked listens closely for the answer: a consumer at rest would read it at the doorbell's
    # next ring, up to 400 ms later at each step of an exchange (ADR 40)
    relay.on_directed_sent = expect_answers
    for consumer in runtime.consumers:
        consumer.lag_interval_s = settings.consumer_lag_interval_s
        consumer.quarantine_max_record_bytes = settings.quarantine_max_record_bytes
        consumer.batch_size = settings.inbox_batch_size
        consumer.batched_run_size = settings.inbox_batched_run_size
        consumer.partition_concurrency = settings.inbox_partition_concurrency
    init_bus_metrics(spec.name, settings.province, registry.codes(), {c.group_id: c.topics for c in runtime.consumers})
    runtime.tasks.append(asyncio.create_task(broker.run(), name=f"{spec.name}-broker-watch"))
    runtime.tasks.append(asyncio.create_task(relay.run(), name=f"{spec.name}-outbox-relay"))
    for consumer in runtime.consumers:
        runtime.tasks.append(asyncio.create_task(consumer.run(), name=f"{spec.name}-consumer-{consumer.name}"))
    if spec.replicas:
        runtime.tasks.append(asyncio.create_task(runtime.antientropy.run(), name=f"{spec.name}-antientropy"))
    for index, job in enumerate(spec.background(runtime)):
        runtime.tasks.append(asyncio.create_task(job, name=f"{spec.name}-background-{index}"))
    return runtime


# how long a stopping service waits for the work in flight it was told of (a transaction: the database's timeouts end it
# sooner)
FINISH_TIMEOUT_S = 10.0


async def stop_runtime(runtime: Runtime) -> None:
    for finish in runtime.finishing:
        try:
            async with asyncio.timeout(FINISH_TIMEOUT_S):
                await finish()
        except Exception:
            log.exception("stopping: work in flight did not finish; what it did not commit is not written")
    for consumer in runtime.consumers:
        await consumer.stop()
    await runtime.relay.stop()
    await runtime.broker.stop()
    for task in runtime.tasks:
        task.cancel()
    for task in runtime.tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    await runtime.engine.dispose()


# Platform routes -----------------------------------------------------------------------------------------


async def get_runtime(request: Request) -> Runtime:  # async: a sync dependency would cost a thread hop per request
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
AdminDep = Annotated[Principal, Depends(require_province_role(Role.ADMIN))]


class Readiness(BaseModel):
    """Whether the service can do its work, and what each check found (200 when ready, 503 otherwise)."""

    ready: bool = Field(description="every check is ok (consumers: assigned)")
    checks: dict[str, str] = Field(
        description="`database`, `broker` and `consumer:<name>`: `ok` / `assigned`, or what is wrong",
        examples=[{"database": "ok", "broker": "ok", "consumer:vacancies": "assigned"}],
    )


class MetricsResponse(PlainTextResponse):
    """The Prometheus text exposition format, as ``prometheus_client`` writes it."""

    media_type = CONTENT_TYPE_LATEST


class Identity(BaseModel):
    """The caller as this node's token says."""

    sub: str = Field(description="the subject: an officer's account, or a worker's resident id", examples=["alice"])
    province: str = Field(description="the province whose issuer signed the token", examples=["510000"])
    roles: list[Role] = Field(description="sorted", examples=[["officer"]])


class QuarantinedRecord(BaseModel):
    """A record a consumer could not apply, kept with its headers for an operator to replay or discard."""

    id: int
    consumer: str = Field(examples=["vacancies"])
    topic: str = Field(examples=["labornet.330000.jobs.events"])
    partition: int
    offset: int
    event_id: str | None
    event_type: str | None = Field(examples=["org.labornet.jobs.vacancy.published.v1"])
    origin_province: str | None = Field(examples=["330000"])
    reason: str = Field(examples=["handler-failed"])
    error: str
    attempts: int
    status: str = Field(description="quarantined, replayed or discarded", examples=["quarantined"])
    quarantined_at: StoredTime
    resolved_at: StoredTime | None
    headers: dict[str, str]


class QuarantinePage(BaseModel):
    items: list[QuarantinedRecord]
    next_cursor: int | None = Field(description="pass as `after` for the next page; null on the last page")


class ReplayResult(BaseModel):
    id: int = Field(description="the quarantined record", examples=[7])
    outcome: str = Field(description="applied, or duplicate when it had already been applied", examples=["applied"])


class DiscardResult(BaseModel):
    id: int = Field(description="the quarantined record", examples=[7])
    status: str = Field(description="always discarded", examples=["discarded"])


class OutboxBacklog(BaseModel):
    pending: int = Field(description="events written but not yet published", examples=[0])
    oldest_pending: StoredTime | None = Field(description="when the oldest of them was written")


class ConsumerState(BaseModel):
    ready: bool = Field(description="the consumer holds its partitions")


class SyncStatus(BaseModel):
    """The outbox backlog, the consumers, and per partner origin and replicated kind what anti-entropy found."""

    outbox: OutboxBacklog
    consumers: dict[str, ConsumerState] = Field(description="by consumer name")
    replicas: list[ReplicaSyncState]


def _platform_router(spec: ServiceSpec) -> APIRouter:
    router = APIRouter()

    @router.get(
        "/livez", tags=["operations"], response_class=PlainTextResponse, response_description="`ok`: the process runs"
    )
    async def livez() -> str:
        return "ok"

    readiness_reads = [
        select(text("version_num")).select_from(table("alembic_version")).limit(1),
        select(outbox.c.id).order_by(outbox.c.id.desc()).limit(1),
        *([select(literal(1)).select_from(table(spec.readiness_table)).limit(1)] if spec.readiness_table else []),
    ]
    probes: dict[str, AsyncEngine] = {}  # SQLite: a connection of its own per check, see readyz

    async def read_tables(runtime: Runtime) -> None:
        if runtime.settings.is_sqlite:
            url = runtime.settings.database_url
            if url not in probes:  # read-only: a missing file is reported, never created
                path = quote(make_url(url).database or "")
                probes[url] = create_async_engine(
                    f"sqlite+aiosqlite:///file:{path}?mode=ro&uri=true", poolclass=NullPool
                )
            engine = probes[url]
        else:
            engine = runtime.engine
        async with engine.connect() as connection:
            for statement in readiness_reads:
                await connection.execute(statement)

    @router.get(
        "/readyz",
        tags=["operations"],
        responses={
            200: {"model": Readiness, "description": "ready"},
            503: {"model": Readiness, "description": "not ready: the checks say what is wrong"},
        },
    )
    async def readyz(runtime: RuntimeDep) -> JSONResponse:
        """Ready when the database reads the service's tables, the broker answers and every consumer holds
        partitions. On SQLite the tables are read on a new connection: one the pool opened earlier keeps reading a
        file that has since become unreadable (permissions, a deleted or replaced file) while new ones fail."""
        settings = runtime.settings
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(read_tables(runtime), settings.readyz_timeout_s)
            checks["database"] = "ok"
        except TimeoutError:
            checks["database"] = f"no answer within {settings.readyz_timeout_s:g} s"
        except Exception as exc:
            checks["database"] = f"unreadable: {type(exc).__name__}"
        silent = runtime.broker.silent_for()
        broker_answers = silent < settings.broker_unready_after_s
        if broker_answers:
            checks["broker"] = "ok"
        else:
            error = runtime.broker.last_error
            checks["broker"] = f"silent for {silent:.0f} s" + (f": {error}" if error else "")
        for consumer in runtime.consumers:
            state = "assigned" if consumer.ready else "not assigned"
            # an assignment is only known to hold while the broker answers
            checks[f"consumer:{consumer.name}"] = state if broker_answers else f"{state}, broker silent"
        ready = all(value in ("ok", "assigned") for value in checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @router.get(
        "/metrics",
        tags=["operations"],
        response_class=MetricsResponse,
        response_description="the Prometheus text exposition format",
    )
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @router.get("/api/v1/whoami", tags=["auth"], responses=problem_responses(401, 403))
    async def whoami(principal: Annotated[Principal, Depends(current_principal)]) -> Identity:
        return Identity(sub=principal.sub, province=principal.province, roles=sorted(principal.roles))

    @router.get(
        "/admin/v1/quarantine",
        tags=["operations"],
        response_model=QuarantinePage,
        responses=problem_responses(401, 403, 422),
    )
    async def list_quarantine(
        runtime: RuntimeDep,
        _admin: AdminDep,
        status: Annotated[str, Query(pattern="^(quarantined|replayed|discarded)$")] = "quarantined",
        after: Annotated[NonNegativeInt64 | None, Query(description="cursor: the last id of the previous page")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> QuarantinePage:
        query = select(quarantine).where(quarantine.c.status == status).order_by(quarantine.c.id).limit(limit + 1)
        if after is not None:
            query = query.where(quarantine.c.id > after)
        async with runtime.read_sessions() as session:
            rows = (await session.execute(query)).all()
        items = [
            QuarantinedRecord(
                **{
                    k: v
                    for k, v in row._mapping.items()
                    if k not in ("headers", "message_key", "payload", "fingerprint")
                },
                headers={name: value.decode("utf-8", "replace") for name, value in decode_headers(row.headers)},
            )
            for row in rows[:limit]
        ]
        return QuarantinePage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)

    @router.post(
        "/admin/v1/quarantine/{record_id}/replay",
        tags=["operations"],
        responses=problem_responses(401, 403, 404, 409, 422),
    )
    async def replay(record_id: Int64, runtime: RuntimeDep, _admin: AdminDep) -> ReplayResult:
        consumer = await _consumer_of(runtime, record_id)
        try:
            outcome = await consumer.replay(record_id)
        except EventRejected as exc:
            raise Conflict(f"record {record_id} was not applied: {exc}", slug="replay-failed") from exc
        return ReplayResult(id=record_id, outcome=outcome.status)

    @router.post(
        "/admin/v1/quarantine/{record_id}/discard",
        tags=["operations"],
        responses=problem_responses(401, 403, 404, 409, 422),
    )
    async def discard(record_id: Int64, runtime: RuntimeDep, _admin: AdminDep) -> DiscardResult:
        consumer = await _consumer_of(runtime, record_id)
        try:
            await consumer.discard(record_id)
        except EventRejected as exc:
            raise Conflict(str(exc), slug="not-quarantined") from exc
        return DiscardResult(id=record_id, status="discarded")

    @router.get("/admin/v1/sync", tags=["operations"], responses=problem_responses(401, 403))
    async def sync_status(runtime: RuntimeDep, _admin: AdminDep) -> SyncStatus:
        """The outbox backlog and, per partner origin and replicated kind, what anti-entropy last found."""
        async with runtime.read_sessions() as session:
            backlog, oldest = (
                await session.execute(
                    select(func.count(), func.min(outbox.c.created_at)).where(outbox.c.sent_at.is_(None))
                )
            ).one()
        return SyncStatus.model_validate(
            {
                "outbox": {"pending": backlog, "oldest_pending": oldest},
                "consumers": {c.name: {"ready": c.ready} for c in runtime.consumers},
                "replicas": runtime.antientropy.state(),
            }
        )

    @router.get("/admin/v1/sync/verify", tags=["operations"], responses=problem_responses(401, 403))
    async def sync_verify(runtime: RuntimeDep, _admin: AdminDep) -> VerifyReport:
        """Compare every replica with its origin now, without repairing anything."""
        report = await runtime.antientropy.verify()
        return VerifyReport.model_validate(
            {"province": runtime.settings.province, "in_sync": all(r["in_sync"] for r in report), "replicas": report}
        )

    return router


async def _consumer_of(runtime: Runtime, record_id: int) -> EventConsumer:
    async with runtime.read_sessions() as session:
        name = (await session.execute(select(quarantine.c.consumer).where(quarantine.c.id == record_id))).scalar()
    if name is None:
        raise NotFound(f"no quarantined record {record_id}")
    try:
        return runtime.consumer(name)
    except LookupError as exc:
        raise NotFound(f"record {record_id} belongs to consumer {name}, which this service no longer runs") from exc


def create_service_app(spec: ServiceSpec, settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings(service=spec.name)
    if settings.service != spec.name:
        settings = settings.model_copy(update={"service": spec.name})

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level, settings.log_json, spec.name, settings.province)
        assert settings.auth_issuer is not None
        app.state.token_verifier = TokenVerifier.from_settings(
            issuer=settings.auth_issuer,
            audience=settings.auth_audience,
            public_key_path=settings.auth_public_key_path,
            jwks_url=settings.auth_jwks_url,
            partner_issuers=frozenset(
                settings.auth_partner_issuers
                or [f"labornet:{code}" for code in load_registry(settings.provinces_path).codes()]
            ),
        )
        runtime = await start_runtime(spec, settings)
        app.state.runtime = runtime
        log.info("%s service of province %s started", spec.name, settings.province)
        try:
            yield
        finally:
            await stop_runtime(runtime)

    app = FastAPI(
        title=f"LaborNet {spec.name} ({settings.province})",
        version=spec.version,
        description=spec.description,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.rate_limits = RateLimits.from_settings(settings)
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.request_max_body_bytes,
        import_max_bytes=settings.request_max_import_bytes,
        import_paths=spec.import_paths,
    )
    if app.state.rate_limits is not None:
        app.add_middleware(AddressRateLimit, limits=app.state.rate_limits)
    app.add_middleware(HttpMetrics, service=spec.name)  # outermost: times and traces the refusals too
    install_problem_handlers(app)
    # a request is matched against the routes in the order they were included, each a regular expression tried
    # in Python: the service's own routes come first (its public reads first of all: a vacancy by id spent a fifth
    # of its CPU being matched behind the ten platform routes), the platform's after them. No service route may
    # shadow a platform one (test_every_route_is_reached_by_its_own_path)
    for router in spec.routers:
        app.include_router(router)
    app.include_router(_platform_router(spec))
    app.include_router(asyncapi_router(spec.name, spec.version))
    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:  # built once, then served from the cache
            app.openapi_schema = document_edge_problems(build_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app

"""Entry point: `uvicorn --factory labornet.jobs.app:create_app` (configuration from LABORNET_* variables).

This module is the bootstrap: it wires the vacancy use cases, the replica consumer of every partner's vacancy
stream, the subscription API and the background jobs (expiry, gauges, webhook delivery).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Sequence
from typing import Any

from fastapi import FastAPI

from labornet.jobs import __doc__ as description
from labornet.jobs import __version__
from labornet.jobs.adapters.brands import BRAND_CHECK_RESULTS, BRAND_CHECKS, HttpBrandRegister
from labornet.jobs.domain.vacancy import EVENT_TYPES
from labornet.jobs.entrypoints import (
    api,
    applications,
    dispatches,
    fairs,
    federation,
    imports,
    placements,
    subscriptions,
)
from labornet.jobs.metrics import MATCHES
from labornet.jobs.service_layer.vacancies import REPLICA_CHANGES, VacancyService, refresh_gauges
from labornet.shared.app import ConsumerSpec, Runtime, ServiceSpec, create_service_app
from labornet.shared.divisions import load_divisions
from labornet.shared.inbox import Handler
from labornet.shared.observability import REPLICA_RESULTS
from labornet.shared.settings import Settings
from labornet.shared.topics import events_topic, inbox_topic

log = logging.getLogger(__name__)

# Matchmaking beyond postings (ADR 0018): each part brings its routes, handlers and background tasks
MATCHMAKING = (applications, placements, fairs, dispatches)


def brand_register(settings: Settings) -> HttpBrandRegister:
    """The node's brands service: ``LABORNET_JOBS_BRANDS_URL``, else the province's entry in the federation file."""

    def base_url() -> str | None:
        return settings.jobs_brands_url or settings.peer_url(settings.province, "brands")

    return HttpBrandRegister(base_url, timeout_s=settings.jobs_brands_timeout_s)


def setup(runtime: Runtime) -> None:
    init_metrics(runtime.registry.codes())
    vacancies = runtime.extras["vacancies"] = VacancyService(
        province=runtime.settings.province,
        sessions=runtime.sessions,
        outbox=runtime.outbox,
        divisions=load_divisions(runtime.settings.divisions_path),
        brands=brand_register(runtime.settings),
        max_version_jump=runtime.settings.replica_max_version_jump,
    )
    runtime.finishing.append(vacancies.finish_publishing)
    imports.setup(runtime)
    for part in MATCHMAKING:
        part.setup(runtime)


def init_metrics(members: Sequence[str]) -> None:
    """The service's labelled series whose labels are known at start-up exist at 0 from then on."""
    for code in members:
        MATCHES.labels(code)
    for result in REPLICA_RESULTS:
        REPLICA_CHANGES.labels(result)
    for result in BRAND_CHECK_RESULTS:
        BRAND_CHECKS.labels(result)


def consumers(runtime: Runtime) -> Sequence[ConsumerSpec]:
    """Partners' broadcast jobs streams (vacancies, recruitment events, placement statistics) in one group, and the
    directed messages to this province's jobs inbox (applications, registrations, dispatches) in another."""
    province = runtime.settings.province
    partners = [code for code in runtime.registry.codes() if code != province]
    vacancies: VacancyService = runtime.extras["vacancies"]
    broadcast: dict[str, Handler] = dict.fromkeys(EVENT_TYPES, vacancies.apply_event)
    directed: dict[str, Handler] = {}
    for part in MATCHMAKING:
        broadcast.update(part.broadcast_handlers(runtime))
        directed.update(part.inbox_handlers(runtime))
    specs = [
        ConsumerSpec(
            name="vacancy-replica", topics=[events_topic(code, "jobs") for code in partners], handlers=broadcast
        )
    ]
    if directed:
        specs.append(ConsumerSpec(name="matchmaking", topics=[inbox_topic(province, "jobs")], handlers=directed))
    return specs


async def sweep(runtime: Runtime) -> None:
    """Expire this province's vacancies past their closing date and refresh the vacancy gauges."""
    service: VacancyService = runtime.extras["vacancies"]
    while True:
        try:
            await service.expire_due()
            async with runtime.read_sessions() as session:
                await refresh_gauges(session)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("vacancy sweep failed; retrying at the next interval")
        with contextlib.suppress(TimeoutError):
            await asyncio.sleep(runtime.settings.jobs_sweep_interval_s)


def background(runtime: Runtime) -> list[Coroutine[Any, Any, None]]:
    return [
        sweep(runtime),
        *subscriptions.webhook_background(runtime),
        *imports.background(runtime),
        *(task for part in MATCHMAKING for task in part.background(runtime)),
    ]


SPEC = ServiceSpec(
    name="jobs",
    version=__version__,
    migrations="labornet.jobs:migrations",
    readiness_table="vacancy",
    routers=[
        api.router,
        subscriptions.router,
        federation.router,
        imports.router,
        *(part.router for part in MATCHMAKING),
    ],
    import_paths=[imports.IMPORTS_PATH],
    replicas=[federation.SPEC],
    setup=setup,
    consumers=consumers,
    background=background,
    description=description or "",
)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(SPEC, settings)

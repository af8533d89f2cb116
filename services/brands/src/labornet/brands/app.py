"""Entry point: `uvicorn --factory labornet.brands.app:create_app` (configuration from LABORNET_* variables).

This module is the bootstrap: it wires the brand and demand use cases, the replica consumer of every partner's
brand stream, the consumer of this province's brands inbox (demands and their answers) and the gauge refresh.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Coroutine, Sequence
from typing import Any

from fastapi import FastAPI
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from labornet.brands import __doc__ as description
from labornet.brands import __version__
from labornet.brands.domain.brand import EVENT_TYPES
from labornet.brands.domain.demand import Decision
from labornet.brands.entrypoints import api, demands, federation
from labornet.brands.service_layer.brands import REPLICA_CHANGES, BrandService, refresh_gauges
from labornet.brands.service_layer.demands import DEMANDS_ANSWERED, DEMANDS_POSTED, DEMANDS_RECEIVED, DemandService
from labornet.shared.app import ConsumerSpec, Runtime, ServiceSpec, create_service_app
from labornet.shared.divisions import load_divisions
from labornet.shared.observability import REPLICA_RESULTS
from labornet.shared.settings import Settings
from labornet.shared.topics import events_topic, inbox_topic

log = logging.getLogger(__name__)


class BrandsSettings(BaseSettings):
    """Settings of the brands service alone, from ``LABORNET_BRANDS_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="LABORNET_BRANDS_", env_file=".env", extra="ignore")

    gauge_interval_s: float = Field(15.0, gt=0, description="how often the brands-by-status gauge is recounted")


@functools.cache
def brands_settings() -> BrandsSettings:
    return BrandsSettings()


def init_metrics(province: str, members: Sequence[str]) -> None:
    """The service's labelled series whose labels are known at start-up exist at 0 from then on."""
    for code in members:
        if code != province:
            DEMANDS_POSTED.labels(code)
            DEMANDS_RECEIVED.labels(code)
    for decision in Decision:
        for by in ("officer", "automatic"):
            DEMANDS_ANSWERED.labels(decision.value, by)
    for result in REPLICA_RESULTS:
        REPLICA_CHANGES.labels(result)


def setup(runtime: Runtime) -> None:
    init_metrics(runtime.settings.province, runtime.registry.codes())
    province, divisions = runtime.settings.province, load_divisions(runtime.settings.divisions_path)
    runtime.extras["brands"] = BrandService(
        province=province,
        sessions=runtime.sessions,
        outbox=runtime.outbox,
        divisions=divisions,
        registry=runtime.registry,
        max_version_jump=runtime.settings.replica_max_version_jump,
    )
    runtime.extras["demands"] = DemandService(
        province=province, sessions=runtime.sessions, outbox=runtime.outbox, divisions=divisions
    )


def consumers(runtime: Runtime) -> Sequence[ConsumerSpec]:
    province = runtime.settings.province
    partners = [code for code in runtime.registry.codes() if code != province]
    brand_service: BrandService = runtime.extras["brands"]
    demand_service: DemandService = runtime.extras["demands"]
    return [
        ConsumerSpec(
            name="brand-replica",
            topics=[events_topic(code, "brands") for code in partners],
            handlers=dict.fromkeys(EVENT_TYPES, brand_service.apply_event),
        ),
        ConsumerSpec(name="demands", topics=[inbox_topic(province, "brands")], handlers=demand_service.handlers()),
    ]


async def gauges(runtime: Runtime) -> None:
    """Recount the brands held by this node, by origin province and status, for the gauge."""
    while True:
        try:
            async with runtime.read_sessions() as session:
                await refresh_gauges(session)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("brand gauges could not be refreshed; retrying at the next interval")
        await asyncio.sleep(brands_settings().gauge_interval_s)


def background(runtime: Runtime) -> list[Coroutine[Any, Any, None]]:
    return [gauges(runtime)]


SPEC = ServiceSpec(
    name="brands",
    version=__version__,
    migrations="labornet.brands:migrations",
    readiness_table="brand",
    routers=[api.router, demands.router, federation.router],
    replicas=[federation.SPEC],
    setup=setup,
    consumers=consumers,
    background=background,
    description=description or "",
)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(SPEC, settings)

"""Entry point: `uvicorn --factory labornet.rights.app:create_app` (configuration from LABORNET_* variables).

The bootstrap of the rights service: the case use cases and the handlers of the directed messages arriving on
this province's rights inbox, the consumer of every partner's anonymous statistics, the HTTP API, and the sweep
that refreshes the case gauges (overdue cases…).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from typing import Any

from fastapi import FastAPI

from labornet.rights import __doc__ as description
from labornet.rights import __version__
from labornet.rights.config import RightsSettings
from labornet.rights.domain.case import CASE_MESSAGE_TYPES, WITHDRAWAL_REQUESTED, EntryKind
from labornet.rights.domain.statistics import STATISTICS_PUBLISHED
from labornet.rights.entrypoints import api
from labornet.rights.service_layer.cases import CHANGES, MESSAGES, CaseService
from labornet.rights.service_layer.gauges import refresh_gauges
from labornet.rights.service_layer.statistics import SNAPSHOTS, publish_statistics, statistics_handler
from labornet.shared.app import ConsumerSpec, Runtime, ServiceSpec, create_service_app
from labornet.shared.clock import Clock, today_in_china, utcnow
from labornet.shared.divisions import load_divisions
from labornet.shared.settings import Settings
from labornet.shared.topics import events_topic, inbox_topic

log = logging.getLogger(__name__)


def init_metrics(province: str, members: Sequence[str]) -> None:
    """The service's labelled series whose labels are known at start-up exist at 0 from then on."""
    for kind in EntryKind:
        CHANGES.labels(province, kind.value)
    for message_type in (*CASE_MESSAGE_TYPES, WITHDRAWAL_REQUESTED):
        for result in ("applied", "stale", "ignored"):
            MESSAGES.labels(province, message_type, result)
    for code in members:
        if code != province:
            for result in ("applied", "stale"):
                SNAPSHOTS.labels(province, code, result)


def build_spec(rights: RightsSettings | None = None, clock: Clock = utcnow) -> ServiceSpec:
    """The service's wiring; tests pass their own settings (and clock) here instead of patching."""

    def setup(runtime: Runtime) -> None:
        init_metrics(runtime.settings.province, runtime.registry.codes())
        config = rights or RightsSettings()
        runtime.extras["rights_settings"] = config
        runtime.extras["divisions"] = load_divisions(runtime.settings.divisions_path)
        runtime.extras["cases"] = CaseService(
            province=runtime.settings.province,
            sessions=runtime.sessions,
            outbox=runtime.outbox,
            deadlines=config.deadlines(runtime.settings.calendars()),
            clock=clock,
        )

    async def startup(runtime: Runtime) -> None:
        # partners that missed earlier snapshots (a broker that lost its log, a node that joined late) catch up
        async with runtime.sessions() as session, session.begin():
            await publish_statistics(session, runtime.outbox, runtime.settings.province, clock())

    def consumers(runtime: Runtime) -> Sequence[ConsumerSpec]:
        province = runtime.settings.province
        cases: CaseService = runtime.extras["cases"]
        partners = [code for code in runtime.registry.codes() if code != province]
        return [
            ConsumerSpec(name="cases", topics=[inbox_topic(province, "rights")], handlers=cases.handlers()),
            ConsumerSpec(
                name="statistics",
                topics=[events_topic(code, "rights") for code in partners],
                handlers={STATISTICS_PUBLISHED: statistics_handler(province)},
            ),
        ]

    async def sweep(runtime: Runtime) -> None:
        config: RightsSettings = runtime.extras["rights_settings"]
        while True:
            try:
                async with runtime.read_sessions() as session:
                    await refresh_gauges(session, runtime.settings.province, today_in_china(clock()))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("rights gauges could not be refreshed; retrying at the next interval")
            await asyncio.sleep(config.sweep_interval_s)

    async def rebroadcast(runtime: Runtime) -> None:
        """The statistics are one latest-snapshot document per origin, which anti-entropy does not compare: sending
        it again now and then is its repair (ADR 0008)."""
        config: RightsSettings = runtime.extras["rights_settings"]
        while True:
            await asyncio.sleep(config.statistics_interval_s)
            try:
                async with runtime.sessions() as session, session.begin():
                    await publish_statistics(session, runtime.outbox, runtime.settings.province, clock())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("rights statistics could not be broadcast again; retrying at the next interval")

    def background(runtime: Runtime) -> list[Coroutine[Any, Any, None]]:
        return [sweep(runtime), rebroadcast(runtime)]

    return ServiceSpec(
        name="rights",
        version=__version__,
        migrations="labornet.rights:migrations",
        readiness_table="rights_case",
        routers=[api.router],
        setup=setup,
        startup=startup,
        consumers=consumers,
        background=background,
        description=description or "",
    )


SPEC = build_spec()


def create_app(settings: Settings | None = None, rights: RightsSettings | None = None) -> FastAPI:
    return create_service_app(build_spec(rights) if rights is not None else SPEC, settings)

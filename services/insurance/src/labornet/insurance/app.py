"""Entry point: `uvicorn --factory labornet.insurance.app:create_app` (configuration from LABORNET_* variables).

The bootstrap of the insurance service: the transfer saga (use cases and the handlers of the directed messages
arriving on this province's insurance inbox), records and settlements API, and the deadline sweep.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from typing import Any

from fastapi import FastAPI
from prometheus_client import Gauge

from labornet.insurance import __doc__ as description
from labornet.insurance import __version__
from labornet.insurance.adapters import settlements, transfers
from labornet.insurance.adapters.config import ConfigCopy
from labornet.insurance.domain.settlement import Direction
from labornet.insurance.domain.transfer import Side
from labornet.insurance.entrypoints import api
from labornet.insurance.service_layer.records import RecordService, ensure_config
from labornet.insurance.service_layer.transfers import TransferService
from labornet.shared.app import ConsumerSpec, Runtime, ServiceSpec, create_service_app
from labornet.shared.clock import today_in_china
from labornet.shared.observability import set_counts
from labornet.shared.settings import Settings
from labornet.shared.topics import inbox_topic

log = logging.getLogger(__name__)

TRANSFERS = Gauge(
    "labornet_insurance_transfers", "Transfer cases on this node", ["side", "state", "from_province", "to_province"]
)
OVERDUE = Gauge("labornet_insurance_transfers_overdue", "Open transfer cases past a time limit", ["side"])
SETTLEMENTS_PENDING = Gauge(
    "labornet_insurance_settlements_pending_yuan", "CNY due to receiving provinces, not yet paid"
)
SETTLEMENTS_RECEIVABLE = Gauge(
    "labornet_insurance_settlements_receivable_yuan", "CNY sending provinces owe this province, not yet paid"
)


def setup(runtime: Runtime) -> None:
    province = runtime.settings.province
    benefit_config = ConfigCopy(province, max_age_s=runtime.settings.insurance_config_max_age_s)
    runtime.extras["transfers"] = TransferService(
        province=province,
        sessions=runtime.sessions,
        outbox=runtime.outbox,
        calendar=runtime.settings.calendar(),
        members=runtime.registry.codes(),
        auto_answer=runtime.settings.insurance_auto_answer,
        benefit_config=benefit_config,
    )
    runtime.extras["records"] = RecordService(
        province=province, sessions=runtime.sessions, benefit_config=benefit_config
    )


async def startup(runtime: Runtime) -> None:
    async with runtime.sessions() as session, session.begin():
        await ensure_config(session, runtime.settings.province)


def consumers(runtime: Runtime) -> Sequence[ConsumerSpec]:
    service: TransferService = runtime.extras["transfers"]
    return [
        ConsumerSpec(
            name="transfers", topics=[inbox_topic(runtime.settings.province, "insurance")], handlers=service.handlers()
        )
    ]


async def refresh_gauges(runtime: Runtime) -> None:
    today = today_in_china()
    async with runtime.read_sessions() as session:
        set_counts(TRANSFERS, await transfers.counts(session))
        for side in Side:
            OVERDUE.labels(side.value).set(await transfers.overdue_count(session, side, today))
        pending = await settlements.pending_amounts(session)
    SETTLEMENTS_PENDING.set(float(pending[Direction.OUTGOING]))
    SETTLEMENTS_RECEIVABLE.set(float(pending[Direction.INCOMING]))


async def sweep(runtime: Runtime) -> None:
    while True:
        try:
            await refresh_gauges(runtime)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("insurance gauges could not be refreshed; retrying")
        await asyncio.sleep(runtime.settings.insurance_sweep_interval_s)


def background(runtime: Runtime) -> list[Coroutine[Any, Any, None]]:
    return [sweep(runtime)]


SPEC = ServiceSpec(
    name="insurance",
    version=__version__,
    migrations="labornet.insurance:migrations",
    readiness_table="transfer",
    routers=[api.router],
    import_paths=["/api/v1/insured-persons/import"],
    setup=setup,
    startup=startup,
    consumers=consumers,
    background=background,
    description=description or "",
)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(SPEC, settings)

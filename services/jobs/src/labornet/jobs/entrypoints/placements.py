"""Placement statistics: workers of this province hired elsewhere and workers of elsewhere hired here, counts only,
replicated as anonymous statistics.

* ``GET /api/v1/placements/statistics`` (any authenticated caller): one province's outbound and inbound figures,
  filtered by counterpart province, month range, occupation and target group, with totals and breakdowns. This
  node's figures are counted from its own placements; a partner's come from its latest snapshot (``generation``,
  ``as_of``).
* ``GET /api/v1/placements/statistics/federation``: every member's totals out and in, with the same filters.

Each node broadcasts ``org.labornet.jobs.placements.published.v1`` on its jobs events stream: when a hire it
records is not in its statistics yet (checked every ``LABORNET_JOBS_PLACEMENTS_PUBLISH_CHECK_INTERVAL_S``), and, once
it has placements between provinces, at start-up and every ``LABORNET_JOBS_PLACEMENTS_REBROADCAST_INTERVAL_S`` as
repair (ADR 0008).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from labornet.jobs.domain.placements import (
    MONTH_PATTERN,
    PLACEMENTS_PUBLISHED,
    PROVINCE_PATTERN,
    Cell,
    CellFilter,
    Direction,
    PlacementSnapshot,
    Tally,
)
from labornet.jobs.domain.vacancy import TargetGroup, occupations
from labornet.jobs.service_layer.placements import (
    PLACEMENTS,
    SNAPSHOT_RESULTS,
    SNAPSHOTS,
    PlacementService,
    ProvinceFigures,
    snapshot_handler,
)
from labornet.shared.app import Runtime, RuntimeDep
from labornet.shared.auth import Principal, current_principal
from labornet.shared.contracts import EventContract
from labornet.shared.inbox import Handler
from labornet.shared.problems import Unprocessable, problem_responses

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["placements"])
CallerDep = Annotated[Principal, Depends(current_principal)]

# the events of this part of the jobs service, listed in labornet.jobs.contracts.EVENTS
EVENTS: list[EventContract] = [
    EventContract(
        type=PLACEMENTS_PUBLISHED,
        model=PlacementSnapshot,
        channel="events",
        summary="A province published its placement statistics of one month.",
        description="Counts only: the province's workers hired in other provinces (outbound) and the workers of "
        "other provinces it hired (inbound) in one month (China time), by counterpart province, occupation and "
        "target group. Published for the month of each hire between provinces when it is recorded, and for every "
        "month at start-up and periodically as repair; the key is the province, the subject '<province>/<month>'. "
        "A snapshot replaces the one held of the same origin and month if its generation is higher; a receiver "
        "refuses one whose origin is not its sender.",
    )
]


class PlacementSettings(BaseSettings):
    """How often placement statistics are published, from ``LABORNET_JOBS_PLACEMENTS_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="LABORNET_JOBS_PLACEMENTS_", env_file=".env", extra="ignore")

    publish_check_interval_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="how often the node checks for recorded hires its published statistics do not count yet",
    )
    rebroadcast_interval_s: float = Field(
        3600.0,
        gt=0,
        description="how often this province's placement statistics are broadcast again without a change, so that "
        "a partner that lost a snapshot catches up",
    )


def setup(runtime: Runtime) -> None:
    """Wire this part's services into the runtime (called once, before the consumers start)."""
    for direction in Direction:
        PLACEMENTS.labels(direction.value)
    for code in runtime.registry.codes():
        if code != runtime.settings.province:
            for result in SNAPSHOT_RESULTS:
                SNAPSHOTS.labels(code, result)
    runtime.extras["placement_settings"] = PlacementSettings()
    runtime.extras["placements"] = PlacementService(
        province=runtime.settings.province,
        sessions=runtime.sessions,
        read_sessions=runtime.read_sessions,
        outbox=runtime.outbox,
    )


def service(runtime: Runtime) -> PlacementService:
    found: PlacementService = runtime.extras["placements"]
    return found


def inbox_handlers(runtime: Runtime) -> dict[str, Handler]:
    """Handlers of the directed messages of this part arriving on the province's jobs inbox (none: placements
    travel inside the applications' messages)."""
    return {}


def broadcast_handlers(runtime: Runtime) -> dict[str, Handler]:
    """Handlers of this part's events broadcast by partners on their jobs events topics."""
    return {PLACEMENTS_PUBLISHED: snapshot_handler(runtime.settings.province)}


async def publisher(runtime: Runtime) -> None:
    """Publish whenever a recorded hire is not counted yet, and again at start-up and every rebroadcast interval (the
    statistics are latest-snapshot documents per origin and month, which anti-entropy does not compare)."""
    config: PlacementSettings = runtime.extras["placement_settings"]
    placements = service(runtime)
    last_broadcast: float | None = None
    while True:
        try:
            if last_broadcast is None or time.monotonic() - last_broadcast >= config.rebroadcast_interval_s:
                await placements.rebroadcast()
                last_broadcast = time.monotonic()
            else:  # the months of new hires only: the full broadcast keeps its own interval
                await placements.publish_due()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("placement statistics could not be published; retrying at the next check")
        await asyncio.sleep(config.publish_check_interval_s)


def background(runtime: Runtime) -> list[Coroutine[Any, Any, None]]:
    """This part's long-running tasks: the publisher of this province's placement statistics."""
    return [publisher(runtime)]


# Responses ----------------------------------------------------------------------------------------------------


class ProvinceHires(BaseModel):
    model_config = ConfigDict(frozen=True)
    province: str = Field(pattern=PROVINCE_PATTERN, description="the counterpart province")
    hires: int = Field(ge=0)


class MonthHires(BaseModel):
    model_config = ConfigDict(frozen=True)
    month: str = Field(pattern=MONTH_PATTERN, description="YYYY-MM in China's time zone")
    hires: int = Field(ge=0)


class OccupationHires(BaseModel):
    model_config = ConfigDict(frozen=True)
    occupation_code: str = Field(pattern=r"^\d{1,4}$", description="ISCO-08")
    hires: int = Field(ge=0)


class TargetGroupHires(BaseModel):
    model_config = ConfigDict(frozen=True)
    target_group: TargetGroup
    hires: int = Field(ge=0, description="hires of this group (a hire of several groups counts in each)")


_OUTBOUND_EXAMPLE: dict[str, Any] = {
    "total": 1,
    "by_province": [{"province": "330000", "hires": 1}],
    "by_month": [{"month": "2026-03", "hires": 1}],
    "by_occupation": [{"occupation_code": "7112", "hires": 1}],
    "by_target_group": [{"target_group": "migrant-workers", "hires": 1}],
    "cells": [
        {
            "direction": "outbound",
            "counterpart_province": "330000",
            "month": "2026-03",
            "occupation_code": "7112",
            "hires": 1,
            "target_groups": {"migrant-workers": 1},
        }
    ],
}


class DirectionFigures(BaseModel):
    """One direction's figures after the filters. ``total`` counts each hire once; the breakdowns by province,
    month and occupation add up to it, the one by target group need not (a hire counts in each of its groups)."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={"examples": [_OUTBOUND_EXAMPLE]},
    )
    total: int = Field(ge=0, description="hires that pass the filters, each counted once")
    by_province: list[ProvinceHires] = Field(description="by counterpart province")
    by_month: list[MonthHires]
    by_occupation: list[OccupationHires]
    by_target_group: list[TargetGroupHires]
    cells: list[Cell] = Field(description="the cells counted (hires in full; the filters decide which count)")

    @classmethod
    def of(cls, figures: Tally) -> DirectionFigures:
        return cls(
            total=figures.total,
            by_province=[ProvinceHires(province=k, hires=v) for k, v in figures.by_counterpart.items()],
            by_month=[MonthHires(month=k, hires=v) for k, v in figures.by_month.items()],
            by_occupation=[OccupationHires(occupation_code=k, hires=v) for k, v in figures.by_occupation.items()],
            by_target_group=[TargetGroupHires(target_group=k, hires=v) for k, v in figures.by_target_group.items()],
            cells=figures.cells,
        )


Source = Literal["own", "snapshot", "none"]
_SOURCE = (
    "own: counted from this node's placements; snapshot: the province's latest snapshot received; none: no "
    "snapshot of the province has reached this node yet (every figure is 0)"
)


class PlacementStatistics(BaseModel):
    """One province's placement statistics as this node holds them: its workers hired in other provinces
    (outbound, by destination) and the workers of other provinces it hired (inbound, by origin)."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "province": "510000",
                    "source": "snapshot",
                    "generation": 12,
                    "as_of": "2026-03-02T01:00:00Z",
                    "outbound": _OUTBOUND_EXAMPLE,
                    "inbound": {
                        "total": 0,
                        "by_province": [],
                        "by_month": [],
                        "by_occupation": [],
                        "by_target_group": [],
                        "cells": [],
                    },
                }
            ]
        },
    )
    province: str = Field(pattern=PROVINCE_PATTERN)
    source: Source = Field(description=_SOURCE)
    generation: int | None = Field(
        ge=1,
        description="the province's latest snapshot of any month (published by this node for its own; null before any)",
    )
    as_of: datetime | None = Field(description="when that snapshot was counted")
    outbound: DirectionFigures = Field(description="the province's workers hired in other provinces")
    inbound: DirectionFigures = Field(description="workers of other provinces hired in the province")


class ProvinceTotals(BaseModel):
    model_config = ConfigDict(frozen=True)
    province: str = Field(pattern=PROVINCE_PATTERN)
    source: Source = Field(description=_SOURCE)
    generation: int | None = Field(ge=1)
    as_of: datetime | None
    outbound: int = Field(ge=0, description="its workers hired in other provinces")
    inbound: int = Field(ge=0, description="workers of other provinces it hired")


class FederationPlacements(BaseModel):
    """Every member's placement totals as this node holds them, with the filters applied."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "provinces": [
                        {
                            "province": "330000",
                            "source": "snapshot",
                            "generation": 4,
                            "as_of": "2026-03-02T01:00:00Z",
                            "outbound": 0,
                            "inbound": 1,
                        },
                        {
                            "province": "510000",
                            "source": "own",
                            "generation": 12,
                            "as_of": "2026-03-02T01:00:00Z",
                            "outbound": 1,
                            "inbound": 0,
                        },
                    ],
                    "placements": 1,
                }
            ]
        },
    )
    provinces: list[ProvinceTotals]
    placements: int = Field(
        ge=0, description="hires between provinces: the sum of the members' outbound totals (each hire once)"
    )


def _figures(found: ProvinceFigures) -> PlacementStatistics:
    return PlacementStatistics(
        province=found.province,
        source=found.source,
        generation=found.generation,
        as_of=found.as_of,
        outbound=DirectionFigures.of(found.outbound),
        inbound=DirectionFigures.of(found.inbound),
    )


# Filters ------------------------------------------------------------------------------------------------------

Month = Annotated[str | None, Query(pattern=MONTH_PATTERN, description="YYYY-MM, inclusive, China's time zone")]
Occupation = Annotated[str | None, Query(pattern=r"^\d{1,4}$", description="ISCO-08 occupation code")]


def _member(runtime: Runtime, code: str, field: str) -> None:
    if code not in runtime.registry:
        members = ", ".join(runtime.registry.codes())
        message = f"province {code} is not a member of the federation (members: {members})"
        raise Unprocessable(message, errors=[{"field": field, "message": message}])


def _filter(
    runtime: Runtime,
    counterpart_province: str | None,
    month_from: str | None,
    month_to: str | None,
    occupation_code: str | None,
    target_group: TargetGroup | None,
) -> CellFilter:
    if counterpart_province is not None:
        _member(runtime, counterpart_province, "query.counterpart_province")
    if month_from is not None and month_to is not None and month_from > month_to:
        message = f"month_from {month_from} is after month_to {month_to}"
        raise Unprocessable(message, errors=[{"field": "query.month_from", "message": message}])
    if occupation_code is not None and occupation_code not in occupations():
        message = f"occupation code {occupation_code} is not in the federation's ISCO-08 list"
        raise Unprocessable(message, errors=[{"field": "query.occupation_code", "message": message}])
    return CellFilter(
        counterpart_province=counterpart_province,
        month_from=month_from,
        month_to=month_to,
        occupation_code=occupation_code,
        target_group=target_group,
    )


# Routes -------------------------------------------------------------------------------------------------------


@router.get("/placements/statistics", response_model=PlacementStatistics, responses=problem_responses(401, 403, 422))
async def placement_statistics(
    runtime: RuntimeDep,
    _caller: CallerDep,
    province: Annotated[
        str | None, Query(pattern=PROVINCE_PATTERN, description="whose statistics (default: this node's province)")
    ] = None,
    counterpart_province: Annotated[
        str | None,
        Query(pattern=PROVINCE_PATTERN, description="only hires with this destination (outbound) or origin (inbound)"),
    ] = None,
    month_from: Month = None,
    month_to: Month = None,
    occupation_code: Occupation = None,
    target_group: TargetGroup | None = None,
) -> PlacementStatistics:
    """One province's placement statistics: its workers hired in other provinces and the workers of other provinces
    it hired, by counterpart province, month, occupation and target group (counts only; any authenticated role)."""
    code = province or runtime.settings.province
    _member(runtime, code, "query.province")
    which = _filter(runtime, counterpart_province, month_from, month_to, occupation_code, target_group)
    return _figures(await service(runtime).figures(code, which))


@router.get(
    "/placements/statistics/federation",
    response_model=FederationPlacements,
    responses=problem_responses(401, 403, 422),
)
async def federation_placements(
    runtime: RuntimeDep,
    _caller: CallerDep,
    month_from: Month = None,
    month_to: Month = None,
    occupation_code: Occupation = None,
    target_group: TargetGroup | None = None,
) -> FederationPlacements:
    """Every member's placement totals, out and in, as this node holds them (counts only; any authenticated
    role)."""
    which = _filter(runtime, None, month_from, month_to, occupation_code, target_group)
    found = await service(runtime).federation(runtime.registry.codes(), which)
    totals = [
        ProvinceTotals(
            province=item.province,
            source=item.source,
            generation=item.generation,
            as_of=item.as_of,
            outbound=item.outbound.total,
            inbound=item.inbound.total,
        )
        for item in found
    ]
    return FederationPlacements(provinces=totals, placements=sum(item.outbound for item in totals))

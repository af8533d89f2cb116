"""HTTP API of demands for a brand's workers, for the officers of this province on either side.

An officer posts a demand for a partner's recognised brand; the brand's province sees it arrive and answers it;
both see the demand and its answer (``side``: ``posted`` by this province, or ``received`` for its brands).
"""

from __future__ import annotations

from collections.abc import Coroutine
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response, status
from sqlalchemy import String, literal, select, tuple_

from labornet.brands.adapters.tables import demand
from labornet.brands.domain.demand import (
    DemandAnswer,
    DemandRequest,
    DemandRuleError,
    DemandStatus,
    OfferTooLarge,
)
from labornet.brands.entrypoints.schemas import Demand, DemandPage
from labornet.brands.service_layer.demands import DemandService, plain, to_record
from labornet.shared.app import Runtime, RuntimeDep
from labornet.shared.auth import Principal, Role, require_province_role
from labornet.shared.db import as_utc
from labornet.shared.paging import decode_cursor, encode_cursor
from labornet.shared.problems import Conflict, NotFound, Unprocessable, problem_responses

router = APIRouter(prefix="/api/v1/demands", tags=["demands"])
OfficerDep = Annotated[Principal, Depends(require_province_role(Role.OFFICER))]


def service(runtime: Runtime) -> DemandService:
    found: DemandService = runtime.extras["demands"]
    return found


def view(row: dict[str, Any], province: str) -> dict[str, Any]:
    return {**to_record(row), "side": "posted" if row["demanding_province"] == province else "received"}


async def _run(coroutine: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    try:
        return await coroutine
    except OfferTooLarge as exc:
        raise Unprocessable(str(exc), errors=[{"field": "workers_offered", "message": str(exc)}]) from exc
    except DemandRuleError as exc:
        raise Conflict(str(exc), slug="demand-state") from exc


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=Demand,
    responses={
        201: {
            "description": "the demand, open, on its way to the brand's province",
            "headers": {"Location": {"description": "/api/v1/demands/{id}", "schema": {"type": "string"}}},
        },
        **problem_responses(401, 403, 409, 422),
    },
)
async def post(request: DemandRequest, runtime: RuntimeDep, officer: OfficerDep, response: Response) -> dict[str, Any]:
    """Ask a partner province for workers of one of its recognised brands (officers of this province)."""
    row = await _run(service(runtime).post(request, officer.sub))
    response.headers["Location"] = f"/api/v1/demands/{row['id']}"
    return view(row, runtime.settings.province)


@router.post(
    "/{demand_id}/answer",
    response_model=Demand,
    responses={200: {"description": "the demand as answered"}, **problem_responses(401, 403, 404, 409, 422)},
)
async def answer(demand_id: str, request: DemandAnswer, runtime: RuntimeDep, officer: OfficerDep) -> dict[str, Any]:
    """Answer a partner's demand for this province's brand, once: accepted with workers_offered, or declined."""
    row = await _run(service(runtime).answer(demand_id, request, officer.sub))
    return view(row, runtime.settings.province)


@router.get("/{demand_id}", response_model=Demand, responses=problem_responses(401, 403, 404))
async def get_one(demand_id: str, runtime: RuntimeDep, _officer: OfficerDep) -> dict[str, Any]:
    """One demand this province posted or received."""
    async with runtime.read_sessions() as session:
        found = (await session.execute(select(demand).where(demand.c.id == demand_id))).mappings().one_or_none()
    if found is None:
        raise NotFound(f"no demand {demand_id} on this node")
    return view(plain(found), runtime.settings.province)


@router.get("", response_model=DemandPage, responses=problem_responses(401, 403, 422))
async def list_demands(
    runtime: RuntimeDep,
    _officer: OfficerDep,
    side: Literal["posted", "received"] | None = None,
    status_: Annotated[DemandStatus | None, Query(alias="status")] = None,
    brand_id: Annotated[str | None, Query(max_length=40)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    """Demands this province posted or received, newest first."""
    province = runtime.settings.province
    query = select(demand)
    if side == "posted":
        query = query.where(demand.c.demanding_province == province)
    elif side == "received":
        query = query.where(demand.c.origin_province == province)
    if status_ is not None:
        query = query.where(demand.c.status == status_.value)
    if brand_id is not None:
        query = query.where(demand.c.brand_id == brand_id)
    if cursor is not None:
        posted_at, last_id = _decode_cursor(cursor)
        query = query.where(
            tuple_(demand.c.posted_at, demand.c.id)
            < tuple_(literal(posted_at, demand.c.posted_at.type), literal(last_id, String))
        )
    query = query.order_by(demand.c.posted_at.desc(), demand.c.id.desc()).limit(limit + 1)
    async with runtime.read_sessions() as session:
        rows = [plain(row) for row in (await session.execute(query)).mappings()]
    items = rows[:limit]
    next_cursor = _encode_cursor(items[-1]) if len(rows) > limit else None
    return {"items": [view(row, province) for row in items], "next_cursor": next_cursor}


def _encode_cursor(last: dict[str, Any]) -> str:
    return encode_cursor({"posted_at": last["posted_at"].isoformat(), "id": last["id"]})


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        payload = decode_cursor(cursor)
        posted_at, last_id = payload["posted_at"], payload["id"]
        if not isinstance(posted_at, str) or not isinstance(last_id, str):
            raise TypeError("posted_at and id should be strings")
        return as_utc(datetime.fromisoformat(posted_at)), last_id
    except (ValueError, KeyError, TypeError) as exc:  # binascii, Unicode and JSON errors are ValueErrors
        message = f"cursor {cursor[:40]!r} is not a next_cursor of this list; start again without a cursor"
        raise Unprocessable(message, errors=[{"field": "query.cursor", "message": message}]) from exc

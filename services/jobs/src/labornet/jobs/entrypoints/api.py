"""HTTP API of vacancies: officers of the owner province write; everyone reads and searches the replica."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Header, Query, Response, status
from prometheus_client import Histogram

from labornet.jobs.adapters.reads import VacancyReads, shown, vacancy_reads
from labornet.jobs.adapters.search import SearchParams
from labornet.jobs.domain.vacancy import (
    CloseRequest,
    EmploymentType,
    StaleVersion,
    Status,
    TargetGroup,
    VacancyChanges,
    VacancyDraft,
    VacancyRuleError,
    VersionRequired,
)
from labornet.jobs.entrypoints.schemas import VACANCY_FIELDS, Vacancy, VacancyPage
from labornet.jobs.service_layer.vacancies import VacancyService, to_event
from labornet.shared.app import Runtime, RuntimeDep
from labornet.shared.auth import Principal, Role, require_province_role
from labornet.shared.bounds import NonNegativeInt32
from labornet.shared.observability import LATENCY_BUCKETS
from labornet.shared.paging import InvalidCursor
from labornet.shared.problems import (
    Conflict,
    NotFound,
    Problem,
    Unprocessable,
    if_match_version,
    problem_responses,
)

router = APIRouter(prefix="/api/v1/vacancies", tags=["vacancies"])
OfficerDep = Annotated[Principal, Depends(require_province_role(Role.OFFICER))]

# a change of a vacancy: 400 a body that is not JSON, 404 unknown, 403 another province's, 409 stale or closed,
# 428 without a version
_CLOSE_PROBLEMS = problem_responses(400, 401, 403, 404, 409, 422, 428)
_CHANGE_PROBLEMS = {**_CLOSE_PROBLEMS, **problem_responses(503)}  # 503: a named brand cannot be checked
_ETAG = {"ETag": {"description": 'the version, e.g. "3": send it back as If-Match', "schema": {"type": "string"}}}

SEARCH_LATENCY = Histogram(
    "labornet_jobs_search_duration_seconds", "Vacancy search latency (database part)", buckets=LATENCY_BUCKETS
)


def service(runtime: Runtime) -> VacancyService:
    found: VacancyService = runtime.extras["vacancies"]
    return found


def reads(runtime: Runtime) -> VacancyReads:
    """The replica's public reads, through the driver (made on first use; closed with the engine)."""
    found: VacancyReads | None = runtime.extras.get("vacancy_reads")
    if found is None:
        found = runtime.extras["vacancy_reads"] = vacancy_reads(runtime.engine, runtime.read_sessions)
    return found


def _json(content: dict[str, Any]) -> Response:
    """``content`` written with the bytes FastAPI writes for a response model (pydantic's JSON: compact, UTF-8), by
    orjson and without validating again what the replica holds: every vacancy in it passed the rules of its event
    or its API (ADR 33)."""
    return Response(orjson.dumps(content), media_type="application/json")


def _respond(row: dict[str, Any], response: Response) -> dict[str, Any]:
    response.headers["ETag"] = f'"{row["version"]}"'
    return to_event(row)


async def _run(coroutine: Any) -> dict[str, Any]:
    try:
        result: dict[str, Any] = await coroutine
    except StaleVersion as exc:
        raise Conflict(str(exc), slug="stale-version") from exc
    except VersionRequired as exc:
        raise Problem(str(exc), status=428, slug="version-required") from exc
    except VacancyRuleError as exc:
        raise Conflict(str(exc), slug="vacancy-closed") from exc
    return result


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=Vacancy,
    responses={
        201: {
            "description": "published, at version 1",
            "headers": {**_ETAG, "Location": {"description": "the new vacancy", "schema": {"type": "string"}}},
        },
        **problem_responses(400, 401, 403, 422, 503),
    },
)
async def publish(draft: VacancyDraft, runtime: RuntimeDep, _officer: OfficerDep) -> Response:
    """Publish a vacancy of this province (officers of this province only).

    A named brand must be in the federation's brand register and not revoked (422 naming brand_id); 503 when the
    register cannot be asked, and nothing is written."""
    row = await _run(service(runtime).publish(draft))
    # the new row as a read shows it (the bytes the response model writes, ADR 33), without validating it again
    response = _json(shown(row, VACANCY_FIELDS))
    response.status_code = status.HTTP_201_CREATED
    response.headers["Location"] = f"/api/v1/vacancies/{row['id']}"
    response.headers["ETag"] = f'"{row["version"]}"'
    return response


@router.patch(
    "/{vacancy_id}",
    response_model=Vacancy,
    responses={200: {"description": "the vacancy as changed", "headers": _ETAG}, **_CHANGE_PROBLEMS},
)
async def change(
    vacancy_id: str,
    changes: VacancyChanges,
    runtime: RuntimeDep,
    _officer: OfficerDep,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """Change an open vacancy; name the version you read (If-Match or `version`), a stale one is 409.

    The body may be the vacancy as read, with the changes: what the node sets itself is ignored."""
    if changes.id is not None and changes.id != vacancy_id:
        message = f"the body is vacancy {changes.id}, the path {vacancy_id}; send the body of the vacancy you change"
        raise Unprocessable(message, errors=[{"field": "id", "message": message, "input": changes.id}])
    row = await _run(service(runtime).update(vacancy_id, changes, if_match_version(if_match, "vacancy")))
    return _respond(row, response)


@router.post(
    "/{vacancy_id}/close",
    response_model=Vacancy,
    responses={200: {"description": "the vacancy, closed", "headers": _ETAG}, **_CLOSE_PROBLEMS},
)
async def close(
    vacancy_id: str,
    request: CloseRequest,
    runtime: RuntimeDep,
    _officer: OfficerDep,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """Close a vacancy as filled or withdrawn."""
    version = request.version or if_match_version(if_match, "vacancy")
    row = await _run(service(runtime).close(vacancy_id, request.reason, version))
    return _respond(row, response)


@router.get(
    "/{vacancy_id}",
    response_model=Vacancy,
    responses={200: {"headers": _ETAG}, **problem_responses(404)},
)
async def get_one(vacancy_id: str, runtime: RuntimeDep) -> Response:
    """One vacancy from this node's replica (public)."""
    row = await reads(runtime).one_shown(vacancy_id, VACANCY_FIELDS)
    if row is None:
        raise NotFound(f"no vacancy {vacancy_id} on this node")
    response = _json(row)
    response.headers["ETag"] = f'"{row["version"]}"'
    return response


@router.get("", response_model=VacancyPage, responses=problem_responses(422))
async def search(
    runtime: RuntimeDep,
    q: Annotated[str | None, Query(max_length=100, description="free text, Chinese or English")] = None,
    province: Annotated[str | None, Query(pattern=r"^\d{2}0000$")] = None,
    division_code: Annotated[str | None, Query(pattern=r"^\d{6}$")] = None,
    occupation_code: Annotated[str | None, Query(pattern=r"^\d{1,4}$")] = None,
    salary_min: Annotated[NonNegativeInt32 | None, Query()] = None,
    salary_max: Annotated[NonNegativeInt32 | None, Query()] = None,
    employment_type: EmploymentType | None = None,
    target_group: TargetGroup | None = None,
    posted_since: datetime | None = None,
    status_: Annotated[list[Status] | None, Query(alias="status")] = None,
    sort: Literal["newest", "salary"] = "newest",
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Response:
    """Search every province's vacancies on this node's replica (public; open vacancies unless `status` says)."""
    try:
        params = SearchParams(
            q=q or None,
            province=province,
            division_code=division_code,
            occupation_code=occupation_code,
            salary_min=salary_min,
            salary_max=salary_max,
            employment_type=employment_type.value if employment_type else None,
            target_group=target_group.value if target_group else None,
            posted_since=posted_since,
            statuses=tuple(s.value for s in status_) if status_ else ("open",),
            sort=sort,
            cursor=cursor,
            limit=limit,
        )
    except ValueError as exc:  # what the query's types cannot say: a salary range whose min is above its max
        raise Unprocessable(str(exc), errors=[{"field": "query", "message": str(exc)}]) from exc
    started = time.perf_counter()
    try:
        page = await reads(runtime).search_shown(params, VACANCY_FIELDS)
    except InvalidCursor as exc:
        raise Unprocessable(str(exc), errors=[{"field": "query.cursor", "message": str(exc)}]) from exc
    finally:
        SEARCH_LATENCY.observe(time.perf_counter() - started)
    return _json(
        {
            "items": page.items,
            "next_cursor": page.next_cursor,
            "total": page.total,
            "total_exact": page.total_exact,
        }
    )

"""HTTP API of brands: officers of the origin province write; everyone reads, searches and counts the replica."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Response, status
from prometheus_client import Histogram
from sqlalchemy import select

from labornet.brands.adapters.search import (
    SearchParams,
    StatsRow,
    brand_counts,
    contested_claims,
    plain,
    search_brands,
)
from labornet.brands.adapters.tables import brand
from labornet.brands.domain.brand import (
    BodyType,
    BrandChanges,
    BrandDraft,
    BrandRuleError,
    Level,
    NameFixed,
    NameTaken,
    RecogniseRequest,
    RevokeRequest,
    StaleVersion,
    Status,
    VersionRequired,
    categories,
)
from labornet.brands.domain.names import resolve_names
from labornet.brands.entrypoints.schemas import Brand, BrandPage, BrandStatistics, CategoryList
from labornet.brands.service_layer.brands import BrandService, present
from labornet.shared.app import Runtime, RuntimeDep
from labornet.shared.auth import Principal, Role, require_province_role
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

router = APIRouter(prefix="/api/v1", tags=["brands"])
OfficerDep = Annotated[Principal, Depends(require_province_role(Role.OFFICER))]
ProvinceQuery = Annotated[str | None, Query(pattern=r"^\d{2}0000$", description="origin province, e.g. 510000")]
StatusQuery = Annotated[list[Status] | None, Query(alias="status", description="default: recognised")]

ETAG = {
    "ETag": {"description": 'the brand\'s version, e.g. "3": send it back as If-Match', "schema": {"type": "string"}}
}
LOCATION = {"Location": {"description": "the new brand, /api/v1/brands/{id}", "schema": {"type": "string"}}}
# A change of a brand: 401/403 who may write, 404 no such brand, 409 stale version or a rule, 422 bad body or
# If-Match, 428 no version (the app adds 413, 429 and 500, which its edges answer on every operation).
CHANGE_RESPONSES = {
    200: {"description": "the brand as changed", "headers": ETAG},
    **problem_responses(401, 403, 404, 409, 422, 428),
}

SEARCH_LATENCY = Histogram(
    "labornet_brands_search_duration_seconds", "Brand search latency (database part)", buckets=LATENCY_BUCKETS
)


def service(runtime: Runtime) -> BrandService:
    found: BrandService = runtime.extras["brands"]
    return found


async def _run(coroutine: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    try:
        return await coroutine
    except StaleVersion as exc:
        raise Conflict(str(exc), slug="stale-version") from exc
    except VersionRequired as exc:
        raise Problem(str(exc), status=428, slug="version-required") from exc
    except NameTaken as exc:
        raise Conflict(str(exc), slug="name-taken") from exc
    except NameFixed as exc:
        raise Conflict(str(exc), slug="name-fixed") from exc
    except BrandRuleError as exc:
        raise Conflict(str(exc), slug="brand-state") from exc


async def _shown(runtime: Runtime, row: dict[str, Any], response: Response) -> dict[str, Any]:
    async with runtime.read_sessions() as session:
        (shown,) = await present(session, [row], runtime.registry)
    response.headers["ETag"] = f'"{row["version"]}"'
    return shown


@router.get("/categories", tags=["brands"], response_model=CategoryList)
async def list_categories() -> dict[str, Any]:
    """The industry / skill categories a brand is registered under (public)."""
    return {"items": [{"code": c.code, "zh": c.zh, "en": c.en} for c in categories().values()]}


@router.post(
    "/brands",
    status_code=status.HTTP_201_CREATED,
    response_model=Brand,
    responses={
        201: {"description": "the brand, proposed, version 1", "headers": {**ETAG, **LOCATION}},
        **problem_responses(401, 403, 409, 422),
    },
)
async def register(draft: BrandDraft, runtime: RuntimeDep, _officer: OfficerDep, response: Response) -> dict[str, Any]:
    """Register a brand of this province; it starts as proposed (officers of this province only)."""
    row = await _run(service(runtime).register(draft))
    response.headers["Location"] = f"/api/v1/brands/{row['id']}"
    return await _shown(runtime, row, response)


@router.patch("/brands/{brand_id}", response_model=Brand, responses=CHANGE_RESPONSES)
async def change(
    brand_id: str,
    changes: BrandChanges,
    runtime: RuntimeDep,
    _officer: OfficerDep,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """Change a brand that is not revoked; name the version you read (If-Match or `version`), a stale one is 409.

    The Chinese name changes only while the brand is proposed."""
    row = await _run(service(runtime).update(brand_id, changes, if_match_version(if_match, "brand")))
    return await _shown(runtime, row, response)


@router.post("/brands/{brand_id}/recognise", response_model=Brand, responses=CHANGE_RESPONSES)
async def recognise(
    brand_id: str,
    request: RecogniseRequest,
    runtime: RuntimeDep,
    _officer: OfficerDep,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """Recognise a proposed brand; from now on it is listed on every node and takes partners' demands."""
    version = request.version or if_match_version(if_match, "brand")
    row = await _run(service(runtime).recognise(brand_id, version))
    return await _shown(runtime, row, response)


@router.post("/brands/{brand_id}/revoke", response_model=Brand, responses=CHANGE_RESPONSES)
async def revoke(
    brand_id: str,
    request: RevokeRequest,
    runtime: RuntimeDep,
    _officer: OfficerDep,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """Revoke a brand (or withdraw a proposal), with a reason; its name becomes free in the province."""
    version = request.version or if_match_version(if_match, "brand")
    row = await _run(service(runtime).revoke(brand_id, request.reason, version))
    return await _shown(runtime, row, response)


@router.get("/brands", response_model=BrandPage, responses=problem_responses(422))
async def search(
    runtime: RuntimeDep,
    q: Annotated[str | None, Query(max_length=100, description="free text, Chinese or English")] = None,
    province: ProvinceQuery = None,
    division_code: Annotated[str | None, Query(pattern=r"^\d{6}$")] = None,
    category: Annotated[str | None, Query(max_length=40)] = None,
    level: Level | None = None,
    body_type: BodyType | None = None,
    destination: Annotated[str | None, Query(pattern=r"^\d{2}0000$", description="a destination region")] = None,
    status_: StatusQuery = None,
    sort: Literal["newest", "jobs"] = "newest",
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    """Search every province's brands on this node's replica (public; recognised brands unless `status` says)."""
    params = SearchParams(
        q=q or None,
        province=province,
        division_code=division_code,
        category=category,
        level=level.value if level else None,
        body_type=body_type.value if body_type else None,
        destination=destination,
        statuses=tuple(s.value for s in status_) if status_ else (Status.RECOGNISED.value,),
        sort=sort,
        cursor=cursor,
        limit=limit,
    )
    started = time.perf_counter()
    try:
        async with runtime.read_sessions() as session:
            page = await search_brands(session, params)
            items = await present(session, page.items, runtime.registry)
    except InvalidCursor as exc:
        raise Unprocessable(str(exc), errors=[{"field": "query.cursor", "message": str(exc)}]) from exc
    finally:
        SEARCH_LATENCY.observe(time.perf_counter() - started)
    return {"items": items, "next_cursor": page.next_cursor, "total": page.total}


@dataclass
class _Tally:
    brands: int = 0
    people_trained: int = 0
    jobs_supported: int = 0
    annual_labour_income_cny: int = 0
    name_conflicts: int = 0
    split: Counter[str] = field(default_factory=Counter)

    def add(self, row: StatsRow, key: str) -> None:
        self.brands += row.brands
        self.people_trained += row.people_trained
        self.jobs_supported += row.jobs_supported
        self.annual_labour_income_cny += row.annual_labour_income_cny
        self.split[key] += row.brands

    def sums(self, *, conflicts: bool = True) -> dict[str, int]:
        sums = {
            "brands": self.brands,
            "people_trained": self.people_trained,
            "jobs_supported": self.jobs_supported,
            "annual_labour_income_cny": self.annual_labour_income_cny,
        }
        if conflicts:
            sums["name_conflicts"] = self.name_conflicts
        return sums


@router.get("/brands/stats", response_model=BrandStatistics, responses=problem_responses(422))
async def stats(runtime: RuntimeDep, province: ProvinceQuery = None, status_: StatusQuery = None) -> dict[str, Any]:
    """Brands per origin province and per category, with people trained, jobs supported and labour income (public).

    Every member province and every known category is listed, with zeros where there is nothing to count.
    `name_conflicts` (per province) counts the brands flagged by the name-conflict rule.
    """
    statuses = tuple(s.value for s in status_) if status_ else (Status.RECOGNISED.value,)
    async with runtime.read_sessions() as session:
        rows = await brand_counts(session, statuses, province)
        contested = await contested_claims(session)
    provinces = {p.code: p for p in runtime.registry}
    by_province = {code: _Tally() for code in ([province] if province else provinces)}
    known = categories()
    by_category = {code: _Tally() for code in known}
    category_names = {code: c.zh for code, c in known.items()}
    levels: dict[str, Counter[str]] = {code: Counter() for code in by_province}
    total = _Tally()
    for row in rows:
        by_province.setdefault(row.province, _Tally()).add(row, row.category)
        levels.setdefault(row.province, Counter())[row.level] += row.brands
        by_category.setdefault(row.category, _Tally()).add(row, row.province)
        category_names.setdefault(row.category, row.category_name)
        total.add(row, row.province)
    resolved = resolve_names(contested, provinces)
    for claim in contested:
        counted = claim.status.value in statuses and (province is None or claim.origin_province == province)
        if counted and resolved[claim.brand_id].name_conflict:
            by_province.setdefault(claim.origin_province, _Tally()).name_conflicts += 1
            levels.setdefault(claim.origin_province, Counter())
            total.name_conflicts += 1
    return {
        "statuses": list(statuses),
        "total": total.sums(),
        "provinces": [
            {
                "province": code,
                "name": provinces[code].short_zh if code in provinces else code,
                **tally.sums(),
                "levels": {level.value: levels[code][level.value] for level in Level},
                "categories": dict(sorted(tally.split.items())),
            }
            for code, tally in by_province.items()
        ],
        "categories": [
            {
                "category": code,
                "name": category_names[code],
                **tally.sums(conflicts=False),
                "provinces": dict(sorted(tally.split.items())),
            }
            for code, tally in by_category.items()
        ],
    }


@router.get(
    "/brands/{brand_id}",
    response_model=Brand,
    responses={200: {"description": "the brand", "headers": ETAG}, **problem_responses(404)},
)
async def get_one(brand_id: str, runtime: RuntimeDep, response: Response) -> dict[str, Any]:
    """One brand from this node's replica, any status (public)."""
    async with runtime.read_sessions() as session:
        found = (await session.execute(select(brand).where(brand.c.id == brand_id))).mappings().one_or_none()
        if found is None:
            raise NotFound(f"no brand {brand_id} on this node")
        (shown,) = await present(session, [plain(found)], runtime.registry)
    response.headers["ETag"] = f'"{found["version"]}"'
    return shown

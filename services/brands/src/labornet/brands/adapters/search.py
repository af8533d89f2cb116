"""Queries on the local brand replica: search in keyset pages, statistics, and the brands sharing a name.

Text goes through :func:`labornet.brands.domain.text.tokens`, the function that fills ``search_tokens``, and every
token must occur: a CJK bigram as a whole token (``川菜`` finds ``川菜师傅``), a Latin word as a token prefix
(``chef`` finds ``chefs``), a lone CJK character anywhere. The registry holds thousands of brands, not millions
(about 2,300 nationally), so the tokens are matched with ``LIKE`` over the padded ``search_tokens`` column, which
both databases answer identically, rather than with a full-text index to maintain; the filters that narrow a
search (status, province, category) are indexed. Should the registry grow by orders of magnitude, the jobs
service's FTS5 / tsvector index (migration jobs_0003) is the model.

Pages are keyset pages: the cursor carries the sort key of the last row given out, so paging neither skips nor
repeats rows while others insert. ``total`` counts every match of the filters, whatever the cursor.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, String, and_, cast, func, literal, select, tuple_
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from labornet.brands.adapters.tables import brand
from labornet.brands.domain.brand import Status
from labornet.brands.domain.names import NameClaim
from labornet.brands.domain.text import is_cjk, tokens
from labornet.shared.db import as_utc
from labornet.shared.paging import decode_sort_cursor, encode_sort_cursor

Sort = Literal["newest", "jobs"]
SORTS: tuple[Sort, ...] = ("newest", "jobs")
MAX_LIMIT = 100
RESULT_COLUMNS = tuple(c for c in brand.columns if c.name != "search_tokens")
SORT_COLUMNS = {"newest": brand.c.registered_at, "jobs": brand.c.jobs_supported}
TIME_COLUMNS = ("registered_at", "recognised_at", "revoked_at", "updated_at")


@dataclass(frozen=True)
class SearchParams:
    """What a visitor asks for; every given filter must hold."""

    q: str | None = None
    province: str | None = None  # the origin province, e.g. 510000
    division_code: str | None = None  # 510000: the province; 510100: the city and its counties; 510104: the county
    category: str | None = None
    level: str | None = None
    body_type: str | None = None
    destination: str | None = None  # a province among the brand's destination regions
    statuses: tuple[str, ...] = (Status.RECOGNISED.value,)
    sort: Sort = "newest"
    cursor: str | None = None
    limit: int = 20

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit should be between 1 and {MAX_LIMIT}, got {self.limit}")
        if self.sort not in SORTS:
            raise ValueError(f"sort should be one of {', '.join(SORTS)}, got {self.sort!r}")
        if not self.statuses:
            raise ValueError("statuses should name at least one status, e.g. ('recognised',)")


@dataclass
class SearchPage:
    items: list[dict[str, Any]]
    next_cursor: str | None
    total: int


async def search_brands(session: AsyncSession, params: SearchParams) -> SearchPage:
    """One page of the brands matching ``params`` in its sort order, with the count of all matches."""
    dialect = session.get_bind().dialect.name
    conditions = _conditions(params, dialect)
    sort_column = SORT_COLUMNS[params.sort]
    page = select(*RESULT_COLUMNS).where(*conditions)
    if params.cursor is not None:
        last_key, last_id = _decode_cursor(params.cursor, params.sort)
        page = page.where(
            tuple_(sort_column, brand.c.id) < tuple_(literal(last_key, sort_column.type), literal(last_id, String))
        )
    page = page.order_by(sort_column.desc(), brand.c.id.desc()).limit(params.limit + 1)
    rows = [plain(row) for row in (await session.execute(page)).mappings()]

    items, more = rows[: params.limit], len(rows) > params.limit
    if params.cursor is None and not more:
        total = len(items)
    else:
        total = int((await session.execute(select(func.count()).select_from(brand).where(*conditions))).scalar_one())
    return SearchPage(items=items, next_cursor=_encode_cursor(params.sort, items[-1]) if more else None, total=total)


def _conditions(params: SearchParams, dialect: str) -> list[ColumnElement[bool]]:
    b = brand.c
    conditions: list[ColumnElement[bool]] = [
        b.status == params.statuses[0] if len(params.statuses) == 1 else b.status.in_(params.statuses)
    ]
    if params.q is not None:
        conditions.extend(_text_conditions(tokens(params.q)))
    if params.province is not None:
        conditions.append(b.origin_province == params.province)
    if params.division_code is not None:
        conditions.append(_code_prefix(b.division_code, _significant(params.division_code)))
    if params.category is not None:
        conditions.append(b.category == params.category)
    if params.level is not None:
        conditions.append(b.level == params.level)
    if params.body_type is not None:
        conditions.append(b.cultivating_body_type == params.body_type)
    if params.destination is not None:
        conditions.append(_contains_destination(params.destination, dialect))
    return conditions


def _text_conditions(query_tokens: Iterable[str]) -> list[ColumnElement[bool]]:
    """Every token must occur in ``search_tokens`` (``" 川菜 菜师 师傅 sichuan chefs "``)."""
    conditions: list[ColumnElement[bool]] = []
    for token in dict.fromkeys(query_tokens):
        if is_cjk(token) and len(token) == 1:
            pattern = token  # inside any bigram
        elif is_cjk(token):
            pattern = f" {token} "  # a whole bigram
        else:
            pattern = f" {token}"  # a word prefix
        conditions.append(brand.c.search_tokens.contains(pattern, autoescape=True))
    return conditions


def _significant(division_code: str) -> str:
    """The digits that name a division: 510000 → 51, 510100 → 5101, 510104 → 510104."""
    code = division_code
    while len(code) > 2 and code.endswith("00"):
        code = code[:-2]
    return code


def _code_prefix(column: Any, prefix: str) -> ColumnElement[bool]:
    """``column`` starts with the digits ``prefix``, as a range a btree index answers on both databases."""
    upper = prefix.rstrip("9")
    if not upper:
        return and_(column >= prefix)
    upper = upper[:-1] + str(int(upper[-1]) + 1)
    return and_(column >= prefix, column < upper)


def _contains_destination(province: str, dialect: str) -> ColumnElement[bool]:
    """The brand's JSON list ``destination_regions`` holds ``province`` (exact element comparison)."""
    if dialect == "sqlite":
        element = func.json_each(brand.c.destination_regions).table_valued("value")
        return select(element.c.value).where(element.c.value == province).exists()
    return cast(brand.c.destination_regions, JSONB).contains([province])


def plain(row: Any) -> dict[str, Any]:
    """A brand row as a dict with aware UTC times on both databases (SQLite gives them back naive)."""
    data = dict(row)
    for name in TIME_COLUMNS:
        if data.get(name) is not None:
            data[name] = as_utc(data[name])
    return data


def _encode_cursor(sort: Sort, last: dict[str, Any]) -> str:
    return encode_sort_cursor(sort, last["registered_at"] if sort == "newest" else last["jobs_supported"], last["id"])


def _decode_cursor(cursor: str, sort: Sort) -> tuple[datetime | int, str]:
    return decode_sort_cursor(cursor, sort, SORTS)


# Names ------------------------------------------------------------------------------------------------------


def _claim(row: Any) -> NameClaim:
    return NameClaim(
        brand_id=row.id,
        origin_province=row.origin_province,
        name_zh=row.name_zh,
        name_en=row.name_en,
        normalised_name=row.normalised_name,
        status=Status(row.status),
        recognised_at=as_utc(row.recognised_at) if row.recognised_at is not None else None,
    )


_CLAIM_COLUMNS = (
    brand.c.id,
    brand.c.origin_province,
    brand.c.name_zh,
    brand.c.name_en,
    brand.c.normalised_name,
    brand.c.status,
    brand.c.recognised_at,
)


async def claims_sharing(session: AsyncSession, normalised_names: Iterable[str]) -> list[NameClaim]:
    """Every brand of the node (any status) whose name is one of ``normalised_names``."""
    names = sorted(set(normalised_names))
    claims: list[NameClaim] = []
    for start in range(0, len(names), 500):
        chunk = names[start : start + 500]
        rows = await session.execute(select(*_CLAIM_COLUMNS).where(brand.c.normalised_name.in_(chunk)))
        claims.extend(_claim(row) for row in rows)
    return claims


async def contested_claims(session: AsyncSession) -> list[NameClaim]:
    """Every brand whose name is shared by brands of two or more provinces that are not revoked."""
    contested = (
        select(brand.c.normalised_name)
        .where(brand.c.status != Status.REVOKED.value)
        .group_by(brand.c.normalised_name)
        .having(func.count(brand.c.origin_province.distinct()) > 1)
    )
    rows = await session.execute(select(*_CLAIM_COLUMNS).where(brand.c.normalised_name.in_(contested)))
    return [_claim(row) for row in rows]


# Statistics -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatsRow:
    """Brands of one origin province, category and level, with their sums."""

    province: str
    category: str
    category_name: str
    level: str
    brands: int
    people_trained: int
    jobs_supported: int
    annual_labour_income_cny: int


async def brand_counts(session: AsyncSession, statuses: Sequence[str], province: str | None = None) -> list[StatsRow]:
    query = (
        select(
            brand.c.origin_province,
            brand.c.category,
            func.max(brand.c.category_name),
            brand.c.level,
            func.count(),
            func.coalesce(func.sum(brand.c.people_trained), 0),
            func.coalesce(func.sum(brand.c.jobs_supported), 0),
            func.coalesce(func.sum(brand.c.annual_labour_income_cny), 0),
        )
        .where(brand.c.status.in_(statuses))
        .group_by(brand.c.origin_province, brand.c.category, brand.c.level)
    )
    if province is not None:
        query = query.where(brand.c.origin_province == province)
    rows = await session.execute(query)
    return [
        StatsRow(p, c, name, level, int(n), int(people), int(jobs), int(income))
        for p, c, name, level, n, people, jobs, income in rows
    ]

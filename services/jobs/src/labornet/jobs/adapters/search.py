"""Vacancy search on the local replica: every province's vacancies, by text and filters, in keyset pages.

Text goes through :func:`labornet.jobs.domain.text.tokens`, the function that fills ``search_tokens``, and every
token must match: CJK bigrams exactly, Latin words as prefixes (``chef`` finds ``chefs``). SQLite answers from the
FTS5 table ``vacancy_search``, PostgreSQL from the generated ``search_vector`` column and its GIN index (both made
by migration jobs_0003). A lone CJK character has no bigram; it is looked up with LIKE in ``search_tokens``, which
holds every CJK character of the searchable text inside its bigrams — correct, but not indexed.

Pages are keyset pages: the cursor carries the sort key of the last row given out, so paging neither skips nor
repeats rows while others insert. ``total`` counts every match of the filters, whatever the cursor, up to
``TOTAL_CAP``: past it the count stops and ``total_exact`` is false ("1,000+"), as search engines do — counting
every match of a broad query over a million vacancies costs a hundred times more than the page itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    and_,
    bindparam,
    cast,
    func,
    literal,
    literal_column,
    select,
    table,
    tuple_,
)
from sqlalchemy.dialects.postgresql import JSONB, TSQUERY
from sqlalchemy.ext.asyncio import AsyncSession

from labornet.jobs.adapters.tables import vacancy
from labornet.jobs.domain.text import is_cjk, tokens
from labornet.shared.db import as_utc
from labornet.shared.paging import decode_sort_cursor, encode_sort_cursor

Sort = Literal["newest", "salary"]
SORTS: tuple[Sort, ...] = ("newest", "salary")
MAX_LIMIT = 100
RESULT_COLUMNS = tuple(c for c in vacancy.columns if c.name != "search_tokens")
SORT_COLUMNS = {"newest": vacancy.c.posted_at, "salary": vacancy.c.salary_max}


def _digits(name: str, value: str | None, lengths: range) -> None:
    if value is not None and (not value.isascii() or not value.isdigit() or len(value) not in lengths):
        count = str(lengths.start) if len(lengths) == 1 else f"{lengths.start} to {lengths.stop - 1}"
        raise ValueError(f"{name} should be {count} digits, got {value!r}")


@dataclass(frozen=True)
class SearchParams:
    """What a job seeker asks for; every given filter must hold."""

    q: str | None = None
    province: str | None = None  # the owner province, e.g. 510000
    division_code: str | None = None  # 510000: the province; 510100: the city and its counties; 510104: the county
    occupation_code: str | None = None  # ISCO-08; a major group (5) includes its unit groups (5120)
    salary_min: int | None = None  # the vacancy's salary range overlaps [salary_min, salary_max]
    salary_max: int | None = None
    employment_type: str | None = None
    target_group: str | None = None
    posted_since: datetime | None = None
    statuses: tuple[str, ...] = ("open",)
    sort: Sort = "newest"
    cursor: str | None = None
    limit: int = 20

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit should be between 1 and {MAX_LIMIT}, got {self.limit}")
        if self.sort not in SORTS:
            raise ValueError(f"sort should be one of {', '.join(SORTS)}, got {self.sort!r}")
        if not self.statuses:
            raise ValueError("statuses should name at least one status, e.g. ('open',)")
        _digits("division code", self.division_code, range(6, 7))
        _digits("province", self.province, range(6, 7))
        _digits("occupation code", self.occupation_code, range(1, 11))
        if self.salary_min is not None and self.salary_max is not None and self.salary_min > self.salary_max:
            raise ValueError(f"salary_min {self.salary_min} is greater than salary_max {self.salary_max}")


TOTAL_CAP = 1_000


@dataclass
class SearchPage:
    items: list[dict[str, Any]]
    next_cursor: str | None
    total: int
    total_exact: bool = True


async def search_vacancies(session: AsyncSession, params: SearchParams, total_cap: int = TOTAL_CAP) -> SearchPage:
    """One page of the vacancies matching ``params`` in its sort order, with the count of all matches."""
    dialect = session.get_bind().dialect.name
    conditions = _conditions(params, dialect)
    sort_column = SORT_COLUMNS[params.sort]
    page = select(*RESULT_COLUMNS).where(*conditions)
    if params.cursor is not None:
        last_key, last_id = _decode_cursor(params.cursor, params.sort)
        page = page.where(
            tuple_(sort_column, vacancy.c.id) < tuple_(literal(last_key, sort_column.type), literal(last_id, String))
        )
    page = page.order_by(sort_column.desc(), vacancy.c.id.desc()).limit(params.limit + 1)
    rows = [_plain(dict(row)) for row in (await session.execute(page)).mappings()]

    items, more = rows[: params.limit], len(rows) > params.limit
    if params.cursor is None and not more:
        total = len(items)
    else:
        matches = select(vacancy.c.id).where(*conditions).limit(total_cap + 1).subquery()
        total = int((await session.execute(select(func.count()).select_from(matches))).scalar_one())
    next_cursor = _encode_cursor(params.sort, items[-1]) if more else None
    return SearchPage(items=items, next_cursor=next_cursor, total=min(total, total_cap), total_exact=total <= total_cap)


def _conditions(params: SearchParams, dialect: str) -> list[ColumnElement[bool]]:
    v = vacancy.c
    conditions: list[ColumnElement[bool]] = [
        v.status == params.statuses[0] if len(params.statuses) == 1 else v.status.in_(params.statuses)
    ]
    if params.q is not None:
        # the filters inside the GIN lookup (migration jobs_0004): they sharpen the planner's estimate too, so a
        # rare word is found through the text index rather than by walking a province's whole sort-order index
        lexemes = [f"#p{params.province}"] if params.province is not None else []
        if len(params.statuses) == 1:
            lexemes.append(f"#s{params.statuses[0]}")
        conditions.extend(_text_conditions(tokens(params.q), dialect, lexemes))
    if params.province is not None:
        conditions.append(v.owner_province == params.province)
    if params.division_code is not None:
        conditions.append(_code_prefix(v.division_code, _significant(params.division_code)))
    if params.occupation_code is not None:
        conditions.append(_code_prefix(v.occupation_code, params.occupation_code))
    if params.salary_min is not None:
        conditions.append(v.salary_max >= params.salary_min)
    if params.salary_max is not None:
        conditions.append(v.salary_min <= params.salary_max)
    if params.employment_type is not None:
        conditions.append(v.employment_type == params.employment_type)
    if params.target_group is not None:
        conditions.append(_contains_target_group(params.target_group, dialect))
    if params.posted_since is not None:
        conditions.append(v.posted_at >= as_utc(params.posted_since))
    return conditions


def _text_conditions(query_tokens: list[str], dialect: str, facets: list[str]) -> list[ColumnElement[bool]]:
    """Every token must match: bigrams and words through the index, lone CJK characters through LIKE.

    On PostgreSQL the ``facets`` (``#p<province>``, ``#s<status>``; migration jobs_0004) join the index lookup, so
    the GIN index intersects words and filters in one pass; the plain column conditions still apply."""
    indexed = list(dict.fromkeys(t for t in query_tokens if not (len(t) == 1 and is_cjk(t))))
    single = list(dict.fromkeys(t for t in query_tokens if len(t) == 1 and is_cjk(t)))
    conditions: list[ColumnElement[bool]] = [vacancy.c.search_tokens.contains(c, autoescape=True) for c in single]
    if not indexed:
        return conditions
    if dialect == "sqlite":
        match = " ".join(_fts5_term(t) for t in indexed)
        fts_rows: Select[tuple[int]] = select(literal_column("rowid")).select_from(table("vacancy_search"))
        conditions.append(
            literal_column("vacancy.rowid").in_(fts_rows.where(literal_column("vacancy_search").match(match)))
        )
    else:
        query = " & ".join(_tsquery_term(t) for t in indexed)
        tsquery: ColumnElement[Any] = func.to_tsquery(
            literal_column("'simple'"), bindparam("ts_query", query, type_=String)
        )
        if facets:  # literal lexemes: a tsquery cast, never parsed, so the '#' stays
            facet_query = " & ".join(_tsquery_term(f).removesuffix(":*") for f in facets)
            tsquery = tsquery.op("&&")(cast(bindparam("ts_facets", facet_query, type_=String), TSQUERY))
        conditions.append(literal_column("vacancy.search_vector").bool_op("@@")(tsquery))
    return conditions


def _fts5_term(token: str) -> str:
    """An FTS5 string (double quotes doubled); a Latin word becomes a prefix query."""
    quoted = '"' + token.replace('"', '""') + '"'
    return quoted if is_cjk(token) else quoted + "*"


def _tsquery_term(token: str) -> str:
    """A tsquery lexeme in single quotes (quotes and backslashes escaped); a Latin word becomes a prefix query."""
    quoted = "'" + token.replace("\\", "\\\\").replace("'", "''") + "'"
    return quoted if is_cjk(token) else quoted + ":*"


def _significant(division_code: str) -> str:
    """The digits that name a division: 510000 → 51, 510100 → 5101, 510104 → 510104."""
    code = division_code
    while len(code) > 2 and code.endswith("00"):
        code = code[:-2]
    return code


def _code_prefix(column: Any, prefix: str) -> ColumnElement[bool]:
    """``column`` starts with the digits ``prefix``, as a range both databases answer from a btree index.

    The column holds digits only, so [prefix, prefix + 1) is exactly the codes starting with it, in any collation.
    """
    upper = prefix.rstrip("9")
    if not upper:
        return and_(column >= prefix)
    upper = upper[:-1] + str(int(upper[-1]) + 1)
    return and_(column >= prefix, column < upper)


def _contains_target_group(group: str, dialect: str) -> ColumnElement[bool]:
    """The vacancy's JSON list ``target_groups`` holds ``group`` (exact element comparison)."""
    if dialect == "sqlite":
        element = func.json_each(vacancy.c.target_groups).table_valued("value")
        return select(element.c.value).where(element.c.value == group).exists()
    return cast(vacancy.c.target_groups, JSONB).contains([group])


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """Times as aware UTC datetimes on both databases (SQLite gives them back naive)."""
    for name in ("posted_at", "updated_at"):
        row[name] = as_utc(row[name])
    return row


def _encode_cursor(sort: Sort, last: dict[str, Any]) -> str:
    return encode_sort_cursor(sort, last["posted_at"] if sort == "newest" else last["salary_max"], last["id"])


def _decode_cursor(cursor: str, sort: Sort) -> tuple[datetime | int, str]:
    return decode_sort_cursor(cursor, sort, SORTS)

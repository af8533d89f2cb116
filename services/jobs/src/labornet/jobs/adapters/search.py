"""Vacancy search on the local replica: every province's vacancies, by text and filters, in keyset pages.

Text goes through :func:`labornet.jobs.domain.text.tokens`, the function that fills ``search_tokens``, and every
token must match: CJK bigrams exactly, Latin words as prefixes (``chef`` finds ``chefs``). SQLite answers from the
FTS5 table ``vacancy_search``, PostgreSQL from the generated ``search_vector`` column, which also holds a facet
lexeme for every equality filter, and its GIN indexes (migrations jobs_0003 to jobs_0005; ADR 6 and 7). A lone CJK
character has no bigram: PostgreSQL looks it up among the characters of open vacancies, a second column of their
text index (jobs_0012, ADR 31); SQLite, and a search of closed vacancies, with LIKE in ``search_tokens``, which holds
every CJK character of the searchable text inside its bigrams — correct, but not indexed.

Pages are keyset pages: the cursor carries the sort key of the last row given out, so paging neither skips nor
repeats rows while others insert. ``total`` counts every match of the filters, whatever the cursor, up to
``TOTAL_CAP``: past it the count stops and ``total_exact`` is false ("1,000+"), as search engines do — counting
every match of a broad query over a million vacancies costs a hundred times more than the page itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    cast,
    func,
    literal_column,
    select,
    table,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import JSONB, TSQUERY
from sqlalchemy.ext.asyncio import AsyncSession

from labornet.jobs.adapters.tables import vacancy
from labornet.jobs.domain.subscriptions import significant_prefix
from labornet.jobs.domain.text import is_cjk, tokens
from labornet.shared.db import as_utc
from labornet.shared.envelope import parse_time
from labornet.shared.paging import decode_sort_cursor, encode_sort_cursor

Sort = Literal["newest", "salary"]
SORTS: tuple[Sort, ...] = ("newest", "salary")
MAX_LIMIT = 100
RESULT_COLUMNS = tuple(c for c in vacancy.columns if c.name != "search_tokens")
OPEN = ("open",)
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
    statuses: tuple[str, ...] = OPEN
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
# PostgreSQL's settings for a search. Every search is planned with its own values (a generic plan cached with the
# driver's prepared statement cannot tell a word in one vacancy of ten from a word in one of ten thousand); a query
# of a few milliseconds is not worth the 30 ms of compiling it to machine code; and the bitmap of a broad lookup
# (a character in most vacancies of a province: 143,000 rows at 1M) stays exact: with the default 4 MB it loses
# its rows, keeps pages, and every row of those pages is checked again (55 ms where 30 ms do)
SEARCH_SETTINGS = {"plan_cache_mode": "force_custom_plan", "jit": "off", "work_mem": "16MB"}


@dataclass
class SearchPage:
    items: list[dict[str, Any]]
    next_cursor: str | None
    total: int
    total_exact: bool = True


async def search_vacancies(
    session: AsyncSession, params: SearchParams, total_cap: int = TOTAL_CAP, now: datetime | None = None
) -> SearchPage:
    """One page of the vacancies matching ``params`` in its sort order, with the count of all matches.

    The first statement takes up to ``total_cap + 1`` matches with their sort keys, counts them and, from them,
    picks the page: when the matches are that few, it is the whole answer. When there are more, they are
    plentiful, and the page is found by walking the sort order (see :class:`SearchPlan`)."""
    plan = SearchPlan.of(params, session.get_bind().dialect.name, total_cap, now)
    async with _planner(session, **SEARCH_SETTINGS):
        rows = [dict(row) for row in (await session.execute(plan.statement("page"), plan.values)).mappings()]
        if rows:
            total = int(rows[0]["total"])
        else:  # nothing on this page (no match at all, or a cursor past the last one): count on its own
            total = int((await session.execute(plan.statement("count"), plan.values)).scalar_one())
        if total > plan.total_cap:
            async with _planner(session, enable_bitmapscan="off", enable_seqscan="off"):
                walked = await session.execute(plan.statement("walk"), plan.values)
            rows = [dict(row) for row in walked.mappings()]
    for row in rows:
        row.pop("total", None)
    return plan.page(rows, total)


Statement = Literal["page", "count", "walk"]
LOOKUPS = ("words", "facets", "words_and_facets", "characters")  # filters answered by PostgreSQL's text indexes
# the CJK characters of a vacancy as lexemes: the second column of the index ix_vacancy_open_search (jobs_0012),
# which the planner uses only for this very expression
CHARACTERS: ColumnElement[Any] = literal_column(
    "array_to_tsvector(string_to_array("
    "translate(vacancy.search_tokens, ' 0123456789abcdefghijklmnopqrstuvwxyz', ''), NULL))"
)
# A filter as the statements hold it: its kind and the names of its values (the values are the plan's)
Filter = tuple[str, tuple[str, ...]]


@dataclass(frozen=True)
class SearchPlan:
    """A search as statements whose SQL depends only on ``shape`` and whose values are ``values``, by name.

    The SQL of a shape can be compiled once and run again with the values of any search of the same shape
    (:mod:`labornet.jobs.adapters.reads`): a shape says which filters a search has, how many values each takes,
    its sort and whether it has a cursor, never a value.

    * ``page``: up to ``total_cap + 1`` matches with their sort keys, their count and, from them, the page (the
      count is the first column of every row);
    * ``count``: the count alone, for a page without rows;
    * ``walk``: a page of a query with more matches than the cap: the sort-order index read from the cursor on,
      keeping the rows that match; matches being plentiful, a page is found within a few thousand rows.
      PostgreSQL's planner is told so (``enable_bitmapscan`` and ``enable_seqscan`` off): it multiplies the
      frequencies of a query's bigrams as if they were independent, but ``护理`` and ``理员`` occur together: it
      expects a handful of matches where there are thousands, collects and sorts every one of them (or reads the
      whole table), and a page takes 100-400 ms instead of 1. The count just taken is a measurement, not a guess.
    """

    params: SearchParams
    dialect: str
    total_cap: int
    matching: tuple[Filter, ...]  # the page's and the count's filters (faceted on PostgreSQL)
    walking: tuple[Filter, ...]  # the walk's: every filter a column condition
    values: dict[str, Any]

    @classmethod
    def of(
        cls, params: SearchParams, dialect: str, total_cap: int = TOTAL_CAP, now: datetime | None = None
    ) -> SearchPlan:
        """The plan of ``params`` on ``dialect``; ``InvalidCursor`` when the cursor cannot be read."""
        now = now or datetime.now(UTC)
        values: dict[str, Any] = {"cap": total_cap + 1, "limit": params.limit + 1}
        if params.cursor is not None:
            values["after_key"], values["after_id"] = _decode_cursor(params.cursor, params.sort)
        matching = _filters(params, dialect, dialect == "postgresql", now, "m", values)
        walking = _filters(params, dialect, False, now, "w", values)
        return cls(params, dialect, total_cap, matching, walking, values)

    @property
    def shape(self) -> tuple[Any, ...]:
        kinds = tuple((kind, len(names)) for kind, names in self.matching)
        walk_kinds = tuple((kind, len(names)) for kind, names in self.walking)
        return self.dialect, self.params.sort, self.params.cursor is not None, kinds, walk_kinds

    def statement(self, name: Statement) -> Select[Any]:
        """The statement ``name`` of this plan, its values as named bind parameters."""
        sort_column = SORT_COLUMNS[self.params.sort]
        if name == "walk":
            page = self._after_cursor(select(*RESULT_COLUMNS), sort_column, vacancy.c.id)
            page = page.where(*(_condition(f, self.dialect) for f in self.walking))
            return page.order_by(sort_column.desc(), vacancy.c.id.desc()).limit(bindparam("limit", type_=Integer))
        matches = (
            select(vacancy.c.id, sort_column.label("key"))
            .where(*(_condition(f, self.dialect) for f in self.matching))
            .limit(bindparam("cap", type_=Integer))
            .cte("matches")
        )
        counted = select(func.count()).select_from(matches)
        if name == "count":
            return counted
        chosen = (
            self._after_cursor(select(matches.c.id), matches.c.key, matches.c.id)
            .order_by(matches.c.key.desc(), matches.c.id.desc())
            .limit(bindparam("limit", type_=Integer))
            .subquery("chosen")
        )
        return (
            select(counted.scalar_subquery().label("total"), *RESULT_COLUMNS)
            .select_from(vacancy.join(chosen, chosen.c.id == vacancy.c.id))
            .order_by(sort_column.desc(), vacancy.c.id.desc())
        )

    def _after_cursor(self, query: Select[Any], key: Any, id_: Any) -> Select[Any]:
        """Rows after the cursor's in the (key, id) descending order; all rows when there is no cursor."""
        if self.params.cursor is None:
            return query
        sort_type = SORT_COLUMNS[self.params.sort].type
        after = tuple_(bindparam("after_key", type_=sort_type), bindparam("after_id", type_=String))
        return query.where(tuple_(key, id_) < after)

    def page(self, rows: list[dict[str, Any]], total: int) -> SearchPage:
        """The answer from a page's rows (up to ``limit + 1``: one more says there are more) and the count."""
        limit = self.params.limit
        return self.shown_page([_plain(row) for row in rows[:limit]], len(rows) > limit, total)

    def shown_page(self, items: list[dict[str, Any]], more: bool, total: int) -> SearchPage:
        """The answer from a page's items (``limit`` at most; ``more``: there are more after them) and the count. The
        items may be stored rows or vacancies as the API shows them (their ``posted_at`` written as text)."""
        next_cursor = _encode_cursor(self.params.sort, items[-1]) if more else None
        cap = self.total_cap
        return SearchPage(items=items, next_cursor=next_cursor, total=min(total, cap), total_exact=total <= cap)


def _filters(
    params: SearchParams, dialect: str, faceted: bool, now: datetime, prefix: str, values: dict[str, Any]
) -> tuple[Filter, ...]:
    """Every filter of ``params``, its values put in ``values`` under names starting with ``prefix``.

    Every token of the text must match: bigrams and words through the index, lone CJK characters through LIKE.
    ``faceted`` (PostgreSQL): the words and every equality or prefix filter become one lookup in the text index,
    their facet lexemes (migrations jobs_0004, jobs_0005) joined to the words, and a recent "posted since" as the
    weeks it spans (``now`` ends them); the ranges also stay column conditions (a week or a salary is coarser than
    the filter), checked on the rows found; in a search of open vacancies lone CJK characters are looked up in the
    same index (its second column, jobs_0012).
    Otherwise every filter is a column condition: SQLite, and the walk along a sort-order index, which needs the
    province and status as columns."""
    filters: list[Filter] = []

    def add(kind: str, *given: Any) -> None:
        names = tuple(f"{prefix}{len(filters)}_{n}" for n in range(len(given)))
        values.update(zip(names, given, strict=True))
        filters.append((kind, names))

    query_tokens = tokens(params.q) if params.q is not None else []
    indexed = list(dict.fromkeys(t for t in query_tokens if not (len(t) == 1 and is_cjk(t))))
    singles = list(dict.fromkeys(t for t in query_tokens if len(t) == 1 and is_cjk(t)))
    characters_indexed = faceted and params.statuses == OPEN  # the text index of open vacancies (jobs_0012)
    if not characters_indexed:
        for single in singles:
            add("contains", _like_escape(single))
    if dialect == "sqlite":
        if indexed:
            add("fts", " ".join(_fts5_term(t) for t in indexed))
    else:
        if characters_indexed and singles:
            add("characters", " & ".join(_lexeme(single) for single in singles))
        facets = _facets(params, now) if faceted else []
        words = " & ".join(_tsquery_term(t) for t in indexed)
        if indexed and facets:
            add("words_and_facets", words, " & ".join(facets))
        elif indexed:
            add("words", words)
        elif facets:
            add("facets", " & ".join(facets))
    if faceted:
        if params.statuses == OPEN:  # the text index of open vacancies alone (jobs_0005)
            add("status", "open")
    else:
        add("status" if len(params.statuses) == 1 else "statuses", *params.statuses)
        if params.province is not None:
            add("province", params.province)
        if params.division_code is not None:
            add("code_prefix_division", *_prefix_range(significant_prefix(params.division_code)))
        if params.occupation_code is not None:
            add("code_prefix_occupation", *_prefix_range(params.occupation_code))
        if params.employment_type is not None:
            add("employment_type", params.employment_type)
        if params.target_group is not None:
            add("target_group", [params.target_group] if dialect == "postgresql" else params.target_group)
    # beside a lookup in the text index a salary is checked on the rows it finds, never read from a salary index: the
    # planner intersects the two (400,000 entries of "salary_max >= 12000" read for 24,000 welders: 95 ms, not 10)
    checked = "_checked" if faceted and any(kind in LOOKUPS for kind, _ in filters) else ""
    if params.salary_min is not None:
        add("salary_min" + checked, params.salary_min)
    if params.salary_max is not None:
        add("salary_max" + checked, params.salary_max)
    if params.posted_since is not None:
        add("posted_since", as_utc(params.posted_since))
    return tuple(filters)


def _condition(given: Filter, dialect: str) -> ColumnElement[bool]:
    """A filter as a condition on ``vacancy``, its values as bind parameters."""
    kind, names = given
    v = vacancy.c
    binds: list[BindParameter[Any]] = [bindparam(name) for name in names]
    if kind == "contains":
        return v.search_tokens.contains(bindparam(names[0], type_=String), escape="/")
    if kind == "fts":
        fts_rows: Select[tuple[int]] = select(literal_column("rowid")).select_from(table("vacancy_search"))
        match = fts_rows.where(literal_column("vacancy_search").match(bindparam(names[0], type_=String)))
        return literal_column("vacancy.rowid").in_(match)
    if kind == "characters":
        return CHARACTERS.bool_op("@@")(cast(bindparam(names[0], type_=String), TSQUERY))
    if kind in ("words", "facets", "words_and_facets"):
        parts: list[ColumnElement[Any]] = []
        if kind != "facets":
            parts.append(func.to_tsquery(literal_column("'simple'"), bindparam(names[0], type_=String)))
        if kind != "words":  # a facet is a literal lexeme: cast to a tsquery, never parsed, so its # stays
            parts.append(cast(bindparam(names[-1], type_=String), TSQUERY))
        tsquery = parts[0] if len(parts) == 1 else parts[0].op("&&")(parts[1])
        return literal_column("vacancy.search_vector").bool_op("@@")(tsquery)
    if kind == "status":
        return v.status == binds[0]
    if kind == "statuses":
        return v.status.in_(binds)
    if kind == "province":
        return v.owner_province == binds[0]
    if kind.startswith("code_prefix_"):
        column = v.division_code if kind == "code_prefix_division" else v.occupation_code
        return and_(column >= binds[0], *([column < binds[1]] if len(binds) > 1 else []))
    if kind == "employment_type":
        return v.employment_type == binds[0]
    if kind == "target_group":
        if dialect == "sqlite":
            element = func.json_each(v.target_groups).table_valued("value")
            return select(element.c.value).where(element.c.value == binds[0]).exists()
        return cast(v.target_groups, JSONB).contains(bindparam(names[0], type_=JSONB))
    if kind == "salary_min":
        return v.salary_max >= binds[0]
    if kind == "salary_max":
        return v.salary_min <= binds[0]
    if kind == "salary_min_checked":  # an expression no index holds: a condition on the rows found
        return v.salary_max + literal_column("0") >= binds[0]
    if kind == "salary_max_checked":
        return v.salary_min + literal_column("0") <= binds[0]
    if kind == "posted_since":
        return v.posted_at >= bindparam(names[0], type_=v.posted_at.type)
    raise ValueError(f"unknown filter {kind}")


@asynccontextmanager
async def _planner(session: AsyncSession, **settings: str) -> AsyncIterator[None]:
    """PostgreSQL settings for the statements inside only: set for the transaction (``set_config(…, true)``) and
    given back their earlier values after, so that a caller running more statements in the same transaction —
    several searches, say — gets none of them. One round trip each way; nothing on SQLite."""
    if session.get_bind().dialect.name != "postgresql":
        yield
        return
    previous = await _set_config(session, settings)
    try:
        yield
    finally:
        await _set_config(session, previous)


async def _set_config(session: AsyncSession, settings: dict[str, str]) -> dict[str, str]:
    """Set ``settings`` for the transaction; return the values they had (read before anything is set)."""
    names = list(settings)
    before = ", ".join(f"current_setting(:name_{n}) AS before_{n}" for n in range(len(names)))
    setting = ", ".join(f"set_config(:name_{n}, :value_{n}, true)" for n in range(len(names)))
    values: dict[str, str] = {}
    for n, name in enumerate(names):
        values[f"name_{n}"], values[f"value_{n}"] = name, settings[name]
    # the CTE is read before the outer select list sets anything
    statement = text(f"WITH previous AS MATERIALIZED (SELECT {before}) SELECT previous.*, {setting} FROM previous")
    row = (await session.execute(statement, values)).one()
    return {name: row[n] for n, name in enumerate(names)}


def _facets(params: SearchParams, now: datetime) -> list[str]:
    """The facet lexemes of ``params``' filters, each a tsquery operand: all must hold (one status of several)."""
    statuses = [_lexeme(f"#s{status}") for status in params.statuses]
    facets = (
        [] if params.statuses == OPEN else [statuses[0] if len(statuses) == 1 else "(" + " | ".join(statuses) + ")"]
    )
    wanted = (
        ("#p", params.province),
        ("#d", params.division_code and significant_prefix(params.division_code)),
        ("#o", params.occupation_code),
        ("#e", params.employment_type),
        ("#g", params.target_group),
    )
    facets.extend(_lexeme(prefix + value) for prefix, value in wanted if value is not None)
    if params.posted_since is not None:
        weeks = _weeks_since(params.posted_since, now)
        if 0 < len(weeks) <= MAX_WEEK_FACETS:  # none: posted since a time still to come, the column says
            facets.append("(" + " | ".join(_lexeme(f"#t{week}") for week in weeks) + ")")
    return facets


WEEK_S = 7 * 24 * 3600
MAX_WEEK_FACETS = 8  # a longer "posted since" is most of the replica: checked by column only


def _weeks_since(since: datetime, now: datetime) -> range:
    """The posting weeks (``#t<n>``: whole weeks since 1970-01-01 UTC, jobs_0005) from ``since`` to ``now``, and the
    week after, for a partner whose clock runs a little ahead."""
    return range(int(as_utc(since).timestamp() // WEEK_S), int(now.timestamp() // WEEK_S) + 2)


def _lexeme(value: str) -> str:
    """A literal tsquery lexeme in single quotes (quotes and backslashes escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _fts5_term(token: str) -> str:
    """An FTS5 string (double quotes doubled); a Latin word becomes a prefix query."""
    quoted = '"' + token.replace('"', '""') + '"'
    return quoted if is_cjk(token) else quoted + "*"


def _tsquery_term(token: str) -> str:
    """A tsquery lexeme for a search token; a Latin word becomes a prefix query."""
    return _lexeme(token) if is_cjk(token) else _lexeme(token) + ":*"


def _prefix_range(prefix: str) -> tuple[str, ...]:
    """The codes starting with the digits ``prefix`` as a range [prefix, upper) both databases answer from a btree
    index; no upper bound for a prefix of nines. The columns hold digits only, so this is exact in any collation."""
    upper = prefix.rstrip("9")
    if not upper:
        return (prefix,)
    return prefix, upper[:-1] + str(int(upper[-1]) + 1)


def _like_escape(value: str) -> str:
    """``value`` for a LIKE with ``ESCAPE '/'``: its wildcards match themselves."""
    return value.replace("/", "//").replace("%", "/%").replace("_", "/_")


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """Times as aware UTC datetimes on both databases (SQLite gives them back naive)."""
    for name in ("posted_at", "updated_at"):
        row[name] = as_utc(row[name])
    return row


def _encode_cursor(sort: Sort, last: dict[str, Any]) -> str:
    if sort != "newest":
        return encode_sort_cursor(sort, last["salary_max"], last["id"])
    posted_at = last["posted_at"]
    return encode_sort_cursor(sort, parse_time(posted_at) if isinstance(posted_at, str) else posted_at, last["id"])


def _decode_cursor(cursor: str, sort: Sort) -> tuple[datetime | int, str]:
    return decode_sort_cursor(cursor, sort, SORTS)

"""Vacancy search against real databases (SQLite FTS5, PostgreSQL tsvector + GIN) migrated to head."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import itertools
import json
import random
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from alembic import command
from prometheus_client import REGISTRY
from sqlalchemy import delete, insert, text, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from labornet.jobs.adapters.search import SEARCH_SETTINGS, SearchPage, SearchParams, SearchPlan, search_vacancies
from labornet.jobs.adapters.tables import vacancy
from labornet.jobs.domain.text import document, is_cjk
from labornet.jobs.domain.text import tokens as text_tokens
from labornet.jobs.domain.vacancy import TargetGroup
from labornet.jobs.service_layer.vacancies import refresh_gauges
from labornet.shared.db import create_engine, readonly_sessionmaker, sessionmaker
from labornet.shared.migrations import alembic_config, upgrade
from labornet.shared.paging import InvalidCursor

MIGRATIONS = "labornet.jobs:migrations"
NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def make_vacancy(number: int, title: str, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": f"510000-V-{number:06d}",
        "owner_province": "510000",
        "employer_name": "成都锦江餐饮有限公司",
        "employer_credit_code": "91510100MA61XXXX0X",
        "title": title,
        "description": "",
        "occupation_code": "9329",
        "occupation_name": "制造业普工",
        "division_code": "510104",
        "city": "成都",
        "headcount": 3,
        "salary_min": 5000,
        "salary_max": 8000,
        "employment_type": "full-time",
        "target_groups": [],
        "skills": [],
        "brand_id": None,
        "contact": "028-12345678",
        "posted_at": NOW - timedelta(hours=number),
        "closing_date": date(2026, 6, 30),
        "status": "open",
        "version": 1,
        "updated_at": NOW,
    }
    row.update(fields)
    row["search_tokens"] = tokens_of(row)
    return row


def tokens_of(row: dict[str, Any]) -> str:
    parts = ["title", "description", "employer_name", "occupation_name", "city"]
    return document([*(row[p] for p in parts), " ".join(row["skills"])])


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await upgrade(engine, MIGRATIONS)
    yield engine
    await engine.dispose()


async def add(engine: AsyncEngine, *rows: dict[str, Any]) -> None:
    async with sessionmaker(engine)() as session, session.begin():
        await session.execute(insert(vacancy), list(rows))


async def search(engine: AsyncEngine, **params: Any) -> SearchPage:
    async with readonly_sessionmaker(engine)() as session:
        return await search_vacancies(session, SearchParams(**params))


async def titles(engine: AsyncEngine, **params: Any) -> list[str]:
    return [item["title"] for item in (await search(engine, limit=100, **params)).items]


async def ids(engine: AsyncEngine, **params: Any) -> set[str]:
    return {item["id"] for item in (await search(engine, limit=100, **params)).items}


async def all_pages(engine: AsyncEngine, cursor: str | None = None, **params: Any) -> list[SearchPage]:
    pages = [await search(engine, cursor=cursor, **params)]
    while pages[-1].next_cursor is not None:
        pages.append(await search(engine, cursor=pages[-1].next_cursor, **params))
        assert len(pages) < 100, "paging does not end"
    return pages


# --- text -------------------------------------------------------------------------------------------------


async def test_a_two_character_word_finds_longer_chinese_titles(engine: AsyncEngine) -> None:
    await add(
        engine,
        make_vacancy(1, "川菜厨师"),
        make_vacancy(2, "焊工"),
        make_vacancy(3, "餐厅服务员", description="协助厨师备菜"),
        make_vacancy(4, "厨房帮工"),
    )
    assert set(await titles(engine, q="厨师")) == {"川菜厨师", "餐厅服务员"}
    assert await titles(engine, q="川菜厨师") == ["川菜厨师"]
    assert await titles(engine, q="焊工") == ["焊工"]
    assert await titles(engine, q="面点师") == []


async def test_a_latin_word_finds_english_titles_as_a_prefix(engine: AsyncEngine) -> None:
    await add(
        engine,
        make_vacancy(1, "Sichuan chef 川菜厨师"),
        make_vacancy(2, "Pastry chefs wanted"),
        make_vacancy(3, "Welder 焊工"),
        make_vacancy(4, "Kitchen helper", skills=["Chef knife"]),
    )
    assert set(await titles(engine, q="chef")) == {"Sichuan chef 川菜厨师", "Pastry chefs wanted", "Kitchen helper"}
    assert await titles(engine, q="SICHUAN Chef") == ["Sichuan chef 川菜厨师"]
    assert await titles(engine, q="welder") == ["Welder 焊工"]
    assert await titles(engine, q="chefs welder") == []


async def test_every_token_of_the_query_must_match(engine: AsyncEngine) -> None:
    await add(
        engine,
        make_vacancy(1, "川菜厨师", city="成都"),
        make_vacancy(2, "粤菜厨师", city="广州", employer_name="广州酒家"),
        make_vacancy(3, "成都焊工", city="成都"),
    )
    assert await titles(engine, q="成都 厨师") == ["川菜厨师"]
    assert await titles(engine, q="厨师 welder") == []
    assert set(await titles(engine, q="  ")) == {"川菜厨师", "粤菜厨师", "成都焊工"}


async def test_employer_city_and_skills_are_searchable(engine: AsyncEngine) -> None:
    await add(
        engine,
        make_vacancy(1, "保安", employer_name="重庆安保服务公司", city="重庆", skills=["消防证"]),
        make_vacancy(2, "保洁员"),
    )
    assert await titles(engine, q="安保") == ["保安"]
    assert await titles(engine, q="重庆") == ["保安"]
    assert await titles(engine, q="消防") == ["保安"]


async def test_a_single_chinese_character_is_found_anywhere_in_a_word(engine: AsyncEngine) -> None:
    """A lone character has no bigram: PostgreSQL finds it in its index of characters (jobs_0012), SQLite by LIKE."""
    await add(
        engine,
        make_vacancy(1, "川菜厨师"),
        make_vacancy(2, "焊工", description="大厨房"),
        make_vacancy(3, "电工"),
        make_vacancy(4, "鱼 虾", employer_name="水产"),  # runs of one character
    )
    assert set(await titles(engine, q="厨")) == {"川菜厨师", "焊工"}
    assert await titles(engine, q="师") == ["川菜厨师"]  # the last character of a word
    assert await titles(engine, q="焊") == ["焊工"]
    assert await titles(engine, q="电 工") == ["电工"]
    assert await titles(engine, q="虾") == ["鱼 虾"]
    assert await titles(engine, q="鱼 水") == ["鱼 虾"]  # two characters apart: both must be in the vacancy
    assert await titles(engine, q="鱼 厨") == []
    assert await titles(engine, q="鳄") == []
    assert await titles(engine, q="厨", province="330000") == []
    async with engine.begin() as connection:  # the lexemes follow a change of text
        await connection.execute(
            update(vacancy)
            .where(vacancy.c.id == "510000-V-000001")
            .values(title="货车司机", search_tokens=tokens_of(make_vacancy(1, "货车司机")))
        )
    assert await titles(engine, q="厨") == ["焊工"]
    assert await titles(engine, q="车") == ["货车司机"]


@contextlib.asynccontextmanager
async def stored_before(database_url: str, revision: str, *rows: dict[str, Any]) -> AsyncIterator[AsyncEngine]:
    """A database whose ``rows`` were stored at ``revision``, then migrated to head."""
    engine = create_engine(database_url)
    try:
        await upgrade(engine, MIGRATIONS, revision)
        await add(engine, *rows)
        await upgrade(engine, MIGRATIONS)
        yield engine
    finally:
        await engine.dispose()


async def test_single_characters_of_vacancies_stored_before_their_migration_are_found(database_url: str) -> None:
    rows = make_vacancy(1, "川菜厨师"), make_vacancy(2, "焊工")
    async with stored_before(database_url, "jobs_0011", *rows) as engine:
        assert await titles(engine, q="师") == ["川菜厨师"]
        assert await titles(engine, q="焊", province="510000") == ["焊工"]
        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: command.downgrade(alembic_config(MIGRATIONS, sync), "jobs_0011"))
            if connection.dialect.name == "postgresql":
                names = "SELECT indexname FROM pg_indexes WHERE indexname LIKE 'ix_vacancy_open_search%'"
                assert (await connection.execute(text(names))).scalars().all() == ["ix_vacancy_open_search_vector"]
        await upgrade(engine, MIGRATIONS)
        assert await titles(engine, q="厨", province="510000") == ["川菜厨师"]


async def test_text_search_follows_updates_and_deletes(engine: AsyncEngine) -> None:
    await add(engine, make_vacancy(1, "川菜厨师"), make_vacancy(2, "焊工"))
    changed = make_vacancy(1, "货车司机")
    async with sessionmaker(engine)() as session, session.begin():
        await session.execute(
            update(vacancy)
            .where(vacancy.c.id == changed["id"])
            .values(title=changed["title"], search_tokens=changed["search_tokens"])
        )
        await session.execute(update(vacancy).where(vacancy.c.id == "510000-V-000002").values(status="filled"))
    assert await titles(engine, q="厨师") == []
    assert await titles(engine, q="司机") == ["货车司机"]
    assert await titles(engine, q="焊工", statuses=("filled",)) == ["焊工"]

    async with sessionmaker(engine)() as session, session.begin():
        await session.execute(delete(vacancy).where(vacancy.c.id == changed["id"]))
    assert await titles(engine, q="司机") == []
    assert await titles(engine, q="焊工", statuses=("filled",)) == ["焊工"]


async def test_the_index_covers_vacancies_stored_before_the_migration(database_url: str) -> None:
    rows = make_vacancy(1, "川菜厨师 Sichuan chef"), make_vacancy(2, "焊工")
    async with stored_before(database_url, "jobs_0002", *rows) as engine:
        assert await titles(engine, q="厨师") == ["川菜厨师 Sichuan chef"]
        assert await titles(engine, q="chef") == ["川菜厨师 Sichuan chef"]


async def test_the_facet_migration_goes_down_and_up_again(database_url: str) -> None:
    engine = create_engine(database_url)
    seasonal_veterans = {
        "q": "焊工",
        "employment_type": "seasonal",
        "target_group": "veterans",
        "occupation_code": "72",
    }
    try:
        await upgrade(engine, MIGRATIONS)
        await add(
            engine,
            make_vacancy(1, "焊工", employment_type="seasonal", target_groups=["veterans"], occupation_code="7212"),
            make_vacancy(2, "焊工"),
        )
        assert await ids(engine, **seasonal_veterans) == {"510000-V-000001"}
        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: command.downgrade(alembic_config(MIGRATIONS, sync), "jobs_0004"))
        # the columns still answer (today's search reads the vacancy's hired count of jobs_0008: added by hand)
        async with engine.begin() as connection:
            await connection.execute(text("ALTER TABLE vacancy ADD COLUMN hired INTEGER NOT NULL DEFAULT 0"))
        assert await ids(engine, q="焊工") == {"510000-V-000001", "510000-V-000002"}
        async with engine.begin() as connection:
            await connection.execute(text("ALTER TABLE vacancy DROP COLUMN hired"))
        await upgrade(engine, MIGRATIONS)
        assert await ids(engine, **seasonal_veterans) == {"510000-V-000001"}
    finally:
        await engine.dispose()


# --- filters ----------------------------------------------------------------------------------------------


async def test_owner_province_filter(engine: AsyncEngine) -> None:
    await add(
        engine,
        make_vacancy(1, "川菜厨师"),
        make_vacancy(2, "火锅厨师", id="500000-V-000002", owner_province="500000", division_code="500103"),
    )
    assert await titles(engine, q="厨师", province="500000") == ["火锅厨师"]
    assert await titles(engine, province="510000") == ["川菜厨师"]
    assert await titles(engine, province="330000") == []


async def test_division_filter_matches_the_division_and_everything_inside_it(engine: AsyncEngine) -> None:
    await add(
        engine,
        make_vacancy(1, "锦江区", division_code="510104"),
        make_vacancy(2, "成都市", division_code="510100"),
        make_vacancy(3, "自贡市", division_code="510300"),
        make_vacancy(4, "渝中区", division_code="500103"),
        make_vacancy(5, "都江堰", division_code="510181"),
    )
    assert set(await titles(engine, division_code="510000")) == {"锦江区", "成都市", "自贡市", "都江堰"}
    assert set(await titles(engine, division_code="510100")) == {"锦江区", "成都市", "都江堰"}
    assert await titles(engine, division_code="510104") == ["锦江区"]
    assert await titles(engine, division_code="510300") == ["自贡市"]
    assert await titles(engine, division_code="500000") == ["渝中区"]
    assert await titles(engine, division_code="520000") == []


async def test_occupation_filter_includes_sub_groups(engine: AsyncEngine) -> None:
    await add(
        engine,
        make_vacancy(1, "厨师", occupation_code="5120"),
        make_vacancy(2, "服务员", occupation_code="5131"),
        make_vacancy(3, "保安", occupation_code="5414"),
        make_vacancy(4, "焊工", occupation_code="7212"),
        make_vacancy(5, "快递员", occupation_code="9621"),
        make_vacancy(6, "服务人员", occupation_code="5"),
    )
    assert set(await titles(engine, occupation_code="5")) == {"厨师", "服务员", "保安", "服务人员"}
    assert set(await titles(engine, occupation_code="51")) == {"厨师", "服务员"}
    assert await titles(engine, occupation_code="5120") == ["厨师"]
    assert await titles(engine, occupation_code="9") == ["快递员"]
    assert await titles(engine, occupation_code="8") == []


@pytest.mark.parametrize(
    ("wanted", "found"),
    [
        ({"salary_min": 8000}, True),  # touches the top of 5000-8000
        ({"salary_min": 8001}, False),
        ({"salary_max": 5000}, True),  # touches the bottom
        ({"salary_max": 4999}, False),
        ({"salary_min": 6000, "salary_max": 7000}, True),  # inside
        ({"salary_min": 3000, "salary_max": 20000}, True),  # around
        ({"salary_min": 3000, "salary_max": 4999}, False),  # below
        ({"salary_min": 8001, "salary_max": 9000}, False),  # above
        ({"salary_min": 7999, "salary_max": 12000}, True),  # overlaps the top
    ],
)
async def test_salary_ranges_must_overlap(engine: AsyncEngine, wanted: dict[str, int], found: bool) -> None:
    await add(engine, make_vacancy(1, "普工", salary_min=5000, salary_max=8000))
    assert await titles(engine, **wanted) == (["普工"] if found else [])


async def test_employment_type_target_group_and_posted_since_filters(engine: AsyncEngine) -> None:
    await add(
        engine,
        make_vacancy(1, "A", employment_type="seasonal", target_groups=["migrant-workers", "veterans"]),
        make_vacancy(2, "B", target_groups=["college-graduates"], posted_at=NOW - timedelta(days=10)),
        make_vacancy(3, "C", target_groups=[], posted_at=NOW - timedelta(days=3)),
    )
    assert await titles(engine, employment_type="seasonal") == ["A"]
    assert await titles(engine, employment_type="full-time") == ["C", "B"]
    assert await titles(engine, target_group="veterans") == ["A"]
    assert await titles(engine, target_group="migrant-workers") == ["A"]
    assert await titles(engine, target_group="college-graduates") == ["B"]
    assert await titles(engine, target_group="graduates") == []
    assert await titles(engine, posted_since=NOW - timedelta(days=3)) == ["A", "C"]
    shanghai = NOW.astimezone(ZoneInfo("Asia/Shanghai"))
    assert await titles(engine, posted_since=shanghai - timedelta(days=3, seconds=-1)) == ["A"]


async def test_only_open_vacancies_unless_other_statuses_are_asked_for(engine: AsyncEngine) -> None:
    await add(
        engine,
        make_vacancy(1, "open one"),
        make_vacancy(2, "filled one", status="filled"),
        make_vacancy(3, "expired one", status="expired"),
    )
    assert await titles(engine) == ["open one"]
    assert await titles(engine, statuses=("filled", "expired")) == ["filled one", "expired one"]
    assert (await search(engine, statuses=("open", "filled", "expired", "withdrawn"))).total == 3


async def test_filters_combine(engine: AsyncEngine) -> None:
    await add(
        engine,
        make_vacancy(1, "川菜厨师", occupation_code="5120", salary_min=6000, salary_max=9000),
        make_vacancy(2, "川菜厨师", occupation_code="5120", salary_min=3000, salary_max=4000),
        make_vacancy(3, "川菜厨师", occupation_code="5120", division_code="510300", salary_min=6000, salary_max=9000),
        make_vacancy(4, "川菜厨师", occupation_code="5120", salary_min=6000, salary_max=9000, status="filled"),
        make_vacancy(5, "焊工", occupation_code="7212", salary_min=6000, salary_max=9000),
    )
    found = await ids(engine, q="厨师", division_code="510100", occupation_code="5", salary_min=5000)
    assert found == {"510000-V-000001"}


# --- order, pages, totals ---------------------------------------------------------------------------------


async def test_newest_first_and_highest_salary_first(engine: AsyncEngine) -> None:
    await add(
        engine,
        make_vacancy(1, "new", salary_max=6000, posted_at=NOW),
        make_vacancy(2, "old", salary_max=9000, posted_at=NOW - timedelta(days=2)),
        make_vacancy(3, "middle", salary_max=7000, posted_at=NOW - timedelta(days=1)),
        make_vacancy(4, "middle too", salary_max=9000, posted_at=NOW - timedelta(days=1)),
    )
    assert await titles(engine) == ["new", "middle too", "middle", "old"]  # same time: higher id first
    assert await titles(engine, sort="salary") == ["middle too", "old", "middle", "new"]
    item = (await search(engine, limit=1)).items[0]
    assert item["posted_at"] == NOW and item["posted_at"].utcoffset() == timedelta(0)
    assert "search_tokens" not in item and item["target_groups"] == []


@pytest.mark.parametrize("sort", ["newest", "salary"])
async def test_pages_neither_skip_nor_repeat_rows_that_share_a_sort_key(engine: AsyncEngine, sort: str) -> None:
    # 5 posting times and 4 salaries for 47 vacancies: most rows share their sort key with others
    rows = [
        make_vacancy(n, f"厨师 {n}", posted_at=NOW - timedelta(hours=n % 5), salary_max=8000 + 1000 * (n % 4))
        for n in range(47)
    ]
    rows += [make_vacancy(100 + n, f"焊工 {n}") for n in range(5)]
    await add(engine, *rows)

    pages = await all_pages(engine, q="厨师", sort=sort, limit=10)
    assert [len(p.items) for p in pages] == [10, 10, 10, 10, 7]
    assert {p.total for p in pages} == {47}
    paged = [item["id"] for p in pages for item in p.items]
    assert len(paged) == len(set(paged)) == 47
    key = "posted_at" if sort == "newest" else "salary_max"
    everything = sorted(rows[:47], key=lambda r: (r[key], r["id"]), reverse=True)
    assert paged == [r["id"] for r in everything]


async def test_paging_is_stable_while_vacancies_arrive(engine: AsyncEngine) -> None:
    await add(engine, *[make_vacancy(n, "焊工", posted_at=NOW - timedelta(minutes=n % 3)) for n in range(30)])
    first = await search(engine, q="焊工", limit=10)
    await add(engine, make_vacancy(500, "焊工", posted_at=NOW + timedelta(days=1)))
    rest = await all_pages(engine, q="焊工", limit=10, cursor=first.next_cursor)
    seen = [i["id"] for i in first.items] + [i["id"] for p in rest for i in p.items]
    assert len(seen) == len(set(seen)) == 30
    assert rest[0].total == 31


async def test_total_counts_every_match_not_just_the_page(engine: AsyncEngine) -> None:
    await add(
        engine,
        *[make_vacancy(n, "电工", division_code="510104" if n % 2 else "510303") for n in range(25)],
        *[make_vacancy(100 + n, "焊工") for n in range(4)],
    )
    page = await search(engine, q="电工", limit=5)
    assert (len(page.items), page.total) == (5, 25)
    assert (await search(engine, q="电工", division_code="510300", limit=5)).total == 13
    assert (await search(engine, q="焊工", limit=5)).total == 4
    assert (await search(engine, q="焊工", limit=4)).next_cursor is None
    assert (await search(engine, q="司机")).total == 0
    assert page.total_exact


async def test_the_count_stops_at_the_cap_and_says_so(engine: AsyncEngine) -> None:
    await add(engine, *[make_vacancy(n, "电工") for n in range(12)])
    async with readonly_sessionmaker(engine)() as session:
        capped = await search_vacancies(session, SearchParams(q="电工", limit=5), total_cap=10)
        exact = await search_vacancies(session, SearchParams(q="电工", limit=5), total_cap=12)
    assert (capped.total, capped.total_exact, len(capped.items)) == (10, False, 5)
    assert (exact.total, exact.total_exact) == (12, True)


def _cursor(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor!",
        "bm90IGpzb24",  # base64 of "not json"
        _cursor(["newest", "2026-03-01T00:00:00+00:00", "x"]),
        _cursor({"sort": "newest", "key": "yesterday", "id": "510000-V-000001"}),
        _cursor({"sort": "newest", "key": "2026-03-01T00:00:00+00:00", "id": 7}),
        _cursor({"sort": "salary", "key": 8000, "id": "510000-V-000001"}),  # made for the other sort
        _cursor({"sort": "newest", "key": "2026-03-01T00:00:00+00:00"}),
    ],
)
async def test_an_invalid_cursor_is_refused_with_a_clear_message(engine: AsyncEngine, cursor: str) -> None:
    await add(engine, make_vacancy(1, "焊工"))
    with pytest.raises(InvalidCursor, match="start again without a cursor"):
        await search(engine, cursor=cursor)


async def test_a_cursor_for_the_other_sort_is_refused(engine: AsyncEngine) -> None:
    await add(engine, *[make_vacancy(n, "焊工") for n in range(3)])
    cursor = (await search(engine, sort="salary", limit=1)).next_cursor
    assert cursor is not None
    with pytest.raises(InvalidCursor, match="made for sort 'salary', not 'newest'"):
        await search(engine, cursor=cursor)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": 0}, "limit should be between 1 and 100"),
        ({"limit": 101}, "limit should be between 1 and 100"),
        ({"sort": "oldest"}, "sort should be one of newest, salary"),
        ({"statuses": ()}, "statuses should name at least one status"),
        ({"division_code": "5101"}, "division code should be 6 digits"),
        ({"occupation_code": "51%"}, "occupation code should be 1 to 10 digits"),
        ({"salary_min": 9000, "salary_max": 8000}, "salary_min 9000 is greater than salary_max 8000"),
    ],
)
def test_impossible_parameters_are_refused(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SearchParams(**params)


async def test_the_vacancy_gauge_reads_zero_once_a_status_empties(engine: AsyncEngine) -> None:
    await add(engine, make_vacancy(1, "电工"), make_vacancy(2, "焊工"))
    async with readonly_sessionmaker(engine)() as session:
        await refresh_gauges(session)
    province = make_vacancy(1, "电工")["owner_province"]
    assert REGISTRY.get_sample_value("labornet_jobs_vacancies", {"owner_province": province, "state": "open"}) == 2
    async with engine.begin() as connection:
        await connection.execute(update(vacancy).values(status="filled"))
    async with readonly_sessionmaker(engine)() as session:
        await refresh_gauges(session)
    assert REGISTRY.get_sample_value("labornet_jobs_vacancies", {"owner_province": province, "state": "open"}) == 0
    assert REGISTRY.get_sample_value("labornet_jobs_vacancies", {"owner_province": province, "state": "filled"}) == 2


async def test_text_with_province_and_status_follows_changes_and_facets_never_match_user_text(
    engine: AsyncEngine,
) -> None:
    await add(
        engine,
        make_vacancy(1, "川菜厨师"),
        make_vacancy(2, "川菜厨师", owner_province="330000", division_code="330106"),
        make_vacancy(3, "粤菜厨师"),
        make_vacancy(4, "西餐厨师"),
    )
    sichuan = {"510000-V-000001", "510000-V-000003", "510000-V-000004"}
    assert await ids(engine, q="厨师", province="510000") == sichuan
    assert (await search(engine, q="厨师", province="510000", limit=1)).total == 3  # counted through the facets
    async with engine.begin() as connection:  # the index follows a status change
        await connection.execute(update(vacancy).where(vacancy.c.id != "510000-V-000001").values(status="filled"))
    assert await ids(engine, q="厨师", province="510000") == {"510000-V-000001"}
    assert await ids(engine, q="厨师", province="510000", statuses=("filled",)) == sichuan - {"510000-V-000001"}
    assert (await search(engine, q="厨师", province="510000", statuses=("filled",), limit=1)).total == 2
    assert (await search(engine, q="厨师", statuses=("filled",), limit=1)).total == 3
    for probe in ("#p510000", "p510000", "#sopen", "sopen", "510000"):
        assert await ids(engine, q=probe) == set(), probe


# --- both ways of fetching a page against a reference ------------------------------------------------------

REFERENCE_TITLES = ("川菜厨师", "Sichuan chef 川菜厨师", "焊工", "电焊工 welder", "货车司机", "护理员", "厨房帮工")
REFERENCE_PLACES = (("510000", "510104"), ("510000", "510303"), ("510000", "510100"), ("330000", "330106"))
REFERENCE_QUERIES = (None, "厨师", "chef", "焊工 welder", "司机", "川菜厨师", "厨", "护理员", "师", "焊 工", "员 chef")


def reference_rows(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for n in range(count):
        province, division = rng.choice(REFERENCE_PLACES)
        low = rng.randrange(3000, 12001, 1000)
        rows.append(
            make_vacancy(
                n,
                rng.choice(REFERENCE_TITLES),
                owner_province=province,
                division_code=division,
                occupation_code=rng.choice(("5120", "5131", "7212", "8332", "5321")),
                salary_min=low,
                salary_max=low + rng.choice((0, 1000, 3000)),  # equal salaries: ties broken by id
                employment_type=rng.choice(("full-time", "full-time", "part-time", "seasonal")),
                target_groups=rng.sample(["migrant-workers", "college-graduates", "veterans"], rng.randint(0, 2)),
                status=rng.choice(("open", "open", "open", "filled", "expired")),
                posted_at=NOW - timedelta(hours=rng.randrange(0, 2000)),
            )
        )
    return rows


def reference_search(rows: list[dict[str, Any]], params: SearchParams) -> list[str]:
    """The ids ``search_vacancies`` should give, in order, worked out in plain Python from the rows."""
    query = text_tokens(params.q) if params.q is not None else []

    def matches(row: dict[str, Any]) -> bool:
        words = row["search_tokens"].split()
        for token in query:
            if len(token) == 1 and is_cjk(token):
                found = token in row["search_tokens"]
            else:
                found = token in words if is_cjk(token) else any(w.startswith(token) for w in words)
            if not found:
                return False
        division = params.division_code
        significant = division.rstrip("0") if division is not None else None
        if significant is not None and len(significant) % 2:
            significant += "0"
        return (
            row["status"] in params.statuses
            and params.province in (None, row["owner_province"])
            and (significant is None or row["division_code"].startswith(significant))
            and (params.occupation_code is None or row["occupation_code"].startswith(params.occupation_code))
            and (params.salary_min is None or row["salary_max"] >= params.salary_min)
            and (params.salary_max is None or row["salary_min"] <= params.salary_max)
            and params.employment_type in (None, row["employment_type"])
            and (params.target_group is None or params.target_group in row["target_groups"])
            and (params.posted_since is None or row["posted_at"] >= params.posted_since)
        )

    key = "posted_at" if params.sort == "newest" else "salary_max"
    found = sorted((row for row in rows if matches(row)), key=lambda row: (row[key], row["id"]), reverse=True)
    return [row["id"] for row in found]


def reference_params(rng: random.Random) -> SearchParams:
    def maybe(*values: Any) -> Any:
        return rng.choice((None, *values)) if rng.random() < 0.4 else None

    low = maybe(5000, 9000)
    return SearchParams(
        q=rng.choice(REFERENCE_QUERIES),
        province=maybe("510000", "330000"),
        division_code=maybe("510000", "510100", "510104", "510300", "330106"),
        occupation_code=maybe("5", "51", "5120", "7212", "83"),
        salary_min=low,
        salary_max=maybe(8000, 12000) if low is None else low + 2000,
        employment_type=maybe("full-time", "seasonal"),
        target_group=maybe("migrant-workers", "veterans"),
        posted_since=maybe(NOW - timedelta(days=30), NOW - timedelta(days=3), NOW - timedelta(days=70), NOW),
        statuses=rng.choice((("open",), ("open",), ("filled", "expired"))),
        sort=rng.choice(("newest", "salary")),
        limit=rng.choice((3, 7, 20)),
    )


async def test_both_ways_of_fetching_a_page_agree_with_a_reference(engine: AsyncEngine) -> None:
    """Matches are either few (all taken through the text index with their facets, then sorted) or past the cap
    (the sort-order index walked with every filter as a column condition). Both must give the reference's
    answer, page by page, for random combinations of every filter; a cap of 5 sends most queries the second way."""
    rows = reference_rows(160, seed=3)
    await add(engine, *rows)
    rng = random.Random(11)
    walked = 0
    for _ in range(60):
        params = reference_params(rng)
        expected = reference_search(rows, params)
        for cap in (5, 1000):
            got: list[str] = []
            cursor = None
            async with readonly_sessionmaker(engine)() as session:
                while True:
                    page = await search_vacancies(
                        session, dataclasses.replace(params, cursor=cursor), total_cap=cap, now=NOW
                    )
                    assert (page.total, page.total_exact) == (min(len(expected), cap), len(expected) <= cap), params
                    got.extend(item["id"] for item in page.items)
                    if (cursor := page.next_cursor) is None:
                        break
            assert got == expected, (params, cap)
            walked += cap == 5 and len(expected) > 5
    assert walked >= 15  # the walk was really taken


async def test_searches_leave_the_transactions_planner_settings_as_they_found_them(engine: AsyncEngine) -> None:
    """Several searches in one transaction (paging in a loop, say): the walk switches bitmap and sequential scans
    off for its own statement only — left off, the next search's text lookup could not use its index at all."""
    await add(engine, *[make_vacancy(n, "电工") for n in range(12)], make_vacancy(99, "焊工"))
    settings = (
        "SELECT current_setting('enable_bitmapscan'), current_setting('enable_seqscan'), current_setting('jit'), "
        "current_setting('work_mem')"
    )
    async with readonly_sessionmaker(engine)() as session:
        before = (await session.execute(text(settings))).one() if is_postgresql(engine) else None
        walked = await search_vacancies(session, SearchParams(q="电工", limit=5), total_cap=10)
        assert (walked.total_exact, len(walked.items)) == (False, 5)
        if before is not None:
            assert (await session.execute(text(settings))).one() == before == ("on", "on", before[2], before[3])
            assert before[3] != SEARCH_SETTINGS["work_mem"]  # the search's own was set and given back
        welder = await search_vacancies(session, SearchParams(q="焊工"), total_cap=10)
        assert ([item["title"] for item in welder.items], welder.total) == (["焊工"], 1)


def is_postgresql(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"


async def test_a_lone_character_is_looked_up_in_the_text_index_of_open_vacancies(engine: AsyncEngine) -> None:
    """The expression searched must be the one indexed (jobs_0012), or PostgreSQL reads every candidate's text."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite finds a lone character with LIKE")
    await add(engine, make_vacancy(0, "川菜厨师"), *(make_vacancy(n, "焊工") for n in range(1, 2000)))
    async with engine.connect() as connection:  # the rows leave the index's pending list, the planner learns them
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text("VACUUM ANALYZE vacancy"))
    plan = SearchPlan.of(SearchParams(q="厨"), "postgresql")
    page = plan.statement("page").params(plan.values)
    statement = page.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
    async with engine.connect() as connection:  # a table this small is read whole unless the planner is told not to
        await connection.execute(text("SET enable_seqscan = off"))
        explained = "\n".join(row[0] for row in await connection.exec_driver_sql(f"EXPLAIN {statement}"))
    assert "ix_vacancy_open_search " in explained, explained
    assert await titles(engine, q="厨") == ["川菜厨师"]


@pytest.mark.parametrize(
    ("params", "checked"),
    [
        ({"q": "welder", "salary_min": 12000, "salary_max": 14000}, True),  # beside a text lookup: on the rows found
        ({"occupation_code": "72", "salary_min": 12000}, True),  # beside a facet lookup
        ({"salary_min": 12000, "salary_max": 14000}, False),  # alone: the salary index is the way in
        ({"q": "welder", "salary_min": 12000, "statuses": ("open", "filled")}, True),
    ],
)
def test_beside_a_text_lookup_a_salary_is_checked_on_the_rows_found_not_intersected(
    params: dict[str, Any], checked: bool
) -> None:
    """PostgreSQL intersected 24,000 welders of the text index with 417,000 entries of the salary index (95 ms)
    where checking the salary of the welders takes 10: beside a lookup the range is an expression no index holds."""
    plan = SearchPlan.of(SearchParams(**params), "postgresql")
    for name in ("page", "count"):
        sql = str(plan.statement(name).compile(dialect=postgresql.dialect()))
        assert ("salary_max + 0 >=" in sql) is checked, sql
        assert ("salary_max >=" in sql) is not checked, sql
    walk = str(plan.statement("walk").compile(dialect=postgresql.dialect()))  # the walk reads a sort-order index
    assert "+ 0" not in walk, walk


async def test_the_facets_of_one_expression_are_those_of_jobs_0005_for_every_shape_of_row(database_url: str) -> None:
    """jobs_0013 computes the facet lexemes by PL/pgSQL from one expression instead of an SQL function's queries.
    For every shape of arguments the two give the same tsvector, so the rows stored before it keep a column equal to
    what it computes (nothing is rewritten), and a downgrade brings the queries back."""
    if not database_url.startswith("postgresql"):
        pytest.skip("the facet lexemes are PostgreSQL's text index")
    engine = create_engine(database_url)
    try:
        await upgrade(engine, MIGRATIONS, "jobs_0012")
        groups = [group.value for group in TargetGroup]
        stored_before = [
            make_vacancy(n, "川菜厨师", occupation_code=code, target_groups=chosen, posted_at=moment, status=status)
            for n, (code, chosen, moment, status) in enumerate(
                [
                    ("5120", [], NOW, "open"),
                    ("5", groups[:1], datetime(1970, 1, 8, tzinfo=UTC), "withdrawn"),
                    ("9329", groups, datetime(1970, 1, 7, 23, 59, 59, 999999, tzinfo=UTC), "filled"),
                    ("2411", groups[2:4], datetime(1969, 12, 25, 8, tzinfo=UTC), "expired"),
                ]
            )
        ]
        await add(engine, *stored_before)
        async with engine.begin() as connection:  # jobs_0005's function kept under another name, to compare with
            definition = (
                await connection.execute(text("SELECT pg_get_functiondef('vacancy_facets'::regproc)"))
            ).scalar()
            assert "generate_series" in definition
            await connection.execute(text(definition.replace("public.vacancy_facets(", "public.facets_jobs_0005(")))
        await upgrade(engine, MIGRATIONS)

        codes = ["5", "51", "512", "5120", "9329", "1234567890"]
        group_texts = ["[]", '["veterans"]', json.dumps(groups), '[ "migrant-workers" ,\n\t"veterans" ]']
        moments = ["1970-01-08T00:00:00Z", "1970-01-07T23:59:59.999999Z", "1969-12-25T08:00:00+08:00", NOW.isoformat()]
        arguments = "'510000', 'open', '510104', c.code, 'full-time', g.groups::json, m.moment::timestamptz"
        grid = (
            "FROM unnest(CAST(:codes AS text[])) AS c(code), unnest(CAST(:groups AS text[])) AS g(groups), "
            "unnest(CAST(:moments AS text[])) AS m(moment)"
        )
        async with engine.begin() as connection:
            language = (
                await connection.execute(
                    text(
                        "SELECT lanname FROM pg_proc JOIN pg_language ON pg_language.oid = prolang "
                        "WHERE proname = 'vacancy_facets'"
                    )
                )
            ).scalar()
            differing = (
                await connection.execute(
                    text(
                        f"SELECT count(*) FILTER (WHERE vacancy_facets({arguments}) IS DISTINCT FROM "
                        f"facets_jobs_0005({arguments})), count(*) {grid}"
                    ),
                    {"codes": codes, "groups": group_texts, "moments": moments},
                )
            ).one()
            stale = (
                await connection.execute(
                    text(
                        "SELECT count(*) FROM vacancy WHERE search_vector IS DISTINCT FROM to_tsvector('simple', "
                        "search_tokens) || vacancy_facets(owner_province, status, division_code, occupation_code, "
                        "employment_type, target_groups, posted_at)"
                    )
                )
            ).scalar()
        assert language == "plpgsql"
        assert tuple(differing) == (0, len(codes) * len(group_texts) * len(moments))
        assert stale == 0
        assert await ids(engine, q="厨师", occupation_code="5", statuses=("withdrawn",)) == {stored_before[1]["id"]}
        assert await ids(engine, q="厨师", target_group=groups[3], statuses=("expired",)) == {stored_before[3]["id"]}

        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: command.downgrade(alembic_config(MIGRATIONS, sync), "jobs_0012"))
            restored = (await connection.execute(text("SELECT pg_get_functiondef('vacancy_facets'::regproc)"))).scalar()
        assert "generate_series" in restored and "plpgsql" not in restored
    finally:
        await engine.dispose()


async def test_the_text_indexes_merge_their_pending_lists_at_1_mb_not_at_4(database_url: str) -> None:
    """jobs_0014: each text index of vacancies merges its pending list once it holds 1 MB (PostgreSQL's default is 4
    MB), so the writing transaction that carries the merge carries a quarter of it. Vacancies written a hundred at a
    time never leave more than 1 MB pending in either index, and the lists were merged along the way; after a
    downgrade the same writing lets them grow past 1 MB again."""
    if not database_url.startswith("postgresql"):
        pytest.skip("GIN pending lists are PostgreSQL's")
    indexes = ("ix_vacancy_search_vector", "ix_vacancy_open_search")
    limit_pages = 1024 // 8  # 8 kB pages
    engine = create_engine(database_url)

    async def pending_pages() -> dict[str, int]:
        async with engine.begin() as connection:
            return {
                index: (
                    await connection.execute(
                        text("SELECT pending_pages FROM pgstatginindex(CAST(:i AS regclass))"), {"i": index}
                    )
                ).scalar_one()
                for index in indexes
            }

    async def write(first: int, count: int) -> dict[str, list[int]]:
        """Vacancies first..first+count written a hundred a transaction; each index's pending pages after each."""
        seen: dict[str, list[int]] = {index: [] for index in indexes}
        for start in range(first, first + count, 100):
            await add(
                engine, *(make_vacancy(n, f"川菜厨师 焊工 第{n}号 技师{n % 97}") for n in range(start, start + 100))
            )
            for index, pages in (await pending_pages()).items():
                seen[index].append(pages)
        return seen

    try:
        await upgrade(engine, MIGRATIONS)
        async with engine.begin() as connection:
            await connection.execute(text("CREATE EXTENSION IF NOT EXISTS pgstattuple"))
            options = dict(
                (
                    await connection.execute(
                        text("SELECT relname, reloptions FROM pg_class WHERE relname = ANY(:names)"),
                        {"names": list(indexes)},
                    )
                ).all()
            )
        assert options == {index: ["gin_pending_list_limit=1024"] for index in indexes}

        with_limit = await write(0, 3000)
        for index, pages in with_limit.items():
            assert max(pages) <= limit_pages + 1, (index, pages)
            merged = [after < before for before, after in itertools.pairwise(pages)]
            assert any(merged), (index, pages)  # the run reached the limit and the list was merged

        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: command.downgrade(alembic_config(MIGRATIONS, sync), "jobs_0013"))
        without = await write(3000, 3000)
        for index, pages in without.items():
            assert max(pages) > limit_pages + 1, (index, pages)
    finally:
        await engine.dispose()

"""The replica's reads through the driver (adapters/reads.py) keep every promise of the reads through a session:
the same rows and pages, one whole version of a vacancy changed while it is read, no connection left behind by
cancelled reads, and on the HTTP API the very bytes and headers the response models wrote."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from labornet.jobs.adapters import reads as reads_module
from labornet.jobs.adapters.reads import (
    READ_CONNECTIONS,
    READ_THREADS,
    SessionReads,
    VacancyReads,
    shown,
    vacancy_reads,
)
from labornet.jobs.adapters.search import SearchPage, SearchParams
from labornet.jobs.adapters.tables import vacancy
from labornet.jobs.app import create_app
from labornet.jobs.domain.text import document
from labornet.jobs.entrypoints import api
from labornet.jobs.entrypoints.schemas import VACANCY_FIELDS, Vacancy, VacancyPage
from labornet.jobs.service_layer.vacancies import to_event
from labornet.shared.db import create_engine, readonly_sessionmaker, sessionmaker
from labornet.shared.migrations import upgrade
from labornet.shared.problems import PROBLEM_JSON
from labornet.shared.settings import Settings
from labornet.shared.testing import eventually, serving

MIGRATIONS = "labornet.jobs:migrations"
NOW = datetime.now(UTC).replace(microsecond=123456)
PROVINCES = ("510000", "330000", "350000")
TITLES = ("川菜厨师", "Sichuan chef 川菜厨师", "电焊工", "Welder 焊工", "餐厅服务员", "厨房帮工", "维修电工", "保安员")
# what a replica may hold that JSON writes with care: quotes, backslashes, control characters, a line separator,
# characters outside the BMP, markup
AWKWARD = 'say "川菜" \\ back\u2028line\x01\ttab 😀 </script> 100%_off'


def make_vacancy(number: int, **fields: Any) -> dict[str, Any]:
    rng = random.Random(number)
    province = PROVINCES[number % len(PROVINCES)]
    title = TITLES[number % len(TITLES)]
    row: dict[str, Any] = {
        "id": f"{province}-V-{number:020d}",
        "owner_province": province,
        "employer_name": "成都锦江餐饮有限公司",
        "employer_credit_code": "91510100MA61XXXX0X",
        "title": title,
        "description": f"招聘{title}，提供住宿",
        "occupation_code": rng.choice(("5120", "7212", "7411", "5131")),
        "occupation_name": "厨师",
        "division_code": province[:2] + rng.choice(("0100", "0104", "0300")),
        "city": "成都市",
        "headcount": 3,
        "hired": number % 3,
        "salary_min": 3000 + 500 * (number % 10),
        "salary_max": 6000 + 500 * (number % 10),
        "employment_type": rng.choice(("full-time", "seasonal")),
        "target_groups": rng.choice(([], ["migrant-workers"], ["migrant-workers", "college-graduates"])),
        "skills": ["健康证"],
        "brand_id": None if number % 4 else "510000-B-8F14E45FCEEA167A5A36",
        "contact": "028-12345678",
        "posted_at": NOW - timedelta(hours=number * 7, microseconds=number),
        "closing_date": date(2031, 6, 30),
        "status": ("open", "open", "open", "filled", "expired")[number % 5],
        "version": 1 + number % 4,
        "updated_at": NOW - timedelta(minutes=number),
    }
    row.update(fields)
    parts = ("title", "description", "employer_name", "occupation_name", "city")
    row["search_tokens"] = document([*(row[p] for p in parts), " ".join(row["skills"])])
    return row


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await upgrade(engine, MIGRATIONS)
    yield engine
    await engine.dispose()


async def add(engine: AsyncEngine, rows: list[dict[str, Any]]) -> None:
    async with sessionmaker(engine)() as session, session.begin():
        await session.execute(insert(vacancy), rows)


def driver_reads(engine: AsyncEngine) -> VacancyReads:
    reads = vacancy_reads(engine, readonly_sessionmaker(engine))
    assert not isinstance(reads, SessionReads), "a database file and asyncpg read through the driver"
    return reads


QUERIES = [
    {},
    {"q": "厨师"},
    {"q": "厨师", "sort": "salary", "limit": 3},
    {"q": "chef"},
    {"q": "焊", "limit": 4},  # a lone CJK character: LIKE
    {"q": "电 工 维修"},
    {"q": "厨师", "province": "330000"},
    {"q": "厨师", "province": "350000"},  # the same shape with another value
    {"division_code": "510100", "limit": 5},
    {"division_code": "330300"},
    {"occupation_code": "5", "statuses": ("open", "filled")},
    {"occupation_code": "7212", "statuses": ("expired",)},
    {"occupation_code": "9"},  # a prefix of nines: no upper bound
    {"employment_type": "seasonal", "target_group": "college-graduates"},
    {"employment_type": "full-time", "target_group": "migrant-workers", "limit": 2},
    {"salary_min": 5000, "salary_max": 7000},
    {"salary_min": 7500},
    {"posted_since": NOW - timedelta(days=3)},
    {"posted_since": NOW - timedelta(days=9), "q": "厨师", "sort": "salary"},
    {"q": "面点师"},  # nothing
    {"statuses": ("open", "filled", "expired"), "limit": 7},
]


async def same_answers(fast: VacancyReads, reference: VacancyReads, params: SearchParams, **cap: int) -> SearchPage:
    """The page both reads answer, as stored rows and as the API shows them (which is :func:`shown` of the rows)."""
    page = await fast.search(params, **cap)
    assert page == await reference.search(params, **cap), params
    written = await fast.search_shown(params, VACANCY_FIELDS, **cap)
    assert written == await reference.search_shown(params, VACANCY_FIELDS, **cap), params
    assert written == dataclasses.replace(page, items=[shown(item, VACANCY_FIELDS) for item in page.items]), params
    return page


async def test_the_driver_reads_answer_what_the_session_reads_answer(engine: AsyncEngine) -> None:
    await add(engine, [make_vacancy(n) for n in range(1, 61)])
    fast, reference = driver_reads(engine), SessionReads(readonly_sessionmaker(engine))
    for query in QUERIES:
        params = SearchParams(**query)
        pages = 0
        while True:
            page = await same_answers(fast, reference, params)
            pages += 1
            if page.next_cursor is None:
                break
            params = dataclasses.replace(params, cursor=page.next_cursor)
        assert pages < 30
    # more matches than the cap: the page is found by walking the sort order, and the count says "cap or more"
    for query in ({"q": "厨师", "limit": 2}, {"statuses": ("open", "filled"), "sort": "salary", "limit": 3}):
        params = SearchParams(**query)
        page = await same_answers(fast, reference, params, total_cap=5)
        assert (page.total, page.total_exact) == (5, False)
        await same_answers(fast, reference, dataclasses.replace(params, cursor=page.next_cursor), total_cap=5)
    for number in (1, 4, 5, 60):
        vacancy_id = make_vacancy(number)["id"]
        row = await fast.one(vacancy_id)
        assert row is not None and row == await reference.one(vacancy_id)
        assert to_event(row) == to_event(make_vacancy(number))
        written = await fast.one_shown(vacancy_id, VACANCY_FIELDS)
        assert written == await reference.one_shown(vacancy_id, VACANCY_FIELDS) == shown(row, VACANCY_FIELDS)
    assert await fast.one("510000-V-NOSUCHVACANCY") is None
    assert await fast.one_shown("510000-V-NOSUCHVACANCY", VACANCY_FIELDS) is None


async def test_times_stored_in_other_forms_are_shown_as_the_session_reads_them(engine: AsyncEngine) -> None:
    """SQLite holds times as text: the driver's reads rewrite SQLAlchemy's own form as text and parse any other
    (a time written without microseconds, or with a T, by other means than SQLAlchemy) as the session does."""
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL hands back times, not text")
    rows = [make_vacancy(n, status="open", title="川菜厨师") for n in range(1, 7)]
    await add(engine, rows)
    forms = ["2026-11-20 08:30:00", "2026-11-20T08:30:00.250000", "2026-11-20 08:30", "2026-11-20 08:30:00.5"]
    async with engine.begin() as connection:
        for row, form in zip(rows, forms, strict=False):
            await connection.execute(
                text("UPDATE vacancy SET posted_at = :form, updated_at = :form WHERE id = :id"),
                {"form": form, "id": row["id"]},
            )
    fast, reference = driver_reads(engine), SessionReads(readonly_sessionmaker(engine))
    for params in (SearchParams(q="厨师"), SearchParams(q="厨师", limit=2), SearchParams(q="厨师", sort="salary")):
        await same_answers(fast, reference, params)
    for row in rows:
        assert await fast.one_shown(row["id"], VACANCY_FIELDS) == await reference.one_shown(row["id"], VACANCY_FIELDS)
    written = {item["posted_at"] for item in (await fast.search_shown(SearchParams(q="厨师"), VACANCY_FIELDS)).items}
    assert written >= {"2026-11-20T08:30:00.000000Z", "2026-11-20T08:30:00.250000Z", "2026-11-20T08:30:00.500000Z"}


async def test_a_vacancy_changed_while_it_is_read_comes_back_whole_at_one_version(engine: AsyncEngine) -> None:
    """Each change writes the title and then, in a second statement of the same transaction, the version and the
    salary: a read that saw one statement of a change without the other would show a title of another version."""
    first = make_vacancy(1, title="v1", version=1, salary_min=10, status="open")
    await add(engine, [first])
    reads = driver_reads(engine)
    changes = 40
    seen: set[int] = set()
    done = asyncio.Event()

    this = update(vacancy).where(vacancy.c.id == first["id"])

    async def change() -> None:
        try:
            for version in range(2, changes + 2):
                async with sessionmaker(engine)() as session, session.begin():
                    await session.execute(this.values(title=f"v{version}"))
                    await asyncio.sleep(0.002)  # readers come in between the two statements
                    await session.execute(this.values(version=version, salary_min=10 * version))
        finally:
            done.set()

    async def read() -> None:
        while not done.is_set():
            row = await reads.one(first["id"])
            assert row is not None
            assert (row["title"], row["salary_min"]) == (f"v{row['version']}", 10 * row["version"]), row
            seen.add(row["version"])
            page = await reads.search(SearchParams(q=None, limit=1))
            [item] = page.items
            assert (item["title"], item["salary_min"]) == (f"v{item['version']}", 10 * item["version"]), item
            await asyncio.sleep(0)

    await asyncio.gather(change(), read(), read(), read())
    assert len(seen) > 2, f"the reads saw versions {sorted(seen)}: too few to tell"
    row = await reads.one(first["id"])
    assert row is not None and row["version"] == changes + 1


async def open_connections(engine: AsyncEngine, database_url: str) -> int:
    """Connections to the test database: backends on PostgreSQL, this process's open files on SQLite."""
    if engine.dialect.name == "postgresql":
        observer = create_engine(database_url)
        try:
            async with observer.connect() as connection:
                others = "datname = current_database() AND pid <> pg_backend_pid()"
                found = await connection.execute(text(f"SELECT count(*) FROM pg_stat_activity WHERE {others}"))
                return int(found.scalar_one())
        finally:
            await observer.dispose()
    return _open_files(engine.url.database or "")


def _open_files(database: str) -> int:
    """How many file descriptors of this process are open on the file ``database`` (Linux ``/proc``)."""
    path, count = os.path.realpath(database), 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == path
        except OSError:
            continue
    return count


async def test_cancelled_reads_leave_no_connection_behind_and_the_engine_closes_them(
    engine: AsyncEngine, database_url: str
) -> None:
    await add(engine, [make_vacancy(n) for n in range(1, 31)])
    reads = driver_reads(engine)
    expected = await SessionReads(readonly_sessionmaker(engine)).search(SearchParams(q="厨师"))
    rng = random.Random(12)

    async def read(number: int) -> None:
        if number % 2:
            await reads.one(make_vacancy(number % 30 + 1)["id"])
        else:
            await reads.search(SearchParams(q="厨师"))

    for _ in range(10):
        tasks = [asyncio.create_task(read(n)) for n in range(30)]
        for _ in range(rng.randrange(1, 6)):  # cancelled at every stage: waiting, in the driver, in the thread
            await asyncio.sleep(0)
        for task in tasks[::2]:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(r is None or isinstance(r, asyncio.CancelledError) for r in results), results

    assert await reads.search(SearchParams(q="厨师")) == expected
    pool: Any = engine.pool
    # the reads hold at most their own connections out of the pool (PostgreSQL; SQLite's are their threads'), and
    # every connection the cancelled reads closed is gone: what is open is the pool's or the reader threads'
    assert pool.checkedout() <= (READ_CONNECTIONS if engine.dialect.name == "postgresql" else 0)
    threads = READ_THREADS + 1 if engine.dialect.name == "sqlite" else 0  # and the event loop's own connection

    async def none_left_behind() -> bool:
        return await open_connections(engine, database_url) <= pool.checkedin() + pool.checkedout() + threads

    await eventually(none_left_behind, timeout_s=10)

    await engine.dispose()

    async def all_closed() -> bool:
        return await open_connections(engine, database_url) == 0

    await eventually(all_closed, timeout_s=10)


async def test_a_read_by_id_waits_for_a_locked_file_off_the_event_loop(engine: AsyncEngine, database_url: str) -> None:
    """SQLite reads a vacancy by id on the event loop's thread, never waiting there: a file another connection
    holds locked is waited for in a reader thread while the loop goes on, and the read answers once the lock is
    gone. (Under WAL, as the service runs, readers are not locked out by a writer; the lock here is a rollback
    journal's exclusive one, which is how a file another program holds looks to a reader.)"""
    if engine.dialect.name != "sqlite":
        pytest.skip("the event loop's own connection is SQLite's")
    await add(engine, [make_vacancy(1)])
    reads = driver_reads(engine)
    wanted = make_vacancy(1)["id"]
    await engine.dispose()  # every connection closed (the reads' with the engine), so the journal can change
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:  # another program holding the file, which lets go after a while in any case
        holder = sqlite3.connect(engine.url.database or "", isolation_level=None)
        try:
            assert holder.execute("PRAGMA journal_mode=DELETE").fetchone() == ("delete",)
            holder.execute("BEGIN EXCLUSIVE")
            locked.set()
            release.wait(5)
            holder.execute("ROLLBACK")
        finally:
            holder.close()

    holding = threading.Thread(target=hold)
    holding.start()
    try:
        assert locked.wait(10)
        reading = asyncio.create_task(reads.one(wanted))
        await asyncio.sleep(0.3)  # the loop runs on while the read waits: a read waiting on the loop would end first
        assert not reading.done(), reading
    finally:
        release.set()
        holding.join()
    row = await asyncio.wait_for(reading, 10)
    assert row is not None and row["id"] == wanted
    assert await reads.one("510000-V-NOSUCHVACANCY00000") is None


# The HTTP API ------------------------------------------------------------------------------------------------


async def test_the_api_answers_the_bytes_and_headers_the_response_models_wrote(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    app = create_app(make_settings("510000", "jobs", database_url))
    async with serving(app) as client:
        engine = app.state.runtime.engine
        awkward = make_vacancy(
            7, title=AWKWARD, description=AWKWARD, employer_name=AWKWARD, skills=[AWKWARD, "川菜"], status="open"
        )
        await add(engine, [awkward, *(make_vacancy(n) for n in range(10, 40))])

        answer = await client.get(f"/api/v1/vacancies/{awkward['id']}")
        assert answer.status_code == 200
        model = Vacancy.model_validate(to_event(awkward))
        assert answer.content == model.model_dump_json().encode()
        assert answer.json()["title"] == AWKWARD and answer.json()["open_headcount"] == 3 - awkward["hired"]
        assert [(k, v) for k, v in answer.headers.items() if k not in ("date", "server")] == [
            ("content-length", str(len(answer.content))),
            ("content-type", "application/json"),
            ("etag", f'"{awkward["version"]}"'),
            ("traceparent", answer.headers["traceparent"]),
        ]

        for query in ({"q": "厨师", "limit": "3"}, {"q": "川菜", "sort": "salary"}, {"q": "面点师"}):
            answer = await client.get("/api/v1/vacancies", params=query)
            assert answer.status_code == 200
            async with readonly_sessionmaker(engine)() as session:
                ids = [item["id"] for item in answer.json()["items"]]
                rows = (await session.execute(select(vacancy).where(vacancy.c.id.in_(ids)))).mappings().all()
            by_id = {row["id"]: dict(row) for row in rows}
            page = VacancyPage.model_validate({**answer.json(), "items": [to_event(by_id[i]) for i in ids]})
            assert answer.content == page.model_dump_json().encode(), query
            assert answer.headers["content-type"] == "application/json"
        assert AWKWARD in {item["title"] for item in (await client.get("/api/v1/vacancies?q=川菜")).json()["items"]}

        missing = await client.get("/api/v1/vacancies/510000-V-NOSUCHVACANCY")
        assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM_JSON
        assert missing.json() == {
            "type": "https://labornet.example/problems/not-found",
            "title": "Not Found",
            "status": 404,
            "detail": "no vacancy 510000-V-NOSUCHVACANCY on this node",
            "instance": "/api/v1/vacancies/510000-V-NOSUCHVACANCY",
            "trace_id": missing.headers["traceparent"].split("-")[1],
        }
        bad_cursor = await client.get("/api/v1/vacancies", params={"q": "厨师", "cursor": "bm9wZQ"})
        assert bad_cursor.status_code == 422 and bad_cursor.json()["errors"][0]["field"] == "query.cursor"
        # ids no vacancy has, whatever the database's text can hold: unknown, never a server error
        for odd in ("510000-V-%00", "%00", "x" * 2000, "%F0%9F%98%80"):
            assert (await client.get(f"/api/v1/vacancies/{odd}")).status_code == 404, odd
        assert (await client.get(f"/api/v1/vacancies/{awkward['id']}")).status_code == 200


@given(
    st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=60),
    st.lists(st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=12), max_size=4),
    st.integers(min_value=0, max_value=2**31 - 1),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 1, 1)),
)
@hypothesis_settings(max_examples=200, deadline=None)
def test_the_api_writes_a_vacancy_with_the_bytes_of_its_response_model(
    text_: str, skills: list[str], salary: int, moment: datetime
) -> None:
    """orjson writes what pydantic writes for the response model (ADR 33), whatever the text: quotes, escapes,
    control characters, characters outside the BMP; any time, to the microsecond."""
    row = make_vacancy(
        3, title=text_, description=text_, employer_name=text_, skills=skills, salary_max=salary, updated_at=moment
    )
    expected = Vacancy.model_validate(to_event(row)).model_dump_json().encode()
    assert api._json(shown(row, VACANCY_FIELDS)).body == expected


async def test_reads_go_on_after_the_server_closed_their_connections(engine: AsyncEngine, database_url: str) -> None:
    """A restart or pg_terminate_backend: the held connections the driver knows closed are replaced before use,
    and a read whose connection turns out to be gone is tried again on a new one."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's reader connections are files of this process")
    await add(engine, [make_vacancy(n) for n in range(1, 11)])
    reads = driver_reads(engine)
    wanted = make_vacancy(3)["id"]
    await asyncio.gather(*(reads.one(wanted) for _ in range(8)))  # every held connection open
    observer = create_engine(database_url)
    try:
        async with observer.connect() as connection:
            others = "datname = current_database() AND pid <> pg_backend_pid()"
            ended = await connection.execute(
                text(f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE {others}")
            )
            assert ended.scalar_one() >= 1
    finally:
        await observer.dispose()
    await asyncio.sleep(0.2)  # the driver reads the end of each connection
    rows = await asyncio.gather(*(reads.one(wanted) for _ in range(8)))
    assert {row["id"] for row in rows if row is not None} == {wanted} and None not in rows
    assert (await reads.search(SearchParams(q="厨师"))).total > 0


def holding_every_connection(reads: Any) -> tuple[list[asyncio.Task[None]], asyncio.Event]:
    """Tasks that each hold one of the reads' connections (after a statement) until the event is set."""
    release = asyncio.Event()

    async def holding() -> None:
        async def work(driver: Any) -> None:
            await driver.fetchrow("SELECT 1")
            await release.wait()

        await reads._run(work)

    return [asyncio.create_task(holding(), name=f"holder-{n}") for n in range(READ_CONNECTIONS)], release


async def all_held(reads: Any) -> None:
    await eventually(lambda: asyncio.sleep(0, len(reads.held) == READ_CONNECTIONS), timeout_s=10)


def counting_statements(reads: Any) -> list[str]:
    """The names of the tasks that ran a read on a held connection, in the order they were given one."""
    served: list[str] = []
    take = reads._take

    async def taking() -> Any:
        held = await take()
        served.append(asyncio.current_task().get_name())  # type: ignore[union-attr]
        return held

    reads._take = taking
    return served


async def test_reads_waiting_for_a_connection_are_served_in_the_order_they_came(engine: AsyncEngine) -> None:
    """PostgreSQL: every held connection busy, reads queue for one; a connection given back goes to the first read
    waiting, not to one that arrives at that moment (which waits its turn behind them), so no read is passed over
    again and again while others take a millisecond. A read by id that comes while others wait joins them: they
    are answered together, at the place of the first."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite reads in threads of their own, not on held connections")
    await add(engine, [make_vacancy(n) for n in range(1, 4)])
    reads: Any = driver_reads(engine)
    ids = [make_vacancy(n)["id"] for n in (1, 2)]
    holders, release = holding_every_connection(reads)
    await all_held(reads)
    served = counting_statements(reads)

    async def by_id(vacancy_id: str) -> None:
        assert (await reads.one(vacancy_id))["id"] == vacancy_id

    async def searching(limit: int) -> None:
        assert (await reads.search(SearchParams(q="厨师", limit=limit))).items

    queued = []
    for n, (read, waiting) in enumerate(
        [(searching(1), 1), (by_id(ids[0]), 2), (searching(2), 3), (by_id(ids[1]), 3), (by_id(ids[0]), 3)]
    ):
        queued.append(asyncio.create_task(read, name=f"queued-{n}"))
        await eventually(lambda w=waiting: asyncio.sleep(0, len(reads.waiting) == w), timeout_s=10)
    release.set()  # the holders give their connections back (to the first two waiting) …
    late = asyncio.create_task(searching(3), name="late")  # … in the very moment a new read arrives
    await asyncio.wait_for(asyncio.gather(*holders, *queued, late), timeout=30)
    assert served == [f"reads gathered by {name}" for name in ("queued-0", "queued-1", "queued-2", "late")]


async def test_reads_by_id_that_wait_are_answered_together_by_one_statement(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every connection busy, reads of vacancies by id wait: known, unknown, the same one many times, an id
    PostgreSQL's text cannot hold (no vacancy has it; it must not fail the others' statement) and an id longer
    than any. One statement answers each what it would have answered alone; past GATHER_MAX ids a statement of
    their own answers the rest."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite reads in threads of their own, not on held connections")
    await add(engine, [make_vacancy(n) for n in range(1, 21)])
    reads: Any = driver_reads(engine)
    reference = SessionReads(readonly_sessionmaker(engine))
    wanted = [make_vacancy(n)["id"] for n in range(1, 21)] + ["510000-V-NOSUCHVACANCY", "x" * 5000, "510000-V-\x00"]
    asked = wanted * 3
    random.Random(3).shuffle(asked)
    expected = {i: await reference.one_shown(i, VACANCY_FIELDS) for i in wanted if "\x00" not in i}

    def per_statement(part: str) -> float:
        found = REGISTRY.get_sample_value(f"labornet_jobs_replica_reads_per_statement_{part}", {"kind": "vacancy"})
        return found or 0.0

    async def gathered(asked: list[str], statements: int) -> list[Any]:
        holders, release = holding_every_connection(reads)
        await all_held(reads)
        served = counting_statements(reads)
        sum_before, count_before = per_statement("sum"), per_statement("count")
        tasks = [asyncio.create_task(reads.one_shown(i, VACANCY_FIELDS)) for i in asked]
        await eventually(lambda: asyncio.sleep(0, len(reads.waiting) == statements), timeout_s=10)
        waiting = sum("\x00" not in i for i in asked)  # the NUL id never waits
        assert REGISTRY.get_sample_value("labornet_jobs_replica_reads_waiting") == waiting
        release.set()
        await asyncio.gather(*holders)
        answers = await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
        del reads._take
        assert len(served) == statements, served
        # operators see the reads that waited and how many a statement answered
        assert REGISTRY.get_sample_value("labornet_jobs_replica_reads_waiting") == 0
        assert (per_statement("sum") - sum_before, per_statement("count") - count_before) == (waiting, statements)
        return answers

    answers = await gathered(asked, statements=1)
    assert answers == [expected.get(i) for i in asked]
    assert sum(a is not None for a in answers) == 60
    monkeypatch.setattr(reads_module, "GATHER_MAX", 8)  # 22 ids (the NUL one is never asked): 8, 8 and 6
    assert await gathered(wanted, statements=3) == [expected.get(i) for i in wanted]


async def test_the_same_search_waiting_twice_is_asked_once(engine: AsyncEngine) -> None:
    """Every connection busy, the same search asked by many while they wait is run once for them all (each gets
    a page of its own); another search, or the same with another page size, is run for itself."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite reads in threads of their own, not on held connections")
    await add(engine, [make_vacancy(n) for n in range(1, 41)])
    reads: Any = driver_reads(engine)
    reference = SessionReads(readonly_sessionmaker(engine))
    searches = [SearchParams(q="厨师")] * 10 + [SearchParams(q="厨师", limit=3), SearchParams(q="焊工")] * 2
    holders, release = holding_every_connection(reads)
    await all_held(reads)
    served = counting_statements(reads)
    tasks = [asyncio.create_task(reads.search_shown(p, VACANCY_FIELDS)) for p in searches]
    await eventually(lambda: asyncio.sleep(0, len(reads.waiting) == 3), timeout_s=10)
    release.set()
    pages = await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
    await asyncio.gather(*holders)
    assert len(served) == 3
    for params, page in zip(searches, pages, strict=True):
        assert page == await reference.search_shown(params, VACANCY_FIELDS)
    assert pages[0].items and pages[0].items[0] is not pages[1].items[0]


class _Gate:
    """A driver whose statements run at once but answer only when the gate opens (or fail, if told to)."""

    def __init__(self, driver: Any, ran: asyncio.Event, opened: asyncio.Event, failing: Exception | None) -> None:
        self.driver, self.ran, self.opened, self.failing = driver, ran, opened, failing

    async def fetch(self, *args: Any) -> Any:
        rows = await self.driver.fetch(*args)
        self.ran.set()
        await self.opened.wait()
        if self.failing is not None:
            raise self.failing
        return rows


def gating(reads: Any, opened: asyncio.Event, failing: Exception | None = None) -> asyncio.Event:
    """The next statement of gathered reads by id waits at the gate once it has run (later ones run as usual);
    the event returned is set when it has run."""
    run, ran = reads._run, asyncio.Event()

    async def once(work: Any) -> Any:
        reads._run = run
        return await run(lambda driver: work(_Gate(driver, ran, opened, failing)))

    reads._run = once
    return ran


async def test_a_read_never_joins_a_statement_that_has_started(engine: AsyncEngine) -> None:
    """A statement of gathered reads has run (before a vacancy was committed) and its answer is on its way back;
    a read of that vacancy that comes after the commit must see it: it waits for a statement of its own, it does
    not take the answer of one that started before it came."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite reads in threads of their own, not on held connections")
    await add(engine, [make_vacancy(n) for n in range(1, 3)])
    reads: Any = driver_reads(engine)
    late = make_vacancy(16)  # open, a chef
    holders, release = holding_every_connection(reads)
    await all_held(reads)
    opened = asyncio.Event()
    ran = gating(reads, opened)
    first = [asyncio.create_task(reads.one(i)) for i in (make_vacancy(1)["id"], late["id"])]
    await eventually(lambda: asyncio.sleep(0, len(reads.waiting) == 1), timeout_s=10)
    release.set()  # the gathered statement runs and waits at the gate
    await asyncio.wait_for(ran.wait(), timeout=10)
    held_again, release_again = holding_every_connection(reads)  # the other connection, held again
    await eventually(lambda: asyncio.sleep(0, not reads.idle and len(reads.waiting) == 1), timeout_s=10)
    await add(engine, [late])
    after = asyncio.create_task(reads.one(late["id"]))
    after_search = asyncio.create_task(reads.search(SearchParams(q="厨师", limit=100)))
    await eventually(lambda: asyncio.sleep(0, len(reads.waiting) == 3), timeout_s=10)
    opened.set()
    release_again.set()
    known, unknown = await asyncio.wait_for(asyncio.gather(*first), timeout=30)
    assert known is not None and unknown is None  # the gathered statement ran before the commit
    assert (await asyncio.wait_for(after, timeout=30))["id"] == late["id"]
    assert late["id"] in {item["id"] for item in (await asyncio.wait_for(after_search, timeout=30)).items}
    await asyncio.gather(*holders, *held_again)


async def test_a_gathered_statement_that_fails_fails_its_reads_alone(engine: AsyncEngine) -> None:
    """The statement of gathered reads fails: each of them gets the error, a read cancelled while it waited is
    not run at all, and the reads that come after are answered."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite reads in threads of their own, not on held connections")
    await add(engine, [make_vacancy(n) for n in range(1, 6)])
    reads: Any = driver_reads(engine)
    ids = [make_vacancy(n)["id"] for n in range(1, 6)]
    holders, release = holding_every_connection(reads)
    await all_held(reads)
    opened = asyncio.Event()
    gating(reads, opened, failing=ValueError("the statement failed"))
    failing = [asyncio.create_task(reads.one(i)) for i in ids[:3]]
    await eventually(lambda: asyncio.sleep(0, len(reads.waiting) == 1), timeout_s=10)
    release.set()
    await asyncio.gather(*holders)
    opened.set()
    outcomes = await asyncio.wait_for(asyncio.gather(*failing, return_exceptions=True), timeout=30)
    assert all(isinstance(o, ValueError) for o in outcomes), outcomes
    # every reader of a gathering cancelled before its statement: it is not run, the others' is
    holders, release = holding_every_connection(reads)
    await all_held(reads)
    cancelled = [asyncio.create_task(reads.search(SearchParams(q="焊工"))) for _ in range(3)]
    kept = [asyncio.create_task(reads.one(i)) for i in ids]
    await eventually(lambda: asyncio.sleep(0, len(reads.waiting) == 2), timeout_s=10)
    statements: list[str] = []
    args = reads._args
    reads._args = lambda plan, name: statements.append(name) or args(plan, name)
    for task in cancelled:
        task.cancel()
    release.set()
    rows = await asyncio.wait_for(asyncio.gather(*kept), timeout=30)
    assert [row["id"] for row in rows] == ids
    await asyncio.gather(*holders)
    assert statements == []
    assert all(task.cancelled() for task in cancelled)
    await eventually(lambda: asyncio.sleep(0, not reads.answering and not reads.gathering), timeout_s=10)
    assert (await reads.search(SearchParams(q="焊工"))).total > 0


async def test_reads_waiting_when_a_connection_fails_open_another_in_its_place(engine: AsyncEngine) -> None:
    """A held connection closed for good while reads wait (its read failed): the first read waiting opens a new
    one in its place rather than waiting for a connection that will not come back."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite reads in threads of their own, not on held connections")
    await add(engine, [make_vacancy(n) for n in range(1, 4)])
    reads: Any = driver_reads(engine)
    wanted = make_vacancy(2)["id"]
    release = asyncio.Event()

    async def failing(driver: Any) -> None:
        await driver.fetchrow("SELECT 1")
        await release.wait()
        raise ValueError("the read asked for something wrong")

    holders = [asyncio.create_task(reads._run(failing)) for _ in range(READ_CONNECTIONS)]
    await eventually(lambda: asyncio.sleep(0, len(reads.held) == READ_CONNECTIONS), timeout_s=10)
    waiting = [asyncio.create_task(reads.one(wanted)) for _ in range(3)]
    waiting.append(asyncio.create_task(reads.search(SearchParams(q="厨师"))))
    await eventually(lambda: asyncio.sleep(0, len(reads.waiting) == 2), timeout_s=10)  # the reads by id gathered
    release.set()
    failed = await asyncio.gather(*holders, return_exceptions=True)
    assert all(isinstance(f, ValueError) for f in failed)
    *rows, page = await asyncio.wait_for(asyncio.gather(*waiting), timeout=30)
    assert [row["id"] for row in rows] == [wanted] * 3 and page.total > 0
    assert (reads.opened, len(reads.held)) == (READ_CONNECTIONS, READ_CONNECTIONS)

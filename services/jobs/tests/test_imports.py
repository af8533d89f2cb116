"""Bulk import of vacancies over real HTTP (uvicorn, SQLite or PostgreSQL): CSV and NDJSON, errors by line, the
job's progress, the vacancies searchable and their published events in the outbox, and who may import."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select

from labornet.jobs.adapters.brands import BrandRegisterUnavailable, FixedBrandRegister
from labornet.jobs.adapters.tables import vacancy as vacancy_table
from labornet.jobs.adapters.tables import vacancy_import
from labornet.jobs.app import create_app
from labornet.jobs.domain.imports import CSV_COLUMNS, csv_rows
from labornet.jobs.domain.vacancy import PUBLISHED, BrandRef
from labornet.jobs.service_layer.imports import ImportService
from labornet.shared.clock import today_in_china
from labornet.shared.db import create_engine, sessionmaker
from labornet.shared.keys import NodeKeys
from labornet.shared.settings import Settings
from labornet.shared.testing import assert_problem, bearer, eventually, outbox_events, serving

SC = "510000"
IMPORTS = "/api/v1/vacancies/imports"
RECOGNISED = BrandRef(id="510000-B-8F14E45FCEEA167A5A36", status="recognised", name_zh="川厨师")
REVOKED = BrandRef(id="510000-B-C9F0F895FB98AB9159F5", status="revoked", name_zh="川保安")


def vacancy(n: int, **overrides: Any) -> dict[str, Any]:
    """A valid draft in the flat form, numbered so that it can be found again."""
    row: dict[str, Any] = {
        "employer_name": "成都川味餐饮有限公司",
        "employer_credit_code": "91350100M000100Y43",
        "title": f"川菜厨师 chef{n:06d}",
        "description": "负责川菜热菜制作，提供住宿。",
        "occupation_code": "5120",
        "division_code": "510104",
        "headcount": 1 + n % 5,
        "salary_min": 6000,
        "salary_max": 9000,
        "employment_type": "full-time",
        "target_groups": ["migrant-workers"],
        "skills": ["川菜", "刀工"],
        "contact": "028-86000000",
        "closing_date": (today_in_china() + timedelta(days=30)).isoformat(),
    }
    row.update(overrides)
    return row


def as_csv(rows: list[dict[str, Any]], columns: tuple[str, ...] | None = None) -> bytes:
    names = columns or tuple(name for name in CSV_COLUMNS if any(name in row for row in rows))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow(["|".join(v) if isinstance(v := row.get(n, ""), list) else v for n in names])
    return out.getvalue().encode()


def as_ndjson(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()


CSV = {"Content-Type": "text/csv; charset=utf-8"}
NDJSON = {"Content-Type": "application/x-ndjson"}


@contextlib.asynccontextmanager
async def jobs_node(settings: Settings, batch_rows: int = 500) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    app = create_app(settings)
    async with serving(app) as client:
        runtime = app.state.runtime
        runtime.extras["vacancies"].brands = FixedBrandRegister(RECOGNISED, REVOKED)
        service: ImportService = runtime.extras["imports"]
        service.batch_rows = batch_rows
        yield client, runtime


@pytest.fixture
def settings(make_settings: Callable[..., Settings], database_url: str) -> Settings:
    return make_settings(SC, "jobs", database_url)


async def finished(client: httpx.AsyncClient, location: str, officer: dict[str, str]) -> dict[str, Any]:
    state: dict[str, Any] = {}

    async def done() -> bool:
        state.update((await client.get(location, headers=officer)).json())
        return state["state"] in ("completed", "failed")

    await eventually(done, timeout_s=60)
    return state


async def test_a_csv_with_bad_rows_publishes_the_good_ones_and_names_the_bad_by_line(
    settings: Settings, node_keys: dict[str, NodeKeys]
) -> None:
    officer = bearer(node_keys[SC], "officer", sub="sc-officer")
    rows = [
        vacancy(1, brand_id=RECOGNISED.id),
        vacancy(2, salary_min=9000, salary_max=6000),  # line 3
        vacancy(3, occupation_code="0000"),  # line 4
        vacancy(4, division_code="330106"),  # line 5: not a division of Sichuan
        vacancy(5, brand_id=REVOKED.id),  # line 6
        vacancy(6, description="多行\n描述"),  # lines 7-8: a quoted cell over two lines
        vacancy(7, headcount="three"),  # line 9
        vacancy(8, target_groups=["veterans", "college-graduates"], skills=[]),  # line 10
    ]
    body = as_csv(rows, (*CSV_COLUMNS[: CSV_COLUMNS.index("closing_date") + 1],))
    async with jobs_node(settings) as (client, runtime):
        answer = await client.post(IMPORTS, headers={**officer, **CSV}, content=body)
        assert answer.status_code == 202, answer.text
        job = answer.json()
        assert answer.headers["Location"] == f"{IMPORTS}/{job['id']}"
        assert job["id"].startswith("510000-I-") and job["state"] in ("queued", "running", "completed")
        assert job["format"] == "csv" and job["mode"] == "valid-rows" and job["officer"] == "sc-officer"
        assert job["bytes"] == len(body)

        done = await finished(client, answer.headers["Location"], officer)
        assert done["state"] == "completed", done
        assert (done["rows_read"], done["rows_valid"], done["rows_rejected"], done["rows_published"]) == (8, 3, 5, 3)
        assert done["published_through_line"] == 10 and done["message"] is None
        assert {(e["line"], e["field"]) for e in done["errors"]} == {
            (3, "row"),
            (4, "occupation_code"),
            (5, "division_code"),
            (6, "brand_id"),
            (9, "headcount"),
        }, done["errors"]
        messages = {e["line"]: e["message"] for e in done["errors"]}
        assert "salary_min 9000 is greater than salary_max 6000" in messages[3]
        assert "revoked" in messages[6] and "330106" in messages[5]
        assert done["finished_at"] >= done["started_at"] >= done["created_at"]

        found = (await client.get("/api/v1/vacancies", params={"q": "chef", "limit": 100})).json()
        by_title = {item["title"]: item for item in found["items"]}
        assert sorted(by_title) == [f"川菜厨师 chef{n:06d}" for n in (1, 6, 8)] and found["total"] == 3
        first = by_title["川菜厨师 chef000001"]
        assert first["brand_id"] == RECOGNISED.id and first["city"] == "成都市" and first["version"] == 1
        assert by_title["川菜厨师 chef000006"]["description"] == "多行\n描述"
        assert by_title["川菜厨师 chef000008"]["target_groups"] == ["veterans", "college-graduates"]

        events, _ = await outbox_events(runtime.engine)
        published = {e.subject: e for e in events if e.type == PUBLISHED}
        assert len(published) == 3
        for item in found["items"]:  # each event is the vacancy as the API reads it, as the single API writes it
            answer = dict(item)
            assert answer.pop("open_headcount") == item["headcount"] and item["hired"] == 0  # the API's own figure
            assert published[item["id"]].json() == answer
            assert published[item["id"]].partitionkey == item["id"]


async def test_ndjson_rows_and_lines_that_are_not_json(settings: Settings, node_keys: dict[str, NodeKeys]) -> None:
    officer = bearer(node_keys[SC], "officer")
    nested = vacancy(3)
    nested["employer"] = {"name": nested.pop("employer_name"), "credit_code": nested.pop("employer_credit_code")}
    body = (
        as_ndjson([vacancy(1), vacancy(2, closing_date="2020-01-01")])
        + b"\n{not json\n"  # line 3 blank, line 4 broken
        + as_ndjson([nested, vacancy(4, unknown_field=1)])
    )
    async with jobs_node(settings) as (client, _runtime):
        answer = await client.post(IMPORTS, headers={**officer, **NDJSON}, content=body)
        assert answer.status_code == 202, answer.text
        done = await finished(client, answer.headers["Location"], officer)
    assert done["state"] == "completed" and done["format"] == "ndjson"
    assert (done["rows_read"], done["rows_valid"], done["rows_rejected"], done["rows_published"]) == (5, 2, 3, 2)
    assert [(e["line"], e["field"]) for e in done["errors"]] == [(2, "closing_date"), (4, "row"), (6, "unknown_field")]
    assert "is in the past" in done["errors"][0]["message"]


async def test_all_or_nothing_publishes_nothing_unless_every_row_is_valid(
    settings: Settings, node_keys: dict[str, NodeKeys]
) -> None:
    officer = bearer(node_keys[SC], "officer")
    async with jobs_node(settings, batch_rows=2) as (client, runtime):
        bad = as_ndjson([vacancy(1), vacancy(2), vacancy(3, headcount=0), vacancy(4)])
        answer = await client.post(f"{IMPORTS}?mode=all-or-nothing", headers={**officer, **NDJSON}, content=bad)
        failed = await finished(client, answer.headers["Location"], officer)
        assert failed["state"] == "failed" and failed["mode"] == "all-or-nothing"
        assert "1 row(s) are not valid; nothing was published" in failed["message"]
        assert (failed["rows_read"], failed["rows_rejected"], failed["rows_published"]) == (4, 1, 0)
        assert failed["errors"] == [{"line": 3, "field": "headcount", "message": failed["errors"][0]["message"]}]
        assert (await client.get("/api/v1/vacancies")).json()["total"] == 0
        assert await outbox_events(runtime.engine) == ([], 0)

        good = as_ndjson([vacancy(n) for n in range(5)])
        answer = await client.post(f"{IMPORTS}?mode=all-or-nothing", headers={**officer, **NDJSON}, content=good)
        done = await finished(client, answer.headers["Location"], officer)
        assert done["state"] == "completed" and (done["rows_read"], done["rows_published"]) == (5, 5)
        assert (await client.get("/api/v1/vacancies")).json()["total"] == 5


async def test_progress_is_visible_while_a_large_file_is_imported(
    settings: Settings, node_keys: dict[str, NodeKeys]
) -> None:
    officer = bearer(node_keys[SC], "officer")
    total = 3000
    body = as_csv([vacancy(n) for n in range(total)])
    async with jobs_node(settings, batch_rows=50) as (client, runtime):
        answer = await client.post(IMPORTS, headers={**officer, **CSV}, content=body)
        assert answer.status_code == 202, answer.text
        seen: list[dict[str, Any]] = []

        async def done() -> bool:
            seen.append((await client.get(answer.headers["Location"], headers=officer)).json())
            return seen[-1]["state"] == "completed"

        await eventually(done, timeout_s=120, interval_s=0.01)
        partial = [s for s in seen if s["state"] == "running" and 0 < s["rows_published"] < total]
        assert partial, [(s["state"], s["rows_published"]) for s in seen]
        for state in partial:  # what a running import says it published is committed, batch by batch
            assert state["rows_published"] % 50 == 0 and state["rows_read"] >= state["rows_published"]
            assert state["published_through_line"] == state["rows_published"] + 1
        assert seen[-1]["rows_published"] == total and seen[-1]["published_through_line"] == total + 1
        assert (await client.get("/api/v1/vacancies", params={"q": "chef002999"})).json()["total"] == 1
        async with runtime.read_sessions() as session:
            # partners' vacancies on the shared test broker reach this node's replica too: count the province's own
            own = select(func.count()).select_from(vacancy_table).where(vacancy_table.c.owner_province == SC)
            assert (await session.execute(own)).scalar() == total
        events, _ = await outbox_events(runtime.engine)
        assert len(events) == total and {e.type for e in events} == {PUBLISHED}
        assert [e.streamseq for e in events] == list(range(1, total + 1))


async def test_files_that_cannot_be_imported_are_refused_at_once(
    settings: Settings, node_keys: dict[str, NodeKeys]
) -> None:
    officer = bearer(node_keys[SC], "officer")
    async with jobs_node(settings) as (client, runtime):
        for body, headers, detail in [
            (b"", CSV, "nothing to import: the file has no row"),
            (b"", NDJSON, "nothing to import: the file has no row"),
            (b"\n  \n", NDJSON, "nothing to import"),
            (as_csv([], CSV_COLUMNS) + b"\r\n", CSV, "no row follows the header"),
            (b"title,colour\r\nx,red\r\n", CSV, "missing columns: employer_name"),
            (b"title,colour\r\n", CSV, "unknown columns: colour"),
            (b"title," + b"c" * 70_000, CSV, "the first line is longer than 65536 characters; it is no header"),
            (as_ndjson([vacancy(1)])[:-3] + b"\xff\xfe\n", NDJSON, "line 1 holds a byte that is not UTF-8"),
        ]:
            problem = assert_problem(await client.post(IMPORTS, headers={**officer, **headers}, content=body), 422)
            assert detail in str(problem["detail"]), (body, problem)
        for content_type in ("application/json", "text/plain", "text/csv; charset=gbk"):
            answer = await client.post(
                IMPORTS, headers={**officer, "Content-Type": content_type}, content=as_csv([vacancy(1)])
            )
            assert_problem(answer, 415, "text/csv or application/x-ndjson")
        assert_problem(await client.post(IMPORTS, headers=officer, content=as_csv([vacancy(1)])), 415)
        assert_problem(await client.post(f"{IMPORTS}?mode=some", headers={**officer, **CSV}, content=b"x"), 422)
        assert_problem(await client.get(f"{IMPORTS}/510000-I-NOSUCH", headers=officer), 404, "510000-I-NOSUCH")
        assert await outbox_events(runtime.engine) == ([], 0)


async def test_only_officers_of_this_province_import_or_read_imports(
    settings: Settings, node_keys: dict[str, NodeKeys]
) -> None:
    body = as_csv([vacancy(1)])
    async with jobs_node(settings) as (client, _runtime):
        assert_problem(await client.post(IMPORTS, headers=CSV, content=body), 401)
        worker = bearer(node_keys[SC], "worker", sub="wang")
        assert_problem(await client.post(IMPORTS, headers={**worker, **CSV}, content=body), 403, "officer")
        partner = bearer(node_keys["330000"], "officer")
        assert_problem(await client.post(IMPORTS, headers={**partner, **CSV}, content=body), 403)
        officer = bearer(node_keys[SC], "officer")
        answer = await client.post(IMPORTS, headers={**officer, **CSV}, content=body)
        assert answer.status_code == 202
        assert_problem(await client.get(answer.headers["Location"], headers=worker), 403)
        assert_problem(await client.get(answer.headers["Location"]), 401)
        await finished(client, answer.headers["Location"], officer)
        assert (await client.get("/api/v1/vacancies")).json()["total"] == 1


async def test_an_import_a_restart_interrupted_is_marked_failed_on_start_up(
    settings: Settings, node_keys: dict[str, NodeKeys]
) -> None:
    officer = bearer(node_keys[SC], "officer")
    async with jobs_node(settings):
        pass  # the database is migrated
    engine = create_engine(settings.database_url)
    earlier = datetime.now(UTC) - timedelta(minutes=5)
    progress = {"rows_valid": 0, "rows_rejected": 0, "errors": [], "message": None, "bytes": 10}
    try:
        async with sessionmaker(engine)() as session, session.begin():
            for import_id, state, read, through in [
                ("510000-I-RUNNING", "running", 1500, 1001),
                ("510000-I-QUEUED", "queued", 0, 0),
                ("510000-I-DONE", "completed", 10, 11),
            ]:
                await session.execute(
                    insert(vacancy_import).values(
                        id=import_id, officer="sc-officer", format="csv", mode="valid-rows", state=state,
                        rows_read=read, rows_published=max(through - 1, 0), published_through_line=through,
                        created_at=earlier, started_at=earlier, updated_at=earlier, finished_at=None, **progress,
                    )
                )  # fmt: skip
    finally:
        await engine.dispose()
    async with jobs_node(settings) as (client, _runtime):

        async def marked() -> bool:
            answer = await client.get(f"{IMPORTS}/510000-I-RUNNING", headers=officer)
            return bool(answer.json()["state"] == "failed")

        await eventually(marked)
        running = (await client.get(f"{IMPORTS}/510000-I-RUNNING", headers=officer)).json()
        assert "restarted during this import" in running["message"] and "after line 1001 again" in running["message"]
        assert running["rows_published"] == 1000 and running["finished_at"] is not None
        queued = (await client.get(f"{IMPORTS}/510000-I-QUEUED", headers=officer)).json()
        assert queued["state"] == "failed" and "send the file again" in queued["message"]
        assert (await client.get(f"{IMPORTS}/510000-I-DONE", headers=officer)).json()["state"] == "completed"


async def test_a_brand_register_that_cannot_answer_rejects_the_rows_naming_a_brand(
    settings: Settings, node_keys: dict[str, NodeKeys]
) -> None:
    officer = bearer(node_keys[SC], "officer")
    calls = 0

    class Down:
        async def find(self, brand_id: str) -> BrandRef | None:
            nonlocal calls
            calls += 1
            raise BrandRegisterUnavailable("the brands service at http://127.0.0.1:9 cannot be reached")

    async with jobs_node(settings) as (client, runtime):
        runtime.extras["vacancies"].brands = Down()
        body = as_ndjson([vacancy(n, brand_id=RECOGNISED.id) for n in range(3)] + [vacancy(9)])
        answer = await client.post(IMPORTS, headers={**officer, **NDJSON}, content=body)
        done = await finished(client, answer.headers["Location"], officer)
    assert (done["rows_rejected"], done["rows_published"]) == (3, 1)
    assert {e["field"] for e in done["errors"]} == {"brand_id"}
    assert "cannot be checked now" in done["errors"][0]["message"]
    assert calls == 1  # asked once per import, not once per row


async def test_imported_vacancies_are_matched_to_subscriptions_as_single_ones_are(
    settings: Settings, node_keys: dict[str, NodeKeys]
) -> None:
    officer = bearer(node_keys[SC], "officer")
    worker = bearer(node_keys[SC], "worker", sub="wang")
    async with jobs_node(settings, batch_rows=4) as (client, _runtime):
        for criteria in ({"occupation_codes": ["5120"], "keywords": ["夜班"]}, {"division_codes": ["510700"]}):
            assert (await client.post("/api/v1/me/subscriptions", headers=worker, json=criteria)).status_code == 201
        rows = [
            vacancy(n, title=f"川菜厨师 夜班 chef{n:06d}" if n % 3 == 0 else f"川菜厨师 chef{n:06d}") for n in range(9)
        ] + [vacancy(9, division_code="510703", occupation_code="7411")]
        answer = await client.post(IMPORTS, headers={**officer, **NDJSON}, content=as_ndjson(rows))
        assert (await finished(client, answer.headers["Location"], officer))["rows_published"] == 10
        matches = (await client.get("/api/v1/me/matches", headers=worker)).json()["items"]
        found = (await client.get("/api/v1/vacancies", params={"limit": 100})).json()["items"]
        titles = {item["id"]: item["title"] for item in found}
        matched = sorted(titles[m["vacancy_id"]] for m in matches)
        assert matched == sorted([f"川菜厨师 夜班 chef{n:06d}" for n in (0, 3, 6)] + ["川菜厨师 chef000009"])


def test_csv_rows_name_the_line_where_each_row_starts_and_read_on_after_a_broken_one() -> None:
    text = as_csv([vacancy(1), vacancy(2, description="两行\n描述"), vacancy(3), vacancy(4)]).decode()
    lines = text.splitlines(keepends=True)
    lines[4] = lines[4].replace("chef000003", "chef" + "3" * 200_000)  # beyond the csv module's field limit, line 5
    parsed = list(csv_rows(lines))
    assert [(row.line, row.draft is not None) for row in parsed] == [(2, True), (3, True), (5, False), (6, True)]
    assert parsed[2].errors[0].field == "row" and "not readable as CSV" in parsed[2].errors[0].message
    assert parsed[1].draft is not None and parsed[1].draft.description == "两行\n描述"


async def test_an_import_that_fails_midway_says_through_which_line_rows_are_published(
    settings: Settings, node_keys: dict[str, NodeKeys]
) -> None:
    officer = bearer(node_keys[SC], "officer")
    async with jobs_node(settings, batch_rows=3) as (client, runtime):
        service = runtime.extras["vacancies"]
        insert_published = service.insert_published
        batches = 0

        async def failing_second_batch(session: Any, rows: Any) -> None:
            nonlocal batches
            batches += 1
            if batches == 2:
                raise RuntimeError("the disk is full")
            await insert_published(session, rows)

        service.insert_published = failing_second_batch
        answer = await client.post(
            IMPORTS, headers={**officer, **NDJSON}, content=as_ndjson([vacancy(n) for n in range(8)])
        )
        failed = await finished(client, answer.headers["Location"], officer)
        assert failed["state"] == "failed" and (failed["rows_published"], failed["published_through_line"]) == (3, 3)
        assert failed["message"] == (
            "the import stopped after publishing the valid rows through line 3: the disk is full"
        )
        assert (await client.get("/api/v1/vacancies")).json()["total"] == 3  # the failed batch left nothing

        answer = await client.post(IMPORTS, headers={**officer, **NDJSON}, content=as_ndjson([vacancy(9)]))
        assert (await finished(client, answer.headers["Location"], officer))["state"] == "completed"  # runs on


async def test_the_import_path_has_the_import_body_limit(
    make_settings: Callable[..., Settings], database_url: str, node_keys: dict[str, NodeKeys]
) -> None:
    officer = bearer(node_keys[SC], "officer")
    limited = make_settings(SC, "jobs", database_url, request_max_body_bytes=1024, request_max_import_bytes=8192)
    fits, too_large = as_csv([vacancy(n) for n in range(8)]), as_csv([vacancy(n) for n in range(40)])
    assert 1024 < len(fits) <= 8192 < len(too_large)

    async def chunked(body: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    async with jobs_node(limited) as (client, runtime):
        answer = await client.post(IMPORTS, headers={**officer, **CSV}, content=fits)
        assert answer.status_code == 202, answer.text  # above the general limit, within the import limit
        assert_problem(await client.post(IMPORTS, headers={**officer, **CSV}, content=too_large), 413, "8192")
        assert_problem(await client.post(IMPORTS, headers={**officer, **CSV}, content=chunked(too_large)), 413, "8192")
        assert (await finished(client, answer.headers["Location"], officer))["rows_published"] == 8
        async with runtime.read_sessions() as session:  # the refused files left no import behind
            assert (await session.execute(select(func.count()).select_from(vacancy_import))).scalar() == 1

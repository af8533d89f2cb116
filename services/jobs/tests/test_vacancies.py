"""Publishing vacancies on real databases: the migrations against the tables, and the brand a vacancy names."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from prometheus_client import REGISTRY
from pydantic import ValidationError
from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine

from labornet.jobs.adapters.brands import BrandRegisterUnavailable, FixedBrandRegister, HttpBrandRegister
from labornet.jobs.adapters.tables import metadata, vacancy
from labornet.jobs.app import create_app
from labornet.jobs.domain.vacancy import PUBLISHED, BrandRef, VacancyChanges, VacancyDraft
from labornet.jobs.entrypoints.schemas import Vacancy
from labornet.jobs.service_layer.vacancies import VacancyService
from labornet.shared.clock import today_in_china
from labornet.shared.db import create_engine, platform_metadata, readonly_sessionmaker, sessionmaker
from labornet.shared.divisions import load_divisions
from labornet.shared.keys import NodeKeys
from labornet.shared.migrations import alembic_config, upgrade
from labornet.shared.outbox import Outbox
from labornet.shared.problems import Problem, Unprocessable
from labornet.shared.settings import Settings
from labornet.shared.signing import Signer, generate_private_key, key_id_for
from labornet.shared.testing import assert_problem, bearer, outbox_events, serving

MIGRATIONS = "labornet.jobs:migrations"
SC = "510000"
CHEFS = BrandRef(id="510000-B-8F14E45FCEEA167A5A36", status="recognised", name_zh="川厨师")
REVOKED = BrandRef(id="510000-B-C9F0F895FB98AB9159F5", status="revoked", name_zh="川保安")

# The search index is written per database in SQL of its own (migration jobs_0003, ADR 0006), outside the
# SQLAlchemy tables: these objects, and only these, are in the database and not in the metadata.
SEARCH_INDEX = {
    "sqlite": {
        ("remove_table", "vacancy_search"),
        ("remove_table", "vacancy_search_config"),
        ("remove_table", "vacancy_search_data"),
        ("remove_table", "vacancy_search_docsize"),
        ("remove_table", "vacancy_search_idx"),
    },
    "postgresql": {
        ("remove_column", "search_vector"),
        ("remove_index", "ix_vacancy_search_vector"),
        ("remove_index", "ix_vacancy_open_search"),
        ("remove_index", "ix_vacancy_owner_status_posted"),
        ("remove_index", "ix_vacancy_owner_status_salary"),
    },
}


def named(difference: Any) -> tuple[str, str]:
    kind = difference[0]
    if kind == "remove_column":
        return kind, difference[3].name
    if isinstance(difference, tuple) and hasattr(difference[1], "name"):
        return kind, difference[1].name
    return kind, repr(difference)


async def test_the_migrations_build_exactly_the_tables_and_go_down_again(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine, MIGRATIONS)
        async with engine.connect() as connection:
            diff = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), [platform_metadata, metadata])
            )
        dialect = engine.dialect.name
        assert [named(d) for d in diff if named(d) not in SEARCH_INDEX[dialect]] == [], diff
        assert {named(d) for d in diff} == SEARCH_INDEX[dialect], "the search index is there"
        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: command.downgrade(alembic_config(MIGRATIONS, sync), "jobs_0001"))
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        assert not names & set(metadata.tables) and "outbox" in names
        assert not {name for name in names if name.startswith("vacancy_search")}
        await upgrade(engine, MIGRATIONS)
    finally:
        await engine.dispose()


# The brand a vacancy names ------------------------------------------------------------------------------------


def draft(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "employer": {"name": "成都川味餐饮有限公司", "credit_code": "91350100M000100Y43"},
        "title": "川菜厨师",
        "occupation_code": "5120",
        "division_code": "510104",
        "headcount": 2,
        "salary": {"min": 6000, "max": 9000},
        "employment_type": "full-time",
        "contact": "028-86000000",
        "closing_date": (today_in_china() + timedelta(days=30)).isoformat(),
    }
    body.update(overrides)
    return body


class Failing:
    """A register that cannot answer."""

    async def find(self, brand_id: str) -> BrandRef | None:
        raise BrandRegisterUnavailable("the brands service at http://127.0.0.1:9 cannot be reached")


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    made = create_engine(database_url)
    await upgrade(made, MIGRATIONS)
    yield made
    await made.dispose()


@pytest.fixture
def make_service(engine: AsyncEngine) -> Callable[..., VacancyService]:
    key = generate_private_key()
    writer = Outbox(SC, "jobs", Signer(key_id_for(SC, key.public_key()), key))

    def make(brands: Any = None) -> VacancyService:
        return VacancyService(
            province=SC,
            sessions=sessionmaker(engine),
            outbox=writer,
            divisions=load_divisions(),
            brands=brands or FixedBrandRegister(CHEFS, REVOKED),
        )

    return make


async def stored_brands(engine: AsyncEngine) -> list[str | None]:
    async with readonly_sessionmaker(engine)() as session:
        return list((await session.execute(select(vacancy.c.brand_id).order_by(vacancy.c.posted_at))).scalars())


def field_error(problem: Problem) -> tuple[str, str]:
    [error] = problem.extra["errors"]
    return error["field"], error["message"]


async def test_a_vacancy_names_only_a_brand_of_the_register_that_is_not_revoked(
    make_service: Callable[..., VacancyService], engine: AsyncEngine
) -> None:
    service = make_service()
    with pytest.raises(Unprocessable) as unknown:
        await service.publish(VacancyDraft.model_validate(draft(brand_id="510000-B-NOPE")))
    field, message = field_error(unknown.value)
    assert field == "body.brand_id"
    assert "brand 510000-B-NOPE is not in the federation's brand register" in message
    with pytest.raises(Unprocessable) as revoked:
        await service.publish(VacancyDraft.model_validate(draft(brand_id=REVOKED.id)))
    assert field_error(revoked.value) == (
        "body.brand_id",
        f"brand {REVOKED.id} (川保安) was revoked; a vacancy cannot name it any more",
    )
    assert await stored_brands(engine) == [], "nothing written"

    published = await service.publish(VacancyDraft.model_validate(draft(brand_id=CHEFS.id)))
    plain = await service.publish(VacancyDraft.model_validate(draft()))
    assert await stored_brands(engine) == [CHEFS.id, None]

    with pytest.raises(Unprocessable, match="510000-B-NOPE"):
        await service.update(published["id"], VacancyChanges(brand_id="510000-B-NOPE"), 1)
    changed = await service.update(plain["id"], VacancyChanges(brand_id=CHEFS.id), 1)
    assert (changed["brand_id"], changed["version"]) == (CHEFS.id, 2)
    assert await stored_brands(engine) == [CHEFS.id, CHEFS.id]


async def test_a_brand_that_cannot_be_checked_is_a_503_and_nothing_is_written(
    make_service: Callable[..., VacancyService], engine: AsyncEngine
) -> None:
    service = make_service(Failing())
    with pytest.raises(Problem) as caught:
        await service.publish(VacancyDraft.model_validate(draft(brand_id=CHEFS.id)))
    assert (caught.value.status, caught.value.slug) == (503, "brand-register-unavailable")
    assert "cannot be checked now" in caught.value.detail and "try again" in caught.value.detail
    assert await stored_brands(engine) == []
    assert (await service.publish(VacancyDraft.model_validate(draft())))["brand_id"] is None, "no brand, no lookup"


@pytest.mark.parametrize("brand_id", ["510000-B-", "b-1", "510000-B-../../categories", "5100-B-ABC", "x" * 65])
def test_a_malformed_brand_id_names_the_field(brand_id: str) -> None:
    with pytest.raises(ValidationError) as caught:
        VacancyDraft.model_validate(draft(brand_id=brand_id))
    [error] = caught.value.errors()
    assert error["loc"] == ("brand_id",) and "expected a brand id such as 510000-B-" in error["msg"]


async def test_the_register_asks_the_node_s_brands_service() -> None:
    asked: list[str] = []

    def brands_service(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        brand_id = request.url.path.rsplit("/", 1)[1]
        if brand_id == CHEFS.id:
            return httpx.Response(200, json={"id": CHEFS.id, "status": "recognised", "name_zh": "川厨师", "version": 3})
        if brand_id == "510000-B-DOWN":
            return httpx.Response(503, json={"detail": "database unavailable"})
        return httpx.Response(404, json={"detail": f"no brand {brand_id} on this node"})

    register = HttpBrandRegister(lambda: "http://brands.example:8000/", transport=httpx.MockTransport(brands_service))
    before = {
        r: REGISTRY.get_sample_value("labornet_jobs_brand_checks_total", {"result": r}) or 0
        for r in ("found", "unknown", "unavailable")
    }
    assert await register.find(CHEFS.id) == CHEFS
    assert await register.find("510000-B-NOPE") is None
    with pytest.raises(BrandRegisterUnavailable, match="answered 503"):
        await register.find("510000-B-DOWN")
    assert asked == [
        f"http://brands.example:8000/api/v1/brands/{CHEFS.id}",
        "http://brands.example:8000/api/v1/brands/510000-B-NOPE",
        "http://brands.example:8000/api/v1/brands/510000-B-DOWN",
    ]
    after = {r: REGISTRY.get_sample_value("labornet_jobs_brand_checks_total", {"result": r}) for r in before}
    assert after == {r: before[r] + 1 for r in before}

    with pytest.raises(BrandRegisterUnavailable, match="LABORNET_JOBS_BRANDS_URL"):
        await HttpBrandRegister(lambda: None).find(CHEFS.id)
    with pytest.raises(BrandRegisterUnavailable, match="cannot be reached"):
        await HttpBrandRegister(lambda: "http://127.0.0.1:9", timeout_s=2).find(CHEFS.id)


async def test_a_write_the_busy_database_cannot_take_is_a_503_to_send_again_with_nothing_written(
    make_settings: Callable[..., Settings], database_url: str, node_keys: dict[str, NodeKeys], db_backend: str
) -> None:
    """Another writer holds SQLite's write lock past the node's busy timeout (10 s): publishing a vacancy is a 503
    with Retry-After, not a 500, and nothing of it is stored or queued; sent again once the lock is free, it is
    published once."""
    if db_backend != "sqlite":
        pytest.skip("SQLite's write lock: one writer at a time, waited for up to the busy timeout")
    officer = bearer(node_keys["510000"], "officer")
    body = draft()
    async with serving(create_app(make_settings("510000", "jobs", database_url))) as client:
        holder = sqlite3.connect(database_url.split(":///", 1)[1], isolation_level=None, check_same_thread=False)
        # waited for in a thread: the node's own writers at work meanwhile need the event loop to finish
        await asyncio.to_thread(holder.execute, "BEGIN IMMEDIATE")
        try:
            refused = await client.post("/api/v1/vacancies", json=body, headers=officer, timeout=60)
        finally:
            holder.execute("ROLLBACK")
        try:
            # this node's own (partners' vacancies on the shared broker may be applied meanwhile)
            stored = holder.execute(
                "SELECT (SELECT count(*) FROM vacancy WHERE owner_province = '510000'), (SELECT count(*) FROM outbox)"
            ).fetchone()
        finally:
            holder.close()
        assert_problem(refused, 503, "Send it again")
        assert refused.headers["retry-after"] == "1"
        assert stored == (0, 0)
        published = await client.post("/api/v1/vacancies", json=body, headers=officer, timeout=60)
        assert published.status_code == 201, published.text
        found = (await client.get("/api/v1/vacancies", params={"q": "川菜厨师"})).json()
        assert [item["id"] for item in found["items"] if item["id"].startswith("510000-")] == [published.json()["id"]]


async def test_vacancies_posted_at_once_commit_together_each_event_in_its_request_s_trace(
    make_settings: Callable[..., Settings], database_url: str, node_keys: dict[str, NodeKeys]
) -> None:
    """Officers post 16 vacancies at the same moment: every one is published (201, stored, one event each), in fewer
    transactions than requests (ADR 41), and each event carries the trace of the request that posted it."""
    officer = bearer(node_keys["510000"], "officer")
    batches_before = (
        REGISTRY.get_sample_value("labornet_group_commit_batch_size_count", {"use_case": "vacancy-publish"}) or 0.0
    )
    traces = [f"{n + 1:032x}" for n in range(16)]
    async with serving(create_app(make_settings("510000", "jobs", database_url))) as client:
        answers = await asyncio.gather(
            *(
                client.post(
                    "/api/v1/vacancies",
                    json=draft(title=f"川菜厨师 {n}"),
                    headers={**officer, "traceparent": f"00-{trace}-{n + 1:016x}-01"},
                )
                for n, trace in enumerate(traces)
            )
        )
    assert [answer.status_code for answer in answers] == [201] * 16, [answer.text for answer in answers]
    for answer in answers:  # what the response model writes, byte for byte
        assert answer.content == Vacancy.model_validate(answer.json()).model_dump_json().encode()
        assert answer.headers["etag"] == '"1"'
        assert answer.headers["location"] == f"/api/v1/vacancies/{answer.json()['id']}"
        assert answer.json()["open_headcount"] == 2
    posted = {answer.json()["id"]: trace for answer, trace in zip(answers, traces, strict=True)}
    engine = create_engine(database_url)
    try:
        events, _ = await outbox_events(engine)
        async with readonly_sessionmaker(engine)() as session:
            stored = set((await session.execute(select(vacancy.c.id))).scalars())
    finally:
        await engine.dispose()
    published = [event for event in events if event.type == PUBLISHED]
    assert stored == set(posted)
    assert sorted(event.subject for event in published) == sorted(posted)
    assert {event.subject: (event.traceparent or "").split("-")[1] for event in published} == posted
    assert sorted(event.streamseq for event in published) == list(range(1, 17))  # one stream, no gap, no repeat
    batches = (
        REGISTRY.get_sample_value("labornet_group_commit_batch_size_count", {"use_case": "vacancy-publish"}) or 0.0
    ) - batches_before
    assert 1 <= batches < 16


async def test_a_stopping_node_commits_the_publications_in_flight_before_its_relay_stops(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    """A batch of publications is in its transaction when the node is told to stop: the node waits for it to commit
    before it stops its relay and its engine (ADR 41), so the vacancy and its event are stored, and nothing is
    left half-written."""
    app = create_app(make_settings("510000", "jobs", database_url))
    happened: list[str] = []
    gate = asyncio.Event()
    async with serving(app):
        runtime = app.state.runtime
        service: VacancyService = runtime.extras["vacancies"]
        insert_published = service.insert_published

        async def held_in_its_transaction(*args: Any, **kwargs: Any) -> None:
            await insert_published(*args, **kwargs)
            await gate.wait()

        service.insert_published = held_in_its_transaction  # type: ignore[method-assign]
        relay_stop = runtime.relay.stop

        async def relay_stopping() -> None:
            happened.append("relay stopped")
            await relay_stop()

        runtime.relay.stop = relay_stopping
        publishing = asyncio.create_task(service.publish(VacancyDraft.model_validate(draft(title="川菜厨师 在途"))))
        await asyncio.sleep(0.2)
        assert not publishing.done()
        asyncio.get_running_loop().call_later(0.5, gate.set)
        publishing.add_done_callback(lambda _: happened.append("committed"))
    row = await publishing
    assert happened == ["committed", "relay stopped"]
    engine = create_engine(database_url)
    try:
        events, _ = await outbox_events(engine)
    finally:
        await engine.dispose()
    assert [event.subject for event in events if event.type == PUBLISHED] == [row["id"]]

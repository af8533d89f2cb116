"""Worker subscriptions and precise push: matching rules, matches recorded in the vacancy's transaction, signed
webhooks against a real HTTP receiver, and the /api/v1/me API (with its event stream) served by uvicorn, on real
SQLite and PostgreSQL databases."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from pydantic import ValidationError
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from labornet.jobs.adapters.tables import match, subscription, vacancy, webhook_delivery
from labornet.jobs.adapters.webhooks import (
    UnsafeTarget,
    WebhookDispatcher,
    WebhookSettings,
    check_webhook_url,
    public_address,
)
from labornet.jobs.domain.subscriptions import CriteriaIndex, SubscriptionCriteria, matches, vacancy_matcher
from labornet.jobs.domain.text import document
from labornet.jobs.entrypoints.subscriptions import (
    WEBHOOK_DISPATCHER,
    SubscriptionSettings,
    router,
    subscription_settings,
    webhook_background,
)
from labornet.jobs.service_layer.matching import match_open_vacancies, match_vacancy
from labornet.shared.app import ServiceSpec, create_service_app
from labornet.shared.broker import free_port
from labornet.shared.db import create_engine, readonly_sessionmaker, sessionmaker
from labornet.shared.keys import NodeKeys
from labornet.shared.migrations import upgrade
from labornet.shared.provinces import load_registry
from labornet.shared.settings import Settings
from labornet.shared.testing import assert_problem, bearer, eventually, serving

MIGRATIONS = "labornet.jobs:migrations"
NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def make_vacancy(number: int = 1, **fields: Any) -> dict[str, Any]:
    """A Zhejiang vacancy for a Sichuan cook: a row of the ``vacancy`` table."""
    row: dict[str, Any] = {
        "id": f"330000-V-{number:06d}",
        "owner_province": "330000",
        "employer_name": "杭州西湖餐饮有限公司",
        "employer_credit_code": "91350100M000100Y43",
        "title": "川菜厨师",
        "description": "Sichuan chef for a busy restaurant, 包吃住",
        "occupation_code": "5120",
        "occupation_name": "厨师",
        "division_code": "330106",
        "city": "杭州",
        "headcount": 2,
        "salary_min": 6000,
        "salary_max": 9000,
        "employment_type": "full-time",
        "target_groups": ["migrant-workers"],
        "skills": ["川菜", "刀工"],
        "brand_id": None,
        "contact": "0571-12345678",
        "posted_at": NOW + timedelta(minutes=number),
        "closing_date": date(2026, 6, 30),
        "status": "open",
        "version": 1,
        "updated_at": NOW,
    }
    row.update(fields)
    row["search_tokens"] = document([row["title"], row["description"], row["occupation_name"], *row["skills"]])
    return row


# The rules -----------------------------------------------------------------------------------------------------


def criteria(**values: Any) -> SubscriptionCriteria:
    return SubscriptionCriteria.model_validate(values)


@pytest.mark.parametrize(
    ("codes", "expected"),
    [(["5"], True), (["51"], True), (["512"], True), (["5120"], True), (["52"], False), (["7", "51"], True)],
)
def test_occupation_codes_match_by_prefix(codes: list[str], expected: bool) -> None:
    assert matches(criteria(occupation_codes=codes), make_vacancy()) is expected


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        (["330000"], True),  # the province
        (["330100"], True),  # the city (Hangzhou)
        (["330106"], True),  # the district itself
        (["330105"], False),  # another district
        (["330200"], False),  # another city
        (["510000", "330100"], True),
        (["510000"], False),
    ],
)
def test_division_codes_match_on_significant_digits(codes: list[str], expected: bool) -> None:
    assert matches(criteria(division_codes=codes), make_vacancy()) is expected


def test_province_salary_and_target_group() -> None:
    vacancy_row = make_vacancy()
    assert matches(criteria(provinces=["330000", "320000"]), vacancy_row)
    assert not matches(criteria(provinces=["510000"]), vacancy_row)
    assert matches(criteria(min_salary=9000), vacancy_row)  # salary_max reaches it
    assert not matches(criteria(min_salary=9001), vacancy_row)
    assert matches(criteria(target_group="migrant-workers"), vacancy_row)
    assert not matches(criteria(target_group="veterans"), vacancy_row)


@pytest.mark.parametrize(
    ("keywords", "expected"),
    [
        (["厨师"], True),  # title
        (["CHEF"], True),  # description, case folded
        (["刀工"], True),  # skills
        (["包吃住"], True),  # every bigram of the keyword occurs
        (["厨"], True),  # one Chinese character matches inside a word
        (["厨师", "restaurant"], True),
        (["厨师", "司机"], False),  # every keyword must occur
        (["西湖"], False),  # only in the employer's name, which is not searched
        (["cook"], False),
    ],
)
def test_keywords_must_all_occur_in_the_vacancy_text(keywords: list[str], expected: bool) -> None:
    assert matches(criteria(keywords=keywords), make_vacancy()) is expected


def test_criteria_combine_with_and_and_only_open_vacancies_match() -> None:
    assert matches(criteria(occupation_codes=["51"], provinces=["330000"], keywords=["厨师"]), make_vacancy())
    assert not matches(criteria(occupation_codes=["51"], provinces=["510000"]), make_vacancy())
    for status in ("filled", "withdrawn", "expired"):
        assert not matches(criteria(occupation_codes=["5"]), make_vacancy(status=status))


PROVINCE_CODES = ("330000", "320000", "510000")
OCCUPATION_CODES = ("5", "51", "512", "5120", "5121", "52", "7", "71", "8")


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    subscribed=st.lists(
        st.fixed_dictionaries(
            {
                "provinces": st.lists(st.sampled_from(PROVINCE_CODES), max_size=2),
                "occupation_codes": st.lists(st.sampled_from(OCCUPATION_CODES), max_size=3),
                "min_salary": st.none() | st.integers(5000, 10000),
            }
        ).filter(lambda values: values["provinces"] or values["occupation_codes"] or values["min_salary"]),
        max_size=30,
    ),
    vacancies=st.lists(
        st.tuples(st.sampled_from(PROVINCE_CODES), st.sampled_from(("5120", "5121", "5200", "7110", "8", "51"))),
        min_size=1,
        max_size=10,
    ),
)
def test_the_criteria_index_finds_every_subscription_that_matches(
    subscribed: list[dict[str, Any]], vacancies: list[tuple[str, str]]
) -> None:
    """The index passes over no subscription that would match: for any subscriptions and vacancies, the matches
    found among its candidates are the matches found by testing every subscription, in the same order."""
    items = [(n, criteria(**values)) for n, values in enumerate(subscribed)]
    index = CriteriaIndex(items)
    for number, (province, occupation) in enumerate(vacancies):
        row = make_vacancy(number, owner_province=province, occupation_code=occupation)
        accepts = vacancy_matcher(row)
        candidates = index.candidates(row)
        assert [n for n, c in candidates] == sorted({n for n, c in candidates})  # in order, each once
        assert [n for n, c in candidates if accepts(c)] == [n for n, c in items if accepts(c)]


def test_the_criteria_index_leaves_out_other_provinces_and_occupations() -> None:
    items = [
        ("cook in Zhejiang", criteria(provinces=["330000"], occupation_codes=["512"])),
        ("cook anywhere", criteria(occupation_codes=["5120"])),
        ("anything in Zhejiang", criteria(provinces=["330000"])),
        ("well paid", criteria(min_salary=8000)),
        ("cook in Sichuan", criteria(provinces=["510000"], occupation_codes=["5120"])),
        ("driver in Zhejiang", criteria(provinces=["330000"], occupation_codes=["8"])),
    ]
    found = [name for name, _ in CriteriaIndex(items).candidates(make_vacancy())]
    assert found == ["cook in Zhejiang", "cook anywhere", "anything in Zhejiang", "well paid"]


@pytest.mark.parametrize(
    ("values", "location", "message"),
    [
        ({}, (), "at least one criterion"),
        ({"occupation_codes": ["5a"]}, ("occupation_codes", 0), "expected 1 to 10 digits"),
        ({"division_codes": ["5101"]}, ("division_codes", 0), "expected 6 digits"),
        ({"division_codes": ["990000"]}, ("division_codes", 0), "province prefix"),
        ({"provinces": ["510100"]}, ("provinces", 0), "ending in 0000"),
        ({"keywords": [f"k{i}" for i in range(11)]}, ("keywords",), "at most 10"),
        ({"keywords": ["厨" * 51]}, ("keywords", 0), "at most 50"),
        ({"keywords": ["!!!"]}, ("keywords", 0), "no letters, digits"),
        ({"target_group": "nobody"}, ("target_group",), "migrant-workers"),
        ({"min_salary": -1}, ("min_salary",), "greater than or equal to 0"),
        ({"occupation_code": ["5"]}, ("occupation_code",), "Extra inputs"),
    ],
)
def test_criteria_validation_says_what_is_wrong(
    values: dict[str, Any], location: tuple[Any, ...], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        SubscriptionCriteria.model_validate(values)
    error = caught.value.errors()[0]
    assert error["loc"] == location
    assert message in error["msg"]


def test_provinces_must_be_federation_members_when_the_registry_is_given() -> None:
    registry = load_registry()
    assert SubscriptionCriteria.model_validate({"provinces": ["640000"]}, context={"registry": registry})
    with pytest.raises(ValidationError, match="unknown province '110000'"):
        SubscriptionCriteria.model_validate({"provinces": ["640000", "110000"]}, context={"registry": registry})


def test_codes_are_normalised() -> None:
    assert criteria(occupation_codes=["５１２０"], division_codes=[" 330106 "]).model_dump(
        include={"occupation_codes", "division_codes"}
    ) == {"occupation_codes": ["5120"], "division_codes": ["330106"]}


# Matches in the vacancy's transaction --------------------------------------------------------------------------


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await upgrade(engine, MIGRATIONS)
    yield engine
    await engine.dispose()


async def add_subscription(
    engine: AsyncEngine,
    worker: str = "wang",
    *,
    webhook_url: str | None = None,
    secret: str = "s3cret",
    active: bool = True,
    number: int = 1,
    **values: Any,
) -> str:
    subscription_id = f"sub-{worker}-{number}"
    async with sessionmaker(engine)() as session, session.begin():
        await session.execute(
            insert(subscription).values(
                id=subscription_id,
                worker=worker,
                **criteria(**values).model_dump(mode="json"),
                webhook_url=webhook_url,
                webhook_secret=secret if webhook_url else None,
                active=active,
                created_at=NOW,
            )
        )
    return subscription_id


async def put_vacancy(engine: AsyncEngine, row: dict[str, Any]) -> list[int]:
    """Store ``row`` (replacing an older copy) and match it in the same transaction, as the vacancy service does."""
    async with sessionmaker(engine)() as session, session.begin():
        await session.execute(delete(vacancy).where(vacancy.c.id == row["id"]))
        await session.execute(insert(vacancy).values(**row))
        return await match_vacancy(session, row, now=NOW)


async def rematch(engine: AsyncEngine, row: dict[str, Any]) -> list[int]:
    async with sessionmaker(engine)() as session, session.begin():
        return await match_vacancy(session, row, now=NOW)


async def rows_of(engine: AsyncEngine, table: Any) -> list[dict[str, Any]]:
    async with readonly_sessionmaker(engine)() as session:
        return [dict(row._mapping) for row in (await session.execute(select(table).order_by(table.c.id))).all()]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def deliveries(channel: str, outcome: str) -> float:
    return metric("labornet_jobs_match_deliveries_total", channel=channel, outcome=outcome)


async def test_a_vacancy_matches_a_subscription_once_however_often_it_changes(engine: AsyncEngine) -> None:
    wanted = await add_subscription(engine, "wang", occupation_codes=["51"])
    await add_subscription(engine, "li", occupation_codes=["7"])
    await add_subscription(engine, "zhao", active=False, occupation_codes=["5"])
    counted = metric("labornet_jobs_matches_total", owner_province="330000")

    first = await put_vacancy(engine, make_vacancy())
    assert len(first) == 1
    assert await rematch(engine, make_vacancy()) == []
    assert await put_vacancy(engine, make_vacancy(version=2, title="川菜厨师（急招）")) == []
    assert metric("labornet_jobs_matches_total", owner_province="330000") - counted == 1

    [row] = await rows_of(engine, match)
    assert (row["id"], row["subscription_id"], row["worker"]) == (first[0], wanted, "wang")
    assert (row["vacancy_version"], row["vacancy_status"]) == (2, "open")


async def test_an_older_version_never_overwrites_a_newer_one_and_closing_shows(engine: AsyncEngine) -> None:
    await add_subscription(engine, occupation_codes=["5"])
    await put_vacancy(engine, make_vacancy(version=1))
    await put_vacancy(engine, make_vacancy(version=3))
    assert await rematch(engine, make_vacancy(version=2)) == []
    [row] = await rows_of(engine, match)
    assert row["vacancy_version"] == 3

    assert await put_vacancy(engine, make_vacancy(version=4, status="filled")) == []
    assert await rematch(engine, make_vacancy(version=3)) == []
    [row] = await rows_of(engine, match)
    assert (row["vacancy_version"], row["vacancy_status"]) == (4, "filled")


async def test_an_update_that_starts_to_match_creates_the_match(engine: AsyncEngine) -> None:
    await add_subscription(engine, min_salary=10000)
    assert await put_vacancy(engine, make_vacancy(version=1)) == []
    assert len(await put_vacancy(engine, make_vacancy(version=2, salary_max=12000))) == 1


async def test_a_webhook_delivery_is_queued_only_for_subscriptions_with_a_url(engine: AsyncEngine) -> None:
    hooked = await add_subscription(engine, "wang", webhook_url="http://127.0.0.1:9/hook", keywords=["厨师"])
    await add_subscription(engine, "li", keywords=["厨师"])
    created = await put_vacancy(engine, make_vacancy())
    assert len(created) == 2

    [delivery] = await rows_of(engine, webhook_delivery)
    [hooked_match] = [row for row in await rows_of(engine, match) if row["subscription_id"] == hooked]
    assert delivery["match_id"] == hooked_match["id"]
    assert (delivery["subscription_id"], delivery["attempts"], delivery["delivered_at"]) == (hooked, 0, None)
    assert delivery["payload"] == {
        "match_id": hooked_match["id"],
        "subscription_id": hooked,
        "vacancy": {
            "id": "330000-V-000001",
            "title": "川菜厨师",
            "owner_province": "330000",
            "city": "杭州",
            "salary_min": 6000,
            "salary_max": 9000,
            "employment_type": "full-time",
            "closing_date": "2026-06-30",
            "status": "open",
            "version": 1,
        },
    }
    await put_vacancy(engine, make_vacancy(version=2))
    assert len(await rows_of(engine, webhook_delivery)) == 1  # an update does not notify again


async def test_a_new_subscription_matches_the_most_recent_open_vacancies(engine: AsyncEngine) -> None:
    for number in range(1, 5):
        await put_vacancy(engine, make_vacancy(number))
    await put_vacancy(engine, make_vacancy(5, status="withdrawn"))
    await put_vacancy(engine, make_vacancy(6, occupation_code="7112"))
    subscription_id = await add_subscription(engine, occupation_codes=["51"])
    async with sessionmaker(engine)() as session, session.begin():
        criteria_ = criteria(occupation_codes=["51"])
        created = await match_open_vacancies(session, subscription_id, criteria_, limit=3, now=NOW)
    rows = await rows_of(engine, match)
    assert sorted(created) == [row["id"] for row in rows]
    # the three most recently posted, matched oldest first so that the newest has the highest id
    assert [row["vacancy_id"] for row in rows] == ["330000-V-000002", "330000-V-000003", "330000-V-000004"]


# Webhook delivery against a real HTTP receiver -----------------------------------------------------------------


class Receiver:
    """A real HTTP server on 127.0.0.1 that records POSTs and answers with scripted statuses (then ``default``)."""

    def __init__(self) -> None:
        self.script: list[int] = []
        self.default = 200
        self.requests: list[tuple[float, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((time.monotonic(), dict(self.headers.items()), body))
                self.send_response(receiver.script.pop(0) if receiver.script else receiver.default)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/labornet"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def expected_signature(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def fast_settings(**values: Any) -> WebhookSettings:
    """Quick retries; the receivers of these tests listen on 127.0.0.1, so private targets are allowed."""
    defaults: dict[str, Any] = {
        "poll_interval_s": 0.05,
        "first_backoff_s": 0.2,
        "max_error_backoff_s": 0.2,
        "private_targets": True,
    }
    return WebhookSettings(**{**defaults, **values})


async def running(dispatcher: WebhookDispatcher, check: Callable[[], Any], timeout_s: float = 20) -> None:
    """Run ``dispatcher`` until ``check`` holds, then stop it (which must end its run)."""
    task = asyncio.create_task(dispatcher.run())
    try:
        await eventually(check, timeout_s=timeout_s)
    finally:
        await dispatcher.stop()
        await asyncio.wait_for(task, 5)


def dispatcher_for(engine: AsyncEngine, settings: WebhookSettings) -> WebhookDispatcher:
    return WebhookDispatcher(
        sessions=sessionmaker(engine), read_sessions=readonly_sessionmaker(engine), settings=settings
    )


async def delivery(engine: AsyncEngine) -> dict[str, Any]:
    [row] = await rows_of(engine, webhook_delivery)
    return row


async def test_the_dispatcher_signs_and_delivers(engine: AsyncEngine, receiver: Receiver) -> None:
    delivered_before = deliveries("webhook", "delivered")
    await add_subscription(engine, webhook_url=receiver.url, secret="wang-secret", keywords=["厨师"])
    await put_vacancy(engine, make_vacancy())
    queued = await delivery(engine)

    async def delivered() -> bool:
        return (await delivery(engine))["delivered_at"] is not None

    await running(dispatcher_for(engine, fast_settings()), delivered)
    [(_, headers, body)] = receiver.requests
    timestamp = headers["X-LaborNet-Timestamp"]
    assert abs(int(timestamp) - time.time()) < 60
    assert headers["X-LaborNet-Signature"] == expected_signature("wang-secret", timestamp, body)
    assert headers["X-LaborNet-Signature"] != expected_signature("other-secret", timestamp, body)
    assert headers["X-LaborNet-Delivery"] == str(queued["id"])
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == queued["payload"]
    row = await delivery(engine)
    assert (row["attempts"], row["failed_at"], row["last_error"]) == (1, None, None)
    assert deliveries("webhook", "delivered") - delivered_before == 1


async def test_a_host_name_is_called_at_the_address_that_was_checked(engine: AsyncEngine, receiver: Receiver) -> None:
    by_name = receiver.url.replace("127.0.0.1", "localhost")
    await add_subscription(engine, webhook_url=by_name, keywords=["厨师"])
    await put_vacancy(engine, make_vacancy())

    async def delivered() -> bool:
        return (await delivery(engine))["delivered_at"] is not None

    await running(dispatcher_for(engine, fast_settings()), delivered)
    [(_, headers, _)] = receiver.requests
    assert headers["Host"] == by_name.removeprefix("http://").split("/")[0]  # the URL's host, not the address


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_webhooks_never_call_a_private_address_by_default(
    engine: AsyncEngine, receiver: Receiver, host: str
) -> None:
    """A subscription stored with an internal URL (made while private targets were allowed, or by a name that
    later resolves inside) is refused at delivery: no request, no retry, the reason recorded."""
    await add_subscription(engine, webhook_url=receiver.url.replace("127.0.0.1", host), keywords=["厨师"])
    await put_vacancy(engine, make_vacancy())

    async def failed() -> bool:
        return (await delivery(engine))["failed_at"] is not None

    await running(dispatcher_for(engine, fast_settings(private_targets=False)), failed)
    row = await delivery(engine)
    assert row["attempts"] == 1
    assert "resolves to 127.0.0.1, which is not a public address" in row["last_error"]
    assert receiver.requests == []


async def test_the_dispatcher_retries_with_exponential_backoff(engine: AsyncEngine, receiver: Receiver) -> None:
    receiver.script = [500, 500]
    await add_subscription(engine, webhook_url=receiver.url, keywords=["厨师"])
    await put_vacancy(engine, make_vacancy())

    async def delivered() -> bool:
        return (await delivery(engine))["delivered_at"] is not None

    await running(dispatcher_for(engine, fast_settings(first_backoff_s=0.3, backoff_factor=2)), delivered)
    times = [at for at, _, _ in receiver.requests]
    assert len(times) == 3
    assert {headers["X-LaborNet-Delivery"] for _, headers, _ in receiver.requests} == {
        str((await delivery(engine))["id"])
    }
    assert times[1] - times[0] >= 0.3
    assert times[2] - times[1] >= 0.6
    assert (await delivery(engine))["attempts"] == 3


async def test_a_dispatcher_at_rest_wakes_when_deliveries_are_queued_and_when_a_retry_falls_due(
    engine: AsyncEngine, receiver: Receiver
) -> None:
    """With a minute between looks, a match committed while the dispatcher sleeps is sent at once (the commit that
    queued it wakes the dispatcher of its process) and the retry is sent when it falls due, not a minute later."""
    receiver.script = [500]
    await add_subscription(engine, webhook_url=receiver.url, keywords=["厨师"])
    dispatcher = dispatcher_for(engine, fast_settings(poll_interval_s=60, first_backoff_s=0.3))
    task = asyncio.create_task(dispatcher.run())
    try:
        await asyncio.sleep(0.3)  # it looked, found nothing, and sleeps
        assert not task.done()
        await put_vacancy(engine, make_vacancy())

        async def delivered() -> bool:
            return (await delivery(engine))["delivered_at"] is not None

        await eventually(delivered, timeout_s=10)
    finally:
        await dispatcher.stop()
        await asyncio.wait_for(task, 5)
    first, second = (at for at, _, _ in receiver.requests)
    assert 0.3 <= second - first < 10
    assert (await delivery(engine))["attempts"] == 2


async def test_the_dispatcher_gives_up_after_the_last_attempt(engine: AsyncEngine, receiver: Receiver) -> None:
    receiver.default = 503
    before = deliveries("webhook", "retrying"), deliveries("webhook", "failed")
    await add_subscription(engine, webhook_url=receiver.url, keywords=["厨师"])
    await put_vacancy(engine, make_vacancy())

    async def failed() -> bool:
        return (await delivery(engine))["failed_at"] is not None

    await running(dispatcher_for(engine, fast_settings(first_backoff_s=0.05, max_attempts=3)), failed)
    row = await delivery(engine)
    assert (row["attempts"], row["delivered_at"]) == (3, None)
    assert "HTTP 503" in row["last_error"]
    assert len(receiver.requests) == 3
    after = deliveries("webhook", "retrying"), deliveries("webhook", "failed")
    assert (after[0] - before[0], after[1] - before[1]) == (2, 1)


async def test_an_unreachable_receiver_is_retried_later(engine: AsyncEngine) -> None:
    await add_subscription(engine, webhook_url=f"http://127.0.0.1:{free_port()}/hook", keywords=["厨师"])
    await put_vacancy(engine, make_vacancy())
    dispatcher = dispatcher_for(engine, fast_settings(first_backoff_s=60))
    assert await dispatcher.deliver_due() == 1
    row = await delivery(engine)
    assert row["attempts"] == 1 and row["failed_at"] is None and row["delivered_at"] is None
    assert "ConnectError" in row["last_error"]
    assert await dispatcher.deliver_due() == 0  # not due again for a minute


async def test_deliveries_of_a_deactivated_subscription_are_dropped(engine: AsyncEngine, receiver: Receiver) -> None:
    subscription_id = await add_subscription(engine, webhook_url=receiver.url, keywords=["厨师"])
    await put_vacancy(engine, make_vacancy())
    async with sessionmaker(engine)() as session, session.begin():
        await session.execute(update(subscription).where(subscription.c.id == subscription_id).values(active=False))
    assert await dispatcher_for(engine, fast_settings()).deliver_due() == 1
    row = await delivery(engine)
    assert row["failed_at"] is not None and "deactivated" in row["last_error"]
    assert receiver.requests == []


async def test_the_dispatcher_survives_database_errors(database_url: str, receiver: Receiver) -> None:
    engine = create_engine(database_url)  # not migrated yet: every pass fails
    try:
        task = asyncio.create_task(dispatcher_for(engine, fast_settings()).run())
        await asyncio.sleep(0.5)
        assert not task.done()
        await upgrade(engine, MIGRATIONS)
        await add_subscription(engine, webhook_url=receiver.url, keywords=["厨师"])
        await put_vacancy(engine, make_vacancy())

        async def delivered() -> bool:
            return len(receiver.requests) == 1

        await eventually(delivered, timeout_s=10)
        task.cancel()  # the runtime cancels background tasks on shutdown
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await engine.dispose()


# The API, served by uvicorn --------------------------------------------------------------------------------


@pytest.fixture
def settings(make_settings: Callable[..., Settings], database_url: str) -> Settings:
    return make_settings("510000", "jobs", database_url)


def subscriptions_app(settings: Settings, **overrides: Any) -> FastAPI:
    spec = ServiceSpec(
        name="jobs", version="test", migrations=MIGRATIONS, routers=[router], background=webhook_background
    )
    app = create_service_app(spec, settings)
    if overrides:
        app.dependency_overrides[subscription_settings] = lambda: SubscriptionSettings(**overrides)
    return app


@pytest.fixture
def wang(node_keys: dict[str, NodeKeys]) -> dict[str, str]:
    return bearer(node_keys["510000"], "worker", sub="wang")


@pytest.fixture
def li(node_keys: dict[str, NodeKeys]) -> dict[str, str]:
    return bearer(node_keys["510000"], "worker", sub="li")


SUBSCRIPTIONS = "/api/v1/me/subscriptions"
MATCHES = "/api/v1/me/matches"


async def test_subscription_lifecycle(
    settings: Settings, wang: dict[str, str], li: dict[str, str], node_keys: dict[str, NodeKeys]
) -> None:
    body = {"occupation_codes": ["51"], "provinces": ["330000"], "webhook_url": "https://example.org/hooks/wang"}
    async with serving(subscriptions_app(settings, max_per_worker=2)) as client:
        assert_problem(await client.get(SUBSCRIPTIONS), 401, "bearer token")
        officer = bearer(node_keys["510000"], "officer", sub="wang")
        assert_problem(await client.post(SUBSCRIPTIONS, json=body, headers=officer), 403, "worker")

        created = await client.post(SUBSCRIPTIONS, json=body, headers=wang)
        assert created.status_code == 201, created.text
        location = created.headers["Location"]
        made = created.json()
        assert location == f"{SUBSCRIPTIONS}/{made['id']}"
        assert len(made["webhook_secret"]) >= 40
        assert made["webhook_url"] == "https://example.org/hooks/wang"
        assert (made["occupation_codes"], made["provinces"], made["active"]) == (["51"], ["330000"], True)
        assert made["initial_matches"] == 0

        shown = (await client.get(location, headers=wang)).json()
        assert "webhook_secret" not in shown
        assert shown == {k: v for k, v in made.items() if k not in ("webhook_secret", "initial_matches")}
        plain = (await client.post(SUBSCRIPTIONS, json={"keywords": ["厨师"]}, headers=wang)).json()
        assert plain["webhook_secret"] is None
        listed = (await client.get(SUBSCRIPTIONS, headers=wang)).json()["items"]
        assert {item["id"] for item in listed} == {made["id"], plain["id"]}
        assert_problem(await client.post(SUBSCRIPTIONS, json=body, headers=wang), 409, "2 active subscriptions")

        assert_problem(await client.get(location, headers=li), 404, made["id"])
        assert_problem(await client.delete(location, headers=li), 404, made["id"])
        assert (await client.get(SUBSCRIPTIONS, headers=li)).json() == {"items": []}

        assert (await client.delete(location, headers=wang)).status_code == 204
        assert [item["id"] for item in (await client.get(SUBSCRIPTIONS, headers=wang)).json()["items"]] == [plain["id"]]
        assert (await client.get(location, headers=wang)).json()["active"] is False
        assert (await client.delete(location, headers=wang)).status_code == 204
        assert_problem(await client.get(f"{SUBSCRIPTIONS}/no-such-id", headers=wang), 404, "no-such-id")


INVALID_BODIES: list[tuple[dict[str, Any], str, str]] = [
    ({}, "body", "at least one criterion"),
    ({"division_codes": ["5101"]}, "division_codes.0", "expected 6 digits"),
    ({"provinces": ["330000", "110000"]}, "provinces.1", "unknown province '110000'"),
    ({"occupation_codes": ["5-1"]}, "occupation_codes.0", "ISCO-08"),
    ({"keywords": [f"k{i}" for i in range(11)]}, "keywords", "at most 10"),
    ({"keywords": ["厨师"], "webhook_url": "ftp://example.org/x"}, "webhook_url", "scheme"),
    ({"keywords": ["厨师"], "webhook_url": "https://example.org/" + "x" * 500}, "webhook_url", "500"),
    ({"occupation_code": ["5"]}, "occupation_code", "Extra inputs"),
    ({"keywords": ["厨师"], "webhook_url": "http://10.1.2.3:8080/x"}, "webhook_url", "not a public address"),
    ({"keywords": ["厨师"], "webhook_url": "http://[::1]/x"}, "webhook_url", "not a public address"),
    ({"keywords": ["厨师"], "webhook_url": "http://169.254.169.254/latest"}, "webhook_url", "not a public address"),
    ({"keywords": ["厨师"], "webhook_url": "https://localhost/x"}, "webhook_url", "this machine"),
    *(
        ({"keywords": ["厨师"], "webhook_url": f"http://[{address}]/x"}, "webhook_url", "embeds the IPv4 address")
        for address in ("::127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::1", "::ffff:127.0.0.1", "::ffff:0:a01:203")
    ),
    ({"keywords": ["厨师"], "webhook_url": "http://[2001:0:4136:e378:8000:63bf:f7f7:f7f7]/x"}, "webhook_url", "Teredo"),
    ({"keywords": ["厨师"], "webhook_url": "http://[64:ff9b:1::808:808]/x"}, "webhook_url", "local-use NAT64"),
]

# addresses written into a webhook URL: IPv6 forms that embed a public IPv4 address reach a public host
EMBEDDED_TARGETS = {
    "::127.0.0.1": False,
    "64:ff9b::7f00:1": False,
    "64:ff9b::a00:1": False,
    "2002:7f00:1::1": False,
    "2002:c0a8:101::1": False,
    "::ffff:127.0.0.1": False,
    "::ffff:0:7f00:1": False,
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7": False,
    "::": False,
    "64:ff9b::808:808": True,
    "2002:808:808::1": True,
    "::ffff:8.8.8.8": True,
    "2606:4700:4700::1111": True,
}


@pytest.mark.parametrize(("address", "public"), EMBEDDED_TARGETS.items())
async def test_ipv4_embedded_ipv6_targets_are_judged_by_their_ipv4_address(address: str, public: bool) -> None:
    """At subscription (the URL check) and at delivery (the address the host resolves to), with the same rule."""
    url = f"http://[{address}]:8080/hook"
    settings = WebhookSettings()
    if public:
        check_webhook_url(url, settings)
        assert await public_address(httpx.URL(url), settings) == address
    else:
        with pytest.raises(UnsafeTarget, match="not a public address"):
            check_webhook_url(url, settings)
        with pytest.raises(UnsafeTarget, match=f"resolves to {address}, which is not a public address"):
            await public_address(httpx.URL(url), settings)


async def test_invalid_subscriptions_are_422_problems_naming_the_field(
    settings: Settings, wang: dict[str, str]
) -> None:
    async with serving(subscriptions_app(settings)) as client:
        for body, field, message in INVALID_BODIES:
            problem = assert_problem(await client.post(SUBSCRIPTIONS, json=body, headers=wang), 422)
            errors = problem["errors"]
            assert isinstance(errors, list)
            assert any(e["field"] == field and message in e["message"] for e in errors), (body, errors)
        assert (await client.get(SUBSCRIPTIONS, headers=wang)).json() == {"items": []}


async def test_subscribing_finds_open_vacancies_and_pages_through_matches(
    settings: Settings, engine: AsyncEngine, wang: dict[str, str], li: dict[str, str]
) -> None:
    for number in range(1, 6):
        await put_vacancy(engine, make_vacancy(number, title=f"川菜厨师 {number}"))
    await put_vacancy(engine, make_vacancy(6, status="filled"))
    await put_vacancy(engine, make_vacancy(7, owner_province="320000", division_code="320102"))
    async with serving(subscriptions_app(settings)) as client:
        made = await client.post(SUBSCRIPTIONS, json={"keywords": ["厨师"], "provinces": ["330000"]}, headers=wang)
        assert made.json()["initial_matches"] == 5

        pages: list[list[dict[str, Any]]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await client.get(MATCHES, params=params, headers=wang)).json()
            pages.append(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert [len(items) for items in pages] == [2, 2, 1]
        items = [item for items in pages for item in items]
        assert [item["vacancy"]["title"] for item in items] == [f"川菜厨师 {n}" for n in range(5, 0, -1)]
        assert [item["id"] for item in items] == sorted((item["id"] for item in items), reverse=True)
        first = items[0]
        assert first["subscription_id"] == made.json()["id"]
        assert (first["vacancy_status"], first["vacancy_version"]) == ("open", 1)
        assert first["vacancy"] == {
            "id": "330000-V-000005",
            "title": "川菜厨师 5",
            "city": "杭州",
            "owner_province": "330000",
            "salary_min": 6000,
            "salary_max": 9000,
            "status": "open",
            "version": 1,
        }

        await put_vacancy(engine, make_vacancy(5, title="川菜厨师 5", status="filled", version=2))
        newest = (await client.get(MATCHES, params={"limit": 1}, headers=wang)).json()["items"][0]
        assert (newest["id"], newest["vacancy_status"], newest["vacancy"]["status"]) == (
            first["id"],
            "filled",
            "filled",
        )

        assert (await client.get(MATCHES, headers=li)).json() == {"items": [], "next_cursor": None}
        body = assert_problem(await client.get(MATCHES, params={"cursor": "bm9uc2Vuc2U"}, headers=wang), 422, "cursor")
        errors: list[dict[str, Any]] = body["errors"]  # type: ignore[assignment]
        [error] = errors
        assert (error["field"], error["input"]) == ("query.cursor", "bm9uc2Vuc2U")
        assert_problem(await client.get(MATCHES, params={"limit": 0}, headers=wang), 422, "limit")


async def read_sse(
    lines: AsyncIterator[str], *, until: Callable[[list[str]], bool], timeout_s: float = 10
) -> list[str]:
    """Lines of the stream up to the first blank line after which ``until(lines)`` holds."""
    seen: list[str] = []
    async with asyncio.timeout(timeout_s):
        async for line in lines:
            seen.append(line)
            if line == "" and until(seen):
                return seen
    raise AssertionError(f"the stream ended early: {seen}")


def events(lines: list[str]) -> list[dict[str, Any]]:
    found: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in lines:
        if line == "":
            if "data" in current:
                found.append(current)
            current = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            current[name] = value
    return [{"id": int(e["id"]), "event": e["event"], "data": json.loads(e["data"])} for e in found]


async def test_match_stream_pushes_new_matches_and_resumes(
    settings: Settings, engine: AsyncEngine, wang: dict[str, str], li: dict[str, str]
) -> None:
    await put_vacancy(engine, make_vacancy(1))  # matched when subscribing: before the stream, not sent on it
    app = subscriptions_app(settings, stream_heartbeat_s=0.3)
    async with serving(app) as client:
        made = await client.post(SUBSCRIPTIONS, json={"keywords": ["厨师"]}, headers=wang)
        assert made.json()["initial_matches"] == 1
        [first] = [item["id"] for item in (await client.get(MATCHES, headers=wang)).json()["items"]]

        async with client.stream("GET", f"{MATCHES}/stream", headers=wang) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            # the stream starts after the newest match and says so, so that a reconnection resumes from there
            assert await read_sse(lines, until=lambda seen: True) == ["retry: 1000", f"id: {first}", ""]
            sent = deliveries("stream", "sent")
            [second] = await put_vacancy(engine, make_vacancy(2, title="湘菜厨师"))
            [event] = events(await read_sse(lines, until=lambda seen: bool(events(seen))))
            assert deliveries("stream", "sent") - sent == 1
        assert (event["id"], event["event"]) == (second, "match")
        assert event["data"]["id"] == second
        assert event["data"]["vacancy"]["title"] == "湘菜厨师"
        assert event["data"]["subscription_id"] == made.json()["id"]

        # while disconnected, two more matches; the reconnecting client says what it saw last
        [third] = await put_vacancy(engine, make_vacancy(3))
        [fourth] = await put_vacancy(engine, make_vacancy(4))
        resume = {**wang, "Last-Event-ID": str(second)}
        async with client.stream("GET", f"{MATCHES}/stream", headers=resume) as stream:
            lines = stream.aiter_lines()
            resumed = events(await read_sse(lines, until=lambda seen: len(events(seen)) >= 2))
            assert [e["id"] for e in resumed] == [third, fourth]
            quiet = await read_sse(lines, until=lambda seen: ": keep-alive" in seen)
            assert events(quiet) == []

        # another worker's stream sees none of it, even asked to start from the beginning
        async with client.stream("GET", f"{MATCHES}/stream", headers={**li, "Last-Event-ID": "0"}) as stream:
            lines = stream.aiter_lines()
            seen = await read_sse(lines, until=lambda seen: ": keep-alive" in seen)
            assert events(seen) == []

        bad = await client.get(f"{MATCHES}/stream", headers={**wang, "Last-Event-ID": "yesterday"})
        assert_problem(bad, 422, "Last-Event-ID")

        # a stream ends after its maximum duration (so that a shutdown never waits for it forever)
        short = SubscriptionSettings(stream_max_duration_s=0.5)
        app.dependency_overrides[subscription_settings] = lambda: short
        started = time.monotonic()
        async with client.stream("GET", f"{MATCHES}/stream", headers=wang) as stream:
            assert [line async for line in stream.aiter_lines()][:2] == ["retry: 1000", f"id: {fourth}"]
        assert time.monotonic() - started < 5


async def test_match_stream_sends_a_match_that_commits_after_a_later_one(
    settings: Settings, engine: AsyncEngine, wang: dict[str, str]
) -> None:
    """On PostgreSQL ids come from a sequence but transactions commit in any order: a lower id may appear later."""
    await put_vacancy(engine, make_vacancy(1))
    async with serving(subscriptions_app(settings, stream_heartbeat_s=0.3)) as client:
        subscription_id = (await client.post(SUBSCRIPTIONS, json={"keywords": ["厨师"]}, headers=wang)).json()["id"]
        start = {**wang, "Last-Event-ID": "0"}  # from the beginning: the match made when subscribing comes first
        async with client.stream("GET", f"{MATCHES}/stream", headers=start) as stream:
            lines = stream.aiter_lines()
            [initial] = events(await read_sse(lines, until=lambda seen: bool(events(seen))))
            for match_id in (initial["id"] + 100, initial["id"] + 50):
                async with sessionmaker(engine)() as session, session.begin():
                    await session.execute(
                        insert(match).values(
                            id=match_id,
                            subscription_id=subscription_id,
                            worker="wang",
                            vacancy_id=f"330000-V-{match_id:06d}",
                            vacancy_version=1,
                            vacancy_status="open",
                            matched_at=NOW,
                            updated_at=NOW,
                        )
                    )
                [event] = events(await read_sse(lines, until=lambda seen: bool(events(seen))))
                assert event["id"] == match_id
            quiet = await read_sse(lines, until=lambda seen: ": keep-alive" in seen)
            assert events(quiet) == []  # nothing is sent twice


async def test_the_service_pushes_signed_webhooks(
    settings: Settings,
    engine: AsyncEngine,
    wang: dict[str, str],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LABORNET_WEBHOOK_PRIVATE_TARGETS", "true")  # the receiver listens on 127.0.0.1
    app = subscriptions_app(settings)
    async with serving(app) as client:
        runtime = app.state.runtime
        assert isinstance(runtime.extras[WEBHOOK_DISPATCHER], WebhookDispatcher)
        made = await client.post(
            SUBSCRIPTIONS, json={"occupation_codes": ["5120"], "webhook_url": receiver.url}, headers=wang
        )
        secret = made.json()["webhook_secret"]
        [match_id] = await put_vacancy(engine, make_vacancy())

        async def received() -> bool:
            return len(receiver.requests) == 1

        await eventually(received, timeout_s=15)
    assert all(task.done() for task in runtime.tasks)  # the dispatcher ended with the service
    [(_, headers, body)] = receiver.requests
    assert headers["X-LaborNet-Signature"] == expected_signature(secret, headers["X-LaborNet-Timestamp"], body)
    payload = json.loads(body)
    assert (payload["match_id"], payload["subscription_id"]) == (match_id, made.json()["id"])
    assert payload["vacancy"]["title"] == "川菜厨师"

    async with readonly_sessionmaker(engine)() as session:
        delivered = await session.execute(select(func.count()).where(webhook_delivery.c.delivered_at.is_not(None)))
        assert delivered.scalar_one() == 1

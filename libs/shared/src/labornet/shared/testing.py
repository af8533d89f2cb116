"""Pytest fixtures for real infrastructure: the embedded broker, SQLite and PostgreSQL databases, node keys.

Loaded for the whole repository with ``-p labornet.shared.testing``. PostgreSQL tests run when
``LABORNET_TEST_POSTGRES_URL`` is set (e.g. ``postgresql+asyncpg://postgres@127.0.0.1:5432/test``); each test
gets a database of its own, dropped afterwards. Without it they are skipped with a visible reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from fastapi import FastAPI
from sqlalchemy import MetaData, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from labornet.shared.auth import issue_token
from labornet.shared.broker import EmbeddedBroker, free_port
from labornet.shared.db import create_engine, outbox, platform_metadata, sessionmaker
from labornet.shared.envelope import Envelope
from labornet.shared.inbox import EventConsumer
from labornet.shared.keys import NodeKeys, ensure_node_keys
from labornet.shared.migrations import alembic_config
from labornet.shared.outbox import decode_headers
from labornet.shared.settings import ENV_PREFIX, Settings
from labornet.shared.signing import load_private_key

POSTGRES_ENV = "LABORNET_TEST_POSTGRES_URL"
TEST_PROVINCES = ("510000", "330000", "500000")


def pytest_configure(config: pytest.Config) -> None:
    """Rate limits are off in test runs, which send more from 127.0.0.1 than any client would; a test of the limits
    turns them on in its settings."""
    os.environ.setdefault(f"{ENV_PREFIX}RATE_LIMIT_ENABLED", "false")


def postgres_base_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


async def create_postgres_database(base_url: str) -> tuple[str, str]:
    """Create an empty database next to ``base_url``; return (its URL, its name)."""
    import asyncpg

    name = f"labornet_test_{uuid.uuid4().hex[:12]}"
    dsn = base_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    head, _, _ = base_url.rpartition("/")
    return f"{head}/{name}", name


async def drop_postgres_database(base_url: str, name: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(base_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One real embedded broker for the whole test session."""
    broker = EmbeddedBroker(log_path=tmp_path_factory.mktemp("broker") / "tansu.log")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of this test's own, which the test may stop and restart (outage tests)."""
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def federation_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with keys for three provinces and their trust list."""
    root = tmp_path_factory.mktemp("federation")
    for province in TEST_PROVINCES:
        ensure_node_keys(province, root / "keys" / province, root / "trust-list.json")
    return root


@pytest.fixture(scope="session")
def node_keys(federation_dir: Path) -> dict[str, NodeKeys]:
    return {
        province: ensure_node_keys(province, federation_dir / "keys" / province, federation_dir / "trust-list.json")
        for province in TEST_PROVINCES
    }


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_backend(request: pytest.FixtureRequest) -> str:
    """Runs a test once per database: SQLite always, PostgreSQL when LABORNET_TEST_POSTGRES_URL is set."""
    backend = str(request.param)
    if backend == "postgresql" and postgres_base_url() is None:
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV} (e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/test)")
    return backend


@pytest.fixture
async def new_database_url(db_backend: str, tmp_path: Path) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """Factory of fresh, empty databases of the current backend (one per node in multi-node tests)."""
    created: list[str] = []

    async def make() -> str:
        if db_backend == "sqlite":
            return f"sqlite+aiosqlite:///{tmp_path / f'db-{uuid.uuid4().hex[:8]}.sqlite3'}"
        base = postgres_base_url()
        assert base is not None
        url, name = await create_postgres_database(base)
        created.append(name)
        return url

    yield make
    base = postgres_base_url()
    for name in created:
        assert base is not None
        await drop_postgres_database(base, name)


@pytest.fixture
async def database_url(new_database_url: Callable[[], Awaitable[str]]) -> str:
    """One fresh, empty database of the current backend."""
    return await new_database_url()


@pytest.fixture
def make_settings(federation_dir: Path, kafka_broker: EmbeddedBroker) -> Callable[..., Settings]:
    """Settings for a service of a province against the session broker and the test federation's keys."""

    def build(province: str, service: str, database_url: str, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "province": province,
            "service": service,
            "data_dir": federation_dir,
            "database_url": database_url,
            "kafka_bootstrap_servers": kafka_broker.bootstrap_servers,
            "log_json": False,
            "inbox_retry_backoff_s": 0.05,
            "kafka_session_timeout_ms": 3000,
            "kafka_heartbeat_interval_ms": 500,
            "outbox_max_backoff_s": 1.0,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return build


async def platform_engine(url: str, *extra: MetaData) -> AsyncEngine:
    """An engine on ``url`` with the platform tables (and ``extra`` metadata) created."""
    engine = create_engine(url)
    async with engine.begin() as connection:
        for metadata in (platform_metadata, *extra):
            await connection.run_sync(metadata.create_all)
    return engine


async def outbox_events(engine: AsyncEngine, after_id: int = 0) -> tuple[list[Envelope], int]:
    """The events a node wrote to its outbox after row ``after_id``, as partners receive them, and the last row id:
    the bus minus Kafka, for tests that decide the order, the duplicates and the replays."""
    async with sessionmaker(engine)() as session:
        rows = (await session.execute(select(outbox).where(outbox.c.id > after_id).order_by(outbox.c.id))).all()
    envelopes = [Envelope.from_kafka(r.message_key, r.payload, decode_headers(r.headers)) for r in rows]
    return envelopes, rows[-1].id if rows else after_id


async def consume_all(
    bootstrap_servers: str, topic: str, expected: int, timeout_s: float = 20.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read a topic from the beginning until ``expected`` records arrived (or the timeout passed)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=10
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        partitions: set[int] = set()
        while not partitions and loop.time() < deadline:
            metadata = await consumer._client.fetch_all_metadata()
            partitions = metadata.partitions_for_topic(topic) or set()
            if not partitions:
                await asyncio.sleep(0.1)
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        while len(records) < expected and loop.time() < deadline:
            for batch in (await consumer.getmany(timeout_ms=100)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


def lag_measuring_consumer(service: str, group_id: str) -> EventConsumer:
    """An :class:`EventConsumer` with only what its lag measurement (``_update_lag``) reads, measuring every time it
    is asked: the consumer it measures is passed to ``_update_lag``."""
    consumer: Any = object.__new__(EventConsumer)
    consumer.service, consumer.group_id, consumer.lag_interval_s = service, group_id, 0.0
    return consumer  # type: ignore[no-any-return]


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 20.0, interval_s: float = 0.05) -> None:
    """Wait until ``check`` is true; fail with a clear message after ``timeout_s``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition {getattr(check, '__name__', check)} not met within {timeout_s}s")
        await asyncio.sleep(interval_s)


@contextlib.asynccontextmanager
async def serving(app: FastAPI, port: int | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``app`` under uvicorn on a loopback port (a free one by default; lifespan included), yield a client."""
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            lifespan="on",
            timeout_graceful_shutdown=5,
            # longer than the client keeps an idle connection (httpx: 5 s): with both at 5 s, a request sent on a
            # connection the server is closing at that moment fails with a ReadError (seen in a CI run)
            timeout_keep_alive=30,
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # raises the start-up error
                raise RuntimeError("the service stopped during start-up")
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        await task


def bearer(keys: NodeKeys, *roles: str, sub: str = "alice", province: str | None = None) -> dict[str, str]:
    """An Authorization header with a dev token of ``keys``' node."""
    token = issue_token(
        load_private_key(keys.token_key),
        sub=sub,
        province=province or keys.province,
        roles=roles,
        issuer=f"labornet:{keys.province}",
    )
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response: httpx.Response, status: int, detail_contains: str = "") -> dict[str, object]:
    """The response is an RFC 9457 problem with ``status`` and a detail mentioning ``detail_contains``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, object] = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail", "instance"} <= body.keys()
    assert detail_contains in str(body["detail"]), body
    assert "Traceback" not in response.text and "SELECT" not in response.text
    return body


async def check_platform_contract(
    create_app: Callable[[Settings], FastAPI], settings: Settings, keys: dict[str, NodeKeys], migrations: str
) -> None:
    """What every LaborNet service must do, checked over real HTTP against a real database and broker."""
    own, other = keys[settings.province], next(k for p, k in keys.items() if p != settings.province)
    async with serving(create_app(settings)) as client:
        assert (await client.get("/livez")).text == "ok"

        async def ready() -> bool:  # consumers need a moment to join their group
            return (await client.get("/readyz")).status_code == 200

        await eventually(ready, timeout_s=30)
        assert (await client.get("/readyz")).json()["checks"]["database"] == "ok"

        assert_problem(await client.get("/api/v1/whoami"), 401, "bearer token")
        issuer = f"labornet:{settings.province}"
        assert_problem(await client.get("/api/v1/whoami", headers={"Authorization": "Bearer nonsense"}), 401, issuer)
        partner = assert_problem(await client.get("/api/v1/whoami", headers=bearer(other, "officer")), 403, issuer)
        assert f"labornet:{other.province}" in str(partner["detail"])
        me = await client.get("/api/v1/whoami", headers=bearer(own, "officer", sub="alice"))
        assert me.json() == {"sub": "alice", "province": settings.province, "roles": ["officer"]}
        assert "traceparent" in me.headers

        assert_problem(await client.get("/admin/v1/quarantine", headers=bearer(own, "officer")), 403, "admin")
        admin = bearer(own, "admin")
        assert (await client.get("/admin/v1/quarantine", headers=admin)).json() == {"items": [], "next_cursor": None}
        body = assert_problem(await client.get("/admin/v1/quarantine?limit=0", headers=admin), 422, "limit")
        assert body["errors"][0]["field"] == "query.limit"  # type: ignore[index]
        assert_problem(await client.post("/admin/v1/quarantine/999/replay", headers=admin), 404, "999")
        assert_problem(await client.get("/no/such/path"), 404, "/no/such/path")
        assert_problem(await client.delete("/livez"), 405, "DELETE")

        metrics = (await client.get("/metrics")).text
        assert (
            f'labornet_http_request_duration_seconds_count{{code="200",method="GET",route="/api/v1/whoami",service="{settings.service}"}}'
            in metrics
        )

    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as connection:
            version = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
            diff = await connection.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(
                        sync,
                        opts={  # only the platform tables: the service's own are its business
                            "include_name": lambda name, kind, _parents: (
                                kind != "table" or name in platform_metadata.tables
                            )
                        },
                    ),
                    platform_metadata,
                )
            )
    finally:
        await engine.dispose()
    head = ScriptDirectory.from_config(alembic_config(migrations)).get_current_head()
    assert version == head, f"database at {version}, migrations end at {head}"
    assert diff == [], f"migrations and platform tables disagree: {diff}"

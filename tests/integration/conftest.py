"""Two province nodes on the real embedded broker: Sichuan writes through its outbox, Zhejiang consumes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from labornet.shared.broker import EmbeddedBroker
from labornet.shared.db import readonly_sessionmaker, sessionmaker
from labornet.shared.envelope import Envelope
from labornet.shared.inbox import EventConsumer
from labornet.shared.kafka import ensure_topics, make_consumer, make_producer
from labornet.shared.keys import NodeKeys
from labornet.shared.outbox import Outbox, OutboxRelay
from labornet.shared.settings import Settings
from labornet.shared.signing import Signer, TrustListFile
from labornet.shared.testing import platform_engine

VACANCY_PUBLISHED = "org.labornet.jobs.vacancy.published.v1"

replica = MetaData()
applied = Table(
    "applied_vacancy",
    replica,
    Column("n", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False),  # deliberately not unique: a double apply would show
    Column("vacancy_id", String(40), nullable=False),
)


@dataclass
class Node:
    province: str
    engine: AsyncEngine
    settings: Settings
    outbox: Outbox
    relay: OutboxRelay
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def write(self, topic: str, vacancy_id: str, **data: object) -> Envelope:
        async with sessionmaker(self.engine)() as session, session.begin():
            return await self.outbox.add(
                session, topic=topic, event_type=VACANCY_PUBLISHED, key=vacancy_id, data={"id": vacancy_id, **data}
            )

    async def applied(self) -> list[tuple[str, str]]:
        async with sessionmaker(self.engine)() as session:
            rows = await session.execute(select(applied.c.event_id, applied.c.vacancy_id).order_by(applied.c.n))
            return [(r.event_id, r.vacancy_id) for r in rows]

    def start(self, coroutine: Awaitable[None]) -> None:
        self.tasks.append(asyncio.ensure_future(coroutine))


class Handlers:
    """Applies vacancies into the replica table; a vacancy marked poison fails until ``cured``."""

    def __init__(self) -> None:
        self.cured = False
        self.calls = 0
        self.database_down_for = 0  # calls that fail as if the database were unreachable

    async def apply(self, session: AsyncSession, envelope: Envelope) -> None:
        self.calls += 1
        if self.database_down_for > 0:
            self.database_down_for -= 1
            raise OperationalError("INSERT INTO applied_vacancy", {}, ConnectionRefusedError("database unreachable"))
        data = envelope.json()
        if data.get("poison") and not self.cured:
            raise ValueError(f"vacancy {data['id']} has no title")
        await session.execute(applied.insert().values(event_id=envelope.id, vacancy_id=data["id"]))


@dataclass
class Federation:
    topic: str
    sichuan: Node
    zhejiang: Node
    handlers: Handlers
    make_consumer: Callable[..., EventConsumer]
    bootstrap: str


@pytest.fixture
async def federation(
    new_database_url: Callable[[], Awaitable[str]],
    federation_dir: Path,
    node_keys: dict[str, NodeKeys],
    kafka_broker: EmbeddedBroker,
) -> AsyncIterator[Federation]:
    topic = f"labornet.510000.jobs.events.{uuid.uuid4().hex[:8]}"
    nodes: dict[str, Node] = {}
    for province in ("510000", "330000"):
        settings = Settings(  # type: ignore[call-arg]
            province=province,
            service="jobs",
            data_dir=federation_dir,
            database_url=await new_database_url(),
            kafka_bootstrap_servers=kafka_broker.bootstrap_servers,
            kafka_session_timeout_ms=3000,
            kafka_heartbeat_interval_ms=500,
        )
        engine = await platform_engine(settings.database_url, replica)
        writer = Outbox(province, "jobs", Signer.from_file(node_keys[province].signing_key, province))
        relay = OutboxRelay(
            sessionmaker(engine),
            readonly_sessionmaker(engine),
            lambda s=settings: make_producer(s),
            writer,
            service="jobs",
            poll_interval_s=0.02,
            max_backoff_s=0.5,
            create_topics=lambda names, s=settings: ensure_topics(s, names),
        )
        nodes[province] = Node(province, engine, settings, writer, relay)
    zhejiang = nodes["330000"]
    await ensure_topics(zhejiang.settings, [topic, f"{topic}.deadletter"])
    handlers = Handlers()
    trust = TrustListFile(federation_dir / "trust-list.json")

    def build_consumer(name: str = "vacancies", group: str | None = None, max_attempts: int = 3) -> EventConsumer:
        return EventConsumer(
            name=name,
            province="330000",
            service="jobs",
            topics=[topic],
            handlers={VACANCY_PUBLISHED: handlers.apply},
            sessions=sessionmaker(zhejiang.engine),
            outbox=zhejiang.outbox,
            trust=trust,
            # a group of its own per test: a group left behind by an earlier test must never delay this one's join
            consumer_factory=lambda default_group: make_consumer(
                zhejiang.settings, group or f"{default_group}.{topic}"
            ),
            deadletter_topic=f"{topic}.deadletter",
            max_attempts=max_attempts,
            retry_backoff_s=0.01,
        )

    for node in nodes.values():
        node.start(node.relay.run())
    yield Federation(topic, nodes["510000"], zhejiang, handlers, build_consumer, kafka_broker.bootstrap_servers)
    for node in nodes.values():
        await node.relay.stop()
        for task in node.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await node.engine.dispose()


@contextlib.asynccontextmanager
async def consuming(consumer: EventConsumer) -> AsyncIterator[EventConsumer]:
    task = asyncio.create_task(consumer.run())
    try:
        await consumer.wait_assigned(30)
        yield consumer
    finally:
        await consumer.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
def three_provinces(tmp_path: Path) -> Path:
    """A registry of Sichuan, Zhejiang and Chongqing only, so that every partner of a node is one the test runs."""
    path = tmp_path / "provinces.json"
    members = [
        ("510000", "四川省", "四川", "Sichuan"),
        ("500000", "重庆市", "重庆", "Chongqing"),
        ("330000", "浙江省", "浙江", "Zhejiang"),
    ]
    document = {"version": 1, "provinces": [{"code": c, "zh": z, "short_zh": s, "en": e} for c, z, s, e in members]}
    path.write_text(json.dumps(document, ensure_ascii=False))
    return path

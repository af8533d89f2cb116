"""An idle node costs nearly nothing: consumers fetch slowly while nothing comes, the relay sleeps until a commit.

Both on the real embedded broker. The properties tested are functional (which wait the next fetch asks for, that a
committed row is published without waiting for the fallback poll); the CPU figures are in `make bench`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from labornet.shared.broker import EmbeddedBroker
from labornet.shared.db import outbox, readonly_sessionmaker, sessionmaker
from labornet.shared.kafka import PacedConsumer, ensure_topics, make_consumer, make_producer, started
from labornet.shared.keys import NodeKeys
from labornet.shared.outbox import Outbox, OutboxRelay
from labornet.shared.settings import Settings
from labornet.shared.signing import Signer
from labornet.shared.testing import eventually, platform_engine


def settings_for(broker: EmbeddedBroker, **overrides: object) -> Settings:
    return Settings(kafka_bootstrap_servers=broker.bootstrap_servers, **overrides)  # type: ignore[arg-type]


async def test_a_consumer_fetches_slowly_while_idle_and_fast_again_when_records_come(
    kafka_broker: EmbeddedBroker,
) -> None:
    settings = settings_for(
        kafka_broker, kafka_fetch_max_wait_ms=10, kafka_fetch_idle_wait_ms=400, kafka_fetch_idle_after_s=0.3
    )
    topic = f"labornet.510000.pacing-{uuid.uuid4().hex[:8]}.events"
    await ensure_topics(settings, [topic])
    consumer = make_consumer(settings, f"pacing-{uuid.uuid4().hex[:8]}")
    assert isinstance(consumer, PacedConsumer)
    consumer.subscribe([topic])
    await started(consumer)
    producer = await started(make_producer(settings))
    try:
        assert consumer.fetch_wait_ms == 10

        async def idle() -> bool:
            consumer.pace(bool(await consumer.getmany(timeout_ms=100)))
            return consumer.fetch_wait_ms == 400

        await eventually(idle, timeout_s=20)

        await producer.send_and_wait(topic, b"{}", key=b"k")

        async def busy_again() -> bool:
            batches = await consumer.getmany(timeout_ms=500)
            consumer.pace(bool(batches))
            return bool(batches)

        await eventually(busy_again, timeout_s=20)
        assert consumer.fetch_wait_ms == 10, "the first record brings the short wait back"
        # a quiet poll right after records keeps the short wait until idle_after_s has passed
        consumer.pace(False)
        assert consumer.fetch_wait_ms == 10
    finally:
        await producer.stop()
        await consumer.stop()


@contextlib.asynccontextmanager
async def relaying(relay: OutboxRelay) -> AsyncIterator[None]:
    task = asyncio.create_task(relay.run())
    try:
        yield
    finally:
        await relay.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_relay_publishes_a_commit_at_once_though_its_fallback_poll_is_long(
    database_url: str, kafka_broker: EmbeddedBroker, node_keys: dict[str, NodeKeys]
) -> None:
    engine: AsyncEngine = await platform_engine(database_url)
    settings = settings_for(kafka_broker)
    writer = Outbox("510000", "jobs", Signer.from_file(node_keys["510000"].signing_key, "510000"))
    relay = OutboxRelay(
        sessionmaker(engine),
        readonly_sessionmaker(engine),
        lambda: make_producer(settings),
        writer,
        service="jobs",
        poll_interval_s=3600.0,  # only the commit's wake-up can publish within the test
        create_topics=lambda names: ensure_topics(settings, names),
    )
    topic = f"labornet.510000.wake-{uuid.uuid4().hex[:8]}.events"

    async def unsent() -> int:
        async with sessionmaker(engine)() as session:
            return int((await session.execute(select(func.count()).where(outbox.c.sent_at.is_(None)))).scalar_one())

    try:
        async with relaying(relay):
            await asyncio.sleep(0.5)  # the relay found nothing and sleeps on its (hour-long) poll
            for n in range(3):
                async with sessionmaker(engine)() as session, session.begin():
                    await writer.add(session, topic=topic, event_type="x.v1", key=f"k{n}", data={"n": n})

                async def published() -> bool:
                    return await unsent() == 0

                await eventually(published, timeout_s=15)

            # a transaction rolled back wakes nobody and leaves nothing behind
            async def refused_use_case() -> None:
                async with sessionmaker(engine)() as session, session.begin():
                    await writer.add(session, topic=topic, event_type="x.v1", key="gone", data={})
                    raise RuntimeError("refused")

            with pytest.raises(RuntimeError, match="refused"):
                await refused_use_case()
            assert await unsent() == 0
    finally:
        await engine.dispose()

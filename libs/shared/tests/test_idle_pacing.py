"""An idle node costs nearly nothing: consumers pace their fetches while nothing comes, the relay sleeps until a commit.

Both on the real embedded broker. The properties tested are functional (which wait the next fetch asks for, that a
committed row is published without waiting for the fallback poll); the CPU figures are in `make bench`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from prometheus_client import REGISTRY
from sqlalchemy import event as sa_event
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from labornet.shared import kafka
from labornet.shared.broker import EmbeddedBroker
from labornet.shared.db import outbox, readonly_sessionmaker, sessionmaker
from labornet.shared.kafka import PacedConsumer, ensure_topics, make_consumer, make_producer, started
from labornet.shared.keys import NodeKeys
from labornet.shared.outbox import Outbox, OutboxRelay
from labornet.shared.settings import Settings
from labornet.shared.signing import Signer
from labornet.shared.testing import eventually, lag_measuring_consumer, platform_engine
from labornet.shared.topics import inbox_topic


def settings_for(broker: EmbeddedBroker, **overrides: object) -> Settings:
    return Settings(kafka_bootstrap_servers=broker.bootstrap_servers, **overrides)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def topic_with_reader(
    settings: Settings, name: str
) -> AsyncIterator[tuple[str, PacedConsumer, AIOKafkaProducer]]:
    """A new topic, a consumer of it (the node's own kind, joined) and a producer; both stopped after."""
    topic = f"labornet.510000.{name}-{uuid.uuid4().hex[:8]}.events"
    await ensure_topics(settings, [topic])
    consumer = make_consumer(settings, f"{name}-{uuid.uuid4().hex[:8]}")
    consumer.subscribe(pattern=f"^{re.escape(topic)}$")
    await started(consumer)
    producer = await started(make_producer(settings))
    try:
        yield topic, consumer, producer
    finally:
        await producer.stop()
        await consumer.stop()


async def test_a_consumer_paces_its_fetches_while_idle_and_fetches_fast_again_when_records_come(
    kafka_broker: EmbeddedBroker,
) -> None:
    settings = settings_for(
        kafka_broker,
        kafka_fetch_max_wait_ms=10,
        kafka_fetch_idle_wait_ms=50,
        kafka_fetch_idle_pause_ms=300,
        kafka_fetch_idle_fetch_every_ms=2000,
        kafka_fetch_idle_after_s=0.3,
    )
    topic = f"labornet.510000.pacing-{uuid.uuid4().hex[:8]}.events"
    await ensure_topics(settings, [topic])
    consumer = make_consumer(settings, f"pacing-{uuid.uuid4().hex[:8]}")
    assert isinstance(consumer, PacedConsumer)
    consumer.subscribe([topic])
    await started(consumer)
    producer = await started(make_producer(settings))
    try:
        assert (consumer.fetch_wait_ms, consumer.fetch_pause_ms, consumer.idle) == (10, 0, False)

        async def idle() -> bool:
            consumer.pace(bool(await consumer.getmany(timeout_ms=100)))
            return consumer.idle

        await eventually(idle, timeout_s=20)
        assert (consumer.fetch_wait_ms, consumer.fetch_pause_ms) == (50, 2000)

        await producer.send_and_wait(topic, b"{}", key=b"k")

        async def busy_again() -> bool:
            batches = await consumer.getmany(timeout_ms=500)
            consumer.pace(bool(batches))
            return bool(batches)

        await eventually(busy_again, timeout_s=20)
        assert (consumer.fetch_wait_ms, consumer.fetch_pause_ms) == (10, 0), "the first record brings the pace back"
        # a quiet poll right after records keeps the short wait until idle_after_s has passed
        consumer.pace(False)
        assert not consumer.idle
    finally:
        await producer.stop()
        await consumer.stop()


async def read_one(consumer: PacedConsumer, timeout_s: float = 5.0) -> bytes | None:
    """The value of the next record, or None when none came within ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while True:
            for records in (await consumer.getmany(timeout_ms=100)).values():
                return records[0].value  # type: ignore[no-any-return]


async def test_a_record_after_a_quiet_spell_is_read_within_a_second_with_the_default_pacing(
    kafka_broker: EmbeddedBroker,
) -> None:
    """The federation promises a vacancy posted in one province in every other within a second. The embedded broker
    does not answer a waiting fetch when a record arrives, so after a quiet spell the idle pacing alone decides how
    late the first record is read: at most LABORNET_KAFKA_FETCH_IDLE_WAIT_MS + LABORNET_KAFKA_FETCH_IDLE_PAUSE_MS,
    which the defaults keep well below a second. Measured from the producer's acknowledgement to the record in hand,
    each time after 10 s of silence."""
    settings = settings_for(kafka_broker)
    assert settings.kafka_fetch_idle_wait_ms + settings.kafka_fetch_idle_pause_ms <= 500
    loop = asyncio.get_running_loop()
    delays = []
    async with topic_with_reader(settings, "quiet") as (topic, consumer, producer):
        for n in range(2):
            quiet_until = loop.time() + 10.0
            while loop.time() < quiet_until:
                batches = await consumer.getmany(timeout_ms=500)
                assert not batches, "nothing was sent during the quiet spell"
                consumer.pace(False)
            assert consumer.idle
            reading = asyncio.create_task(read_one(consumer))
            await producer.send_and_wait(topic, f"{n}".encode(), key=b"k")
            sent = loop.time()
            assert await reading == f"{n}".encode()
            delays.append(loop.time() - sent)
            consumer.pace(True)
    print(f"\nfirst record after 10 s of silence read after {', '.join(f'{d * 1000:.0f} ms' for d in delays)}")
    assert max(delays) < 1.0, f"read {max(delays):.2f} s after it was sent; the promise is a second"


def relay_on(engine: AsyncEngine, settings: Settings, writer: Outbox, **options: Any) -> OutboxRelay:
    """A relay of ``writer``'s service on ``engine`` and the broker of ``settings`` (topics created as needed)."""
    return OutboxRelay(
        sessionmaker(engine),
        readonly_sessionmaker(engine),
        lambda: make_producer(settings),
        writer,
        service=writer.service,
        create_topics=lambda names: ensure_topics(settings, names),
        **options,
    )


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
    # only the commit's wake-up can publish within the test
    relay = relay_on(engine, settings, writer, poll_interval_s=3600.0)
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


async def test_a_consumer_at_rest_measures_its_lag_from_the_doorbell_and_a_busy_one_asks_the_broker(
    kafka_broker: EmbeddedBroker,
) -> None:
    """At rest the doorbell of the process reads the end offsets of every idle consumer's partitions every 400 ms;
    each consumer asking again for its own every 5 s cost the nine provinces at rest about 0.015 of a core. The lag
    measured from the doorbell's answer must be the lag: records that arrive and are not yet read count."""
    settings = settings_for(kafka_broker, kafka_fetch_idle_after_s=0.2)
    async with topic_with_reader(settings, "lag") as (topic, consumer, producer):
        measuring = lag_measuring_consumer("lag-rest", consumer._group_id)
        asked: list[list[TopicPartition]] = []
        own_request = consumer.end_offsets

        async def end_offsets(partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
            asked.append(partitions)
            return await own_request(partitions)  # type: ignore[no-any-return]

        consumer.end_offsets = end_offsets
        labels = {"service": "lag-rest", "group": consumer._group_id, "topic": topic, "partition": "0"}
        for n in range(3):
            await producer.send_and_wait(topic, f"{n}".encode(), partition=0)
        read = 0
        while read < 3:
            read += sum(len(records) for records in (await consumer.getmany(timeout_ms=500)).values())
        heard_since = time.monotonic()

        async def at_rest_and_heard() -> bool:
            consumer.pace(bool(await consumer.getmany(timeout_ms=100)))
            return consumer.idle and consumer._heard_at > heard_since

        await eventually(at_rest_and_heard, timeout_s=10)
        await measuring._update_lag(consumer)
        assert asked == [], "a consumer at rest asked the broker for end offsets of its own"
        assert REGISTRY.get_sample_value("labornet_consumer_lag", labels) == 0

        for n in range(2):  # two records arrive and are not read
            await producer.send_and_wait(topic, f"more {n}".encode(), partition=0)
        grown_since = time.monotonic()

        async def heard_again() -> bool:
            return consumer._heard_at > grown_since

        await eventually(heard_again, timeout_s=5)
        await measuring._update_lag(consumer)
        assert asked == []
        assert REGISTRY.get_sample_value("labornet_consumer_lag", labels) == 2

        consumer.pace(True)  # records came: the consumer is busy, and its lag is read afresh
        await measuring._update_lag(consumer)
        assert len(asked) == 1
        assert REGISTRY.get_sample_value("labornet_consumer_lag", labels) == 2


@contextlib.asynccontextmanager
async def polling(consumer: PacedConsumer) -> AsyncIterator[list[bytes]]:
    """Poll ``consumer`` as a service's consumer does (pacing it after every poll); yield the values read."""
    values: list[bytes] = []

    async def poll() -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=200)
            values.extend(record.value for records in batches.values() for record in records)
            consumer.pace(bool(batches))

    task = asyncio.create_task(poll())
    try:
        yield values
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def counting_fetches(consumer: PacedConsumer) -> list[float]:
    """The times (time.monotonic()) of every fetch request ``consumer`` sends from now on."""
    sent: list[float] = []
    send = consumer._client.send

    async def counted(node_id: int, request: Any, *args: Any, **kwargs: Any) -> Any:
        if type(request).__name__.startswith("FetchRequest"):
            sent.append(time.monotonic())
        return await send(node_id, request, *args, **kwargs)

    consumer._client.send = counted
    return sent


async def test_an_idle_consumer_the_doorbell_hears_leaves_its_own_fetches_to_the_fallback(
    kafka_broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle consumer's own fetch brings nothing the doorbell would not have rung for, and costs the broker and
    the process more: while the doorbell reads the end of all its partitions it fetches every
    ``kafka_fetch_idle_fetch_heard_every_ms``, and a record is still read at the doorbell's pace. A partition the
    doorbell cannot read (here its answer lacks one) brings back a fetch every ``kafka_fetch_idle_fetch_every_ms``,
    and with it the record the doorbell would not have seen."""
    settings = settings_for(
        kafka_broker,
        kafka_fetch_idle_after_s=0.2,
        kafka_fetch_idle_pause_ms=100,
        kafka_fetch_idle_fetch_every_ms=500,
        kafka_fetch_idle_fetch_heard_every_ms=60_000,
    )
    loop = asyncio.get_running_loop()
    async with topic_with_reader(settings, "heard") as (topic, consumer, producer), polling(consumer) as values:

        async def pausing() -> bool:
            return consumer.idle and consumer.pausing

        async def read(value: bytes) -> bool:
            return value in values

        await eventually(pausing, timeout_s=10)
        fetches = counting_fetches(consumer)
        await asyncio.sleep(3.0)
        assert len(fetches) <= 1, f"{len(fetches)} fetches in 3 s while the doorbell heard every partition"

        await producer.send_and_wait(topic, b"heard", partition=1)
        sent = loop.time()
        await eventually(lambda: read(b"heard"), timeout_s=5)
        assert loop.time() - sent < 1.0, "the doorbell rang the consumer at its own pace"

        # the doorbell's answer lacks partition 0 from now on
        read_ends = kafka.end_offsets

        async def without_partition_0(client: Any, partitions: Any) -> dict[TopicPartition, int]:
            ends = await read_ends(client, partitions)
            return {tp: end for tp, end in ends.items() if not (tp.topic == topic and tp.partition == 0)}

        monkeypatch.setattr(kafka, "end_offsets", without_partition_0)
        await eventually(pausing, timeout_s=10)
        fetches.clear()
        await asyncio.sleep(3.0)
        assert len(fetches) >= 3, f"{len(fetches)} fetches in 3 s with a partition the doorbell did not hear"

        await producer.send_and_wait(topic, b"unheard", partition=0)
        await eventually(lambda: read(b"unheard"), timeout_s=5)


async def test_a_relay_at_rest_polls_with_one_statement_and_still_publishes_what_another_process_queued(
    database_url: str, kafka_broker: EmbeddedBroker, node_keys: dict[str, NodeKeys]
) -> None:
    """A poll that no commit of the relay's own process woke can only find rows other processes queued (replicas
    of the service) and receipts fallen due; it reads the gauges, which count the rows not sent, in one statement,
    and a batch only when they count one. The rows another process queued are published at the next poll, and the
    gauges read again once they are."""
    engine: AsyncEngine = await platform_engine(database_url)
    settings = settings_for(kafka_broker)
    signer = Signer.from_file(node_keys["510000"].signing_key, "510000")
    # the gauges are read at a poll at most once a second: every poll reads them
    relay = relay_on(engine, settings, Outbox("510000", "relay-rest", signer), poll_interval_s=1.2)
    other_process = Outbox("510000", "relay-rest", signer)  # its commits wake its own relay, not this one
    topic = f"labornet.510000.rest-{uuid.uuid4().hex[:8]}.events"
    trail: list[str] = []  # the outbox statements and the polls, in order

    def statement(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        if "outbox" in sql.lower():
            trail.append(sql)

    idle = relay._idle

    async def polled(seconds: float) -> bool:
        trail.append("poll")
        return await idle(seconds)

    relay._idle = polled  # type: ignore[method-assign]
    sa_event.listen(engine.sync_engine, "before_cursor_execute", statement)

    def backlog() -> float | None:
        return REGISTRY.get_sample_value("labornet_outbox_backlog", {"service": "relay-rest"})

    try:
        async with relaying(relay):
            await asyncio.sleep(1.5)  # the first rounds read a batch and purge
            trail.clear()
            await asyncio.sleep(5.0)
            polls = [n for n, entry in enumerate(trail) if entry == "poll"]
            assert len(polls) >= 3, trail
            between = [trail[a + 1 : b] for a, b in itertools.pairwise(polls)]
            assert all(len(statements) == 1 for statements in between), between

            async with sessionmaker(engine)() as session, session.begin():
                for n in range(3):
                    await other_process.add(session, topic=topic, event_type="x.v1", key=f"k{n}", data={"n": n})

            async def published() -> bool:
                async with sessionmaker(engine)() as session:
                    unsent = await session.execute(select(func.count()).where(outbox.c.sent_at.is_(None)))
                    return unsent.scalar_one() == 0

            await eventually(published, timeout_s=15, interval_s=0.02)
            await asyncio.sleep(0.2)  # the relay reads the gauges after marking the rows sent
            assert backlog() == 0, "the gauges showed a backlog already published until the next poll"
    finally:
        sa_event.remove(engine.sync_engine, "before_cursor_execute", statement)
        await engine.dispose()


async def test_a_consumer_at_rest_that_expects_records_reads_them_at_the_busy_pace(
    kafka_broker: EmbeddedBroker,
) -> None:
    """A node that just asked a partner something (a directed message) expects the answer on its inbox: its inbox
    consumer, at rest, would read it at the doorbell's next ring (here every 5 s, to tell the two apart). Told to
    expect records, it fetches at the busy pace at once; with nothing coming it is idle again ``idle_after_s`` later."""
    settings = settings_for(
        kafka_broker,
        kafka_fetch_idle_after_s=0.5,
        kafka_fetch_idle_pause_ms=5000,
        kafka_fetch_idle_fetch_every_ms=60_000,
        kafka_fetch_idle_fetch_heard_every_ms=60_000,
    )
    loop = asyncio.get_running_loop()
    delays = []
    async with topic_with_reader(settings, "expect") as (topic, consumer, producer), polling(consumer) as values:

        async def pausing() -> bool:
            return consumer.idle and consumer.pausing

        for n in range(3):
            await eventually(pausing, timeout_s=10)
            consumer.expect()
            assert not consumer.idle
            await producer.send_and_wait(topic, f"answer {n}".encode(), key=b"k")
            sent = loop.time()

            async def answered(value: bytes = f"answer {n}".encode()) -> bool:
                return value in values

            await eventually(answered, timeout_s=15, interval_s=0.01)
            delays.append(loop.time() - sent)
    assert max(delays) < 1.0, f"read after {delays} s; the doorbell rings every 5 s"


async def test_the_relay_says_when_it_sent_a_directed_message_and_only_then(
    database_url: str, kafka_broker: EmbeddedBroker, node_keys: dict[str, NodeKeys]
) -> None:
    """The service's inbox consumers are told to expect records when the relay sent a directed message (its receipt
    and its answer come back there); a broadcast event brings no answer and tells nobody."""
    engine: AsyncEngine = await platform_engine(database_url)
    settings = settings_for(kafka_broker)
    writer = Outbox("510000", "jobs", Signer.from_file(node_keys["510000"].signing_key, "510000"))
    relay = relay_on(engine, settings, writer)
    told: list[int] = []
    relay.on_directed_sent = lambda: told.append(1)
    suffix = uuid.uuid4().hex[:8]
    try:
        async with sessionmaker(engine)() as session, session.begin():
            await writer.add(
                session, topic=f"labornet.510000.told-{suffix}.events", event_type="x.v1", key="k", data={}
            )
        assert await relay.publish_batch() == 1
        assert told == []
        async with sessionmaker(engine)() as session, session.begin():
            await writer.add(
                session,
                topic=inbox_topic("330000", "jobs"),
                event_type="x.letter.v1",
                key="k",
                data={},
                destination="330000",
            )
        assert await relay.publish_batch() == 1
        assert told == [1]
    finally:
        await relay.stop()
        await engine.dispose()

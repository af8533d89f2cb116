"""The broker watch and the consumers' view of topics, each promise tried on its own (ADR 0009).

Topics belong to the platform: a partition count other than the configured one is reported, consumers read every
partition a topic has (also partitions that appear later), a consumer's metadata requests never create a topic,
and a service that was down while the broker lost its log republishes when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from labornet.shared.app import ServiceSpec, start_runtime, stop_runtime
from labornet.shared.broker import EmbeddedBroker
from labornet.shared.brokerwatch import CLUSTER_KEY, BrokerWatch
from labornet.shared.db import bus_state, inbox, outbox, sessionmaker
from labornet.shared.envelope import Envelope, encode_data, event_source, new_event_id
from labornet.shared.inbox import EventConsumer
from labornet.shared.kafka import client_config, make_consumer
from labornet.shared.keys import NodeKeys
from labornet.shared.outbox import Outbox
from labornet.shared.settings import Settings
from labornet.shared.signing import Signer, TrustListFile
from labornet.shared.testing import consume_all, eventually, platform_engine
from labornet.shared.topics import deadletter_topic, events_topic, stream_id

pytestmark = pytest.mark.integration

SC, ZJ = "510000", "330000"
VACANCY_PUBLISHED = "org.labornet.jobs.vacancy.published.v1"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Province:
    """Zhejiang's jobs service as far as these tests need it: a database, a broker watch, a replica consumer."""

    def __init__(self, settings: Settings, engine: AsyncEngine, service: str, trust: TrustListFile) -> None:
        self.settings = settings
        self.engine = engine
        self.service = service
        self.trust = trust
        self.tasks: list[asyncio.Task[None]] = []
        self.consumers: list[EventConsumer] = []
        self.watches: list[BrokerWatch] = []
        self.losses: list[str] = []

    def watch(
        self,
        topics: list[str],
        interval_s: float = 5.0,
        published: Callable[[], Collection[TopicPartition]] = set,
        offsets_interval_s: float = 30.0,
        on_log_lost: Callable[[str], Awaitable[object]] | None = None,
    ) -> BrokerWatch:
        async def lost(reason: str) -> None:
            self.losses.append(reason)

        watch = BrokerWatch(
            settings_client=client_config(self.settings),
            service=self.service,
            topics=topics,
            partitions=self.settings.kafka_topic_partitions,
            replication=1,
            create=True,
            sessions=sessionmaker(self.engine),
            published=published,
            on_log_lost=on_log_lost or lost,
            interval_s=interval_s,
            offsets_interval_s=offsets_interval_s,
        )
        self.watches.append(watch)
        return watch

    async def consume(self, topics: list[str]) -> EventConsumer:
        async def apply(_session: AsyncSession, _envelope: Envelope) -> None:
            """The inbox row is what these tests look at."""

        key = self.settings.signing_key_path
        assert key is not None
        consumer = EventConsumer(
            name="replica",
            province=ZJ,
            service=self.service,
            topics=topics,
            handlers={VACANCY_PUBLISHED: apply},
            sessions=sessionmaker(self.engine),
            outbox=Outbox(ZJ, self.service, Signer.from_file(key, ZJ)),
            trust=self.trust,
            consumer_factory=lambda group: make_consumer(self.settings, group),
            deadletter_topic=deadletter_topic(ZJ, self.service),
            retry_backoff_s=0.01,
        )
        self.consumers.append(consumer)
        self.tasks.append(asyncio.create_task(consumer.run()))
        return consumer

    async def applied(self) -> list[tuple[str, int]]:
        """(topic, partition) of every event applied, in the order applied."""
        async with sessionmaker(self.engine)() as session:
            rows = await session.execute(select(inbox.c.topic, inbox.c.partition).order_by(inbox.c.applied_at))
            return [(r.topic, r.partition) for r in rows]

    async def stop(self) -> None:
        for watch in self.watches:
            await watch.stop()
        for consumer in self.consumers:
            await consumer.stop()
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.engine.dispose()


@pytest.fixture
async def zhejiang(
    new_database_url: Callable[[], Awaitable[str]],
    make_settings: Callable[..., Settings],
    federation_dir: Path,
) -> AsyncIterator[Callable[..., Awaitable[Province]]]:
    built: list[Province] = []

    async def build(**overrides: object) -> Province:
        settings = make_settings(ZJ, "jobs", await new_database_url(), **overrides)
        engine = await platform_engine(settings.database_url)
        province = Province(
            settings, engine, f"jobs-{uuid.uuid4().hex[:8]}", TrustListFile(federation_dir / "trust-list.json")
        )
        built.append(province)
        return province

    yield build
    for province in built:
        await province.stop()


@contextlib.asynccontextmanager
async def admin_of(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def partition_counts(bootstrap: str, topics: list[str]) -> dict[str, int]:
    async with admin_of(bootstrap) as admin:
        return {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics(topics)}


async def publish_to_partitions(
    bootstrap: str, keys: NodeKeys, topic: str, partitions: range, first_seq: int = 1
) -> list[Envelope]:
    """Sichuan's signed vacancy events, one written straight into each of ``partitions``."""
    signer = Signer.from_file(keys.signing_key, SC)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    events = []
    try:
        for n, partition in enumerate(partitions):
            vacancy_id = f"{SC}-V-{uuid.uuid4().hex[:6]}"
            envelope = signer.sign(
                Envelope(
                    id=new_event_id(),
                    source=event_source(SC, "jobs"),
                    type=VACANCY_PUBLISHED,
                    time=datetime.now(UTC),
                    partitionkey=vacancy_id,
                    originprovince=SC,
                    stream=stream_id(SC, topic),
                    streamseq=first_seq + n,
                    schemaversion=1,
                    data=encode_data({"id": vacancy_id, "title": "焊工"}),
                )
            )
            key, value, headers = envelope.to_kafka()
            await producer.send_and_wait(topic, value, key=key, headers=headers, partition=partition)
            events.append(envelope)
    finally:
        await producer.stop()
    return events


async def test_a_topic_with_another_partition_count_is_reported_and_every_partition_is_read(
    zhejiang: Callable[..., Awaitable[Province]],
    node_keys: dict[str, NodeKeys],
    kafka_broker: EmbeddedBroker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = await zhejiang(kafka_topic_partitions=3)
    wide, missing = events_topic(SC, node.service), deadletter_topic(ZJ, node.service)
    async with admin_of(kafka_broker.bootstrap_servers) as admin:  # someone made it before the platform did
        await admin.create_topics([NewTopic(wide, 4, 1)])
    watch = node.watch([wide, missing])
    caplog.set_level(logging.WARNING, logger="labornet.shared.brokerwatch")
    try:
        await asyncio.wait_for(watch.check(), 15)
        await asyncio.wait_for(watch.check(), 15)  # said once, not at every check
    finally:
        await watch.stop()
    assert metric("labornet_topic_partition_mismatch", service=node.service, topic=wide) == 1
    assert metric("labornet_topic_partition_mismatch", service=node.service, topic=missing) == 0
    assert watch.mismatched == {wide: 4}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"topic {wide} has 4 partitions; this platform is configured for 3"]
    # the missing topic is created with the configured count; the other is left as it is (its records live there)
    assert await partition_counts(kafka_broker.bootstrap_servers, [wide, missing]) == {wide: 4, missing: 3}

    await node.consume([wide])
    await publish_to_partitions(kafka_broker.bootstrap_servers, node_keys[SC], wide, range(4))

    async def all_partitions_read() -> bool:
        return sorted(p for _, p in await node.applied()) == [0, 1, 2, 3]

    await eventually(all_partitions_read, timeout_s=30)


async def test_partitions_that_appear_later_are_read_within_30_s(
    zhejiang: Callable[..., Awaitable[Province]], node_keys: dict[str, NodeKeys], kafka_broker: EmbeddedBroker
) -> None:
    """The embedded broker does not implement CreatePartitions (aiokafka: "CreatePartitionsRequest cannot be used
    if the API version is unknown"), so the topic is deleted and created again with more partitions, as an
    operator of the embedded broker would have to.

    The consumer's own metadata refresh (LABORNET_KAFKA_METADATA_MAX_AGE_MS, minutes by default) is far too slow
    for that: the service's broker watch sees the new layout and makes the consumer refresh at once."""
    node = await zhejiang(broker_check_interval_s=5.0)  # the defaults, the watch's interval as a service has it
    assert node.settings.kafka_metadata_max_age_ms > 60_000
    topic = events_topic(SC, node.service)
    bootstrap = kafka_broker.bootstrap_servers
    async with admin_of(bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 3, 1)])
    watch = node.watch([topic], interval_s=node.settings.broker_check_interval_s)
    node.tasks.append(asyncio.create_task(watch.run()))
    consumer = await node.consume([topic])
    await consumer.wait_assigned(30)
    await publish_to_partitions(bootstrap, node_keys[SC], topic, range(3))

    async def first_three_read() -> bool:
        return len(await node.applied()) == 3

    await eventually(first_three_read, timeout_s=20)

    async with admin_of(bootstrap) as admin:
        await admin.delete_topics([topic])
        await admin.create_topics([NewTopic(topic, 5, 1)])
    grown_at = time.monotonic()
    await publish_to_partitions(bootstrap, node_keys[SC], topic, range(5), first_seq=4)

    async def every_partition_read() -> bool:
        return sorted(p for _, p in (await node.applied())[3:]) == [0, 1, 2, 3, 4]

    await eventually(every_partition_read, timeout_s=30)
    print(f"\nfive partitions read {time.monotonic() - grown_at:.1f} s after the topic grew")
    assert {tp.partition for tp in consumer._consumer.assignment()} == {0, 1, 2, 3, 4}  # type: ignore[union-attr]


async def test_the_watches_of_one_process_share_the_answer_of_the_broker(
    zhejiang: Callable[..., Awaitable[Province]], kafka_broker: EmbeddedBroker
) -> None:
    """A node's four services run in one process under `labornet serve-node`: one metadata request of every topic
    serves their four watches when it is recent enough, and an explicit check still asks the broker itself."""
    node = await zhejiang()
    topics = [events_topic(SC, node.service)]
    async with admin_of(kafka_broker.bootstrap_servers) as admin:
        await admin.create_topics([NewTopic(topics[0], 3, 1)])
    first, second = node.watch(topics), node.watch(topics)
    await asyncio.wait_for(first.check(), 15)
    await asyncio.wait_for(second.check(shared_within_s=60), 15)
    assert second._admin is None, "the second watch asked the broker again"
    assert second.cluster_id == first.cluster_id is not None
    assert second.silent_for() < 60
    await asyncio.wait_for(second.check(), 15)
    assert second._admin is not None, "an explicit check asks the broker itself"


async def test_a_log_that_went_back_without_a_new_cluster_or_a_missing_topic_is_seen_by_its_offsets(
    zhejiang: Callable[..., Awaitable[Province]], kafka_broker: EmbeddedBroker
) -> None:
    """A topic this service published to is deleted and created again between two checks: the cluster id is the
    same and the watch never sees the topic missing, but its partitions now end below where they ended at the last
    check, the third sign of a lost log (the relay then republishes). A partition that grew is no sign."""
    node = await zhejiang()
    topic = events_topic(ZJ, node.service)
    partitions = {TopicPartition(topic, p) for p in range(3)}
    async with admin_of(kafka_broker.bootstrap_servers) as admin:
        await admin.create_topics([NewTopic(topic, 3, 1)])
    watch = node.watch([topic], published=lambda: partitions, offsets_interval_s=0)
    losses = metric("labornet_broker_log_losses_total", service=node.service, sign="offsets")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for _ in range(5):
            await producer.send_and_wait(topic, b"published", partition=0)
        await asyncio.wait_for(watch.check(), 15)
        await producer.send_and_wait(topic, b"published", partition=1)
        await asyncio.wait_for(watch.check(), 15)
        assert node.losses == [], "a partition that grew is no sign of a lost log"
        async with admin_of(kafka_broker.bootstrap_servers) as admin:
            await admin.delete_topics([topic])
            await admin.create_topics([NewTopic(topic, 3, 1)])
        await asyncio.wait_for(watch.check(), 15)
    finally:
        await producer.stop()
    assert node.losses == [f"partitions ['{topic}[0]', '{topic}[1]'] end below where they ended at the last check"]
    assert metric("labornet_broker_log_losses_total", service=node.service, sign="offsets") == losses + 1
    await asyncio.wait_for(watch.check(), 15)
    assert len(node.losses) == 1, "the new log's ends are the ones compared with from now on"


async def test_a_consumer_never_creates_a_topic_and_reads_it_once_the_platform_has(
    zhejiang: Callable[..., Awaitable[Province]], node_keys: dict[str, NodeKeys], kafka_broker: EmbeddedBroker
) -> None:
    node = await zhejiang(kafka_metadata_max_age_ms=1000)
    topics = [events_topic(SC, node.service), events_topic(ZJ, node.service)]
    bootstrap = kafka_broker.bootstrap_servers
    consumer = await node.consume(topics)

    async def still_absent() -> bool:
        async with admin_of(bootstrap) as admin:
            return not set(topics) & set(await admin.list_topics())

    # a consumer that asked for its topics by name would make the broker create them (with 4 partitions)
    # at its first metadata request; this one refreshes its metadata every second
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 4.0
    while loop.time() < deadline:
        assert await still_absent(), "a consumer's metadata request created a topic"
        await asyncio.sleep(0.2)
    assert not consumer.ready

    watch = node.watch(topics)
    try:
        await asyncio.wait_for(watch.check(), 15)
    finally:
        await watch.stop()
    assert await partition_counts(bootstrap, topics) == dict.fromkeys(topics, 3)

    async def holds_every_partition() -> bool:
        return consumer.ready and len(consumer._consumer.assignment()) == 6  # type: ignore[union-attr]

    await eventually(holds_every_partition, timeout_s=30)
    await publish_to_partitions(bootstrap, node_keys[SC], topics[0], range(3))

    async def read() -> bool:
        return len(await node.applied()) == 3

    await eventually(read, timeout_s=20)


async def test_a_service_down_while_the_log_was_lost_republishes_when_it_returns(
    new_database_url: Callable[[], Awaitable[str]],
    make_settings: Callable[..., Settings],
    private_broker: EmbeddedBroker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = await new_database_url()
    engine = await platform_engine(url)
    await engine.dispose()
    service = f"jobs-{uuid.uuid4().hex[:8]}"
    spec = ServiceSpec(name=service, version="1", migrations="labornet.jobs:migrations")
    settings = make_settings(
        SC,
        "jobs",
        url,
        kafka_bootstrap_servers=private_broker.bootstrap_servers,
        broker_check_interval_s=0.5,
        migrate_on_start=False,
    )
    topic = events_topic(SC, service)

    async def held_cluster() -> str | None:
        engine = await platform_engine(url)
        try:
            async with sessionmaker(engine)() as session:
                return (
                    await session.execute(select(bus_state.c.value).where(bus_state.c.name == CLUSTER_KEY))
                ).scalar()
        finally:
            await engine.dispose()

    async def all_sent(runtime_engine: AsyncEngine) -> bool:
        async with sessionmaker(runtime_engine)() as session:
            return (await session.execute(select(outbox.c.sent_at))).scalars().all().count(None) == 0

    runtime = await start_runtime(spec, settings)
    try:
        written = []
        async with runtime.sessions() as session, session.begin():
            for n in range(5):
                written.append(
                    await runtime.outbox.add(
                        session, topic=topic, event_type=VACANCY_PUBLISHED, key=f"{SC}-V-{n}", data={"id": n}
                    )
                )
        await eventually(lambda: all_sent(runtime.engine))

        async def cluster_remembered() -> bool:
            return await held_cluster() == private_broker.cluster_id

        await eventually(cluster_remembered)
    finally:
        await stop_runtime(runtime)
    old_cluster = private_broker.cluster_id
    private_broker.stop()  # the service is down; the broker loses its log meanwhile
    private_broker.start()
    assert private_broker.cluster_id != old_cluster

    republished = metric("labornet_outbox_republished_total", service=service)
    caplog.set_level(logging.WARNING, logger="labornet.shared")
    runtime = await start_runtime(spec, settings)
    try:

        async def republished_all() -> bool:
            return metric("labornet_outbox_republished_total", service=service) - republished == 5

        await eventually(republished_all, timeout_s=20)
        assert metric("labornet_broker_log_losses_total", service=service, sign="cluster") == 1
        assert any(
            f"cluster id changed from {old_cluster} to {private_broker.cluster_id}" in r.getMessage()
            and "5 published events queued" in r.getMessage()
            for r in caplog.records
        ), [r.getMessage() for r in caplog.records]
        records = await consume_all(private_broker.bootstrap_servers, topic, 5)
        assert sorted(dict(r.headers)["ce_id"].decode() for r in records) == sorted(e.id for e in written)
        assert await held_cluster() == private_broker.cluster_id
    finally:
        await stop_runtime(runtime)


async def test_a_lost_log_is_published_again_at_the_next_check_when_the_first_try_failed(
    zhejiang: Callable[..., Awaitable[Province]], private_broker: EmbeddedBroker
) -> None:
    """The broker loses its log and the first try to publish again fails (the database unreachable, or the check
    timed out under it): the next check tries again, and the loss is counted once. (The new cluster used to be
    recorded first, so a failed try was never made again: what the log lost waited for anti-entropy.)"""
    node = await zhejiang(kafka_bootstrap_servers=private_broker.bootstrap_servers)
    failures = [ConnectionError("the database did not answer")]
    tries: list[str] = []

    followed: list[str | None] = []  # the cluster the consumers followed while the try failed

    async def publish_again(reason: str) -> None:
        tries.append(reason)
        pending = metric("labornet_broker_log_loss_pending", service=node.service)
        if failures:
            followed.append(watch.cluster_id)
            assert pending == 1, "operators see a lost log not yet published again"
            raise failures.pop()

    watch = node.watch([events_topic(ZJ, node.service)], interval_s=0.2, on_log_lost=publish_again)
    node.tasks.append(asyncio.create_task(watch.run()))

    async def recorded(cluster: str) -> bool:
        async with sessionmaker(node.engine)() as session:
            held = await session.execute(select(bus_state.c.value).where(bus_state.c.name == CLUSTER_KEY))
            return held.scalar() == cluster

    old_cluster = private_broker.cluster_id
    await eventually(lambda: recorded(old_cluster))
    losses = metric("labornet_broker_log_losses_total", service=node.service, sign="cluster")
    private_broker.stop()
    private_broker.start()

    await eventually(lambda: recorded(private_broker.cluster_id))
    await asyncio.sleep(1.0)  # five checks more: nothing more to do
    reason = f"the broker's cluster id changed from {old_cluster} to {private_broker.cluster_id}"
    assert tries == [reason, reason], "tried again after the failure, then no more"
    assert followed == [private_broker.cluster_id], "the consumers read the new log at once, failure or not"
    assert metric("labornet_broker_log_loss_pending", service=node.service) == 0
    assert metric("labornet_broker_log_losses_total", service=node.service, sign="cluster") == losses + 1

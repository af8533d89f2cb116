"""Signed events between two provinces on the real embedded broker and real databases.

Sichuan (510000) writes vacancy events through its outbox; Zhejiang (330000) verifies and applies them through
its inbox consumer. Every scenario of the foundation's "done when" is here: exactly-once apply, duplicates and
whole-topic replays, forged events, a poison event and the operator's replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import REGISTRY
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from labornet.shared.db import inbox, quarantine, sessionmaker
from labornet.shared.envelope import Envelope, encode_data, event_source
from labornet.shared.inbox import EventRejected, batched
from labornet.shared.keys import NodeKeys
from labornet.shared.signing import Signer, generate_private_key, key_id_for
from labornet.shared.testing import consume_all, eventually
from tests.integration.conftest import VACANCY_PUBLISHED, Federation, consuming

pytestmark = pytest.mark.integration


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def produce_raw(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


def vacancy_event(origin: str, vacancy_id: str, topic: str, **data: object) -> Envelope:
    return Envelope(
        id=str(uuid.uuid4()),
        source=event_source(origin, "jobs"),
        type=VACANCY_PUBLISHED,
        time=datetime.now(UTC),
        partitionkey=vacancy_id,
        originprovince=origin,
        stream=f"{origin}/{topic}",
        streamseq=1,
        schemaversion=1,
        data=encode_data({"id": vacancy_id, **data}),
    )


async def test_event_is_applied_exactly_once_in_another_province(federation: Federation) -> None:
    written = [await federation.sichuan.write(federation.topic, f"510000-V-{n}", title="川菜厨师") for n in range(20)]
    async with consuming(federation.make_consumer()):

        async def all_applied() -> bool:
            return len(await federation.zhejiang.applied()) == 20

        await eventually(all_applied)
    rows = await federation.zhejiang.applied()
    assert sorted(event_id for event_id, _ in rows) == sorted(e.id for e in written)
    async with sessionmaker(federation.zhejiang.engine)() as session:
        streams = (await session.execute(select(inbox.c.stream, inbox.c.seq))).all()
    assert {s for s, _ in streams} == {f"510000/{federation.topic}"}
    assert sorted(seq for _, seq in streams) == list(range(1, 21))
    assert metric("labornet_event_age_seconds_count", service="jobs", topic=federation.topic, origin="510000") == 20


async def test_duplicates_and_whole_topic_replays_change_nothing(federation: Federation) -> None:
    for n in range(10):
        await federation.sichuan.write(federation.topic, f"510000-V-{n}", title="保安")
    async with consuming(federation.make_consumer()):

        async def ten_applied() -> bool:
            return len(await federation.zhejiang.applied()) == 10

        await eventually(ten_applied)
        # deliver every event a second time, byte for byte
        records = await consume_all(federation.bootstrap, federation.topic, 10)
        await produce_raw(federation.bootstrap, federation.topic, [(r.key, r.value, list(r.headers)) for r in records])

        async def duplicates_seen() -> bool:
            return (
                metric("labornet_events_consumed_total", service="jobs", topic=federation.topic, outcome="duplicate")
                >= 10
            )

        await eventually(duplicates_seen)
    before = await federation.zhejiang.applied()
    assert len(before) == 10

    # a whole-topic replay: the same consumer reads all twenty records again under a fresh group
    async with consuming(federation.make_consumer(group=f"replay-{uuid.uuid4().hex[:6]}")):

        async def replayed() -> bool:
            return (
                metric("labornet_events_consumed_total", service="jobs", topic=federation.topic, outcome="duplicate")
                >= 30
            )

        await eventually(replayed)
    assert await federation.zhejiang.applied() == before


async def test_forged_events_are_quarantined_counted_and_never_applied(
    federation: Federation, node_keys: dict[str, NodeKeys]
) -> None:
    topic = federation.topic
    stranger = generate_private_key()
    unknown_key = Signer(key_id_for("510000", stranger.public_key()), stranger).sign(
        vacancy_event("510000", "forged-1", topic, title="unknown key")
    )
    zhejiang_signer = Signer.from_file(node_keys["330000"].signing_key, "330000")
    wrong_province = zhejiang_signer.sign(
        vacancy_event("510000", "forged-2", topic, title="Zhejiang posing as Sichuan")
    )
    sichuan_signer = Signer.from_file(node_keys["510000"].signing_key, "510000")
    genuine = sichuan_signer.sign(vacancy_event("510000", "forged-3", topic, title="real", salary=6000))
    tampered = dataclasses.replace(genuine, data=encode_data({"id": "forged-3", "title": "real", "salary": 60000}))
    records = [e.to_kafka() for e in (unknown_key, wrong_province, tampered)]
    records.append((b"forged-4", b"{}", [("ce_id", b"x")]))
    await produce_raw(federation.bootstrap, topic, records)
    honest = await federation.sichuan.write(topic, "510000-V-honest", title="焊工")

    async with consuming(federation.make_consumer()):

        async def honest_applied() -> bool:
            return len(await federation.zhejiang.applied()) == 1

        await eventually(honest_applied)

        async def dead_letters_published() -> bool:
            return len(await consume_all(federation.bootstrap, f"{topic}.deadletter", 4, timeout_s=0.5)) == 4

        await eventually(dead_letters_published)

        async def gauge_counts_them() -> bool:  # counted again when the consumer quarantined them (not every 30 s)
            return metric("labornet_quarantined_events", service="jobs") == 4

        await eventually(gauge_counts_them, timeout_s=10)

    assert await federation.zhejiang.applied() == [(honest.id, "510000-V-honest")]
    async with sessionmaker(federation.zhejiang.engine)() as session:
        reasons = dict((await session.execute(select(quarantine.c.event_id, quarantine.c.reason))).all())
    assert reasons == {
        unknown_key.id: "unknown-key",
        wrong_province.id: "province-mismatch",
        tampered.id: "bad-signature",
        None: "malformed",
    }
    for reason in ("unknown-key", "province-mismatch", "bad-signature", "malformed"):
        assert metric("labornet_events_rejected_total", service="jobs", topic=topic, reason=reason) == 1
    dead = await consume_all(federation.bootstrap, f"{topic}.deadletter", 4)
    assert sorted(dict(r.headers)["x-labornet-dlq-reason"].decode() for r in dead) == [
        "bad-signature",
        "malformed",
        "province-mismatch",
        "unknown-key",
    ]


async def test_poison_event_is_dead_lettered_and_later_events_still_apply(federation: Federation) -> None:
    topic = federation.topic
    first = await federation.sichuan.write(topic, "510000-V-1", title="家政")
    poison = await federation.sichuan.write(topic, "510000-V-1", poison=True)
    third = await federation.sichuan.write(topic, "510000-V-1", title="家政服务员")
    async with consuming(federation.make_consumer(max_attempts=3)) as consumer:

        async def third_applied() -> bool:
            return any(event_id == third.id for event_id, _ in await federation.zhejiang.applied())

        await eventually(third_applied)
        assert [e for e, _ in await federation.zhejiang.applied()] == [first.id, third.id]
        async with sessionmaker(federation.zhejiang.engine)() as session:
            row = (await session.execute(select(quarantine).where(quarantine.c.event_id == poison.id))).one()
        assert (row.reason, row.attempts, row.status) == ("handler-failed", 3, "quarantined")
        assert "has no title" in row.error
        assert metric("labornet_events_dead_lettered_total", service="jobs", topic=topic, reason="handler-failed") == 1
        dead = await consume_all(federation.bootstrap, f"{topic}.deadletter", 1)
        assert Envelope.from_kafka(dead[0].key, dead[0].value, dead[0].headers).id == poison.id

        # the operator fixes the cause and replays the record: it applies once, and only once
        federation.handlers.cured = True
        outcome = await consumer.replay(row.id)
        assert outcome.status == "applied"
        with pytest.raises(EventRejected, match="already replayed"):
            await consumer.replay(row.id)
    assert [e for e, _ in await federation.zhejiang.applied()] == [first.id, third.id, poison.id]


async def test_database_trouble_is_retried_without_quarantining_a_good_event(federation: Federation) -> None:
    written = [await federation.sichuan.write(federation.topic, f"510000-V-{n}", title="司机") for n in range(5)]
    federation.handlers.database_down_for = 7  # more than max_attempts: it must not count against the event
    async with consuming(federation.make_consumer(max_attempts=3)):

        async def all_applied() -> bool:
            return len(await federation.zhejiang.applied()) == 5

        await eventually(all_applied, timeout_s=40)
    assert sorted(e for e, _ in await federation.zhejiang.applied()) == sorted(e.id for e in written)
    async with sessionmaker(federation.zhejiang.engine)() as session:
        assert (await session.execute(select(quarantine))).all() == []


async def test_same_offset_after_a_broker_reset_is_not_mistaken_for_a_duplicate(federation: Federation) -> None:
    consumer = federation.make_consumer()
    bad = [(b"k", b"{}", [("ce_id", b"one")]), (b"k", b"{}", [("ce_id", b"two")])]
    records = [
        ConsumerRecord(federation.topic, 0, 0, 0, 0, key, value, None, len(key), len(value), tuple(headers))
        for key, value, headers in bad
    ]
    first, second = [await consumer.handle(r) for r in records]  # same topic/partition/offset, different bytes
    again = await consumer.handle(records[0])
    assert (first.status, second.status, again.status) == ("quarantined", "quarantined", "duplicate")


async def test_rebalance_between_two_replicas_applies_everything_once(federation: Federation) -> None:
    topic = federation.topic
    first_batch = [await federation.sichuan.write(topic, f"510000-V-{n}", title="电工") for n in range(30)]
    async with consuming(federation.make_consumer()) as replica_a:

        async def some_applied() -> bool:
            return len(await federation.zhejiang.applied()) >= 10

        await eventually(some_applied)
        async with consuming(federation.make_consumer()) as replica_b:  # joins the group: partitions move

            async def both_assigned() -> bool:
                return replica_a.ready and replica_b.ready

            await eventually(both_assigned, timeout_s=30)
            second_batch = [await federation.sichuan.write(topic, f"510000-W-{n}", title="瓦工") for n in range(30)]

            async def all_applied() -> bool:
                return len(await federation.zhejiang.applied()) >= 60

            await eventually(all_applied, timeout_s=40)
    rows = await federation.zhejiang.applied()
    assert len(rows) == 60
    assert sorted(event_id for event_id, _ in rows) == sorted(e.id for e in first_batch + second_batch)


async def test_a_consumer_reads_a_new_log_from_its_beginning(federation: Federation) -> None:
    """When the broker watch reports another cluster id, positions of the old log mean nothing: the consumer rewinds
    every assigned partition. Here the log is the same, so the rewind shows as every record handled again (the
    inbox rows are removed first so that the handler runs instead of the duplicate check)."""
    for n in range(6):
        await federation.sichuan.write(federation.topic, f"510000-V-{n}", title="焊工")
    cluster = ["cluster-a"]
    consumer = federation.make_consumer()
    consumer._cluster = lambda: cluster[0]
    async with consuming(consumer):

        async def six_applied() -> bool:
            return len(await federation.zhejiang.applied()) == 6

        await eventually(six_applied)
        calls = federation.handlers.calls
        async with sessionmaker(federation.zhejiang.engine)() as session, session.begin():
            await session.execute(inbox.delete().where(inbox.c.consumer == consumer.name))
        cluster[0] = "cluster-b"

        async def handled_again() -> bool:
            return federation.handlers.calls >= calls + 6

        await eventually(handled_again, timeout_s=15)
    assert len(await federation.zhejiang.applied()) == 12


async def test_a_consumer_beyond_the_end_of_a_partition_reads_it_from_its_beginning(federation: Federation) -> None:
    """The group's offsets were committed on a log that is gone (before the broker watch noticed the new one, a
    commit of the old positions reached the new broker), so a member starts far beyond the new log's end. Apache
    Kafka would answer OFFSET_OUT_OF_RANGE; the embedded broker answers with nothing, and a consumer that waited
    there would skip every record below offset 50. It must read each partition from its beginning instead."""
    group = f"beyond-the-end-{uuid.uuid4().hex[:8]}"
    stale = AIOKafkaConsumer(bootstrap_servers=federation.bootstrap, group_id=group, enable_auto_commit=False)
    await stale.start()
    try:
        partitions = [
            TopicPartition(federation.topic, p) for p in range(federation.zhejiang.settings.kafka_topic_partitions)
        ]
        stale.assign(partitions)
        await stale.commit({tp: 50 for tp in partitions})
    finally:
        await stale.stop()
    consumer = federation.make_consumer(group=group)
    consumer.lag_interval_s = 0.5
    rewinds = metric("labornet_consumer_log_rewinds_total", service="jobs", group=consumer.group_id)
    async with consuming(consumer):
        for n in range(6):
            await federation.sichuan.write(federation.topic, f"510000-V-{n}", title="焊工")

        async def six_applied() -> bool:
            return len(await federation.zhejiang.applied()) == 6

        await eventually(six_applied, timeout_s=30)
    assert metric("labornet_consumer_log_rewinds_total", service="jobs", group=consumer.group_id) > rewinds
    assert sorted(v for _, v in await federation.zhejiang.applied()) == [f"510000-V-{n}" for n in range(6)]


async def test_a_partition_ending_in_a_batch_of_several_records_is_not_taken_for_a_lost_log(
    federation: Federation,
) -> None:
    """The embedded broker's end-offsets answer counts a batch of records as one (three records in one batch at
    offsets 4–6: end 5), so a consumer that has read them stands beyond that end on a log that lost nothing. The
    check for a lost log must not rewind it (it would read the partition again at every check)."""
    for n in range(6):
        await federation.sichuan.write(federation.topic, f"510000-V-{n}", title="焊工")
    consumer = federation.make_consumer()
    consumer.lag_interval_s = 0.3
    labels = {"service": "jobs", "group": consumer.group_id}
    async with consuming(consumer):

        async def six_applied() -> bool:
            return len(await federation.zhejiang.applied()) == 6

        await eventually(six_applied)
        # the six records again, each partition's in one batch: duplicates, read once each
        records = await consume_all(federation.bootstrap, federation.topic, 6)
        producer = AIOKafkaProducer(bootstrap_servers=federation.bootstrap, acks="all", linger_ms=50)
        await producer.start()
        try:
            sent = [
                await producer.send(r.topic, r.value, key=r.key, headers=list(r.headers), partition=r.partition)
                for r in records
            ]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()
        rewinds = metric("labornet_consumer_log_rewinds_total", **labels)
        duplicates = metric(
            "labornet_events_consumed_total", service="jobs", topic=federation.topic, outcome="duplicate"
        )

        async def read_once() -> bool:
            now = metric("labornet_events_consumed_total", service="jobs", topic=federation.topic, outcome="duplicate")
            return now >= duplicates + 6

        await eventually(read_once)
        read_at = time.time()

        async def measured_twice_since() -> bool:  # a check that rewinds returns before it measures the lag
            return metric("labornet_consumer_lag_measured_timestamp_seconds", **labels) > read_at + 0.3

        await eventually(measured_twice_since, timeout_s=10)
    assert metric("labornet_consumer_log_rewinds_total", **labels) == rewinds
    assert (
        metric("labornet_events_consumed_total", service="jobs", topic=federation.topic, outcome="duplicate")
        == duplicates + 6
    )
    assert len(await federation.zhejiang.applied()) == 6


async def test_a_backlog_is_applied_in_runs_and_one_bad_record_is_found_and_quarantined_alone(
    federation: Federation,
) -> None:
    """Records of a partition are applied many to a transaction; a run holding one record that fails is rolled
    back whole and applied one by one: every good record once, in partition order, the bad one quarantined."""
    topic = federation.topic
    key = "510000-V-7"  # one key: one partition, one order
    written = [await federation.sichuan.write(topic, key, title=f"焊工 {n}") for n in range(30)]
    poison = await federation.sichuan.write(topic, key, poison=True)
    written += [await federation.sichuan.write(topic, key, title=f"焊工 {n}") for n in range(30, 60)]
    runs_before = metric("labornet_inbox_run_records_count", service="jobs")
    in_runs_before = metric("labornet_inbox_run_records_sum", service="jobs")
    split_before = metric("labornet_inbox_runs_split_total", service="jobs")
    consumer = federation.make_consumer(max_attempts=1)
    consumer.batch_size = 25
    async with consuming(consumer):

        async def all_good_applied() -> bool:
            return len(await federation.zhejiang.applied()) == len(written)

        await eventually(all_good_applied, timeout_s=40)
    runs = metric("labornet_inbox_run_records_count", service="jobs") - runs_before
    in_runs = metric("labornet_inbox_run_records_sum", service="jobs") - in_runs_before
    assert 0 < runs < len(written), "records were applied together, not one transaction each"
    assert in_runs >= len(written) - 25, "only the run that held the bad record was applied one by one"
    assert metric("labornet_inbox_runs_split_total", service="jobs") - split_before >= 1

    # the whole topic once more, in runs again: every record is a duplicate and nothing applies twice
    again = federation.make_consumer(group=f"replay-{uuid.uuid4().hex[:8]}", max_attempts=1)
    again.batch_size = 25
    async with consuming(again):

        async def all_seen_again() -> bool:
            return metric("labornet_events_consumed_total", service="jobs", topic=topic, outcome="duplicate") >= 60

        await eventually(all_seen_again, timeout_s=40)
    assert [e for e, _ in await federation.zhejiang.applied()] == [e.id for e in written]
    async with sessionmaker(federation.zhejiang.engine)() as session:
        rows = (await session.execute(select(quarantine.c.event_id, quarantine.c.reason))).all()
    assert [(r.event_id, r.reason) for r in rows] == [(poison.id, "handler-failed")]


async def test_runs_over_several_partitions_keep_their_order_and_a_forged_record_is_refused_wherever_it_falls(
    federation: Federation, node_keys: dict[str, NodeKeys]
) -> None:
    """Across several partitions and many runs, every genuine record is applied once in its partition's order, and
    forged records at a run's start, middle and end are quarantined alone (each ends the run before it)."""
    topic = federation.topic
    signer = Signer.from_file(node_keys["510000"].signing_key, "510000")
    events, forged = [], []
    for n in range(60):
        key = f"510000-V-ahead-{n % 4}"
        event = signer.sign(vacancy_event("510000", key, topic, title=f"焊工 {n}"))
        if n in (0, 13, 27, 41, 59):
            event = dataclasses.replace(event, data=encode_data({"id": key, "title": "forged"}))
            forged.append(event)
        events.append(event)
    await produce_raw(federation.bootstrap, topic, [event.to_kafka() for event in events])
    genuine = [event for event in events if event not in forged]
    refused_before = metric("labornet_events_rejected_total", service="jobs", topic=topic, reason="bad-signature")
    consumer = federation.make_consumer(max_attempts=1)
    consumer.batch_size = 7
    async with consuming(consumer):

        async def applied_and_refused() -> bool:
            refused = metric("labornet_events_rejected_total", service="jobs", topic=topic, reason="bad-signature")
            return len(await federation.zhejiang.applied()) == len(genuine) and refused - refused_before == 5

        await eventually(applied_and_refused, timeout_s=40)
    applied = await federation.zhejiang.applied()
    assert sorted(applied) == sorted((event.id, event.partitionkey) for event in genuine), "each genuine one once"
    for key in {event.partitionkey for event in events}:
        in_order = [event.id for event in genuine if event.partitionkey == key]
        assert [event_id for event_id, vacancy_id in applied if vacancy_id == key] == in_order
    async with sessionmaker(federation.zhejiang.engine)() as session:
        reasons = dict((await session.execute(select(quarantine.c.event_id, quarantine.c.reason))).all())
    assert reasons == {event.id: "bad-signature" for event in forged}


async def test_a_batched_handler_gets_the_consecutive_new_events_of_a_run_in_order(federation: Federation) -> None:
    """Consecutive new events whose handler is :func:`batched` reach it together, in partition order; an event of
    another handler between them ends the group, and duplicates never reach it again."""
    topic, key, other = federation.topic, "510000-V-9", "org.labornet.jobs.vacancy.noticed.v1"
    calls: list[list[str]] = []
    singles: list[str] = []

    async def apply_many(session: AsyncSession, envelopes: Sequence[Envelope]) -> None:
        calls.append([envelope.id for envelope in envelopes])
        for envelope in envelopes:
            await federation.handlers.apply(session, envelope)

    async def apply_other(session: AsyncSession, envelope: Envelope) -> None:
        singles.append(envelope.id)

    first = [await federation.sichuan.write(topic, key, title=f"焊工 {n}") for n in range(10)]
    async with sessionmaker(federation.sichuan.engine)() as session, session.begin():
        between = await federation.sichuan.outbox.add(session, topic=topic, event_type=other, key=key, data={"id": key})
    then = [await federation.sichuan.write(topic, key, title=f"焊工 {n}") for n in range(10, 20)]
    consumer = federation.make_consumer()
    consumer.handlers.update({VACANCY_PUBLISHED: batched(apply_many), other: apply_other})
    async with consuming(consumer):

        async def all_applied() -> bool:
            return len(await federation.zhejiang.applied()) == 20 and singles == [between.id]

        await eventually(all_applied, timeout_s=40)
    written = [e.id for e in first + then]
    assert [event_id for call in calls for event_id in call] == written, "each event once, in partition order"
    assert any(len(call) > 1 for call in calls), "events of a run were applied together"
    assert not any(first[-1].id in call and then[0].id in call for call in calls), "the other type ends a group"

    replay = federation.make_consumer(group=f"replay-{uuid.uuid4().hex[:8]}")
    replay.handlers.update({VACANCY_PUBLISHED: batched(apply_many), other: apply_other})
    calls.clear()
    async with consuming(replay):

        async def all_seen_again() -> bool:
            return metric("labornet_events_consumed_total", service="jobs", topic=topic, outcome="duplicate") >= 21

        await eventually(all_seen_again, timeout_s=40)
    assert calls == [] and singles == [between.id], "duplicates reach no handler"


def keys_on_partitions(count: int, partitions: int = 4) -> list[str]:
    """Vacancy ids the producer's default partitioner puts on ``count`` different partitions."""
    chosen: dict[int, str] = {}
    partitioner, numbers = DefaultPartitioner(), list(range(partitions))
    for n in range(1000):
        key = f"510000-V-p{n}"
        chosen.setdefault(partitioner(key.encode(), numbers, numbers), key)
        if len(chosen) == count:
            return list(chosen.values())
    raise AssertionError("no keys found for distinct partitions")


async def test_the_partitions_of_a_fetch_are_applied_at_once_on_a_server_database_each_in_its_order(
    federation: Federation, db_backend: str
) -> None:
    """On PostgreSQL the partitions of a fetch are applied at the same time, each in its own transaction; on either
    database every record is applied once and each partition keeps its order. SQLite, with one writer, is given
    one partition at a time."""
    topic, keys = federation.topic, keys_on_partitions(4)
    written = {key: [await federation.sichuan.write(topic, key, title=f"焊工 {n}") for n in range(8)] for key in keys}
    consumer = federation.make_consumer()
    server = db_backend == "postgresql"
    in_flight: set[str] = set()
    most = 0
    overlapped = asyncio.Event()  # or given up waiting for

    async def apply(session: AsyncSession, envelope: Envelope) -> None:
        nonlocal most
        key = envelope.json()["id"]
        in_flight.add(key)
        most = max(most, len(in_flight))
        if len(in_flight) > 1:
            overlapped.set()
        try:
            if server and not overlapped.is_set():
                # held until another partition is applied beside it: applied one after the other, they never are
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(overlapped.wait(), 10)
                overlapped.set()
            await federation.handlers.apply(session, envelope)
        finally:
            in_flight.discard(key)

    consumer.handlers[VACANCY_PUBLISHED] = apply
    async with consuming(consumer):

        async def all_applied() -> bool:
            return len(await federation.zhejiang.applied()) == 32

        await eventually(all_applied, timeout_s=60)
    applied = await federation.zhejiang.applied()
    for key, events in written.items():
        assert [event_id for event_id, vacancy_id in applied if vacancy_id == key] == [e.id for e in events]
    if server:
        assert most >= 2, "partitions were applied one after the other"
    else:  # its second transaction would only poll for the write lock the first one holds
        assert consumer.concurrency == 1


async def test_a_deadlock_between_partitions_applied_at_once_is_tried_again_and_counts_against_no_event(
    federation: Federation, db_backend: str
) -> None:
    """Two partitions applied at once that lock the same two rows in opposite orders deadlock; the server ends one
    transaction (SQLSTATE 40P01). That is the database's doing, not the event's: the partition is read again and
    applied, even with a single attempt allowed, and nothing is quarantined."""
    if db_backend != "postgresql":
        pytest.skip("SQLite applies one partition at a time: there is no second writer to deadlock with")
    topic, (first_key, second_key) = federation.topic, keys_on_partitions(2)
    async with federation.zhejiang.engine.begin() as connection:
        await connection.execute(text("CREATE TABLE crossed (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"))
        await connection.execute(text("INSERT INTO crossed VALUES (1, 0), (2, 0)"))
    events = [await federation.sichuan.write(topic, key, title="焊工") for key in (first_key, second_key)]
    holding: set[str] = set()
    both_hold = asyncio.Event()
    deadlocks = 0

    async def apply(session: AsyncSession, envelope: Envelope) -> None:
        nonlocal deadlocks
        key = envelope.json()["id"]
        rows = (1, 2) if key == first_key else (2, 1)
        await session.execute(text("UPDATE crossed SET n = n + 1 WHERE id = :id"), {"id": rows[0]})
        if not both_hold.is_set():
            holding.add(key)
            if len(holding) == 2:
                both_hold.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(both_hold.wait(), 10)
        try:
            await session.execute(text("UPDATE crossed SET n = n + 1 WHERE id = :id"), {"id": rows[1]})
        except DBAPIError as exc:
            deadlocks += getattr(exc.orig, "sqlstate", None) == "40P01"
            raise
        await federation.handlers.apply(session, envelope)

    retries = metric("labornet_event_retries_total", service="jobs", topic=topic)
    consumer = federation.make_consumer(max_attempts=1)
    consumer.handlers[VACANCY_PUBLISHED] = apply
    async with consuming(consumer):

        async def both_applied() -> bool:
            return len(await federation.zhejiang.applied()) == 2

        await eventually(both_applied, timeout_s=60)
    assert deadlocks == 1, "the two partitions did not meet (applied one after the other?)"
    assert sorted(await federation.zhejiang.applied()) == sorted((e.id, e.partitionkey) for e in events)
    assert metric("labornet_event_retries_total", service="jobs", topic=topic) == retries
    async with federation.zhejiang.engine.connect() as connection:
        assert (await connection.execute(select(quarantine.c.event_id))).all() == []
        assert (await connection.execute(text("SELECT n FROM crossed ORDER BY id"))).scalars().all() == [2, 2]


async def test_a_run_of_events_applied_together_grows_past_the_limit_of_events_applied_one_at_a_time(
    federation: Federation,
) -> None:
    """A handler that applies a run's events together does a fixed number of statements per run, so its runs may
    hold ``batched_run_size`` records; records applied one at a time end a run at ``batch_size``."""
    topic, key = federation.topic, "510000-V-11"
    calls: list[int] = []

    async def apply_many(session: AsyncSession, envelopes: Sequence[Envelope]) -> None:
        calls.append(len(envelopes))
        for envelope in envelopes:
            await federation.handlers.apply(session, envelope)

    for n in range(40):
        await federation.sichuan.write(topic, key, title=f"焊工 {n}")
    runs_before = metric("labornet_inbox_run_records_count", service="jobs")
    consumer = federation.make_consumer()
    consumer.batch_size, consumer.batched_run_size = 5, 20
    consumer.handlers[VACANCY_PUBLISHED] = batched(apply_many)
    async with consuming(consumer):

        async def all_applied() -> bool:
            return len(await federation.zhejiang.applied()) == 40

        await eventually(all_applied, timeout_s=40)
    assert sum(calls) == 40 and max(calls) > 5, f"runs of {calls}: held to the one-at-a-time limit"
    assert max(calls) <= 20, f"runs of {calls}: longer than batched_run_size"

    # the same records applied one at a time by their handler: runs of 5 at most
    again = federation.make_consumer(group=f"one-by-one-{uuid.uuid4().hex[:8]}")
    again.batch_size, again.batched_run_size = 5, 20
    sizes: list[int] = []
    original = again._apply_run

    async def measured(run: Sequence[tuple[ConsumerRecord[bytes, bytes], Envelope]]) -> bool:
        sizes.append(len(run))
        return await original(run)

    again._apply_run = measured  # type: ignore[method-assign]
    async with consuming(again):

        async def all_seen() -> bool:
            return metric("labornet_inbox_run_records_count", service="jobs") - runs_before >= len(calls) + 8

        await eventually(all_seen, timeout_s=40)
    assert sizes and max(sizes) <= 5, f"runs of {sizes}"

"""The transactional outbox and its relay, on real SQLite/PostgreSQL and the real embedded broker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiokafka import TopicPartition
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, event, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from labornet.shared.broker import EmbeddedBroker
from labornet.shared.db import as_utc, outbox, readonly_sessionmaker, sessionmaker
from labornet.shared.envelope import Envelope
from labornet.shared.kafka import ensure_topics, make_producer
from labornet.shared.keys import NodeKeys
from labornet.shared.observability import current_traceparent
from labornet.shared.outbox import Outbox, OutboxRelay, decode_headers
from labornet.shared.settings import Settings
from labornet.shared.signing import Signer, TrustList
from labornet.shared.testing import consume_all, eventually, platform_engine

state = MetaData()
vacancy = Table("vacancy", state, Column("id", String(40), primary_key=True), Column("version", Integer))


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = await platform_engine(database_url, state)
    yield engine
    await engine.dispose()


@pytest.fixture
def writer(node_keys: dict[str, NodeKeys]) -> Outbox:
    keys = node_keys["510000"]
    return Outbox("510000", "jobs", Signer.from_file(keys.signing_key, "510000"))


async def publish_vacancy(engine: AsyncEngine, writer: Outbox, vacancy_id: str, topic: str = "t.jobs") -> Envelope:
    async with sessionmaker(engine)() as session, session.begin():
        await session.execute(vacancy.insert().values(id=vacancy_id, version=1))
        return await writer.add(
            session,
            topic=topic,
            event_type="org.labornet.jobs.vacancy.published.v1",
            key=vacancy_id,
            data={"id": vacancy_id, "title": "川菜厨师"},
        )


async def pending(engine: AsyncEngine) -> int:
    async with sessionmaker(engine)() as session:
        return int((await session.execute(select(func.count()).where(outbox.c.sent_at.is_(None)))).scalar_one())


def relay_for(engine: AsyncEngine, writer: Outbox, bootstrap: str, batch_size: int = 50) -> OutboxRelay:
    settings = Settings(kafka_bootstrap_servers=bootstrap)  # type: ignore[call-arg]
    return OutboxRelay(
        sessionmaker(engine),
        readonly_sessionmaker(engine),
        lambda: make_producer(settings),
        writer,
        service="jobs",
        batch_size=batch_size,
        poll_interval_s=0.02,
        max_backoff_s=0.5,
        create_topics=lambda names: ensure_topics(settings, names),
    )


@contextlib.asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[None]:
    task = asyncio.create_task(relay.run())
    try:
        yield
    finally:
        await relay.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_event_is_written_with_the_state_change_or_not_at_all(engine: AsyncEngine, writer: Outbox) -> None:
    await publish_vacancy(engine, writer, "510000-V-1")

    async def failing_use_case() -> None:
        async with sessionmaker(engine)() as session, session.begin():
            await session.execute(vacancy.insert().values(id="510000-V-2", version=1))
            await writer.add(session, topic="t.jobs", event_type="x.v1", key="510000-V-2", data={})
            raise RuntimeError("validation failed")

    with pytest.raises(RuntimeError, match="validation failed"):
        await failing_use_case()
    second = await publish_vacancy(engine, writer, "510000-V-3")
    async with sessionmaker(engine)() as session:
        rows = (await session.execute(select(outbox.c.seq, outbox.c.event_type).order_by(outbox.c.id))).all()
        states = (await session.execute(select(vacancy.c.id))).scalars().all()
    assert sorted(states) == ["510000-V-1", "510000-V-3"]
    assert [r.seq for r in rows] == [1, 2], "a rolled-back transaction leaves no gap in the stream"
    assert second.streamseq == 2
    assert second.stream == "510000/t.jobs"


async def test_sequences_stay_gap_free_under_concurrent_writers(engine: AsyncEngine, writer: Outbox) -> None:
    async def write(n: int) -> None:
        async with sessionmaker(engine)() as session, session.begin():
            await writer.add(session, topic="t.jobs", event_type="x.v1", key=f"k{n}", data={"n": n})
            if n % 5 == 0:
                raise ValueError("rolled back on purpose")

    results = await asyncio.gather(*(write(n) for n in range(30)), return_exceptions=True)
    assert sum(isinstance(r, ValueError) for r in results) == 6
    async with sessionmaker(engine)() as session:
        seqs = (await session.execute(select(outbox.c.seq).order_by(outbox.c.seq))).scalars().all()
    assert seqs == list(range(1, 25))


async def test_relay_publishes_signed_records_and_marks_rows_sent(
    engine: AsyncEngine, writer: Outbox, kafka_broker: EmbeddedBroker, federation_dir: Path
) -> None:
    topic = f"t.relay.{datetime.now(UTC).timestamp():.0f}.{id(engine)}"
    written = [await publish_vacancy(engine, writer, f"510000-V-{n}", topic) for n in range(120)]
    async with running(relay_for(engine, writer, kafka_broker.bootstrap_servers)):
        records = await consume_all(kafka_broker.bootstrap_servers, topic, 120)

        async def all_sent() -> bool:
            return await pending(engine) == 0

        await eventually(all_sent)
    trust = TrustList.load(federation_dir / "trust-list.json")
    received = [Envelope.from_kafka(r.key, r.value, r.headers) for r in records]
    assert sorted(e.id for e in received) == sorted(e.id for e in written)
    assert all(trust.verify(e).province == "510000" for e in received)
    by_key = {e.partitionkey: e for e in received}
    assert by_key["510000-V-7"].json() == {"id": "510000-V-7", "title": "川菜厨师"}


async def test_relay_does_not_skip_a_row_committed_late(
    engine: AsyncEngine, writer: Outbox, kafka_broker: EmbeddedBroker, db_backend: str
) -> None:
    if db_backend == "sqlite":
        pytest.skip("SQLite serialises writers (BEGIN IMMEDIATE): a later id cannot commit before an earlier one")
    topic = f"t.late.{id(engine)}"
    late_session = sessionmaker(engine)()
    await late_session.begin()
    late = await writer.add(late_session, topic=topic, event_type="x.v1", key="late", data={"n": 1})
    early = await publish_vacancy(engine, writer, "510000-V-early", topic + ".other")
    async with sessionmaker(engine)() as session:
        ids = dict((await session.execute(select(outbox.c.event_id, outbox.c.id))).all())
    assert early.id in ids and late.id not in ids  # the late row is invisible while its transaction is open

    async with running(relay_for(engine, writer, kafka_broker.bootstrap_servers)):
        assert len(await consume_all(kafka_broker.bootstrap_servers, topic + ".other", 1)) == 1
        await late_session.commit()
        await late_session.close()
        records = await consume_all(kafka_broker.bootstrap_servers, topic, 1)
    assert [Envelope.from_kafka(r.key, r.value, r.headers).id for r in records] == [late.id]
    async with sessionmaker(engine)() as session:
        late_row_id = (await session.execute(select(outbox.c.id).where(outbox.c.event_id == late.id))).scalar_one()
    assert late_row_id < ids[early.id], "the late row has the lower id, yet it was published"


async def test_relay_survives_a_broker_outage(
    engine: AsyncEngine, writer: Outbox, private_broker: EmbeddedBroker
) -> None:
    topic = "t.outage"
    bootstrap = private_broker.bootstrap_servers
    relay = relay_for(engine, writer, bootstrap, batch_size=10)
    async with running(relay):
        before = [await publish_vacancy(engine, writer, f"before-{n}", topic) for n in range(5)]
        assert len(await consume_all(bootstrap, topic, 5)) == 5

        private_broker.stop()
        during = [await publish_vacancy(engine, writer, f"during-{n}", topic) for n in range(25)]
        await asyncio.sleep(1.5)
        assert await pending(engine) == 25, "while the broker is down the rows wait"

        private_broker.start()  # memory storage: the restarted broker starts empty

        async def drained() -> bool:
            return await pending(engine) == 0

        await eventually(drained, timeout_s=60)
        records = await consume_all(bootstrap, topic, 25)
    published = {Envelope.from_kafka(r.key, r.value, r.headers).id for r in records}
    assert {e.id for e in during} <= published, "every event written during the outage reached the broker"
    assert len(before) == 5
    async with sessionmaker(engine)() as session:
        attempts = (await session.execute(select(func.max(outbox.c.attempts)))).scalar_one()
    assert attempts >= 1, "failed attempts are recorded on the waiting rows"


async def test_a_log_found_lost_while_a_batch_is_in_flight_leaves_the_batch_its_producer(
    engine: AsyncEngine, writer: Outbox, kafka_broker: EmbeddedBroker
) -> None:
    """The broker watch finds the log lost (another task) between the relay taking its producer and sending: the
    batch goes out on that producer and is confirmed; the next batch starts with a new one. (The producer closed
    under the batch failed it; with the close still under way as the batch was sent, its sends waited unanswered
    until the publish timeout: 30 s of nothing sent after a lost log, the transfer saga stalled.)"""
    topic = f"t.inflight.{id(engine)}"
    bootstrap = kafka_broker.bootstrap_servers
    relay = relay_for(engine, writer, bootstrap)
    relay.publish_timeout_s = 120.0  # what fails here is a hang, not a slow broker
    check_topics = relay._check_topics
    lost: list[int] = []

    async def log_lost_meanwhile(producer: Any, topics: set[str]) -> Any:
        checked = await check_topics(producer, topics)
        if not lost:
            lost.append(await relay.republish("the broker's cluster id changed (the test)"))
        return checked

    relay._check_topics = log_lost_meanwhile  # type: ignore[method-assign]
    try:
        first = await publish_vacancy(engine, writer, "510000-V-inflight-1", topic)
        assert await asyncio.wait_for(relay.publish_batch(), 20) == 1
        old = relay.producer
        assert lost == [0] and old is not None  # nothing had been published before
        second = await publish_vacancy(engine, writer, "510000-V-inflight-2", topic)
        assert await asyncio.wait_for(relay.publish_batch(), 20) == 1
        assert relay.producer is not None and relay.producer is not old, "after a lost log, a new producer"
        assert await pending(engine) == 0
        records = await consume_all(bootstrap, topic, 2)
        assert sorted(Envelope.from_kafka(r.key, r.value, r.headers).id for r in records) == sorted(
            [first.id, second.id]
        )
    finally:
        await relay.stop()


class FakeProducer:
    """A producer without a broker, for the relay: counts its instances and metadata requests (per subclass); the
    broker holds the topics in ``held``."""

    held: ClassVar[set[str]] = set()
    instances = 0
    metadata_requests = 0

    def __init__(self) -> None:
        type(self).instances += 1
        self.client = self

    async def start(self) -> None:
        return None

    async def fetch_all_metadata(self) -> FakeProducer:
        type(self).metadata_requests += 1
        return self

    def topics(self) -> set[str]:
        return set(type(self).held)


class SilentProducer(FakeProducer):
    """A producer whose broker vanished mid-request: sends are accepted and never confirmed, and stopping waits for
    them forever."""

    held: ClassVar[set[str]] = {"t.silent"}
    instances = 0

    async def send(self, *_: object, **__: object) -> asyncio.Future[None]:
        return asyncio.get_running_loop().create_future()  # never confirmed

    async def stop(self) -> None:
        await asyncio.Event().wait()  # waits for the unconfirmed batch forever


async def test_a_relay_whose_broker_never_answers_gives_up_the_batch_and_its_producer(
    engine: AsyncEngine, writer: Outbox
) -> None:
    """The batch is given up after the publish timeout with its rows still unsent, and the producer after the stop
    timeout: the relay tries again with a new producer instead of waiting forever."""
    relay = OutboxRelay(
        sessionmaker(engine),
        readonly_sessionmaker(engine),
        SilentProducer,  # type: ignore[arg-type]
        writer,
        service="jobs",
        poll_interval_s=0.02,
        max_backoff_s=0.1,
        publish_timeout_s=0.3,
        stop_timeout_s=0.3,
    )
    SilentProducer.instances = 0
    await publish_vacancy(engine, writer, "silent-1", "t.silent")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(relay.publish_batch(), 5)
    assert await pending(engine) == 1
    async with running(relay):

        async def tried_again_with_new_producers() -> bool:
            return SilentProducer.instances >= 3

        await eventually(tried_again_with_new_producers, timeout_s=60)
    assert await pending(engine) == 1


class CountingProducer(FakeProducer):
    """A producer whose broker confirms every record."""

    held: ClassVar[set[str]] = set()
    instances = 0
    metadata_requests = 0

    async def stop(self) -> None:
        return None

    async def send(self, topic: str, *_: object, **__: object) -> asyncio.Future[TopicPartition]:
        confirmed = asyncio.get_running_loop().create_future()
        confirmed.set_result(TopicPartition(topic, 0))
        return confirmed


def counting_relay(
    engine: AsyncEngine, writer: Outbox, created: list[set[str]], held: set[str], **options: Any
) -> OutboxRelay:
    """A relay on a :class:`CountingProducer` whose broker holds ``held``; topics it creates are listed in
    ``created`` and held from then on."""

    async def create_topics(topics: set[str]) -> None:
        created.append(topics)
        CountingProducer.held |= topics

    CountingProducer.held, CountingProducer.metadata_requests, CountingProducer.instances = set(held), 0, 0
    return OutboxRelay(
        sessionmaker(engine),
        readonly_sessionmaker(engine),
        CountingProducer,  # type: ignore[arg-type]
        writer,
        service="jobs",
        create_topics=create_topics,
        **options,
    )


async def test_the_relay_asks_for_the_topics_once_a_second_under_load_and_again_for_a_new_topic(
    engine: AsyncEngine, writer: Outbox
) -> None:
    """A busy relay does not ask the broker for its metadata before every batch: one answer stands for a second for
    the topics it listed; a topic not in it, or a topic the broker lost (recreated, the producer renewed), is asked
    for at once."""
    created: list[set[str]] = []
    relay = counting_relay(engine, writer, created, {"t.a", "t.b"}, batch_size=1, topic_check_interval_s=0.5)
    for n in range(5):
        await publish_vacancy(engine, writer, f"busy-{n}", "t.a")
    assert [await relay.publish_batch() for _ in range(5)] == [1] * 5
    assert CountingProducer.metadata_requests == 1, "five batches within the second: one metadata request"

    await publish_vacancy(engine, writer, "other-topic", "t.b")  # held by the broker and listed in the answer
    assert await relay.publish_batch() == 1
    assert CountingProducer.metadata_requests == 1

    await asyncio.sleep(0.6)
    await publish_vacancy(engine, writer, "a-second-later", "t.a")
    assert await relay.publish_batch() == 1
    assert CountingProducer.metadata_requests == 2, "the answer is old: asked again"

    await publish_vacancy(engine, writer, "new-topic", "t.c")  # not in the last answer: asked at once
    assert await relay.publish_batch() == 1
    assert CountingProducer.metadata_requests == 3
    assert created == [{"t.c"}] and CountingProducer.instances == 2, "created, and a producer with the new layout"
    assert await pending(engine) == 0


async def test_topics_found_gone_are_published_again_at_the_next_batch_when_the_first_try_failed(
    engine: AsyncEngine, writer: Outbox
) -> None:
    """A topic the relay published to is gone from the broker and the first try to publish again what it held fails
    (the database did not answer): the topic is not created again yet, so the next batch finds it gone and tries
    again. (Created first, the next batch found it there and what the log lost was never published again.)"""
    created: list[set[str]] = []
    relay = counting_relay(engine, writer, created, set())
    relay.published.add(TopicPartition("t.gone", 0))  # published to before the broker lost it
    await publish_vacancy(engine, writer, "gone-1", "t.gone")
    republish, tries = relay.republish, []

    async def failing_once(reason: str) -> int:
        tries.append(reason)
        if len(tries) == 1:
            raise ConnectionError("the database did not answer")
        return await republish(reason)

    relay.republish = failing_once  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await relay.publish_batch()
    assert created == [] and await pending(engine) == 1
    assert await relay.publish_batch() == 1
    assert len(tries) == 2 and created == [{"t.gone"}] and await pending(engine) == 0


async def test_directed_messages_only_go_to_the_destination_inbox(engine: AsyncEngine, writer: Outbox) -> None:
    async with sessionmaker(engine)() as session, session.begin():
        with pytest.raises(ValueError, match=r"must go to labornet\.330000\.jobs\.inbox"):
            await writer.add(
                session, topic="labornet.510000.jobs.events", event_type="x.v1", key="k", data={}, destination="330000"
            )
        with pytest.raises(ValueError, match="say which province"):
            await writer.add(session, topic="labornet.330000.jobs.inbox", event_type="x.v1", key="k", data={})
        sent = await writer.add(
            session, topic="labornet.330000.jobs.inbox", event_type="x.v1", key="k", data={}, destination="330000"
        )
    assert sent.destprovince == "330000"


async def stored_events(engine: AsyncEngine) -> list[Envelope]:
    """The outbox's events in id order (the order the relay publishes them)."""
    async with sessionmaker(engine)() as session:
        rows = (await session.execute(select(outbox).order_by(outbox.c.id))).all()
    events = [Envelope.from_kafka(r.message_key, r.payload, decode_headers(r.headers)) for r in rows]
    assert [r.seq for r in rows] == [e.streamseq for e in events], "the row's number is the signed one"
    return events


async def test_queued_events_are_numbered_signed_and_written_at_commit_with_two_statements(
    engine: AsyncEngine, writer: Outbox, federation_dir: Path
) -> None:
    """However many events a transaction queues, writing them costs one counter statement per stream and one
    insert, just before the commit; an event added at once and queued ones share the stream's numbers."""
    inbox_topic = "labornet.330000.jobs.inbox"
    sent: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        sent.append(" ".join(statement.split()).upper())

    first = await publish_vacancy(engine, writer, "510000-V-1")
    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        async with sessionmaker(engine)() as session, session.begin():
            for n in range(5):
                writer.queue(
                    session, topic=inbox_topic, event_type="x.v1", key=f"m{n}", data={"n": n}, destination="330000"
                )
                writer.queue(session, topic="t.jobs", event_type="x.v1", key=f"b{n}", data={"n": n})
            async with sessionmaker(engine)() as other:  # nothing is written before the commit
                assert (await other.execute(select(func.count()).select_from(outbox))).scalar_one() == 1
            assert not [s for s in sent if s.startswith("INSERT")]
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    assert len([s for s in sent if s.startswith("INSERT INTO OUTBOX_STREAM")]) == 2, sent
    assert len([s for s in sent if s.startswith("INSERT INTO OUTBOX ")]) == 1, sent

    events = await stored_events(engine)
    trust = TrustList.load(federation_dir / "trust-list.json")
    for envelope in events:
        trust.verify(envelope)
    assert events[0].id == first.id
    by_stream: dict[str, list[int]] = {}
    for envelope in events:
        by_stream.setdefault(envelope.stream, []).append(envelope.streamseq)
    assert by_stream == {"510000/t.jobs": [1, 2, 3, 4, 5, 6], f"510000/{inbox_topic}": [1, 2, 3, 4, 5]}
    assert [e.partitionkey for e in events if e.destprovince] == [f"m{n}" for n in range(5)]
    assert [e.json() for e in events[1:] if not e.destprovince] == [{"n": n} for n in range(5)]
    async with sessionmaker(engine)() as session:
        receipts = (await session.execute(select(outbox.c.expects_receipt).order_by(outbox.c.id))).scalars().all()
    assert receipts == [False] + [True, False] * 5


async def test_queued_events_of_a_rolled_back_transaction_or_savepoint_are_never_written(
    engine: AsyncEngine, writer: Outbox
) -> None:
    async def failing() -> None:
        async with sessionmaker(engine)() as session, session.begin():
            writer.queue(session, topic="t.jobs", event_type="x.v1", key="lost", data={})
            raise RuntimeError("refused")

    with pytest.raises(RuntimeError, match="refused"):
        await failing()
    async with sessionmaker(engine)() as session, session.begin():
        writer.queue(session, topic="t.jobs", event_type="x.v1", key="outer-1", data={})
        savepoint = await session.begin_nested()
        writer.queue(session, topic="t.jobs", event_type="x.v1", key="undone", data={})
        await savepoint.rollback()
        async with session.begin_nested():
            writer.queue(session, topic="t.jobs", event_type="x.v1", key="kept", data={})
        writer.queue(session, topic="t.jobs", event_type="x.v1", key="outer-2", data={})
    async with sessionmaker(engine)() as session, session.begin():  # the same writer goes on numbering
        writer.queue(session, topic="t.jobs", event_type="x.v1", key="next", data={})
    events = await stored_events(engine)
    assert [(e.partitionkey, e.streamseq) for e in events] == [("outer-1", 1), ("kept", 2), ("outer-2", 3), ("next", 4)]


async def test_queued_events_take_their_numbers_in_commit_order(
    engine: AsyncEngine, writer: Outbox, db_backend: str
) -> None:
    """Two transactions on one stream: the one that commits first has the lower number and the lower id, whichever
    queued first, so the relay publishes the stream gap-free and in order."""
    if db_backend == "sqlite":
        pytest.skip("SQLite serialises writers (BEGIN IMMEDIATE): the first to begin is the first to commit")
    first_queued = sessionmaker(engine)()
    await first_queued.begin()
    writer.queue(first_queued, topic="t.jobs", event_type="x.v1", key="queued-first", data={})
    async with sessionmaker(engine)() as session, session.begin():
        writer.queue(session, topic="t.jobs", event_type="x.v1", key="committed-first", data={})
    await first_queued.commit()
    await first_queued.close()

    # and concurrent units of work, some rolled back, leave no gap
    async def write(n: int) -> None:
        async with sessionmaker(engine)() as session, session.begin():
            writer.queue(session, topic="t.jobs", event_type="x.v1", key=f"k{n}", data={"n": n})
            await asyncio.sleep(0.001 * (n % 3))
            if n % 5 == 0:
                raise ValueError("rolled back on purpose")

    results = await asyncio.gather(*(write(n) for n in range(30)), return_exceptions=True)
    assert sum(isinstance(r, ValueError) for r in results) == 6
    events = await stored_events(engine)
    assert [e.partitionkey for e in events[:2]] == ["committed-first", "queued-first"]
    assert [e.streamseq for e in events] == list(range(1, 27)), "numbers follow the ids without a gap"


async def test_a_published_batch_is_marked_sent_with_each_message_s_receipt_wait_in_one_statement(
    engine: AsyncEngine, writer: Outbox, kafka_broker: EmbeddedBroker
) -> None:
    inbox_topic = "labornet.330000.jobs.inbox"
    async with sessionmaker(engine)() as session, session.begin():
        for n in range(3):
            writer.queue(session, topic=inbox_topic, event_type="x.v1", key=f"m{n}", data={}, destination="330000")
        writer.queue(session, topic=f"t.waits.{id(engine)}", event_type="x.v1", key="b", data={})
    async with sessionmaker(engine)() as session, session.begin():  # m1 was sent twice before, m2 once
        await session.execute(update(outbox).where(outbox.c.message_key == b"m1").values(resends=2))
        await session.execute(update(outbox).where(outbox.c.message_key == b"m2").values(resends=1))
    relay = relay_for(engine, writer, kafka_broker.bootstrap_servers)
    sent: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        sent.append(" ".join(statement.split()).upper())

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        assert await relay.publish_batch() == 4
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
        await relay.stop()
    assert len([s for s in sent if s.startswith("UPDATE OUTBOX")]) == 1, sent
    async with sessionmaker(engine)() as session:
        rows = (await session.execute(select(outbox).order_by(outbox.c.id))).all()
    waits = {
        r.message_key: (as_utc(r.resend_at) - as_utc(r.sent_at)) if r.resend_at is not None else None for r in rows
    }
    assert waits == {
        b"m0": timedelta(seconds=relay.receipt_wait_s),
        b"m1": timedelta(seconds=relay.receipt_wait_s * 4),
        b"m2": timedelta(seconds=relay.receipt_wait_s * 2),
        b"b": None,
    }


async def test_a_commit_that_wrote_events_wakes_the_relay_and_a_rollback_does_not(
    engine: AsyncEngine, writer: Outbox
) -> None:
    """The relay of the writer is woken by the commit of a transaction that added or queued events (a savepoint
    rolled back inside it changes nothing), never by one that rolled back, nor by a later commit of the same session
    that wrote none."""
    woken = writer._wake
    async with sessionmaker(engine)() as session:
        with contextlib.suppress(RuntimeError):
            async with session.begin():
                writer.queue(session, topic="t.jobs", event_type="x.v1", key="rolled-back", data={})
                raise RuntimeError("the use case failed")
        assert not woken.is_set()
        async with session.begin():
            await session.execute(select(1))
        assert not woken.is_set(), "a commit that wrote nothing woke the relay"
        async with session.begin():
            await writer.add(session, topic="t.jobs", event_type="x.v1", key="added", data={})
            assert not woken.is_set(), "woken before the commit"
        assert woken.is_set()
    woken.clear()
    async with sessionmaker(engine)() as session, session.begin():
        writer.queue(session, topic="t.jobs", event_type="x.v1", key="queued", data={})
        with contextlib.suppress(RuntimeError):
            async with session.begin_nested():
                writer.queue(session, topic="t.jobs", event_type="x.v1", key="in-savepoint", data={})
                raise RuntimeError("one step failed")
    assert woken.is_set()
    assert [e.partitionkey for e in await stored_events(engine)] == ["added", "queued"]


async def test_queued_events_of_a_session_closed_without_a_commit_are_never_written(
    engine: AsyncEngine, writer: Outbox
) -> None:
    """A session that is closed with its transaction open rolls it back; using the same session again later writes
    only what was queued since."""
    session = sessionmaker(engine)()
    await session.execute(select(1))
    writer.queue(session, topic="t.jobs", event_type="x.v1", key="abandoned", data={})
    await session.close()
    async with session.begin():
        writer.queue(session, topic="t.jobs", event_type="x.v1", key="committed", data={})
    await session.close()
    assert [(e.partitionkey, e.streamseq) for e in await stored_events(engine)] == [("committed", 1)]


async def test_a_queued_event_carries_the_trace_it_was_queued_in(engine: AsyncEngine, writer: Outbox) -> None:
    """Events queued in one transaction by steps of different traces (an inbox run answering several messages)
    each carry their own trace, not the one current at the commit; added events carry the current one."""
    first, second = (f"00-{n:032x}-{n:016x}-01" for n in (1, 2))
    async with sessionmaker(engine)() as session, session.begin():
        token = current_traceparent.set(first)
        writer.queue(session, topic="t.jobs", event_type="x.v1", key="one", data={})
        current_traceparent.reset(token)
        token = current_traceparent.set(second)
        writer.queue(session, topic="t.jobs", event_type="x.v1", key="two", data={})
        await writer.add(session, topic="t.jobs", event_type="x.v1", key="added", data={})
        # the commit below happens in the second trace
    current_traceparent.reset(token)
    traces = {e.partitionkey: e.traceparent for e in await stored_events(engine)}
    assert traces == {"one": first, "two": second, "added": second}


async def test_one_replica_relays_at_a_time_and_its_lock_costs_no_statement_of_its_own(
    engine: AsyncEngine, writer: Outbox, kafka_broker: EmbeddedBroker, db_backend: str
) -> None:
    """On PostgreSQL a batch is one transaction: BEGIN, the read that takes the replicas' lock, the mark, COMMIT
    (two transactions took six round trips); the lock is held until the rows are marked sent."""
    if db_backend == "sqlite":
        pytest.skip("one process writes a SQLite file: the replicas' lock is PostgreSQL's")
    topic = f"t.replicas.{id(engine)}"
    await publish_vacancy(engine, writer, "510000-V-1", topic)
    relay = relay_for(engine, writer, kafka_broker.bootstrap_servers)
    sent: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        sent.append(" ".join(statement.split()).upper())

    def begun(_conn: object) -> None:
        sent.append("BEGIN")

    def committed(_conn: object) -> None:
        sent.append("COMMIT")

    hooks = {"before_cursor_execute": record, "begin": begun, "commit": committed}
    try:
        async with engine.connect() as other_replica, other_replica.begin():  # holds the relay's lock
            await other_replica.execute(select(func.pg_advisory_xact_lock(literal(relay._lock_key, BigInteger))))
            assert await relay.publish_batch() == 0
            assert await pending(engine) == 1
        for name, hook in hooks.items():
            event.listen(engine.sync_engine, name, hook)
        assert await relay.publish_batch() == 1
    finally:
        for name, hook in hooks.items():
            if event.contains(engine.sync_engine, name, hook):
                event.remove(engine.sync_engine, name, hook)
        await relay.stop()
    assert await pending(engine) == 0
    assert [s.split()[0] for s in sent] == ["BEGIN", "SELECT", "UPDATE", "COMMIT"], sent
    assert "PG_TRY_ADVISORY_XACT_LOCK" in sent[1]


async def test_while_a_replica_publishes_its_batch_the_others_find_nothing_to_relay(
    engine: AsyncEngine, writer: Outbox, kafka_broker: EmbeddedBroker, db_backend: str
) -> None:
    """The lock taken by the read is held through the publishing until the rows are marked sent and committed: a
    second replica that looks meanwhile relays nothing, and afterwards finds the rows sent."""
    if db_backend == "sqlite":
        pytest.skip("one process writes a SQLite file: the replicas' lock is PostgreSQL's")
    topic = f"t.replicas.held.{id(engine)}"
    await publish_vacancy(engine, writer, "510000-V-2", topic)
    first = relay_for(engine, writer, kafka_broker.bootstrap_servers)
    second = relay_for(engine, writer, kafka_broker.bootstrap_servers)
    publishing, go_on = asyncio.Event(), asyncio.Event()
    ensure = first._ensure_producer

    async def held_producer() -> Any:
        publishing.set()
        await go_on.wait()  # the first replica holds its batch here, between its read and its mark
        return await ensure()

    first._ensure_producer = held_producer  # type: ignore[method-assign]
    try:
        batch = asyncio.create_task(first.publish_batch())
        await asyncio.wait_for(publishing.wait(), 10)
        assert await second.publish_batch() == 0
        assert await pending(engine) == 1
        go_on.set()
        assert await asyncio.wait_for(batch, 30) == 1
        assert await second.publish_batch() == 0
        assert await pending(engine) == 0
    finally:
        go_on.set()
        await first.stop()
        await second.stop()

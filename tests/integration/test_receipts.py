"""Receipts for directed messages, each promise tried on its own (ADR 0009), on the real broker and databases.

Sichuan (510000) sends contact letters to Zhejiang's inbox (330000); Zhejiang answers each with a signed receipt
on Sichuan's inbox; Chongqing (500000) is a third province whose signature is valid but who was not addressed.
Each test gets a service name of its own, so its topics, consumer groups and metric series are its own too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from prometheus_client import REGISTRY
from sqlalchemy import delete, event, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from labornet.shared.app import ConsumerSpec, ServiceSpec, start_runtime, stop_runtime
from labornet.shared.broker import EmbeddedBroker
from labornet.shared.db import as_utc, inbox, outbox, quarantine, readonly_sessionmaker, sessionmaker, utcnow
from labornet.shared.envelope import Envelope, encode_data, event_source, new_event_id
from labornet.shared.inbox import EventConsumer
from labornet.shared.kafka import ensure_topics, make_consumer, make_producer
from labornet.shared.keys import NodeKeys
from labornet.shared.outbox import Outbox, OutboxRelay, decode_headers, resend_delay
from labornet.shared.receipts import RECEIPT, Receipt, ReceiptOutcome, apply_receipt, apply_receipts
from labornet.shared.settings import Settings
from labornet.shared.signing import SignatureRejected, Signer, TrustListFile
from labornet.shared.testing import eventually, outbox_events, platform_engine
from labornet.shared.topics import deadletter_topic, events_topic, inbox_topic, stream_id

pytestmark = pytest.mark.integration

SENDER, RECEIVER, THIRD = "510000", "330000", "500000"
CONTACT_LETTER = "org.labornet.insurance.transfer.contact-letter.v1"


def metric(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def holds(check: Callable[[], Awaitable[bool]], for_s: float, interval_s: float = 0.1) -> None:
    """``check`` stays true for ``for_s`` seconds; fails the first time it is not."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + for_s
    while loop.time() < deadline:
        assert await check(), f"{getattr(check, '__name__', check)} stopped holding"
        await asyncio.sleep(interval_s)


def signed_receipt(
    keys: NodeKeys,
    service: str,
    letter_id: str,
    outcome: ReceiptOutcome = ReceiptOutcome.APPLIED,
    to: str = SENDER,
) -> Envelope:
    """A receipt for letter ``letter_id`` that the province of ``keys`` signs and sends to the inbox of ``to``
    (Sichuan's unless told)."""
    province, topic = keys.province, inbox_topic(to, service)
    receipt = Receipt(event_id=letter_id, event_type=CONTACT_LETTER, outcome=outcome, received_at=utcnow())
    return Signer.from_file(keys.signing_key, province).sign(
        Envelope(
            id=new_event_id(),
            source=event_source(province, service),
            type=RECEIPT,
            time=datetime.now(UTC),
            partitionkey=letter_id,
            originprovince=province,
            destprovince=to,
            stream=stream_id(province, topic),
            streamseq=1,
            schemaversion=1,
            subject=letter_id,
            data=encode_data(receipt),
        )
    )


ANSWER = "org.labornet.insurance.transfer.information-sheet.v1"


class Letters:
    """Zhejiang's handler of contact letters; a letter marked ``unreadable`` fails until ``cured``. With an
    ``answering`` outbox it answers each letter (or only the first of a transaction, ``answer_once``) with a directed
    message to the letter's sender, in the same transaction, as a province that sends the information sheet at once
    does."""

    def __init__(self) -> None:
        self.applied: list[str] = []
        self.failures = 0
        self.cured = False
        self.answering: Outbox | None = None
        self.answer_once = False

    async def receive(self, session: AsyncSession, envelope: Envelope) -> None:
        if envelope.json().get("unreadable") and not self.cured:
            self.failures += 1
            raise ValueError("the contact letter names no insured person")
        self.applied.append(envelope.id)
        if self.answering is not None and not (self.answer_once and session.info.get("answered")):
            session.info["answered"] = True
            self.answering.queue(
                session,
                topic=inbox_topic(envelope.originprovince, self.answering.service),
                event_type=ANSWER,
                key=envelope.partitionkey,
                destination=envelope.originprovince,
                data={"answers": envelope.id},
            )


@dataclass
class Province:
    code: str
    service: str
    engine: AsyncEngine
    outbox: Outbox
    relay: OutboxRelay
    consumer: EventConsumer
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def start(self, *parts: str) -> None:
        for part in parts:
            self.tasks[part] = asyncio.create_task(self.relay.run() if part == "relay" else self.consumer.run())

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.relay.stop()
        for task in self.tasks.values():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.tasks.clear()

    async def send_letter(self, to: str, **data: object) -> Envelope:
        async with sessionmaker(self.engine)() as session, session.begin():
            return await self.outbox.add(
                session,
                topic=inbox_topic(to, self.service),
                event_type=CONTACT_LETTER,
                key=f"transfer-{uuid.uuid4().hex[:8]}",
                destination=to,
                data={"case": "ZJ-2026-0001", **data},
            )

    async def outbox_rows(self) -> list[Row[Any]]:
        async with sessionmaker(self.engine)() as session:
            return list((await session.execute(select(outbox).order_by(outbox.c.id))).all())

    async def row(self, event_id: str) -> Row[Any]:
        async with sessionmaker(self.engine)() as session:
            return (await session.execute(select(outbox).where(outbox.c.event_id == event_id))).one()

    async def count(self, table: Any) -> int:
        async with sessionmaker(self.engine)() as session:
            return int((await session.execute(select(func.count()).select_from(table))).scalar_one())


@dataclass
class Bus:
    service: str
    sender: Province
    receiver: Province
    letters: Letters
    bootstrap: str
    trust_list: Path

    def sent(self, outcome: str) -> float:
        return metric("labornet_receipts_total", service=self.service, direction="sent", outcome=outcome) or 0.0

    def received(self, outcome: str) -> float:
        return metric("labornet_receipts_total", service=self.service, direction="received", outcome=outcome) or 0.0


BusFactory = Callable[..., Awaitable[Bus]]


@pytest.fixture
async def bus(
    new_database_url: Callable[[], Awaitable[str]],
    make_settings: Callable[..., Settings],
    federation_dir: Path,
    node_keys: dict[str, NodeKeys],
    kafka_broker: EmbeddedBroker,
) -> AsyncIterator[BusFactory]:
    """Builds Sichuan and Zhejiang (nothing started); the test decides which relay and consumer run."""
    built: list[Province] = []

    async def build(receipt_wait_s: float = 30.0, receipt_wait_max_s: float = 600.0, max_attempts: int = 2) -> Bus:
        service = f"insurance-{uuid.uuid4().hex[:8]}"
        letters = Letters()
        trust = TrustListFile(federation_dir / "trust-list.json")
        provinces: dict[str, Province] = {}
        for code in (SENDER, RECEIVER):
            settings = make_settings(code, "insurance", await new_database_url())
            engine = await platform_engine(settings.database_url)
            writer = Outbox(code, service, Signer.from_file(node_keys[code].signing_key, code))
            relay = OutboxRelay(
                sessionmaker(engine),
                readonly_sessionmaker(engine),
                functools.partial(make_producer, settings),
                writer,
                service=service,
                poll_interval_s=0.02,
                max_backoff_s=0.5,
                create_topics=functools.partial(ensure_topics, settings),
                receipt_wait_s=receipt_wait_s,
                receipt_wait_max_s=receipt_wait_max_s,
            )
            consumer = EventConsumer(
                name="inbox",
                province=code,
                service=service,
                topics=[inbox_topic(code, service)],
                handlers={CONTACT_LETTER: letters.receive} if code == RECEIVER else {},
                sessions=sessionmaker(engine),
                outbox=writer,
                trust=trust,
                consumer_factory=functools.partial(make_consumer, settings),
                deadletter_topic=deadletter_topic(code, service),
                max_attempts=max_attempts,
                retry_backoff_s=0.01,
            )
            provinces[code] = Province(code, service, engine, writer, relay, consumer)
            built.append(provinces[code])
        topics = [inbox_topic(code, service) for code in (SENDER, RECEIVER, THIRD)]
        await ensure_topics(settings, [*topics, *(deadletter_topic(code, service) for code in (SENDER, RECEIVER))])
        return Bus(
            service,
            provinces[SENDER],
            provinces[RECEIVER],
            letters,
            kafka_broker.bootstrap_servers,
            federation_dir / "trust-list.json",
        )

    yield build
    for province in built:
        await province.stop()
        await province.engine.dispose()


async def consuming(*provinces: Province) -> None:
    for province in provinces:
        province.start("consumer")
    for province in provinces:
        await province.consumer.wait_assigned(30)


async def test_an_acknowledged_letter_is_never_sent_again_and_receipts_expect_no_receipt(bus: BusFactory) -> None:
    federation = await bus(receipt_wait_s=1.0, receipt_wait_max_s=2.0)
    sender, receiver = federation.sender, federation.receiver
    sender.start("relay")
    receiver.start("relay")
    await consuming(sender, receiver)
    letter = await sender.send_letter(RECEIVER)

    async def acknowledged() -> bool:
        return (await sender.row(letter.id)).acked_at is not None

    await eventually(acknowledged, timeout_s=20)
    row = await sender.row(letter.id)
    assert (row.receipt_outcome, row.resends, row.resend_at) == ("applied", 0, None)
    [answer] = await receiver.outbox_rows()
    assert (answer.event_type, answer.destination, answer.expects_receipt) == (RECEIPT, SENDER, False)
    receipt = Receipt.model_validate_json((await outbox_events(receiver.engine))[0][0].data)
    assert (receipt.event_id, receipt.event_type, receipt.outcome) == (letter.id, CONTACT_LETTER, "applied")

    async def nothing_moves() -> bool:
        """One letter, one receipt, each applied once; nothing resent, nothing answered twice."""
        row = await sender.row(letter.id)
        return (
            row.resends == 0
            and row.sent_at is not None
            and len(await sender.outbox_rows()) == 1
            and len(await receiver.outbox_rows()) == 1
            and await sender.count(inbox) == 1
            and await receiver.count(inbox) == 1
        )

    # the relay looks for overdue letters every second: three receipt waits and more
    await holds(nothing_moves, for_s=4.0)
    assert federation.letters.applied == [letter.id]
    assert (federation.sent("applied"), federation.received("applied"), federation.sent("duplicate")) == (1, 1, 0)
    assert metric("labornet_directed_resends_total", service=federation.service) == 0


async def test_a_receipt_signed_by_a_province_not_addressed_acknowledges_nothing(
    bus: BusFactory, node_keys: dict[str, NodeKeys]
) -> None:
    federation = await bus()
    sender, receiver = federation.sender, federation.receiver
    sender.start("relay")
    await consuming(sender)
    letter = await sender.send_letter(RECEIVER)

    async def published() -> bool:
        return (await sender.row(letter.id)).sent_at is not None

    await eventually(published)
    # Chongqing signs a receipt for the letter with its own valid key, on Sichuan's inbox topic
    topic = inbox_topic(SENDER, federation.service)
    forged = signed_receipt(node_keys[THIRD], federation.service, letter.id)
    key, value, headers = forged.to_kafka()
    producer = AIOKafkaProducer(bootstrap_servers=federation.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()

    async def forged_receipt_read() -> bool:
        return federation.received("unmatched") == 1

    await eventually(forged_receipt_read)
    assert (await sender.row(letter.id)).acked_at is None, "a third province acknowledged a letter not sent to it"
    assert federation.received("applied") == 0

    # the province addressed answers: that receipt counts
    receiver.start("relay")
    await consuming(receiver)

    async def acknowledged() -> bool:
        return (await sender.row(letter.id)).acked_at is not None

    await eventually(acknowledged, timeout_s=20)
    assert (await sender.row(letter.id)).receipt_outcome == "applied"
    assert federation.received("applied") == 1


async def test_a_lost_receipt_costs_one_resend_answered_as_a_duplicate(bus: BusFactory) -> None:
    federation = await bus(receipt_wait_s=1.0, receipt_wait_max_s=4.0)
    sender, receiver = federation.sender, federation.receiver
    sender.start("relay")
    await consuming(sender, receiver)  # Zhejiang's relay is not running: its receipt stays in its outbox
    letter = await sender.send_letter(RECEIVER)

    async def receipt_written() -> bool:
        return any(row.event_type == RECEIPT for row in await receiver.outbox_rows())

    await eventually(receipt_written, timeout_s=20)
    async with sessionmaker(receiver.engine)() as session, session.begin():
        lost = await session.execute(delete(outbox).where(outbox.c.event_type == RECEIPT, outbox.c.sent_at.is_(None)))
    assert lost.rowcount == 1  # type: ignore[attr-defined]
    receiver.start("relay")

    async def acknowledged() -> bool:
        return (await sender.row(letter.id)).acked_at is not None

    await eventually(acknowledged, timeout_s=20)
    row = await sender.row(letter.id)
    assert row.resends >= 1 and row.receipt_outcome == "duplicate"
    assert federation.letters.applied == [letter.id], "the resent letter was applied twice"
    duplicates = metric(
        "labornet_events_consumed_total",
        service=federation.service,
        topic=inbox_topic(RECEIVER, federation.service),
        outcome="duplicate",
    )
    assert duplicates is not None and duplicates >= 1
    assert federation.sent("duplicate") >= 1 and federation.received("duplicate") == 1
    assert (metric("labornet_directed_resends_total", service=federation.service) or 0) >= 1


async def test_a_failing_handler_gets_no_receipt_and_the_letter_is_resent_until_it_applies(bus: BusFactory) -> None:
    federation = await bus(receipt_wait_s=0.5, receipt_wait_max_s=1.0, max_attempts=2)
    sender, receiver = federation.sender, federation.receiver
    sender.start("relay")
    receiver.start("relay")
    await consuming(sender, receiver)
    unreadable = await sender.send_letter(RECEIVER, unreadable=True)
    readable = await sender.send_letter(RECEIVER)

    async def resent_twice_and_quarantined() -> bool:
        async with sessionmaker(receiver.engine)() as session:
            held = (
                await session.execute(select(quarantine.c.reason).where(quarantine.c.event_id == unreadable.id))
            ).all()
        return (await sender.row(unreadable.id)).resends >= 2 and [r.reason for r in held] == ["handler-failed"]

    await eventually(resent_twice_and_quarantined, timeout_s=25)
    assert (await sender.row(readable.id)).receipt_outcome in ("applied", "duplicate")
    assert (await sender.row(unreadable.id)).acked_at is None
    answered = {
        Receipt.model_validate_json(e.data).event_id
        for e in (await outbox_events(receiver.engine))[0]
        if e.type == RECEIPT
    }
    assert answered == {readable.id}, "a letter whose handler failed was acknowledged"
    assert federation.letters.failures >= 4  # two attempts on the first delivery and on each resend

    federation.letters.cured = True

    async def acknowledged() -> bool:
        return (await sender.row(unreadable.id)).acked_at is not None

    await eventually(acknowledged, timeout_s=20)
    assert (await sender.row(unreadable.id)).receipt_outcome == "applied"
    assert sorted(federation.letters.applied) == sorted([readable.id, unreadable.id])
    async with sessionmaker(receiver.engine)() as session:
        status = (
            await session.execute(select(quarantine.c.status).where(quarantine.c.event_id == unreadable.id))
        ).one()
    assert status.status == "replayed"


def test_the_wait_for_a_receipt_doubles_up_to_the_ceiling() -> None:
    waits = [resend_delay(n, 15.0, 600.0).total_seconds() for n in range(8)]
    assert waits == [15, 30, 60, 120, 240, 480, 600, 600]
    assert resend_delay(10_000, 15.0, 600.0) == timedelta(seconds=600)  # no overflow however often it was resent
    assert resend_delay(0, 900.0, 600.0) == timedelta(seconds=600)


async def test_the_relay_writes_the_doubling_wait_and_stops_at_the_receipt(
    bus: BusFactory, node_keys: dict[str, NodeKeys]
) -> None:
    federation = await bus(receipt_wait_s=10.0, receipt_wait_max_s=35.0)
    sender, relay = federation.sender, federation.sender.relay
    letter = await sender.send_letter(RECEIVER)
    async with sessionmaker(sender.engine)() as session, session.begin():  # a broadcast event expects no receipt
        news = await sender.outbox.add(
            session,
            topic=events_topic(SENDER, federation.service),
            event_type="org.labornet.jobs.vacancy.published.v1",
            key="510000-V-1",
            data={"id": "510000-V-1"},
        )
    for resends, wait in enumerate([10, 20, 35, 35]):
        assert await relay.publish_batch() >= 1
        row = await sender.row(letter.id)
        assert row.resends == resends
        assert as_utc(row.resend_at) - as_utc(row.sent_at) == timedelta(seconds=wait)
        assert await relay.resend_unacknowledged() == 0, "resent before its wait was over"
        async with sessionmaker(sender.engine)() as session, session.begin():
            await session.execute(
                update(outbox).where(outbox.c.id == row.id).values(resend_at=utcnow() - timedelta(seconds=1))
            )
        assert await relay.resend_unacknowledged() == 1
        row = await sender.row(letter.id)
        assert (row.sent_at, row.resend_at, row.resends) == (None, None, resends + 1)
    broadcast = await sender.row(news.id)
    assert (broadcast.expects_receipt, broadcast.resend_at, broadcast.resends) == (False, None, 0)
    assert await relay.publish_batch() == 1

    async with sessionmaker(sender.engine)() as session, session.begin():
        assert not await apply_receipt(
            session, signed_receipt(node_keys[THIRD], federation.service, letter.id), federation.service
        )
        assert await apply_receipt(
            session, signed_receipt(node_keys[RECEIVER], federation.service, letter.id), federation.service
        )
        assert not await apply_receipt(
            session, signed_receipt(node_keys[RECEIVER], federation.service, letter.id), federation.service
        )  # once only
    async with sessionmaker(sender.engine)() as session, session.begin():
        await session.execute(update(outbox).values(resend_at=utcnow() - timedelta(days=1)))
    assert await relay.resend_unacknowledged() == 0, "an acknowledged letter was queued again"


async def test_receipts_of_a_run_acknowledge_as_they_would_one_by_one(
    bus: BusFactory, node_keys: dict[str, NodeKeys]
) -> None:
    """The receipts of an inbox run go in with one statement per sender and outcome, however they are interleaved;
    the first receipt a sender gives for a letter wins as it would alone (a later one, even with another outcome,
    matches nothing), a receipt from a province the letter was not sent to matches nothing."""
    federation = await bus()
    sender, service = federation.sender, federation.service
    letters = [await sender.send_letter(RECEIVER) for _ in range(4)]
    receiver, third = node_keys[RECEIVER], node_keys[THIRD]
    run = [
        signed_receipt(receiver, service, letters[0].id),
        signed_receipt(receiver, service, letters[1].id),
        signed_receipt(receiver, service, letters[1].id),  # again: matches nothing
        signed_receipt(third, service, letters[2].id),  # not the letter's destination
        signed_receipt(receiver, service, letters[2].id, ReceiptOutcome.DUPLICATE),
        signed_receipt(receiver, service, letters[2].id),  # the duplicate's came first
        signed_receipt(receiver, service, letters[3].id, ReceiptOutcome.REJECTED),
    ]
    sent: list[str] = []

    def statement(_conn: object, _cursor: object, text: str, *_args: object) -> None:
        sent.append(" ".join(text.split()).upper())

    event.listen(sender.engine.sync_engine, "before_cursor_execute", statement)
    try:
        async with sessionmaker(sender.engine)() as session, session.begin():
            matched = await apply_receipts(session, run, service)
    finally:
        event.remove(sender.engine.sync_engine, "before_cursor_execute", statement)
    assert matched == [True, True, False, False, True, False, True]  # in order
    outcomes = [(await sender.row(letter.id)).receipt_outcome for letter in letters]
    assert outcomes == ["applied", "applied", "duplicate", "rejected"]
    # Zhejiang applied, Chongqing applied, Zhejiang duplicate, Zhejiang rejected: four statements for seven receipts
    assert len([s for s in sent if s.startswith("UPDATE OUTBOX")]) == 4, sent


async def test_receipts_between_the_letters_of_a_run_go_in_with_one_statement_after_them(
    bus: BusFactory, node_keys: dict[str, NodeKeys]
) -> None:
    """A run that brings letters and, between them, receipts for letters the node sent (as answers and their
    receipts come keyed alike): every letter is applied and answered, every receipt acknowledges its letter, and the
    receipts take one statement for the run instead of one each."""
    federation = await bus()
    sender, receiver, service = federation.sender, federation.receiver, federation.service
    incoming = [await sender.send_letter(RECEIVER) for _ in range(3)]  # to Zhejiang
    outgoing = [await receiver.send_letter(SENDER) for _ in range(3)]  # Zhejiang's own, awaiting Sichuan's receipts
    receipts = [signed_receipt(node_keys[SENDER], service, e.id, to=RECEIVER) for e in outgoing]
    interleaved = [envelope for pair in zip(incoming, receipts, strict=True) for envelope in pair]
    run = delivered_to(RECEIVER, service, interleaved, 40)

    sent: list[str] = []

    def statement(_conn: object, _cursor: object, text: str, *_args: object) -> None:
        sent.append(" ".join(text.split()).upper())

    event.listen(receiver.engine.sync_engine, "before_cursor_execute", statement)
    try:
        assert await receiver.consumer._apply_run(run)
    finally:
        event.remove(receiver.engine.sync_engine, "before_cursor_execute", statement)
    assert federation.letters.applied == [e.id for e in incoming]  # in order
    assert [(await receiver.row(e.id)).receipt_outcome for e in outgoing] == ["applied"] * 3
    assert len([s for s in sent if s.startswith("UPDATE OUTBOX")]) == 1, sent
    answered = [
        Receipt.model_validate_json(e.data).event_id
        for e in (await outbox_events(receiver.engine))[0]
        if e.type == RECEIPT
    ]
    assert answered == [e.id for e in incoming]
    assert await receiver.count(inbox) == 6


async def test_the_purge_keeps_letters_awaiting_a_receipt_and_deletes_old_acknowledged_ones(bus: BusFactory) -> None:
    federation = await bus()
    sender = federation.sender
    now = utcnow()
    old, recent = now - timedelta(hours=200), now - timedelta(hours=1)
    letters = inbox_topic(RECEIVER, federation.service)
    rows = {  # event id: (topic, sent, acknowledged, expects a receipt)
        "acknowledged-old": (letters, old, old, True),
        "awaiting-old": (letters, old, None, True),
        "broadcast-old": (events_topic(SENDER, federation.service), old, None, False),
        "broadcast-recent": (events_topic(SENDER, federation.service), recent, None, False),
        "unsent-old": (events_topic(SENDER, federation.service), None, None, False),
    }
    async with sessionmaker(sender.engine)() as session, session.begin():
        for event_id, (topic, sent_at, acked_at, expects) in rows.items():
            await session.execute(
                outbox.insert().values(
                    event_id=event_id,
                    event_type=CONTACT_LETTER,
                    topic=topic,
                    headers=[],
                    payload=b"{}",
                    created_at=old,
                    sent_at=sent_at,
                    attempts=0,
                    destination=RECEIVER if expects else None,
                    expects_receipt=expects,
                    acked_at=acked_at,
                    resend_at=now + timedelta(hours=1) if expects and acked_at is None else None,
                    resends=0,
                )
            )
    await sender.relay._housekeeping()  # the first round purges at once, then once a minute
    assert {row.event_id for row in await sender.outbox_rows()} == {"awaiting-old", "broadcast-recent", "unsent-old"}
    assert metric("labornet_directed_awaiting_receipt", service=federation.service) == 1
    age = metric("labornet_directed_oldest_unacknowledged_age_seconds", service=federation.service)
    assert age is not None and age >= 199 * 3600


async def test_receipt_and_resend_series_exist_at_zero_from_start_up(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    service = f"insurance-{uuid.uuid4().hex[:8]}"
    series: list[tuple[str, dict[str, str]]] = [
        *(
            ("labornet_receipts_total", {"direction": "sent", "outcome": o})
            for o in ("applied", "duplicate", "rejected")
        ),
        *(
            ("labornet_receipts_total", {"direction": "received", "outcome": o})
            for o in ("applied", "duplicate", "rejected", "unmatched")
        ),
        ("labornet_directed_resends_total", {}),
        ("labornet_directed_awaiting_receipt", {}),
        ("labornet_directed_oldest_unacknowledged_age_seconds", {}),
        ("labornet_outbox_republished_total", {}),
        *(("labornet_broker_log_losses_total", {"sign": sign}) for sign in ("cluster", "topic", "offsets")),
    ]
    assert all(metric(name, service=service, **labels) is None for name, labels in series)
    engine = await platform_engine(database_url)
    await engine.dispose()
    spec = ServiceSpec(
        name=service,
        version="1",
        migrations="labornet.insurance:migrations",
        consumers=lambda _runtime: [ConsumerSpec("transfers", [inbox_topic(SENDER, service)], {})],
    )
    runtime = await start_runtime(spec, make_settings(SENDER, "insurance", database_url, migrate_on_start=False))
    try:
        missing = [(name, labels) for name, labels in series if metric(name, service=service, **labels) != 0]
        assert missing == [], f"not at 0 from start-up: {missing}"
        topic = inbox_topic(SENDER, service)
        assert metric("labornet_topic_partition_mismatch", service=service, topic=topic) == 0
    finally:
        await stop_runtime(runtime)


async def test_the_earlier_failed_copies_of_a_run_s_letters_are_settled_together_or_not_at_all(
    bus: BusFactory,
) -> None:
    """Letters whose earlier copies were quarantined (they failed, then were resent) come in one run: their
    quarantine rows are settled by the run's one settling statement, a letter without such a row changes nothing,
    and a run that fails settles nothing."""
    federation = await bus()
    sender, receiver = federation.sender, federation.receiver
    letters = [await sender.send_letter(RECEIVER) for _ in range(3)]
    unreadable = await sender.send_letter(RECEIVER, unreadable=True)
    rows = {row.event_id: row for row in await sender.outbox_rows()}

    def delivered(envelopes: list[Envelope], offset: int) -> list[tuple[ConsumerRecord[bytes, bytes], Envelope]]:
        """The records a run brings (the consumer hands verified records and their envelopes to the run)."""
        return [
            (
                ConsumerRecord(
                    row.topic, 0, offset + n, 0, 0, row.message_key, row.payload, None, 1, 1,
                    tuple(decode_headers(row.headers)),
                ),
                envelope,
            )
            for n, envelope in enumerate(envelopes)
            for row in [rows[envelope.id]]
        ]  # fmt: skip

    earlier_failed = [letters[0], letters[1], unreadable]  # the third letter never failed
    async with sessionmaker(receiver.engine)() as session, session.begin():
        for n, envelope in enumerate(earlier_failed):
            await session.execute(
                insert(quarantine).values(
                    consumer=receiver.consumer.name,
                    topic=inbox_topic(RECEIVER, federation.service),
                    partition=0,
                    offset=n,
                    event_id=envelope.id,
                    event_type=CONTACT_LETTER,
                    origin_province=SENDER,
                    fingerprint=f"earlier-copy-{n}",
                    headers=[],
                    reason="handler-failed",
                    error="ValueError: the contact letter names no insured person",
                    attempts=2,
                )
            )

    async def statuses() -> dict[str, str]:
        async with sessionmaker(receiver.engine)() as session:
            found = await session.execute(select(quarantine.c.event_id, quarantine.c.status))
            return {event_id: status for event_id, status in found.all()}

    # a run that fails is rolled back whole: nothing applied, nothing settled
    assert not await receiver.consumer._apply_run(delivered([letters[0], unreadable], 10))
    assert await receiver.count(inbox) == 0 and await receiver.count(outbox) == 0  # no inbox row, no receipt
    assert set((await statuses()).values()) == {"quarantined"}
    federation.letters.applied.clear()  # the handler's own list is not rolled back

    sent: list[str] = []

    def statement(_conn: object, _cursor: object, text: str, *_args: object) -> None:
        sent.append(" ".join(text.split()).upper())

    event.listen(receiver.engine.sync_engine, "before_cursor_execute", statement)
    try:
        assert await receiver.consumer._apply_run(delivered(letters, 20))
    finally:
        event.remove(receiver.engine.sync_engine, "before_cursor_execute", statement)
    assert sorted(federation.letters.applied) == sorted(e.id for e in letters)
    # one statement settles them (on PostgreSQL the inbox's entry of the run, a data-modifying WITH)
    assert len([s for s in sent if "UPDATE QUARANTINE" in s]) == 1, sent
    assert await statuses() == {letters[0].id: "replayed", letters[1].id: "replayed", unreadable.id: "quarantined"}
    answered = {
        Receipt.model_validate_json(e.data).event_id
        for e in (await outbox_events(receiver.engine))[0]
        if e.type == RECEIPT
    }
    assert answered == {e.id for e in letters}


def delivered_to(province: str, service: str, envelopes: list[Envelope], offset: int) -> list[Any]:
    """The records a run at ``province`` brings for ``envelopes`` (only their position is read from the record)."""
    topic = inbox_topic(province, service)
    return [
        (ConsumerRecord(topic, 0, offset + n, 0, 0, None, b"", None, 1, 1, ()), envelope)
        for n, envelope in enumerate(envelopes)
    ]


async def test_an_answer_carries_the_acknowledgement_of_the_letter_it_answers_instead_of_a_receipt(
    bus: BusFactory,
) -> None:
    """A letter answered in the transaction that applied it (Sichuan's information sheet to Zhejiang's letter) is
    acknowledged by the answer: the answer lists the letter in its signed ``ce_acknowledges``, no receipt is written
    for it, and when the letter's sender applies the answer the letter is acknowledged as applied and never resent.
    The answer, which nothing answers, still gets its receipt."""
    federation = await bus()
    sender, receiver, service = federation.sender, federation.receiver, federation.service
    federation.letters.answering = receiver.outbox
    letters = [await sender.send_letter(RECEIVER) for _ in range(3)]
    assert all(letter.extra == {"ackinanswer": "true"} for letter in letters)

    assert await receiver.consumer._apply_run(delivered_to(RECEIVER, service, letters, 0))
    written = (await outbox_events(receiver.engine))[0]
    assert [e.type for e in written] == [ANSWER] * 3, "answers only: no receipt beside them"
    assert [e.extra.get("acknowledges") for e in written] == [letter.id for letter in letters]
    assert all(e.extra.get("ackinanswer") == "true" for e in written)
    trust = TrustListFile(federation.trust_list)
    for answer in written[1:]:  # the list is covered by the signature: a changed list does not verify
        trust.verify(answer)
        forged = replace(answer, extra={**answer.extra, "acknowledges": letters[0].id})
        with pytest.raises(SignatureRejected):
            trust.verify(forged)

    answered: list[str] = []

    async def take_answer(_session: AsyncSession, envelope: Envelope) -> None:
        answered.append(envelope.id)

    sender.consumer.handlers[ANSWER] = take_answer
    before = federation.received("applied")
    # the first answer alone (a run of one record takes the single path), the other two as a run
    ((record, envelope),) = delivered_to(SENDER, service, written[:1], 0)
    assert (await sender.consumer.handle(record, envelope)).status == "applied"
    assert await sender.consumer._apply_run(delivered_to(SENDER, service, written[1:], 1))
    assert answered == [e.id for e in written]
    rows = [await sender.row(letter.id) for letter in letters]
    assert [row.receipt_outcome for row in rows] == ["applied"] * 3
    assert all(row.acked_at is not None and row.resend_at is None for row in rows)
    assert federation.received("applied") == before + 3
    async with sessionmaker(sender.engine)() as session, session.begin():
        await session.execute(update(outbox).values(resend_at=utcnow() - timedelta(days=1)))
    assert await sender.relay.resend_unacknowledged() == 0, "an acknowledged letter was queued again"
    # the answers themselves were answered by nothing: Sichuan's receipts for them
    receipts = [e for e in (await outbox_events(sender.engine))[0] if e.type == RECEIPT]
    assert sorted(Receipt.model_validate_json(e.data).event_id for e in receipts) == sorted(e.id for e in written)


async def test_a_letter_whose_sender_reads_no_acknowledgement_in_answers_gets_its_receipt(
    bus: BusFactory, node_keys: dict[str, NodeKeys]
) -> None:
    """A letter from a node of an earlier release (no ``ce_ackinanswer``) is answered as before: its receipt is
    written beside the answer, and the answer lists nothing; a duplicate copy gets a duplicate receipt either way."""
    federation = await bus()
    sender, receiver, service = federation.sender, federation.receiver, federation.service
    federation.letters.answering = receiver.outbox
    letter = await sender.send_letter(RECEIVER)
    signer = Signer.from_file(node_keys[SENDER].signing_key, SENDER)
    earlier = signer.sign(replace(letter, extra={}))  # as an earlier release signs it

    assert await receiver.consumer._apply_run(delivered_to(RECEIVER, service, [earlier, earlier], 0))
    written = (await outbox_events(receiver.engine))[0]
    assert sorted(e.type for e in written) == sorted([ANSWER, RECEIPT, RECEIPT])
    assert all("acknowledges" not in e.extra for e in written)
    outcomes = sorted(Receipt.model_validate_json(e.data).outcome for e in written if e.type == RECEIPT)
    assert outcomes == [ReceiptOutcome.APPLIED, ReceiptOutcome.DUPLICATE]


async def test_an_acknowledgement_from_a_province_the_letter_was_not_sent_to_matches_nothing(
    bus: BusFactory, node_keys: dict[str, NodeKeys]
) -> None:
    """Chongqing, a member of the federation, signs a message to Sichuan that lists a letter Sichuan sent to
    Zhejiang: the letter stays unacknowledged (only its destination acknowledges it), counted as unmatched."""
    federation = await bus()
    sender, service = federation.sender, federation.service
    letter = await sender.send_letter(RECEIVER)
    topic = inbox_topic(SENDER, service)
    claim = Signer.from_file(node_keys[THIRD].signing_key, THIRD).sign(
        Envelope(
            id=new_event_id(),
            source=event_source(THIRD, service),
            type=ANSWER,
            time=datetime.now(UTC),
            partitionkey=letter.partitionkey,
            originprovince=THIRD,
            destprovince=SENDER,
            stream=stream_id(THIRD, topic),
            streamseq=1,
            schemaversion=1,
            data=encode_data({"answers": letter.id}),
            extra={"acknowledges": letter.id},
        )
    )

    async def take_answer(_session: AsyncSession, _envelope: Envelope) -> None:
        return None

    sender.consumer.handlers[ANSWER] = take_answer
    before = federation.received("unmatched")
    assert await sender.consumer._apply_run(delivered_to(SENDER, service, [claim], 0))
    row = await sender.row(letter.id)
    assert (row.acked_at, row.receipt_outcome) == (None, None)
    assert federation.received("unmatched") == before + 1


async def test_one_answer_carries_at_most_a_hundred_acknowledgements_and_the_rest_go_as_receipts(
    bus: BusFactory,
) -> None:
    """A run of 120 letters answered by one message (the handler answers the first letter of the transaction
    only): the answer lists the first hundred, and the other twenty get receipts; all 120 are acknowledged."""
    federation = await bus()
    sender, receiver, service = federation.sender, federation.receiver, federation.service
    federation.letters.answering = receiver.outbox
    federation.letters.answer_once = True
    letters = [await sender.send_letter(RECEIVER) for _ in range(120)]

    assert await receiver.consumer._apply_run(delivered_to(RECEIVER, service, letters, 0))
    written = (await outbox_events(receiver.engine))[0]
    (answer,) = [e for e in written if e.type == ANSWER]
    assert answer.extra["acknowledges"].split() == [letter.id for letter in letters[:100]]
    receipts = [Receipt.model_validate_json(e.data).event_id for e in written if e.type == RECEIPT]
    assert receipts == [letter.id for letter in letters[100:]]

    async def take_answer(_session: AsyncSession, _envelope: Envelope) -> None:
        return None

    sender.consumer.handlers[ANSWER] = take_answer
    run = [answer, *(e for e in written if e.type == RECEIPT)]
    assert await sender.consumer._apply_run(delivered_to(SENDER, service, run, 0))
    assert [(await sender.row(letter.id)).receipt_outcome for letter in letters] == ["applied"] * 120

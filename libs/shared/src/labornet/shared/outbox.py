"""Transactional outbox: events are rows written in the same transaction as the state change.

:class:`Outbox` is what a use case calls inside its unit of work. It gives the event the next sequence number of
its origin stream (a counter row updated in the same transaction, so numbers are gap-free and follow commit
order), signs it and inserts the row. Nothing talks to Kafka inside a transaction.

:class:`OutboxRelay` publishes pending rows in id order, in batches, with ``acks=all``, and marks them sent. It
selects by *state* (``sent_at IS NULL``), never by "id greater than the last one seen", so a row whose
transaction committed late is still picked up. While the broker is down rows simply wait; the relay backs off
and resumes by itself. On PostgreSQL an advisory lock lets exactly one replica relay at a time, which keeps one
aggregate's events in order even when the service runs several replicas.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from prometheus_client import Counter, Gauge
from sqlalchemy import BigInteger, and_, bindparam, case, delete, func, literal, or_, select, union_all, update
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, SessionTransaction

from labornet.shared.db import as_utc_or_none, for_each_dialect, outbox, outbox_stream, utcnow
from labornet.shared.direct import Direct
from labornet.shared.envelope import Envelope, encode_data, event_source, new_event_id
from labornet.shared.kafka import closed, started
from labornet.shared.observability import (
    EVENTS_PUBLISHED,
    OUTBOX_BACKLOG,
    OUTBOX_OLDEST_AGE,
    PUBLISH_FAILURES,
    current_traceparent,
)
from labornet.shared.signing import Signer
from labornet.shared.topics import inbox_topic, is_inbox_topic, stream_id

log = logging.getLogger(__name__)

RESENDS = Counter(
    "labornet_directed_resends_total", "Directed messages published again because no receipt came", ["service"]
)
REPUBLISHED = Counter(
    "labornet_outbox_republished_total", "Outbox rows queued again because the broker lost its log", ["service"]
)
AWAITING_RECEIPT = Gauge(
    "labornet_directed_awaiting_receipt", "Directed messages sent and not yet acknowledged by a receipt", ["service"]
)
OLDEST_UNACKNOWLEDGED_AGE = Gauge(
    "labornet_directed_oldest_unacknowledged_age_seconds",
    "Age of the oldest directed message still waiting for its receipt",
    ["service"],
)

_WAKE_KEY = "labornet_outbox_wake"

# Acknowledgement in answers (ADR 39). A directed message that expects a receipt says, with ``ce_ackinanswer``,
# that its sender also reads acknowledgements carried by answers; a receiver whose transaction applies it and sends
# that province a directed message on the same service then leaves the receipt out and lists the message's id in
# the answer's ``ce_acknowledges`` (space-separated ids, outcome ``applied``). Both are CloudEvents extensions,
# covered by the signature; a node that does not know them ignores them and keeps getting receipts.
ACK_IN_ANSWER = "ackinanswer"
ACKNOWLEDGES = "acknowledges"
# ids one answer carries at most (a header of about 3.7 kB); the rest of a run's acknowledgements go as receipts
ACKNOWLEDGES_MAX = 100


def _reserve_statement(insert: Any) -> Any:
    """The statement that moves a stream's counter on by ``count`` and returns its new value (parameters ``stream``
    and ``count``). The counter row stays locked until the transaction ends, so the numbers of one stream follow
    commit order without gaps."""
    count = bindparam("count", type_=BigInteger)
    return (
        insert(outbox_stream)
        .values(stream=bindparam("stream"), last_seq=count)
        .on_conflict_do_update(
            index_elements=[outbox_stream.c.stream], set_={"last_seq": outbox_stream.c.last_seq + count}
        )
        .returning(outbox_stream.c.last_seq)
    )


# built once: a statement built per call costs more Python than the database spends running it
_RESERVE = Direct(for_each_dialect(_reserve_statement))
# every event of every service is written by it: run on the driver (ADR 38)
_INSERT_ROW = Direct(outbox.insert())
_QUEUED_KEY = "labornet_outbox_queued"


def encode_headers(headers: Sequence[tuple[str, bytes]]) -> list[list[str]]:
    return [[name, base64.b64encode(value).decode()] for name, value in headers]


def decode_headers(stored: Sequence[Sequence[str]]) -> list[tuple[str, bytes]]:
    return [(name, base64.b64decode(value)) for name, value in stored]


def resend_delay(resends: int, first_s: float, ceiling_s: float) -> timedelta:
    """How long to wait for a receipt after the ``resends``-th resend: doubling from ``first_s`` up to ``ceiling_s``."""
    return timedelta(seconds=min(ceiling_s, first_s * 2 ** min(resends, 30)))


def awaiting_receipt() -> Any:
    """The outbox rows of directed messages whose receipt has not come."""
    return and_(outbox.c.expects_receipt.is_(True), outbox.c.acked_at.is_(None))


@dataclass(frozen=True)
class OutboxStats:
    """What the relay's gauges show: the rows not yet sent, the directed messages waiting for their receipt, and
    when the first of those is due to be sent again."""

    backlog: int
    oldest: datetime | None
    awaiting: int
    oldest_awaiting: datetime | None
    resend_due: datetime | None


# the gauges in one statement: each half reads its own partial index (a CASE over the table would read every row
# the retention keeps)
_UNSENT, _AWAITING = 0, 1
_STATS = Direct(
    union_all(
        select(
            literal(_UNSENT).label("kind"),
            func.count().label("rows"),
            func.min(outbox.c.created_at).label("oldest"),
            literal(None, outbox.c.resend_at.type).label("resend_due"),
        ).where(outbox.c.sent_at.is_(None)),
        select(literal(_AWAITING), func.count(), func.min(outbox.c.created_at), func.min(outbox.c.resend_at)).where(
            awaiting_receipt()
        ),
    )
)


def record_fingerprint(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> str:
    """SHA-256 over a record's key, headers and value: the same bytes give the same fingerprint."""
    digest = hashlib.sha256()
    for part in (key or b"", *(n.encode() + b"=" + v for n, v in headers), value or b""):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


class Outbox:
    """Writes signed events into the outbox of the current unit of work."""

    def __init__(self, province: str, service: str, signer: Signer) -> None:
        self.province = province
        self.service = service
        self.signer = signer
        self._wake = asyncio.Event()

    async def add(
        self,
        session: AsyncSession,
        *,
        topic: str,
        event_type: str,
        key: str,
        data: Mapping[str, Any] | Any,
        subject: str | None = None,
        destination: str | None = None,
        schema_version: int = 1,
        expects_receipt: bool | None = None,
    ) -> Envelope:
        """Add one event to the transaction ``session`` is in and return it as it will be published.

        Directed messages (``destination`` set) go only to that province's inbox topic, and inbox topics only
        carry directed messages: personal data must never land on a broadcast topic by mistake. A directed
        message is kept and resent until its receipt arrives (:mod:`labornet.shared.receipts`), unless
        ``expects_receipt`` is false (receipts themselves).
        """
        self._check_addressing(topic, destination)
        stream = stream_id(self.province, topic)
        seq = await self._next_seq(session, stream)
        receipt = destination is not None if expects_receipt is None else expects_receipt
        envelope, row = self._signed(
            topic,
            event_type,
            key,
            data,
            stream=stream,
            seq=seq,
            subject=subject,
            destination=destination,
            schema_version=schema_version,
            expects_receipt=receipt,
            traceparent=current_traceparent.get(),
        )
        # the row as parameters of one insert statement compiled once (``.values(**row)`` would build and compile
        # a statement of its own for every event)
        await _INSERT_ROW.execute(session, row)
        self._wake_after_commit(session)
        return envelope

    def queue(
        self,
        session: AsyncSession,
        *,
        topic: str,
        event_type: str,
        key: str,
        data: Mapping[str, Any] | Any,
        subject: str | None = None,
        destination: str | None = None,
        schema_version: int = 1,
        expects_receipt: bool | None = None,
        acknowledging: str | None = None,
        traceparent: str | None = None,
    ) -> None:
        """What :meth:`add` does, written when the transaction ``session`` is in commits.

        ``acknowledging`` marks a receipt (outcome ``applied``) for that message id whose sender reads
        acknowledgements in answers: if the transaction also queues a directed message to the same inbox topic,
        the receipt is left out and the answer lists the id in ``ce_acknowledges`` instead (ADR 39).
        ``traceparent`` is the trace the event was written in; by default the current one (a writer that commits
        the work of several requests together names each request's, ADR 41).

        Just before the commit the events queued in the transaction are numbered, signed and inserted together: one
        sequence statement per stream and one insert for all of them, however many the transaction queued (a run
        of inbox records answers each with a receipt). The stream's counter row, which every transaction sending on
        that stream waits for, is then locked only from that statement to the commit, and the numbers follow the
        order in which transactions commit. Nothing is written if the transaction (or the savepoint the event was
        queued in) rolls back. Use :meth:`add` when the caller needs the signed envelope back (ADR 0021)."""
        self._check_addressing(topic, destination)
        sync_session = session.sync_session
        queued: list[_Queued] = sync_session.info.setdefault(_QUEUED_KEY, [])
        queued.append(
            _Queued(
                self,
                sync_session.get_nested_transaction() or sync_session.get_transaction(),
                {
                    "topic": topic,
                    "event_type": event_type,
                    "key": key,
                    "data": data,
                    "subject": subject,
                    "destination": destination,
                    "schema_version": schema_version,
                    "expects_receipt": destination is not None if expects_receipt is None else expects_receipt,
                    # the trace of the step that queued it (an inbox run applies many events, each in its own trace)
                    "traceparent": traceparent or current_traceparent.get(),
                },
                acknowledging,
            )
        )
        self._wake_after_commit(session)

    def _check_addressing(self, topic: str, destination: str | None) -> None:
        if destination is not None and topic != inbox_topic(destination, self.service):
            raise ValueError(f"a message for {destination} must go to {inbox_topic(destination, self.service)}")
        if destination is None and is_inbox_topic(topic):
            raise ValueError(f"topic {topic} is an inbox: say which province the message is addressed to")

    async def add_record(
        self,
        session: AsyncSession,
        *,
        topic: str,
        event_id: str,
        event_type: str,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]],
        payload: bytes,
    ) -> None:
        """Queue an existing record unchanged (used for dead-lettering: the original signature still holds)."""
        await session.execute(
            outbox.insert().values(
                event_id=event_id,
                event_type=event_type,
                topic=topic,
                message_key=key,
                headers=encode_headers(headers),
                payload=payload,
                created_at=utcnow(),
                attempts=0,
                expects_receipt=False,
                resends=0,
            )
        )
        self._wake_after_commit(session)

    def _signed(
        self,
        topic: str,
        event_type: str,
        key: str,
        data: Mapping[str, Any] | Any,
        *,
        stream: str,
        seq: int,
        subject: str | None,
        destination: str | None = None,
        schema_version: int = 1,
        expects_receipt: bool = False,
        traceparent: str | None,
        acknowledges: Sequence[str] = (),
    ) -> tuple[Envelope, dict[str, Any]]:
        """The signed envelope of one event at ``seq`` of its stream, and the outbox row that publishes it
        (``traceparent``: the trace the event was written in; ``acknowledges``: ids of messages from the
        destination this one acknowledges, ADR 39)."""
        extra: dict[str, str] = {}
        if expects_receipt:
            extra[ACK_IN_ANSWER] = "true"
        if acknowledges:
            extra[ACKNOWLEDGES] = " ".join(acknowledges)
        envelope = self.signer.sign(
            Envelope(
                id=new_event_id(),
                source=event_source(self.province, self.service),
                type=event_type,
                time=datetime.now(UTC),
                partitionkey=key,
                originprovince=self.province,
                destprovince=destination,
                stream=stream,
                streamseq=seq,
                schemaversion=schema_version,
                subject=subject,
                traceparent=traceparent,
                data=encode_data(data),
                extra=extra,
            )
        )
        record_key, value, headers = envelope.to_kafka()
        row = {
            "event_id": envelope.id,
            "event_type": event_type,
            "topic": topic,
            "message_key": record_key,
            "headers": encode_headers(headers),
            "payload": value,
            "stream": stream,
            "seq": seq,
            "created_at": envelope.time,
            "attempts": 0,
            "destination": destination,
            "expects_receipt": expects_receipt,
            "resends": 0,
        }
        return envelope, row

    async def _next_seq(self, session: AsyncSession, stream: str, count: int = 1) -> int:
        """Reserve the next ``count`` numbers of ``stream``; return the last of them."""
        return int((await _RESERVE.execute(session, {"stream": stream, "count": count})).scalar_one())

    def _next_seq_sync(self, session: Session, stream: str, count: int) -> int:
        """:meth:`_next_seq` from a session event (the synchronous session, inside the transaction's greenlet)."""
        return int(_RESERVE.execute_sync(session, {"stream": stream, "count": count}).scalar_one())

    def _wake_after_commit(self, session: AsyncSession) -> None:
        """Wake this writer's relay when the transaction ``session`` is in commits (:func:`_wake_writers`: listeners
        of the Session class, installed once; listening on each session cost more than the rest of this)."""
        session.sync_session.info.setdefault(_WAKE_KEY, set()).add(self)

    async def wait_for_work(self, timeout: float) -> bool:
        """Wait until a commit queued rows (or the relay is told to look), at most ``timeout``; whether one did."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        woken = self._wake.is_set()
        self._wake.clear()
        return woken


# parameters named unlike any column: a parameter named after a column of the table sets that column; run on the
# driver (ADR 38)
_SENT_IDS = outbox.c.id.in_(bindparam("sent_ids", expanding=True))
# rows sent, none of them a directed message; or all the directed ones sent as often before (the usual case)
_MARK_SENT = Direct(update(outbox).where(_SENT_IDS).values(sent_at=bindparam("sent_time"), resend_at=None))
_MARK_SENT_AWAITING = Direct(
    update(outbox)
    .where(_SENT_IDS)
    .values(
        sent_at=bindparam("sent_time"),
        resend_at=case(
            (
                outbox.c.expects_receipt.is_(True) & (outbox.c.resends == bindparam("sent_resends")),
                bindparam("receipt_due", type_=outbox.c.resend_at.type),
            ),
            else_=None,
        ),
    )
)


async def _mark_sent(session: AsyncSession, ids: list[int], sent_at: datetime, waits: dict[int, datetime]) -> None:
    """Mark rows ``ids`` sent at ``sent_at``, each directed message waiting for its receipt until ``waits[its
    resends]``; statements built once for the usual cases, per call otherwise."""
    if not waits:
        await _MARK_SENT.execute(session, {"sent_ids": ids, "sent_time": sent_at})
        return
    if len(waits) == 1:
        ((resends, at),) = waits.items()
        await _MARK_SENT_AWAITING.execute(
            session, {"sent_ids": ids, "sent_time": sent_at, "sent_resends": resends, "receipt_due": at}
        )
        return
    awaiting = outbox.c.expects_receipt.is_(True)
    resend_at = case(
        *((awaiting & (outbox.c.resends == n), literal(at, outbox.c.resend_at.type)) for n, at in waits.items()),
        else_=None,
    )
    await session.execute(update(outbox).where(outbox.c.id.in_(ids)).values(sent_at=sent_at, resend_at=resend_at))


@dataclass(frozen=True)
class _Queued:
    """An event queued by :meth:`Outbox.queue`: who writes it, the transaction it belongs to, what :meth:`Outbox.add`
    would have been given."""

    writer: Outbox
    transaction: SessionTransaction | None
    fields: dict[str, Any]
    # a receipt that an answer in the same transaction may carry instead: the id of the message it acknowledges
    acknowledging: str | None = None


def _carried_by_answers(queued: list[_Queued]) -> tuple[list[_Queued], dict[int, list[str]]]:
    """The events to write, and per answer (by its position among them) the ids it acknowledges: each receipt
    marked ``acknowledging`` goes with a directed message of the transaction to the same inbox topic (the same
    destination and service) that has room, the answer about the same aggregate (the same key) if there is one, and
    is not written itself (ADR 39). Linear in the transaction's events (an inbox run may answer hundreds)."""
    by_topic: dict[tuple[Outbox, str], list[int]] = {}  # (writer, topic) → positions of directed messages there
    by_key: dict[tuple[Outbox, str, str], list[int]] = {}  # the same, per key
    for index, item in enumerate(queued):
        if item.acknowledging is None and item.fields["expects_receipt"]:
            by_topic.setdefault((item.writer, item.fields["topic"]), []).append(index)
            by_key.setdefault((item.writer, item.fields["topic"], item.fields["key"]), []).append(index)
    if not by_topic:
        return queued, {}
    carried: dict[int, list[str]] = {}
    cursor: dict[tuple[Outbox, str], int] = {}  # answers fill up in order: the first of a topic's that may have room

    def with_room(positions: list[int], start: int = 0) -> int | None:
        for at in range(start, len(positions)):
            if len(carried.get(positions[at], ())) < ACKNOWLEDGES_MAX:
                return at
        return None

    written: list[_Queued] = []
    position: dict[int, int] = {}  # position in ``queued`` → position in ``written``
    for index, item in enumerate(queued):
        if item.acknowledging is not None:
            topic = (item.writer, item.fields["topic"])
            same = by_key.get((*topic, item.fields["key"]), [])
            at = with_room(same)
            if at is not None:
                answer: int | None = same[at]
            else:
                at = with_room(by_topic.get(topic, []), cursor.get(topic, 0))
                answer = None if at is None else by_topic[topic][at]
                if at is not None:
                    cursor[topic] = at
            if answer is not None:
                carried.setdefault(answer, []).append(item.acknowledging)
                continue
        position[index] = len(written)
        written.append(item)
    return written, {position[answer]: ids for answer, ids in carried.items()}


@sa_event.listens_for(Session, "before_commit")
def _write_queued(session: Session) -> None:
    """Number, sign and insert the events queued in the transaction that is about to commit (a savepoint's release
    writes them too: they are part of the enclosing transaction from then on)."""
    queued: list[_Queued] = session.info.pop(_QUEUED_KEY, [])
    if not queued:
        return
    queued, acknowledges = _carried_by_answers(queued)
    streams = [(item.writer, stream_id(item.writer.province, item.fields["topic"])) for item in queued]
    counts: dict[tuple[Outbox, str], int] = {}
    for writer_stream in streams:
        counts[writer_stream] = counts.get(writer_stream, 0) + 1
    # the counters are locked in one order (by stream), so two transactions sending on the same streams never
    # wait for each other's second counter
    next_seq: dict[tuple[Outbox, str], int] = {}
    for (writer, stream), count in sorted(counts.items(), key=lambda entry: entry[0][1]):
        next_seq[(writer, stream)] = writer._next_seq_sync(session, stream, count) - count + 1
    rows = []
    for index, (item, writer_stream) in enumerate(zip(queued, streams, strict=True)):
        seq = next_seq[writer_stream]
        next_seq[writer_stream] = seq + 1
        signed = item.writer._signed(
            **item.fields, stream=writer_stream[1], seq=seq, acknowledges=acknowledges.get(index, ())
        )
        rows.append(signed[1])
    _INSERT_ROW.executemany_sync(session, rows)


@sa_event.listens_for(Session, "after_commit")
def _wake_writers(session: Session) -> None:
    """The relays of the writers that wrote or queued events in the transaction just committed look at once."""
    for writer in session.info.pop(_WAKE_KEY, ()):
        writer._wake.set()


@sa_event.listens_for(Session, "after_transaction_end")
def _forget_wakes(session: Session, transaction: SessionTransaction) -> None:
    """The outermost transaction ended without a commit: nothing of it is there to publish."""
    if transaction.parent is None:
        session.info.pop(_WAKE_KEY, None)


@sa_event.listens_for(Session, "after_transaction_end")
def _forget_queued(session: Session, transaction: SessionTransaction) -> None:
    """Events still queued when their transaction (or savepoint) ends were not written: it rolled back, or the
    session was closed without a commit. They are never written."""
    queued: list[_Queued] = session.info.get(_QUEUED_KEY, [])
    if not queued:
        return
    if transaction.parent is None:
        session.info.pop(_QUEUED_KEY, None)
        return
    session.info[_QUEUED_KEY] = [item for item in queued if not _within(item.transaction, transaction)]


def _within(transaction: SessionTransaction | None, ended: SessionTransaction) -> bool:
    """Whether ``transaction`` is ``ended`` or nested in it (no transaction yet: the session's outermost one)."""
    if transaction is None:
        return ended.parent is None
    while transaction is not None:
        if transaction is ended:
            return True
        transaction = transaction.parent
    return False


class OutboxRelay:
    """Publishes pending outbox rows to Kafka and marks them sent."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        read_sessions: async_sessionmaker[AsyncSession],
        producer_factory: Callable[[], AIOKafkaProducer],
        outbox_writer: Outbox,
        *,
        service: str,
        batch_size: int = 200,
        poll_interval_s: float = 0.05,
        max_backoff_s: float = 5.0,
        retention: timedelta = timedelta(hours=168),
        create_topics: Callable[[set[str]], Awaitable[object]] | None = None,
        receipt_wait_s: float = 15.0,
        receipt_wait_max_s: float = 600.0,
        republish_window: timedelta = timedelta(hours=1),
        publish_timeout_s: float = 30.0,
        stop_timeout_s: float = 15.0,
        topic_check_interval_s: float = 1.0,
    ) -> None:
        self.sessions = sessions
        self.topic_check_interval_s = topic_check_interval_s
        # topics the broker was seen to hold, and when, by the current producer (see _check_topics)
        self._topics_seen: set[str] = set()
        self._producer_stale = False  # the log was lost: the next batch starts with a new producer
        self._topics_seen_at = 0.0
        self.publish_timeout_s = publish_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.read_sessions = read_sessions
        self.producer_factory = producer_factory
        self.producer: AIOKafkaProducer | None = None
        self.create_topics = create_topics
        self.outbox = outbox_writer
        self.service = service
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.max_backoff_s = max_backoff_s
        self.retention = retention
        self.receipt_wait_s = receipt_wait_s
        self.receipt_wait_max_s = receipt_wait_max_s
        self.republish_window = republish_window
        # the partitions published to since the log was last found lost (the broker watch follows their end offsets)
        self.published: set[TopicPartition] = set()
        for gauge in (AWAITING_RECEIPT, OLDEST_UNACKNOWLEDGED_AGE, OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE):
            gauge.labels(service).set(0)
        for counter in (RESENDS, REPUBLISHED, PUBLISH_FAILURES):
            counter.labels(service)
        self._lock_key = zlib.crc32(f"labornet-outbox-{service}".encode())
        self._pending_statements: dict[tuple[str, int], Direct] = {}
        self._stopping = asyncio.Event()
        # told when a batch held directed messages, whose receipts and answers come back to this service's inbox
        self.on_directed_sent: Callable[[], None] = lambda: None
        self._last_stats = 0.0
        self._last_purge = 0.0

    async def run(self) -> None:
        """Relay until :meth:`stop`; never raises on broker or database trouble.

        A commit of this process that queued rows wakes the relay at once; the fallback poll finds the rows other
        processes queued (replicas of the service) and the receipts that fell due. A poll nothing woke reads the
        gauges first, in one statement, and reads a batch only when they count one: at rest a poll is that one
        statement, where a batch read and the gauges took three."""
        backoff = 0.0
        woken = True  # the start, like a commit, may have left rows
        while not self._stopping.is_set():
            try:
                stats = None if woken else await self._stats_when_due()
                published = await self.publish_batch() if stats is None or stats.backlog else 0
                backoff = 0.0
                if published and stats is not None:  # they counted the rows just published: read them again
                    stats = await self._update_stats()
                await self._housekeeping(stats)
                woken = published >= self.batch_size or await self._idle(self.poll_interval_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                PUBLISH_FAILURES.labels(self.service).inc()
                await self._close_producer()  # reconnect with fresh metadata
                backoff = min(self.max_backoff_s, max(0.1, backoff * 2))
                log.warning("outbox relay: publishing failed, retrying in %.1fs: %s", backoff, exc)
                with contextlib.suppress(Exception):
                    await self._update_stats()
                await self._sleep(backoff)

    async def stop(self) -> None:
        self._stopping.set()
        self.outbox._wake.set()
        await self._close_producer()

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer_stale:
            await self._close_producer()
        if self.producer is None:
            self.producer = await started(self.producer_factory())
        return self.producer

    async def _close_producer(self) -> None:
        producer, self.producer = self.producer, None
        self._producer_stale = False
        self._topics_seen = set()  # a new producer checks again before its first batch
        await closed(producer, self.stop_timeout_s)

    async def _check_topics(self, producer: AIOKafkaProducer, topics: set[str]) -> AIOKafkaProducer:
        """Make sure the broker knows every topic before sending to it.

        A broker that restarted without its data (the embedded broker keeps memory only) may accept records for
        a topic it no longer has and drop them. Asking for fresh metadata catches that: missing topics are created
        again and the producer reconnects with the new layout. The answer stands for ``topic_check_interval_s``
        for the topics it listed (a metadata request before every batch cost the broker and this node a request
        per batch under load); a new producer, which every failure brings, asks again. A log lost within that
        second is still found: the broker watch sees the new cluster and the relay publishes again what it sent.
        """
        now = asyncio.get_running_loop().time()
        if topics <= self._topics_seen and now - self._topics_seen_at < self.topic_check_interval_s:
            return producer
        metadata = await producer.client.fetch_all_metadata()
        held = set(metadata.topics())
        missing = topics - held
        if not missing:
            self._topics_seen, self._topics_seen_at = held, now
            return producer
        log.info("outbox relay: topics %s missing on the broker; recreating them", sorted(missing))
        if any(tp.topic in missing for tp in self.published):
            # before the topics are created again: if this fails, the next batch finds them missing and tries again
            await self.republish(f"topics {sorted(missing)} vanished from the broker")
        if self.create_topics is not None:
            await self.create_topics(missing)
        await self._close_producer()
        return await self._ensure_producer()

    async def publish_batch(self) -> int:
        """Publish up to one batch; return how many rows were sent.

        On SQLite rows are read in a read-only transaction (it takes no write lock, so domain writers are never held
        up by a slow or absent broker) and marked sent in a short write transaction afterwards. On a server database
        one transaction does both (BEGIN, the read, the mark, COMMIT: four round trips where two transactions took
        six): the read takes no row lock, so writers are not held up either, and the replicas' advisory lock the read
        takes is held until the rows are marked.
        """
        together = self.sessions.kw["bind"].dialect.name != "sqlite"
        async with (self.sessions if together else self.read_sessions)() as session, session.begin():
            rows = (await self._pending(session.get_bind().dialect.name).execute(session)).rows
            if not rows:
                return 0
            ids = [row["id"] for row in rows]
            try:
                # bounded: a broker that vanished mid-request may leave a send waiting; the rows stay unsent and the
                # next try starts with a new producer
                async with asyncio.timeout(self.publish_timeout_s):
                    producer = await self._check_topics(await self._ensure_producer(), {row["topic"] for row in rows})
                    futures = [
                        await producer.send(
                            row["topic"], row["payload"], key=row["message_key"], headers=decode_headers(row["headers"])
                        )
                        for row in rows
                    ]
                    confirmations = await asyncio.gather(*futures)
            except Exception as exc:
                await self._record_failure(ids, exc)
                raise
            self.published.update(TopicPartition(c.topic, c.partition) for c in confirmations)
            sent_at = utcnow()
            # one statement: every row is sent, and a directed message waits for its receipt until a time that
            # depends on how often it was sent already
            waits = {
                resends: sent_at + resend_delay(resends, self.receipt_wait_s, self.receipt_wait_max_s)
                for resends in sorted({row["resends"] for row in rows if row["expects_receipt"]})
            }
            if together:
                await _mark_sent(session, ids, sent_at, waits)
            else:
                async with self.sessions() as writer, writer.begin():
                    await _mark_sent(writer, ids, sent_at, waits)
        for row in rows:
            EVENTS_PUBLISHED.labels(self.service, row["topic"]).inc()
        if any(row["expects_receipt"] for row in rows):
            self.on_directed_sent()
        return len(rows)

    def _pending(self, dialect: str) -> Direct:
        """The next batch of unsent rows, in id order (built once per dialect and batch size; run on the driver)."""
        key = (dialect, self.batch_size)
        if key not in self._pending_statements:
            pending = (
                select(
                    outbox.c.id,
                    outbox.c.topic,
                    outbox.c.message_key,
                    outbox.c.headers,
                    outbox.c.payload,
                    outbox.c.expects_receipt,
                    outbox.c.resends,
                )
                .where(outbox.c.sent_at.is_(None))
                .order_by(outbox.c.id)
                .limit(self.batch_size)
            )
            if dialect == "postgresql":
                # the replica's lock in the same statement: an uncorrelated subquery, evaluated once; no rows while
                # another replica is relaying
                lock = func.pg_try_advisory_xact_lock(literal(self._lock_key, BigInteger))
                pending = pending.where(select(lock).scalar_subquery())
            self._pending_statements[key] = Direct(pending)
        return self._pending_statements[key]

    async def _record_failure(self, ids: list[int], exc: Exception) -> None:
        with contextlib.suppress(Exception):
            async with self.sessions() as session, session.begin():
                await session.execute(
                    update(outbox)
                    .where(outbox.c.id.in_(ids))
                    .values(attempts=outbox.c.attempts + 1, last_error=f"{type(exc).__name__}: {exc}"[:2000])
                )

    async def _stats_when_due(self) -> OutboxStats | None:
        """The gauges read afresh when they were last read a second ago or more; None otherwise."""
        if asyncio.get_running_loop().time() - self._last_stats < 1.0:
            return None
        return await self._update_stats()

    async def _housekeeping(self, stats: OutboxStats | None = None) -> None:
        """Resend what is overdue and purge what is old. ``stats`` are the gauges this round already read (None:
        read them when due)."""
        if stats is None:
            stats = await self._stats_when_due()
        if stats is not None and stats.resend_due is not None and stats.resend_due <= utcnow():
            await self.resend_unacknowledged()  # a write only when a receipt is overdue
        now = asyncio.get_running_loop().time()
        if now - self._last_purge >= 60.0:
            self._last_purge = now
            async with self.sessions() as session, session.begin():
                await session.execute(
                    delete(outbox).where(outbox.c.sent_at < utcnow() - self.retention, ~awaiting_receipt())
                )

    async def resend_unacknowledged(self) -> int:
        """Queue again the directed messages whose receipt is overdue; return how many."""
        async with self.sessions() as session, session.begin():
            result = await session.execute(
                update(outbox)
                .where(awaiting_receipt(), outbox.c.sent_at.is_not(None), outbox.c.resend_at <= utcnow())
                .values(sent_at=None, resend_at=None, resends=outbox.c.resends + 1)
            )
        count = int(result.rowcount or 0)  # type: ignore[attr-defined]
        if count:
            RESENDS.labels(self.service).inc(count)
            log.info("outbox relay: %d directed messages had no receipt in time; sending them again", count)
            self.outbox._wake.set()
        return count

    async def republish(self, reason: str) -> int:
        """The broker lost (part of) its log: queue again what it may have lost; return how many rows.

        That is every row published within the republish window, and every directed message still waiting for
        its receipt whatever its age. Consumers drop what they already applied (the inbox), so publishing too
        much costs bandwidth only; what is older than the window is repaired by anti-entropy.
        """
        since = utcnow() - self.republish_window
        async with self.sessions() as session, session.begin():
            result = await session.execute(
                update(outbox)
                .where(outbox.c.sent_at.is_not(None), or_(outbox.c.sent_at >= since, awaiting_receipt()))
                .values(sent_at=None, resend_at=None)
            )
        count = int(result.rowcount or 0)  # type: ignore[attr-defined]
        self.published.clear()
        # a producer of the old log would refresh its topics' metadata and so create them with the broker's own
        # partition count: the next batch starts a new one after the topics were checked. A batch in flight keeps
        # the producer it has (closed under it, its sends waited unanswered until the publish timeout, 30 s)
        self._producer_stale = True
        REPUBLISHED.labels(self.service).inc(count)
        log.warning("outbox relay: %s; %d published events queued to be published again", reason, count)
        self.outbox._wake.set()
        return count

    async def _update_stats(self) -> OutboxStats:
        """Set the backlog and receipt gauges from one statement; return what it read."""
        self._last_stats = asyncio.get_running_loop().time()
        async with self.read_sessions() as session, session.begin():
            rows = {row["kind"]: row for row in (await _STATS.execute(session)).rows}
        pending, awaiting = rows[_UNSENT], rows[_AWAITING]
        stats = OutboxStats(
            backlog=pending["rows"],
            oldest=as_utc_or_none(pending["oldest"]),
            awaiting=awaiting["rows"],
            oldest_awaiting=as_utc_or_none(awaiting["oldest"]),
            resend_due=as_utc_or_none(awaiting["resend_due"]),
        )
        now = utcnow()
        OUTBOX_BACKLOG.labels(self.service).set(stats.backlog)
        OUTBOX_OLDEST_AGE.labels(self.service).set((now - stats.oldest).total_seconds() if stats.oldest else 0)
        AWAITING_RECEIPT.labels(self.service).set(stats.awaiting)
        OLDEST_UNACKNOWLEDGED_AGE.labels(self.service).set(
            (now - stats.oldest_awaiting).total_seconds() if stats.oldest_awaiting else 0
        )
        return stats

    async def _idle(self, seconds: float) -> bool:
        """Wait for a commit that queued rows, at most ``seconds``; whether one came."""
        return await self.outbox.wait_for_work(seconds)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

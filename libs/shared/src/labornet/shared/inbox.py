"""Idempotent event consumer (the inbox side of the bus).

For every record of a partition, in order:

1. read the CloudEvent (a malformed record is quarantined);
2. verify its signature against the trust list *before anything else* (a forged, misattributed, expired or
   tampered event is quarantined and counted, never applied);
3. in one database transaction, insert the inbox row keyed by (consumer, event id) and run the handler — a
   duplicate finds the row already there and changes nothing;
4. a handler that keeps failing is retried a bounded number of times with exponential backoff, then the record
   goes to the quarantine table and (through the outbox, so it cannot be lost) to the dead-letter topic, and the
   partition moves on.

Offsets are committed manually, ``offset + 1`` per partition, only after the transactions of the records before
them have committed. If the database itself is unreachable nothing is committed: the consumer seeks back and tries
again later, so no record is skipped. On a rebalance the revoke callback waits for the batch in flight to finish
and commit before the partitions move.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import Counter, Histogram
from pydantic import ValidationError
from sqlalchemy import String, any_, bindparam, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from labornet.shared.db import CONFLICT_SQLSTATES, for_each_dialect, inbox, quarantine, readonly_sessionmaker, utcnow
from labornet.shared.direct import Direct
from labornet.shared.envelope import Envelope, MalformedEvent
from labornet.shared.kafka import PacedConsumer, closed, started
from labornet.shared.observability import (
    CONSUMER_ASSIGNED_PARTITIONS,
    CONSUMER_LAG,
    CONSUMER_LAG_MEASURED,
    EVENT_AGE,
    EVENT_RETRIES,
    EVENTS_CONSUMED,
    EVENTS_DEAD_LETTERED,
    EVENTS_REJECTED,
    QUARANTINED,
    current_traceparent,
)
from labornet.shared.outbox import Outbox, decode_headers, encode_headers, record_fingerprint
from labornet.shared.receipts import (
    RECEIPT,
    ReceiptOutcome,
    acknowledged_in,
    apply_answers,
    apply_receipts,
    init_receipt_metrics,
    send_receipt,
)
from labornet.shared.settings import Settings
from labornet.shared.signing import SignatureRejected, TrustListFile
from labornet.shared.topics import is_inbox_topic

log = logging.getLogger(__name__)


def topic_pattern(topics: Sequence[str]) -> str:
    """A regular expression matching exactly ``topics``."""
    return "^(?:" + "|".join(re.escape(topic) for topic in sorted(topics)) + ")$"


Handler = Callable[[AsyncSession, Envelope], Awaitable[None]]
BatchHandler = Callable[[AsyncSession, Sequence[Envelope]], Awaitable[None]]


def batched(apply_many: BatchHandler) -> Handler:
    """A handler that applies one event as a run of one, and lets the consumer hand ``apply_many`` the consecutive
    new events of a run that share it (in partition order, in the run's transaction).

    ``apply_many`` must leave the state that applying its events one after the other would (a later version of a
    record wins over an earlier one in the same call), and raise as the single event would: an exception rolls the
    whole run back, and the consumer then applies its records one by one, which finds and quarantines the bad one.
    """

    async def apply_one(session: AsyncSession, envelope: Envelope) -> None:
        await apply_many(session, [envelope])

    apply_one.apply_many = apply_many  # type: ignore[attr-defined]
    return apply_one


INBOX_RUN_SIZE = Histogram(
    "labornet_inbox_run_records",
    "Records of one partition applied together in one transaction",
    ["service"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
LOG_LOSSES_SEEN = Counter(
    "labornet_consumer_log_rewinds_total",
    "Partitions a consumer read again from their beginning because it stood beyond their end (the log went back)",
    ["service", "group"],
)
INBOX_RUNS_SPLIT = Counter(
    "labornet_inbox_runs_split_total",
    "Runs of records rolled back because one failed, then applied one by one",
    ["service"],
)

# The directed messages a transaction applied: the quarantine rows of earlier copies that failed, if any, are
# settled, all of them with one statement before the commit (built once: it runs with every transaction that applied
# a directed message). SQLite's; on PostgreSQL the inbox's entry of the run settles them (below).
_SETTLE_QUARANTINED = update(quarantine).where(
    quarantine.c.consumer == bindparam("settled_consumer"),
    quarantine.c.event_id.in_(bindparam("settled_events", expanding=True)),
    quarantine.c.status == "quarantined",
)
_TO_SETTLE = "labornet_inbox_to_settle"

# The inbox rows of a run, those already there left alone; the ids of the rows inserted are returned. On PostgreSQL
# one statement on the driver for any number of rows (ADR 38): each column's values as an array, unnested.
_INBOX_COLUMNS = (
    "consumer",
    "event_id",
    "event_type",
    "origin_province",
    "stream",
    "seq",
    "topic",
    "partition",
    "offset",
    "event_time",
    "applied_at",
)
_ENTER_INBOX = for_each_dialect(
    lambda insert: (
        insert(inbox)
        .on_conflict_do_nothing(index_elements=[inbox.c.consumer, inbox.c.event_id])
        .returning(inbox.c.event_id)
    )
)


def _enter_inbox_arrays() -> Any:
    """PostgreSQL's entry of a run: the inbox rows from arrays, and in the same statement the quarantine rows of
    earlier copies of the directed messages entered settled (a resent message that failed before, e.g. it came
    ahead of its predecessor). The transaction commits only if every message entered was applied (a run that
    fails is rolled back whole), so settling them at entry settles what the transaction applied, as SQLite's
    statement after the run does."""
    entered = (
        postgresql.insert(inbox)
        .from_select(
            list(_INBOX_COLUMNS),
            select(
                *(func.unnest(bindparam(name, type_=ARRAY(inbox.c[name].type))).label(name) for name in _INBOX_COLUMNS)
            ),
        )
        .on_conflict_do_nothing(index_elements=[inbox.c.consumer, inbox.c.event_id])
        .returning(inbox.c.event_id)
        .cte("entered")
    )
    settled = (
        update(quarantine)
        .where(
            quarantine.c.consumer == bindparam("consumer_settling"),
            quarantine.c.event_id == any_(bindparam("directed", type_=ARRAY(String))),
            quarantine.c.event_id.in_(select(entered.c.event_id)),
            quarantine.c.status == "quarantined",
        )
        .values(status="replayed", resolved_at=bindparam("settled_at"))
        .cte("settled")
    )
    return select(entered.c.event_id).add_cte(settled)


_ENTER_INBOX_ARRAYS = Direct(_enter_inbox_arrays())


def _acknowledged(envelope: Envelope) -> bool:
    """Whether applying ``envelope`` is answered with a receipt: a directed message that is not a receipt."""
    return envelope.destprovince is not None and envelope.type != RECEIPT


# Namespace of the ids of dead-letter copies (UUID 5 of the consumer group and the record's SHA-256).
_DEAD_LETTER_IDS = uuid.UUID("6f1c3f0e-3b9a-5d4c-9a57-2d4c1b0e7a11")

# Failures of the database connection or schema rather than of the event: never counted against the event.
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError, OSError)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is the database's trouble, not the event's: a connection or schema failure
    (:data:`INFRASTRUCTURE_ERRORS`) or a transaction ended by a concurrent one (:data:`CONFLICT_SQLSTATES`, as
    partitions applied at once can meet on a shared row). The consumer rewinds and applies the records again; no
    attempt is counted against them."""
    if isinstance(exc, INFRASTRUCTURE_ERRORS):
        return True
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in CONFLICT_SQLSTATES


class EventRejected(Exception):
    """Raised by the checks that refuse a record before any handler runs."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class RuleViolation(ValueError):
    """Raised by a handler when an event breaks a rule its origin's API enforces (an unknown occupation code, a
    version its stream cannot have reached…).

    The consumer quarantines it at once with reason ``rule-violation``: the event itself is wrong, so retrying it
    cannot help, and it says nothing about the database."""

    reason = "rule-violation"


def check_version_continuity(envelope: Envelope, version: int, held: int | None, max_jump: int = 0) -> None:
    """Refuse a replica event carrying a version its origin cannot have written; :class:`RuleViolation` if so.

    The rule: every version of an aggregate is one event of its origin's stream (version 1 the first, each change
    one more), so an honest origin sends version ``v`` in an event whose stream sequence number is at least ``v``:
    ``version <= envelope.streamseq``, whatever the replica missed. Versions the replica never saw are not
    evidence of anything — the broker's log may have been wiped — so a jump over the held version is refused
    only when ``max_jump`` is set (``LABORNET_REPLICA_MAX_VERSION_JUMP``, 0 = no limit)."""
    if version > envelope.streamseq:
        raise RuleViolation(
            f"event {envelope.id} carries version {version} of {envelope.partitionkey}, but it is event "
            f"{envelope.streamseq} of stream {envelope.stream}: the origin cannot have made that many changes"
        )
    if max_jump and held is not None and version - held > max_jump:
        raise RuleViolation(
            f"event {envelope.id} carries version {version} of {envelope.partitionkey}, {version - held} ahead of "
            f"the held version {held}; at most {max_jump} is accepted"
        )


def describe(exc: BaseException, limit: int = 1000) -> str:
    """What went wrong, fit for a log line and the quarantine: the exception's type and message, without the input
    it was given (a pydantic error lists where and what, not the values, which are the event's payload)."""
    if isinstance(exc, ValidationError):
        message = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'record'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False, include_context=False)
        )
    else:
        message = str(exc)
    return fit_text(f"{type(exc).__name__}: {message}", limit)


def fit_text(value: str, limit: int) -> str:
    """``value`` as a text column of ``limit`` characters takes it: NULs and unpaired surrogates replaced (PostgreSQL
    text holds neither), cut with an ellipsis when longer."""
    cleaned = value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


@dataclass(frozen=True)
class StoredRecord:
    """A record as quarantine keeps it: at most ``limit`` bytes of key, header names and values and payload, and the
    SHA-256 of the whole record (:func:`~labornet.shared.outbox.record_fingerprint`)."""

    key: bytes | None
    headers: list[tuple[str, bytes]]
    payload: bytes | None
    size: int  # bytes of the whole record
    kept: int  # bytes stored
    fingerprint: str

    @property
    def cut(self) -> bool:
        return self.kept < self.size

    @classmethod
    def of(cls, record: ConsumerRecord[bytes, bytes], limit: int) -> StoredRecord:
        """Fit ``record`` into ``limit`` bytes: parts that fit in an equal share of what is left are kept whole,
        the largest share the rest equally. The ``ce_*`` attributes, short as they are, survive beside a huge
        payload or header, so the record can still be identified."""
        # A header value may be null on the wire; it is stored (and fingerprinted) as empty.
        headers = [(name, value or b"") for name, value in record.headers or ()]
        names = [name.encode("utf-8", "replace") for name, _ in headers]
        parts = [record.key or b"", *names, *(value for _, value in headers), record.value or b""]
        shares = _fair_shares([len(part) for part in parts], limit)
        kept = [part[:share] for part, share in zip(parts, shares, strict=True)]
        count = len(headers)
        return cls(
            key=None if record.key is None else kept[0],
            headers=[
                (fit_text(name.decode("utf-8", "ignore"), len(name)), value)
                for name, value in zip(kept[1 : 1 + count], kept[1 + count : 1 + 2 * count], strict=True)
            ],
            payload=None if record.value is None else kept[-1],
            size=sum(len(part) for part in parts),
            kept=sum(shares),
            fingerprint=record_fingerprint(record.key, record.value, headers),
        )


def _fair_shares(sizes: Sequence[int], budget: int) -> list[int]:
    """How many bytes of each part to keep so that together they take at most ``budget`` (max-min fairness)."""
    shares = [0] * len(sizes)
    left, remaining = budget, len(sizes)
    for index in sorted(range(len(sizes)), key=sizes.__getitem__):
        shares[index] = min(sizes[index], left // remaining)
        left -= shares[index]
        remaining -= 1
    return shares


@dataclass(frozen=True)
class Outcome:
    status: str  # applied | duplicate | quarantined
    reason: str | None = None


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: EventConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        # Wait until the batch in flight has been applied and its offsets committed.
        async with self.owner._processing:
            for tp in revoked:
                with contextlib.suppress(KeyError):
                    CONSUMER_LAG.remove(self.owner.service, self.owner.group_id, tp.topic, str(tp.partition))

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        CONSUMER_ASSIGNED_PARTITIONS.labels(self.owner.service, self.owner.group_id).set(len(assigned))
        self.owner._assigned.set()
        log.info("consumer %s assigned %d partitions", self.owner.group_id, len(assigned))


class EventConsumer:
    """Applies signed events from ``topics`` through ``handlers`` exactly once per consumer."""

    # How much of a quarantined record is stored and dead-lettered (LABORNET_QUARANTINE_MAX_RECORD_BYTES).
    quarantine_max_record_bytes: int = Settings.model_fields["quarantine_max_record_bytes"].default
    # How long a poll of a consumer at rest waits for records before the loop's own checks (the broker's new log,
    # the lag, the quarantine count) run again: the pace at which what they look at changes at rest (the broker
    # watch asks every 5 s, the lag is measured every 5 s); records end the wait as they come.
    idle_poll_ms: int = 5000
    # How many records of one partition, of those applied one at a time by their handler, go in one transaction
    # (LABORNET_INBOX_BATCH_SIZE; 1: one each) ...
    batch_size: int = Settings.model_fields["inbox_batch_size"].default
    # ... and how many in all when their handler applies them together (LABORNET_INBOX_BATCHED_RUN_SIZE): a batched
    # handler does a fixed number of statements per run, while each record of the others adds its own statements
    # and row locks to the transaction, which other writers (an officer's request) then wait for
    batched_run_size: int = Settings.model_fields["inbox_batched_run_size"].default
    # How many partitions of one fetch of partners' events are applied at once, each in its own transactions
    # (LABORNET_INBOX_PARTITION_CONCURRENCY); one on SQLite and for directed messages (see concurrency).
    partition_concurrency: int = Settings.model_fields["inbox_partition_concurrency"].default

    def __init__(
        self,
        *,
        name: str,
        province: str,
        service: str,
        topics: Sequence[str],
        handlers: Mapping[str, Handler],
        sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        trust: TrustListFile,
        consumer_factory: Callable[[str], AIOKafkaConsumer],
        deadletter_topic: str,
        max_attempts: int = 3,
        retry_backoff_s: float = 0.2,
        cluster: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.name = name
        self.province = province
        self.service = service
        self.topics = list(topics)
        self.handlers = dict(handlers)
        directed = self.reads_inbox = any(is_inbox_topic(topic) for topic in topics)
        if directed:  # directed messages come back with receipts
            self.handlers.setdefault(RECEIPT, batched(self._apply_receipts))
            init_receipt_metrics(service)
        self.sessions = sessions
        # lookups take no write lock (on SQLite a write session begins with BEGIN IMMEDIATE)
        self.read_sessions = readonly_sessionmaker(sessions.kw["bind"])
        self.outbox = outbox
        self.trust = trust
        self.group_id = f"labornet.{province}.{service}.{name}"
        self._consumer_factory = consumer_factory
        self.deadletter_topic = deadletter_topic
        self.max_attempts = max_attempts
        self.retry_backoff_s = retry_backoff_s
        INBOX_RUNS_SPLIT.labels(service)
        self._consumer: AIOKafkaConsumer | None = None
        self._processing = asyncio.Lock()
        # SQLite's one writer, or directed messages: one partition at a time whatever partition_concurrency says
        self._one_partition_at_a_time = directed or sessions.kw["bind"].dialect.name == "sqlite"
        self._assigned = asyncio.Event()
        self._stopping = asyncio.Event()
        # the broker's cluster id as the broker watch last saw it; a new one means a new log (see _follow_cluster)
        self._cluster = cluster
        self._read_cluster: str | None = None
        # partitions per subscribed topic when the current consumer got its first assignment (see _layout_changed)
        self._layout: dict[str, int] | None = None

    @property
    def ready(self) -> bool:
        return self._consumer is not None and self._assigned.is_set() and bool(self._consumer.assignment())

    async def wait_assigned(self, timeout: float = 30.0) -> None:
        await asyncio.wait_for(self._assigned.wait(), timeout)

    # Loop ------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until :meth:`stop`; broker or database trouble is retried with backoff up to 10 s."""
        first_backoff = max(self.retry_backoff_s, 0.01)
        backoff = first_backoff
        while not self._stopping.is_set():
            try:
                consumer = self._consumer
                if consumer is None:
                    consumer = self._consumer_factory(self.group_id)
                    # by pattern: the consumer's metadata requests then never create a topic (the broker would give
                    # it its own partition count), and recreated topics and new partitions are picked up
                    consumer.subscribe(pattern=topic_pattern(self.topics), listener=_Rebalance(self))
                    self._consumer = consumer = await started(consumer)
                await self._poll_once(consumer)
                # stop() may have dropped this consumer while the poll ran
                if self._consumer is consumer and self._layout_changed(consumer):
                    await self._renew_consumer()
                backoff = first_backoff
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("consumer %s: %s; retrying in %.1fs", self.group_id, exc, backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, 10.0)
        await self._drop_consumer()  # one started while stop() ran is not left open

    async def stop(self) -> None:
        self._stopping.set()
        await self._drop_consumer()

    def expect_records(self) -> None:
        """An answer is on its way (this service just sent a directed message): read at the busy pace now, instead
        of after the doorbell's next ring (ADR 40)."""
        consumer = self._consumer
        if isinstance(consumer, PacedConsumer):
            consumer.expect()

    async def _drop_consumer(self) -> None:
        """Stop the client once the batch in flight is applied and committed."""
        async with self._processing:
            consumer, self._consumer = self._consumer, None
        await closed(consumer)

    def _layout_changed(self, consumer: AIOKafkaConsumer) -> bool:
        """Whether a subscribed topic now has another number of partitions than when this consumer got its first
        assignment (partitions added, or the topic recreated with another count).

        The client asks its group to rebalance then, but the embedded broker answers a rejoin of the same members
        with the assignment it already had (the generation does not change), so new partitions would never be read.
        A new consumer is a new member and gets a fresh assignment from any broker."""
        layout = {topic: len(consumer.partitions_for_topic(topic) or ()) for topic in consumer.subscription()}
        if self._layout is None:
            if consumer.assignment():
                self._layout = layout
            return False
        return any(count and self._layout.get(topic, count) not in (0, count) for topic, count in layout.items())

    async def _renew_consumer(self) -> None:
        log.warning("consumer %s: a topic's partitions changed; joining the group again as a new member", self.group_id)
        await self._drop_consumer()
        self._layout = None

    async def _follow_cluster(self, consumer: AIOKafkaConsumer) -> None:
        """A new cluster is a new log: read it from its beginning.

        Positions and committed offsets of the old log mean nothing in the new one (a consumer that kept its
        position, or committed it to the new broker before noticing, would skip the first records of the new log);
        what is read twice the inbox drops."""
        current = self._cluster()
        if current is None or current == self._read_cluster:
            return
        if self._read_cluster is not None and consumer.assignment():
            log.warning(
                "consumer %s: the broker's log is new (cluster %s); reading its partitions from the beginning",
                self.group_id,
                current,
            )
            try:
                await asyncio.wait_for(consumer.seek_to_beginning(*consumer.assignment()), 10)
            except (TimeoutError, IllegalStateError) as exc:  # the assignment moved or the broker is slow
                log.info("consumer %s: rewinding postponed to the next poll (%r)", self.group_id, exc)
                return
        self._read_cluster = current

    async def _poll_once(self, consumer: AIOKafkaConsumer) -> None:
        await self._follow_cluster(consumer)
        # records end the wait as they come; the timeout only paces this loop's own checks, so a consumer at rest
        # runs it less often
        paced = isinstance(consumer, PacedConsumer)
        batches = await consumer.getmany(
            timeout_ms=self.idle_poll_ms if paced and consumer.idle else 500, max_records=self.run_size
        )
        if batches and self.concurrency > 1:
            await self._take_more(consumer, batches)
        if paced:
            consumer.pace(bool(batches))
        async with self._processing:
            # a rebalance while more records were taken (an await) may have given a partition to another member,
            # which reads it from the committed offset; from here on no revocation runs until this batch is done
            assigned = consumer.assignment()
            pending = [(tp, records) for tp, records in batches.items() if tp in assigned]
            if self.concurrency > 1 and len(pending) > 1:
                await self._process_partitions(consumer, pending)
            else:
                try:
                    while pending and not self._stopping.is_set():
                        tp, records = pending[0]
                        await self._process_partition(consumer, tp, records)
                        pending.pop(0)
                finally:
                    # Partitions of this batch not (fully) processed are rewound, so no record is ever skipped.
                    for tp, records in pending[1:]:
                        consumer.seek(tp, records[0].offset)
        await self._update_lag(consumer)
        await self._count_quarantined()

    async def _take_more(
        self, consumer: AIOKafkaConsumer, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> None:
        """Add to ``batches`` the records other partitions already hold in the client (a run's worth each, no
        waiting), until :attr:`concurrency` partitions have some. The client hands out one partition's buffer
        before the next one's, so a single poll would nearly always bring one partition."""
        for tp in consumer.assignment():
            if len(batches) >= self.concurrency:
                return
            if tp not in batches:
                batches.update(await consumer.getmany(tp, timeout_ms=0, max_records=self.run_size))

    @property
    def run_size(self) -> int:
        """The most records a run may hold (and a poll asks for, per partition)."""
        return max(self.batch_size, self.batched_run_size)

    def _apply_many(self, event_type: str) -> BatchHandler | None:
        """The run-taking function of the type's handler when it is :func:`batched`; None when it applies one."""
        return getattr(self.handlers.get(event_type), "apply_many", None)

    @property
    def concurrency(self) -> int:
        """Partitions applied at once: :attr:`partition_concurrency` for partners' events (replicas) on a server
        database. One on SQLite, whose single writer would only make the others wait (and poll for its lock), and
        one for directed messages, whose steps lock the case, the person and the streams they answer on: the
        transfer saga at 100/s offered on PostgreSQL completed 52.5 transfers/s with one, 35-38/s with four."""
        return 1 if self._one_partition_at_a_time else self.partition_concurrency

    async def _process_partitions(
        self, consumer: AIOKafkaConsumer, batches: Sequence[tuple[TopicPartition, list[ConsumerRecord[bytes, bytes]]]]
    ) -> None:
        """Apply the partitions of one fetch at once, :attr:`concurrency` at a time, so that the node works on one
        partition's events while the database works on another's. Order is kept within each partition (the only
        order there is); each partition commits its own progress and, when it fails, rewinds itself alone. A
        partition not begun when the consumer is stopping (or cancelled) is rewound, so nothing is skipped. The
        first failure is raised once all have ended."""
        slots = asyncio.Semaphore(self.concurrency)

        async def one(tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
            begun = False
            try:
                async with slots:
                    if not self._stopping.is_set():
                        begun = True
                        await self._process_partition(consumer, tp, records)
            finally:
                if not begun:
                    consumer.seek(tp, records[0].offset)

        results = await asyncio.gather(*(one(tp, records) for tp, records in batches), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _process_partition(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]
    ) -> None:
        """Apply the records of one partition in order: runs of verified records in one transaction each (at most
        ``batch_size`` records applied one at a time by their handler, at most ``batched_run_size`` in all); a
        record refused by the checks, and every record of a run whose transaction failed, go
        through :meth:`handle` one by one (retries, rule violations and quarantine as for a single record)."""
        next_offset: int | None = None
        run: list[tuple[ConsumerRecord[bytes, bytes], Envelope]] = []
        one_at_a_time = 0  # records of the run whose handler applies them one by one

        async def flush() -> None:
            nonlocal next_offset, one_at_a_time
            if not run:
                return
            if len(run) == 1 or not await self._apply_run(run):
                for record, envelope in run:
                    await self.handle(record, envelope)
                    next_offset = record.offset + 1
            next_offset = run[-1][0].offset + 1
            run.clear()
            one_at_a_time = 0

        try:
            for record in records:
                envelope = self._verified(record) if self.batch_size > 1 else None
                if envelope is None:  # refused by the checks (or no batching): the single path handles it
                    await flush()
                    await self.handle(record)
                    next_offset = record.offset + 1
                    continue
                run.append((record, envelope))
                one_at_a_time += self._apply_many(envelope.type) is None
                if len(run) >= self.batched_run_size or one_at_a_time >= self.batch_size:
                    await flush()
            await flush()
        except Exception:
            # The infrastructure (not the event) failed: nothing after the last handled record may be committed.
            consumer.seek(tp, next_offset if next_offset is not None else records[0].offset)
            raise
        finally:
            if next_offset is not None:
                await consumer.commit({tp: OffsetAndMetadata(next_offset, "")})

    # One record ------------------------------------------------------------------------------------

    async def handle(self, record: ConsumerRecord[bytes, bytes], verified: Envelope | None = None) -> Outcome:
        """Verify and apply one record; return what happened. ``verified`` is its envelope when the caller has
        already decoded it and passed it through every check (a record of a run that failed is not verified twice).

        Raises the database's own failures (:func:`is_transient`: unreachable, schema missing, a deadlock with a
        concurrent transaction) without counting an attempt: such a failure says nothing about the event, so the
        caller rewinds and tries again later instead of quarantining a good event.
        """
        if verified is not None:
            envelope = verified
        else:
            try:
                envelope = Envelope.from_kafka(record.key, record.value, list(record.headers or ()))
            except Exception as exc:  # whatever a record holds (a null header value too), it cannot stop the partition
                return await self._reject(
                    record, None, "malformed", str(exc) if isinstance(exc, MalformedEvent) else describe(exc)
                )
            try:
                self._check(envelope)
            except EventRejected as exc:
                return await self._reject(record, envelope, exc.reason, str(exc))

        token = current_traceparent.set(envelope.traceparent)
        try:
            last_error: Exception | None = None
            for attempt in range(1, self.max_attempts + 1):
                try:
                    outcome = await self._apply(record, envelope)
                except RuleViolation as exc:  # the event is wrong, not the database: retrying cannot help
                    rejected = await self._reject(record, envelope, exc.reason, describe(exc, 4000))
                    if envelope.destprovince is not None and envelope.type != RECEIPT:
                        # the sender's resending the same message cannot help either: tell it so
                        async with self.sessions() as session, session.begin():
                            await send_receipt(session, self.outbox, envelope, ReceiptOutcome.REJECTED)
                    return rejected
                except Exception as exc:
                    if is_transient(exc):
                        raise
                    last_error = exc
                    log.warning(
                        "event %s (%s) failed on attempt %d/%d: %s",
                        fit_text(envelope.id, 64),
                        fit_text(envelope.type, 200),
                        attempt,
                        self.max_attempts,
                        describe(exc, 500),
                    )
                    if attempt < self.max_attempts:
                        EVENT_RETRIES.labels(self.service, record.topic).inc()
                        await asyncio.sleep(self.retry_backoff_s * 2 ** (attempt - 1))
                    continue
                EVENTS_CONSUMED.labels(self.service, record.topic, outcome.status).inc()
                if outcome.status == "applied":
                    age = (datetime.now(UTC) - envelope.time).total_seconds()
                    EVENT_AGE.labels(self.service, record.topic, envelope.originprovince).observe(max(age, 0.0))
                return outcome
            assert last_error is not None
            return await self._dead_letter(
                record, envelope, "handler-failed", describe(last_error, 4000), self.max_attempts
            )
        finally:
            current_traceparent.reset(token)

    def _verified(self, record: ConsumerRecord[bytes, bytes]) -> Envelope | None:
        """The record's envelope when it passes every check a handler relies on; None when it does not."""
        try:
            envelope = Envelope.from_kafka(record.key, record.value, list(record.headers or ()))
            self._check(envelope)
        except Exception:
            return None
        return envelope

    async def _apply_run(self, run: Sequence[tuple[ConsumerRecord[bytes, bytes], Envelope]]) -> bool:
        """Apply verified records of one partition in one transaction; False (and nothing applied) when any fails.

        A failing run is rolled back whole and its records are then handled one by one, which finds the bad one
        and quarantines it alone. The database's failures are raised as they are: the caller rewinds."""
        outcomes: list[Outcome] = []
        try:
            async with self.sessions() as session, session.begin():
                fresh = await self._enter_inbox(session, run)
                group: list[Envelope] = []  # consecutive new events whose handler takes several at once
                # receipts only acknowledge rows of this node's outbox, which no handler reads: the run's receipts,
                # and the acknowledgements its answers carry (ADR 39), go in together after its messages, one
                # statement per sender and outcome, where taken between the messages they came with they cost one
                # each
                receipts: list[Envelope] = []
                answers: list[Envelope] = []

                async def apply_group() -> None:
                    if group:
                        outcomes.extend(await self._apply_fresh_group(session, group))
                        group.clear()

                for _, envelope in run:
                    if envelope.id not in fresh:  # a second copy in the same run is a duplicate
                        await apply_group()
                        outcomes.append(await self._answer_duplicate(session, envelope))
                        continue
                    fresh.discard(envelope.id)
                    if envelope.type == RECEIPT:
                        receipts.append(envelope)
                        outcomes.append(Outcome("applied"))
                        continue
                    if acknowledged_in(envelope):
                        answers.append(envelope)
                    apply_many = self._apply_many(envelope.type)
                    if apply_many is None:
                        await apply_group()
                        outcomes.append(await self._apply_fresh(session, envelope))
                        continue
                    if group and self._apply_many(group[0].type) != apply_many:
                        await apply_group()
                    group.append(envelope)
                await apply_group()
                # in the first receipt's trace, as their handler ran them (a refusal's warning is logged there)
                token = current_traceparent.set(receipts[0].traceparent) if receipts else None
                try:
                    await apply_answers(session, answers, self.service, receipts=receipts)
                finally:
                    if token is not None:
                        current_traceparent.reset(token)
                await self._settle(session)
        except Exception as exc:
            if is_transient(exc):
                raise
            INBOX_RUNS_SPLIT.labels(self.service).inc()
            log.info(
                "consumer %s: a run of %d records failed (%s); applying them one by one",
                self.group_id,
                len(run),
                describe(exc, 300),
            )
            return False
        INBOX_RUN_SIZE.labels(self.service).observe(len(run))
        now = datetime.now(UTC)
        for (record, envelope), outcome in zip(run, outcomes, strict=True):
            EVENTS_CONSUMED.labels(self.service, record.topic, outcome.status).inc()
            if outcome.status == "applied":
                EVENT_AGE.labels(self.service, record.topic, envelope.originprovince).observe(
                    max((now - envelope.time).total_seconds(), 0.0)
                )
        return True

    def _check(self, envelope: Envelope) -> None:
        try:
            self.trust.verify(envelope)
        except SignatureRejected as exc:
            raise EventRejected(exc.reason, str(exc)) from exc
        if envelope.destprovince is not None and envelope.destprovince != self.province:
            raise EventRejected(
                "misaddressed", f"event {envelope.id} is addressed to {envelope.destprovince}, not {self.province}"
            )
        if envelope.type not in self.handlers:
            raise EventRejected("unknown-type", f"event {envelope.id}: no handler for type {envelope.type}")

    async def _apply(self, record: ConsumerRecord[bytes, bytes], envelope: Envelope) -> Outcome:
        async with self.sessions() as session, session.begin():
            return await self._apply_in(session, record, envelope)

    async def _apply_in(
        self, session: AsyncSession, record: ConsumerRecord[bytes, bytes], envelope: Envelope
    ) -> Outcome:
        """Record ``envelope`` in the inbox and apply it, in the transaction ``session`` is in."""
        if await self._enter_inbox(session, [(record, envelope)]):
            outcome = await self._apply_fresh(session, envelope)
            await apply_answers(session, [envelope], self.service)
            await self._settle(session)
            return outcome
        return await self._answer_duplicate(session, envelope)

    async def _enter_inbox(
        self, session: AsyncSession, run: Sequence[tuple[ConsumerRecord[bytes, bytes], Envelope]]
    ) -> set[str]:
        """Insert the inbox rows of ``run`` in one statement; return the ids not seen before (the rest are
        duplicates)."""
        now = utcnow()
        rows = [
            {
                "consumer": self.name,
                "event_id": envelope.id,
                "event_type": envelope.type,
                "origin_province": envelope.originprovince,
                "stream": envelope.stream,
                "seq": envelope.streamseq,
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "event_time": envelope.time,
                "applied_at": now,
            }
            for record, envelope in run
        ]
        dialect = session.get_bind().dialect.name
        if dialect == "postgresql":
            columns: dict[str, Any] = {name: [row[name] for row in rows] for name in _INBOX_COLUMNS}
            columns |= {
                "consumer_settling": self.name,
                "directed": [envelope.id for _, envelope in run if _acknowledged(envelope)],
                "settled_at": now,
            }
            return set((await _ENTER_INBOX_ARRAYS.execute(session, columns)).scalars())
        # many parameter sets for one statement: compiled once and cached, sent as multi-row INSERTs by the dialect
        result = await session.execute(_ENTER_INBOX[dialect], rows)
        return set(result.scalars())

    async def _answer_duplicate(self, session: AsyncSession, envelope: Envelope) -> Outcome:
        if envelope.destprovince is not None and envelope.type != RECEIPT:
            # the sender did not get our receipt: answer again, in the message's trace
            token = current_traceparent.set(envelope.traceparent)
            try:
                await send_receipt(session, self.outbox, envelope, ReceiptOutcome.DUPLICATE)
            finally:
                current_traceparent.reset(token)
        return Outcome("duplicate")

    async def _apply_fresh(self, session: AsyncSession, envelope: Envelope) -> Outcome:
        """Apply an event just entered in the inbox, and acknowledge it when it is a directed message."""
        token = current_traceparent.set(envelope.traceparent)
        try:
            await self.handlers[envelope.type](session, envelope)
            await self._acknowledge(session, envelope)
        finally:
            current_traceparent.reset(token)
        return Outcome("applied")

    async def _apply_fresh_group(self, session: AsyncSession, envelopes: Sequence[Envelope]) -> list[Outcome]:
        """Apply consecutive new events sharing a :func:`batched` handler with one call, then acknowledge each."""
        token = current_traceparent.set(envelopes[0].traceparent)
        try:
            await self.handlers[envelopes[0].type].apply_many(session, envelopes)  # type: ignore[attr-defined]
            for envelope in envelopes:
                await self._acknowledge(session, envelope)
        finally:
            current_traceparent.reset(token)
        return [Outcome("applied")] * len(envelopes)

    async def _acknowledge(self, session: AsyncSession, envelope: Envelope) -> None:
        """A directed message just applied: its receipt, and its quarantine row (if an earlier copy failed) to be
        settled by :meth:`_settle` before the transaction ends (on PostgreSQL the inbox's entry settled it)."""
        if not _acknowledged(envelope):
            return
        await send_receipt(session, self.outbox, envelope, ReceiptOutcome.APPLIED)
        if session.get_bind().dialect.name != "postgresql":  # PostgreSQL's inbox entry settled it
            session.info.setdefault(_TO_SETTLE, []).append(envelope.id)

    async def _settle(self, session: AsyncSession) -> None:
        """Settle the quarantine rows of earlier copies of the directed messages this transaction applied (a resent
        message that failed before, e.g. it came ahead of its predecessor): one statement for all of them."""
        settled = session.info.pop(_TO_SETTLE, None)
        if settled:
            await session.execute(
                _SETTLE_QUARANTINED,
                {
                    "settled_consumer": self.name,
                    "settled_events": settled,
                    "status": "replayed",
                    "resolved_at": utcnow(),
                },
            )

    async def _apply_receipts(self, session: AsyncSession, envelopes: Sequence[Envelope]) -> None:
        await apply_receipts(session, envelopes, self.service)

    async def _reject(
        self, record: ConsumerRecord[bytes, bytes], envelope: Envelope | None, reason: str, error: str
    ) -> Outcome:
        EVENTS_REJECTED.labels(self.service, record.topic, reason).inc()
        log.warning("rejected record %s/%d@%d: %s", record.topic, record.partition, record.offset, fit_text(error, 500))
        return await self._dead_letter(record, envelope, reason, error, attempts=1)

    async def _dead_letter(
        self,
        record: ConsumerRecord[bytes, bytes],
        envelope: Envelope | None,
        reason: str,
        error: str,
        attempts: int,
    ) -> Outcome:
        """Quarantine ``record`` and queue its dead-letter copy, whatever it holds; then the partition moves on.

        The record is stored cut to ``quarantine_max_record_bytes`` with the SHA-256 of the whole, every text fit to
        its column. Should the row still be refused (a value no database takes), the record's place, hash, reason
        and error are stored without its contents. Only a database that does not answer makes the consumer wait."""
        stored = StoredRecord.of(record, self.quarantine_max_record_bytes)
        error = fit_text(error, 4000)
        if stored.cut:
            error = fit_text(f"{error} (record of {stored.size} bytes stored cut to {stored.kept} bytes)", 4000)
        try:
            inserted = await self._quarantine(record, envelope, stored, reason, error, attempts)
        except Exception as exc:
            if isinstance(exc, INFRASTRUCTURE_ERRORS) and not await self._database_answers():
                raise
            log.error(
                "record %s/%d@%d could not be quarantined with its contents (%s); storing its place and hash only",
                record.topic,
                record.partition,
                record.offset,
                type(exc).__name__,
            )
            bare = StoredRecord(None, [], None, stored.size, 0, stored.fingerprint)
            error = fit_text(f"{error} (contents not stored: {type(exc).__name__})", 4000)
            inserted = await self._quarantine(record, None, bare, reason, error, attempts)
        if not inserted:
            return Outcome("duplicate", reason)  # the very same record again (duplicate or replay)
        EVENTS_DEAD_LETTERED.labels(self.service, record.topic, reason).inc()
        log.error(
            "dead-lettered record %s/%d@%d (%s): %s",
            record.topic,
            record.partition,
            record.offset,
            reason,
            fit_text(error, 500),
        )
        return Outcome("quarantined", reason)

    async def _quarantine(
        self,
        record: ConsumerRecord[bytes, bytes],
        envelope: Envelope | None,
        stored: StoredRecord,
        reason: str,
        error: str,
        attempts: int,
    ) -> bool:
        """Insert the quarantine row and the dead-letter copy in one transaction; False if the row was there."""
        async with self.sessions() as session, session.begin():
            insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
            result = await session.execute(
                insert(quarantine)
                .values(
                    consumer=self.name,
                    topic=fit_text(record.topic, 249),
                    partition=record.partition,
                    offset=record.offset,
                    event_id=fit_text(envelope.id, 64) if envelope else None,
                    event_type=fit_text(envelope.type, 200) if envelope else None,
                    origin_province=fit_text(envelope.originprovince, 6) if envelope else None,
                    fingerprint=stored.fingerprint,
                    message_key=stored.key,
                    headers=encode_headers(stored.headers),
                    payload=stored.payload,
                    reason=fit_text(reason, 40),
                    error=error,
                    attempts=attempts,
                    status="quarantined",
                    quarantined_at=utcnow(),
                )
                .on_conflict_do_nothing(index_elements=[quarantine.c.consumer, quarantine.c.fingerprint])
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                return False
            dlq_headers = [
                *stored.headers,
                ("x-labornet-dlq-reason", reason.encode()),
                ("x-labornet-dlq-error", fit_text(error, 1000).encode()),
                ("x-labornet-dlq-consumer", self.group_id.encode()),
                ("x-labornet-dlq-origin", f"{record.topic}/{record.partition}@{record.offset}".encode()),
                ("x-labornet-dlq-record-sha256", stored.fingerprint.encode()),
                ("x-labornet-dlq-record-bytes", str(stored.size).encode()),
            ]
            await self.outbox.add_record(
                session,
                topic=self.deadletter_topic,
                # one dead-letter copy per quarantined record, whatever id (if any) the record claims
                event_id=str(uuid.uuid5(_DEAD_LETTER_IDS, f"{self.group_id}/{stored.fingerprint}")),
                event_type=fit_text(envelope.type, 200) if envelope else "unknown",
                key=stored.key,
                headers=dlq_headers,
                payload=stored.payload or b"",
            )
        self._quarantine_changed()
        return True

    async def _database_answers(self) -> bool:
        """Whether the database answers at all: tells an unreachable database from a row it refused."""
        try:
            async with self.read_sessions() as session:
                await session.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    # Operator actions ------------------------------------------------------------------------------

    async def replay(self, quarantine_id: int) -> Outcome:
        """Run a quarantined record again (after a fix or a trust-list update).

        Verification and idempotence apply as on first delivery. On success the row is marked ``replayed``;
        on failure it stays quarantined with the new error and :class:`EventRejected` is raised.
        """
        async with self.read_sessions() as session:
            row = (
                await session.execute(
                    select(quarantine).where(quarantine.c.id == quarantine_id, quarantine.c.consumer == self.name)
                )
            ).one_or_none()
        if row is None:
            raise LookupError(f"quarantined record {quarantine_id} not found for consumer {self.name}")
        if row.status != "quarantined":
            raise EventRejected("not-quarantined", f"record {quarantine_id} is already {row.status}")
        record = ConsumerRecord(
            topic=row.topic,
            partition=row.partition,
            offset=row.offset,
            timestamp=0,
            timestamp_type=0,
            key=row.message_key,
            value=row.payload,
            checksum=None,
            serialized_key_size=len(row.message_key or b""),
            serialized_value_size=len(row.payload or b""),
            headers=tuple(decode_headers(row.headers)),
        )
        try:
            try:
                envelope = Envelope.from_kafka(record.key, record.value, record.headers)
            except MalformedEvent as exc:
                raise EventRejected("malformed", str(exc)) from exc
            self._check(envelope)
            outcome = await self._apply(record, envelope)
        except EventRejected as exc:
            await self._mark(quarantine_id, "quarantined", str(exc), row.attempts + 1)
            raise
        except Exception as exc:
            await self._mark(quarantine_id, "quarantined", f"{type(exc).__name__}: {exc}", row.attempts + 1)
            raise EventRejected("handler-failed", f"replay of record {quarantine_id} failed: {exc}") from exc
        await self._mark(quarantine_id, "replayed", row.error, row.attempts + 1)
        EVENTS_CONSUMED.labels(self.service, row.topic, outcome.status).inc()
        return outcome

    async def discard(self, quarantine_id: int) -> None:
        """Give up on a quarantined record (it stays listed with status ``discarded``)."""
        async with self.read_sessions() as session:
            status = (
                await session.execute(
                    select(quarantine.c.status).where(
                        quarantine.c.id == quarantine_id, quarantine.c.consumer == self.name
                    )
                )
            ).scalar()
        if status is None:
            raise LookupError(f"quarantined record {quarantine_id} not found for consumer {self.name}")
        if status != "quarantined":
            raise EventRejected("not-quarantined", f"record {quarantine_id} is already {status}")
        await self._mark(quarantine_id, "discarded", None, None)

    async def _mark(self, quarantine_id: int, status: str, error: str | None, attempts: int | None) -> None:
        values: dict[str, Any] = {"status": status}
        if status != "quarantined":
            values["resolved_at"] = utcnow()
        if error is not None:
            values["error"] = error[:4000]
        if attempts is not None:
            values["attempts"] = attempts
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(quarantine)
                .where(quarantine.c.id == quarantine_id, quarantine.c.consumer == self.name)
                .values(**values)
            )
        self._quarantine_changed()

    # Metrics ---------------------------------------------------------------------------------------

    # How often the lag is measured against the broker (LABORNET_CONSUMER_LAG_INTERVAL_S), and when it last was.
    lag_interval_s: float = Settings.model_fields["consumer_lag_interval_s"].default
    _lag_asked_at: float = float("-inf")

    async def _update_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Every ``lag_interval_s``: lag = the broker's end offset − this consumer's position, per assigned partition.

        The end offsets are asked of the broker (not taken from the consumer's last fetch, which stops with the
        broker). When the broker does not answer within the interval (at most 5 s) nothing is pretended: the lag
        gauges keep their last measured value and ``labornet_consumer_lag_measured_timestamp_seconds`` says when
        that was."""
        now = asyncio.get_running_loop().time()
        if now - self._lag_asked_at < self.lag_interval_s:
            return
        self._lag_asked_at = now
        partitions = sorted(consumer.assignment())
        if not partitions:
            return
        try:
            async with asyncio.timeout(min(self.lag_interval_s, 5.0)):
                positions = {tp: await consumer.position(tp) for tp in partitions}
                # the end the last fetch of each partition reported: a position can only pass it if the log went
                # back (the embedded broker's end-offsets answer cannot tell: it counts a batch of records as one)
                fetched_ends = {tp: consumer.highwater(tp) for tp in partitions}
                beyond = sorted(tp for tp, end in fetched_ends.items() if end is not None and positions[tp] > end)
                if beyond:
                    await self._rewind_lost(consumer, beyond, positions, fetched_ends)
                    return
                # at rest, the doorbell of the process has just read them for every idle consumer (one request a
                # process every 400 ms): no request of this consumer's own (one per consumer every 5 s otherwise)
                heard = consumer.heard_ends(partitions) if isinstance(consumer, PacedConsumer) else None
                if heard is not None:
                    ends, read_at = heard
                else:
                    read_at = time.monotonic()
                    ends = await consumer.end_offsets(partitions)
        except Exception as exc:
            log.info("consumer %s: lag not measured, the broker did not give end offsets (%r)", self.group_id, exc)
            return
        for tp, end in ends.items():
            # the later of the two ends: the embedded broker's answer falls short by a batch's further records
            end = max(end, fetched_ends.get(tp) or 0)
            CONSUMER_LAG.labels(self.service, self.group_id, tp.topic, str(tp.partition)).set(
                max(end - positions[tp], 0)
            )
        CONSUMER_LAG_MEASURED.labels(self.service, self.group_id).set(time.time() - (time.monotonic() - read_at))

    async def _rewind_lost(
        self,
        consumer: AIOKafkaConsumer,
        partitions: Sequence[TopicPartition],
        positions: Mapping[TopicPartition, int],
        ends: Mapping[TopicPartition, int | None],
    ) -> None:
        """Read ``partitions`` again from their beginning: this consumer stands beyond their end, so the log it read
        is gone and a new, shorter one took its place.

        Apache Kafka answers a fetch beyond the end with OFFSET_OUT_OF_RANGE and the client resets to the earliest
        offset; the embedded broker answers it with no records, and the consumer would wait there — skipping every
        record the new log holds below that offset. Each lost log is noticed by the broker watch's cluster id too
        (:meth:`_follow_cluster`), but a position can come back after that rewind: committed to the new broker from
        the old log before the watch saw it, and handed to the member that joins next. Whatever is read twice the
        inbox drops."""
        LOG_LOSSES_SEEN.labels(self.service, self.group_id).inc(len(partitions))
        log.warning(
            "consumer %s: positions beyond the end of the log (%s); the log went back, reading these partitions "
            "from their beginning",
            self.group_id,
            ", ".join(f"{tp.topic}[{tp.partition}] at {positions[tp]}, end {ends[tp]}" for tp in partitions),
        )
        try:
            await consumer.seek_to_beginning(*partitions)
            # the group's offsets too, so that the member that holds them next does not start beyond the end again
            await consumer.commit({tp: OffsetAndMetadata(await consumer.position(tp), "") for tp in partitions})
        except (IllegalStateError, KafkaError) as exc:  # moved to another member meanwhile: the next check sees it
            log.info("consumer %s: rewinding postponed to the next check (%r)", self.group_id, exc)

    # How often the quarantine is counted when this process changed nothing in it (a replay or discard by another
    # replica), and when each database last was: the consumers of one service share its count.
    quarantine_count_interval_s: float = 30.0
    _quarantine_counted: ClassVar[weakref.WeakKeyDictionary[AsyncEngine, float]] = weakref.WeakKeyDictionary()

    def _quarantine_changed(self) -> None:
        """This process quarantined, replayed or discarded a record: count again at the next poll."""
        self._quarantine_counted.pop(self.sessions.kw["bind"], None)

    async def _count_quarantined(self) -> None:
        now = asyncio.get_running_loop().time()
        engine = self.sessions.kw["bind"]
        if now - self._quarantine_counted.get(engine, float("-inf")) < self.quarantine_count_interval_s:
            return
        self._quarantine_counted[engine] = now
        async with self.read_sessions() as session:
            pending = (
                await session.execute(
                    select(func.count()).select_from(quarantine).where(quarantine.c.status == "quarantined")
                )
            ).scalar_one()
        QUARANTINED.labels(self.service).set(pending)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

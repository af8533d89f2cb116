"""aiokafka clients configured from :class:`~labornet.shared.settings.Settings`."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import struct
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ClassVar, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.protocol.offset import OffsetRequest

from labornet.shared.settings import Settings

log = logging.getLogger(__name__)


def client_config(settings: Settings) -> dict[str, Any]:
    """Connection settings every Kafka client of a service shares."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
        "client_id": f"labornet-{settings.province}-{settings.service}",
    }
    if settings.kafka_sasl_mechanism:
        config.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password,
        )
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        config["ssl_context"] = create_ssl_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
            certfile=str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
            keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        )
    return config


Client = TypeVar("Client", AIOKafkaProducer, AIOKafkaConsumer, AIOKafkaAdminClient)


async def started(client: Client) -> Client:
    """``client`` started; one that fails to start (no broker yet) is closed before the error is raised, so that
    no half-open connection or background task is left behind.

    A start that is cancelled (the service stopping while its consumer joins its group) is left as it is, on
    purpose: closing a consumer then sends the group a LeaveGroup in the middle of its own join, after which the
    embedded broker lets no member join that group for minutes (measured: a member stable, a second one joining,
    the second's start cancelled and closed, the first stopped — the next member was not assigned within 45 s;
    left unclosed, the half-joined member expires with its session and the next one joins in 7 s). The process is
    stopping anyway; its connections end with it."""
    try:
        await client.start()
    except Exception:
        await closed(client)
        raise
    return client


async def closed(client: Client | None, timeout_s: float = 15.0) -> None:
    """Stop ``client`` (if any), ignoring the errors of a connection that is already gone, and giving up after
    ``timeout_s``: a producer's stop waits for its pending batches and a consumer's for its group and fetches,
    which a broker that vanished mid-request may leave waiting; the caller goes on with a new client either way."""
    if client is None:
        return
    try:
        async with asyncio.timeout(timeout_s):
            await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
    except TimeoutError:
        log.warning("kafka %s did not stop within %.0f s; left behind", type(client).__name__, timeout_s)
    except Exception as exc:
        log.debug("kafka %s stopped with %r", type(client).__name__, exc)


def make_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **client_config(settings),
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=0,
        request_timeout_ms=10_000,
        retry_backoff_ms=200,
    )


class PacedConsumer(AIOKafkaConsumer):  # type: ignore[misc]  # aiokafka ships no type information
    """A consumer whose fetching follows the traffic: short waits while records come, few fetches once they stop.

    A broker that does not answer a waiting fetch as soon as a record arrives (the embedded broker) delivers a new
    record after about half the fetch wait, so a short wait is what keeps replication fast. While nothing comes,
    every consumer would then ask the broker a hundred times a second. :meth:`pace` is told after every poll
    whether records came: ``idle_after_s`` after the last one the consumer turns idle — the broker waits
    ``idle_wait_ms`` for records, and a fetch that brought nothing is followed by a pause of ``idle_fetch_every_ms``
    — and the first record back brings the short wait without pause back.

    During the pause the process's :class:`Doorbell` asks the broker every ``idle_pause_ms`` for the end offsets of
    every partition its idle consumers hold, in one request, and ends the pause of the consumers that have records
    to read (a partition ends beyond the consumer's position) or a position to reset (a new log): a record that
    arrives during a quiet spell is read within about ``idle_pause_ms``, while an idle consumer fetches only every
    ``idle_fetch_heard_every_ms`` — every ``idle_fetch_every_ms`` when the doorbell did not read all its partitions
    (with ``idle_fetch_every_ms`` at most ``idle_pause_ms``, or ``idle_pause_ms`` 0, there is no doorbell: the
    consumer pauses the longer of the two).

    The embedded broker spends CPU on every partition for as long as a fetch waits on it (a consumer of 24
    partitions waiting 500 ms at a time keeps about 1 % of a core busy there), and aiokafka about 0.7 ms of Python
    on a fetch of 24 empty partitions, so an idle fetch waits as little as it can (``idle_wait_ms`` 1: with 0 the
    embedded broker never returns records) and one end-offsets request per process replaces the fetches of all its
    consumers. Apache Kafka answers a waiting fetch on arrival: there a long wait and no pause cost no latency.
    """

    def __init__(
        self,
        *,
        busy_wait_ms: int,
        idle_wait_ms: int,
        idle_pause_ms: int,
        idle_after_s: float,
        idle_fetch_every_ms: int = 0,
        idle_fetch_heard_every_ms: int = 0,
        **config: Any,
    ) -> None:
        super().__init__(fetch_max_wait_ms=busy_wait_ms, **config)
        self.busy_wait_ms = busy_wait_ms
        self.idle_wait_ms = idle_wait_ms
        self.idle_pause_ms = idle_pause_ms
        self.idle_fetch_every_ms = max(idle_fetch_every_ms, idle_pause_ms)
        self.idle_fetch_heard_every_ms = max(idle_fetch_heard_every_ms, self.idle_fetch_every_ms)
        self.idle_after_s = idle_after_s
        self._last_records_at = time.monotonic()
        self._pause_s = 0.0
        self._ring = asyncio.Event()
        self.pausing = False  # between two fetches, waiting for the pause to end or the doorbell to ring
        self._heard: dict[TopicPartition, int] = {}  # the end offsets the doorbell last read, this one's among them
        self._heard_at = float("-inf")  # when (time.monotonic())

    async def start(self) -> None:
        await super().start()
        fetch = self._fetcher._proc_fetch_request

        async def fetch_then_pause(*args: Any) -> bool:
            """One fetch request; while the consumer is idle and it brought nothing, the pause before the next."""
            has_records: bool = await fetch(*args)
            if not has_records and self._pause_s:
                self._ring.clear()
                self.pausing = True
                try:
                    await self._pause()
                except asyncio.CancelledError:  # close() or a new assignment, as in the fetch
                    pass
                finally:
                    self.pausing = False
            return has_records

        # the fetcher's routine sends the next request to a broker only once the previous one has returned
        self._fetcher._proc_fetch_request = fetch_then_pause
        self._fetcher.close = _closing_surely(self._fetcher)
        if 0 < self.idle_pause_ms < self.idle_fetch_every_ms:
            Doorbell.of(self.idle_pause_ms / 1000).join(self)

    async def stop(self) -> None:
        Doorbell.leave(self)
        await super().stop()

    async def _pause(self) -> None:
        """Wait until the doorbell rings or the pause ends. The pause is ``idle_fetch_every_ms``, and goes on, a
        period at a time up to ``idle_fetch_heard_every_ms`` in all, while the doorbell heard every partition this
        consumer holds within the period: it would have rung had one of them grown, so a fetch would bring nothing
        (an idle fetch costs the broker and this process more than the doorbell's share of a consumer). A partition
        the doorbell did not hear (no leader known, an error in its answer, the doorbell's request failing) ends the
        pause after a period, as without it."""
        period = self._pause_s
        began = time.monotonic()
        while True:
            period_began = time.monotonic()
            try:
                await asyncio.wait_for(self._ring.wait(), period)
                return
            except TimeoutError:
                pass
            now = time.monotonic()
            if now - began + period > self.idle_fetch_heard_every_ms / 1000 or not self._heard_all(period_began):
                return

    def _heard_all(self, since: float) -> bool:
        """Whether the doorbell read the end of every partition this consumer holds at ``since`` or later."""
        heard = self._heard
        return self._heard_at >= since and all(tp in heard for tp in self.assignment())

    def ring(self) -> None:
        """End the pause: records came (the doorbell saw a partition grow)."""
        self._ring.set()

    def expect(self) -> None:
        """Records are expected soon (the process just sent a question whose answer comes to this consumer): fetch
        at the busy pace from now on, as if records had just come, and end the pause. Without records the idle
        pacing comes back ``idle_after_s`` later, as after any records."""
        self.pace(had_records=True)
        self._ring.set()

    def heard(self, ends: dict[TopicPartition, int], at: float) -> None:
        """The end offsets the doorbell read at ``at`` (time.monotonic()) for the idle consumers of the process,
        this one's partitions among them: one answer shared by all, picked from only when a lag is measured."""
        self._heard, self._heard_at = ends, at

    def heard_ends(
        self, partitions: Iterable[TopicPartition], max_age_s: float = 1.0
    ) -> tuple[dict[TopicPartition, int], float] | None:
        """The end offsets of ``partitions`` as the doorbell read them at most ``max_age_s`` ago, and when (as
        time.monotonic()), while this consumer is idle: it then measures its lag from them instead of asking the
        broker again. None when the consumer is busy (its lag is what matters then, read afresh), or the doorbell
        did not read every one of ``partitions`` that recently."""
        wanted = list(partitions)
        heard = self._heard
        if not self.idle or time.monotonic() - self._heard_at > max_age_s or not wanted:
            return None
        if any(tp not in heard for tp in wanted):
            return None
        return {tp: heard[tp] for tp in wanted}, self._heard_at

    @property
    def idle(self) -> bool:
        """Whether the idle pacing is in force."""
        return self._pause_s > 0 or self.fetch_wait_ms != self.busy_wait_ms

    @property
    def fetch_wait_ms(self) -> int:
        fetcher = getattr(self, "_fetcher", None)  # created by start()
        return int(fetcher._fetch_max_wait_ms) if fetcher is not None else self.busy_wait_ms

    @property
    def fetch_pause_ms(self) -> int:
        return round(self._pause_s * 1000)

    def pace(self, had_records: bool) -> None:
        """Choose the pacing of the next fetch requests from whether the last poll returned records."""
        fetcher = getattr(self, "_fetcher", None)
        if fetcher is None:
            return
        now = time.monotonic()
        if had_records:
            self._last_records_at = now
            fetcher._fetch_max_wait_ms = self.busy_wait_ms
            self._pause_s = 0.0
        elif now - self._last_records_at >= self.idle_after_s:
            fetcher._fetch_max_wait_ms = self.idle_wait_ms
            self._pause_s = self.idle_fetch_every_ms / 1000


def _closing_surely(fetcher: Any, ask_every_s: float = 0.5) -> Callable[[], Awaitable[None]]:
    """The fetcher's ``close``, asking its routine to end again until it has.

    aiokafka's fetch routine waits for its in-flight requests to end whenever the consumer loses its assignment,
    and ignores a cancellation that arrives during that wait. A consumer stopped at that moment — the group
    coordinator's own close revokes the assignment just before the fetcher is closed, and a broker that lost its
    log makes the group rebalance at the same time — would wait for its routine forever, and the service's inbox
    with it: nothing more is read from the bus, with no error anywhere."""
    close = fetcher.close

    async def close_surely() -> None:
        closing = asyncio.ensure_future(close())
        while True:
            done, _ = await asyncio.wait({closing}, timeout=ask_every_s)
            if done:
                return closing.result()  # type: ignore[no-any-return]
            log.info("kafka consumer: the fetch routine ignored its cancellation; asking again")
            fetcher._fetch_task.cancel()

    return close_surely


class Doorbell:
    """Rings the idle consumers of a process that have records to read: one end-offsets request (ListOffsets) per
    broker every ``interval_s`` for every partition they hold, instead of a fetch per consumer. Runs while consumers
    are joined; a request that fails changes nothing (the consumers' own pauses end in any case)."""

    _rings: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, Doorbell]]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.consumers: weakref.WeakSet[PacedConsumer] = weakref.WeakSet()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, interval_s: float) -> Doorbell:
        """The doorbell of this event loop that rings every ``interval_s``."""
        bells = cls._rings.setdefault(asyncio.get_running_loop(), {})
        return bells.setdefault(interval_s, cls(interval_s))

    @classmethod
    def leave(cls, consumer: PacedConsumer) -> None:
        with contextlib.suppress(RuntimeError):  # no running loop: no doorbell either
            for bell in cls._rings.get(asyncio.get_running_loop(), {}).values():
                bell.consumers.discard(consumer)

    def join(self, consumer: PacedConsumer) -> None:
        self.consumers.add(consumer)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"kafka-doorbell-{self.interval_s:g}s")

    async def _run(self) -> None:
        while self.consumers:
            await asyncio.sleep(self.interval_s)
            try:
                await self.ring_once()
            except Exception as exc:
                log.debug("doorbell: end offsets not read (%r)", exc)

    async def ring_once(self) -> int:
        """Ask for the end offsets of the pausing consumers' partitions; ring those behind; return how many."""
        pausing = [consumer for consumer in list(self.consumers) if consumer.pausing and not consumer._closed]
        by_cluster: dict[tuple[str, ...], list[PacedConsumer]] = {}
        for consumer in pausing:
            by_cluster.setdefault(tuple(sorted(consumer._client._bootstrap_servers)), []).append(consumer)
        rung = 0
        for consumers in by_cluster.values():
            held = {consumer: consumer.assignment() for consumer in consumers}
            asked_at = time.monotonic()
            ends = await end_offsets(consumers[0]._client, set().union(*held.values()))
            for consumer, partitions in held.items():
                consumer.heard(ends, asked_at)
                if _grew(consumer, partitions, ends):
                    consumer.ring()
                    rung += 1
        return rung


def _grew(consumer: PacedConsumer, partitions: Iterable[TopicPartition], ends: dict[TopicPartition, int]) -> bool:
    """Whether ``consumer`` has records to read: a partition ends beyond its position, or its position is to be
    reset (a new log, a seek), which the fetcher does only after the pause."""
    subscription = consumer._subscription.subscription
    assignment = subscription.assignment if subscription is not None else None
    if assignment is None:
        return False
    for tp in partitions:
        state = assignment.state_value(tp)
        if state is None:  # no longer assigned: the rebalance starts a new fetch anyway
            continue
        if not state.has_valid_position or ends.get(tp, 0) > state.position:
            return True
    return False


async def end_offsets(client: AIOKafkaClient, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
    """The end offset of each of ``partitions`` whose leader ``client`` knows, one request per leader.

    The doorbell asks this of the same partitions every 400 ms: each leader's request is encoded once for its set
    of partitions (:class:`EndOffsetsRequest`) and its answer read straight from the bytes, where aiokafka's
    generic structures spent about two thirds of a ring's CPU building and reading them."""
    by_leader: dict[int, set[TopicPartition]] = {}
    for tp in partitions:
        leader = client.cluster.leader_for_partition(tp)
        if leader is not None and leader >= 0:
            by_leader.setdefault(leader, set()).add(tp)
    ends: dict[TopicPartition, int] = {}
    for leader, held in by_leader.items():
        ends.update(await client.send(leader, EndOffsetsRequest.of(frozenset(held))))
    return ends


class EndOffsetsRequest:
    """A ListOffsets request for the latest offset of a fixed set of partitions, as aiokafka's connection sends a
    request: :meth:`prepare` picks the version the broker speaks and gives an object that encodes the body once
    and whose ``RESPONSE_TYPE.decode`` reads the answer into ``{partition: end offset}`` (partitions answered with
    an error left out). Kept per set of partitions, a few sets at most (one per leader and doorbell)."""

    API_KEY = 2
    _kept: ClassVar[dict[frozenset[TopicPartition], EndOffsetsRequest]] = {}

    def __init__(self, partitions: frozenset[TopicPartition]) -> None:
        topics: dict[str, list[tuple[int, int]]] = {}
        for tp in sorted(partitions):
            topics.setdefault(tp.topic, []).append((tp.partition, -1))  # -1: the end
        self._request = OffsetRequest(-1, 0, list(topics.items()))
        self._versions: dict[int, _PreparedEndOffsets] = {}

    @classmethod
    def of(cls, partitions: frozenset[TopicPartition]) -> EndOffsetsRequest:
        request = cls._kept.get(partitions)
        if request is None:
            if len(cls._kept) >= 16:  # assignments changed: the old sets are not asked again
                cls._kept.clear()
            request = cls._kept[partitions] = cls(partitions)
        return request

    def prepare(self, versions: dict[int, tuple[int, int]]) -> _PreparedEndOffsets:
        struct = self._request.prepare(versions)
        prepared = self._versions.get(struct.API_VERSION)
        if prepared is None:
            prepared = self._versions[struct.API_VERSION] = _PreparedEndOffsets(struct)
        return prepared


class _PreparedEndOffsets:
    """One version of an :class:`EndOffsetsRequest`: the body encoded once, the answer read with ``struct``."""

    def __init__(self, request: Any) -> None:
        self._request = request
        self._body: bytes = request.encode()
        self.API_KEY = request.API_KEY
        self.API_VERSION = request.API_VERSION
        self.RESPONSE_TYPE = self

    def build_request_header(self, correlation_id: int, client_id: str) -> Any:
        return self._request.build_request_header(correlation_id=correlation_id, client_id=client_id)

    def parse_response_header(self, read_buffer: Any) -> Any:
        return self._request.parse_response_header(read_buffer)

    def encode(self) -> bytes:
        return self._body

    def decode(self, read_buffer: io.BytesIO) -> dict[TopicPartition, int]:
        if not 1 <= self.API_VERSION <= 3:  # v0 (offsets as a list), v4+ (not sent by aiokafka): its own reading
            answer = self._request.RESPONSE_TYPE.decode(read_buffer)
            return {
                TopicPartition(topic, partition): (rest[-1][0] if self.API_VERSION == 0 else rest[1])
                for topic, answers in answer.topics
                for partition, error, *rest in answers
                if error == 0 and (self.API_VERSION != 0 or rest[-1])
            }
        data, at = read_buffer.getbuffer(), read_buffer.tell()
        if self.API_VERSION >= 2:
            at += 4  # throttle_time_ms
        ends: dict[TopicPartition, int] = {}
        (topics,) = _INT32.unpack_from(data, at)
        at += 4
        for _ in range(topics):
            (length,) = _INT16.unpack_from(data, at)
            topic = bytes(data[at + 2 : at + 2 + length]).decode()
            at += 2 + length
            (partitions,) = _INT32.unpack_from(data, at)
            at += 4
            for _ in range(partitions):
                partition, error, _timestamp, offset = _PARTITION_END.unpack_from(data, at)
                at += _PARTITION_END.size
                if error == 0:
                    ends[TopicPartition(topic, partition)] = offset
        return ends


_INT16, _INT32 = struct.Struct(">h"), struct.Struct(">i")
# a partition's answer, versions 1-3: partition, error code, timestamp, offset
_PARTITION_END = struct.Struct(">ihqq")


def make_consumer(settings: Settings, group_id: str) -> PacedConsumer:
    consumer = PacedConsumer(
        busy_wait_ms=settings.kafka_fetch_max_wait_ms,
        idle_wait_ms=settings.kafka_fetch_idle_wait_ms,
        idle_pause_ms=settings.kafka_fetch_idle_pause_ms,
        idle_fetch_every_ms=settings.kafka_fetch_idle_fetch_every_ms,
        idle_fetch_heard_every_ms=settings.kafka_fetch_idle_fetch_heard_every_ms,
        idle_after_s=settings.kafka_fetch_idle_after_s,
        **client_config(settings),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        max_poll_records=500,
        # the fetch routine wakes on a fetch's answer (an idle consumer's pause ends it too), a poll, a seek, a
        # rebalance or a resume; this is only its fallback (aiokafka's 200 ms made every consumer at rest wake five
        # times a second: 35 timers a second of a node's 108; 1 s still made seven wake-ups a second a node)
        consumer_timeout_ms=5000,
        isolation_level="read_uncommitted",
        # consumers subscribe by pattern: a metadata refresh is how they see a new partition or a recreated topic.
        # The broker watch asks for the metadata every few seconds and makes the consumers of its process refresh
        # at once when the topics change (refresh_metadata); this interval is the fallback
        metadata_max_age_ms=settings.kafka_metadata_max_age_ms,
    )
    _consumers.add(consumer)
    return consumer


# every consumer of this process, for refresh_metadata
_consumers: weakref.WeakSet[PacedConsumer] = weakref.WeakSet()


def refresh_metadata(bootstrap_servers: Iterable[str]) -> int:
    """Make every started consumer of this process that talks to ``bootstrap_servers`` ask for fresh metadata now;
    return how many were asked. The broker watch calls it when the topics or the cluster changed."""
    servers = sorted(bootstrap_servers)
    asked = 0
    for consumer in list(_consumers):
        running = consumer._fetcher is not None and not consumer._closed
        if not running or sorted(consumer._client._bootstrap_servers) != servers:
            continue
        consumer._client.force_metadata_update()
        asked += 1
    return asked


async def create_topics(admin: AIOKafkaAdminClient, names: list[str], partitions: int, replication: int) -> None:
    """Create ``names`` with the platform's partition count; one created meanwhile by another process is fine."""
    try:
        await admin.create_topics([NewTopic(name, partitions, replication) for name in names])
    except TopicAlreadyExistsError:
        log.info("topics created concurrently by another process", extra={"topics": names})


async def ensure_topics(settings: Settings, names: Iterable[str]) -> list[str]:
    """Create missing topics (the embedded broker and dev setups); return the names created."""
    admin = AIOKafkaAdminClient(**client_config(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = sorted(set(names) - existing)
        if missing:
            await create_topics(admin, missing, settings.kafka_topic_partitions, settings.kafka_topic_replication)
        return missing
    finally:
        await admin.close()

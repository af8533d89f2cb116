"""The service's view of the broker: is it answering, is it the log we published to, are the topics right.

Every few seconds (``LABORNET_BROKER_CHECK_INTERVAL_S``) a :class:`BrokerWatch` asks the broker for its cluster
id, its topics and, for the partitions this service's relay has published to, their end offsets. From that it
knows:

* **how long the broker has been silent** (``silent_for``), which ``/readyz`` turns into 503 — a broker frozen or
  gone is not hidden behind the last known consumer assignment;
* **whether the log went back in time**: the cluster id changed (a rebuilt cluster, or the embedded broker, which
  keeps memory only and gets a new id at every start), a topic this service published to vanished, or a
  partition now ends below where it ended at the last check. Then the relay republishes what the log may have
  lost from the retained outbox (:meth:`~labornet.shared.outbox.OutboxRelay.republish`). The cluster id is kept in
  the service's database (``bus_state``), so a node that was down while the log was lost notices it on return;
* **whether the topics are the platform's**: missing topics of this node are created with the configured
  partition count (when the platform creates topics); a topic with another partition count is reported (metric
  and log), never silently used.

Consumers subscribe by pattern (see :mod:`labornet.shared.inbox`), so their metadata requests never create a
topic. The watch is the process's only frequent metadata poller: one request of every topic per check (a hundred
topics in a federation of nine) answers the cluster id, the topics and their partition counts, and the watches of
one process (a node's four services under ``labornet serve-node``) share an answer younger than half their interval
instead of asking again. When one of them
changed, it makes the consumers of its process refresh their metadata at once
(:func:`~labornet.shared.kafka.refresh_metadata`), so they pick up new partitions and recreated topics within a
check, while their own refresh (``LABORNET_KAFKA_METADATA_MAX_AGE_MS``) is minutes apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import Counter, Gauge
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from labornet.shared.db import bus_state, readonly_sessionmaker, utcnow
from labornet.shared.kafka import closed, create_topics, end_offsets, refresh_metadata, started

log = logging.getLogger(__name__)

CLUSTER_KEY = "kafka.cluster_id"

BROKER_SILENT = Gauge(
    "labornet_broker_silent_seconds", "Seconds since the broker last answered this service", ["service"]
)
LOG_LOSSES = Counter(
    "labornet_broker_log_losses_total",
    "Times this service found the broker's log gone back in time, by sign (cluster, topic, offsets)",
    ["service", "sign"],
)
LOSS_PENDING = Gauge(
    "labornet_broker_log_loss_pending",
    "1 while a lost log this service found is not yet published again (the try failed; the next check tries again)",
    ["service"],
)
PARTITION_MISMATCH = Gauge(
    "labornet_topic_partition_mismatch",
    "1 when a topic of this node has another partition count than configured",
    ["service", "topic"],
)
LOSS_SIGNS = ("cluster", "topic", "offsets")


@dataclass(frozen=True)
class BrokerView:
    """What the broker answered to a metadata request of every topic, and when."""

    answered_at: float  # time.monotonic()
    cluster_id: str
    counts: dict[str, int]  # partitions per topic
    metadata: Any  # the answer itself (aiokafka's MetadataResponse): the leaders of every partition


# the last answer per event loop and broker, shared by the watches of one process
_VIEWS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, ...], BrokerView]] = (
    weakref.WeakKeyDictionary()
)


class BrokerWatch:
    """Polls the broker for one service; see the module documentation."""

    def __init__(
        self,
        *,
        settings_client: dict[str, object],
        service: str,
        topics: Sequence[str],
        partitions: int,
        replication: int,
        create: bool,
        sessions: async_sessionmaker[AsyncSession],
        published: Callable[[], Collection[TopicPartition]],
        on_log_lost: Callable[[str], Awaitable[object]],
        interval_s: float = 5.0,
        offsets_interval_s: float = 30.0,
        timeout_s: float = 10.0,
    ) -> None:
        self.client_config = settings_client
        self.service = service
        self.topics = sorted(topics)
        self.partitions = partitions
        self.replication = replication
        self.create = create
        self.sessions = sessions
        self.published = published
        self.on_log_lost = on_log_lost
        self.interval_s = interval_s
        self.offsets_interval_s = offsets_interval_s
        self._offsets_checked = 0.0
        self.timeout_s = timeout_s
        self.cluster_id: str | None = None  # the broker's, as the last check saw it (the consumers follow it)
        self._recorded_cluster: str | None = None  # the one recorded in bus_state, its lost log published again
        self.last_error: str | None = None
        self.mismatched: dict[str, int] = {}
        self._started = time.monotonic()
        self._last_ok: float | None = None
        self._seen_topics: set[str] = set()
        self._ends: dict[TopicPartition, int] = {}
        self._layout: tuple[str, tuple[tuple[str, int], ...]] | None = None
        self._lost_counted: tuple[str, str] | None = None  # the last loss counted (see _log_lost)
        self._admin: AIOKafkaAdminClient | None = None
        self._stopping = asyncio.Event()
        self.checked = asyncio.Event()  # set after each completed check (tests wait on it)
        BROKER_SILENT.labels(service).set(0)
        LOSS_PENDING.labels(service).set(0)
        for sign in LOSS_SIGNS:
            LOG_LOSSES.labels(service, sign)
        for topic in self.topics:
            PARTITION_MISMATCH.labels(service, topic).set(0)

    def silent_for(self) -> float:
        """Seconds since the broker last answered (since start-up if it never has)."""
        return time.monotonic() - (self._last_ok if self._last_ok is not None else self._started)

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                # the answer another watch of the process got within this check's interval serves: one metadata
                # request of every topic (about 2 ms of this process's CPU and 0.7 ms of the embedded broker's for
                # the nine provinces' 108 topics) a process per interval, where half the interval let two through
                await asyncio.wait_for(self.check(shared_within_s=self.interval_s * 0.9), self.timeout_s)
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                log.warning("broker check failed: %s", self.last_error)
                await self._close()
            BROKER_SILENT.labels(self.service).set(self.silent_for())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval_s)

    async def stop(self) -> None:
        self._stopping.set()
        await self._close()

    async def check(self, shared_within_s: float = 0.0) -> None:
        """Ask the broker and act on its answer; with ``shared_within_s``, an answer another watch of this process
        got from the same broker at most that long ago serves instead (a node's four services share one loop)."""
        cluster = tuple(sorted(self.client_config["bootstrap_servers"]))  # type: ignore[call-overload]
        views = _VIEWS.setdefault(asyncio.get_running_loop(), {})
        view = views.get(cluster)
        if view is None or time.monotonic() - view.answered_at > shared_within_s:
            admin = await self._admin_client()
            # one metadata request of every topic says it all: the cluster id, the topics and their partitions
            metadata = await admin._get_cluster_metadata(topics=None)
            view = views[cluster] = BrokerView(
                time.monotonic(),
                str(metadata.cluster_id),
                # each topic is (error_code, topic, [is_internal,] partitions): read as it is, without to_object()
                {topic[1]: len(topic[-1] or ()) for topic in metadata.topics},
                metadata,
            )
        cluster_id, counts = view.cluster_id, dict(view.counts)
        existing = set(counts)
        self._last_ok = max(view.answered_at, self._last_ok or 0.0)
        await self._check_cluster(cluster_id)
        vanished = sorted(self._seen_topics - existing)
        mine = {tp.topic for tp in self.published()}
        if vanished and set(vanished) & mine:
            await self._log_lost("topic", f"topics {vanished} vanished from the broker")
        self._seen_topics = existing & set(self.topics)
        missing = sorted(set(self.topics) - existing)
        if missing and self.create:
            await create_topics(await self._admin_client(), missing, self.partitions, self.replication)
            counts |= dict.fromkeys(missing, self.partitions)
        self._check_partitions(counts)
        self._follow_layout(cluster_id, counts)
        await self._check_offsets(set(counts), view)
        self.checked.set()

    def _follow_layout(self, cluster_id: str, counts: dict[str, int]) -> None:
        """Tell the consumers of this process to refresh their metadata when the cluster, this service's topics or
        their partitions changed since the last check (and after the first): consumers refresh on their own only
        every ``LABORNET_KAFKA_METADATA_MAX_AGE_MS``, so this is how they see a new partition or a recreated topic
        within a check."""
        layout = (cluster_id, tuple(sorted((topic, counts[topic]) for topic in self.topics if topic in counts)))
        if layout == self._layout:
            return
        self._layout = layout
        asked = refresh_metadata(self.client_config["bootstrap_servers"])  # type: ignore[arg-type]
        log.info("broker layout changed; %d consumers asked to refresh their metadata", asked)

    async def _check_cluster(self, cluster_id: str) -> None:
        """Follow the broker's cluster: ``cluster_id`` at once (the consumers read a new log from its beginning as
        soon as they see it), the cluster recorded in the database once what its log lost was published again."""
        previous = self._recorded_cluster
        if previous is None:
            async with readonly_sessionmaker(self.sessions.kw["bind"])() as session:
                previous = (
                    await session.execute(select(bus_state.c.value).where(bus_state.c.name == CLUSTER_KEY))
                ).scalar()
        self.cluster_id = cluster_id
        if previous == cluster_id:
            self._recorded_cluster = cluster_id
            return
        if previous is not None:  # before the new cluster is recorded (see _log_lost)
            await self._log_lost("cluster", f"the broker's cluster id changed from {previous} to {cluster_id}")
        async with self.sessions() as session, session.begin():
            insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
            statement = insert(bus_state).values(name=CLUSTER_KEY, value=cluster_id, updated_at=utcnow())
            await session.execute(
                statement.on_conflict_do_update(
                    index_elements=[bus_state.c.name], set_={"value": cluster_id, "updated_at": utcnow()}
                )
            )
        self._recorded_cluster = cluster_id
        self._ends = {}

    async def _log_lost(self, sign: str, reason: str) -> None:
        """Publish again what the log may have lost; counted once per loss, however many tries it takes. The caller
        records what it saw (the cluster, the topics, the end offsets) only after this returned, so a try that fails
        (the database unreachable, the check timed out) is made again at the next check instead of never."""
        if self._lost_counted != (sign, reason):
            LOG_LOSSES.labels(self.service, sign).inc()
            self._lost_counted = (sign, reason)
        LOSS_PENDING.labels(self.service).set(1)
        await self.on_log_lost(reason)
        LOSS_PENDING.labels(self.service).set(0)

    def _check_partitions(self, counts: dict[str, int]) -> None:
        mismatched: dict[str, int] = {}
        for name in self.topics:
            count = counts.get(name, 0)
            if count and count != self.partitions:
                mismatched[name] = count
            if name in counts and (name in mismatched) != (name in self.mismatched):
                PARTITION_MISMATCH.labels(self.service, name).set(1 if name in mismatched else 0)
        for name, count in mismatched.items():
            if self.mismatched.get(name) != count:
                log.warning(
                    "topic %s has %d partitions; this platform is configured for %d", name, count, self.partitions
                )
        self.mismatched = mismatched

    async def _check_offsets(self, existing: set[str], view: BrokerView) -> None:
        """A partition's end offset never goes down while the broker keeps its log: compare with the last check.

        The partitions watched are those the relay published to. (The offsets the broker confirms to a producer are
        not compared directly: the embedded broker's confirmations run ahead of its end offsets.) They are read
        through the watch's admin client, which learns the partitions' leaders from the metadata answer of this
        check: that client asks for the metadata of every topic or of none, never of named ones, so it never
        creates a topic again on a broker that came back without them, which a consumer kept between checks would
        (one was started for every check before: 4.7 ms of CPU, against 0.17 ms for the request alone)."""
        now = time.monotonic()
        if now - self._offsets_checked < self.offsets_interval_s:
            return
        watched = sorted({tp for tp in (*self.published(), *self._ends) if tp.topic in existing})
        if not watched:
            return
        self._offsets_checked = now
        admin = await self._admin_client()
        admin._client.cluster.update_metadata(view.metadata)
        ends = await end_offsets(admin._client, watched)
        behind = sorted(f"{tp.topic}[{tp.partition}]" for tp, end in ends.items() if end < self._ends.get(tp, 0))
        if behind:
            await self._log_lost("offsets", f"partitions {behind} end below where they ended at the last check")
        # a partition not answered this time (its leader unknown or moving) keeps the end it had
        self._ends = {tp: end for tp, end in {**self._ends, **ends}.items() if tp.topic in existing}

    async def _admin_client(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            self._admin = await started(AIOKafkaAdminClient(**self.client_config))
        return self._admin

    async def _close(self) -> None:
        admin, self._admin = self._admin, None
        await closed(admin)

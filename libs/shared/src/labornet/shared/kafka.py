"""aiokafka clients configured from :class:`~labornet.shared.settings.Settings`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Iterable
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

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
    no half-open connection or background task is left behind."""
    try:
        await client.start()
    except Exception:
        await closed(client)
        raise
    return client


async def closed(client: Client | None) -> None:
    """Stop ``client`` (if any), ignoring the errors of a connection that is already gone."""
    if client is not None:
        with contextlib.suppress(Exception):
            await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())


def make_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **client_config(settings),
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=2,
        request_timeout_ms=10_000,
        retry_backoff_ms=200,
    )


class PacedConsumer(AIOKafkaConsumer):  # type: ignore[misc]  # aiokafka ships no type information
    """A consumer whose fetching follows the traffic: short waits while records come, a pause between fetches once
    they stop.

    A broker that does not answer a waiting fetch as soon as a record arrives (the embedded broker) delivers a new
    record after about half the fetch wait, so a short wait is what keeps replication fast. While nothing comes,
    every consumer would then ask the broker a hundred times a second. :meth:`pace` is told after every poll
    whether records came: ``idle_after_s`` after the last one the fetches change to the idle pacing — the broker
    waits ``idle_wait_ms`` for records, then the consumer pauses ``idle_pause_ms`` before it asks again — and the
    first record back brings the short wait without pause back. A record that arrives during a quiet spell is read
    within ``idle_wait_ms + idle_pause_ms``.

    The embedded broker spends CPU on every partition for as long as a fetch waits on it (a consumer of 24
    partitions waiting 500 ms at a time keeps about 1 % of a core busy there), so an idle fetch should wait as
    little as it can (``idle_wait_ms`` 1: with 0 it never returns records) and the pause does the pacing. Apache
    Kafka answers a waiting fetch on arrival: there a long wait and no pause cost no latency at all.
    """

    def __init__(
        self, *, busy_wait_ms: int, idle_wait_ms: int, idle_pause_ms: int, idle_after_s: float, **config: Any
    ) -> None:
        super().__init__(fetch_max_wait_ms=busy_wait_ms, **config)
        self.busy_wait_ms = busy_wait_ms
        self.idle_wait_ms = idle_wait_ms
        self.idle_pause_ms = idle_pause_ms
        self.idle_after_s = idle_after_s
        self._last_records_at = time.monotonic()
        self._pause_s = 0.0

    async def start(self) -> None:
        await super().start()
        fetch = self._fetcher._proc_fetch_request

        async def fetch_then_pause(*args: Any) -> bool:
            """One fetch request; while the consumer is idle and it brought nothing, the pause before the next."""
            has_records: bool = await fetch(*args)
            if not has_records and self._pause_s:
                with contextlib.suppress(asyncio.CancelledError):  # close() or a new assignment, as in the fetch
                    await asyncio.sleep(self._pause_s)
            return has_records

        # the fetcher's routine sends the next request to a broker only once the previous one has returned
        self._fetcher._proc_fetch_request = fetch_then_pause

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
            self._pause_s = self.idle_pause_ms / 1000


def make_consumer(settings: Settings, group_id: str) -> PacedConsumer:
    consumer = PacedConsumer(
        busy_wait_ms=settings.kafka_fetch_max_wait_ms,
        idle_wait_ms=settings.kafka_fetch_idle_wait_ms,
        idle_pause_ms=settings.kafka_fetch_idle_pause_ms,
        idle_after_s=settings.kafka_fetch_idle_after_s,
        **client_config(settings),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        max_poll_records=500,
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

"""aiokafka clients configured from :class:`~labornet.shared.settings.Settings`."""

from __future__ import annotations

import contextlib
import logging
import time
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
    """A consumer whose fetch wait follows the traffic: short while records come, long once they stop.

    A broker that does not answer a waiting fetch as soon as a record arrives (the embedded broker) delivers a new
    record after about half the fetch wait, so a short wait is what keeps replication fast — but every consumer
    then asks the broker a hundred times a second while nothing happens, and an idle federation of nine nodes
    keeps both cores busy. :meth:`pace` is told after every poll whether records came: ``idle_after_s`` after the
    last one the wait grows to ``idle_wait_ms``; the first record back brings the short wait back. Apache Kafka
    answers a waiting fetch on arrival, so there the longer wait costs no latency at all.
    """

    def __init__(self, *, busy_wait_ms: int, idle_wait_ms: int, idle_after_s: float, **config: Any) -> None:
        super().__init__(fetch_max_wait_ms=busy_wait_ms, **config)
        self.busy_wait_ms = busy_wait_ms
        self.idle_wait_ms = max(idle_wait_ms, busy_wait_ms)
        self.idle_after_s = idle_after_s
        self._last_records_at = time.monotonic()

    @property
    def fetch_wait_ms(self) -> int:
        fetcher = getattr(self, "_fetcher", None)  # created by start()
        return int(fetcher._fetch_max_wait_ms) if fetcher is not None else self.busy_wait_ms

    def pace(self, had_records: bool) -> None:
        """Choose the wait of the next fetch requests from whether the last poll returned records."""
        fetcher = getattr(self, "_fetcher", None)
        if fetcher is None:
            return
        now = time.monotonic()
        if had_records:
            self._last_records_at = now
            fetcher._fetch_max_wait_ms = self.busy_wait_ms
        elif now - self._last_records_at >= self.idle_after_s:
            fetcher._fetch_max_wait_ms = self.idle_wait_ms


def make_consumer(settings: Settings, group_id: str) -> PacedConsumer:
    return PacedConsumer(
        busy_wait_ms=settings.kafka_fetch_max_wait_ms,
        idle_wait_ms=settings.kafka_fetch_idle_wait_ms,
        idle_after_s=settings.kafka_fetch_idle_after_s,
        **client_config(settings),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        max_poll_records=500,
        isolation_level="read_uncommitted",
        # consumers subscribe by pattern: this is how soon they see a new partition or a recreated topic
        metadata_max_age_ms=settings.kafka_metadata_max_age_ms,
    )


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

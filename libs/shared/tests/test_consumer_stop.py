"""A consumer stops, whatever its fetch routine was doing: on the real embedded broker.

aiokafka's fetch routine, when the consumer loses its assignment, cancels its in-flight requests and waits for
them, ignoring a cancellation that arrives meanwhile. The group coordinator's close revokes the assignment just
before the fetcher is closed, so a consumer stopped while a request is still ending (a broker that lost its log
makes the group rebalance at that moment) would wait for its routine forever — and the inbox that renews its
consumer with it, reading nothing more from the bus without an error anywhere.
"""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import TopicPartition

from labornet.shared.broker import EmbeddedBroker
from labornet.shared.kafka import PacedConsumer, ensure_topics, make_consumer, started
from labornet.shared.settings import Settings
from labornet.shared.testing import eventually


async def test_a_consumer_stops_while_its_fetch_routine_waits_for_a_request_to_end(
    kafka_broker: EmbeddedBroker,
) -> None:
    settings = Settings(kafka_bootstrap_servers=kafka_broker.bootstrap_servers)
    topic = f"labornet.510000.stopping-{uuid.uuid4().hex[:8]}.events"
    await ensure_topics(settings, [topic])
    consumer = make_consumer(settings, f"stopping-{uuid.uuid4().hex[:8]}")
    assert isinstance(consumer, PacedConsumer)
    await started(consumer)
    consumer.assign([TopicPartition(topic, 0)])
    fetcher = consumer._fetcher
    ended = asyncio.Event()

    async def request_ending_slowly() -> bool:
        """An in-flight request that takes a moment to end once cancelled (a reply already on its way)."""
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0.3)
        ended.set()
        return False

    async def fetching() -> bool:  # the routine is past its first assignment and waiting on its requests
        return bool(fetcher._pending_tasks)

    await eventually(fetching, timeout_s=10)
    fetcher._pending_tasks.add(asyncio.create_task(request_ending_slowly()))
    consumer.unsubscribe()  # the assignment is lost: the routine cancels its requests and waits for them to end
    await asyncio.sleep(0.05)
    assert not ended.is_set()  # the routine is waiting for it
    # waited for, never cancelled: a cancellation from outside would end the routine by itself
    stopping = asyncio.create_task(consumer.stop())
    done, _ = await asyncio.wait({stopping}, timeout=10)
    if not done:
        stopping.cancel()
    assert done, "the consumer did not stop within 10 s"
    assert fetcher._fetch_task.done()

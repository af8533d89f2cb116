"""The doorbell's end-offsets request: encoded once per set of partitions, its answer read straight from the bytes.

Every version aiokafka may pick is read as aiokafka's own structures read it (the answer built with them), and on
the real embedded broker the ends are those aiokafka's consumer reports.
"""

from __future__ import annotations

import io
import uuid

import pytest
from aiokafka import TopicPartition
from aiokafka.protocol.offset import (
    OffsetRequest,
    OffsetResponse_v0,
    OffsetResponse_v1,
    OffsetResponse_v2,
    OffsetResponse_v3,
)

from labornet.shared.broker import EmbeddedBroker
from labornet.shared.kafka import EndOffsetsRequest, end_offsets, ensure_topics, make_consumer, make_producer, started
from labornet.shared.settings import Settings

NOT_LEADER = 6


def answer(version: int) -> bytes:
    """An answer for two topics, one of whose partitions the broker refused, encoded by aiokafka's structures."""
    if version == 0:
        listed = [(0, 0, [12]), (1, NOT_LEADER, []), (2, 0, [0])]
        return OffsetResponse_v0([("a", listed), ("b", [(0, 0, [3])])]).encode()  # type: ignore[no-any-return]
    partitions_a = [(0, 0, -1, 12), (1, NOT_LEADER, -1, -1), (2, 0, -1, 0)]
    partitions_b = [(0, 0, -1, 3)]
    if version == 1:
        return OffsetResponse_v1([("a", partitions_a), ("b", partitions_b)]).encode()  # type: ignore[no-any-return]
    response = {2: OffsetResponse_v2, 3: OffsetResponse_v3}[version]
    return response(0, [("a", partitions_a), ("b", partitions_b)]).encode()  # type: ignore[no-any-return]


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_every_version_is_read_as_aiokafka_reads_it_and_a_refused_partition_is_left_out(version: int) -> None:
    partitions = frozenset(TopicPartition(topic, n) for topic, count in (("a", 3), ("b", 1)) for n in range(count))
    prepared = EndOffsetsRequest(partitions).prepare({OffsetRequest.API_KEY: (0, version)})
    assert version == prepared.API_VERSION
    generic = OffsetRequest(-1, 0, [("a", [(0, -1), (1, -1), (2, -1)]), ("b", [(0, -1)])]).prepare(
        {OffsetRequest.API_KEY: (0, version)}
    )
    assert prepared.encode() == generic.encode(), "the body is the request aiokafka would send"
    assert prepared.RESPONSE_TYPE.decode(io.BytesIO(answer(version))) == {
        TopicPartition("a", 0): 12,
        TopicPartition("a", 2): 0,
        TopicPartition("b", 0): 3,
    }


def test_a_set_of_partitions_is_encoded_once_and_the_kept_sets_stay_few() -> None:
    partitions = frozenset({TopicPartition("a", 0), TopicPartition("b", 1)})
    assert EndOffsetsRequest.of(partitions) is EndOffsetsRequest.of(frozenset(partitions))
    for n in range(40):
        EndOffsetsRequest.of(frozenset({TopicPartition("c", n)}))
    assert len(EndOffsetsRequest._kept) <= 16


async def test_on_the_embedded_broker_the_ends_are_those_the_consumer_reports(kafka_broker: EmbeddedBroker) -> None:
    settings = Settings(kafka_bootstrap_servers=kafka_broker.bootstrap_servers)
    topics = [f"labornet.510000.ends-{uuid.uuid4().hex[:8]}.events" for _ in range(3)]
    await ensure_topics(settings, topics)
    producer = await started(make_producer(settings))
    consumer = make_consumer(settings, f"ends-{uuid.uuid4().hex[:8]}")
    consumer.subscribe(topics)
    await started(consumer)
    try:
        for n, topic in enumerate(topics):
            for k in range(n * 3):
                await producer.send_and_wait(topic, b"{}", partition=k % 2)
        partitions = {TopicPartition(topic, n) for topic in topics for n in range(settings.kafka_topic_partitions)}
        await consumer._client.force_metadata_update()
        ends = await end_offsets(consumer._client, partitions)
        assert set(ends) == partitions
        assert ends == await consumer.end_offsets(sorted(partitions))
        assert sum(ends.values()) > 0
    finally:
        await producer.stop()
        await consumer.stop()

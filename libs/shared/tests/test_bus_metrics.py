"""Bus metrics: every series whose labels can be known exists at 0 from start-up; lag is measured against the
broker's end offsets and not pretended when the broker does not answer."""

from __future__ import annotations

import ast
import inspect
from typing import get_args

from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from labornet.shared import inbox
from labornet.shared.inbox import EventConsumer
from labornet.shared.observability import (
    DEAD_LETTER_REASONS,
    REJECT_REASONS,
    SIGNATURE_REASONS,
    init_bus_metrics,
)
from labornet.shared.signing import RejectReason
from labornet.shared.testing import lag_measuring_consumer
from labornet.shared.topics import deadletter_topic, events_topic, inbox_topic

MEMBERS = ("510000", "330000", "320000")


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_every_label_combination_a_service_can_know_exists_at_zero() -> None:
    service = "bus-metrics-probe"  # no running service has this name: other tests of the process count nothing here
    partner_events, own_inbox = events_topic("330000", service), inbox_topic("510000", service)
    init_bus_metrics(service, "510000", MEMBERS, {f"labornet.510000.{service}.replica": [partner_events, own_inbox]})
    for topic in (partner_events, own_inbox):
        for reason in REJECT_REASONS:
            assert value("labornet_events_rejected_total", service=service, topic=topic, reason=reason) == 0
        for reason in DEAD_LETTER_REASONS:
            assert value("labornet_events_dead_lettered_total", service=service, topic=topic, reason=reason) == 0
        for outcome in ("applied", "duplicate"):
            assert value("labornet_events_consumed_total", service=service, topic=topic, outcome=outcome) == 0
        assert value("labornet_event_retries_total", service=service, topic=topic) == 0
    # the age on apply: a broadcast stream has one origin, an inbox every partner
    assert value("labornet_event_age_seconds_count", service=service, topic=partner_events, origin="330000") == 0
    assert value("labornet_event_age_seconds_count", service=service, topic=partner_events, origin="320000") is None
    for origin in ("330000", "320000"):
        assert value("labornet_event_age_seconds_count", service=service, topic=own_inbox, origin=origin) == 0
    for topic in (
        events_topic("510000", service),
        deadletter_topic("510000", service),
        inbox_topic("330000", service),
    ):
        assert value("labornet_events_published_total", service=service, topic=topic) == 0
    assert value("labornet_events_published_total", service=service, topic=partner_events) is None
    assert value("labornet_outbox_publish_failures_total", service=service) == 0
    assert (
        value("labornet_consumer_assigned_partitions", service=service, group=f"labornet.510000.{service}.replica") == 0
    )


def _reason_literals() -> set[str]:
    """Every reason inbox.py can count: the literal reasons its checks raise and pass to _reject/_dead_letter."""
    tree = ast.parse(inspect.getsource(inbox))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for statement in node.body:  # `reason = "..."` of an exception class
                if (
                    isinstance(statement, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "reason" for t in statement.targets)
                    and isinstance(statement.value, ast.Constant)
                ):
                    found.add(statement.value.value)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in ("handle", "_check"):
            for call in ast.walk(node):
                if not isinstance(call, ast.Call):
                    continue
                name = getattr(call.func, "attr", None) or getattr(call.func, "id", None)
                position = {"EventRejected": 0, "_reject": 2, "_dead_letter": 2}.get(str(name))
                if position is not None and len(call.args) > position:
                    argument = call.args[position]
                    if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                        found.add(argument.value)
    return found


def test_the_reasons_counted_are_the_ones_initialised() -> None:
    assert set(get_args(RejectReason)) == set(SIGNATURE_REASONS)
    literals = _reason_literals()
    assert {"malformed", "misaddressed", "unknown-type", "handler-failed"} <= literals, literals
    assert literals <= set(DEAD_LETTER_REASONS), literals - set(DEAD_LETTER_REASONS)
    assert set(REJECT_REASONS) <= set(DEAD_LETTER_REASONS)


class FakeBroker:
    """The consumer calls lag needs; ``answers`` False makes the broker silent; ``fetched`` is the end each
    partition's last fetch reported (none before the first)."""

    def __init__(self, ends: dict[TopicPartition, int], positions: dict[TopicPartition, int]) -> None:
        self.ends = ends
        self.positions = positions
        self.fetched: dict[TopicPartition, int] = {}
        self.answers = True
        self.asked = 0

    def assignment(self) -> set[TopicPartition]:
        return set(self.positions)

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.asked += 1
        if not self.answers:
            raise TimeoutError("no answer")
        return {tp: self.ends[tp] for tp in partitions}

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.fetched.get(tp)


def lag_consumer() -> EventConsumer:
    return lag_measuring_consumer("lag-test", "labornet.510000.lag-test.g")


async def test_lag_is_the_brokers_end_offset_minus_the_position_and_stays_when_the_broker_is_silent() -> None:
    topic = events_topic("330000", "lag-test")
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    broker = FakeBroker({tp0: 120, tp1: 7}, {tp0: 20, tp1: 7})
    consumer = lag_consumer()
    labels = {"service": "lag-test", "group": consumer.group_id, "topic": topic}
    await consumer._update_lag(broker)  # type: ignore[arg-type]
    assert value("labornet_consumer_lag", **labels, partition="0") == 100
    assert value("labornet_consumer_lag", **labels, partition="1") == 0
    measured = value("labornet_consumer_lag_measured_timestamp_seconds", service="lag-test", group=consumer.group_id)
    assert measured is not None and measured > 0

    broker.answers, broker.ends[tp0] = False, 500
    await consumer._update_lag(broker)  # type: ignore[arg-type]
    assert value("labornet_consumer_lag", **labels, partition="0") == 100, "the last measured value stays"
    again = value("labornet_consumer_lag_measured_timestamp_seconds", service="lag-test", group=consumer.group_id)
    assert again == measured, "and says when it was measured"

    # a fetch saw further records than the end-offsets answer counts (the embedded broker counts a batch as one)
    broker.answers, broker.ends[tp0], broker.fetched[tp0] = True, 121, 140
    await consumer._update_lag(broker)  # type: ignore[arg-type]
    assert value("labornet_consumer_lag", **labels, partition="0") == 120


async def test_lag_is_asked_of_the_broker_once_per_interval() -> None:
    tp = TopicPartition(events_topic("330000", "lag-test"), 2)
    broker = FakeBroker({tp: 10}, {tp: 10})
    consumer = lag_consumer()
    consumer.lag_interval_s = 60.0
    for _ in range(5):
        await consumer._update_lag(broker)  # type: ignore[arg-type]
    assert broker.asked == 1

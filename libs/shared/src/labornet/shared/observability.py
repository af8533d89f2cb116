"""Metrics, JSON logs and W3C trace context.

Metric names follow Prometheus conventions (https://prometheus.io/docs/practices/naming/): the unit in the name
(``_seconds``, ``_bytes``, ``_yuan``), ``_total`` on counters, ``code`` for an HTTP status and ``state`` for a
domain state, and no ``_created`` series. They carry a ``service`` label so that the per-node process mode (four
services in one process) stays readable. The list matches docs/operations/observability.md: HTTP latency, events
published/consumed/rejected/dead-lettered, outbox backlog and oldest pending age, consumer lag, end-to-end event
age on apply, the broker watch and anti-entropy (ADRs 0008, 0009).
"""

from __future__ import annotations

import contextvars
import json
import logging
import random
import re
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labornet.shared.topics import deadletter_topic, events_topic, inbox_topic, is_inbox_topic

# Metrics ---------------------------------------------------------------------------------------------

# No `<counter>_created` / `<histogram>_created` series: in the text format each is one more gauge series per
# labelled counter and histogram (doubling the counters' series), and no rule or dashboard reads them. The flag is
# read when a registry is collected, so it covers the metrics of every module of the process, imported before or
# after this one.
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
AGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 3600.0, 86400.0)

HTTP_REQUEST_DURATION = Histogram(
    "labornet_http_request_duration_seconds",
    "HTTP request latency by route template and response status code",
    ["service", "method", "route", "code"],
    buckets=LATENCY_BUCKETS,
)
EVENTS_PUBLISHED = Counter(
    "labornet_events_published_total", "Events the outbox relay published to Kafka", ["service", "topic"]
)
PUBLISH_FAILURES = Counter(
    "labornet_outbox_publish_failures_total", "Relay batches that failed to publish (the rows wait)", ["service"]
)
OUTBOX_BACKLOG = Gauge("labornet_outbox_backlog", "Outbox rows not yet published", ["service"])
OUTBOX_OLDEST_AGE = Gauge(
    "labornet_outbox_oldest_pending_age_seconds", "Age of the oldest unpublished outbox row", ["service"]
)
EVENTS_CONSUMED = Counter(
    "labornet_events_consumed_total",
    "Records handled by consumers, by outcome (applied, duplicate)",
    ["service", "topic", "outcome"],
)
EVENTS_REJECTED = Counter(
    "labornet_events_rejected_total",
    "Records refused before applying (signature, key, province, malformed)",
    ["service", "topic", "reason"],
)
EVENTS_DEAD_LETTERED = Counter(
    "labornet_events_dead_lettered_total",
    "Records sent to the dead-letter topic and the quarantine table",
    ["service", "topic", "reason"],
)
EVENT_RETRIES = Counter("labornet_event_retries_total", "Handler retries", ["service", "topic"])
EVENT_AGE = Histogram(
    "labornet_event_age_seconds",
    "End-to-end age of an event when applied (now minus ce_time)",
    ["service", "topic", "origin"],
    buckets=AGE_BUCKETS,
)
CONSUMER_LAG = Gauge(
    "labornet_consumer_lag", "Records behind the high watermark", ["service", "group", "topic", "partition"]
)
CONSUMER_ASSIGNED_PARTITIONS = Gauge(
    "labornet_consumer_assigned_partitions", "Partitions assigned to this consumer", ["service", "group"]
)
QUARANTINED = Gauge("labornet_quarantined_events", "Quarantined records awaiting an operator", ["service"])
DB_WRITERS_WAITING = Gauge(
    "labornet_db_writers_waiting",
    "Writers of this process waiting their turn for the SQLite database's write lock (not set on PostgreSQL)",
    ["service"],
)
DB_WRITERS_REFUSED = Counter(
    "labornet_db_writers_refused_total",
    "Writers refused as busy after waiting their turn for the SQLite database's write lock past the busy timeout",
    ["service"],
)
CONSUMER_LAG_MEASURED = Gauge(
    "labornet_consumer_lag_measured_timestamp_seconds",
    "When the consumer lag was last measured against the broker's end offsets (Unix time); "
    "the lag gauges keep their last value while the broker cannot be asked",
    ["service", "group"],
)

# Label values known from start-up ---------------------------------------------------------------------
# One place for the outcomes and reasons the bus counts: every combination exists at 0 from start-up
# (init_bus_metrics), so that increase() sees the first rejection and dashboards show 0 instead of "No data".

CONSUME_OUTCOMES = ("applied", "duplicate")
SIGNATURE_REASONS = ("bad-signature", "unknown-key", "expired-key", "province-mismatch", "future-time")
REJECT_REASONS = (*SIGNATURE_REASONS, "malformed", "misaddressed", "unknown-type", "rule-violation")
DEAD_LETTER_REASONS = (*REJECT_REASONS, "handler-failed")
REPLICA_RESULTS = ("inserted", "updated", "stale")  # a partner event applied to a replica (upsert_newer)


def _topic_province(topic: str) -> str | None:
    """The province named in a bus topic (``labornet.<province>.<service>.<kind>``), if it names one."""
    parts = topic.split(".")
    return parts[1] if len(parts) == 4 and parts[1].isdigit() else None


def init_bus_metrics(
    service: str, province: str, members: Sequence[str], consumers: Mapping[str, Sequence[str]]
) -> None:
    """Create every labelled bus series a service can know at start-up, at 0.

    ``members`` are the federation's province codes, ``consumers`` the topics of each consumer group. Published
    topics are the node's own (events, dead letters) and the partners' inboxes; consumed series get every outcome
    and reason, and the end-to-end age every origin that can write the topic.
    """
    partners = [code for code in members if code != province]
    produced = [events_topic(province, service), deadletter_topic(province, service)]
    produced += [inbox_topic(code, service) for code in partners]
    for topic in produced:
        EVENTS_PUBLISHED.labels(service, topic)
    PUBLISH_FAILURES.labels(service)
    OUTBOX_BACKLOG.labels(service)
    OUTBOX_OLDEST_AGE.labels(service)
    QUARANTINED.labels(service)
    for group, topics in consumers.items():
        CONSUMER_ASSIGNED_PARTITIONS.labels(service, group)
        for topic in topics:
            for outcome in CONSUME_OUTCOMES:
                EVENTS_CONSUMED.labels(service, topic, outcome)
            for reason in REJECT_REASONS:
                EVENTS_REJECTED.labels(service, topic, reason)
            for reason in DEAD_LETTER_REASONS:
                EVENTS_DEAD_LETTERED.labels(service, topic, reason)
            EVENT_RETRIES.labels(service, topic)
            origins = partners if is_inbox_topic(topic) else [code for code in [_topic_province(topic)] if code]
            for origin in origins:
                EVENT_AGE.labels(service, topic, origin)


_COUNTED: dict[Gauge, set[tuple[str, ...]]] = {}


def set_counts(gauge: Gauge, counts: Mapping[tuple[str, ...], float]) -> None:
    """Set a labelled gauge from a fresh count per label set (e.g. a GROUP BY). A label set counted before and
    absent now reads 0: a state whose last row moved on must not keep its old count."""
    counted = _COUNTED.setdefault(gauge, set())
    counted.update(counts)
    for labels in counted:
        gauge.labels(*labels).set(counts.get(labels, 0))


# Trace context ---------------------------------------------------------------------------------------

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
current_traceparent: contextvars.ContextVar[str | None] = contextvars.ContextVar("traceparent", default=None)


def new_traceparent(trace_id: str | None = None) -> str:
    return f"00-{trace_id or _random_hex(128)}-{_random_hex(64)}-01"


def _random_hex(bits: int) -> str:
    """A random id of ``bits`` bits in hex, never all zeros (an invalid id in W3C Trace Context). Ids need to be
    unique, not secret: Python's generator (seeded from the OS, reseeded in a forked child) is enough, and a
    request no longer pays for two system calls of ``secrets``."""
    return f"{random.getrandbits(bits) or 1:0{bits // 4}x}"


def child_traceparent(parent: str | None) -> str:
    """A new span id under ``parent``'s trace, or a new trace when ``parent`` is absent or invalid."""
    match = _TRACEPARENT.match(parent or "")
    return new_traceparent(match.group(1) if match else None)


def trace_id_of(traceparent: str | None) -> str | None:
    match = _TRACEPARENT.match(traceparent or "")
    return match.group(1) if match else None


# Logging ---------------------------------------------------------------------------------------------

_STANDARD_RECORD_FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


_RESIDENT_ID = re.compile(r"(?<![0-9A-Za-z])(\d{4})\d{10}(\d{3}[\dXx])(?![0-9A-Za-z])")


def scrub(text: str) -> str:
    """Mask anything shaped like a resident identity number (``5101**********123X``)."""
    return _RESIDENT_ID.sub(lambda m: f"{m.group(1)}{'*' * 10}{m.group(2)}", text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the trace id of the current request or event.

    Identity numbers never reach the log: anything shaped like one is masked, whatever logged it.
    """

    def __init__(self, service: str = "", province: str = "") -> None:
        super().__init__()
        self.service = service
        self.province = province

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self.service:
            entry["service"] = self.service
        if self.province:
            entry["province"] = self.province
        trace_id = trace_id_of(current_traceparent.get())
        if trace_id:
            entry["trace_id"] = trace_id
        for key, value in vars(record).items():
            if key not in _STANDARD_RECORD_FIELDS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return scrub(json.dumps(entry, ensure_ascii=False, default=str))


# Libraries whose chatty levels log what LaborNet never logs: aiokafka's debug lines carry record values,
# aiosqlite's the statements' parameters (event payloads, personal data). They log at these levels at most.
QUIET_LOGGERS = {"aiokafka": logging.ERROR, "aiosqlite": logging.WARNING, "uvicorn.access": logging.WARNING}


def configure_logging(level: str = "INFO", json_logs: bool = True, service: str = "", province: str = "") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_logs:
        handler.setFormatter(JsonFormatter(service, province))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name, quiet in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(quiet)


# HTTP middleware -------------------------------------------------------------------------------------


class HttpMetrics:
    """ASGI middleware: times every request by route template and joins or starts a W3C trace.

    A plain ASGI middleware rather than Starlette's ``BaseHTTPMiddleware``, which runs the app in a task of its
    own and copies every response through a memory stream (a third of the cost of a read by id).

    When the app raises, the trace stays current: the 500 problem is written by the outermost error handler, after
    this middleware, and must carry the trace id that its log line (with the stack trace) carries. Under uvicorn each
    request runs in a task of its own, which ends with that answer, so the trace goes no further."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service
        self.timers: dict[tuple[str, str, str], Any] = {}  # the histogram's series by method, route and code

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((value for name, value in scope["headers"] if name == b"traceparent"), None)
        traceparent = child_traceparent(incoming.decode("latin-1") if incoming is not None else None)
        header = (b"traceparent", traceparent.encode())
        token = current_traceparent.set(traceparent)
        started = time.perf_counter()
        code = 500

        async def send_traced(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        try:
            await self.app(scope, receive, send_traced)
            current_traceparent.reset(token)
        finally:
            route = scope.get("route")
            labels = (scope["method"], getattr(route, "path", None) or "unmatched", str(code))
            timer = self.timers.get(labels)
            if timer is None:
                timer = self.timers[labels] = HTTP_REQUEST_DURATION.labels(self.service, *labels)
            timer.observe(time.perf_counter() - started)

"""A non-Python Kafka client reads our events: kcat (librdkafka) consumes what the real outbox relay published on
the embedded broker, and what it prints is a CloudEvent by the Kafka protocol binding (binary content mode), whose
signature verifies with the trust list from exactly the headers, key and value kcat saw, and whose headers and data
match the AsyncAPI document.

Debian's kcat 1.7.1 is built with librdkafka 2.0.2, which cannot read the tagged fields the embedded broker (Tansu)
writes at the end of its ApiVersions v3 answer (it sends them at their default values, where Apache Kafka leaves
them out) and gives up with "ApiVersionRequest failed: Local: Read underflow". The broker of this test therefore
advertises a small proxy that drops those tagged fields from ApiVersions answers and passes every other byte
through unchanged: the records kcat reads are the broker's, byte for byte."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import struct
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from sqlalchemy.ext.asyncio import AsyncEngine

from labornet.shared.asyncapi import BROADCAST_HEADERS, record_problems, service_document
from labornet.shared.broker import EmbeddedBroker, free_port
from labornet.shared.db import readonly_sessionmaker, sessionmaker
from labornet.shared.envelope import Envelope
from labornet.shared.kafka import ensure_topics, make_producer
from labornet.shared.keys import NodeKeys
from labornet.shared.observability import current_traceparent, new_traceparent
from labornet.shared.outbox import Outbox, OutboxRelay
from labornet.shared.receipts import RECEIPT, ReceiptOutcome, send_receipt
from labornet.shared.settings import Settings
from labornet.shared.signing import Signer, TrustList
from labornet.shared.testing import eventually, platform_engine
from labornet.shared.topics import events_topic, inbox_topic

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat (Debian package kcat) is not installed")

SERVICE = "rights"  # a service with a broadcast stream and an inbox
# RFC 3339 section 5.6 date-time
RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$",
)
EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")  # CloudEvents attribute naming rule


API_VERSIONS = 18


def _uvarint(buffer: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buffer[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def without_tagged_fields(response: bytes) -> bytes:
    """An ApiVersions v3+ response (correlation id first) without the tagged fields after its throttle time."""
    at = 4 + 2  # correlation id, error code
    count, at = _uvarint(response, at)
    for _ in range(count - 1):  # api key, min and max version, then the entry's own (empty) tagged fields
        tags, at = _uvarint(response, at + 6)
        assert tags == 0, "an ApiVersions entry with tagged fields"
    return response[: at + 4] + b"\x00"


class ApiVersionsShim:
    """A TCP proxy in front of the broker that rewrites ApiVersions v3+ answers and forwards everything else."""

    def __init__(self, upstream_port: int, port: int) -> None:
        self.upstream_port, self.port = upstream_port, port
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for client in self._clients:
                client.close()
            await self._server.wait_closed()

    async def _connection(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        self._clients.add(client_out)
        broker_in, broker_out = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        asked: dict[int, tuple[int, int]] = {}

        async def frames(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                while True:
                    (size,) = struct.unpack(">i", await reader.readexactly(4))
                    yield await reader.readexactly(size)

        async def requests() -> None:
            async for frame in frames(client_in):
                key, version, correlation = struct.unpack(">hhi", frame[:8])
                asked[correlation] = (key, version)
                broker_out.write(struct.pack(">i", len(frame)) + frame)
                await broker_out.drain()
            broker_out.close()

        async def responses() -> None:
            async for frame in frames(broker_in):
                key, version = asked.pop(struct.unpack(">i", frame[:4])[0], (-1, -1))
                if key == API_VERSIONS and version >= 3:
                    frame = without_tagged_fields(frame)
                client_out.write(struct.pack(">i", len(frame)) + frame)
                await client_out.drain()
            client_out.close()

        try:
            with contextlib.suppress(ConnectionError):
                await asyncio.gather(requests(), responses())
        finally:
            broker_out.close()
            self._clients.discard(client_out)


class AdvertisedBroker(EmbeddedBroker):
    """The embedded broker, telling clients to connect to ``advertised_port`` (the shim) instead of its own."""

    def __init__(self, advertised_port: int, log_path: Path) -> None:
        super().__init__(log_path=log_path)
        self.advertised_port = advertised_port

    def command(self) -> list[str]:
        command = super().command()
        at = command.index("--advertised-listener-url") + 1
        command[at] = f"tcp://{self.host}:{self.advertised_port}"
        return command


@pytest.fixture
def broker_behind_shim(tmp_path: Path) -> Iterator[AdvertisedBroker]:
    broker = AdvertisedBroker(free_port(), tmp_path / "tansu.log")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
async def bootstrap(broker_behind_shim: AdvertisedBroker) -> AsyncIterator[str]:
    """host:port of the shim in front of this test's broker: what every client of the test connects to."""
    shim = ApiVersionsShim(broker_behind_shim.port, broker_behind_shim.advertised_port)
    await shim.start()
    yield f"127.0.0.1:{shim.port}"
    await shim.stop()


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = await platform_engine(f"sqlite+aiosqlite:///{tmp_path / 'outbox.sqlite3'}")
    yield engine
    await engine.dispose()


@contextlib.asynccontextmanager
async def relaying(engine: AsyncEngine, writer: Outbox, bootstrap: str) -> AsyncIterator[OutboxRelay]:
    settings = Settings(kafka_bootstrap_servers=bootstrap)  # type: ignore[call-arg]
    relay = OutboxRelay(
        sessionmaker(engine),
        readonly_sessionmaker(engine),
        lambda: make_producer(settings),
        writer,
        service=SERVICE,
        poll_interval_s=0.02,
        max_backoff_s=0.5,
        create_topics=lambda names: ensure_topics(settings, names),
    )
    task = asyncio.create_task(relay.run())
    try:
        yield relay
    finally:
        await relay.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def kcat(bootstrap: str, topic: str) -> list[dict[str, Any]] | None:
    """Every record of ``topic`` as kcat prints it with -J (one JSON object per line, headers included); None while
    the topic does not exist yet."""
    assert KCAT is not None
    process = await asyncio.create_subprocess_exec(
        KCAT, "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-J", "-q",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    if process.returncode != 0 and b"Unknown topic or partition" in stderr:
        return None
    assert process.returncode == 0, stderr.decode()
    return [json.loads(line) for line in stdout.decode("utf-8").splitlines() if line.strip()]


def headers_of(record: dict[str, Any]) -> list[tuple[str, str]]:
    flat = record["headers"] or []
    assert len(flat) % 2 == 0, flat
    return list(zip(flat[0::2], flat[1::2], strict=True))


async def test_kcat_reads_cloudevents_whose_signature_verifies(
    bootstrap: str, node_keys: dict[str, NodeKeys], federation_dir: Path, engine: AsyncEngine
) -> None:
    sichuan = Outbox("510000", SERVICE, Signer.from_file(node_keys["510000"].signing_key, "510000"))
    trace = new_traceparent()
    broadcast_topic, inbox = events_topic("510000", SERVICE), inbox_topic("330000", SERVICE)
    token = current_traceparent.set(trace)
    try:
        async with sessionmaker(engine)() as session, session.begin():
            broadcast = await sichuan.add(
                session,
                topic=broadcast_topic,
                event_type="org.labornet.rights.kcat-check.published.v1",
                key="510000-R-KCAT",
                subject="510000-R-KCAT",
                data={"title": "川菜厨师", "note": 'ünïcödé and "quotes"\n', "amount": "86400.00"},
            )
            # a directed message from Zhejiang that Sichuan answers with the platform's receipt
            letter = Envelope(
                id="0d3f5a9e-5b1c-4f4e-8d55-3c1f6f0e9a11",
                source="/labornet/330000/rights",
                type="org.labornet.rights.case.referred.v1",
                time=datetime.now(UTC),
                partitionkey="330000-R-1",
                originprovince="330000",
                destprovince="510000",
                stream="330000/labornet.510000.rights.inbox",
                streamseq=1,
                schemaversion=1,
                data=b"{}",
            )
            await send_receipt(session, sichuan, letter, ReceiptOutcome.APPLIED)
    finally:
        current_traceparent.reset(token)

    async with relaying(engine, sichuan, bootstrap):
        seen: dict[str, list[dict[str, Any]]] = {}

        async def published() -> bool:
            for topic in (broadcast_topic, inbox):
                seen[topic] = await kcat(bootstrap, topic) or []
            return all(seen.values())

        await eventually(published, timeout_s=30, interval_s=0.5)

    trust = TrustList.load(federation_dir / "trust-list.json")
    document = service_document(SERVICE)
    (on_events,), (on_inbox,) = seen[broadcast_topic], seen[inbox]
    for topic, record in ((broadcast_topic, on_events), (inbox, on_inbox)):
        headers = headers_of(record)
        names = [name for name, _ in headers]
        assert len(names) == len(set(names)), names
        values = dict(headers)
        assert all(isinstance(value, str) for value in values.values()), "every header is a UTF-8 string"
        for name in names:
            assert name == "content-type" or name.startswith("ce_"), name
            if name.startswith("ce_"):
                assert EXTENSION_NAME.match(name.removeprefix("ce_")), f"{name}: not a CloudEvents attribute name"
        assert values["ce_specversion"] == "1.0"
        assert values["content-type"] == "application/json"
        assert all(values[f"ce_{attribute}"] for attribute in ("id", "source", "type"))
        assert values["ce_source"] == "/labornet/510000/rights"
        assert RFC3339.match(values["ce_time"]), values["ce_time"]
        assert datetime.fromisoformat(values["ce_time"].replace("Z", "+00:00")).tzinfo is not None
        assert "ce_partitionkey" not in values, "the partition key travels as the record key"
        assert values["ce_originprovince"] == "510000"
        assert json.loads(record["payload"]) is not None

        # the signature covers the exact headers, key and value kcat printed
        key, value = record["key"].encode("utf-8"), record["payload"].encode("utf-8")
        raw_headers = [(name, text.encode("utf-8")) for name, text in headers]
        envelope = Envelope.from_kafka(key, value, raw_headers)
        assert trust.verify(envelope).province == "510000"
        tampered = Envelope.from_kafka(key, value.replace(b"}", b" }", 1), raw_headers)
        with pytest.raises(Exception, match="signature"):
            trust.verify(tampered)

        # the CloudEvents SDK reads the same record
        event = ce_kafka.from_binary_event(ce_kafka.KafkaMessage(headers=dict(raw_headers), key=key, value=value))
        assert (event.get_id(), event.get_type()) == (values["ce_id"], values["ce_type"])
        assert event.get_extension("partitionkey") == record["key"]

        if topic == inbox:
            assert record_problems(document, topic, key, value, raw_headers) == []
        else:
            assert "not a message of channel events" in " ".join(
                record_problems(document, topic, key, value, raw_headers)
            )

    events_headers = dict(headers_of(on_events))
    assert events_headers["ce_id"] == broadcast.id
    assert events_headers["ce_traceparent"] == trace
    assert events_headers["ce_subject"] == "510000-R-KCAT"
    assert "ce_destprovince" not in events_headers
    assert json.loads(on_events["payload"])["note"] == 'ünïcödé and "quotes"\n'
    assert on_events["key"] == "510000-R-KCAT"
    inbox_headers = dict(headers_of(on_inbox))
    assert inbox_headers["ce_type"] == RECEIPT
    assert inbox_headers["ce_destprovince"] == "330000"
    # keyed like the letter (the aggregate it is about), naming the letter by its id
    assert (on_inbox["key"], json.loads(on_inbox["payload"])["event_id"]) == (letter.partitionkey, letter.id)
    # a broadcast event's headers match the AsyncAPI broadcast header schema, whatever its type
    from jsonschema import Draft7Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT7

    registry: Registry[Any] = Registry().with_resource(
        "urn:doc", Resource.from_contents(document, default_specification=DRAFT7)
    )
    validator = Draft7Validator({"$ref": f"urn:doc#/components/schemas/{BROADCAST_HEADERS}"}, registry=registry)
    assert [error.message for error in validator.iter_errors(events_headers)] == []

"""A poison record never stops a partition, on the real embedded broker and on SQLite and PostgreSQL.

Whatever a record holds — an id or type longer than any column, a 200 KB header value, NUL bytes, bytes that are
not UTF-8, a payload of several megabytes, no headers, no key, no value, a null header value — quarantine takes
it (cut to ``quarantine_max_record_bytes``, with the SHA-256 of the whole record), its dead-letter copy is
published, and the next legitimate event of the same partition applies. No log line carries the payload or SQL
parameters. Only a database that does not answer makes the consumer wait.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord
from sqlalchemy import select
from sqlalchemy.exc import DataError, OperationalError

from labornet.shared.db import create_engine, quarantine, sessionmaker
from labornet.shared.envelope import Envelope
from labornet.shared.inbox import StoredRecord
from labornet.shared.keys import NodeKeys
from labornet.shared.observability import QUIET_LOGGERS
from labornet.shared.outbox import Outbox, decode_headers, record_fingerprint
from labornet.shared.signing import Signer
from labornet.shared.testing import consume_all, eventually
from tests.integration.conftest import Federation, consuming
from tests.integration.test_federation_bus import vacancy_event

pytestmark = pytest.mark.integration

Record = tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes | None]]]
PAYLOAD_MARKER = f"PAYLOAD-{uuid.uuid4().hex}"


def with_header(headers: list[tuple[str, bytes]], name: str, value: bytes) -> list[tuple[str, bytes]]:
    """``headers`` with ``name`` set to ``value`` (replaced, or added)."""
    return [(n, v) for n, v in headers if n != name] + [(name, value)]


def poison_records(signer: Signer, topic: str, key: str) -> dict[str, tuple[Record, str]]:
    """Each bad record by name, with the reason quarantine should give."""

    def genuine() -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        return signer.sign(vacancy_event("510000", key, topic, title="焊工")).to_kafka()

    records: dict[str, tuple[Record, str]] = {}
    k, v, h = genuine()
    records["100-character ce_id"] = ((k, v, with_header(h, "ce_id", b"i" * 100)), "bad-signature")
    k, v, h = genuine()
    records["300-character ce_type"] = ((k, v, with_header(h, "ce_type", b"t" * 300)), "bad-signature")
    k, v, h = genuine()
    records["200 KB header value"] = ((k, v, with_header(h, "ce_subject", b"s" * 200_000)), "bad-signature")
    k, v, h = genuine()
    records["200 KB ce_id"] = ((k, v, with_header(h, "ce_id", b"j" * 200_000)), "bad-signature")
    k, v, h = genuine()
    records["NUL bytes in ce_id"] = ((k, v, with_header(h, "ce_id", b"nul\x00id\x00")), "bad-signature")
    k, v, h = genuine()
    invalid = [*with_header(h, "ce_type", b"\xff\xfe\x00not utf-8"), ("x-nul\x00name", b"\x00\x00")]
    records["invalid UTF-8 and NUL bytes in headers"] = ((k, v, invalid), "malformed")
    k, _, h = genuine()
    huge = f'{{"id":"{key}","title":"{PAYLOAD_MARKER}","pad":"'.encode() + b"p" * 3_000_000 + b'"}'
    records["3 MB payload"] = ((k, huge, h), "bad-signature")
    k, v, _ = genuine()
    records["no headers"] = ((k, v, []), "malformed")
    _, v, h = genuine()
    records["no key"] = ((None, v, h), "malformed")
    k, _, h = genuine()
    records["no value"] = ((k, None, h), "malformed")
    k, v, h = genuine()
    null_value: list[tuple[str, bytes | None]] = [*h, ("ce_traceparent", None)]
    records["null header value"] = ((k, v, null_value), "malformed")
    return records


async def produce(bootstrap: str, topic: str, partition: int, records: list[Record]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=8 * 1024 * 1024)
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(topic, value, key=key, headers=headers, partition=partition)
    finally:
        await producer.stop()


def stored_bytes(row: object) -> int:
    headers = decode_headers(row.headers)  # type: ignore[attr-defined]
    key, payload = row.message_key or b"", row.payload or b""  # type: ignore[attr-defined]
    return len(key) + sum(len(name.encode()) + len(value) for name, value in headers) + len(payload)


async def test_poison_records_are_quarantined_and_the_partition_moves_on(
    federation: Federation, node_keys: dict[str, NodeKeys], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name, level in QUIET_LOGGERS.items():  # as the services configure logging
        caplog.set_level(level, logger=name)
    topic, vacancy_id = federation.topic, "510000-V-POISON"
    first = await federation.sichuan.write(topic, vacancy_id, title="家政")
    (published,) = await consume_all(federation.bootstrap, topic, 1)
    assert Envelope.from_kafka(published.key, published.value, published.headers).id == first.id

    bad = poison_records(Signer.from_file(node_keys["510000"].signing_key, "510000"), topic, vacancy_id)
    await produce(federation.bootstrap, topic, published.partition, [record for record, _ in bad.values()])
    last = await federation.sichuan.write(topic, vacancy_id, title="家政服务员")  # same key: same partition

    consumer = federation.make_consumer()
    cap = consumer.quarantine_max_record_bytes
    async with consuming(consumer):

        async def last_applied() -> bool:
            return len(await federation.zhejiang.applied()) == 2

        await eventually(last_applied, timeout_s=60)

        async def dead_letters_published() -> bool:
            dead = await consume_all(federation.bootstrap, f"{topic}.deadletter", len(bad), timeout_s=0.5)
            return len(dead) == len(bad)

        await eventually(dead_letters_published, timeout_s=30)

    assert [event_id for event_id, _ in await federation.zhejiang.applied()] == [first.id, last.id]
    async with sessionmaker(federation.zhejiang.engine)() as session:
        rows = (await session.execute(select(quarantine).order_by(quarantine.c.id))).all()
    assert len(rows) == len(bad), [(row.reason, row.error[:200]) for row in rows]
    assert [row.reason for row in rows] == [reason for _, reason in bad.values()]
    assert all(row.status == "quarantined" and row.consumer == "vacancies" for row in rows)
    assert {row.offset for row in rows} == set(range(published.offset + 1, published.offset + 1 + len(bad)))
    for (name, ((key, value, headers), _)), row in zip(bad.items(), rows, strict=True):
        whole = record_fingerprint(key, value, [(n, v or b"") for n, v in headers])
        assert row.fingerprint == whole, name
        assert stored_bytes(row) <= cap, name
        assert len(row.event_id or "") <= 64 and len(row.event_type or "") <= 200, name
        assert "\x00" not in (row.event_id or "") + row.error, name
    by_name = dict(zip(bad, rows, strict=True))
    assert by_name["100-character ce_id"].event_id == "i" * 63 + "…"
    assert by_name["300-character ce_type"].event_type == "t" * 199 + "…"
    big = by_name["3 MB payload"]
    assert 0 < len(big.payload) < cap and "stored cut to" in big.error
    assert PAYLOAD_MARKER.encode() in big.payload  # the start of the payload is kept
    small = by_name["no headers"]
    assert (small.message_key, small.payload) == bad["no headers"][0][:2]  # what fits is stored whole

    dead = await consume_all(federation.bootstrap, f"{topic}.deadletter", len(bad))
    assert sorted(dict(r.headers)["x-labornet-dlq-record-sha256"].decode() for r in dead) == sorted(
        row.fingerprint for row in rows
    )
    assert all(len(r.value or b"") < cap for r in dead)

    for record in caplog.records:
        message = record.getMessage()
        assert PAYLOAD_MARKER not in message, message[:300]
        assert "parameters" not in message.lower(), message[:300]
        assert len(message) < 5000, message[:300]


def one_record(topic: str, offset: int, headers: list[tuple[str, bytes]]) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic, 0, offset, 0, 0, b"k", b"{}", None, 1, 2, tuple(headers))


async def test_a_row_the_database_refuses_is_stored_without_its_contents(
    federation: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer = federation.make_consumer()
    outbox: Outbox = federation.zhejiang.outbox
    add_record = outbox.add_record
    refusals = iter([True])

    async def refuse_once(*args: object, **kwargs: object) -> None:
        if next(refusals, False):
            raise DataError("INSERT INTO outbox", {}, ValueError("value too long for type character varying(64)"))
        await add_record(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(outbox, "add_record", refuse_once)
    outcome = await consumer.handle(one_record(federation.topic, 7, [("ce_id", b"x")]))
    assert (outcome.status, outcome.reason) == ("quarantined", "malformed")
    async with sessionmaker(federation.zhejiang.engine)() as session:
        row = (await session.execute(select(quarantine))).one()
    assert (row.offset, row.headers, row.payload, row.message_key) == (7, [], None, None)
    assert "contents not stored: DataError" in row.error
    assert row.fingerprint == record_fingerprint(b"k", b"{}", [("ce_id", b"x")])


async def test_an_unreachable_database_makes_the_consumer_wait(federation: Federation, tmp_path: Path) -> None:
    consumer = federation.make_consumer()
    unreachable = create_engine(f"sqlite+aiosqlite:///{tmp_path}")  # a directory: no database opens there
    consumer.sessions = sessionmaker(unreachable)
    try:
        with pytest.raises(OperationalError):
            await consumer.handle(one_record(federation.topic, 8, [("ce_id", b"x")]))
    finally:
        await unreachable.dispose()


def test_a_record_is_cut_fairly_and_hashed_whole() -> None:
    headers = [("ce_id", b"abc"), ("ce_subject", b"s" * 5000), ("ce_type", b"t")]
    record = ConsumerRecord("t", 0, 0, 0, 0, b"key", b"v" * 9000, None, 3, 9000, tuple(headers))
    stored = StoredRecord.of(record, 4096)
    assert stored.cut and stored.kept <= 4096 and stored.size == 3 + 9000 + 5 + 3 + 10 + 5000 + 7 + 1
    assert stored.key == b"key" and stored.headers[0] == ("ce_id", b"abc") and stored.headers[2] == ("ce_type", b"t")
    assert stored.kept == 4096
    assert abs(len(stored.headers[1][1]) - len(stored.payload or b"")) <= 1  # the large parts share what is left
    assert stored.fingerprint == record_fingerprint(b"key", b"v" * 9000, headers)
    whole = StoredRecord.of(record, 1_000_000)
    assert not whole.cut and whole.payload == b"v" * 9000 and whole.headers == headers

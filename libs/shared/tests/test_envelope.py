"""The envelope in Kafka binary content mode, and its contract with the official CloudEvents SDK."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.v1.event import CloudEvent
from hypothesis import given
from hypothesis import strategies as st

from labornet.shared.envelope import (
    Envelope,
    MalformedEvent,
    encode_data,
    format_stored_time,
    format_time,
    parse_time,
)

WHEN = datetime(2026, 11, 23, 8, 30, 15, 123456, tzinfo=UTC)


def sample(**overrides: object) -> Envelope:
    values: dict[str, object] = {
        "id": "6f1c1b1e-2d2f-4a53-9a0e-3f0d2a8f6b01",
        "source": "/labornet/320000/jobs",
        "type": "org.labornet.jobs.vacancy.published.v1",
        "time": WHEN,
        "partitionkey": "320000-V-000123",
        "originprovince": "320000",
        "stream": "320000/labornet.320000.jobs.events",
        "streamseq": 42,
        "schemaversion": 1,
        "subject": "320000-V-000123",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "keyid": "320000:0011223344556677",
        "signature": "c2lnbmF0dXJl",
        "data": encode_data({"title": "川菜厨师", "salary": {"min": 6000, "max": 9000}}),
    }
    values.update(overrides)
    return Envelope(**values)  # type: ignore[arg-type]


def test_binary_mode_headers_key_and_value() -> None:
    key, value, headers = sample().to_kafka()
    names = dict(headers)
    assert key == b"320000-V-000123"
    assert json.loads(value) == {"salary": {"max": 9000, "min": 6000}, "title": "川菜厨师"}
    assert names["ce_specversion"] == b"1.0"
    assert names["ce_type"] == b"org.labornet.jobs.vacancy.published.v1"
    assert names["ce_time"] == b"2026-11-23T08:30:15.123456Z"
    assert names["content-type"] == b"application/json"
    assert names["ce_streamseq"] == b"42"
    assert names["ce_signature"] == b"c2lnbmF0dXJl"
    assert "ce_destprovince" not in names, "broadcast events carry no destination"
    assert "ce_partitionkey" not in names, "the partition key travels as the record key"


def test_round_trip_preserves_every_attribute() -> None:
    original = sample(destprovince="510000", extra={"comexampleext": "kept"})
    key, value, headers = original.to_kafka()
    assert Envelope.from_kafka(key, value, headers) == original


def test_sdk_reads_our_record() -> None:
    key, value, headers = sample(destprovince="510000").to_kafka()
    event = ce_kafka.from_binary_event(ce_kafka.KafkaMessage(headers=dict(headers), key=key, value=value))
    assert event.get_id() == "6f1c1b1e-2d2f-4a53-9a0e-3f0d2a8f6b01"
    assert event.get_type() == "org.labornet.jobs.vacancy.published.v1"
    assert event.get_source() == "/labornet/320000/jobs"
    assert event.get_time() == WHEN
    assert event.get_subject() == "320000-V-000123"
    assert event.get_datacontenttype() == "application/json"
    assert event.get_extension("partitionkey") == "320000-V-000123"
    assert event.get_extension("originprovince") == "320000"
    assert event.get_extension("destprovince") == "510000"
    assert event.get_extension("streamseq") == "42"
    assert event.get_extension("keyid") == "320000:0011223344556677"
    assert event.get_data() == {"title": "川菜厨师", "salary": {"min": 6000, "max": 9000}}


def test_we_read_the_sdk_record() -> None:
    event = CloudEvent(
        attributes={
            "id": "a-1",
            "source": "/labornet/330000/insurance",
            "type": "org.labornet.insurance.contact-letter.sent.v1",
            "time": WHEN,
            "subject": "case-9",
            "datacontenttype": "application/json",
            "partitionkey": "ZJ-2026-0001",
            "originprovince": "330000",
            "destprovince": "510000",
            "stream": "330000/labornet.510000.insurance.inbox",
            "streamseq": "7",
            "schemaversion": "1",
            "keyid": "330000:abcdef0123456789",
            "signature": "c2ln",
        },
        data={"case": "ZJ-2026-0001"},
    )
    message = ce_kafka.to_binary_event(event)
    envelope = Envelope.from_kafka(
        message.key if isinstance(message.key, bytes) else str(message.key).encode(),
        message.value,
        list(message.headers.items()),
    )
    assert envelope.id == "a-1"
    assert envelope.time == WHEN
    assert envelope.partitionkey == "ZJ-2026-0001"
    assert envelope.destprovince == "510000"
    assert envelope.streamseq == 7
    assert envelope.json() == {"case": "ZJ-2026-0001"}


@pytest.mark.parametrize(
    ("drop", "message"),
    [("ce_id", "missing CloudEvents attributes: id"), ("ce_signature", "missing CloudEvents attributes: signature")],
)
def test_missing_attributes_are_named(drop: str, message: str) -> None:
    key, value, headers = sample().to_kafka()
    with pytest.raises(MalformedEvent, match=message):
        Envelope.from_kafka(key, value, [h for h in headers if h[0] != drop])


def test_unreadable_values_are_malformed() -> None:
    key, value, headers = sample().to_kafka()
    bad = [(n, b"forty-two" if n == "ce_streamseq" else v) for n, v in headers]
    with pytest.raises(MalformedEvent, match="unreadable attribute"):
        Envelope.from_kafka(key, value, bad)
    with pytest.raises(MalformedEvent, match="no key"):
        Envelope.from_kafka(None, value, headers)
    wrong_version = [(n, b"0.3" if n == "ce_specversion" else v) for n, v in headers]
    with pytest.raises(MalformedEvent, match="specversion"):
        Envelope.from_kafka(key, value, wrong_version)


def test_time_format_is_utc_with_z() -> None:
    assert format_time(WHEN) == "2026-11-23T08:30:15.123456Z"
    assert parse_time("2026-11-23T16:30:15.123456+08:00") == WHEN
    with pytest.raises(ValueError, match="timezone-aware"):
        format_time(datetime(2026, 1, 1))


@given(
    moment=st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30)),
    offset_minutes=st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_times_are_written_as_strftime_wrote_them_and_read_back_to_the_same_instant(
    moment: datetime, offset_minutes: int
) -> None:
    """Signed events carry these strings: the faster writing must give the text the earlier one gave, for any
    instant and offset, and a naive time from the database (UTC) the same text as its aware twin."""
    aware = moment.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    written = format_time(aware)
    assert written == aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert parse_time(written) == aware
    in_utc = aware.astimezone(UTC)
    assert format_stored_time(in_utc.replace(tzinfo=None)) == format_stored_time(in_utc) == written


def standard_library(data: object) -> bytes:
    """What encode_data wrote before orjson."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")


JSON_WITHOUT_FLOATS = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@given(JSON_WITHOUT_FLOATS)
def test_event_data_is_written_byte_for_byte_as_before(data: object) -> None:
    assert encode_data(data) == standard_library(data)


@given(st.dictionaries(st.text(), st.floats(allow_nan=False, allow_infinity=False), max_size=4))
def test_event_data_with_numbers_reads_back_the_same(data: dict[str, float]) -> None:
    """Floats are written in their shortest form by both encoders; only the exponent's spelling may differ
    (1e16 beside 1e+16), which every JSON reader reads as the same number."""
    assert json.loads(encode_data(data)) == json.loads(standard_library(data)) == data


def test_event_data_orjson_refuses_is_written_as_before_and_what_was_refused_still_is() -> None:
    for data in ({"big": 2**70}, {1: "one", 2: ["two"]}, [-(2**80)]):
        assert encode_data(data) == standard_library(data)
    for refused in ({"at": datetime.now(UTC)}, {"amount": Decimal("1.5")}):
        with pytest.raises(TypeError):
            encode_data(refused)

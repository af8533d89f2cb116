"""CloudEvents 1.0 envelope in the Kafka protocol binding, binary content mode.

On the wire an event is one Kafka record:

* key: the aggregate id (the CloudEvents ``partitionkey`` extension), so one aggregate's events stay in order;
* value: the event data, JSON (``content-type: application/json``);
* headers: ``ce_specversion``, ``ce_id``, ``ce_source``, ``ce_type``, ``ce_time``, ``ce_subject`` and the LaborNet
  extensions ``ce_originprovince``, ``ce_destprovince`` (directed messages only), ``ce_stream`` and
  ``ce_streamseq`` (per-origin stream and its gap-free sequence number), ``ce_schemaversion``,
  ``ce_traceparent`` (W3C), ``ce_keyid`` and ``ce_signature`` (Ed25519, see :mod:`labornet.shared.signing`).

Extension names follow the CloudEvents naming rule (lower-case letters and digits only).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any

import orjson

SPECVERSION = "1.0"
CE_PREFIX = "ce_"
CONTENT_TYPE_HEADER = "content-type"
JSON_CONTENT_TYPE = "application/json"

REQUIRED_ATTRIBUTES = (
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "originprovince",
    "stream",
    "streamseq",
    "schemaversion",
    "keyid",
    "signature",
)


class MalformedEvent(ValueError):
    """A record that is not a LaborNet CloudEvent (missing or unreadable attributes)."""


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a ``Z`` suffix, the one form LaborNet writes.

    ``isoformat`` rather than ``strftime``: the same text (a four-digit year, always), in two thirds of the time —
    a page of twenty vacancies writes forty of them."""
    if value.tzinfo is None:
        raise ValueError("event time must be timezone-aware")
    return value.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"  # without its "+00:00"


def format_stored_time(value: datetime) -> str:
    """:func:`format_time` of a time as a database hands it back: aware, or naive in UTC (SQLite keeps no offset),
    the naive one written without converting it (three times faster)."""
    return format_time(value) if value.tzinfo is not None else value.isoformat(timespec="microseconds") + "Z"


def json_fields(row: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """The fields ``names`` of a stored row as events and APIs carry them: times as :func:`format_stored_time`
    writes them, dates as ISO dates, every other value as it is."""
    data: dict[str, Any] = {}
    for name in names:
        value = row[name]
        if isinstance(value, datetime):
            data[name] = format_stored_time(value)
        elif isinstance(value, date):
            data[name] = value.isoformat()
        else:
            data[name] = value
    return data


def parse_time(value: str) -> datetime:
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"time {value!r} has no UTC offset")
    return parsed.astimezone(UTC)


def new_event_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Envelope:
    """One signed LaborNet event, as read from or written to Kafka."""

    id: str
    source: str
    type: str
    time: datetime
    partitionkey: str
    originprovince: str
    stream: str
    streamseq: int
    schemaversion: int
    data: bytes
    subject: str | None = None
    destprovince: str | None = None
    traceparent: str | None = None
    keyid: str = ""
    signature: str = ""
    datacontenttype: str = JSON_CONTENT_TYPE
    extra: Mapping[str, str] = field(default_factory=dict)

    def attributes(self) -> dict[str, str]:
        """Every context attribute as its wire string, without ``signature``.

        This is exactly what the signature covers (together with the data bytes).
        """
        attrs: dict[str, str] = {
            "specversion": SPECVERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "time": format_time(self.time),
            "datacontenttype": self.datacontenttype,
            "partitionkey": self.partitionkey,
            "originprovince": self.originprovince,
            "stream": self.stream,
            "streamseq": str(self.streamseq),
            "schemaversion": str(self.schemaversion),
            "keyid": self.keyid,
        }
        optional = {
            "subject": self.subject,
            "destprovince": self.destprovince,
            "traceparent": self.traceparent,
        }
        attrs.update({name: value for name, value in optional.items() if value is not None})
        attrs.update(self.extra)
        return attrs

    def with_signature(self, keyid: str, signature: str) -> Envelope:
        return replace(self, keyid=keyid, signature=signature)

    def json(self) -> Any:
        """The data decoded from JSON."""
        return json.loads(self.data)

    # Kafka binding ---------------------------------------------------------------------------------

    def to_kafka(self) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        """Return ``(key, value, headers)`` for a Kafka record in binary content mode."""
        headers: list[tuple[str, bytes]] = []
        for name, value in self.attributes().items():
            if name == "partitionkey":
                continue  # carried as the record key
            if name == "datacontenttype":
                headers.append((CONTENT_TYPE_HEADER, value.encode()))
            else:
                headers.append((CE_PREFIX + name, value.encode()))
        headers.append((CE_PREFIX + "signature", self.signature.encode()))
        return self.partitionkey.encode(), self.data, headers

    @classmethod
    def from_kafka(cls, key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes]]) -> Envelope:
        """Read a record in binary content mode; raise :class:`MalformedEvent` saying what is wrong."""
        attrs: dict[str, str] = {}
        for name, raw in headers:
            lowered = name.lower()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise MalformedEvent(f"header {name!r} is not UTF-8") from exc
            if lowered.startswith(CE_PREFIX):
                attrs[lowered[len(CE_PREFIX) :]] = text
            elif lowered == CONTENT_TYPE_HEADER:
                attrs["datacontenttype"] = text
        missing = [name for name in REQUIRED_ATTRIBUTES if not attrs.get(name)]
        if missing:
            raise MalformedEvent(f"missing CloudEvents attributes: {', '.join(missing)}")
        if attrs["specversion"] != SPECVERSION:
            raise MalformedEvent(f"specversion {attrs['specversion']!r} is not supported; expected {SPECVERSION}")
        if key is None:
            raise MalformedEvent("record has no key; the key must be the aggregate id (partitionkey)")
        if value is None:
            raise MalformedEvent("record has no value")
        try:
            time = parse_time(attrs["time"])
            streamseq = int(attrs["streamseq"])
            schemaversion = int(attrs["schemaversion"])
        except ValueError as exc:
            raise MalformedEvent(f"unreadable attribute: {exc}") from exc
        known = {
            "specversion",
            "id",
            "source",
            "type",
            "time",
            "datacontenttype",
            "partitionkey",
            "subject",
            "originprovince",
            "destprovince",
            "stream",
            "streamseq",
            "schemaversion",
            "traceparent",
            "keyid",
            "signature",
        }
        try:
            partitionkey = key.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedEvent("record key is not UTF-8") from exc
        return cls(
            id=attrs["id"],
            source=attrs["source"],
            type=attrs["type"],
            time=time,
            partitionkey=partitionkey,
            originprovince=attrs["originprovince"],
            stream=attrs["stream"],
            streamseq=streamseq,
            schemaversion=schemaversion,
            data=value,
            subject=attrs.get("subject"),
            destprovince=attrs.get("destprovince"),
            traceparent=attrs.get("traceparent"),
            keyid=attrs["keyid"],
            signature=attrs["signature"],
            datacontenttype=attrs.get("datacontenttype", JSON_CONTENT_TYPE),
            extra={name: value for name, value in attrs.items() if name not in known},
        )


def event_source(province: str, service: str) -> str:
    """The ``source`` URI-reference of a service of a province node, e.g. ``/labornet/510000/jobs``."""
    return f"/labornet/{province}/{service}"


def encode_data(data: Mapping[str, Any] | Any) -> bytes:
    """Event data as compact UTF-8 JSON with sorted keys (pydantic models through ``model_dump(mode="json")``).

    Written by orjson (a tenth of the time of the standard library's encoder: an import signs and writes every
    row's event). What orjson refuses — an integer beyond 64 bits, a key that is not a string — the standard
    library writes as before; times and dataclasses go to it too, so what it refused (a ``datetime``) is still
    refused. The bytes are signed as they are, so a receiver never needs to write them again the same way."""
    dump = getattr(data, "model_dump", None)
    if callable(dump):
        data = dump(mode="json")
    try:
        return orjson.dumps(data, default=_refused, option=_DATA_OPTIONS)
    except TypeError:
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")


_DATA_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _refused(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON")

"""The bus contract of a service as an AsyncAPI 3.0 document, generated from its event list.

:func:`asyncapi_document` turns a service's :class:`~labornet.shared.contracts.EventContract` list into an
AsyncAPI 3.0.0 document: the Kafka servers, the service's channels (its ``events`` stream and ``inbox`` topic with
the province as an address parameter, and its ``deadletter``), what it sends and receives on each, and one message
per event type with the JSON Schema of the data (pydantic, serialization mode: what ``encode_data`` writes), the
CloudEvents Kafka binary-mode headers exactly as :meth:`Envelope.to_kafka` writes them, and the record key.

Every service serves its document at ``GET /asyncapi.json`` (:func:`asyncapi_router`); ``labornet asyncapi --out
docs/asyncapi`` writes the four of them to the repository, where the AsyncAPI project's parser validates them
(``tools/asyncapi``, part of ``make lint``). See docs/adr/0014-the-bus-contract-asyncapi.md.
"""

from __future__ import annotations

import functools
import importlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from labornet.shared.contracts import EventContract
from labornet.shared.envelope import CE_PREFIX, CONTENT_TYPE_HEADER, JSON_CONTENT_TYPE, SPECVERSION
from labornet.shared.outbox import ACK_IN_ANSWER, ACKNOWLEDGES, ACKNOWLEDGES_MAX
from labornet.shared.receipts import RECEIPT, Receipt
from labornet.shared.topics import PREFIX

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
SCHEMAS = "#/components/schemas/"
DEVELOPMENT_BOOTSTRAP = "127.0.0.1:9092"  # the default of LABORNET_KAFKA_BOOTSTRAP_SERVERS and `labornet broker`

# Patterns of the header values LaborNet writes (envelope.py, signing.py, observability.py).
PROVINCE_PATTERN = "[0-9]{2}0000"
UUID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
TIME_PATTERN = "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{6}Z$"
TRACEPARENT_PATTERN = "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
SIGNATURE_PATTERN = "^[A-Za-z0-9_-]{86}$"  # 64 bytes of Ed25519 signature, base64url without padding
POSITIVE_INTEGER_PATTERN = "^[1-9][0-9]*$"

BROADCAST_HEADERS = "CloudEventsBroadcastHeaders"
DIRECTED_HEADERS = "CloudEventsDirectedHeaders"
DEAD_LETTER_HEADERS = "DeadLetterHeaders"
DEAD_LETTER = "org.labornet.platform.dead-letter"

SIGNATURE_TEXT = (
    'Ed25519 signature (base64url, no padding) over `b"labornet-event-signature-v1\\x00"`, the UTF-8 JSON of '
    "every other context attribute as its wire string (keys sorted, no spaces; the `ce_` prefix dropped, "
    "`content-type` as `datacontenttype`, the record key as `partitionkey`, unknown `ce_` extensions included), "
    '`b"\\x00"` and the exact value bytes. Verify it with the key `ce_keyid` names in the federation trust list, '
    "which must list that key under `ce_originprovince` and as valid at `ce_time` (ADR 0004)."
)


def _document_description(service: str) -> str:
    return f"""The events the LaborNet **{service}** service of a province node publishes on the federation's Kafka bus,
and the events it reads there. Every province node runs the same service; the channels are parameterised by
province (GB/T 2260 code).

**Envelope.** Each event is one Kafka record in the CloudEvents 1.0 Kafka protocol binding, binary content mode:
the record value is the event data as compact UTF-8 JSON with sorted keys (`content-type: application/json`), the
context attributes are `ce_`-prefixed headers whose values are UTF-8 strings, and the record key is the aggregate
id (the CloudEvents `partitionkey` extension, not repeated as a header), so one aggregate's events stay in one
partition and in order. Besides the CloudEvents attributes every record carries the LaborNet extensions
`ce_originprovince`, `ce_stream` and `ce_streamseq` (gap-free per origin stream), `ce_schemaversion`,
`ce_keyid` and `ce_signature`; directed messages add `ce_destprovince`, and `ce_traceparent` carries the W3C
trace context when the event was caused by a traced request (ADR 0002).

**Signatures.** {SIGNATURE_TEXT} A record whose signature does not verify must not be applied; a LaborNet node
quarantines it.

**Directed messages and receipts.** A message on an `inbox` channel is addressed to one province and read by it
only (Kafka ACLs on topic names). Its receiver answers it with a signed receipt
(`{RECEIPT}`) on the sender's inbox, written in the transaction that applied it; the sender publishes the
message again, with backoff, until the receipt comes, so receivers drop repeats by `ce_id` (ADR 0009). A message
marked `ce_ackinanswer` may instead be acknowledged by the answer its receiver sends in the same transaction, which
lists it in `ce_acknowledges` (ADR 0039).

**Versions.** An event type ends in `.v<N>`; a breaking change of the data is a new type, an additive one raises
`ce_schemaversion`, and receivers ignore fields they do not know. Consumers dispatch on the exact `ce_type`."""


# JSON Schemas of the record's parts ----------------------------------------------------------------


def _header(description: str, **schema: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **schema}


def _ce_headers(service: str, channel: str) -> dict[str, Any]:
    """The headers of an event on ``channel`` (``events`` or ``inbox``) as :meth:`Envelope.to_kafka` writes them."""
    province = PROVINCE_PATTERN
    properties: dict[str, Any] = {
        CE_PREFIX + "specversion": _header("CloudEvents specification version", const=SPECVERSION),
        CE_PREFIX + "id": _header(
            "event id, a UUID; unique per event, repeated unchanged when a message is published again",
            pattern=UUID_PATTERN,
        ),
        CE_PREFIX + "source": _header(
            f"the node service that wrote the event, `/labornet/<province>/{service}`",
            pattern=f"^/labornet/{province}/{service}$",
        ),
        CE_PREFIX + "type": _header("event type, `org.labornet.<service>.<aggregate>.<verb>.v<N>`"),
        CE_PREFIX + "time": _header(
            "when the event was written: RFC 3339, UTC, microseconds, `Z`",
            format="date-time",
            pattern=TIME_PATTERN,
        ),
        CONTENT_TYPE_HEADER: _header(
            "media type of the record value (CloudEvents `datacontenttype`)", const=JSON_CONTENT_TYPE
        ),
        CE_PREFIX + "subject": _header("the subject of the event within its source, when the type has one"),
        CE_PREFIX + "originprovince": _header(
            "GB/T 2260 code of the province that wrote and signed the event", pattern=f"^{province}$"
        ),
        CE_PREFIX + "stream": _header(
            f"the origin's stream, `<origin>/<topic>`, e.g. `510000/labornet.510000.{service}.{channel}`",
            pattern=f"^{province}/{PREFIX}\\.{province}\\.{service}\\.{channel}$",
        ),
        CE_PREFIX + "streamseq": _header(
            "gap-free sequence number of the event within its stream, in commit order (decimal)",
            pattern=POSITIVE_INTEGER_PATTERN,
        ),
        CE_PREFIX + "schemaversion": _header(
            "revision of the data schema of this type (decimal); raised by additive changes",
            pattern=POSITIVE_INTEGER_PATTERN,
        ),
        CE_PREFIX + "traceparent": _header(
            "W3C trace context of the request that caused the event", pattern=TRACEPARENT_PATTERN
        ),
        CE_PREFIX + "keyid": _header(
            "id of the signing key as listed in the trust list, `<province>:<16 hex digits of SHA-256 of the key>`",
            minLength=1,
        ),
        CE_PREFIX + "signature": _header(SIGNATURE_TEXT, pattern=SIGNATURE_PATTERN),
    }
    required = [
        CE_PREFIX + name
        for name in ("specversion", "id", "source", "type", "time", "originprovince", "stream", "streamseq")
    ]
    required += [CE_PREFIX + "schemaversion", CE_PREFIX + "keyid", CE_PREFIX + "signature", CONTENT_TYPE_HEADER]
    schema: dict[str, Any] = {"type": "object"}
    if channel == "inbox":
        properties[CE_PREFIX + "destprovince"] = _header(
            "GB/T 2260 code of the province the message is addressed to; any other province refuses it",
            pattern=f"^{province}$",
        )
        required.append(CE_PREFIX + "destprovince")
        uuid = UUID_PATTERN.strip("^$")
        properties[CE_PREFIX + ACK_IN_ANSWER] = _header(
            "on a message that expects a receipt: its sender also takes acknowledgements carried by answers, so a "
            "receiver that answers it (a directed message to the sender on the same service) in the transaction "
            "that applied it may list its `ce_id` in the answer's `ce_acknowledges` instead of sending a receipt "
            "(ADR 0039)",
            const="true",
        )
        properties[CE_PREFIX + ACKNOWLEDGES] = _header(
            f"space-separated `ce_id`s (at most {ACKNOWLEDGES_MAX}) of messages from the destination province that "
            "the sender applied in the transaction that wrote this message; each acknowledged as a receipt with "
            "outcome `applied` would acknowledge it (ADR 0039)",
            pattern=f"^{uuid}( {uuid}){{0,{ACKNOWLEDGES_MAX - 1}}}$",
        )
        schema["description"] = (
            "CloudEvents Kafka binary-mode headers of a directed message (UTF-8 strings). Other `ce_` extensions "
            "may follow; they are covered by the signature."
        )
    else:
        schema["description"] = (
            "CloudEvents Kafka binary-mode headers of a broadcast event (UTF-8 strings); a broadcast event never "
            "carries `ce_destprovince`. Other `ce_` extensions may follow; they are covered by the signature."
        )
        schema["not"] = {"required": [CE_PREFIX + "destprovince"]}
    schema["required"] = required
    schema["properties"] = properties
    schema["additionalProperties"] = {"type": "string"}
    return schema


def _dead_letter_headers() -> dict[str, Any]:
    properties = {
        "x-labornet-dlq-reason": _header("why the consumer gave up (the quarantine reason, e.g. `bad-signature`)"),
        "x-labornet-dlq-error": _header("what went wrong, at most 1000 characters"),
        "x-labornet-dlq-consumer": _header("the consumer group that gave up, `labornet.<province>.<service>.<name>`"),
        "x-labornet-dlq-origin": _header("where the record was read, `<topic>/<partition>@<offset>`"),
        "x-labornet-dlq-record-sha256": _header(
            "SHA-256 over the original key, headers and value", pattern="^[0-9a-f]{64}$"
        ),
        "x-labornet-dlq-record-bytes": _header("size of the original record in bytes", pattern="^[0-9]+$"),
    }
    return {
        "type": "object",
        "description": "The original record's headers unchanged (whatever they were), followed by these.",
        "required": list(properties),
        "properties": properties,
        "additionalProperties": {"type": "string"},
    }


def _key(description: str) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "description": description}


AGGREGATE_KEY = (
    "the id of the aggregate the event is about (CloudEvents `partitionkey`): one aggregate's events share a "
    "partition and keep their order"
)
RECEIPT_KEY = (
    "the key of the directed message acknowledged (its `partitionkey`, or its `ce_id` when it has none): the receipt "
    "shares the partition of the answers about the same aggregate"
)


# The document --------------------------------------------------------------------------------------


def _type_title(event_type: str) -> str:
    parts = event_type.split(".")
    return " ".join(parts[2:]) if parts[:2] == ["org", "labornet"] else event_type


def _payload_schemas(models: Sequence[type[BaseModel]]) -> tuple[dict[type[BaseModel], dict[str, Any]], dict[str, Any]]:
    """Each model's payload schema (a reference) and the component schemas, names made unique by pydantic."""
    unique = list(dict.fromkeys(models))
    refs, definitions = models_json_schema(
        [(model, "serialization") for model in unique], ref_template=SCHEMAS + "{model}"
    )
    payloads = {model: dict(refs[(model, "serialization")]) for model in unique}
    return payloads, dict(definitions.get("$defs", {}))


def asyncapi_document(service: str, events: Sequence[EventContract], *, version: str) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of ``service``, which publishes ``events``."""
    types = [contract.type for contract in events]
    duplicates = sorted({name for name in types if types.count(name) > 1})
    if duplicates:
        raise ValueError(f"{service}: event types listed more than once: {', '.join(duplicates)}")
    broadcast = [contract for contract in events if contract.channel == "events"]
    directed = [contract for contract in events if contract.channel == "inbox"]
    receipt = EventContract(
        type=RECEIPT,
        model=Receipt,
        channel="inbox",
        summary="Receipt for a directed message: the receiver took it (applied or duplicate) or refused it.",
        description=(
            "Sent by the province a directed message was addressed to, to the sender's inbox, in the transaction "
            "that applied the message (or found it a duplicate). Until it arrives the sender publishes the message "
            "again with backoff. `rejected` means the message broke the receiver's rules and is in its quarantine; "
            "resending it cannot help. Receipts are never acknowledged."
        ),
    )
    inbox = [*directed, receipt] if directed else []
    if RECEIPT in types:
        raise ValueError(f"{service}: {RECEIPT} is the platform's; it is added to every service with an inbox")

    payloads, schemas = _payload_schemas([contract.model for contract in [*broadcast, *inbox]])
    platform_schemas = {
        BROADCAST_HEADERS: _ce_headers(service, "events"),
        DIRECTED_HEADERS: _ce_headers(service, "inbox"),
        DEAD_LETTER_HEADERS: _dead_letter_headers(),
    }
    clashes = sorted(set(platform_schemas) & set(schemas))
    if clashes:
        raise ValueError(f"{service}: event models named like the platform's header schemas: {', '.join(clashes)}")
    schemas.update(platform_schemas)

    messages: dict[str, Any] = {}
    for contract in [*broadcast, *inbox]:
        headers = DIRECTED_HEADERS if contract.channel == "inbox" else BROADCAST_HEADERS
        message: dict[str, Any] = {
            "name": contract.type,
            "title": _type_title(contract.type),
            "summary": contract.summary,
        }
        if contract.description:
            message["description"] = contract.description
        message["contentType"] = JSON_CONTENT_TYPE
        message["headers"] = {
            "type": "object",
            "allOf": [
                {"$ref": SCHEMAS + headers},
                {"type": "object", "properties": {CE_PREFIX + "type": {"type": "string", "const": contract.type}}},
            ],
        }
        message["payload"] = payloads[contract.model]
        if contract.type == RECEIPT:
            message["correlationId"] = {"$ref": "#/components/correlationIds/acknowledgedMessage"}
        elif contract.channel == "inbox":
            message["correlationId"] = {"$ref": "#/components/correlationIds/directedMessage"}
        message["bindings"] = {
            "kafka": {
                "key": _key(RECEIPT_KEY if contract.type == RECEIPT else AGGREGATE_KEY),
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        }
        message["tags"] = [{"name": "directed" if contract.channel == "inbox" else "broadcast"}]
        messages[contract.type] = message
    messages[DEAD_LETTER] = {
        "name": DEAD_LETTER,
        "title": "dead letter",
        "summary": "A record a consumer of this node gave up on, copied unchanged with the reason in headers.",
        "description": (
            "The key, headers and value of the original record as read (it may not be a valid CloudEvent at all), "
            "plus `x-labornet-dlq-*` headers. The record is also in the service's quarantine, where an operator "
            "replays or discards it (`/admin/v1/quarantine`)."
        ),
        "headers": {"$ref": SCHEMAS + DEAD_LETTER_HEADERS},
        "payload": {"description": "the original record's value, byte for byte"},
        "bindings": {"kafka": {"key": _key("the original record's key"), "bindingVersion": KAFKA_BINDING_VERSION}},
    }

    def refs(contracts: Sequence[EventContract]) -> dict[str, Any]:
        return {contract.type: {"$ref": f"#/components/messages/{contract.type}"} for contract in contracts}

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    group_id = {
        "type": "string",
        "description": f"`labornet.<own province>.{service}.<consumer>`",
        "pattern": f"^{PREFIX}\\.{PROVINCE_PATTERN}\\.{service}\\.[a-z0-9_-]+$",
    }
    receive_binding = {"kafka": {"groupId": group_id, "bindingVersion": KAFKA_BINDING_VERSION}}

    def operation_messages(channel: str, contracts: Sequence[EventContract]) -> list[dict[str, str]]:
        return [{"$ref": f"#/channels/{channel}/messages/{contract.type}"} for contract in contracts]

    if broadcast:
        channels["events"] = {
            "address": f"{PREFIX}.{{origin}}.{service}.events",
            "title": f"{service} events of a province",
            "summary": "The broadcast stream of one origin province: written by it only, read by every member.",
            "description": (
                "Public to the federation: never carries personal identifiers. Topics have "
                "`LABORNET_KAFKA_TOPIC_PARTITIONS` partitions (3 by default); the record key picks the partition."
            ),
            "parameters": {"origin": {"$ref": "#/components/parameters/origin"}},
            "messages": refs(broadcast),
        }
        operations["publishEvents"] = {
            "action": "send",
            "channel": {"$ref": "#/channels/events"},
            "title": "Publish this node's events",
            "summary": "The node publishes its events on its own stream (`origin` = its province).",
            "description": "Written through the transactional outbox: an event leaves only if its change committed.",
            "messages": operation_messages("events", broadcast),
        }
        operations["receivePartnerEvents"] = {
            "action": "receive",
            "channel": {"$ref": "#/channels/events"},
            "title": "Read every partner's events",
            "summary": "The node reads the stream of every other member province (`origin` = each partner).",
            "description": (
                "Each record's signature is checked against the trust list before it is applied; "
                "duplicates (same `ce_id`) are dropped."
            ),
            "bindings": receive_binding,
            "messages": operation_messages("events", broadcast),
        }
    if inbox:
        channels["inbox"] = {
            "address": f"{PREFIX}.{{destination}}.{service}.inbox",
            "title": f"{service} inbox of a province",
            "summary": "Directed messages to one province: any member may write it, only the destination reads it.",
            "description": (
                "Carries personal data for exactly one partner; the `ce_destprovince` header must name the "
                "province whose inbox it is. Receipts for the messages a province sent come back on its own inbox."
            ),
            "parameters": {"destination": {"$ref": "#/components/parameters/destination"}},
            "messages": refs(inbox),
        }
        reply = {
            "channel": {"$ref": "#/channels/inbox"},
            "messages": [{"$ref": f"#/channels/inbox/messages/{RECEIPT}"}],
        }
        operations["sendDirectedMessages"] = {
            "action": "send",
            "channel": {"$ref": "#/channels/inbox"},
            "title": "Send directed messages to a partner",
            "summary": "The node writes to the inbox of the province a message is for (`destination`).",
            "description": (
                "The message stays in the sender's outbox and is published again (15 s, doubling up to 10 min) "
                "until the destination's receipt arrives on the sender's own inbox."
            ),
            "messages": operation_messages("inbox", directed),
            "reply": reply,
        }
        operations["receiveDirectedMessages"] = {
            "action": "receive",
            "channel": {"$ref": "#/channels/inbox"},
            "title": "Read this node's inbox",
            "summary": "The node reads its own inbox (`destination` = its province) and answers each message.",
            "description": "A repeat is dropped by `ce_id` and answered with a receipt again.",
            "bindings": receive_binding,
            "messages": operation_messages("inbox", directed),
            "reply": reply,
        }
        operations["sendReceipts"] = {
            "action": "send",
            "channel": {"$ref": "#/channels/inbox"},
            "title": "Acknowledge directed messages",
            "summary": "The node answers each directed message it took with a receipt on the sender's inbox, unless "
            "a directed answer of the same transaction carries the acknowledgement (`ce_acknowledges`).",
            "messages": operation_messages("inbox", [receipt]),
        }
        operations["receiveReceipts"] = {
            "action": "receive",
            "channel": {"$ref": "#/channels/inbox"},
            "title": "Take receipts for the messages this node sent",
            "summary": "A receipt ends the resending of the message it names, when it comes from its destination.",
            "bindings": receive_binding,
            "messages": operation_messages("inbox", [receipt]),
        }
    channels["deadletter"] = {
        "address": f"{PREFIX}.{{province}}.{service}.deadletter",
        "title": f"{service} dead letters of a province",
        "summary": "Records one province's consumers gave up on; written and read by that province only.",
        "parameters": {"province": {"$ref": "#/components/parameters/province"}},
        "messages": {DEAD_LETTER: {"$ref": f"#/components/messages/{DEAD_LETTER}"}},
    }
    operations["deadLetter"] = {
        "action": "send",
        "channel": {"$ref": "#/channels/deadletter"},
        "title": "Dead-letter a record",
        "summary": "A consumer that gives up on a record copies it here (and into its quarantine).",
        "messages": [{"$ref": f"#/channels/deadletter/messages/{DEAD_LETTER}"}],
    }

    def province_parameter(description: str) -> dict[str, Any]:
        return {"description": f"{description} (GB/T 2260 code)", "examples": ["510000", "330000"]}

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": f"urn:labornet:bus:{service}",
        "info": {
            "title": f"LaborNet {service} events",
            "version": version,
            "description": _document_description(service),
            "tags": [{"name": "broadcast"}, {"name": "directed"}],
        },
        "defaultContentType": JSON_CONTENT_TYPE,
        "servers": {
            "development": {
                "host": DEVELOPMENT_BOOTSTRAP,
                "protocol": "kafka",
                "title": "Embedded broker",
                "description": (
                    "The embedded Kafka-protocol broker (Tansu, log in memory) that `labornet broker` and "
                    "`labornet up` run for development and tests; plaintext, no authentication."
                ),
            },
            "production": {
                "host": "{bootstrap}",
                "protocol": "kafka",
                "title": "Apache Kafka",
                "description": (
                    "The federation's Apache Kafka cluster (Strimzi). Each province connects with its own "
                    "`KafkaUser` (mutual TLS); prefix ACLs let it write and read `labornet.<own province>.` and "
                    "write partners' inbox topics and read their events topics, never read another province's inbox."
                ),
                "variables": {
                    "bootstrap": {
                        "description": "host:port of the cluster's bootstrap, as in LABORNET_KAFKA_BOOTSTRAP_SERVERS"
                    }
                },
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": schemas,
            "messages": messages,
            "parameters": {
                "origin": province_parameter("the province that wrote the stream"),
                "destination": province_parameter("the province the messages are addressed to"),
                "province": province_parameter("the province whose consumers gave up on the record"),
            },
            "correlationIds": {
                "directedMessage": {
                    "description": "the receipt that acknowledges this message names its `ce_id` in `event_id`",
                    "location": "$message.header#/ce_id",
                },
                "acknowledgedMessage": {
                    "description": "the `ce_id` of the directed message this receipt acknowledges",
                    "location": "$message.payload#/event_id",
                },
            },
        },
    }


# A service's document --------------------------------------------------------------------------------


def service_events(service: str) -> list[EventContract]:
    """``labornet.<service>.contracts.EVENTS``; empty for a service that has no contracts module."""
    name = f"labornet.{service}.contracts"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name in (name, f"labornet.{service}"):
            return []
        raise
    return list(module.EVENTS)


def service_version(service: str) -> str:
    return str(importlib.import_module(f"labornet.{service}").__version__)


def service_document(service: str, version: str | None = None) -> dict[str, Any]:
    return asyncapi_document(service, service_events(service), version=version or service_version(service))


def render(document: dict[str, Any]) -> str:
    """The text written to ``docs/asyncapi/<service>.json``."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def write_documents(out: Path, services: Sequence[str]) -> list[Path]:
    """Write ``<out>/<service>.json`` for each service; return the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for service in services:
        path = out / f"{service}.json"
        path.write_text(render(service_document(service)), "utf-8")
        written.append(path)
    return written


# Checking a record against a document ----------------------------------------------------------------


def _address_pattern(address: str) -> re.Pattern[str]:
    """A channel address such as ``labornet.{origin}.jobs.events`` as a regular expression of its topics."""
    parts = re.split(r"\{[^}]+\}", address)
    return re.compile("^" + "[^.]+".join(re.escape(part) for part in parts) + "$")


def record_problems(
    document: dict[str, Any], topic: str, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
) -> list[str]:
    """What is wrong with a Kafka record by ``document`` (empty when nothing): its type must be a message of the
    channel its topic belongs to, and its headers, value and key must validate against that message's schemas.

    Needs ``jsonschema`` (a development requirement, not one of the services)."""
    from jsonschema import Draft7Validator  # type: ignore[import-untyped]
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT7

    base = "urn:labornet:asyncapi"
    registry: Registry[Any] = Registry().with_resource(
        base, Resource.from_contents(document, default_specification=DRAFT7)
    )

    def errors(pointer: str, instance: Any) -> list[str]:
        validator = Draft7Validator({"$ref": f"{base}#{pointer}"}, registry=registry)
        found = validator.iter_errors(instance)
        return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in found]

    texts: dict[str, str] = {}
    for header, raw in headers:
        if header in texts:
            return [f"header {header} appears twice"]
        try:
            texts[header] = raw.decode("utf-8")
        except UnicodeDecodeError:
            return [f"header {header} is not UTF-8"]
    event_type = texts.get(CE_PREFIX + "type")
    channel = next(
        (name for name, item in document["channels"].items() if _address_pattern(item["address"]).match(topic)), None
    )
    if channel is None:
        return [f"topic {topic} is no channel of the document"]
    name = DEAD_LETTER if channel == "deadletter" else event_type  # a dead letter keeps the original's type
    if name not in document["channels"][channel]["messages"]:
        return [f"type {event_type!r} is not a message of channel {channel} ({topic})"]
    pointer = f"/components/messages/{name}"
    problems = [f"header {text}" for text in errors(pointer + "/headers", texts)]
    if name != DEAD_LETTER:  # whose value may be anything the consumer could not read
        try:
            data = json.loads(value or b"")
        except ValueError as exc:
            problems.append(f"value is not JSON: {exc}")
        else:
            problems += [f"data {text}" for text in errors(pointer + "/payload", data)]
    try:
        key_text = key.decode("utf-8") if key is not None else None
    except UnicodeDecodeError:
        problems.append("key is not UTF-8")
    else:
        problems += [f"key {text}" for text in errors(pointer + "/bindings/kafka/key", key_text)]
    return problems


class AsyncApiDocument(BaseModel):
    """An AsyncAPI 3.0.0 document (https://www.asyncapi.com/docs/reference/specification/v3.0.0)."""

    model_config = ConfigDict(extra="allow")
    asyncapi: str = Field(examples=[ASYNCAPI_VERSION])
    id: str = Field(examples=["urn:labornet:bus:jobs"])
    info: dict[str, Any]
    servers: dict[str, Any]
    channels: dict[str, Any]
    operations: dict[str, Any]
    components: dict[str, Any]


def asyncapi_router(service: str, version: str) -> APIRouter:
    """``GET /asyncapi.json``: the service's bus contract, built on first request from its event list."""
    router = APIRouter()

    @functools.cache
    def body() -> bytes:
        return json.dumps(service_document(service, version), ensure_ascii=False).encode("utf-8")

    @router.get("/asyncapi.json", tags=["contracts"], response_model=AsyncApiDocument)
    async def asyncapi() -> Response:
        """The AsyncAPI 3.0 document of the events this service publishes and reads on the federation's bus:
        topics, CloudEvents headers with the signature, record key and the JSON Schema of every event's data."""
        return Response(body(), media_type=JSON_CONTENT_TYPE)

    return router

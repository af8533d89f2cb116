"""The AsyncAPI generator: channels and operations from a service's event list, the JSON Schemas of the data lifted
into components, the CloudEvents headers as the envelope writes them, and GET /asyncapi.json."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, Field

from labornet.shared.asyncapi import (
    DEAD_LETTER,
    asyncapi_document,
    asyncapi_router,
    record_problems,
    service_document,
    service_events,
)
from labornet.shared.contracts import EventContract
from labornet.shared.envelope import Envelope, encode_data, event_source
from labornet.shared.keys import NodeKeys
from labornet.shared.receipts import RECEIPT, Receipt, ReceiptOutcome
from labornet.shared.signing import Signer
from labornet.shared.topics import events_topic, inbox_topic, stream_id

PUBLISHED = "org.labornet.jobs.vacancy.published.v1"
LETTER = "org.labornet.jobs.letter.sent.v1"


class Salary(BaseModel):
    min: int = Field(ge=0)
    max: int = Field(ge=0)


class Vacancy(BaseModel):
    id: str
    title: str = Field(max_length=80)
    salary: Salary
    kind: Literal["full-time", "part-time"]


class Letter(BaseModel):
    resident_id: str = Field(pattern=r"^\d{17}[\dX]$")
    salary: Salary


def contracts() -> list[EventContract]:
    return [
        EventContract(PUBLISHED, Vacancy, "events", "A vacancy was published", "Everything a partner lists."),
        EventContract(LETTER, Letter, "inbox", "A letter to one province"),
    ]


@pytest.fixture
def signer(node_keys: dict[str, NodeKeys]) -> Signer:
    return Signer.from_file(node_keys["510000"].signing_key, "510000")


def envelope(
    signer: Signer, event_type: str, data: Any, *, destination: str | None = None, **changes: Any
) -> tuple[str, Envelope]:
    topic = inbox_topic(destination, "jobs") if destination else events_topic("510000", "jobs")
    values: dict[str, Any] = {
        "id": "3f1c0a52-8a5e-4f7e-9a7e-0c9b6b1d2e3f",
        "source": event_source("510000", "jobs"),
        "type": event_type,
        "time": datetime(2026, 11, 26, 4, 0, tzinfo=UTC),
        "partitionkey": "510000-V-1",
        "originprovince": "510000",
        "destprovince": destination,
        "stream": stream_id("510000", topic),
        "streamseq": 7,
        "schemaversion": 1,
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "data": encode_data(data),
    }
    values.update(changes)
    return topic, signer.sign(Envelope(**values))


def problems(document: dict[str, Any], topic: str, signed: Envelope) -> list[str]:
    key, value, headers = signed.to_kafka()
    return record_problems(document, topic, key, value, headers)


VACANCY = {"id": "510000-V-1", "title": "川菜厨师", "salary": {"min": 5000, "max": 8000}, "kind": "full-time"}


def test_channels_operations_and_messages_follow_the_event_list() -> None:
    document = asyncapi_document("jobs", contracts(), version="1.2.3")
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["version"] == "1.2.3"
    assert {name: c["address"] for name, c in document["channels"].items()} == {
        "events": "labornet.{origin}.jobs.events",
        "inbox": "labornet.{destination}.jobs.inbox",
        "deadletter": "labornet.{province}.jobs.deadletter",
    }
    assert list(document["channels"]["events"]["messages"]) == [PUBLISHED]
    assert list(document["channels"]["inbox"]["messages"]) == [LETTER, RECEIPT]
    actions = {name: (op["action"], op["channel"]["$ref"]) for name, op in document["operations"].items()}
    assert actions == {
        "publishEvents": ("send", "#/channels/events"),
        "receivePartnerEvents": ("receive", "#/channels/events"),
        "sendDirectedMessages": ("send", "#/channels/inbox"),
        "receiveDirectedMessages": ("receive", "#/channels/inbox"),
        "sendReceipts": ("send", "#/channels/inbox"),
        "receiveReceipts": ("receive", "#/channels/inbox"),
        "deadLetter": ("send", "#/channels/deadletter"),
    }
    directed = document["operations"]["sendDirectedMessages"]
    assert directed["messages"] == [{"$ref": f"#/channels/inbox/messages/{LETTER}"}]
    assert directed["reply"]["messages"] == [{"$ref": f"#/channels/inbox/messages/{RECEIPT}"}]
    message = document["components"]["messages"][PUBLISHED]
    assert (message["summary"], message["description"]) == ("A vacancy was published", "Everything a partner lists.")
    assert message["bindings"]["kafka"]["key"]["type"] == "string"
    assert document["components"]["messages"][LETTER]["correlationId"] == {
        "$ref": "#/components/correlationIds/directedMessage"
    }


def test_a_service_without_directed_messages_has_no_inbox_and_no_receipt() -> None:
    document = asyncapi_document("jobs", contracts()[:1], version="1")
    assert set(document["channels"]) == {"events", "deadletter"}
    assert RECEIPT not in document["components"]["messages"]
    assert "Receipt" not in document["components"]["schemas"]
    empty = asyncapi_document("jobs", [], version="1")
    assert set(empty["channels"]) == {"deadletter"}
    assert set(empty["components"]["messages"]) == {DEAD_LETTER}


def test_payload_definitions_are_lifted_into_components_and_every_reference_resolves() -> None:
    document = asyncapi_document("jobs", contracts(), version="1")
    schemas = document["components"]["schemas"]
    assert {"Vacancy", "Letter", "Salary", "Receipt", "ReceiptOutcome"} <= set(schemas)
    assert document["components"]["messages"][PUBLISHED]["payload"] == {"$ref": "#/components/schemas/Vacancy"}
    assert schemas["Vacancy"]["properties"]["salary"] == {"$ref": "#/components/schemas/Salary"}

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in refs(v)]
        return [r for v in node for r in refs(v)] if isinstance(node, list) else []

    for ref in refs(document):
        target: Any = document
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]  # KeyError: a reference to nothing
    assert "$defs" not in str(document)


def test_two_models_of_one_name_keep_distinct_schemas() -> None:
    class Employer(BaseModel):
        name: str

    first = Employer

    class Employer(BaseModel):  # type: ignore[no-redef]
        credit_code: str

    events = [
        EventContract("org.labornet.jobs.a.happened.v1", first, "events", "a"),
        EventContract("org.labornet.jobs.b.happened.v1", Employer, "events", "b"),
    ]
    document = asyncapi_document("jobs", events, version="1")
    payloads = [document["components"]["messages"][e.type]["payload"]["$ref"] for e in events]
    assert len(set(payloads)) == 2
    properties = [document["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"] for ref in payloads]
    assert [list(p) for p in properties] == [["name"], ["credit_code"]]


def test_a_type_listed_twice_or_the_platform_receipt_is_refused() -> None:
    with pytest.raises(ValueError, match=PUBLISHED):
        asyncapi_document("jobs", [*contracts(), contracts()[0]], version="1")
    with pytest.raises(ValueError, match="platform"):
        asyncapi_document("jobs", [EventContract(RECEIPT, Receipt, "inbox", "mine")], version="1")


def test_signed_envelopes_validate_against_their_message(signer: Signer) -> None:
    document = asyncapi_document("jobs", contracts(), version="1")
    topic, broadcast = envelope(signer, PUBLISHED, VACANCY)
    assert problems(document, topic, broadcast) == []
    letter = {"resident_id": "51160219900101123X", "salary": {"min": 1, "max": 2}}
    topic, directed = envelope(signer, LETTER, letter, destination="330000", traceparent=None, subject="x")
    assert problems(document, topic, directed) == []
    receipt = Receipt(
        event_id=directed.id, event_type=LETTER, outcome=ReceiptOutcome.APPLIED, received_at=datetime.now(UTC)
    )
    topic, answer = envelope(signer, RECEIPT, receipt, destination="330000", partitionkey=directed.id)
    assert problems(document, topic, answer) == []


def test_what_breaks_the_contract_is_found(signer: Signer) -> None:
    document = asyncapi_document("jobs", contracts(), version="1")
    topic, good = envelope(signer, PUBLISHED, VACANCY)
    key, value, headers = good.to_kafka()

    def check(topic: str = topic, key: bytes | None = key, value: bytes = value, headers: Any = headers) -> str:
        return " | ".join(record_problems(document, topic, key, value, headers))

    assert "salary" in check(value=encode_data(VACANCY | {"salary": {"min": -1, "max": 2}}))
    assert "kind" in check(value=encode_data(VACANCY | {"kind": "seasonal"}))
    assert "ce_signature" in check(headers=[h for h in headers if h[0] != "ce_signature"])
    assert "ce_time" in check(headers=[(n, b"2026-11-26 04:00" if n == "ce_time" else v) for n, v in headers])
    assert "content-type" in check(headers=[(n, b"text/plain" if n == "content-type" else v) for n, v in headers])
    assert "ce_destprovince" in check(headers=[*headers, ("ce_destprovince", b"330000")])
    assert "key" in check(key=None)
    assert "not a message of channel inbox" in check(topic=inbox_topic("330000", "jobs"))
    assert "no channel" in check(topic="labornet.510000.rights.events")
    assert "not UTF-8" in check(headers=[*headers, ("ce_extra", b"\xff")])
    _, directed = envelope(signer, LETTER, {"resident_id": "1", "salary": {"min": 1, "max": 2}}, destination="330000")
    found = problems(document, inbox_topic("330000", "jobs"), directed)
    assert any("resident_id" in p for p in found), found
    _, stray = envelope(signer, LETTER, {"resident_id": "51160219900101123X", "salary": {"min": 1, "max": 2}})
    assert "ce_destprovince" in " ".join(problems(document, inbox_topic("330000", "jobs"), stray))


def test_service_events_of_a_service_without_contracts_module_is_empty() -> None:
    assert service_events("nosuchservice") == []
    assert set(service_document("nosuchservice", "0.0.1")["channels"]) == {"deadletter"}


async def test_the_document_is_served_at_asyncapi_json() -> None:
    app = FastAPI()
    app.include_router(asyncapi_router("jobs", "9.9.9"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node") as client:
        response = await client.get("/asyncapi.json")
        openapi = (await client.get("/openapi.json")).json()
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == service_document("jobs", "9.9.9")
    schema = openapi["paths"]["/asyncapi.json"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/AsyncApiDocument"}


def test_a_dead_letter_is_the_original_record_with_the_reasons(signer: Signer) -> None:
    document = asyncapi_document("jobs", contracts(), version="1")
    _, original = envelope(signer, PUBLISHED, VACANCY)
    key, _, headers = original.to_kafka()
    reasons = [
        ("x-labornet-dlq-reason", b"bad-signature"),
        ("x-labornet-dlq-error", b"event 1: signature does not match headers and body"),
        ("x-labornet-dlq-consumer", b"labornet.510000.jobs.vacancies"),
        ("x-labornet-dlq-origin", b"labornet.330000.jobs.events/0@12"),
        ("x-labornet-dlq-record-sha256", b"0" * 64),
        ("x-labornet-dlq-record-bytes", b"512"),
    ]
    topic = "labornet.510000.jobs.deadletter"
    assert record_problems(document, topic, key, b"not json", [*headers, *reasons]) == []
    missing = record_problems(document, topic, key, b"not json", [*headers, *reasons[1:]])
    assert any("x-labornet-dlq-reason" in problem for problem in missing), missing

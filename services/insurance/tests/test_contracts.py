"""The insurance service's contracts, checked against what it really does: a Zhejiang node served by uvicorn and
a Sichuan node driven through its service layer exchange their directed messages (taken from each outbox and
applied by the other's handlers, the bus minus Kafka) through every step of the saga. Every response of the main
operations keeps the keys it always had and validates against the operation's OpenAPI schema; every event both
outboxes hold validates against the JSON Schema of its contract, and every contract is seen."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator, FormatChecker
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine

from labornet.insurance.app import create_app
from labornet.insurance.contracts import EVENTS
from labornet.insurance.domain.transfer import Reason
from labornet.insurance.entrypoints.schemas import (
    BenefitConfigView,
    InsuredPersonView,
    SettlementView,
    TransferDetail,
    TransferView,
)
from labornet.insurance.service_layer.records import PersonIn, add_person, ensure_config
from labornet.insurance.service_layer.transfers import TransferService
from labornet.shared.db import create_engine, sessionmaker
from labornet.shared.envelope import Envelope
from labornet.shared.identifiers import make_resident_id
from labornet.shared.keys import NodeKeys
from labornet.shared.migrations import upgrade
from labornet.shared.outbox import Outbox
from labornet.shared.settings import Settings
from labornet.shared.signing import Signer
from labornet.shared.testing import bearer, eventually, outbox_events, serving
from labornet.shared.workdays import WorkCalendar

ZJ, SC = "330000", "510000"
PLATFORM = "org.labornet.platform."

# What each main operation answered before its response was typed: a typed response keeps every one of them.
TRANSFER_KEYS = {
    "id",
    "side",
    "peer_case",
    "resident_id",
    "person_name",
    "from_province",
    "to_province",
    "reason",
    "new_employer_credit_code",
    "state",
    "filed_by",
    "filed_at",
    "answer_due",
    "complete_due",
    "sheet",
    "entitlement",
    "refusal_reason",
    "closed_at",
    "version",
    "name_on_record",
    "name_mismatch",
    "overdue",
}
STEP_KEYS = {"at", "state", "province", "note"}
SHEET_KEYS = {
    "cumulative_months",
    "actual_months",
    "deemed_months",
    "former_migrant_months",
    "months_used",
    "months_available",
    "benefit_months_paid",
    "benefit_months_remaining",
    "monthly_standard",
    "fund_due",
    "earlier_unclaimed_months",
    "entitled_months",
}
ENTITLEMENT_KEYS = {"months_available", "entitled_months", "remaining_months", "monthly_standard", "remaining_amount"}
RECORD_KEYS = {
    "resident_id",
    "name",
    "hukou_division",
    "status",
    "employer_credit_code",
    "months_used",
    "benefit_months_paid",
    "earlier_unclaimed_months",
    "transfer_lock",
    "version",
    "created_at",
    "updated_at",
    "periods",
}
PERIOD_KEYS = {"start_month", "end_month", "kind", "province", "employer_credit_code", "carried_in_by"} | {
    "carried_out_by"
}
SETTLEMENT_KEYS = {
    "id",
    "direction",
    "transfer_id",
    "peer_case",
    "resident_id",
    "from_province",
    "to_province",
    "amount",
    "due_month",
    "status",
    "created_at",
    "paid_at",
    "paid_by",
    "payment_reference",
}
CONFIG_KEYS = {
    "province",
    "monthly_standard",
    "minimum_wage",
    "subsistence_line",
    "answer_limit_days",
    "transfer_limit_days",
    "fund_multiplier",
    "updated_at",
}


def claimant(n: int, division: str, province_months: tuple[str, str]) -> dict[str, Any]:
    return {
        "resident_id": make_resident_id(division, date(1988, 3, 7), n),
        "name": f"王晓明{n}",
        "hukou_division": division,
        "status": "unemployed-claiming",
        "benefit_months_paid": 3,
        "periods": [{"start_month": province_months[0], "end_month": province_months[1], "kind": "actual"}],
    }


@dataclass
class Federation:
    """Zhejiang over HTTP, Sichuan through its service layer, and the messages between them."""

    client: httpx.AsyncClient
    zhejiang: TransferService  # the Zhejiang node's handlers, on its database
    zhejiang_engine: AsyncEngine
    sichuan: TransferService
    sichuan_engine: AsyncEngine
    keys: dict[str, NodeKeys]
    taken: dict[str, int] = field(default_factory=lambda: {ZJ: 0, SC: 0})
    published: list[Envelope] = field(default_factory=list)

    def officer(self) -> dict[str, str]:
        return bearer(self.keys[ZJ], "officer", sub=f"officer-{ZJ}")

    def worker(self, resident_id: str) -> dict[str, str]:
        return bearer(self.keys[ZJ], "worker", sub=resident_id)

    async def exchange(self) -> None:
        """Deliver every message either node's insurance code has written since the last exchange, until both are
        quiet. The platform's own rows (receipts, dead letters of strays a served node read from the shared test
        broker) stay out."""
        moved = True
        while moved:
            moved = False
            for origin, engine, destination in (
                (ZJ, self.zhejiang_engine, self.sichuan),
                (SC, self.sichuan_engine, self.zhejiang),
            ):
                envelopes, self.taken[origin] = await outbox_events(engine, self.taken[origin])
                for envelope in envelopes:
                    if envelope.originprovince != origin or envelope.type.startswith(PLATFORM):
                        continue
                    self.published.append(envelope)
                    moved = True
                    handler = destination.handlers()[envelope.type]
                    async with destination.sessions() as session, session.begin():
                        await handler(session, envelope)


@pytest.fixture
async def federation(
    make_settings: Callable[..., Settings], database_url: str, new_database_url: Any, node_keys: dict[str, NodeKeys]
) -> AsyncIterator[Federation]:
    settings = make_settings(ZJ, "insurance", database_url)
    sichuan_engine = create_engine(await new_database_url())
    await upgrade(sichuan_engine, "labornet.insurance:migrations")
    async with sessionmaker(sichuan_engine)() as session, session.begin():
        await ensure_config(session, SC)
    zhejiang_engine = create_engine(database_url)

    def service(province: str, engine: AsyncEngine) -> TransferService:
        signer = Signer.from_file(node_keys[province].signing_key, province)
        return TransferService(
            province=province,
            sessions=sessionmaker(engine),
            outbox=Outbox(province, "insurance", signer),
            calendar=WorkCalendar(),
            members=[SC, ZJ],
        )

    async with serving(create_app(settings)) as client:

        async def ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await eventually(ready, timeout_s=60)
        zhejiang, sichuan = service(ZJ, zhejiang_engine), service(SC, sichuan_engine)
        yield Federation(client, zhejiang, zhejiang_engine, sichuan, sichuan_engine, node_keys)
    await zhejiang_engine.dispose()
    await sichuan_engine.dispose()


async def walk(fed: Federation) -> dict[str, httpx.Response]:
    """Every operation of the service, through every step of the saga; the answers by operation."""
    client, answers = fed.client, {}

    async def call(name: str, method: str, url: str, status: int, **kwargs: Any) -> Any:
        response = await client.request(method, url, **kwargs)
        assert response.status_code == status, f"{name}: {response.status_code} {response.text}"
        answers[name] = response
        return response.json()

    # Sichuan holds the records of the people who move to Zhejiang
    moving, cancelling = claimant(1, "511602", ("2015-01", "2022-12")), claimant(2, "511602", ("2016-01", "2023-06"))
    async with fed.sichuan.sessions() as session, session.begin():
        for body in (moving, cancelling):
            await add_person(session, SC, PersonIn.model_validate(body))
    unknown_in_sichuan = make_resident_id("511602", date(1988, 3, 7), 3)

    # a move to Zhejiang that completes with money: contact letter, information sheet, receipt, settlement
    filed = await call(
        "file_transfer",
        "POST",
        "/api/v1/transfers",
        201,
        headers=fed.worker(moving["resident_id"]),
        json={"from_province": SC, "reason": "claimant-relocation", "name": moving["name"]},
    )
    await fed.exchange()
    received = await fed.sichuan.listed(limit=10, side="sending", state="received")
    await fed.sichuan.answer(received[0].id, send_sheet=True, reason=None)
    await fed.exchange()
    completed = await call(
        "get_transfer", "GET", f"/api/v1/transfers/{filed['id']}", 200, headers=fed.worker(moving["resident_id"])
    )
    assert completed["state"] == "completed" and completed["sheet"] is not None, completed

    # a request Sichuan refuses (no record there), and one the worker withdraws in time
    await call(
        "file_unknown",
        "POST",
        "/api/v1/transfers",
        201,
        headers=fed.worker(unknown_in_sichuan),
        json={"from_province": SC, "reason": "return-to-hukou", "name": "赵六"},
    )
    withdrawn = await call(
        "file_cancelled",
        "POST",
        "/api/v1/transfers",
        201,
        headers=fed.worker(cancelling["resident_id"]),
        json={"from_province": SC, "reason": "claimant-relocation", "name": cancelling["name"]},
    )
    await fed.exchange()
    await call(
        "cancel_transfer",
        "POST",
        f"/api/v1/transfers/{withdrawn['id']}/cancel",
        200,
        headers=fed.worker(cancelling["resident_id"]),
    )
    await fed.exchange()
    await call("list_transfers", "GET", "/api/v1/transfers", 200, headers=fed.officer(), params={"limit": 2})

    # Zhejiang's records: one by one, in bulk, read back
    leaving = claimant(4, "330106", ("2014-01", "2023-12"))
    await call("create_person", "POST", "/api/v1/insured-persons", 201, headers=fed.officer(), json=leaving)
    rows = "\n".join(
        [
            "resident_id,name,hukou_division,status,employer_credit_code,months_used,benefit_months_paid,"
            "start_month,end_month,kind,period_employer_credit_code",
            f"{make_resident_id('330106', date(1990, 5, 17), 5)},甲,330106,insured-employed,,0,0,"
            "2018-01,2020-12,actual,",
        ]
    )
    await call(
        "import_persons",
        "POST",
        "/api/v1/insured-persons/import",
        200,
        headers=fed.officer() | {"Content-Type": "text/csv"},
        content=rows + "\n",
    )
    await call("get_person", "GET", f"/api/v1/insured-persons/{leaving['resident_id']}", 200, headers=fed.officer())

    # Zhejiang as the sending office: its officer answers, the receipt schedules the money it pays
    await fed.sichuan.file(
        resident_id=leaving["resident_id"],
        name=leaving["name"],
        from_province=ZJ,
        reason=Reason.CLAIMANT_RELOCATION,
        new_employer=None,
        filed_by="worker",
    )
    await fed.exchange()
    letters = (await call("list_sending", "GET", "/api/v1/transfers", 200, headers=fed.officer()))["items"]
    sending = next(case for case in letters if case["side"] == "sending" and case["state"] == "received")
    await call(
        "answer_transfer",
        "POST",
        f"/api/v1/transfers/{sending['id']}/answer",
        200,
        headers=fed.officer(),
        json={"decision": "send-sheet"},
    )
    await fed.exchange()
    settlements = await call("list_settlements", "GET", "/api/v1/settlements", 200, headers=fed.officer())
    outgoing = next(s for s in settlements["items"] if s["direction"] == "outgoing")
    await call(
        "mark_paid",
        "POST",
        f"/api/v1/settlements/{outgoing['id']}/paid",
        200,
        headers=fed.officer(),
        json={"payment_reference": "ZJ-2026-12-0042"},
    )
    await fed.exchange()

    config = await call("get_config", "GET", "/api/v1/benefit-config", 200)
    await call(
        "put_config",
        "PUT",
        "/api/v1/benefit-config",
        200,
        headers=fed.officer(),
        json={k: config[k] for k in CONFIG_KEYS - {"province", "updated_at"}},
    )
    return answers


def keys_of(items: list[dict[str, Any]]) -> set[str]:
    assert items, "an empty list shows no keys"
    return set().union(*(item.keys() for item in items))


async def test_main_operations_keep_their_keys_and_match_their_schemas(federation: Federation) -> None:
    answers = await walk(federation)
    body = {name: response.json() for name, response in answers.items()}

    for name in ("file_transfer", "file_unknown", "file_cancelled", "cancel_transfer", "answer_transfer"):
        assert set(body[name]) == TRANSFER_KEYS, name
    assert set(body["get_transfer"]) == TRANSFER_KEYS | {"timeline"}
    assert keys_of(body["get_transfer"]["timeline"]) == STEP_KEYS
    assert set(body["get_transfer"]["sheet"]) == SHEET_KEYS
    assert set(body["get_transfer"]["entitlement"]) == ENTITLEMENT_KEYS
    assert set(body["answer_transfer"]["sheet"]) == SHEET_KEYS
    assert set(body["list_transfers"]) == {"items", "next_after"}
    assert body["list_transfers"]["next_after"] == body["list_transfers"]["items"][-1]["id"]
    assert keys_of(body["list_transfers"]["items"]) == TRANSFER_KEYS

    assert body["create_person"] == {"resident_id": body["get_person"]["resident_id"], "periods": 1}
    assert body["import_persons"] == {"imported_persons": 1, "imported_periods": 1}
    assert set(body["get_person"]) == RECORD_KEYS
    assert keys_of(body["get_person"]["periods"]) == PERIOD_KEYS

    assert set(body["list_settlements"]) == {"items"}
    assert keys_of(body["list_settlements"]["items"]) == SETTLEMENT_KEYS
    assert set(body["mark_paid"]) == SETTLEMENT_KEYS
    assert set(body["get_config"]) == set(body["put_config"]) == CONFIG_KEYS

    # the values keep their JSON types: money as text with two decimals, months as their first day, times in
    # ISO 8601 with their offset (SQLite hands them back naive; they are shown in UTC like PostgreSQL's)
    assert (body["mark_paid"]["amount"], body["mark_paid"]["status"]) == ("65835.00", "paid")
    assert (body["get_config"]["monthly_standard"], body["get_config"]["fund_multiplier"]) == ("2090.00", "1.50")
    assert body["get_transfer"]["sheet"]["fund_due"] == "42075.00"
    assert body["get_person"]["periods"][0]["start_month"] == "2014-01-01"
    times = [body["get_transfer"]["filed_at"], body["get_person"]["created_at"], body["get_config"]["updated_at"]]
    assert all(datetime.fromisoformat(time).utcoffset() == timedelta(0) for time in times), times

    openapi = (await federation.client.get("/openapi.json")).json()
    for name, response in answers.items():
        operation = openapi["paths"][openapi_path(openapi, response.request)][response.request.method.lower()]
        schema = operation["responses"][str(response.status_code)]["content"]["application/json"]["schema"]
        validator = Draft202012Validator(schema | {"components": openapi["components"]}, format_checker=FormatChecker())
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(response.json())]
        assert not errors, f"{name}: {errors}"


def openapi_path(openapi: dict[str, Any], request: httpx.Request) -> str:
    """The OpenAPI path template a request's path matches (a literal path before a template)."""
    path = request.url.path
    if path in openapi["paths"]:
        return path
    parts = path.split("/")
    for template in openapi["paths"]:
        pattern = template.split("/")
        if len(pattern) == len(parts) and all(
            p == a or (p.startswith("{") and p.endswith("}")) for p, a in zip(pattern, parts, strict=True)
        ):
            return str(template)
    raise AssertionError(f"no OpenAPI path for {path}")


async def test_every_published_event_validates_against_its_contract(federation: Federation) -> None:
    await walk(federation)
    contracts = {contract.type: contract for contract in EVENTS}
    assert len(contracts) == len(EVENTS), "each event type is listed once"
    seen = {envelope.type for envelope in federation.published}
    assert seen - set(contracts) == set(), "every event type published is listed"
    assert set(contracts) - seen == set(), "every event type listed is published on the walk"
    for envelope in federation.published:
        contract = contracts[envelope.type]
        assert contract.channel == ("inbox" if envelope.destprovince else "events"), envelope.type
        validator = Draft202012Validator(contract.model.model_json_schema(), format_checker=FormatChecker())
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(envelope.json())]
        assert not errors, f"{envelope.type}: {errors}"
        contract.model.model_validate(envelope.json())


async def test_every_operation_documents_a_typed_answer_and_its_problems(federation: Federation) -> None:
    openapi = (await federation.client.get("/openapi.json")).json()
    operations = [
        (path, method, operation)
        for path, methods in openapi["paths"].items()
        for method, operation in methods.items()
        if "insurance" in operation.get("tags", [])
    ]
    assert len(operations) == 12
    for path, method, operation in operations:
        answers = operation["responses"]
        success = [status for status in answers if status.startswith("2")]
        assert len(success) == 1, (method, path, success)
        schema = answers[success[0]]["content"]["application/json"]["schema"]
        assert schema.get("$ref", "").startswith("#/components/schemas/"), (method, path, schema)
        problems = [status for status in answers if status[0] in "45"]
        for status in problems:
            documented = answers[status]["content"]["application/problem+json"]["schema"]
            assert documented == {"$ref": "#/components/schemas/ProblemDetails"}, (method, path, status)
        needs_token = path != "/api/v1/benefit-config" or method != "get"
        assert ("401" in problems) == needs_token, (method, path)


async def test_a_client_sends_back_the_shape_it_read(federation: Federation) -> None:
    client = federation.client
    # a transfer names the person as transfers show it (person_name); the older `name` still works
    mover = make_resident_id("511602", date(1988, 3, 7), 6)
    body = {"from_province": SC, "reason": "return-to-hukou", "person_name": "钱七"}
    filed = await client.post("/api/v1/transfers", headers=federation.worker(mover), json=body)
    assert (filed.status_code, filed.json()["person_name"]) == (201, "钱七"), filed.text
    other = make_resident_id("511602", date(1988, 3, 7), 7)
    older = await client.post(
        "/api/v1/transfers", headers=federation.worker(other), json=body | {"person_name": None, "name": "孙八"}
    )
    assert (older.status_code, older.json()["person_name"]) == (201, "孙八"), older.text
    for wrong in ({"person_name": None}, {"name": "钱七七"}):
        refused = await client.post("/api/v1/transfers", headers=federation.worker(other), json=body | wrong)
        assert refused.status_code == 422 and "person_name" in refused.text, refused.text

    # a record's months as records show them (the first day) or as the month alone
    record = claimant(8, "330106", ("2015-01-01", "2019-12-01"))
    record["periods"].append({"start_month": "2020-01", "end_month": "2021-06-01", "kind": "deemed"})
    created = await client.post("/api/v1/insured-persons", headers=federation.officer(), json=record)
    assert created.status_code == 201, created.text
    read = (await client.get(f"/api/v1/insured-persons/{record['resident_id']}", headers=federation.officer())).json()
    assert [(p["start_month"], p["end_month"], p["kind"]) for p in read["periods"]] == [
        ("2015-01-01", "2019-12-01", "actual"),
        ("2020-01-01", "2021-06-01", "deemed"),
    ]
    mid_month = claimant(9, "330106", ("2015-01-15", "2019-12-01"))
    answer = await client.post("/api/v1/insured-persons", headers=federation.officer(), json=mid_month)
    assert answer.status_code == 422 and "periods.0.start_month" in answer.text, answer.text
    overlapping = claimant(10, "330106", ("2015-01-01", "2019-12"))
    overlapping["periods"].append({"start_month": "2019-12-01", "end_month": "2020-03"})
    answer = await client.post("/api/v1/insured-persons", headers=federation.officer(), json=overlapping)
    assert answer.status_code == 422 and "overlap" in answer.text, answer.text

    # the benefit configuration as read is a valid update; another province's is not
    config = (await client.get("/api/v1/benefit-config")).json()
    raised = config | {"monthly_standard": "2150.00"}
    updated = await client.put("/api/v1/benefit-config", headers=federation.officer(), json=raised)
    assert (updated.status_code, updated.json()["monthly_standard"]) == (200, "2150.00"), updated.text
    assert updated.json()["updated_at"] != config["updated_at"]
    elsewhere = await client.put("/api/v1/benefit-config", headers=federation.officer(), json=raised | {"province": SC})
    assert elsewhere.status_code == 422 and "body.province" in elsewhere.text, elsewhere.text


@pytest.mark.parametrize("view", [TransferView, TransferDetail, InsuredPersonView, SettlementView, BenefitConfigView])
def test_the_documented_examples_are_answers_the_service_could_give(view: type[BaseModel]) -> None:
    examples = view.model_json_schema(mode="serialization")["examples"]
    assert examples
    for example in examples:
        assert view.model_validate(example).model_dump(mode="json") == example

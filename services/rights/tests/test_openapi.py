"""The rights API's contract: every operation documents a typed answer and its problems, and what the service
really answers matches that documentation and keeps every key clients already read.

The key sets below are those the API answered before its responses were typed (when routes returned plain
dicts): a response model drops any key it does not declare, so a key missing from a model shows here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from sqlalchemy import update

from labornet.rights.adapters.tables import rights_case
from labornet.rights.app import build_spec, create_app
from labornet.rights.config import RightsSettings
from labornet.rights.domain.case import Case
from labornet.rights.entrypoints.schemas import CaseSummary, CaseView, FederationStatistics
from labornet.shared.app import create_service_app
from labornet.shared.clock import today_in_china
from labornet.shared.db import create_engine
from labornet.shared.identifiers import make_resident_id, mask_name, mask_phone, mask_resident_id
from labornet.shared.keys import NodeKeys
from labornet.shared.settings import Settings
from labornet.shared.testing import bearer, serving

SC = "510000"
WANG = make_resident_id("511602", date(1985, 4, 12), 37)
LI = make_resident_id("510104", date(1992, 8, 1), 12)
CASES = "/api/v1/cases"

CASE_KEYS = {
    "id",
    "version",
    "home_province",
    "handling_province",
    "holder",
    "status",
    "closure_reason",
    "category",
    "sector",
    "complainant",
    "employer",
    "work_place",
    "work_place_name",
    "period",
    "amount_owed",
    "workers_affected",
    "evidence",
    "facts",
    "filed_at",
    "referred_at",
    "acceptance_due",
    "accepted_at",
    "investigation_due",
    "extended",
    "concluded_at",
    "amount_recovered",
    "workers_paid",
    "declined_by",
    "side",
    "overdue",
    "escalated",
    "withdrawal_requested_at",
    "redacted",
}
NESTED_KEYS = {
    "complainant": {"resident_id", "name", "phone"},
    "employer": {"name", "credit_code", "address", "province"},
    "work_place": {"division_code", "site"},
    "period": {"start", "end"},
}
EVIDENCE_KEYS = {"name", "sha256", "size"}
ENTRY_KEYS = {"seq", "at", "province", "actor", "kind", "status", "note", "details"}
TOTALS_KEYS = {"cases", "workers_affected", "amount_owed", "amount_recovered"}
STATISTICS_GROUPS = {
    "by_home_province": "home_province",
    "by_handling_province": "handling_province",
    "by_category": "category",
    "by_sector": "sector",
    "by_status": "status",
}
# the operations of the rights service itself and the problems each may answer (the platform's routes are
# documented with the platform; 413, 429 and 500 come from the edges)
OPERATIONS = {
    ("post", "/api/v1/cases"): {401, 403, 413, 422, 429},
    ("get", "/api/v1/cases"): {401, 403, 422, 429},
    ("get", "/api/v1/cases/{case_id}"): {401, 403, 404, 429},
    **{
        ("post", f"/api/v1/cases/{{case_id}}/{step}"): {401, 403, 404, 409, 413, 422, 429}
        for step in ("accept", "decline", "updates", "extend", "escalate", "resolve", "close", "refer", "withdraw")
    },
    ("get", "/api/v1/statistics"): {429},
}


def body(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "complainant": {"name": "王小明", "phone": "13812345678"},
        "category": "wage-arrears",
        "sector": "construction",
        "employer": {
            "name": "成都某建筑劳务有限公司",
            "credit_code": "91350100M000100Y43",
            "address": "成都市锦江区某路 8 号",
            "province": SC,
        },
        "work_place": {"division_code": "510104", "site": "锦江某安置房项目"},
        "period": {"start": "2025-06-01", "end": "2025-11-30"},
        "amount_owed": "36000.00",
        "workers_affected": 6,
        "evidence": [{"name": "工资欠条.jpg", "sha256": "0f" * 32, "size": 182044}],
        "facts": "包工头拖欠半年工资。",
    }
    data.update(overrides)
    return data


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    document: dict[str, Any] = create_app(Settings(province=SC, service="rights")).openapi()
    return document


@pytest.fixture
def settings(make_settings: Callable[..., Settings], database_url: str) -> Settings:
    return make_settings(SC, "rights", database_url)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    spec = dataclasses.replace(build_spec(RightsSettings(sweep_interval_s=5)), consumers=lambda _runtime: ())
    async with serving(create_service_app(spec, settings)) as served:
        yield served


@pytest.fixture
def keys(node_keys: dict[str, NodeKeys]) -> NodeKeys:
    return node_keys[SC]


async def set_columns(settings: Settings, case_id: str, **values: Any) -> None:
    engine = create_engine(settings.database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(update(rights_case).where(rights_case.c.id == case_id).values(**values))
    finally:
        await engine.dispose()


class Documented:
    """Checks responses against the schema the OpenAPI document gives for their operation and status."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec

    def schema(self, method: str, path: str, status: int) -> dict[str, Any]:
        response = self.spec["paths"][path][method]["responses"][str(status)]
        found: dict[str, Any] = response["content"]["application/json"]["schema"]
        return found

    def check(self, response: httpx.Response, method: str, path: str) -> dict[str, Any]:
        assert response.status_code < 300, response.text
        schema = {**self.schema(method, path, response.status_code), "components": self.spec["components"]}
        validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
        data: dict[str, Any] = response.json()
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)]
        assert errors == [], f"{method.upper()} {path} {response.status_code}: {errors}"
        return data


def check_case(view: dict[str, Any], *, timeline: bool = True) -> None:
    assert set(view) == (CASE_KEYS | {"timeline"} if timeline else CASE_KEYS)
    for name, expected in NESTED_KEYS.items():
        assert set(view[name]) == expected, name
    assert all(set(item) == EVIDENCE_KEYS for item in view["evidence"])
    if timeline:
        assert view["timeline"] and all(set(entry) == ENTRY_KEYS for entry in view["timeline"])


def test_every_operation_documents_a_typed_answer_and_its_problems(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    found = {
        (method, path): operation
        for path, operations in spec["paths"].items()
        if path.startswith(("/api/v1/cases", "/api/v1/statistics"))
        for method, operation in operations.items()
    }
    assert set(found) == set(OPERATIONS)
    for (method, path), operation in found.items():
        responses = operation["responses"]
        answers = {int(code) for code in responses if code.startswith("2")}
        assert answers, f"{method} {path}"
        for code in answers:
            schema = responses[str(code)]["content"]["application/json"]["schema"]
            name = schema["$ref"].removeprefix("#/components/schemas/")
            assert schemas[name]["type"] == "object" and schemas[name]["properties"], f"{method} {path} {code}"
        for status in OPERATIONS[(method, path)]:
            problem = responses[str(status)]["content"]["application/problem+json"]["schema"]
            assert problem == {"$ref": "#/components/schemas/ProblemDetails"}, f"{method} {path} {status}"
    assert found[("post", "/api/v1/cases")]["responses"]["201"]["headers"]["Location"]
    withdraw = found[("post", "/api/v1/cases/{case_id}/withdraw")]["responses"]
    assert {
        withdraw["200"]["content"]["application/json"]["schema"]["$ref"],
        withdraw["202"]["content"]["application/json"]["schema"]["$ref"],
    } == {"#/components/schemas/CaseView"}

    # the complainant is either in full or masked, and nothing in the statistics names a person or a case
    complainant = schemas["CaseView"]["properties"]["complainant"]["anyOf"]
    assert {ref["$ref"].rsplit("/", 1)[-1] for ref in complainant} == {"Complainant", "MaskedComplainant"}
    names: set[str] = set()
    for schema in (
        "FederationStatistics",
        "Totals",
        "OriginSnapshot",
        *(f"{g}Totals" for g in ("HomeProvince", "HandlingProvince", "Category", "Sector", "Status")),
    ):
        names |= set(schemas[schema]["properties"])
    assert not names & {"id", "complainant", "resident_id", "name", "phone", "employer", "facts"}


def test_the_documented_examples_are_real_shapes(spec: dict[str, Any]) -> None:
    for model in (CaseView, CaseSummary, FederationStatistics):
        [example] = model.model_json_schema(mode="serialization")["examples"]
        model.model_validate(example)
        validator = Draft202012Validator(
            {"$ref": f"#/components/schemas/{model.__name__}", "components": spec["components"]},
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )
        assert list(validator.iter_errors(example)) == [], model.__name__
    [case] = CaseView.model_json_schema(mode="serialization")["examples"]
    Case.model_validate({name: value for name, value in case.items() if name in Case.model_fields})


def test_the_views_declare_every_field_of_the_case() -> None:
    view_only = {"side", "overdue", "escalated", "withdrawal_requested_at", "redacted"}
    assert set(CaseView.model_fields) == set(Case.model_fields) | view_only
    assert set(CaseSummary.model_fields) == set(Case.model_fields) - {"timeline"} | view_only


async def test_real_answers_match_the_documentation_and_keep_their_keys(
    client: httpx.AsyncClient, keys: NodeKeys, settings: Settings, spec: dict[str, Any]
) -> None:
    documented = Documented(spec)
    staff = bearer(keys, "officer", sub="sc-officer")
    wang = bearer(keys, "worker", sub=WANG)
    one = "/api/v1/cases/{case_id}"

    def step(name: str) -> str:
        return f"/api/v1/cases/{{case_id}}/{name}"

    # a case handled at home, walked to its resolution
    filed = documented.check(await client.post(CASES, json=body(), headers=wang), "post", CASES)
    check_case(filed)
    url = f"{CASES}/{filed['id']}"
    for name, data in [
        ("accept", {"note": "予以受理"}),
        ("updates", {"note": "约谈项目负责人"}),
        ("extend", {"reason": "需调取银行流水"}),
    ]:
        check_case(documented.check(await client.post(f"{url}/{name}", json=data, headers=staff), "post", step(name)))
    await set_columns(settings, filed["id"], investigation_due=today_in_china() - timedelta(days=2))
    escalated = documented.check(
        await client.post(f"{url}/escalate", json={"reason": "用人单位拒不配合"}, headers=staff),
        "post",
        step("escalate"),
    )
    check_case(escalated)
    assert (escalated["overdue"], escalated["escalated"]) == ("investigation", "investigation")
    resolved = documented.check(
        await client.post(f"{url}/resolve", json={"amount_recovered": "36000", "workers_paid": 6}, headers=staff),
        "post",
        step("resolve"),
    )
    check_case(resolved)
    assert (resolved["amount_recovered"], resolved["workers_paid"]) == ("36000.00", 6)
    for who in (wang, staff):
        check_case(documented.check(await client.get(url, headers=who), "get", one))

    # declined at home, referred to Chongqing, withdrawal asked of Chongqing (202)
    other = documented.check(await client.post(CASES, json=body(), headers=wang), "post", CASES)
    other_url = f"{CASES}/{other['id']}"
    declined = {"reason": "实际用工地在重庆", "suggested_province": "500000"}
    returned = documented.check(
        await client.post(f"{other_url}/decline", json=declined, headers=staff), "post", step("decline")
    )
    check_case(returned)
    assert (returned["status"], returned["handling_province"]) == ("returned", None)
    referral = {"province": "500000", "work_place": {"division_code": "500103"}}
    check_case(
        documented.check(await client.post(f"{other_url}/refer", json=referral, headers=staff), "post", step("refer"))
    )
    pending = await client.post(f"{other_url}/withdraw", json={"note": "已和解"}, headers=wang)
    assert pending.status_code == 202
    pending_view = documented.check(pending, "post", step("withdraw"))
    check_case(pending_view)
    requested_at = pending_view["withdrawal_requested_at"]
    assert requested_at.endswith("+00:00"), "written with its offset, as before the views were typed"

    # closed as unfounded once returned; a case withdrawn at home (200)
    third = documented.check(await client.post(CASES, json=body(amount_owed="99.99"), headers=wang), "post", CASES)
    third_url = f"{CASES}/{third['id']}"
    await client.post(f"{third_url}/decline", json={"reason": "x"}, headers=staff)
    closed = documented.check(
        await client.post(f"{third_url}/close", json={"reason": "unfounded", "note": "无据"}, headers=staff),
        "post",
        step("close"),
    )
    assert (closed["status"], closed["closure_reason"]) == ("closed", "unfounded")
    fourth = documented.check(await client.post(CASES, json=body(amount_owed="1.00"), headers=wang), "post", CASES)
    withdrawn = await client.post(f"{CASES}/{fourth['id']}/withdraw", json={}, headers=wang)
    assert withdrawn.status_code == 200
    check_case(documented.check(withdrawn, "post", step("withdraw")))

    # a copy kept by a province that declined the case: neither home nor handling here, stored redacted
    await set_columns(
        settings,
        fourth["id"],
        home_province="320000",
        handling_province="500000",
        holder="500000",
        redacted=True,
        complainant_resident_id=mask_resident_id(WANG),
        complainant_name=mask_name("王小明"),
        complainant_phone=mask_phone("13812345678"),
        facts="",
    )
    former = documented.check(await client.get(f"{CASES}/{fourth['id']}", headers=staff), "get", one)
    check_case(former)
    assert (former["side"], former["redacted"]) == ("former", True)
    assert former["complainant"] == {"resident_id": "5116**********0376", "name": "王**", "phone": "138****5678"}

    page = documented.check(await client.get(CASES, params={"limit": 3}, headers=staff), "get", CASES)
    assert set(page) == {"items", "next_after"} and len(page["items"]) == 3 and page["next_after"]
    for item in page["items"]:
        check_case(item, timeline=False)
    rest = documented.check(await client.get(CASES, params={"after": page["next_after"]}, headers=staff), "get", CASES)
    assert len(rest["items"]) == 1 and rest["next_after"] is None
    own = documented.check(await client.get(CASES, headers=wang), "get", CASES)
    assert [item["id"] for item in own["items"]] == sorted(c["id"] for c in (filed, other, third))

    statistics = documented.check(await client.get("/api/v1/statistics"), "get", "/api/v1/statistics")
    assert set(statistics) == {"origins", "totals", "generated_at", *STATISTICS_GROUPS}
    assert [set(origin) for origin in statistics["origins"]] == [{"province", "generation", "as_of"}]
    assert set(statistics["totals"]) == TOTALS_KEYS
    for group, dimension in STATISTICS_GROUPS.items():
        assert statistics[group] and all(set(row) == TOTALS_KEYS | {dimension} for row in statistics[group]), group
    assert (statistics["totals"]["cases"], statistics["totals"]["amount_owed"]) == (4, "72100.99")


async def test_a_filed_case_read_back_can_be_filed_again(client: httpx.AsyncClient, keys: NodeKeys) -> None:
    """One shape in and out: the parts of a case a filing names are sent back as the case view shows them."""
    wang = bearer(keys, "worker", sub=WANG)
    first = (await client.post(CASES, json=body(), headers=wang)).json()
    drafted = ("complainant", "category", "sector", "employer", "work_place", "period", "amount_owed")
    again = {name: first[name] for name in (*drafted, "workers_affected", "evidence", "facts")}
    assert again["complainant"] == {"resident_id": WANG, "name": "王小明", "phone": "13812345678"}
    filed = await client.post(CASES, json=again, headers=wang)
    assert filed.status_code == 201, filed.text
    second = filed.json()
    assert second["id"] != first["id"]
    assert {name: second[name] for name in again} == again

    staff = bearer(keys, "officer", sub="sc-officer")
    on_behalf = await client.post(
        CASES, json={**again, "complainant": {**again["complainant"], "resident_id": LI}}, headers=staff
    )
    assert on_behalf.status_code == 201, on_behalf.text
    assert on_behalf.json()["complainant"]["resident_id"] == LI

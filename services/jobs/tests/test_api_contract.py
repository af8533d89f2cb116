"""The jobs API keeps its contract: every operation documents a typed answer and the problems it can give, real
answers validate against that document and keep the fields they had, and a vacancy read can be sent back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from jsonschema import Draft202012Validator, FormatChecker
from pydantic import ValidationError
from sqlalchemy import select

from labornet.jobs.adapters.tables import vacancy
from labornet.jobs.app import create_app
from labornet.jobs.domain.vacancy import VacancyChanges, VacancyDraft, flatten
from labornet.jobs.entrypoints import api, subscriptions
from labornet.jobs.service_layer.vacancies import to_event
from labornet.shared.clock import today_in_china
from labornet.shared.db import create_engine, readonly_sessionmaker
from labornet.shared.keys import NodeKeys
from labornet.shared.problems import PROBLEM_JSON
from labornet.shared.settings import Settings
from labornet.shared.testing import assert_problem, bearer, serving

VACANCIES = "/api/v1/vacancies"
SUBSCRIPTIONS = "/api/v1/me/subscriptions"
MATCHES = "/api/v1/me/matches"

# The fields the API answered with before it had response models (the vacancy's columns, as its events carry them).
VACANCY_KEYS = [
    "id",
    "owner_province",
    "employer_name",
    "employer_credit_code",
    "title",
    "description",
    "occupation_code",
    "occupation_name",
    "division_code",
    "city",
    "headcount",
    "hired",
    "salary_min",
    "salary_max",
    "employment_type",
    "target_groups",
    "skills",
    "brand_id",
    "contact",
    "posted_at",
    "closing_date",
    "status",
    "version",
    "updated_at",
    "open_headcount",
]
SUBSCRIPTION_KEYS = {
    "id",
    "occupation_codes",
    "provinces",
    "division_codes",
    "min_salary",
    "keywords",
    "target_group",
    "webhook_url",
    "active",
    "created_at",
}
MATCH_KEYS = {
    "id",
    "subscription_id",
    "vacancy_id",
    "vacancy_status",
    "vacancy_version",
    "matched_at",
    "updated_at",
    "vacancy",
}


def nested_draft(**overrides: Any) -> dict[str, Any]:
    """A Chengdu cook's vacancy in the form clients have sent since the first release."""
    body: dict[str, Any] = {
        "employer": {"name": "成都川味餐饮有限公司", "credit_code": "91350100M000100Y43"},
        "title": "川菜厨师 Sichuan chef",
        "description": "负责川菜热菜制作，提供住宿。",
        "occupation_code": "5120",
        "division_code": "510104",
        "headcount": 3,
        "salary": {"min": 6000, "max": 9000},
        "employment_type": "full-time",
        "target_groups": ["migrant-workers"],
        "skills": ["川菜", "刀工"],
        "contact": "028-86000000",
        "closing_date": (today_in_china() + timedelta(days=30)).isoformat(),
    }
    body.update(overrides)
    return body


def flat_draft(**overrides: Any) -> dict[str, Any]:
    """The same vacancy with the employer and the salary as a vacancy is read."""
    body = nested_draft()
    employer, salary = body.pop("employer"), body.pop("salary")
    body.update(
        employer_name=employer["name"],
        employer_credit_code=employer["credit_code"],
        salary_min=salary["min"],
        salary_max=salary["max"],
    )
    body.update(overrides)
    return body


# The document ------------------------------------------------------------------------------------------------


def own_operations() -> list[tuple[str, str]]:
    """(method, path) of every operation of the jobs service's own routers (the platform's are typed elsewhere)."""
    return [
        (method.lower(), route.path)
        for router in (api.router, subscriptions.router)
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    ]


@pytest.fixture
def app(make_settings: Callable[..., Settings], database_url: str) -> FastAPI:
    return create_app(make_settings("510000", "jobs", database_url))


def test_every_operation_documents_a_typed_answer_and_its_problems(app: FastAPI) -> None:
    spec = app.openapi()
    operations = own_operations()
    assert len(operations) == 11
    for method, path in operations:
        responses = spec["paths"][path][method]["responses"]
        success = [code for code in responses if code.startswith("2")]
        assert len(success) == 1, (method, path, responses)
        [code] = success
        content = responses[code].get("content", {})
        if code == "204":
            assert content == {}, (method, path)
        else:
            [(media, body)] = content.items()
            schema = body["schema"]
            assert media in ("application/json", "text/event-stream"), (method, path)
            if media == "application/json":
                assert "$ref" in schema or schema.get("type") == "string", (method, path, schema)
            else:  # the schema of one event, whose data is named
                assert schema["type"] == "object" and {"event", "data"} <= set(schema["required"]), (path, schema)
        problems = [code for code in responses if code[0] in "45"]
        assert problems, (method, path)
        for problem in problems:
            assert responses[problem]["content"][PROBLEM_JSON]["schema"] == {
                "$ref": "#/components/schemas/ProblemDetails"
            }, (method, path, problem)
        writes = method in ("post", "patch", "delete")
        assert ({"401", "403"} <= responses.keys()) == (writes or path.startswith("/api/v1/me")), (method, path)

    vacancy_schema = spec["components"]["schemas"]["Vacancy"]
    assert vacancy_schema["required"] == VACANCY_KEYS
    assert vacancy_schema["properties"]["status"] == {"$ref": "#/components/schemas/Status"}
    assert vacancy_schema["properties"]["brand_id"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    assert vacancy_schema["examples"][0]["id"].startswith("510000-V-")
    stream = spec["paths"][f"{MATCHES}/stream"]["get"]["responses"]["200"]["content"]
    assert list(stream) == ["text/event-stream"] and "event: match" in stream["text/event-stream"]["example"]
    draft = spec["components"]["schemas"]["VacancyDraft"]["properties"]
    assert draft["salary"]["deprecated"] is True and draft["employer"]["deprecated"] is True
    assert "deprecated" not in draft["salary_min"] and draft["id"]["readOnly"] is True


JOBS_SCHEMAS = [
    "Vacancy",
    "VacancyPage",
    "VacancyDraft",
    "VacancyChanges",
    "NewSubscription",
    "SubscriptionView",
    "CreatedSubscription",
    "VacancyMatch",
    "MatchPage",
]


def test_the_examples_are_what_the_schemas_describe(app: FastAPI) -> None:
    spec = app.openapi()
    for name in JOBS_SCHEMAS:
        examples = spec["components"]["schemas"][name]["examples"]
        assert examples, name
        validator = Draft202012Validator(
            {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}, format_checker=FormatChecker()
        )
        for example in examples:
            errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(example)]
            assert not errors, (name, errors)


class Conformance:
    """Checks real answers against the app's OpenAPI document: status documented, body valid for its schema."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec

    def check(self, response: httpx.Response, method: str, path: str) -> Any:
        documented = self.spec["paths"][path][method]["responses"]
        status = str(response.status_code)
        assert status in documented, f"{method.upper()} {path} answered {status}, documented {list(documented)}"
        if status == "204":
            assert response.content == b""
            return None
        media = response.headers["content-type"].split(";")[0]
        schema = documented[status]["content"][media]["schema"]
        body = response.json()
        validator = Draft202012Validator(
            {"allOf": [schema], "components": self.spec["components"]}, format_checker=FormatChecker()
        )
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]
        assert not errors, (method, path, errors)
        return body


async def held(database_url: str, vacancy_id: str) -> dict[str, Any]:
    """The vacancy's row in the node's database, as the API answered it before it had response models."""
    engine = create_engine(database_url)
    try:
        async with readonly_sessionmaker(engine)() as session:
            row = (await session.execute(select(vacancy).where(vacancy.c.id == vacancy_id))).mappings().one()
        # and the places left, which the API adds to what events carry
        return {**to_event(dict(row)), "open_headcount": row["headcount"] - row["hired"]}
    finally:
        await engine.dispose()


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(app) as client:
        yield client


async def test_real_answers_match_the_document_and_keep_their_fields(
    app: FastAPI, client: httpx.AsyncClient, database_url: str, node_keys: dict[str, NodeKeys]
) -> None:
    check = Conformance(app.openapi()).check
    officer = bearer(node_keys["510000"], "officer")
    worker = bearer(node_keys["510000"], "worker", sub="wang")
    one = f"{VACANCIES}/{{vacancy_id}}"

    subscribed = check(
        await client.post(SUBSCRIPTIONS, json={"occupation_codes": ["51"]}, headers=worker), "post", SUBSCRIPTIONS
    )
    assert subscribed.keys() == SUBSCRIPTION_KEYS | {"webhook_secret", "initial_matches"}

    posted = await client.post(VACANCIES, json=nested_draft(), headers=officer)
    published = check(posted, "post", VACANCIES)
    vacancy_id = published["id"]
    assert list(published) == VACANCY_KEYS
    assert published == await held(database_url, vacancy_id), "the same values, times written as before"
    assert (posted.headers["ETag"], posted.headers["Location"]) == ('"1"', f"{VACANCIES}/{vacancy_id}")

    read = await client.get(f"{VACANCIES}/{vacancy_id}")
    assert check(read, "get", one) == published and read.headers["ETag"] == '"1"'
    changed = check(
        await client.patch(
            f"{VACANCIES}/{vacancy_id}", json={"title": "川菜主厨"}, headers={**officer, "If-Match": '"1"'}
        ),
        "patch",
        one,
    )
    assert list(changed) == VACANCY_KEYS and changed == await held(database_url, vacancy_id)
    assert (changed["title"], changed["version"]) == ("川菜主厨", 2)

    found = check(await client.get(VACANCIES, params={"q": "川菜"}), "get", VACANCIES)
    assert list(found) == ["items", "next_cursor", "total", "total_exact"]
    assert found["items"] == [changed] and (found["total"], found["total_exact"]) == (1, True)

    matches = check(await client.get(MATCHES, headers=worker), "get", MATCHES)
    assert list(matches) == ["items", "next_cursor"] and matches["items"][0].keys() == MATCH_KEYS
    assert matches["items"][0]["vacancy"]["version"] == 2

    closed = check(
        await client.post(f"{VACANCIES}/{vacancy_id}/close", json={"reason": "filled", "version": 2}, headers=officer),
        "post",
        f"{one}/close",
    )
    assert list(closed) == VACANCY_KEYS and closed == await held(database_url, vacancy_id)
    assert closed["status"] == "filled"
    assert check(await client.get(VACANCIES, params={"status": "filled"}), "get", VACANCIES)["items"] == [closed]

    listed = check(await client.get(SUBSCRIPTIONS, headers=worker), "get", SUBSCRIPTIONS)
    assert [item.keys() for item in listed["items"]] == [SUBSCRIPTION_KEYS]
    own = f"{SUBSCRIPTIONS}/{{subscription_id}}"
    location = f"{SUBSCRIPTIONS}/{subscribed['id']}"
    assert check(await client.get(location, headers=worker), "get", own).keys() == SUBSCRIPTION_KEYS
    read = check(await client.get(location, headers=worker), "get", own)
    check(await client.delete(location, headers=worker), "delete", own)
    again = check(await client.post(SUBSCRIPTIONS, json=read, headers=worker), "post", SUBSCRIPTIONS)
    assert again["id"] != read["id"] and again["active"] is True, "what the node sets is its own, not the body's"
    assert {k: again[k] for k in SUBSCRIPTION_KEYS - {"id", "active", "created_at"}} == {
        k: read[k] for k in SUBSCRIPTION_KEYS - {"id", "active", "created_at"}
    }

    # the problems are documented too
    check(await client.get(f"{VACANCIES}/510000-V-NOPE"), "get", one)
    check(await client.post(VACANCIES, json=nested_draft()), "post", VACANCIES)
    check(await client.post(VACANCIES, json=nested_draft(), headers=worker), "post", VACANCIES)
    check(await client.post(VACANCIES, json={"title": "厨师"}, headers=officer), "post", VACANCIES)
    check(await client.patch(f"{VACANCIES}/{vacancy_id}", json={"title": "x"}, headers=officer), "patch", one)
    stale = await client.post(
        f"{VACANCIES}/{vacancy_id}/close", json={"reason": "withdrawn", "version": 3}, headers=officer
    )
    assert_problem(stale, 409, "filled")
    check(stale, "post", f"{one}/close")
    check(await client.get(VACANCIES, params={"cursor": "bm9uc2Vuc2U"}), "get", VACANCIES)
    reversed_range = await client.get(VACANCIES, params={"salary_min": 9000, "salary_max": 275})
    assert_problem(reversed_range, 422, "salary_min 9000 is greater than salary_max 275")
    check(reversed_range, "get", VACANCIES)
    for path, template, token, send in [
        (VACANCIES, VACANCIES, officer, client.post),
        (f"{VACANCIES}/{vacancy_id}", one, officer, client.patch),
        (f"{VACANCIES}/{vacancy_id}/close", f"{one}/close", officer, client.post),
        (SUBSCRIPTIONS, SUBSCRIPTIONS, worker, client.post),
    ]:
        unreadable = await send(path, content=b"\xff{", headers={**token, "Content-Type": "application/json"})
        assert_problem(unreadable, 400)
        check(unreadable, "post" if send == client.post else "patch", template)
    check(await client.get(own.format(subscription_id="nope"), headers=worker), "get", own)
    check(await client.get(MATCHES, params={"cursor": "bm9uc2Vuc2U"}, headers=worker), "get", MATCHES)
    check(await client.get(f"{MATCHES}/stream", headers={**worker, "Last-Event-ID": "x"}), "get", f"{MATCHES}/stream")


# One shape in and out ---------------------------------------------------------------------------------------


def test_both_forms_of_a_draft_are_the_same_vacancy() -> None:
    nested, flat = VacancyDraft.model_validate(nested_draft()), VacancyDraft.model_validate(flat_draft())
    assert flatten(nested) == flatten(flat)
    assert {"employer_name", "employer_credit_code", "salary_min", "salary_max"} <= flatten(flat).keys()
    assert not {"employer", "salary", "id", "status", "version"} & flatten(flat).keys()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (flat_draft(salary={"min": 1, "max": 2}), "not both"),
        (flat_draft(employer={"name": "x", "credit_code": "91350100M000100Y43"}), "not both"),
        (flat_draft(salary_min=9000, salary_max=6000), "salary_min 9000 is greater than salary_max 6000"),
        (flat_draft(salary_max=None), "salary_max required"),
        ({k: v for k, v in flat_draft().items() if not k.startswith("employer")}, "employer_name, employer_credit"),
        (flat_draft(employer_credit_code="91350100M000100Y44"), "check character"),
    ],
)
def test_a_draft_names_what_is_missing_or_twice(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        VacancyDraft.model_validate(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"title": None}, "title cannot be null"),
        ({"salary": None, "city": None}, "city, salary cannot be null"),
        ({"salary_min": 2, "salary_max": 1}, "greater than"),
        ({"salary_min": 1, "salary": {"min": 1, "max": 2}}, "not both"),
        ({"status": "filled"}, "close it with POST"),
    ],
)
def test_a_change_refuses_nulls_two_forms_and_a_status(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        VacancyChanges.model_validate(body)


async def test_a_vacancy_read_can_be_sent_back_and_the_nested_form_still_works(
    client: httpx.AsyncClient, node_keys: dict[str, NodeKeys]
) -> None:
    officer = bearer(node_keys["510000"], "officer")
    posted = await client.post(VACANCIES, json=flat_draft(), headers=officer)
    assert posted.status_code == 201, posted.text
    first = posted.json()
    assert (first["employer_name"], first["salary_min"], first["salary_max"]) == ("成都川味餐饮有限公司", 6000, 9000)
    nested = (await client.post(VACANCIES, json=nested_draft(), headers=officer)).json()
    same = {"id", "posted_at", "updated_at"}
    assert {k: v for k, v in nested.items() if k not in same} == {k: v for k, v in first.items() if k not in same}

    location = f"{VACANCIES}/{first['id']}"
    read = (await client.get(location)).json()
    sent_back = await client.patch(location, json={**read, "title": "川菜主厨", "salary_max": 9500}, headers=officer)
    assert sent_back.status_code == 200, sent_back.text
    changed = sent_back.json()
    assert (changed["title"], changed["salary_min"], changed["salary_max"], changed["version"]) == (
        "川菜主厨",
        6000,
        9500,
        2,
    )
    assert (changed["id"], changed["posted_at"], changed["status"]) == (read["id"], read["posted_at"], "open")

    republished = await client.post(VACANCIES, json={**changed, "title": "川菜厨师（二）"}, headers=officer)
    assert republished.status_code == 201, republished.text
    copy = republished.json()
    assert copy["id"] != changed["id"] and (copy["version"], copy["salary_max"]) == (1, 9500)

    old_form = await client.patch(
        location,
        json={
            "version": 2,
            "salary": {"min": 7000, "max": 9800},
            "employer": {"name": "成都川香餐饮有限公司", "credit_code": "91350100M000100Y43"},
        },
        headers=officer,
    )
    assert old_form.status_code == 200, old_form.text
    assert (old_form.json()["salary_min"], old_form.json()["employer_name"]) == (7000, "成都川香餐饮有限公司")
    assert_problem(
        await client.patch(location, json={"version": 3, "salary_min": 9900}, headers=officer),
        422,
        "salary min is greater than max",
    )
    assert_problem(await client.patch(location, json={"version": 3, "title": None}, headers=officer), 422, "null")
    other = await client.patch(location, json={**read, "id": copy["id"], "version": 3}, headers=officer)
    assert_problem(other, 422, f"the body is vacancy {copy['id']}")
    assert_problem(
        await client.patch(location, json={"version": 3, "status": "withdrawn"}, headers=officer), 422, "POST …/close"
    )
    both = await client.post(VACANCIES, json=flat_draft(salary={"min": 1, "max": 2}), headers=officer)
    assert_problem(both, 422, "not both")
    assert (await client.get(location)).json()["version"] == 3, "nothing refused was written"

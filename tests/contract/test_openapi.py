"""The OpenAPI contract of each service: what a partner generates its client from.

Every operation answers a typed 2xx body (a JSON object schema with properties, or an explicit non-JSON media
type, or 204), every error status it documents is an RFC 9457 problem, the document is valid OpenAPI, and the copy
committed under docs/openapi is the one the code generates (so the published contract never drifts).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from openapi_spec_validator import validate

from labornet.shared.app import Identity
from labornet.shared.openapi import render, service_openapi
from labornet.shared.problems import document_edge_problems
from labornet.shared.settings import SERVICE_NAMES, ServiceName

DOCS = Path(__file__).resolve().parents[2] / "docs" / "openapi"
METHODS = ("get", "put", "post", "delete", "patch")
PROBLEM = "#/components/schemas/ProblemDetails"
# the one error body that is not a problem: a load balancer reads the checks of an unready node
NOT_PROBLEMS = {("get", "/readyz", "503")}


@pytest.fixture(scope="module", params=SERVICE_NAMES)
def service(request: pytest.FixtureRequest) -> ServiceName:
    name: ServiceName = request.param
    return name


@pytest.fixture(scope="module")
def document(service: ServiceName) -> dict[str, Any]:
    return service_openapi(service)


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        schema = document["components"]["schemas"][name]
    return schema


def is_typed(document: dict[str, Any], schema: dict[str, Any]) -> bool:
    """An object with declared properties (or a choice of such), or an array of them."""
    schema = resolve(document, schema)
    if schema.get("type") == "array":
        return is_typed(document, schema.get("items", {}))
    choices = schema.get("anyOf") or schema.get("oneOf") or schema.get("allOf")
    if choices:
        return all(is_typed(document, choice) or choice.get("type") == "null" for choice in choices)
    return schema.get("type") == "object" and bool(schema.get("properties"))


def untyped_success(document: dict[str, Any], method: str, path: str, operation: dict[str, Any]) -> str | None:
    """Why the operation's success answer is not typed, or None when it is."""
    successes = {status: r for status, r in operation["responses"].items() if status.startswith("2")}
    if not successes:
        return "no 2xx response documented"
    for status, response in successes.items():
        content = response.get("content", {})
        if status == "204" and not content:
            continue
        if not content:
            return f"{status} has no content"
        for media_type, body in content.items():
            if "json" not in media_type:
                continue  # text/plain, text/csv, text/event-stream: an explicit non-JSON answer
            if not is_typed(document, body.get("schema", {})):
                return f"{status} {media_type} schema is not a typed object: {json.dumps(body.get('schema'))[:120]}"
    return None


def test_every_operation_has_a_typed_success_response(document: dict[str, Any]) -> None:
    failures = [
        f"{method.upper()} {path}: {reason}"
        for method, path, operation in operations(document)
        if (reason := untyped_success(document, method, path, operation)) is not None
    ]
    assert not failures, f"{len(failures)} operations without a typed 2xx response:\n" + "\n".join(failures)


def test_every_error_response_is_a_problem(document: dict[str, Any]) -> None:
    failures = []
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if status[:1] not in "45" or (method, path, status) in NOT_PROBLEMS:
                continue
            content = response.get("content", {})
            if list(content) != ["application/problem+json"] or content["application/problem+json"].get("schema") != {
                "$ref": PROBLEM
            }:
                failures.append(f"{method.upper()} {path} {status}: {json.dumps(content)[:160]}")
    assert not failures, "error responses that are not ProblemDetails:\n" + "\n".join(failures)


def test_the_edges_are_documented_on_every_operation(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        responses = operation["responses"]
        assert {"429", "500"} <= responses.keys(), f"{method.upper()} {path}"
        assert "Retry-After" in responses["429"]["headers"], f"{method.upper()} {path}"
        if path not in ("/livez", "/readyz", "/metrics", "/asyncapi.json"):  # every operation using the database
            assert "Retry-After" in responses["503"]["headers"], f"{method.upper()} {path} does not document 503"
        if "requestBody" in operation:
            assert "413" in responses, f"{method.upper()} {path} takes a body and does not document 413"
        if "422" in responses:
            assert "HTTPValidationError" not in json.dumps(responses["422"])
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)


def test_the_committed_document_is_the_generated_one(service: ServiceName, document: dict[str, Any]) -> None:
    committed = DOCS / f"{service}.json"
    assert committed.exists(), f"{committed} is missing: run .venv/bin/python -m labornet.shared.openapi"
    assert committed.read_text(encoding="utf-8") == render(document), (
        f"{committed} differs from what the {service} service generates: "
        "run .venv/bin/python -m labornet.shared.openapi and commit docs/openapi"
    )


def test_the_checks_catch_an_untyped_route_and_a_plain_validation_error() -> None:
    app = FastAPI()

    @app.post("/untyped")
    async def untyped(body: dict[str, int]) -> dict[str, Any]:
        return body

    @app.get("/typed")
    async def typed() -> Identity:
        return Identity(sub="alice", province="510000", roles=[])

    plain = app.openapi()
    assert untyped_success(plain, "post", "/untyped", plain["paths"]["/untyped"]["post"]) is not None
    assert "HTTPValidationError" in json.dumps(plain["paths"]["/untyped"]["post"]["responses"]["422"])
    documented = document_edge_problems(plain)
    assert untyped_success(documented, "get", "/typed", documented["paths"]["/typed"]["get"]) is None
    responses = documented["paths"]["/untyped"]["post"]["responses"]
    assert responses["422"]["content"] == {"application/problem+json": {"schema": {"$ref": PROBLEM}}}
    assert {"413", "429", "500"} <= responses.keys() and "413" not in documented["paths"]["/typed"]["get"]["responses"]
    assert "HTTPValidationError" not in documented["components"]["schemas"]

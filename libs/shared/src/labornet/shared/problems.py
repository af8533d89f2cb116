"""RFC 9457 problem details for every error a client can see.

Every error response is ``application/problem+json`` with ``type``, ``title``, ``status``, ``detail`` and
``instance``; validation errors add ``errors`` (field path and message). Nothing internal — no stack trace, no
SQL — ever reaches a client: unexpected failures answer 500 with the trace id to quote to an operator.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from labornet.shared.bounds import INT32_MAX, parse_non_negative_int64
from labornet.shared.db import CONFLICT_SQLSTATES
from labornet.shared.observability import current_traceparent, trace_id_of

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://labornet.example/problems/"


class FieldError(BaseModel):
    field: str = Field(description="where the bad value is, e.g. `salary.min` or `query.cursor`")
    message: str
    input: Any = None


class ProblemDetails(BaseModel):
    """An RFC 9457 problem: the body of every error response (``application/problem+json``)."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(examples=[TYPE_BASE + "stale-version"])
    title: str = Field(examples=["Conflict"])
    status: int = Field(examples=[409])
    detail: str = Field(examples=["vacancy 510000-V-… is at version 3, not 2"])
    instance: str = Field(examples=["/api/v1/vacancies/510000-V-…"])
    trace_id: str | None = Field(default=None, description="quote it to an operator")
    errors: list[FieldError] | None = Field(default=None, description="422 only: one entry per bad field")


_PROBLEM_MEANINGS: dict[int, str] = {
    400: "the request cannot be read",
    401: "no bearer token, or one that is not valid (the detail names the issuer expected)",
    403: "the token is valid but its role or province may not do this",
    404: "no such resource on this node",
    409: "the resource's state or version does not allow this",
    412: "If-Match names a version that is not the current one",
    413: "the body is larger than this operation accepts",
    415: "the body's media type is not accepted here",
    422: "a value breaks a rule; `errors` names each field",
    428: "this change needs the version you read (If-Match or `version`)",
    429: "too many requests; retry after the seconds of the Retry-After header",
    500: "an internal error; nothing was changed; quote the trace_id",
    502: "a partner node or a dependency answered wrongly",
    503: (
        "the service cannot take the request now (its database too busy or its connection lost, or a dependency "
        "unavailable); nothing was written, except that a connection lost during the commit may have committed, "
        "which sending the request again finds; send it again after the seconds of the Retry-After header"
    ),
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for a route: each status documented with the problem+json body."""
    return {
        status: {
            "description": _PROBLEM_MEANINGS.get(status, HTTPStatus(status).phrase),
            "model": ProblemDetails,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}},
        }
        for status in statuses
    }


_REF = "#/components/schemas/"
_PROBLEM_REF = _REF + "ProblemDetails"
_RETRY_AFTER = {
    "Retry-After": {"description": "seconds until the next request is allowed", "schema": {"type": "integer"}}
}
_RETRY_AFTER_503 = {
    "Retry-After": {"description": "seconds after which the request may be sent again", "schema": {"type": "integer"}}
}
# operations that never use the database (the process itself, its metrics, its event catalogue) and /readyz, whose
# 503 is its own answer (the checks that failed), documented by its route
_NO_DATABASE_503 = frozenset({"/livez", "/readyz", "/metrics", "/asyncapi.json"})


def document_edge_problems(openapi: dict[str, Any]) -> dict[str, Any]:
    """Complete an app's OpenAPI document with what the edges answer on every operation, in place.

    Every operation may meet 429 (rate limits, with ``Retry-After``) and 500; every operation with a body may meet
    413 (the body limit); every operation that uses the database may meet 503 with ``Retry-After`` (the database
    too busy to take the request, or the connection lost). Every error response is described as
    ``application/problem+json`` with the :class:`ProblemDetails` schema, the request validation errors FastAPI
    documents by itself included (they are answered as problems too, see :func:`install_problem_handlers`)."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in ProblemDetails.model_json_schema(ref_template=_REF + "{model}").pop("$defs", {}).items():
        schemas.setdefault(name, schema)
    schemas.setdefault("ProblemDetails", ProblemDetails.model_json_schema(ref_template=_REF + "{model}"))
    for path, item in openapi.get("paths", {}).items():
        for method, operation in item.items():
            if method not in ("get", "put", "post", "delete", "patch", "options", "head", "trace"):
                continue
            responses = operation.setdefault("responses", {})
            uses_database = path not in _NO_DATABASE_503
            edge = [429, 500] + ([413] if "requestBody" in operation else []) + ([503] if uses_database else [])
            for status in edge:
                responses.setdefault(str(status), {"description": _PROBLEM_MEANINGS[status]})
            responses["429"].setdefault("headers", {}).update(_RETRY_AFTER)
            if uses_database:
                responses["503"].setdefault("headers", {}).update(_RETRY_AFTER_503)
            for status, response in responses.items():
                if status[:1] not in ("4", "5"):
                    continue
                content = response.get("content", {})
                schema_refs = {media.get("schema", {}).get("$ref") for media in content.values()}
                if not content or schema_refs <= {_PROBLEM_REF, _REF + "HTTPValidationError"}:
                    response["content"] = {PROBLEM_JSON: {"schema": {"$ref": _PROBLEM_REF}}}
                    if response.get("description") in (None, "Validation Error"):
                        response["description"] = _PROBLEM_MEANINGS.get(int(status), HTTPStatus(int(status)).phrase)
    used = json.dumps(openapi.get("paths", {}))
    for name in ("HTTPValidationError", "ValidationError"):
        if f'"{_REF}{name}"' not in used and f'"{_REF}{name}"' not in json.dumps(schemas):
            schemas.pop(name, None)
    return openapi


class Problem(Exception):
    """A domain error with an HTTP status; raise it from use cases and routes."""

    status: int = 400
    slug: str = "bad-request"

    def __init__(self, detail: str, *, status: int | None = None, slug: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        if slug is not None:
            self.slug = slug
        self.extra = extra


class NotFound(Problem):
    status = 404
    slug = "not-found"


class Conflict(Problem):
    status = 409
    slug = "conflict"


class Forbidden(Problem):
    status = 403
    slug = "forbidden"


class Unprocessable(Problem):
    status = 422
    slug = "validation-error"


def if_match_version(value: str | None, noun: str) -> int | None:
    """The version an ``If-Match`` header names (``"3"`` or ``W/"3"``), None without one; 422 when unreadable."""
    if value is None:
        return None
    version = parse_non_negative_int64(value.strip().removeprefix("W/").strip('"'), INT32_MAX)
    if version is None:
        raise Unprocessable(f'If-Match {value!r}: expected the {noun} version, e.g. "3"', slug="bad-if-match")
    return version


def problem_response(
    request: Request,
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    body: dict[str, Any] = {
        "type": TYPE_BASE + (slug or title.lower().replace(" ", "-")),
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    trace_id = trace_id_of(current_traceparent.get())
    if trace_id:
        body["trace_id"] = trace_id
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=dict(headers or {}))


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


def _field_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    result = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ()) if part not in ("body",)]
        message = str(error.get("msg", "invalid value"))
        ctx = error.get("ctx") or {}
        if "error" in ctx and isinstance(ctx["error"], Exception):
            message = str(ctx["error"])
        message = message.removeprefix("Value error, ")
        result.append(
            {"field": ".".join(location) or "body", "message": message, "input": _jsonable(error.get("input"))}
        )
    return result


# SQLite's "database is locked" (SQLITE_BUSY, SQLITE_LOCKED) once its busy timeout ran out; PostgreSQL's conflicts
# between transactions and its lock timeout: each ends the transaction unwritten, and the request sent again may pass
_SQLITE_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_BUSY_SQLSTATES = CONFLICT_SQLSTATES | {"55P03"}


def database_busy(exc: DBAPIError) -> bool:
    """Whether the database refused ``exc``'s transaction for being busy, not for what it asked."""
    return (
        getattr(exc.orig, "sqlite_errorcode", None) in _SQLITE_BUSY_CODES
        or getattr(exc.orig, "sqlstate", None) in _BUSY_SQLSTATES
    )


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(request, exc.status, exc.detail, slug=exc.slug, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _field_errors(exc.errors())
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return problem_response(
            request, 422, f"the request is not valid: {summary}", slug="validation-error", errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no resource at {request.url.path}"
        if exc.status_code == 405:
            detail = f"method {request.method} is not allowed on {request.url.path}"
        return problem_response(request, exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        if database_busy(exc):
            # the transaction was refused or rolled back whole: nothing of the request was written
            log.warning("database busy on %s %s: %s", request.method, request.url.path, type(exc.orig).__name__)
            return problem_response(
                request,
                503,
                "the database was too busy to take the request; nothing was written. Send it again.",
                slug="database-busy",
                headers={"Retry-After": "1"},
            )
        if not exc.connection_invalidated:
            return await _unexpected(request, exc)
        # the database connection was lost (the pool does not ping before each transaction); a connection lost
        # during the commit may have committed, which sending the request again finds (a conflict or the same state)
        log.warning("database connection lost on %s %s: %s", request.method, request.url.path, type(exc.orig))
        return problem_response(
            request,
            503,
            "the database connection was lost while the request was handled; send it again.",
            slug="database-unavailable",
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            request,
            500,
            "an internal error occurred; the request was not completed. Quote the trace_id to an operator.",
            slug="internal-error",
        )

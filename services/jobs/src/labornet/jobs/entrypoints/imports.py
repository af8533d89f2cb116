"""HTTP API of bulk imports: an officer of this province sends a CSV or NDJSON file of vacancies, which is
published as a job (``service_layer/imports.py``); the import's state and progress are read back by its id."""

from __future__ import annotations

from collections.abc import Coroutine
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, Field

from labornet.jobs.domain.imports import (
    CSV_COLUMNS,
    FORMATS,
    LIST_SEPARATOR,
    NDJSON_MEDIA_TYPE,
    FileRefused,
    ImportMode,
    ImportState,
)
from labornet.jobs.entrypoints.api import OfficerDep
from labornet.jobs.entrypoints.api import service as vacancy_service
from labornet.jobs.service_layer.imports import ImportService
from labornet.shared.app import Runtime, RuntimeDep
from labornet.shared.db import as_utc
from labornet.shared.problems import NotFound, Problem, Unprocessable, problem_responses

router = APIRouter(prefix="/api/v1/vacancies/imports", tags=["vacancy imports"])
IMPORTS_PATH = "/api/v1/vacancies/imports"


class ImportRowError(BaseModel):
    line: int = Field(description="the line of the file where the row starts (the CSV header is line 1)")
    field: str = Field(description="the field of the vacancy, or `row`", examples=["salary_min"])
    message: str = Field(examples=["salary_min 9000 is greater than salary_max 6000"])


class VacancyImport(BaseModel):
    """A bulk import of vacancies: its state, how far it got, and the first errors by line."""

    id: str = Field(examples=["510000-I-8F14E45FCEEA167A5A36"])
    state: ImportState = Field(description="queued, running, completed or failed")
    format: Literal["csv", "ndjson"]
    mode: ImportMode = Field(description="valid-rows: the valid rows are published; all-or-nothing: none unless all")
    officer: str = Field(description="who sent the file (the token's subject)")
    bytes: int = Field(description="the size of the file received")
    rows_read: int = Field(description="rows read so far (blank lines are no rows)")
    rows_valid: int
    rows_rejected: int
    rows_published: int = Field(description="vacancies published, each with its vacancy.published event")
    published_through_line: int = Field(description="every valid row up to this line of the file is published")
    errors: list[ImportRowError] = Field(description="the first errors (at most 100), by line")
    message: str | None = Field(description="why the import failed, when it did")
    created_at: datetime
    started_at: datetime | None
    updated_at: datetime
    finished_at: datetime | None


def imports(runtime: Runtime) -> ImportService:
    found: ImportService = runtime.extras["imports"]
    return found


def setup(runtime: Runtime) -> None:
    runtime.extras["imports"] = ImportService(
        province=runtime.settings.province,
        vacancies=vacancy_service(runtime),
        sessions=runtime.sessions,
        read_sessions=runtime.read_sessions,
    )


def background(runtime: Runtime) -> list[Coroutine[Any, Any, None]]:
    return [imports(runtime).work()]


def _view(row: dict[str, Any]) -> VacancyImport:
    times = ("created_at", "started_at", "updated_at", "finished_at")
    return VacancyImport.model_validate(row | {name: as_utc(row[name]) for name in times if row[name] is not None})


START_IMPORT = f"""Import vacancies of this province from a file (officers of this province only), as a job.

`text/csv` (UTF-8, a header row naming the columns: {", ".join(CSV_COLUMNS)}; an empty cell leaves the field out;
target groups and skills separated by `{LIST_SEPARATOR}`) or `application/x-ndjson` (one vacancy per line, as the
body of `POST /api/v1/vacancies`). Every row is held to the rules of `POST /api/v1/vacancies`. With
`mode=valid-rows` (the default) the valid rows are published and the others reported by line; with
`mode=all-or-nothing` nothing is published unless every row is valid. The answer (202) is the import, queued:
follow it at `Location`. A file that is not UTF-8, a CSV header without the required columns and a file with no
row are a 422 at once; the file may reach LABORNET_REQUEST_MAX_IMPORT_BYTES (413 beyond)."""
IMPORT_BODY = {
    "required": True,
    "content": {
        "text/csv": {
            "schema": {"type": "string"},
            "example": "employer_name,employer_credit_code,title,occupation_code,division_code,headcount,salary_min,"
            "salary_max,employment_type,target_groups,skills,contact,closing_date\n"
            "成都川味餐饮有限公司,91350100M000100Y43,川菜厨师,5120,510104,3,6000,9000,full-time,migrant-workers,"
            "川菜|刀工,028-86000000,2026-12-31\n",
        },
        NDJSON_MEDIA_TYPE: {
            "schema": {"type": "string"},
            "example": '{"employer_name": "成都川味餐饮有限公司", "employer_credit_code": "91350100M000100Y43", '
            '"title": "川菜厨师", "occupation_code": "5120", "division_code": "510104", "headcount": 3, '
            '"salary_min": 6000, "salary_max": 9000, "employment_type": "full-time", "contact": "028-86000000", '
            '"closing_date": "2026-12-31"}\n',
        },
    },
}
_LOCATION = {"Location": {"description": "the import, to follow its progress", "schema": {"type": "string"}}}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=VacancyImport,
    responses={
        202: {"description": "received and queued", "headers": _LOCATION},
        **problem_responses(401, 403, 413, 415, 422),
    },
    openapi_extra={"requestBody": IMPORT_BODY},
    description=START_IMPORT,
)
async def start_import(
    request: Request,
    runtime: RuntimeDep,
    officer: OfficerDep,
    response: Response,
    mode: ImportMode = ImportMode.VALID_ROWS,
) -> VacancyImport:
    """Import vacancies of this province from a file, as a job (officers of this province only)."""
    media_type, *parameters = (part.strip().lower() for part in request.headers.get("content-type", "").split(";"))
    charset = next((p.split("=", 1)[1].strip('"') for p in parameters if p.startswith("charset=")), "utf-8")
    if media_type not in FORMATS or charset not in ("utf-8", "utf8"):
        sent = request.headers.get("content-type") or "a body without a Content-Type"
        raise Problem(
            f"an import is text/csv or {NDJSON_MEDIA_TYPE} in UTF-8, not {sent}",
            status=415,
            slug="unsupported-media-type",
        )
    try:
        row = await imports(runtime).receive(request.stream(), media_type, mode, officer.sub)
    except FileRefused as exc:
        raise Unprocessable(str(exc), slug="import-refused", errors=[{"field": "body", "message": str(exc)}]) from exc
    response.headers["Location"] = f"{IMPORTS_PATH}/{row['id']}"
    return _view(row)


@router.get("/{import_id}", response_model=VacancyImport, responses=problem_responses(401, 403, 404))
async def get_import(import_id: str, runtime: RuntimeDep, _officer: OfficerDep) -> VacancyImport:
    """An import of this province: its state, rows read, valid, rejected and published, the first errors by line."""
    row = await imports(runtime).find(import_id)
    if row is None:
        raise NotFound(f"no vacancy import {import_id} on this node")
    return _view(row)

"""Bulk import of vacancies: the rows of a CSV or NDJSON file as drafts, each held to the single API's model.

A row is a :class:`~labornet.jobs.domain.vacancy.VacancyDraft`, validated exactly as ``POST /api/v1/vacancies``
validates its body; what is wrong with a row is a :class:`RowError` naming its line (the first line of the row in
the file) and its field. The rows are read lazily from an iterator of lines, so a file of any length is parsed in
constant memory.
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from labornet.jobs.domain.vacancy import VacancyDraft

CSV_MEDIA_TYPE = "text/csv"
NDJSON_MEDIA_TYPE = "application/x-ndjson"
FORMATS = {CSV_MEDIA_TYPE: "csv", NDJSON_MEDIA_TYPE: "ndjson"}

# CSV cells of the list fields hold their items separated by this character: "migrant-workers|veterans"
LIST_SEPARATOR = "|"
LIST_COLUMNS = frozenset({"target_groups", "skills"})
# the flat fields of a draft (the deprecated nested employer and salary have no place in a CSV row)
CSV_COLUMNS = tuple(name for name in VacancyDraft.model_fields if name not in ("employer", "salary"))
REQUIRED_COLUMNS = tuple(
    name
    for name, info in VacancyDraft.model_fields.items()
    if info.is_required() or name in ("employer_name", "employer_credit_code", "salary_min", "salary_max")
)


class ImportState(StrEnum):
    QUEUED = "queued"  # received, waiting for the import before it to finish
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class ImportMode(StrEnum):
    VALID_ROWS = "valid-rows"  # the valid rows are published, the others reported
    ALL_OR_NOTHING = "all-or-nothing"  # nothing is published unless every row is valid


class FileRefused(ValueError):
    """The file as a whole cannot be imported (not UTF-8, a header without the required columns, no rows)."""


@dataclass(frozen=True)
class RowError:
    line: int
    field: str
    message: str

    def as_json(self) -> dict[str, Any]:
        return {"line": self.line, "field": self.field, "message": self.message}


@dataclass(frozen=True)
class ParsedRow:
    """One row of the file: its draft, or what is wrong with it."""

    line: int
    draft: VacancyDraft | None
    errors: tuple[RowError, ...] = ()


def new_import_id(province: str) -> str:
    return f"{province}-I-{uuid.uuid4().hex[:20].upper()}"


def check_header(columns: list[str]) -> list[str]:
    """The columns of a CSV header, stripped; :class:`FileRefused` naming what is missing, unknown or twice."""
    names = [name.strip() for name in columns]
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    unknown = [name for name in names if name not in CSV_COLUMNS]
    twice = sorted({name for name in names if names.count(name) > 1})
    problems = []
    if missing:
        problems.append(f"missing columns: {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown columns: {', '.join(unknown)}")
    if twice:
        problems.append(f"columns given twice: {', '.join(twice)}")
    if problems:
        raise FileRefused(
            f"the header (line 1) does not fit: {'; '.join(problems)}. The columns are those of a vacancy: "
            f"{', '.join(CSV_COLUMNS)} (required: {', '.join(REQUIRED_COLUMNS)})"
        )
    return names


def row_errors(line: int, exc: ValidationError) -> tuple[RowError, ...]:
    """The errors of one row as the single API words them (the field path, the rule's message)."""
    found = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "row"
        context = error.get("ctx") or {}
        message = str(context["error"]) if isinstance(context.get("error"), Exception) else error["msg"]
        found.append(RowError(line, field, message.removeprefix("Value error, ")))
    return tuple(found)


def _draft(line: int, validate: Any, data: Any) -> ParsedRow:
    try:
        return ParsedRow(line, validate(data))
    except ValidationError as exc:
        return ParsedRow(line, None, row_errors(line, exc))


def csv_rows(lines: Iterable[str]) -> Iterator[ParsedRow]:
    """The rows of a CSV file (header first; an empty cell is a field left out; lists separated by ``|``)."""
    reader = csv.reader(lines)
    try:
        header = check_header(next(reader))
    except StopIteration:
        return
    line = reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield ParsedRow(line, None, (RowError(line, "row", f"not readable as CSV: {exc}"),))
            line = reader.line_num + 1
            continue
        first, line = line, reader.line_num + 1
        if not any(cell.strip() for cell in cells):
            continue  # a blank line
        if len(cells) != len(header):
            message = f"the row has {len(cells)} cells and the header {len(header)} columns"
            yield ParsedRow(first, None, (RowError(first, "row", message),))
            continue
        data: dict[str, Any] = {}
        for name, cell in zip(header, cells, strict=True):
            if cell.strip():
                data[name] = (
                    [item for item in cell.split(LIST_SEPARATOR) if item.strip()] if name in LIST_COLUMNS else cell
                )
        yield _draft(first, VacancyDraft.model_validate, data)


def ndjson_rows(lines: Iterable[str]) -> Iterator[ParsedRow]:
    """The rows of an NDJSON file: one JSON object per line, blank lines skipped."""
    for number, text in enumerate(lines, start=1):
        if text.strip():
            yield _draft(number, VacancyDraft.model_validate_json, text)


def parse_rows(file_format: str, lines: Iterable[str]) -> Iterator[ParsedRow]:
    return csv_rows(lines) if file_format == "csv" else ndjson_rows(lines)

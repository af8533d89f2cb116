"""The records' CSV import reads what spreadsheets write, and answers a file it cannot read with an error row."""

from __future__ import annotations

import csv
from datetime import date

from labornet.insurance.service_layer.records import CSV_COLUMNS, parse_csv
from labornet.shared.identifiers import make_resident_id

RESIDENT = make_resident_id("330106", date(1990, 5, 17), 7)
ROWS = [
    {"resident_id": RESIDENT, "name": "李娜", "hukou_division": "330106", "status": "unemployed-claiming",
     "months_used": "0", "start_month": "2015-01", "end_month": "2018-12", "kind": "actual"},
    {"resident_id": RESIDENT, "name": "李娜", "hukou_division": "330106", "status": "unemployed-claiming",
     "months_used": "0", "start_month": "2019-01", "end_month": "2020-06", "kind": "deemed"},
]  # fmt: skip


def csv_text(line_end: str) -> str:
    lines = [",".join(CSV_COLUMNS)] + [",".join(row.get(c, "") for c in CSV_COLUMNS) for row in ROWS]
    return line_end.join(lines) + line_end


def test_lines_may_end_with_cr_lf_or_crlf() -> None:
    parsed = {end: parse_csv(csv_text(end)) for end in ("\n", "\r\n", "\r")}
    persons, errors = parsed["\n"]
    assert errors == [] and [p.resident_id for p in persons] == [RESIDENT] and len(persons[0].periods) == 2
    assert parsed["\r"] == parsed["\r\n"] == parsed["\n"]


def test_a_carriage_return_inside_a_line_is_no_server_error() -> None:
    """Schemathesis sent `p\\xc6\\x861Q\\rf` as text/csv: csv read it without newline="" and raised csv.Error."""
    persons, errors = parse_csv("pÆ1Q\rf")
    assert persons == [] and errors[0]["message"].startswith("missing columns: resident_id")


def test_a_file_the_csv_module_cannot_read_is_an_error_naming_its_line() -> None:
    huge = "x" * (csv.field_size_limit() + 1)
    text = csv_text("\n") + f"{RESIDENT},{huge}\n"
    persons, errors = parse_csv(text)
    assert persons == []
    assert errors == [{"line": 4, "field": "row", "message": errors[0]["message"]}]
    assert errors[0]["message"].startswith("not readable as CSV: field larger than field limit")

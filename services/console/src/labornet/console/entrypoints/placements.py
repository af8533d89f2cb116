"""Placement statistics: this province's workers hired in other provinces (outbound, by destination) and the workers
of other provinces it hired (inbound, by origin), by counterpart province and month (counts only)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from labornet.console.adapters.services import ApiError
from labornet.console.entrypoints.web import OfficerPage

router = APIRouter()
MONTH = r"^(\d{4}-(0[1-9]|1[0-2]))?$"


def by_province_and_month(
    cells: Iterable[Mapping[str, Any]],
) -> tuple[list[str], list[tuple[str, dict[str, int], int]]]:
    """The months (oldest first) and, per counterpart province, its hires by month and in all: a table's rows."""
    table: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for cell in cells:
        table[str(cell["counterpart_province"])][str(cell["month"])] += int(cell["hires"])
    months = sorted({month for row in table.values() for month in row})
    rows = [(province, dict(row), sum(row.values())) for province, row in sorted(table.items())]
    return months, rows


@router.get("/placements")
async def statistics(
    page: OfficerPage,
    month_from: Annotated[str | None, Query(pattern=MONTH)] = None,
    month_to: Annotated[str | None, Query(pattern=MONTH)] = None,
) -> Response:
    filters = {"month_from": month_from or "", "month_to": month_to or ""}
    error = None
    try:
        answer = await page.call(
            "jobs", "GET", "/api/v1/placements/statistics", params={"month_from": month_from, "month_to": month_to}
        )
    except ApiError as exc:
        if exc.status != 422:
            raise
        answer, error = None, exc
    directions = {}
    if answer is not None:
        for direction in ("outbound", "inbound"):
            months, rows = by_province_and_month(answer[direction]["cells"])
            directions[direction] = {"total": answer[direction]["total"], "months": months, "rows": rows}
    return page.render(
        "placements.html",
        422 if error else 200,
        answer=answer,
        directions=directions,
        values=filters,
        errors={name.removeprefix("query."): message for name, message in (error.errors if error else {}).items()},
        problem=error,
    )

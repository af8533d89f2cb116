"""Rights cases: the list, filing for a worker, one case with its timeline and the steps open to this province."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from labornet.console.adapters.services import ApiError
from labornet.console.entrypoints.web import FormDep, OfficerPage, Page, nested

router = APIRouter()

STATUSES = ("referred", "investigating", "returned", "resolved", "closed")
CATEGORIES = ("wage-arrears", "unpaid-social-insurance", "work-injury", "contract-dispute")
SECTORS = ("construction", "other")
CASE_FIELDS = (
    "complainant.resident_id",
    "complainant.name",
    "complainant.phone",
    "category",
    "sector",
    "employer.name",
    "employer.credit_code",
    "employer.address",
    "employer.province",
    "work_place.division_code",
    "work_place.site",
    "period.start",
    "period.end",
    "amount_owed",
    "workers_affected",
    "facts",
)
# each step: the form fields it sends (the first one required by the service where it has one)
STEPS: dict[str, tuple[str, ...]] = {
    "accept": ("note",),
    "decline": ("reason", "suggested_province"),
    "updates": ("note",),
    "extend": ("reason",),
    "escalate": ("reason",),
    "resolve": ("amount_recovered", "workers_paid", "note"),
    "refer": ("province", "note"),
}


def steps_open(case: dict[str, Any], province: str) -> list[str]:
    """The steps this province may take now: the holder acts, by the case's status."""
    if case.get("holder") != province:
        return []
    status = case.get("status")
    if status == "referred" and case.get("handling_province") == province:
        return ["accept", "decline"]
    if status == "investigating":
        found = ["updates", "resolve"]
        if case.get("overdue"):
            found.append("escalate")
        elif not case.get("extended"):
            found.append("extend")
        return found
    if status == "returned":
        return ["refer"]
    return []


@router.get("/cases")
async def listing(
    page: OfficerPage,
    status: Annotated[str | None, Query(max_length=20)] = None,
    side: Annotated[str | None, Query(pattern=r"^(home|handling|former)?$")] = None,
    after: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    answer = await page.call(
        "rights", "GET", "/api/v1/cases", params={"status": status, "side": side, "after": after, "limit": 50}
    )
    return page.render(
        "cases.html", answer=answer, filters={"status": status or "", "side": side or ""}, statuses=STATUSES
    )


def _new_form(page: Page, status_code: int, **context: Any) -> Response:
    return page.render(
        "case_new.html",
        status_code,
        categories=CATEGORIES,
        sectors=SECTORS,
        provinces=list(page.console.registry),
        **context,
    )


@router.get("/cases/new")
async def new_form(page: OfficerPage) -> Response:
    return _new_form(page, 200, values={"category": "wage-arrears", "workers_affected": "1"}, errors={})


@router.post("/cases")
async def file(page: OfficerPage, form: FormDep) -> Response:
    try:
        created = await page.call("rights", "POST", "/api/v1/cases", json=nested(form, *CASE_FIELDS))
    except ApiError as exc:
        return _new_form(page, 422 if exc.status == 422 else 409, values=form, errors=exc.errors, problem=exc)
    return page.redirect(f"/cases/{created['id']}", f"{page.t('case.filed')}: {created['id']}")


@router.get("/cases/{case_id}")
async def show(case_id: str, page: OfficerPage) -> Response:
    case = await page.call("rights", "GET", f"/api/v1/cases/{case_id}")
    province = page.console.settings.province
    return page.render(
        "case.html",
        case=case,
        steps=steps_open(case, province),
        partners=[p for p in page.console.registry if p.code != province],
        provinces=list(page.console.registry),
        errors={},
        values={},
    )


@router.post("/cases/{case_id}/{step}")
async def act(case_id: str, step: str, page: OfficerPage, form: FormDep) -> Response:
    if step not in STEPS:
        return page.redirect(f"/cases/{case_id}")
    body = {name: form[name] for name in STEPS[step] if form.get(name)}
    try:
        await page.call("rights", "POST", f"/api/v1/cases/{case_id}/{step}", json=body)
    except ApiError as exc:
        case = await page.call("rights", "GET", f"/api/v1/cases/{case_id}")
        province = page.console.settings.province
        return page.render(
            "case.html",
            422 if exc.status == 422 else 409,
            case=case,
            steps=steps_open(case, province),
            partners=[p for p in page.console.registry if p.code != province],
            provinces=list(page.console.registry),
            errors={f"{step}.{name}": message for name, message in exc.errors.items()},
            values={f"{step}.{name}": value for name, value in form.items()},
            problem=exc,
        )
    return page.redirect(f"/cases/{case_id}", page.t(f"case.done.{step}"))

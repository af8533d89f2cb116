"""Vacancies: the federation-wide search (this node's replica), posting, editing with the version read, closing."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from labornet.console.adapters.services import ApiError
from labornet.console.entrypoints.web import FormDep, OfficerPage, Page, nested

router = APIRouter()

EMPLOYMENT_TYPES = ("full-time", "part-time", "seasonal", "internship")
TARGET_GROUPS = (
    "migrant-workers",
    "college-graduates",
    "lifted-out-of-poverty",
    "people-with-disabilities",
    "returning-entrepreneurs",
    "veterans",
)
FIELDS = (
    "title",
    "employer.name",
    "employer.credit_code",
    "occupation_code",
    "division_code",
    "city",
    "headcount",
    "salary.min",
    "salary.max",
    "employment_type",
    "contact",
    "closing_date",
    "description",
)
FIXED_AFTER_POSTING = ("employer.name", "employer.credit_code")


def draft(form: dict[str, str], names: tuple[str, ...] = FIELDS) -> dict[str, Any]:
    body = nested(form, *names)
    skills = [s.strip() for s in form.get("skills", "").replace("，", ",").split(",") if s.strip()]
    if skills or "skills" in form:
        body["skills"] = skills
    return body


def form_values(vacancy: dict[str, Any]) -> dict[str, str]:
    """A vacancy as the service shows it (flat: ``salary_min``) in the form's fields (nested: ``salary.min``)."""
    values = {name: str(vacancy.get(name.replace(".", "_")) or "") for name in FIELDS}
    values["skills"] = ", ".join(vacancy.get("skills") or [])
    return values


@router.get("/vacancies")
async def search(
    page: OfficerPage,
    q: Annotated[str | None, Query(max_length=100)] = None,
    province: Annotated[str | None, Query(pattern=r"^(\d{2}0000)?$")] = None,
    employment_type: Annotated[str | None, Query(max_length=20)] = None,
    target_group: Annotated[str | None, Query(max_length=40)] = None,
    salary_min: Annotated[str | None, Query(pattern=r"^\d{0,7}$")] = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    filters = {
        "q": q,
        "province": province,
        "employment_type": employment_type,
        "target_group": target_group,
        "salary_min": salary_min,
    }
    error = None
    try:
        result = await page.call("jobs", "GET", "/api/v1/vacancies", params={**filters, "cursor": cursor, "limit": 20})
    except ApiError as exc:
        result, error = {"items": [], "total": 0, "next_cursor": None}, exc
    partial = bool(page.request.headers.get("HX-Request"))
    return page.render(
        "vacancy_results.html" if partial else "vacancies.html",
        partial=partial,
        result=result,
        filters={k: v or "" for k, v in filters.items()},
        error=error,
        employment_types=EMPLOYMENT_TYPES,
        target_groups=TARGET_GROUPS,
        provinces=page.console.registry,
        cursor=cursor,
    )


def _vacancy_form(page: Page, status_code: int, **context: Any) -> Response:
    return page.render("vacancy_form.html", status_code, employment_types=EMPLOYMENT_TYPES, **context)


@router.get("/vacancies/new")
async def new_form(page: OfficerPage) -> Response:
    return _vacancy_form(page, 200, values={"employment_type": "full-time", "headcount": "1"}, errors={}, vacancy=None)


@router.post("/vacancies")
async def post(page: OfficerPage, form: FormDep) -> Response:
    try:
        created = await page.call("jobs", "POST", "/api/v1/vacancies", json=draft(form))
    except ApiError as exc:
        return _vacancy_form(page, 422, values=form, errors=exc.errors, problem=exc, vacancy=None)
    return page.redirect(f"/vacancies/{created['id']}", f"{page.t('vacancy.posted')}: {created['id']}")


@router.get("/vacancies/{vacancy_id}")
async def show(vacancy_id: str, page: OfficerPage) -> Response:
    vacancy = await page.call("jobs", "GET", f"/api/v1/vacancies/{vacancy_id}")
    return _vacancy_form(page, 200, values=form_values(vacancy), errors={}, vacancy=vacancy)


@router.post("/vacancies/{vacancy_id}")
async def edit(vacancy_id: str, page: OfficerPage, form: FormDep) -> Response:
    version = form.get("version", "")
    changes = draft(form, tuple(name for name in FIELDS if name not in FIXED_AFTER_POSTING))
    try:
        saved = await page.call(
            "jobs", "PATCH", f"/api/v1/vacancies/{vacancy_id}", json=changes, headers={"If-Match": f'"{version}"'}
        )
    except ApiError as exc:
        vacancy = await page.call("jobs", "GET", f"/api/v1/vacancies/{vacancy_id}")
        return _vacancy_form(
            page, 422 if exc.status == 422 else 409, values=form, errors=exc.errors, problem=exc, vacancy=vacancy
        )
    return page.redirect(f"/vacancies/{vacancy_id}", f"{page.t('vacancy.saved')} (v{saved['version']})")


@router.post("/vacancies/{vacancy_id}/close")
async def close(vacancy_id: str, page: OfficerPage, form: FormDep) -> Response:
    body = {"reason": form.get("reason", ""), "version": form.get("version") or None}
    try:
        await page.call("jobs", "POST", f"/api/v1/vacancies/{vacancy_id}/close", json=body)
    except ApiError as exc:
        return page.redirect(f"/vacancies/{vacancy_id}", exc.detail, "error")
    return page.redirect(f"/vacancies/{vacancy_id}", page.t("vacancy.closed"))

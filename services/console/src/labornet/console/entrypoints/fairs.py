"""Joint recruitment events (docking events, job fairs): the federation's events by phase, organising one, and one
event with the vacancies every organising province lists, this province's own listing, the registrations (the
organiser only) and its outcomes."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from labornet.console.adapters.services import ApiError
from labornet.console.entrypoints.web import FormDep, OfficerPage, Page, nested

router = APIRouter()

CAMPAIGNS = (
    "spring-breeze-action",
    "employment-assistance-month",
    "private-enterprise-service-month",
    "migrant-worker-special",
    "graduate-special",
    "labour-brand-docking",
    "other",
)
PHASES = ("upcoming", "ongoing", "past")
FIELDS = ("title", "description", "campaign", "mode", "url", "venue.division_code", "venue.address", "starts_on")
FIELDS_TOO = ("ends_on", "capacity")
OUTCOMES = ("employers_attending", "jobseekers_attending", "intentions_reached", "hires", "note")


async def _form_list(page: Page, name: str) -> list[str]:
    """Every value of a repeated form field (ticked boxes); the CSRF check has read the form already."""
    form = await page.request.form()
    return [str(value) for value in form.getlist(name) if isinstance(value, str) and value]


def fair_draft(form: dict[str, str], co_organisers: list[str]) -> dict[str, Any]:
    body = nested(form, *FIELDS, *FIELDS_TOO)
    if body.get("mode") == "online":
        body.pop("venue", None)
    body["co_organisers"] = co_organisers
    return body


@router.get("/fairs")
async def listing(
    page: OfficerPage,
    phase: Annotated[str | None, Query(pattern=r"^(upcoming|ongoing|past)?$")] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    answer = await page.call("jobs", "GET", "/api/v1/fairs", params={"phase": phase, "cursor": cursor, "limit": 50})
    return page.render("fairs.html", answer=answer, phase=phase or "", phases=PHASES)


def _new_form(page: Page, status_code: int, **context: Any) -> Response:
    return page.render(
        "fair_new.html",
        status_code,
        campaigns=CAMPAIGNS,
        partners=[p for p in page.console.registry if p.code != page.console.settings.province],
        **context,
    )


@router.get("/fairs/new")
async def new_form(page: OfficerPage) -> Response:
    return _new_form(page, 200, values={"campaign": "spring-breeze-action", "mode": "venue"}, chosen=[], errors={})


@router.post("/fairs")
async def create(page: OfficerPage, form: FormDep) -> Response:
    chosen = await _form_list(page, "co_organisers")
    try:
        created = await page.call("jobs", "POST", "/api/v1/fairs", json=fair_draft(form, chosen))
    except ApiError as exc:
        status_code = 422 if exc.status == 422 else 409
        return _new_form(page, status_code, values=form, chosen=chosen, errors=exc.errors, problem=exc)
    return page.redirect(f"/fairs/{created['id']}", f"{page.t('fair.created')}: {created['id']}")


async def _context(page: Page, fair_id: str) -> dict[str, Any]:
    """The event, and what this province's officers may do with it."""
    province = page.console.settings.province
    fair = await page.call("jobs", "GET", f"/api/v1/fairs/{fair_id}")
    organiser = fair["organiser_province"] == province
    organising = organiser or province in fair["co_organisers"]
    active = fair["status"] != "cancelled" and fair["phase"] != "past"
    ours = next((listing for listing in fair["listings"] if listing["province"] == province), None)

    async def open_vacancies() -> list[dict[str, Any]]:
        if not (organising and active):
            return []
        answer = await page.call("jobs", "GET", "/api/v1/vacancies", params={"province": province, "limit": 100})
        found: list[dict[str, Any]] = answer["items"]
        return found

    async def registrations() -> list[dict[str, Any]]:
        if not organiser:
            return []
        answer = await page.call("jobs", "GET", f"/api/v1/fairs/{fair_id}/registrations", params={"limit": 500})
        found: list[dict[str, Any]] = answer["items"]
        return found

    vacancies, registered = await asyncio.gather(open_vacancies(), registrations())
    return {
        "fair": fair,
        "organiser": organiser,
        "organising": organising,
        "may_list": organising and active,
        "may_record": organiser and fair["status"] != "cancelled" and fair["phase"] != "upcoming",
        "may_cancel": organiser and active and fair["status"] == "scheduled",
        "our_listing": ours,
        "listed_ids": {v["id"] for v in ours["vacancies"]} if ours else set(),
        "open_vacancies": vacancies,
        "registrations": registered,
    }


def _show(page: Page, context: dict[str, Any], status_code: int = 200, **more: Any) -> Response:
    more.setdefault("errors", {})
    outcomes = context["fair"].get("outcomes") or {}
    more.setdefault("values", {f"outcomes.{k}": "" if outcomes.get(k) is None else str(outcomes[k]) for k in OUTCOMES})
    return page.render("fair.html", status_code, **context, **more)


@router.get("/fairs/{fair_id}")
async def show(fair_id: str, page: OfficerPage) -> Response:
    return _show(page, await _context(page, fair_id))


async def _refused(page: Page, fair_id: str, step: str, exc: ApiError, form: dict[str, str]) -> Response:
    return _show(
        page,
        await _context(page, fair_id),
        422 if exc.status == 422 else 409,
        errors={f"{step}.{name}": message for name, message in exc.errors.items()},
        values={f"{step}.{name}": value for name, value in form.items()},
        problem=exc,
    )


@router.post("/fairs/{fair_id}/vacancies")
async def list_vacancies(fair_id: str, page: OfficerPage, form: FormDep) -> Response:
    body: dict[str, Any] = {"vacancy_ids": await _form_list(page, "vacancy_ids")}
    if form.get("version", "").isdigit():
        body["version"] = int(form["version"])
    try:
        await page.call("jobs", "PUT", f"/api/v1/fairs/{fair_id}/vacancies", json=body)
    except ApiError as exc:
        return await _refused(page, fair_id, "listing", exc, form)
    return page.redirect(f"/fairs/{fair_id}", page.t("fair.listed"))


@router.post("/fairs/{fair_id}/outcomes")
async def record_outcomes(fair_id: str, page: OfficerPage, form: FormDep) -> Response:
    body: dict[str, Any] = {name: form[name] for name in OUTCOMES if form.get(name)}
    try:
        await page.call("jobs", "POST", f"/api/v1/fairs/{fair_id}/outcomes", json=body)
    except ApiError as exc:
        return await _refused(page, fair_id, "outcomes", exc, form)
    return page.redirect(f"/fairs/{fair_id}", page.t("fair.outcomes_recorded"))


@router.post("/fairs/{fair_id}/cancel")
async def cancel(fair_id: str, page: OfficerPage, form: FormDep) -> Response:
    body: dict[str, Any] = {"reason": form.get("reason", "")}
    if form.get("version", "").isdigit():
        body["version"] = int(form["version"])
    try:
        await page.call("jobs", "POST", f"/api/v1/fairs/{fair_id}/cancel", json=body)
    except ApiError as exc:
        return await _refused(page, fair_id, "cancel", exc, form)
    return page.redirect(f"/fairs/{fair_id}", page.t("fair.cancelled"))

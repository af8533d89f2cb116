"""Organised labour dispatch: the groups this province sent and received (headcount sent, received, the difference,
overdue confirmations), recording a dispatch, and one dispatch with the step open to this province: the destination
confirms the arrival, the origin cancels."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from labornet.console.adapters.services import ApiError
from labornet.console.entrypoints.applications import china_moment
from labornet.console.entrypoints.web import FormDep, OfficerPage, Page

router = APIRouter()

TRANSPORTS = ("chartered-bus", "special-train", "chartered-flight", "other")
STATES = ("announced", "arrived", "cancelled")
PLAIN = ("destination_province", "brand_demand_id", "fair_id", "transport", "departure_place", "expected_arrival_on")
EMPLOYER = ("name", "credit_code", "division_code", "site")


def draft(form: dict[str, str]) -> dict[str, Any]:
    """The form as the service's DispatchDraft: one employer (``employers.0.*``), the escort, times in China."""
    body: dict[str, Any] = {name: form[name] for name in PLAIN if form.get(name)}
    employer = {name: form[f"employers.0.{name}"] for name in EMPLOYER if form.get(f"employers.0.{name}")}
    body["employers"] = [employer] if employer else []
    body["escort"] = {name: form.get(f"escort.{name}", "") for name in ("name", "phone")}
    if form.get("headcount"):
        body["headcount"] = form["headcount"]
    if form.get("departure_at"):
        body["departure_at"] = china_moment(form["departure_at"])
    if form.get("note"):
        body["note"] = form["note"]
    return body


def steps_open(dispatch: dict[str, Any]) -> list[str]:
    if dispatch.get("state") != "announced":
        return []
    return ["arrival"] if dispatch.get("role") == "received" else ["cancel"]


@router.get("/dispatches")
async def listing(
    page: OfficerPage,
    role: Annotated[str | None, Query(pattern=r"^(sent|received)?$")] = None,
    state: Annotated[str | None, Query(pattern=r"^(announced|arrived|cancelled)?$")] = None,
    overdue: Annotated[str | None, Query(pattern=r"^(true)?$")] = None,
    after: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    role = role or "sent"
    answer = await page.call(
        "jobs",
        "GET",
        "/api/v1/dispatches",
        params={"role": role, "state": state, "overdue": overdue, "after": after, "limit": 50},
    )
    return page.render(
        "dispatches.html",
        answer=answer,
        filters={"role": role, "state": state or "", "overdue": overdue or ""},
        states=STATES,
    )


def _new_form(page: Page, status_code: int, **context: Any) -> Response:
    return page.render(
        "dispatch_new.html",
        status_code,
        transports=TRANSPORTS,
        provinces=[p for p in page.console.registry if p.code != page.console.settings.province],
        **context,
    )


@router.get("/dispatches/new")
async def new_form(
    page: OfficerPage,
    brand_demand_id: Annotated[str | None, Query(max_length=40)] = None,
    fair_id: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    values = {"transport": "chartered-bus", "brand_demand_id": brand_demand_id or "", "fair_id": fair_id or ""}
    return _new_form(page, 200, values=values, errors={})


@router.post("/dispatches")
async def record(page: OfficerPage, form: FormDep) -> Response:
    try:
        created = await page.call("jobs", "POST", "/api/v1/dispatches", json=draft(form))
    except ApiError as exc:
        return _new_form(page, 422 if exc.status == 422 else 409, values=form, errors=exc.errors, problem=exc)
    return page.redirect(f"/dispatches/{created['id']}", f"{page.t('dispatch.recorded')}: {created['id']}")


def _show(page: Page, dispatch: dict[str, Any], status_code: int = 200, **context: Any) -> Response:
    context.setdefault("errors", {})
    context.setdefault("values", {})
    return page.render("dispatch.html", status_code, dispatch=dispatch, steps=steps_open(dispatch), **context)


@router.get("/dispatches/{dispatch_id}")
async def show(dispatch_id: str, page: OfficerPage) -> Response:
    return _show(page, await page.call("jobs", "GET", f"/api/v1/dispatches/{dispatch_id}"))


@router.post("/dispatches/{dispatch_id}/{step}")
async def act(dispatch_id: str, step: str, page: OfficerPage, form: FormDep) -> Response:
    back = f"/dispatches/{dispatch_id}"
    if step not in ("arrival", "cancel"):
        return page.redirect(back)
    body: dict[str, Any]
    if step == "arrival":
        body = {
            "arrived_at": china_moment(form.get("arrived_at", "")),
            "headcount_received": form.get("headcount_received"),
        }
        if form.get("note"):
            body["note"] = form["note"]
    else:
        body = {"reason": form.get("reason", "")}
    if form.get("version", "").isdigit():
        body["version"] = int(form["version"])
    try:
        await page.call("jobs", "POST", f"/api/v1/dispatches/{dispatch_id}/{step}", json=body)
    except ApiError as exc:
        current = await page.call("jobs", "GET", f"/api/v1/dispatches/{dispatch_id}")
        stale = exc.slug == "stale-version"
        return _show(
            page,
            current,
            422 if exc.status == 422 else 409,
            errors={f"{step}.{name}": message for name, message in exc.errors.items()},
            values={} if stale else {f"{step}.{name}": value for name, value in form.items()},
            problem=exc,
            stale=stale,
        )
    return page.redirect(back, page.t(f"dispatch.done.{step}"))

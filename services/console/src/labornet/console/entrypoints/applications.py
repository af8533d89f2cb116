"""Applications across provinces: those received for this province's vacancies (the officers move them) and those
of this province's workers elsewhere (read-only, as the jobs service masks them for the home side).

Each step names the version read (the service's ``version`` body field): a page read before someone else's step
gets the service's 409 and the application as it is now."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from labornet.console.adapters.services import ApiError
from labornet.console.entrypoints.web import FormDep, OfficerPage, Page

router = APIRouter()

STATES = ("received", "shortlisted", "interview", "offer", "hired", "not-selected", "withdrawn")
FINAL = frozenset({"hired", "not-selected", "withdrawn"})
# each step: the form fields it sends besides the version (the service requires those it has no default for)
STEPS: dict[str, tuple[str, ...]] = {
    "shortlist": ("note",),
    "interview": ("at", "place", "note"),
    "offer": ("salary", "start_date", "note"),
    "hire": ("note",),
    "not-selected": ("reason",),
    "withdrawn": ("note",),
}
CHINA_OFFSET = "+08:00"


def steps_open(application: dict[str, Any]) -> list[str]:
    """The steps this province may take now: the vacancy's owner moves an application forward until it ends."""
    state = application.get("state")
    if application.get("side") not in ("owner", "both") or state in FINAL:
        return []
    if state == "offer":
        return ["hire", "not-selected", "withdrawn"]
    found = ["shortlist"] if state == "received" else []
    return [*found, "interview", "offer", "not-selected", "withdrawn"]


def china_moment(value: str) -> str:
    """A ``datetime-local`` input (China's wall clock, no offset) as the time with its offset the service expects."""
    if not value or "+" in value[10:] or value.endswith("Z"):
        return value
    return (value if len(value) > 16 else value + ":00") + CHINA_OFFSET


def step_body(step: str, form: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {name: form[name] for name in STEPS[step] if form.get(name)}
    if "at" in body:
        body["at"] = china_moment(body["at"])
    if form.get("version", "").isdigit():
        body["version"] = int(form["version"])
    return body


@router.get("/applications")
async def listing(
    page: OfficerPage,
    role: Annotated[str | None, Query(pattern=r"^(received|sent)?$")] = None,
    state: Annotated[str | None, Query(max_length=20)] = None,
    vacancy_id: Annotated[str | None, Query(max_length=40)] = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    role = role or "received"
    filters = {"role": role, "state": state or "", "vacancy_id": vacancy_id or ""}
    error = None
    try:
        answer = await page.call(
            "jobs",
            "GET",
            "/api/v1/applications",
            params={"role": role, "state": state, "vacancy_id": vacancy_id, "cursor": cursor, "limit": 50},
        )
    except ApiError as exc:
        if exc.status != 422:
            raise
        answer, error = {"items": [], "next_cursor": None}, exc
    return page.render(
        "applications.html",
        422 if error else 200,
        answer=answer,
        filters=filters,
        states=STATES,
        problem=error,
        errors={name.removeprefix("query."): message for name, message in (error.errors if error else {}).items()},
    )


def _show(page: Page, application: dict[str, Any], status_code: int = 200, **context: Any) -> Response:
    context.setdefault("errors", {})
    context.setdefault("values", {})
    return page.render(
        "application.html", status_code, application=application, steps=steps_open(application), **context
    )


@router.get("/applications/{application_id}")
async def show(application_id: str, page: OfficerPage) -> Response:
    return _show(page, await page.call("jobs", "GET", f"/api/v1/applications/{application_id}"))


@router.post("/applications/{application_id}/{step}")
async def act(application_id: str, step: str, page: OfficerPage, form: FormDep) -> Response:
    back = f"/applications/{application_id}"
    if step not in STEPS:
        return page.redirect(back)
    try:
        await page.call("jobs", "POST", f"/api/v1/applications/{application_id}/{step}", json=step_body(step, form))
    except ApiError as exc:
        current = await page.call("jobs", "GET", f"/api/v1/applications/{application_id}")
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
    return page.redirect(back, page.t(f"application.done.{step}"))

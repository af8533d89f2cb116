"""Labour-service brands (register, recognise, revoke) and demands for their workers (received and posted)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from labornet.console.adapters.services import ApiError
from labornet.console.entrypoints.web import FormDep, OfficerPage, Page, nested

router = APIRouter()

LEVELS = ("national", "provincial", "city-county")
BODY_TYPES = ("regional-public", "enterprise")
BRAND_FIELDS = (
    "name_zh",
    "name_en",
    "division_code",
    "category",
    "level",
    "cultivating_body.type",
    "cultivating_body.name",
    "cultivating_body.credit_code",
)


async def _brands_page(page: Page, status_code: int = 200, **context: Any) -> Response:
    province = page.console.settings.province
    ours = await page.call(
        "brands",
        "GET",
        "/api/v1/brands",
        params=[("province", province), ("status", "proposed"), ("status", "recognised"), ("limit", 100)],
    )
    federation = await page.call("brands", "GET", "/api/v1/brands", params={"limit": 50})
    categories = await page.call("brands", "GET", "/api/v1/categories")
    context.setdefault("values", {"level": "provincial", "cultivating_body.type": "regional-public"})
    context.setdefault("errors", {})
    return page.render(
        "brands.html",
        status_code,
        ours=ours["items"],
        federation=[b for b in federation["items"] if b.get("origin_province") != province],
        categories=categories["items"],
        levels=LEVELS,
        body_types=BODY_TYPES,
        **context,
    )


@router.get("/brands")
async def brands(page: OfficerPage) -> Response:
    return await _brands_page(page)


@router.post("/brands")
async def register(page: OfficerPage, form: FormDep) -> Response:
    try:
        created = await page.call("brands", "POST", "/api/v1/brands", json=nested(form, *BRAND_FIELDS))
    except ApiError as exc:
        return await _brands_page(page, 422 if exc.status == 422 else 409, values=form, errors=exc.errors, problem=exc)
    return page.redirect("/brands", f"{page.t('brand.registered')}: {created['id']}")


@router.post("/brands/{brand_id}/{step}")
async def change(brand_id: str, step: str, page: OfficerPage, form: FormDep) -> Response:
    if step not in ("recognise", "revoke"):
        return page.redirect("/brands")
    body: dict[str, Any] = {"version": form.get("version") or None}
    if step == "revoke":
        body["reason"] = form.get("reason", "")
    try:
        await page.call("brands", "POST", f"/api/v1/brands/{brand_id}/{step}", json=body)
    except ApiError as exc:
        return page.redirect("/brands", exc.detail, "error")
    return page.redirect("/brands", page.t("brand.recognised" if step == "recognise" else "brand.revoked"))


DEMAND_FIELDS = ("brand_id", "workers", "division_code", "city", "period.start", "period.end", "conditions", "contact")


async def _demands_page(page: Page, status_code: int = 200, **context: Any) -> Response:
    province = page.console.settings.province
    received, posted, brands = await asyncio.gather(
        page.call("brands", "GET", "/api/v1/demands", params={"side": "received", "limit": 100}),
        page.call("brands", "GET", "/api/v1/demands", params={"side": "posted", "limit": 100}),
        page.call("brands", "GET", "/api/v1/brands", params={"limit": 100}),
    )
    context.setdefault("values", {})
    context.setdefault("errors", {})
    return page.render(
        "demands.html",
        status_code,
        received=received["items"],
        posted=posted["items"],
        partner_brands=[b for b in brands["items"] if b.get("origin_province") != province],
        **context,
    )


@router.get("/demands")
async def demands(page: OfficerPage) -> Response:
    return await _demands_page(page)


@router.post("/demands")
async def post_demand(page: OfficerPage, form: FormDep) -> Response:
    try:
        created = await page.call("brands", "POST", "/api/v1/demands", json=nested(form, *DEMAND_FIELDS))
    except ApiError as exc:
        return await _demands_page(page, 422 if exc.status == 422 else 409, values=form, errors=exc.errors, problem=exc)
    return page.redirect("/demands", f"{page.t('demand.posted')}: {created['id']}")


@router.post("/demands/{demand_id}/answer")
async def answer(demand_id: str, page: OfficerPage, form: FormDep) -> Response:
    body = {k: form[k] for k in ("decision", "workers_offered", "note") if form.get(k)}
    try:
        await page.call("brands", "POST", f"/api/v1/demands/{demand_id}/answer", json=body)
    except ApiError as exc:
        return page.redirect("/demands", exc.detail, "error")
    return page.redirect("/demands", page.t("demand.answered"))

"""Transfers of the unemployment-insurance relationship: the list, one case with both case numbers, the person's
record, the timeline and the actions of its current state, and its settlement.

Identity numbers travel only in POST bodies and server-side calls, never in a URL of the console."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from labornet.console.adapters.services import ApiError
from labornet.console.entrypoints.web import FormDep, OfficerPage, Page

router = APIRouter()

REASONS = ("new-employment", "claimant-relocation", "return-to-hukou", "unemployed-not-claiming", "migrant-worker")
STATES = ("awaiting-answer", "cancel-requested", "received", "sheet-sent", "completed", "refused", "cancelled")


def actions(case: dict[str, Any]) -> list[str]:
    """What this province may do with its side of the case now."""
    if case["side"] == "sending" and case["state"] == "received":
        return ["send-sheet", "refuse"]
    if case["side"] == "receiving" and case["state"] == "awaiting-answer":
        return ["cancel"]
    return []


@router.get("/transfers")
async def listing(
    page: OfficerPage,
    state: Annotated[str | None, Query(max_length=30)] = None,
    side: Annotated[str | None, Query(pattern=r"^(receiving|sending)?$")] = None,
    after: Annotated[str | None, Query(max_length=60)] = None,
) -> Response:
    answer = await page.call(
        "insurance", "GET", "/api/v1/transfers", params={"state": state, "side": side, "after": after, "limit": 50}
    )
    return page.render(
        "transfers.html", answer=answer, filters={"state": state or "", "side": side or ""}, states=STATES
    )


def _new_form(page: Page, status_code: int, **context: Any) -> Response:
    return page.render(
        "transfer_new.html",
        status_code,
        reasons=REASONS,
        provinces=[p for p in page.console.registry if p.code != page.console.settings.province],
        **context,
    )


@router.get("/transfers/new")
async def new_form(page: OfficerPage) -> Response:
    return _new_form(page, 200, values={}, errors={})


@router.post("/transfers")
async def file(page: OfficerPage, form: FormDep) -> Response:
    body = {
        key: form[key]
        for key in ("from_province", "reason", "name", "resident_id", "new_employer_credit_code")
        if form.get(key)
    }
    try:
        created = await page.call("insurance", "POST", "/api/v1/transfers", json=body)
    except ApiError as exc:
        return _new_form(page, 422 if exc.status == 422 else 409, values=form, errors=exc.errors, problem=exc)
    return page.redirect(f"/transfers/{created['id']}", f"{page.t('transfer.filed')}: {created['id']}")


@router.get("/transfers/{case_id}")
async def show(case_id: str, page: OfficerPage) -> Response:
    case = await page.call("insurance", "GET", f"/api/v1/transfers/{case_id}")
    settlements = await page.call("insurance", "GET", "/api/v1/settlements")
    mine = [s for s in settlements["items"] if s["transfer_id"] == case_id]
    record = None
    if case["side"] == "sending":
        try:
            record = await page.call("insurance", "GET", f"/api/v1/insured-persons/{case['resident_id']}")
        except ApiError as exc:
            if exc.status != 404:
                raise
    return page.render("transfer.html", case=case, settlements=mine, record=record, actions=actions(case), errors={})


@router.post("/transfers/{case_id}/answer")
async def answer(case_id: str, page: OfficerPage, form: FormDep) -> Response:
    decision = form.get("decision", "")
    body = {"decision": decision, "reason": form.get("reason") or None}
    try:
        await page.call("insurance", "POST", f"/api/v1/transfers/{case_id}/answer", json=body)
    except ApiError as exc:
        return page.redirect(f"/transfers/{case_id}", exc.detail, "error")
    done = "transfer.sheet_sent" if decision == "send-sheet" else "transfer.refused"
    return page.redirect(f"/transfers/{case_id}", page.t(done))


@router.post("/transfers/{case_id}/cancel")
async def cancel(case_id: str, page: OfficerPage, _form: FormDep) -> Response:
    try:
        await page.call("insurance", "POST", f"/api/v1/transfers/{case_id}/cancel")
    except ApiError as exc:
        return page.redirect(f"/transfers/{case_id}", exc.detail, "error")
    return page.redirect(f"/transfers/{case_id}", page.t("transfer.cancelled"))


@router.post("/settlements/{settlement_id}/paid")
async def paid(settlement_id: str, page: OfficerPage, form: FormDep) -> Response:
    back = f"/transfers/{form.get('transfer_id', '')}" if form.get("transfer_id") else "/transfers"
    body = {"payment_reference": form.get("payment_reference") or None}
    try:
        await page.call("insurance", "POST", f"/api/v1/settlements/{settlement_id}/paid", json=body)
    except ApiError as exc:
        return page.redirect(back, exc.detail, "error")
    return page.redirect(back, page.t("settlement.marked"))

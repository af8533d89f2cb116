"""Federation status: this node's services, their replicas of the partners, the outbox backlog and (admins) the
quarantine with replay and discard."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from labornet.console.adapters.services import SERVICES, ApiError
from labornet.console.config import ConsoleService
from labornet.console.entrypoints.web import FormDep, OfficerPage

router = APIRouter()


@router.get("/federation")
async def status(page: OfficerPage) -> Response:
    readiness = await page.console.services.readiness()
    sync: dict[str, Any] = {}
    quarantine: dict[str, list[dict[str, Any]]] = {}
    if page.session.is_admin:

        async def of(service: ConsoleService) -> tuple[Any, Any]:
            return await asyncio.gather(
                page.call(service, "GET", "/admin/v1/sync"),
                page.call(service, "GET", "/admin/v1/quarantine", params={"limit": 50}),
            )

        answers = await asyncio.gather(*(of(service) for service in SERVICES), return_exceptions=True)
        for service, answer in zip(SERVICES, answers, strict=True):
            if isinstance(answer, ApiError):
                sync[service] = {"error": answer.detail}
            elif isinstance(answer, BaseException):
                raise answer
            else:
                sync[service], quarantine[service] = answer[0], answer[1]["items"]
    return page.render("federation.html", readiness=readiness, sync=sync, quarantine=quarantine)


@router.post("/federation/quarantine/{service}/{record_id}/{step}")
async def resolve(service: str, record_id: int, step: str, page: OfficerPage, _form: FormDep) -> Response:
    if service not in SERVICES or step not in ("replay", "discard"):
        return page.redirect("/federation")
    try:
        await page.call(service, "POST", f"/admin/v1/quarantine/{record_id}/{step}")
    except ApiError as exc:
        return page.redirect("/federation", exc.detail, "error")
    done = "federation.replayed" if step == "replay" else "federation.discarded"
    return page.redirect("/federation", f"{page.t(done)}: {service} #{record_id}")

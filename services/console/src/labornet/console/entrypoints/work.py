"""Today's work, the home page: one list across the node's services, asked in parallel with the officer's token."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from labornet.console.adapters.services import SERVICES, ApiError
from labornet.console.domain.worklist import (
    WorkItem,
    case_items,
    demand_items,
    operations_items,
    settlement_items,
    todays_work,
    transfer_items,
)
from labornet.console.entrypoints.web import NotSignedIn, OfficerPage, Page
from labornet.shared.clock import today_in_china

router = APIRouter()


async def _items_of_pages(page: Page, service: Any, path: str, params: dict[str, Any], pages: int = 5) -> list[Any]:
    """Every item of a list endpoint that pages with ``after``/``next_after`` (a few pages at most)."""
    found: list[Any] = []
    after = None
    for _ in range(pages):
        answer = await page.call(service, "GET", path, params={**params, "after": after})
        found.extend(answer["items"])
        after = answer.get("next_after")
        if not after:
            break
    return found


async def collect(page: Page) -> tuple[list[WorkItem], list[str]]:
    """The items, and the services that could not be asked (the rest of the list is still shown)."""
    console = page.console
    province = console.settings.province
    calendar = console.calendar
    today = today_in_china(console.clock())
    near = console.settings.near_limit_workdays

    async def transfers() -> list[WorkItem]:
        found = []
        for side, state in (("sending", "received"), ("receiving", "awaiting-answer"), ("sending", "sheet-sent")):
            cases = await _items_of_pages(
                page, "insurance", "/api/v1/transfers", {"side": side, "state": state, "limit": 200}
            )
            found.extend(transfer_items(cases, calendar, today))
        return found

    async def settlements() -> list[WorkItem]:
        answer = await page.call("insurance", "GET", "/api/v1/settlements", params={"status": "pending"})
        return settlement_items(answer["items"], calendar, today)

    async def cases() -> list[WorkItem]:
        found = []
        for status, side in (("referred", "handling"), ("investigating", "handling"), ("returned", "home")):
            listed = await _items_of_pages(
                page, "rights", "/api/v1/cases", {"status": status, "side": side, "limit": 200}
            )
            found.extend(case_items(listed, province, calendar, today, near))
        return found

    async def demands() -> list[WorkItem]:
        answer = await page.call(
            "brands", "GET", "/api/v1/demands", params={"side": "received", "status": "open", "limit": 100}
        )
        return demand_items(answer["items"], calendar, today)

    async def operations() -> list[WorkItem]:
        quarantined: dict[str, int] = {}
        replicas: dict[str, list[dict[str, Any]]] = {}
        for service in SERVICES:
            listed = await page.call(service, "GET", "/admin/v1/quarantine", params={"limit": 500})
            quarantined[service] = len(listed["items"])
            replicas[service] = (await page.call(service, "GET", "/admin/v1/sync"))["replicas"]
        return operations_items(quarantined, replicas)

    sources: list[tuple[str, Callable[[], Awaitable[list[WorkItem]]]]] = [
        ("insurance", transfers),
        ("insurance", settlements),
        ("rights", cases),
        ("brands", demands),
    ]
    if page.session.is_admin:
        sources.append(("operations", operations))
    answers = await asyncio.gather(*(source() for _, source in sources), return_exceptions=True)
    items: list[WorkItem] = []
    unavailable: list[str] = []
    for (name, _), answer in zip(sources, answers, strict=True):
        if isinstance(answer, NotSignedIn):
            raise answer
        if isinstance(answer, ApiError):
            unavailable.append(f"{name}: {answer.detail}")
        elif isinstance(answer, BaseException):
            raise answer
        else:
            items.extend(answer)
    return todays_work(items), sorted(set(unavailable))


@router.get("/")
async def today(page: OfficerPage) -> Response:
    items, unavailable = await collect(page)
    return page.render("today.html", items=items, unavailable=unavailable)

"""Today's work, the home page: one list across the node's services, asked in parallel with the officer's token."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from labornet.console.adapters.services import SERVICES, ApiError
from labornet.console.config import ConsoleService
from labornet.console.domain.worklist import (
    WorkItem,
    application_items,
    case_items,
    demand_items,
    dispatch_items,
    operations_items,
    settlement_items,
    todays_work,
    transfer_items,
)
from labornet.console.entrypoints.web import NotSignedIn, OfficerPage, Page
from labornet.shared.clock import today_in_china

router = APIRouter()
WAITING_TRANSFERS = (("sending", "received"), ("receiving", "awaiting-answer"), ("sending", "sheet-sent"))


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
        lists = await asyncio.gather(
            *(
                _items_of_pages(page, "insurance", "/api/v1/transfers", {"side": side, "state": state, "limit": 200})
                for side, state in WAITING_TRANSFERS
            )
        )
        return transfer_items([case for listed in lists for case in listed], calendar, today)

    async def settlements() -> list[WorkItem]:
        answer = await page.call("insurance", "GET", "/api/v1/settlements", params={"status": "pending"})
        return settlement_items(answer["items"], calendar, today)

    async def cases() -> list[WorkItem]:
        lists = await asyncio.gather(
            *(
                _items_of_pages(page, "rights", "/api/v1/cases", {"status": status, "side": side, "limit": 200})
                for status, side in (("referred", "handling"), ("investigating", "handling"), ("returned", "home"))
            )
        )
        return case_items([case for listed in lists for case in listed], province, calendar, today, near)

    async def demands() -> list[WorkItem]:
        answer = await page.call(
            "brands", "GET", "/api/v1/demands", params={"side": "received", "status": "open", "limit": 100}
        )
        return demand_items(answer["items"], calendar, today)

    async def applications() -> list[WorkItem]:
        answer = await page.call(
            "jobs", "GET", "/api/v1/applications", params={"role": "received", "state": "received", "limit": 100}
        )
        return application_items(answer["items"])

    async def dispatches() -> list[WorkItem]:
        lists = await asyncio.gather(
            _items_of_pages(
                page, "jobs", "/api/v1/dispatches", {"role": "received", "state": "announced", "limit": 200}
            ),
            _items_of_pages(
                page,
                "jobs",
                "/api/v1/dispatches",
                {"role": "sent", "state": "announced", "overdue": "true", "limit": 200},
            ),
        )
        return dispatch_items([dispatch for listed in lists for dispatch in listed], calendar, today)

    async def operations() -> list[WorkItem]:
        async def of(service: ConsoleService) -> tuple[int, list[dict[str, Any]]]:
            listed, sync = await asyncio.gather(
                page.call(service, "GET", "/admin/v1/quarantine", params={"limit": 500}),
                page.call(service, "GET", "/admin/v1/sync"),
            )
            return len(listed["items"]), sync["replicas"]

        answers = await asyncio.gather(*(of(service) for service in SERVICES))
        quarantined: dict[str, int] = {service: count for service, (count, _) in zip(SERVICES, answers, strict=True)}
        replicas: dict[str, list[dict[str, Any]]] = {
            service: states for service, (_, states) in zip(SERVICES, answers, strict=True)
        }
        return operations_items(quarantined, replicas)

    sources: list[tuple[str, Callable[[], Awaitable[list[WorkItem]]]]] = [
        ("insurance", transfers),
        ("insurance", settlements),
        ("rights", cases),
        ("brands", demands),
        ("jobs", applications),
        ("jobs", dispatches),
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

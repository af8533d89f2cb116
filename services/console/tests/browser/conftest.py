"""The browser tests' federation and helpers, shared by every test module of this folder: three provinces (Sichuan,
Zhejiang, Chongqing) started in this process — the embedded broker, each node's four services and its console over
HTTP — one per test module, and Debian's Chromium driven through Playwright (no browser download); axe-core audits,
screenshots, signed-in tabs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from labornet.console.app import create_app as create_console
from labornet.console.config import ConsoleSettings
from labornet.rights.app import build_spec as rights_spec
from labornet.rights.config import RightsSettings
from labornet.shared.app import create_service_app
from labornet.shared.broker import EmbeddedBroker, free_port
from labornet.shared.keys import NodeKeys, ensure_node_keys
from labornet.shared.settings import Settings
from labornet.shared.testing import bearer, serving

CHROMIUM = Path("/usr/bin/chromium")

SC, ZJ, CQ = "510000", "330000", "500000"
PROVINCES = (SC, ZJ, CQ)
SERVICES = ("jobs", "insurance", "brands", "rights")
ROOT = Path(__file__).resolve().parents[4]
SCREENSHOTS = ROOT / "docs" / "console"
AXE = Path(__file__).parent / "axe" / "axe.min.js"
CSP_ERRORS: dict[int, list[str]] = {}  # console errors of each tab, by id(page)


class MovableClock:
    """The clock of the rights services and the consoles: the system's, moved forward by ``offset``."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class Federation:
    consoles: dict[str, str]
    services: dict[str, dict[str, str]]
    keys: dict[str, NodeKeys]
    clock: MovableClock
    browser: Any

    def officer(self, province: str) -> dict[str, str]:
        return bearer(self.keys[province], "officer", sub=f"api-officer-{province}")


def registry(path: Path) -> Path:
    members = [
        (SC, "四川省", "四川", "Sichuan"),
        (CQ, "重庆市", "重庆", "Chongqing"),
        (ZJ, "浙江省", "浙江", "Zhejiang"),
    ]
    document = {"version": 1, "provinces": [{"code": c, "zh": z, "short_zh": s, "en": e} for c, z, s, e in members]}
    path.write_text(json.dumps(document, ensure_ascii=False))
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def federation(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Federation]:
    root = tmp_path_factory.mktemp("console-federation")
    provinces_path = registry(root / "provinces.json")
    keys = {p: ensure_node_keys(p, root / "keys" / p, root / "trust-list.json") for p in PROVINCES}
    ports = {p: {s: free_port() for s in SERVICES} for p in PROVINCES}
    urls = {p: {s: f"http://127.0.0.1:{port}" for s, port in ports[p].items()} for p in PROVINCES}
    (root / "federation.json").write_text(
        json.dumps({"provinces": {p: {"services": urls[p]} for p in PROVINCES}}, ensure_ascii=False)
    )
    clock = MovableClock()
    broker = EmbeddedBroker(log_path=root / "tansu.log")
    broker.start()

    def settings(province: str, service: str) -> Settings:
        return Settings(  # type: ignore[call-arg]
            province=province,
            service=service,
            data_dir=root,
            provinces_path=provinces_path,
            kafka_bootstrap_servers=broker.bootstrap_servers,
            kafka_session_timeout_ms=3000,
            kafka_heartbeat_interval_ms=500,
            kafka_metadata_max_age_ms=3000,
            broker_check_interval_s=1.0,
            inbox_retry_backoff_s=0.05,
            receipt_wait_s=3.0,
            log_json=False,
            log_level="WARNING",
        )

    def service_app(province: str, service: str) -> Any:
        if service == "rights":
            spec = rights_spec(RightsSettings(sweep_interval_s=1.0), clock)
            return create_service_app(spec, settings(province, service))
        module = __import__(f"labornet.{service}.app", fromlist=["create_app"])
        return module.create_app(settings(province, service))

    async with contextlib.AsyncExitStack() as stack:
        for province in PROVINCES:
            for service in SERVICES:
                await stack.enter_async_context(serving(service_app(province, service), ports[province][service]))
        consoles: dict[str, str] = {}
        for province in PROVINCES:
            port = free_port()
            console = ConsoleSettings(
                province=province,
                **{f"{service}_url": url for service, url in urls[province].items()},
                session_secret="browser-tests-" + "x" * 32,
                cookie_secure=False,
                dev_issuer_key_path=keys[province].token_key,
                provinces_path=provinces_path,
                log_json=False,
                log_level="WARNING",
            )
            await stack.enter_async_context(serving(create_console(console, clock), port))
            consoles[province] = f"http://127.0.0.1:{port}"

        async with httpx.AsyncClient(timeout=5) as http:

            async def ready() -> bool:
                answers = [await http.get(f"{url}/readyz") for url in consoles.values()]
                return all(answer.status_code == 200 for answer in answers)

            await until("every console ready (its node's four services ready)", ready, timeout_s=90)

        from playwright.async_api import async_playwright  # the test modules skip without it

        playwright = await stack.enter_async_context(async_playwright())
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        stack.push_async_callback(browser.close)
        yield Federation(consoles, urls, keys, clock, browser)
    broker.stop()


async def until(what: str, check: Callable[[], Awaitable[Any]], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for: {what}")
        await asyncio.sleep(0.25)


# Helpers ---------------------------------------------------------------------------------------------------------


async def audit(federation: Federation, page: Any, name: str) -> None:
    """axe-core on the page as shown: no serious or critical violation, and nothing the page's Content-Security-Policy
    refused (axe is evaluated through the DevTools protocol, which the policy does not govern)."""
    refused = [message for message in CSP_ERRORS.get(id(page), []) if "Content Security Policy" in message]
    assert not refused, f"{name}: {refused}"
    if not await page.evaluate("typeof axe !== 'undefined'"):
        await page.evaluate(AXE.read_text("utf-8"))
    result = await page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    serious = [
        f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert not serious, f"{name}: {serious}"


async def officer_session(federation: Federation, province: str, name: str, role: str = "officer") -> Any:
    """A browser tab signed in at ``province``'s console through the dev sign-in form."""
    context = await federation.browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
    page = await new_tab(context)
    await page.goto(federation.consoles[province] + "/signin")
    await page.get_by_label("姓名").fill(name)
    await page.get_by_label("角色").select_option(role)
    await page.get_by_role("button", name="登录").click()
    await page.wait_for_url(federation.consoles[province] + "/")
    return page


async def new_tab(context: Any) -> Any:
    """A tab whose console errors (a script or style the Content-Security-Policy refused) are kept for audit()."""
    page = await context.new_page()
    errors = CSP_ERRORS.setdefault(id(page), [])
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    return page


async def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def flash(page: Any) -> str:
    text: str = await page.locator(".flash-region").inner_text()
    return text


async def reload_until(page: Any, what: str, check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    async def again() -> bool:
        await page.reload()
        return await check()

    if not await check():
        await until(what, again, timeout_s)


async def _visible(locator: Any) -> bool:
    return bool(await locator.count() > 0)


async def _has(locator: Any, value: str) -> bool:
    """The element shows ``value`` (a state as the service answers it, kept in data-value, or text it shows)."""
    if await locator.count() == 0:
        return False
    shown = f"{await locator.first.get_attribute('data-value')} {await locator.first.inner_text()}"
    return value in shown

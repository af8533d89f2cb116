"""The officer console in a real Chromium (Debian's, through Playwright's executable_path: no browser download)
against a running three-province federation started in this process: the embedded broker, the four services of
Sichuan, Zhejiang and Chongqing over HTTP, and a console per province over HTTP.

Officers sign in, post and find a vacancy, move an insurance relationship from Sichuan to Zhejiang and settle it,
refer, accept and resolve a rights case, and see an overdue referral at the top of today's work once the clock
has moved. Every page visited passes axe-core without serious or critical violations; the main pages are written
to docs/console/ as screenshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
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
from labornet.shared.identifiers import make_credit_code, make_resident_id
from labornet.shared.keys import NodeKeys, ensure_node_keys
from labornet.shared.settings import Settings
from labornet.shared.testing import bearer, serving

playwright_api = pytest.importorskip("playwright.async_api", reason="the playwright package is not installed")

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("no /usr/bin/chromium (Debian package chromium): the browser tests need it", allow_module_level=True)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

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

        playwright = await stack.enter_async_context(playwright_api.async_playwright())
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


def person(sequence: int) -> dict[str, Any]:
    return {
        "resident_id": make_resident_id("511602", date(1988, 5, 1) + timedelta(days=sequence), sequence),
        "name": "王晓明",
        "hukou_division": "511602",
        "status": "unemployed-claiming",
        "benefit_months_paid": 2,
        "periods": [
            {"start_month": "2016-01", "end_month": "2019-12", "kind": "actual"},
            {"start_month": "2021-07", "end_month": "2024-12", "kind": "actual"},
        ],
    }


def wage_case(resident_id: str, marker: str) -> dict[str, str]:
    """The rights filing form's fields for a Sichuan worker owed wages by a Hangzhou employer."""
    return {
        "complainant.resident_id": resident_id,
        "complainant.name": "李建军",
        "complainant.phone": "13812345678",
        "employer.name": f"杭州某建设工程有限公司{marker}",
        "employer.credit_code": make_credit_code("91330100MA0000001"),
        "employer.address": "杭州市西湖区某路 1 号",
        "work_place.division_code": "330100",
        "work_place.site": "西湖某安置房项目",
        "period.start": "2025-03-01",
        "period.end": "2025-10-31",
        "amount_owed": "36800.00",
        "workers_affected": "6",
        "facts": "工程完工后拖欠八个月工资。",
    }


# Scenarios -------------------------------------------------------------------------------------------------------


async def test_a_zhejiang_officer_posts_a_vacancy_and_a_sichuan_officer_finds_it(federation: Federation) -> None:
    marker = uuid.uuid4().hex[:6].upper()
    zj = await officer_session(federation, ZJ, "zhou-min")
    await audit(federation, zj, "today")
    await zj.get_by_role("link", name="岗位", exact=True).click()
    await zj.get_by_role("link", name="发布岗位").click()
    await audit(federation, zj, "vacancy-new")
    form = {
        "title": f"川菜厨师 Sichuan chef {marker}",
        "employer.name": "杭州川味轩餐饮有限公司",
        "employer.credit_code": make_credit_code("91330100MA0000002"),
        "occupation_code": "0000",  # not an ISCO-08 code: the service's message appears beside the field
        "division_code": "330100",
        "headcount": "3",
        "salary.min": "9000",
        "salary.max": "12000",
        "contact": "0571-88000001",
        "closing_date": (date.today() + timedelta(days=30)).isoformat(),
        "skills": "川菜, 刀工",
    }
    for name, value in form.items():
        await zj.fill(f'[name="{name}"]', value)
    await zj.get_by_role("button", name="保存").click()
    error = zj.locator("#occupation_code-error")
    assert "ISCO-08" in await error.inner_text()
    assert await zj.locator('[name="title"]').input_value() == form["title"], "what was typed stays"
    await audit(federation, zj, "vacancy-new-with-errors")
    await zj.fill('[name="occupation_code"]', "5120")
    await zj.get_by_role("button", name="保存").click()
    await zj.wait_for_url(re.compile(r"/vacancies/330000-V-"))
    assert "岗位已发布" in await flash(zj)
    vacancy_url = zj.url
    await audit(federation, zj, "vacancy")
    await shot(zj, "vacancy")

    # an edit names the version read (If-Match)
    await zj.fill('[name="headcount"]', "5")
    await zj.get_by_role("button", name="保存").click()
    assert "岗位已保存 (v2)" in await flash(zj)

    sc = await officer_session(federation, SC, "chen-gang")
    await sc.goto(federation.consoles[SC] + "/vacancies")

    async def found() -> bool:
        await sc.get_by_label("关键词（中文或英文）").fill(marker)
        await sc.get_by_role("button", name="搜索").click()
        await sc.wait_for_load_state("networkidle")
        return await sc.locator("#results").get_by_text(marker).count() > 0

    await until("the Zhejiang vacancy in Sichuan's search", found)
    await audit(federation, sc, "vacancies")
    await shot(sc, "vacancies")
    await sc.locator("#results").get_by_role("link", name=re.compile(marker)).click()
    assert "此岗位由其他省份发布" in await sc.content()
    assert await sc.locator('form[action$="/close"]').count() == 0

    # English, switched on any page
    await sc.get_by_role("link", name=re.compile("English")).click()
    assert "Another province posted this vacancy" in await sc.content()
    await sc.get_by_role("link", name=re.compile("中文")).click()

    await zj.goto(vacancy_url)
    await zj.get_by_label("关闭原因").select_option("filled")
    await zj.get_by_role("button", name="关闭岗位").click()
    assert "岗位已关闭" in await flash(zj)


async def test_a_transfer_handled_end_to_end_through_the_sichuan_and_zhejiang_consoles(
    federation: Federation,
) -> None:
    mover = person(int(uuid.uuid4().hex[:3], 16) % 900 + 10)
    async with httpx.AsyncClient(timeout=10) as http:
        created = await http.post(
            federation.services[SC]["insurance"] + "/api/v1/insured-persons",
            json=mover,
            headers=federation.officer(SC),
        )
        assert created.status_code == 201, created.text

    zj = await officer_session(federation, ZJ, "zhou-min")
    await zj.goto(federation.consoles[ZJ] + "/transfers/new")
    await audit(federation, zj, "transfer-new")
    await zj.get_by_label("公民身份号码").fill(mover["resident_id"])
    await zj.get_by_label("姓名").fill(mover["name"])
    await zj.get_by_label("转出省份").select_option(SC)
    await zj.get_by_label("转移原因").select_option("claimant-relocation")
    await zj.get_by_role("button", name="保存").click()
    await zj.wait_for_url(re.compile(r"/transfers/"))
    assert "转入申请已提交" in await flash(zj)
    assert mover["resident_id"] not in zj.url
    receiving_case = zj.url.rsplit("/", 1)[1]

    sc = await officer_session(federation, SC, "chen-gang")
    letter = sc.locator('tr[data-kind="contact-letter"]')
    await reload_until(sc, "the contact letter in Sichuan's today's work", lambda: _visible(letter))
    await shot(sc, "today")
    await letter.first.get_by_role("link").click()
    await sc.wait_for_url(re.compile(r"/transfers/"))
    text = await sc.content()
    assert receiving_case in text, "both case numbers are shown"
    assert mover["resident_id"] in text and "2016-01" in text, "the person's record is shown"
    await audit(federation, sc, "transfer")
    await sc.get_by_role("button", name="寄送信息表").click()
    assert "信息表已寄送" in await flash(sc)

    state = zj.get_by_test_id("state")
    await reload_until(zj, "the transfer completed in Zhejiang", lambda: _has(state, "completed"))
    await shot(zj, "transfer")

    settlement = sc.get_by_test_id("settlement-status")
    await reload_until(sc, "the settlement at Sichuan", lambda: _has(settlement, "pending"))
    await sc.get_by_label("支付凭证号").fill("SC-PAY-2026-0001")
    await sc.get_by_role("button", name="已支付").click()
    assert "清算已标记为已支付" in await flash(sc)
    assert await settlement.get_attribute("data-value") == "paid"
    owed = zj.get_by_test_id("settlement-status")
    await reload_until(zj, "the payment reference at Zhejiang", lambda: _has(owed, "SC-PAY-2026-0001"))
    await zj.goto(federation.consoles[ZJ] + "/transfers")
    await audit(federation, zj, "transfers")


async def _visible(locator: Any) -> bool:
    return bool(await locator.count() > 0)


async def _has(locator: Any, value: str) -> bool:
    """The element shows ``value`` (a state as the service answers it, kept in data-value, or text it shows)."""
    if await locator.count() == 0:
        return False
    shown = f"{await locator.first.get_attribute('data-value')} {await locator.first.inner_text()}"
    return value in shown


async def test_a_rights_case_referred_accepted_and_resolved(federation: Federation) -> None:
    marker = uuid.uuid4().hex[:4]
    worker = make_resident_id("511602", date(1985, 4, 12), int(marker, 16) % 900 + 50)
    sc = await officer_session(federation, SC, "chen-gang")
    await sc.goto(federation.consoles[SC] + "/cases/new")
    await audit(federation, sc, "case-new")
    for name, value in wage_case(worker, marker).items():
        await sc.fill(f'[name="{name}"]', value)
    await sc.locator('[name="employer.province"]').select_option(ZJ)
    await sc.locator('[name="sector"]').select_option("construction")
    await sc.get_by_role("button", name="保存").click()
    await sc.wait_for_url(re.compile(r"/cases/"))
    assert "案件已登记并转办" in await flash(sc)
    case_id = sc.url.rsplit("/", 1)[1]
    assert await sc.get_by_test_id("status").get_attribute("data-value") == "referred"
    assert await sc.get_by_test_id("status").inner_text() == "已转办待受理"

    zj = await officer_session(federation, ZJ, "zhou-min")
    waiting = zj.locator('tr[data-kind="case-awaiting-acceptance"]', has_text=case_id)
    await reload_until(zj, "the referral in Zhejiang's today's work", lambda: _visible(waiting))
    await waiting.get_by_role("link").click()
    await zj.wait_for_url(re.compile(case_id))
    await audit(federation, zj, "case")
    await zj.locator("#accept-note").fill("予以受理，立案调查")
    await zj.get_by_role("button", name="受理", exact=True).click()
    assert "案件已受理" in await flash(zj)
    await zj.locator("#updates-note").fill("现场检查，责令限期清偿")
    await zj.get_by_role("button", name="记录调查进展").click()
    assert "进展已记录" in await flash(zj)
    await zj.get_by_label("追回金额（元）").fill("0")
    await zj.get_by_label("已支付人数").fill("6")
    await zj.get_by_role("button", name="办结（已追回）").click()
    assert await zj.locator("#resolve-amount_recovered-error").count() == 1, "the service's message beside the field"
    await audit(federation, zj, "case-with-errors")
    await zj.get_by_label("追回金额（元）").fill("36800.00")
    await zj.get_by_label("已支付人数").fill("6")
    await zj.get_by_role("button", name="办结（已追回）").click()
    assert "案件已办结" in await flash(zj)
    assert await zj.get_by_test_id("status").get_attribute("data-value") == "resolved"
    await shot(zj, "case")

    status = sc.get_by_test_id("status")
    await reload_until(sc, "the resolution at home in Sichuan", lambda: _has(status, "resolved"))
    assert "现场检查，责令限期清偿" in await sc.content(), "the same timeline on both nodes"
    await sc.goto(federation.consoles[SC] + "/cases")
    await audit(federation, sc, "cases")


async def test_an_overdue_referral_comes_first_once_the_clock_has_moved(federation: Federation) -> None:
    worker = make_resident_id("511602", date(1979, 9, 9), int(uuid.uuid4().hex[:3], 16) % 900 + 50)
    body: dict[str, Any] = {}
    for name, value in wage_case(worker, "overdue").items():
        target = body
        *parents, last = name.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
    body["employer"]["province"] = ZJ
    body["sector"] = "construction"
    async with httpx.AsyncClient(timeout=10) as http:
        filed = await http.post(
            federation.services[SC]["rights"] + "/api/v1/cases", json=body, headers=federation.officer(SC)
        )
        assert filed.status_code == 201, filed.text
    case_id = filed.json()["id"]

    zj = await officer_session(federation, ZJ, "zhou-min")
    row = zj.locator('tr[data-kind="case-awaiting-acceptance"]', has_text=case_id)
    await reload_until(zj, "the referral in Zhejiang's today's work", lambda: _visible(row))
    assert "overdue" not in (await row.get_attribute("class") or "")

    federation.clock.offset = timedelta(days=14)  # past the 5 working days to accept
    try:
        await zj.reload()
        first = zj.locator("table.work tbody tr").first
        assert case_id in await first.inner_text()
        assert "overdue" in (await first.get_attribute("class") or "")
        assert "已逾期" in await first.inner_text()
        await audit(federation, zj, "today-overdue")
        await shot(zj, "today-overdue")
    finally:
        federation.clock.offset = timedelta()


async def test_a_brand_recognised_in_sichuan_answers_a_demand_from_zhejiang(federation: Federation) -> None:
    name = f"川建工{uuid.uuid4().hex[:4]}"
    sc = await officer_session(federation, SC, "chen-gang")
    await sc.goto(federation.consoles[SC] + "/brands")
    await sc.get_by_label("品牌名称（中文）").fill(name)
    await sc.get_by_label("所在地区划代码").fill("510100")
    await sc.get_by_label("类别").select_option("construction")
    await sc.get_by_label("培育主体名称").fill("四川省人力资源和社会保障厅")
    await sc.get_by_role("button", name="登记品牌").click()
    assert "品牌已登记" in await flash(sc)
    await sc.get_by_role("button", name=f"认定 {name}").click()
    assert "品牌已认定" in await flash(sc)

    zj = await officer_session(federation, ZJ, "zhou-min")
    await zj.goto(federation.consoles[ZJ] + "/demands")
    option = zj.locator("#brand_id option", has_text=name)
    await reload_until(zj, "the Sichuan brand at Zhejiang", lambda: _visible(option))
    await zj.get_by_label("品牌", exact=True).select_option(label=await option.inner_text())
    start = date.today() + timedelta(days=30)
    await zj.get_by_label("需求人数").fill("25")
    await zj.get_by_label("用工地区划代码").fill("330100")
    await zj.get_by_label("用工开始日期").fill(start.isoformat())
    await zj.get_by_label("用工结束日期").fill((start + timedelta(days=180)).isoformat())
    await zj.get_by_label("待遇与条件").fill("包吃住，月薪 8000 元")
    await zj.get_by_label("联系方式").fill("0571-87000000")
    await zj.get_by_role("button", name="向伙伴省份品牌提出劳务需求").click()
    message = await flash(zj)
    assert "劳务需求已发出" in message
    demand_id = message.rsplit(": ", 1)[1].strip()

    await sc.goto(federation.consoles[SC] + "/demands")
    answer = sc.get_by_role("button", name=f"答复 {demand_id}")
    await reload_until(sc, "Zhejiang's demand at Sichuan", lambda: _visible(answer))
    row = sc.locator("tr", has=answer)
    await row.get_by_label("答复", exact=True).select_option("accepted")
    await row.get_by_label("可输送人数").fill("20")
    await answer.click()
    assert "需求已答复" in await flash(sc)
    await audit(federation, sc, "demands-answered")

    posted = zj.locator("li", has_text=demand_id)
    await reload_until(zj, "Sichuan's answer at Zhejiang", lambda: _has(posted, "已接受"))


async def test_every_other_page_passes_axe(federation: Federation) -> None:
    admin = await officer_session(federation, ZJ, "admin-wu", role="admin")
    for path, name in (
        ("/brands", "brands"),
        ("/demands", "demands"),
        ("/federation", "federation"),
        ("/vacancies?lang=en", "vacancies-en"),
    ):
        await admin.goto(federation.consoles[ZJ] + path)
        await audit(federation, admin, name)
        if name in ("brands", "federation"):
            await shot(admin, name)
    anonymous = await new_tab(await federation.browser.new_context())
    await anonymous.goto(federation.consoles[ZJ] + "/signin")
    await audit(federation, anonymous, "signin")
    await shot(anonymous, "signin")

    # the keyboard alone: the skip link first, then the language switch, the name, the role, the button
    keyboard = await new_tab(await federation.browser.new_context())
    await keyboard.goto(federation.consoles[ZJ] + "/signin")
    await keyboard.keyboard.press("Tab")
    assert await keyboard.evaluate("document.activeElement.className") == "skip"
    await keyboard.keyboard.press("Tab")
    await keyboard.keyboard.press("Tab")
    assert await keyboard.evaluate("document.activeElement.id") == "name"
    await keyboard.keyboard.type("keyboard-officer")
    await keyboard.keyboard.press("Tab")
    assert await keyboard.evaluate("document.activeElement.id") == "role"
    await keyboard.keyboard.press("Tab")
    await keyboard.keyboard.press("Enter")
    await keyboard.wait_for_url(federation.consoles[ZJ] + "/")
    assert "keyboard-officer" in await keyboard.content()
    refused = await anonymous.request.post(federation.consoles[ZJ] + "/signin", form={"name": "x", "role": "officer"})
    assert refused.status == 403
    await anonymous.set_content(await refused.text())
    await audit(federation, anonymous, "403")

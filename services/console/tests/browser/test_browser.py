"""The officer console in a real Chromium (Debian's, through Playwright's executable_path: no browser download)
against a running three-province federation started in this process: the embedded broker, the four services of
Sichuan, Zhejiang and Chongqing over HTTP, and a console per province over HTTP.

Officers sign in, post and find a vacancy, move an insurance relationship from Sichuan to Zhejiang and settle it,
refer, accept and resolve a rights case, and see an overdue referral at the top of today's work once the clock
has moved. Every page visited passes axe-core without serious or critical violations; the main pages are written
to docs/console/ as screenshots.
"""

from __future__ import annotations

import re
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from labornet.shared.identifiers import make_credit_code, make_resident_id

from .conftest import (
    SC,
    ZJ,
    Federation,
    _has,
    _visible,
    audit,
    flash,
    new_tab,
    officer_session,
    reload_until,
    shot,
    until,
)

playwright_api = pytest.importorskip("playwright.async_api", reason="the playwright package is not installed")

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("no /usr/bin/chromium (Debian package chromium): the browser tests need it", allow_module_level=True)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


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

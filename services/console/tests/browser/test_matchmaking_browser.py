"""The matchmaking pages of the console (issue 15) in a real Chromium against three real provinces (see conftest.py):

* a Zhejiang officer takes a Sichuan worker's application from today's work to hired, step by step, and the
  Sichuan officer sees it hired among the applications of Sichuan's workers, then counted in both provinces'
  placement statistics;
* a Sichuan officer records a dispatch of 30 workers to Zhejiang, the Zhejiang officer confirms 29 on arrival
  from today's work, and both consoles show the difference of 1;
* a Zhejiang officer organises a recruitment event with Sichuan co-organising and lists a vacancy at it; Sichuan
  sees the event and the vacancy.

Every page visited passes axe-core without serious or critical violations; the new pages are written to
docs/console/ as screenshots.
"""

from __future__ import annotations

import re
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from labornet.shared.clock import today_in_china
from labornet.shared.identifiers import make_credit_code
from labornet.shared.testing import bearer

from .conftest import SC, ZJ, Federation, _has, _visible, audit, flash, officer_session, reload_until, shot, until

pytest.importorskip("playwright.async_api", reason="the playwright package is not installed")
if not Path("/usr/bin/chromium").exists():
    pytest.skip("no /usr/bin/chromium (Debian package chromium): the browser tests need it", allow_module_level=True)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


async def post_vacancy(federation: Federation, marker: str, headcount: int = 2) -> dict[str, Any]:
    body = {
        "title": f"川菜厨师 {marker}",
        "employer": {"name": "杭州川味轩餐饮有限公司", "credit_code": make_credit_code("91330100MA0000003")},
        "occupation_code": "5120",
        "division_code": "330100",
        "city": "杭州市",
        "headcount": headcount,
        "salary": {"min": 8000, "max": 11000},
        "employment_type": "full-time",
        "contact": "0571-88000001",
        "closing_date": (date.today() + timedelta(days=30)).isoformat(),
        "skills": ["川菜"],
    }
    async with httpx.AsyncClient(timeout=10) as http:
        created = await http.post(
            federation.services[ZJ]["jobs"] + "/api/v1/vacancies", json=body, headers=federation.officer(ZJ)
        )
    assert created.status_code == 201, created.text
    found: dict[str, Any] = created.json()
    return found


async def test_a_sichuan_workers_application_hired_through_the_zhejiang_console(federation: Federation) -> None:
    marker = uuid.uuid4().hex[:6].upper()
    vacancy = await post_vacancy(federation, marker)
    worker = bearer(federation.keys[SC], "worker", sub=f"sc-worker-{marker}")
    profile = {
        "name": "王小明",
        "phone": "13812345678",
        "skills": ["川菜", "刀工"],
        "certificates": ["中式烹调师四级"],
        "experience_years": 6,
        "expected_salary": 9000,
        "available_from": (date.today() + timedelta(days=7)).isoformat(),
        "target_groups": ["migrant-workers"],
        "cover_note": "在成都做过六年川菜厨师。",
    }
    async with httpx.AsyncClient(timeout=10) as http:
        applications = federation.services[SC]["jobs"] + f"/api/v1/vacancies/{vacancy['id']}/applications"

        async def applied() -> httpx.Response | None:
            answer = await http.post(applications, json=profile, headers=worker)
            return answer if answer.status_code != 404 else None  # not replicated to Sichuan yet

        made = await until("the Zhejiang vacancy replicated to Sichuan", applied)
    assert made.status_code == 201, made.text
    application_id = made.json()["id"]

    zj = await officer_session(federation, ZJ, "zhou-min")
    row = zj.locator('tr[data-kind="application-received"]', has_text=application_id)
    await reload_until(zj, "the application in Zhejiang's today's work", lambda: _visible(row))
    await audit(federation, zj, "today-with-an-application")
    await row.get_by_role("link").click()
    await zj.wait_for_url(re.compile(application_id))
    assert "在成都做过六年川菜厨师。" in await zj.content(), "the owner reads the whole profile"
    await audit(federation, zj, "application")
    await zj.goto(federation.consoles[ZJ] + "/applications?state=received")
    await audit(federation, zj, "applications-received")
    await zj.get_by_role("link", name=application_id).click()
    await zj.get_by_role("button", name="列入候选").click()
    assert "已列入候选" in await flash(zj)

    # a page read before that step is stale: the service's 409, said plainly, the application shown as it is now
    stale = await zj.context.new_page()
    await stale.goto(zj.url)
    await zj.locator("#interview-at").fill((date.today() + timedelta(days=2)).isoformat() + "T14:30")
    await zj.locator("#interview-place").fill("杭州市西湖区文三路 1 号")
    await zj.get_by_role("button", name="安排面试").click()
    assert "已安排面试" in await flash(zj)
    await stale.locator("#interview-at").fill((date.today() + timedelta(days=3)).isoformat() + "T09:00")
    await stale.locator("#interview-place").fill("线上")
    await stale.get_by_role("button", name="安排面试").click()
    assert "已被他人更新" in await stale.content()
    await audit(federation, stale, "application-stale")

    # an offer starting yesterday is refused, the service's words beside the form
    await zj.locator("#offer-salary").fill("9500")
    await zj.locator("#offer-start_date").fill((today_in_china(federation.clock()) - timedelta(days=1)).isoformat())
    await zj.get_by_role("button", name="发出录用通知").click()
    assert "in the past" in await zj.content()
    assert await zj.get_by_test_id("state").get_attribute("data-value") == "interview"
    await zj.locator("#offer-salary").fill("9500")
    await zj.locator("#offer-start_date").fill((date.today() + timedelta(days=10)).isoformat())
    await zj.get_by_role("button", name="发出录用通知").click()
    assert "已发出录用通知" in await flash(zj)
    await zj.get_by_role("button", name="确认录用").click()
    assert "已确认录用" in await flash(zj)
    assert await zj.get_by_test_id("state").get_attribute("data-value") == "hired"
    await shot(zj, "application")

    sc = await officer_session(federation, SC, "chen-gang")
    await sc.goto(federation.consoles[SC] + "/applications?role=sent")
    hired = sc.locator('tr[data-state="hired"]', has_text=application_id)
    await reload_until(sc, "the hire among Sichuan's sent applications", lambda: _visible(hired))
    await audit(federation, sc, "applications-sent")
    await shot(sc, "applications")
    await hired.get_by_role("link").click()
    page = await sc.content()
    assert "姓名和电话已脱敏" in page and "13812345678" not in page, "the home side reads a masked profile"
    assert await sc.locator('form[action*="/hire"]').count() == 0

    await sc.goto(federation.consoles[SC] + "/placements")
    outbound = sc.locator(f'[data-testid="outbound"] tr[data-province="{ZJ}"]')
    await reload_until(sc, "Sichuan's outbound placement to Zhejiang", lambda: _visible(outbound))
    await audit(federation, sc, "placements")
    await shot(sc, "placements")
    await zj.goto(federation.consoles[ZJ] + "/placements")
    inbound = zj.locator(f'[data-testid="inbound"] tr[data-province="{SC}"]')
    await reload_until(zj, "Zhejiang's inbound placement from Sichuan", lambda: _visible(inbound))


async def test_a_dispatch_of_30_confirmed_with_29_shows_the_difference_on_both_sides(federation: Federation) -> None:
    sc = await officer_session(federation, SC, "chen-gang")
    await sc.goto(federation.consoles[SC] + "/dispatches")
    await sc.get_by_role("link", name="登记劳务输送").click()
    await audit(federation, sc, "dispatch-new")
    departure = today_in_china(federation.clock()) - timedelta(days=1)  # the group arrived yesterday evening
    await sc.get_by_label("输入省份").select_option(ZJ)
    await sc.get_by_label("劳务品牌需求编号").fill(f"{ZJ}-D-{uuid.uuid4().hex[:20].upper()}")
    await sc.get_by_label("单位名称").fill("宁波某电子科技有限公司")
    await sc.locator("#employers-0-division_code").fill("33")  # not a division code: refused beside the field
    await sc.get_by_label("输送人数").fill("30")
    await sc.get_by_label("交通方式").select_option("special-train")
    await sc.get_by_label("出发时间（北京时间）").fill(departure.isoformat() + "T08:30")
    await sc.get_by_label("出发地点").fill("成都东站")
    await sc.get_by_label("预计到达日期").fill((departure + timedelta(days=1)).isoformat())
    await sc.get_by_label("带队人员姓名").fill("李建国")
    await sc.get_by_label("带队人员电话").fill("13812345678")
    await sc.get_by_role("button", name="保存").click()
    assert await sc.locator("#employers-0-division_code-error").count() == 1
    assert await sc.get_by_label("单位名称").input_value() == "宁波某电子科技有限公司", "what was typed stays"
    await audit(federation, sc, "dispatch-new-with-errors")
    await sc.locator("#employers-0-division_code").fill("330206")
    await sc.get_by_role("button", name="保存").click()
    await sc.wait_for_url(re.compile(r"/dispatches/510000-G-"))
    assert "劳务输送已登记" in await flash(sc)
    dispatch_id = sc.url.rsplit("/", 1)[1]
    await audit(federation, sc, "dispatch-sent")

    zj = await officer_session(federation, ZJ, "zhou-min")
    row = zj.locator('tr[data-kind="dispatch-awaiting-arrival"]', has_text=dispatch_id)
    await reload_until(zj, "the dispatch in Zhejiang's today's work", lambda: _visible(row))
    await row.get_by_role("link").click()
    await zj.wait_for_url(re.compile(dispatch_id))
    await audit(federation, zj, "dispatch-received")
    await zj.get_by_label("到达时间（北京时间）").fill(departure.isoformat() + "T20:40")
    await zj.get_by_label("到达人数").fill("29")
    await zj.get_by_role("button", name="确认到达").click()
    assert await zj.locator("#arrival-note-error").count() + await zj.locator(".flash.error").count() > 0, (
        "a difference without its explanation is refused"
    )
    await zj.get_by_label("到达时间（北京时间）").fill(departure.isoformat() + "T20:40")
    await zj.get_by_label("到达人数").fill("29")
    await zj.get_by_label("差额说明（人数不一致时必填）").fill("一人途中因家事返乡")
    await zj.get_by_role("button", name="确认到达").click()
    assert "已确认到达" in await flash(zj)
    assert await zj.get_by_test_id("difference").get_attribute("data-value") == "1"
    await shot(zj, "dispatch")

    difference = sc.get_by_test_id("difference")
    await reload_until(sc, "the arrival confirmed at Sichuan", lambda: _has(difference, "1"))
    await sc.goto(federation.consoles[SC] + "/dispatches?role=sent&state=arrived")
    listed = sc.locator(f'tr[data-id="{dispatch_id}"]')
    assert "29" in await listed.inner_text()
    await audit(federation, sc, "dispatches")
    await shot(sc, "dispatches")


async def test_a_joint_recruitment_event_organised_in_zhejiang_with_sichuan(federation: Federation) -> None:
    marker = uuid.uuid4().hex[:6].upper()
    vacancy = await post_vacancy(federation, marker, headcount=5)
    zj = await officer_session(federation, ZJ, "zhou-min")
    await zj.goto(federation.consoles[ZJ] + "/fairs")
    await zj.get_by_role("link", name="举办招聘活动").click()
    await audit(federation, zj, "fair-new")
    start = today_in_china(federation.clock())  # under way today: registrations and outcomes both open
    await zj.get_by_label("活动名称").fill(f"春风行动 浙川劳务协作专场 {marker}")
    await zj.get_by_label("专项活动").select_option("spring-breeze-action")
    await zj.get_by_label("四川 (510000)").check()
    await zj.get_by_label("举办地区划代码").fill("330106")
    await zj.get_by_label("举办地址").fill("杭州市西湖区人力资源市场一楼")
    await zj.get_by_label("开始日期").fill(start.isoformat())
    await zj.get_by_label("结束日期").fill((start + timedelta(days=1)).isoformat())
    await zj.get_by_role("button", name="保存").click()
    await zj.wait_for_url(re.compile(r"/fairs/330000-F-"))
    assert "招聘活动已发布" in await flash(zj)
    fair_url = zj.url
    await zj.get_by_label(re.compile(vacancy["id"])).check()
    await zj.get_by_role("button", name="登记本省参会岗位").click()
    assert "参会岗位已登记" in await flash(zj)
    assert vacancy["title"] in await zj.locator(f'table[data-province="{ZJ}"]').inner_text()
    await audit(federation, zj, "fair")
    await shot(zj, "fair")

    fair_id = fair_url.rsplit("/", 1)[1]

    # a Sichuan worker registers at home; the registration reaches the organiser only
    registrant = bearer(federation.keys[SC], "worker", sub=f"sc-registrant-{marker}")
    registration = {"name": "赵建华", "phone": "13912345678", "occupations": ["5120"]}
    async with httpx.AsyncClient(timeout=10) as http:
        url = federation.services[SC]["jobs"] + f"/api/v1/fairs/{fair_id}/registrations"

        async def registered() -> httpx.Response | None:
            answer = await http.post(url, json=registration, headers=registrant)
            return answer if answer.status_code != 404 else None  # the event not replicated to Sichuan yet

        made = await until("the event replicated to Sichuan", registered)
    assert made.status_code == 201, made.text
    names = zj.locator('[data-testid="registrations"]', has_text="赵建华")
    await reload_until(zj, "the Sichuan registration at the organiser", lambda: _visible(names))
    await zj.get_by_label("参会用人单位数").fill("40")
    await zj.get_by_label("达成就业意向人数").fill("12")
    await zj.get_by_label("录用人数").fill("15")  # more hires than intentions: refused, nothing recorded
    await zj.get_by_role("button", name="记录活动成效").click()
    assert await zj.locator('[data-testid="outcomes"]').count() == 0
    assert await zj.get_by_label("录用人数").input_value() == "15", "what was typed stays"
    await zj.get_by_label("录用人数").fill("5")
    await zj.get_by_role("button", name="记录活动成效").click()
    assert "活动成效已记录" in await flash(zj)
    await audit(federation, zj, "fair-concluded")

    sc = await officer_session(federation, SC, "chen-gang")
    await sc.goto(federation.consoles[SC] + "/fairs?phase=ongoing")
    event = sc.get_by_role("link", name=re.compile(marker))
    await reload_until(sc, "the event replicated to Sichuan", lambda: _visible(event))
    await audit(federation, sc, "fairs")
    await shot(sc, "fairs")
    await event.click()
    listed = sc.locator(f'table[data-province="{ZJ}"]', has_text=vacancy["title"])
    await reload_until(sc, "Zhejiang's listing at Sichuan", lambda: _visible(listed))
    assert "报名情况（仅主办方可见）" not in await sc.content(), "registrations stay with the organiser"
    outcomes = sc.get_by_test_id("outcomes")
    await reload_until(sc, "the outcomes replicated to Sichuan", lambda: _has(outcomes, "12"))
    assert "赵建华" not in await sc.content()
    assert await sc.get_by_role("heading", name="登记本省参会岗位").count() == 1, "a co-organiser lists its own"
    await audit(federation, sc, "fair-co-organiser")
    await zj.goto(fair_url + "?lang=en")
    await audit(federation, zj, "fair-en")

"""The matchmaking pages of the console (issue 15) against a fake node: applications across provinces, organised
dispatch, recruitment events, placement statistics, and their items in today's work. What each page sends to the
jobs service (the version read, times with China's offset, repeated fields) and what it shows of each answer,
refusals included (a stale version, field errors beside their inputs, a missing CSRF token)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from labornet.console.app import create_app
from labornet.console.domain.worklist import Kind, application_items, dispatch_items, todays_work
from labornet.console.entrypoints import applications, dispatches, fairs
from labornet.console.entrypoints.applications import china_moment, steps_open
from labornet.console.entrypoints.dispatches import draft
from labornet.console.entrypoints.placements import by_province_and_month
from labornet.console.i18n import CATALOGUE
from labornet.shared.workdays import WorkCalendar

from .test_console import NOW, ZJ, FakeNode, csrf_of, keys, node, settings, sign_in

__all__ = ["keys", "node"]  # fixtures of test_console, used here

SC, CQ = "510000", "500000"
JOBS = "jobs:1"


def problem(status: int, slug: str, detail: str, errors: list[dict[str, str]] | None = None) -> httpx.Response:
    body: dict[str, Any] = {"type": f"https://labornet.example/problems/{slug}", "status": status, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


def application(state: str = "received", side: str = "owner", version: int = 1, **more: Any) -> dict[str, Any]:
    found: dict[str, Any] = {
        "id": "510000-A-00000000000000000001",
        "version": version,
        "home_province": SC,
        "owner_province": ZJ,
        "side": side,
        "vacancy": {
            "id": "330000-V-1",
            "title": "川菜厨师",
            "employer_name": "杭州川味餐饮有限公司",
            "occupation_code": "5120",
            "city": "杭州市",
        },
        "profile": {
            "name": "王小明" if side != "home" else "王**",
            "phone": "13812345678" if side != "home" else "138****5678",
            "skills": ["川菜", "刀工"],
            "certificates": ["中式烹调师四级"],
            "experience_years": 6,
            "expected_salary": 8000,
            "available_from": "2026-03-15",
            "target_groups": ["migrant-workers"],
            "cover_note": "在成都做过六年川菜厨师。" if side != "home" else "",
        },
        "profile_masked": side == "home",
        "state": state,
        "submitted_at": "2026-03-02T01:20:00Z",
        "updated_at": "2026-03-02T01:20:00Z",
        "timeline": [
            {
                "seq": 1,
                "at": "2026-03-02T01:20:00Z",
                "province": SC,
                "actor": "applicant",
                "kind": "submitted",
                "state": "received",
                "details": {},
            }
        ],
    }
    found.update(more)
    return found


def dispatch(role: str = "received", state: str = "announced", **more: Any) -> dict[str, Any]:
    found: dict[str, Any] = {
        "id": "510000-G-00000000000000000001",
        "version": 2,
        "origin_province": SC,
        "destination_province": ZJ,
        "brand_demand_id": "330000-D-0123456789ABCDEF0123",
        "fair_id": None,
        "employers": [{"name": "宁波某电子科技有限公司", "credit_code": None, "division_code": "330206", "site": None}],
        "headcount": 30,
        "transport": "special-train",
        "departure_at": "2026-03-08T00:30:00Z",
        "departure_place": "成都东站",
        "expected_arrival_on": "2026-03-09",
        "confirmation_due": "2026-03-12",
        "escort": {"name": "李建国", "phone": "13812345678"},
        "note": None,
        "announced_at": "2026-03-01T02:00:00Z",
        "changed_at": "2026-03-01T02:00:00Z",
        "arrival": None,
        "state": state,
        "role": role,
        "headcount_received": None,
        "difference": None,
        "more_than_sent": False,
        "overdue": False,
    }
    found.update(more)
    return found


def fair(organiser: str = ZJ, co: list[str] | None = None, phase: str = "ongoing", **more: Any) -> dict[str, Any]:
    found: dict[str, Any] = {
        "id": f"{organiser}-F-00000000000000000001",
        "version": 3,
        "organiser_province": organiser,
        "co_organisers": [SC] if co is None else co,
        "title": "2026 春风行动 浙川劳务协作专场招聘会",
        "description": "",
        "campaign": "spring-breeze-action",
        "mode": "venue",
        "url": None,
        "venue": {"division_code": "330106", "address": "杭州市西湖区人力资源市场"},
        "starts_on": "2026-03-09",
        "ends_on": "2026-03-11",
        "registration_closes_at": "2026-03-11T16:00:00Z",
        "capacity": 500,
        "status": "scheduled",
        "cancel_reason": None,
        "outcomes": None,
        "created_at": "2026-02-01T02:00:00Z",
        "updated_at": "2026-02-02T02:00:00Z",
        "phase": phase,
        "registration_open": True,
        "statistics": {
            "generation": 2,
            "as_of": "2026-03-09T02:00:00Z",
            "accepted": 2,
            "refused": 1,
            "cancelled": 0,
            "by_home_province": [{"home_province": SC, "accepted": 2, "refused": 1, "cancelled": 0}],
        },
        "listings": [
            {
                "fair_id": f"{organiser}-F-00000000000000000001",
                "province": SC,
                "version": 1,
                "updated_at": "2026-02-03T02:00:00Z",
                "vacancies": [
                    {
                        "id": "510000-V-7",
                        "known": True,
                        "title": "电工",
                        "employer_name": "成都某建设有限公司",
                        "owner_province": SC,
                        "city": "成都市",
                        "headcount": 10,
                        "open_headcount": 8,
                        "status": "open",
                    },
                    {"id": "510000-V-8", "known": False},
                ],
            }
        ],
    }
    found.update(more)
    return found


@pytest.fixture
def client(keys: Path, node: FakeNode) -> Iterator[TestClient]:
    app = create_app(settings(keys), clock=lambda: NOW, transport=httpx.MockTransport(node))
    with TestClient(app, base_url="http://console.test", follow_redirects=False) as test_client:
        sign_in(test_client)
        yield test_client


def sent(node: FakeNode, method: str, path: str) -> list[httpx.Request]:
    return [r for r in node.calls if r.method == method and r.url.path == path]


# The rules the pages apply -------------------------------------------------------------------------------------


def test_the_steps_open_follow_the_state_and_only_the_owner_moves_an_application() -> None:
    assert steps_open(application("received")) == ["shortlist", "interview", "offer", "not-selected", "withdrawn"]
    assert steps_open(application("shortlisted")) == ["interview", "offer", "not-selected", "withdrawn"]
    assert steps_open(application("interview")) == ["interview", "offer", "not-selected", "withdrawn"]
    assert steps_open(application("offer")) == ["hire", "not-selected", "withdrawn"]
    assert steps_open(application("offer", side="both")) == ["hire", "not-selected", "withdrawn"]
    for final in ("hired", "not-selected", "withdrawn"):
        assert steps_open(application(final)) == []
    assert steps_open(application("received", side="home")) == []


def test_a_time_typed_in_china_goes_with_its_offset() -> None:
    assert china_moment("2026-03-12T14:30") == "2026-03-12T14:30:00+08:00"
    assert china_moment("2026-03-12T14:30:15") == "2026-03-12T14:30:15+08:00"
    assert china_moment("2026-03-12T06:30:00+00:00") == "2026-03-12T06:30:00+00:00"
    assert china_moment("") == ""


def test_the_dispatch_form_becomes_the_services_draft() -> None:
    body = draft(
        {
            "destination_province": ZJ,
            "brand_demand_id": "330000-D-0123456789ABCDEF0123",
            "fair_id": "",
            "employers.0.name": "宁波某电子科技有限公司",
            "employers.0.division_code": "330206",
            "employers.0.site": "",
            "headcount": "30",
            "transport": "special-train",
            "departure_at": "2026-03-08T08:30",
            "departure_place": "成都东站",
            "expected_arrival_on": "2026-03-09",
            "escort.name": "李建国",
            "escort.phone": "13812345678",
        }
    )
    assert body == {
        "destination_province": ZJ,
        "brand_demand_id": "330000-D-0123456789ABCDEF0123",
        "transport": "special-train",
        "departure_place": "成都东站",
        "expected_arrival_on": "2026-03-09",
        "employers": [{"name": "宁波某电子科技有限公司", "division_code": "330206"}],
        "escort": {"name": "李建国", "phone": "13812345678"},
        "headcount": "30",
        "departure_at": "2026-03-08T08:30:00+08:00",
    }


def test_todays_work_items_of_applications_and_dispatches() -> None:
    calendar = WorkCalendar.of()
    today = date(2026, 3, 10)
    items = application_items(
        [application("received"), application("shortlisted"), application("received", side="home")]
    ) + dispatch_items(
        [
            dispatch("received", confirmation_due="2026-03-12"),
            dispatch("received", state="arrived", id="510000-G-ARRIVED"),
            dispatch("sent", id="330000-G-LATE", overdue=True, confirmation_due="2026-03-06"),
            dispatch("sent", id="330000-G-INTIME", overdue=False),
        ],
        calendar,
        today,
    )
    ordered = todays_work(items)
    assert [(i.kind, i.reference) for i in ordered] == [
        (Kind.DISPATCH_CONFIRMATION_OVERDUE, "330000-G-LATE"),
        (Kind.DISPATCH_AWAITING_ARRIVAL, "510000-G-00000000000000000001"),
        (Kind.APPLICATION_RECEIVED, "510000-A-00000000000000000001"),
    ]
    assert ordered[0].overdue and ordered[0].workdays_left == -2
    assert not ordered[1].overdue and ordered[1].workdays_left == 2
    assert ordered[2].due is None and ordered[2].href == "/applications/510000-A-00000000000000000001"


def test_placements_add_up_by_counterpart_and_month() -> None:
    months, rows = by_province_and_month(
        [
            {"counterpart_province": ZJ, "month": "2026-03", "occupation_code": "5120", "hires": 2},
            {"counterpart_province": ZJ, "month": "2026-03", "occupation_code": "7112", "hires": 1},
            {"counterpart_province": ZJ, "month": "2026-01", "occupation_code": "7112", "hires": 4},
            {"counterpart_province": CQ, "month": "2026-02", "occupation_code": "7112", "hires": 1},
        ]
    )
    assert months == ["2026-01", "2026-02", "2026-03"]
    assert rows == [(ZJ, {"2026-03": 3, "2026-01": 4}, 7), (CQ, {"2026-02": 1}, 1)]


# Applications --------------------------------------------------------------------------------------------------


def test_the_application_lists_received_and_sent(client: TestClient, node: FakeNode) -> None:
    def listing(request: httpx.Request) -> httpx.Response:
        role = request.url.params["role"]
        item = application("offer") if role == "received" else application("hired", side="home", owner_province=CQ)
        item.pop("timeline")
        return httpx.Response(200, json={"items": [item], "next_cursor": "NEXT" if role == "received" else None})

    node.routes[("GET", f"{JOBS}/api/v1/applications")] = listing
    received = client.get("/applications?state=offer&vacancy_id=330000-V-1")
    assert received.status_code == 200
    assert "已发录用通知" in received.text and "王小明" in received.text and "四川 (510000)" in received.text
    assert "cursor=NEXT" in received.text
    asked = sent(node, "GET", "/api/v1/applications")[-1].url.params
    assert (asked["role"], asked["state"], asked["vacancy_id"]) == ("received", "offer", "330000-V-1")
    outgoing = client.get("/applications?role=sent")
    assert "只读" in outgoing.text and "已录用" in outgoing.text and "重庆 (500000)" in outgoing.text
    assert sent(node, "GET", "/api/v1/applications")[-1].url.params["role"] == "sent"
    assert client.get("/applications?role=everyone").status_code == 422


def test_the_owner_moves_an_application_naming_the_version_read(client: TestClient, node: FakeNode) -> None:
    current = {"application": application("shortlisted", version=2)}
    bodies: list[dict[str, Any]] = []

    def step(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        current["application"] = application("interview", version=3)
        return httpx.Response(200, json=current["application"])

    node.routes[("GET", f"{JOBS}/api/v1/applications/510000-A-00000000000000000001")] = lambda r: httpx.Response(
        200, json=current["application"]
    )
    node.routes[("POST", f"{JOBS}/api/v1/applications/510000-A-00000000000000000001/interview")] = step
    page = client.get("/applications/510000-A-00000000000000000001")
    assert page.status_code == 200
    assert "在成都做过六年川菜厨师。" in page.text and 'data-value="shortlisted"' in page.text
    assert 'action="/applications/510000-A-00000000000000000001/hire"' not in page.text  # a hire follows an offer
    assert 'action="/applications/510000-A-00000000000000000001/shortlist"' not in page.text  # shortlisted already
    answer = client.post(
        "/applications/510000-A-00000000000000000001/interview",
        data={
            "csrf_token": csrf_of(page.text),
            "version": "2",
            "at": "2026-03-12T14:30",
            "place": "杭州市西湖区文三路 1 号",
            "note": "",
        },
    )
    assert answer.status_code == 303
    assert bodies == [{"version": 2, "at": "2026-03-12T14:30:00+08:00", "place": "杭州市西湖区文三路 1 号"}]
    assert "已安排面试" in client.get(answer.headers["location"]).text


def test_a_stale_page_says_so_and_shows_the_application_as_it_is_now(client: TestClient, node: FakeNode) -> None:
    path = f"{JOBS}/api/v1/applications/510000-A-00000000000000000001"
    node.routes[("GET", path)] = lambda r: httpx.Response(200, json=application("offer", version=4))
    node.routes[("POST", path + "/shortlist")] = lambda r: problem(
        409, "stale-version", "application 510000-A-00000000000000000001 is at version 4, not 1; reload and retry"
    )
    token = csrf_of(client.get("/applications").text)
    answer = client.post(
        "/applications/510000-A-00000000000000000001/shortlist", data={"csrf_token": token, "version": "1"}
    )
    assert answer.status_code == 409
    assert "已被他人更新" in answer.text and "at version 4, not 1" in answer.text
    assert 'data-value="offer"' in answer.text and 'name="version" value="4"' in answer.text


def test_an_offer_refused_shows_the_message_beside_its_field(client: TestClient, node: FakeNode) -> None:
    path = f"{JOBS}/api/v1/applications/510000-A-00000000000000000001"
    node.routes[("GET", path)] = lambda r: httpx.Response(200, json=application("interview", version=3))
    node.routes[("POST", path + "/offer")] = lambda r: problem(
        422, "validation-error", "the request is not valid", [{"field": "salary", "message": "must be at most 1000000"}]
    )
    token = csrf_of(client.get("/applications").text)
    answer = client.post(
        "/applications/510000-A-00000000000000000001/offer",
        data={"csrf_token": token, "version": "3", "salary": "9000000", "start_date": "2026-04-01"},
    )
    assert answer.status_code == 422
    beside = re.search(r'<p class="error" id="offer-salary-error">([^<]+)</p>', answer.text)
    assert beside and "at most 1000000" in beside.group(1)
    assert 'aria-describedby="offer-salary-error"' in answer.text
    assert 'value="9000000"' in answer.text and 'value="2026-04-01"' in answer.text  # what was typed stays


def test_the_home_side_follows_an_application_without_acting(client: TestClient, node: FakeNode) -> None:
    node.routes[("GET", f"{JOBS}/api/v1/applications/510000-A-00000000000000000001")] = lambda r: httpx.Response(
        200, json=application("interview", side="home", interview={"at": "2026-03-12T06:30:00Z", "place": "杭州"})
    )
    page = client.get("/applications/510000-A-00000000000000000001").text
    assert "姓名和电话已脱敏" in page and "138****5678" in page
    assert "2026-03-12 14:30" in page  # the interview in China's time
    assert "/applications/510000-A-00000000000000000001/" not in page.split("timeline-heading")[0].split("<h1>")[1]


def test_every_new_post_needs_the_csrf_token(client: TestClient, node: FakeNode) -> None:
    for path in (
        "/applications/510000-A-1/hire",
        "/dispatches",
        "/dispatches/510000-G-1/arrival",
        "/fairs",
        "/fairs/330000-F-1/vacancies",
        "/fairs/330000-F-1/outcomes",
    ):
        assert client.post(path, data={"csrf_token": "forged", "version": "1"}).status_code == 403, path
    assert not [r for r in node.calls if r.method != "GET"]


# Dispatches ----------------------------------------------------------------------------------------------------


def test_recording_a_dispatch_shows_field_errors_and_keeps_what_was_typed(client: TestClient, node: FakeNode) -> None:
    bodies: list[dict[str, Any]] = []

    def record(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        if len(bodies) == 1:
            return problem(
                422,
                "validation-error",
                "the request is not valid",
                [{"field": "employers.0.division_code", "message": "String should match pattern '^\\d{6}$'"}],
            )
        return httpx.Response(201, json=dispatch("sent", id="330000-G-00000000000000000009"))

    node.routes[("POST", f"{JOBS}/api/v1/dispatches")] = record
    form = client.get("/dispatches/new?fair_id=330000-F-00000000000000000001").text
    assert 'value="330000-F-00000000000000000001"' in form
    assert f'<option value="{ZJ}"' not in form  # a dispatch goes to another province
    data = {
        "csrf_token": csrf_of(form),
        "destination_province": SC,
        "fair_id": "330000-F-00000000000000000001",
        "employers.0.name": "成都某电子有限公司",
        "employers.0.division_code": "51",
        "headcount": "30",
        "transport": "chartered-bus",
        "departure_at": "2026-03-20T07:00",
        "departure_place": "杭州东站",
        "expected_arrival_on": "2026-03-21",
        "escort.name": "周敏",
        "escort.phone": "13912345678",
    }
    refused = client.post("/dispatches", data=data)
    assert refused.status_code == 422
    assert re.search(r'<p class="error" id="employers-0-division_code-error">[^<]*pattern', refused.text)
    assert 'value="成都某电子有限公司"' in refused.text
    assert bodies[0]["departure_at"] == "2026-03-20T07:00:00+08:00"
    assert bodies[0]["employers"] == [{"name": "成都某电子有限公司", "division_code": "51"}]
    created = client.post("/dispatches", data={**data, "employers.0.division_code": "510100"})
    assert created.status_code == 303
    assert created.headers["location"] == "/dispatches/330000-G-00000000000000000009"


def test_the_destination_confirms_an_arrival_with_a_difference(client: TestClient, node: FakeNode) -> None:
    path = f"{JOBS}/api/v1/dispatches/510000-G-00000000000000000001"
    current = {"dispatch": dispatch("received")}
    bodies: list[dict[str, Any]] = []

    def arrival(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        current["dispatch"] = dispatch(
            "received",
            state="arrived",
            headcount_received=29,
            difference=1,
            arrival={
                "arrived_at": "2026-03-09T06:40:00Z",
                "headcount_received": 29,
                "note": "一人途中返乡",
                "confirmed_at": "2026-03-09T08:00:00Z",
                "plan_version": 2,
            },
        )
        return httpx.Response(200, json=current["dispatch"])

    node.routes[("GET", path)] = lambda r: httpx.Response(200, json=current["dispatch"])
    node.routes[("POST", path + "/arrival")] = arrival
    page = client.get("/dispatches/510000-G-00000000000000000001").text
    assert "/arrival" in page and "/cancel" not in page
    answer = client.post(
        "/dispatches/510000-G-00000000000000000001/arrival",
        data={
            "csrf_token": csrf_of(page),
            "version": "2",
            "arrived_at": "2026-03-09T14:40",
            "headcount_received": "29",
            "note": "一人途中返乡",
        },
    )
    assert answer.status_code == 303
    assert bodies == [
        {"arrived_at": "2026-03-09T14:40:00+08:00", "headcount_received": "29", "note": "一人途中返乡", "version": 2}
    ]
    shown = client.get(answer.headers["location"]).text
    assert "已确认到达" in shown and 'data-testid="difference" data-value="1"' in shown
    assert "/arrival" not in shown  # confirmed once


def test_the_origin_sees_the_lists_and_may_cancel(client: TestClient, node: FakeNode) -> None:
    def listing(request: httpx.Request) -> httpx.Response:
        items = [
            dispatch("sent", id="330000-G-LATE", origin_province=ZJ, destination_province=SC, overdue=True),
            dispatch("sent", id="330000-G-DIFF", state="arrived", headcount_received=29, difference=1),
        ]
        return httpx.Response(200, json={"items": items, "next_after": None})

    node.routes[("GET", f"{JOBS}/api/v1/dispatches")] = listing
    html = client.get("/dispatches?role=sent&overdue=true").text
    late = html[html.index('data-id="330000-G-LATE"') - 40 : html.index('data-id="330000-G-DIFF"')]
    assert 'class="overdue"' in late and "已逾期" in late
    assert '<strong class="badge overdue">1</strong>' in html  # the difference
    asked = sent(node, "GET", "/api/v1/dispatches")[-1].url.params
    assert (asked["role"], asked["overdue"]) == ("sent", "true")
    node.routes[("GET", f"{JOBS}/api/v1/dispatches/330000-G-LATE")] = lambda r: httpx.Response(
        200, json=dispatch("sent", id="330000-G-LATE", overdue=True)
    )
    page = client.get("/dispatches/330000-G-LATE").text
    assert "/cancel" in page and "/arrival" not in page and "确认到达已逾期" in page


def test_todays_work_lists_what_matchmaking_waits_for(client: TestClient, node: FakeNode) -> None:
    def applications(request: httpx.Request) -> httpx.Response:
        assert (request.url.params["role"], request.url.params["state"]) == ("received", "received")
        item = application("received")
        item.pop("timeline")
        return httpx.Response(200, json={"items": [item], "next_cursor": None})

    def dispatches(request: httpx.Request) -> httpx.Response:
        role = request.url.params["role"]
        if role == "received":
            items = [dispatch("received", confirmation_due="2026-03-12")]
        else:
            assert request.url.params["overdue"] == "true"
            items = [dispatch("sent", id="330000-G-LATE", overdue=True, confirmation_due="2026-03-06")]
        return httpx.Response(200, json={"items": items, "next_after": None})

    node.routes[("GET", f"{JOBS}/api/v1/applications")] = applications
    node.routes[("GET", f"{JOBS}/api/v1/dispatches")] = dispatches
    html = client.get("/").text
    assert 'data-kind="application-received"' in html and 'data-kind="dispatch-awaiting-arrival"' in html
    late = html.index("330000-G-LATE")
    assert html.index('data-kind="dispatch-confirmation-overdue"') < late < html.index("510000-G-0000")
    assert 'class="overdue"' in html[late - 400 : late]
    assert "以下服务暂时无法查询" not in html


def test_todays_work_says_when_the_jobs_service_cannot_be_asked(client: TestClient, node: FakeNode) -> None:
    node.routes[("GET", f"{JOBS}/api/v1/applications")] = lambda r: httpx.Response(503, json={"detail": "down"})
    html = client.get("/").text
    assert "以下服务暂时无法查询" in html and "jobs: down" in html


# Recruitment events ----------------------------------------------------------------------------------------------


def test_the_organiser_sees_registrations_lists_its_vacancies_and_records_outcomes(
    client: TestClient, node: FakeNode
) -> None:
    event = fair(ZJ, [SC], listings=[*fair()["listings"]])
    path = f"{JOBS}/api/v1/fairs/{event['id']}"
    node.routes[("GET", path)] = lambda r: httpx.Response(200, json=event)
    node.routes[("GET", path + "/registrations")] = lambda r: httpx.Response(
        200,
        json={
            "items": [
                {
                    "id": "510000-R-00000000000000000001",
                    "fair_id": event["id"],
                    "organiser_province": ZJ,
                    "home_province": SC,
                    "name": "张伟",
                    "phone": "13712345678",
                    "occupations": ["7112"],
                    "status": "accepted",
                    "submitted_at": "2026-03-05T02:00:00Z",
                }
            ],
            "next_cursor": None,
        },
    )
    node.routes[("GET", f"{JOBS}/api/v1/vacancies")] = lambda r: httpx.Response(
        200,
        json={
            "items": [
                {"id": "330000-V-1", "title": "川菜厨师", "employer_name": "杭州川味"},
                {"id": "330000-V-2", "title": "焊工", "employer_name": "宁波某厂"},
            ],
            "total": 2,
            "next_cursor": None,
        },
    )
    puts: list[dict[str, Any]] = []
    node.routes[("PUT", path + "/vacancies")] = lambda r: (
        puts.append(json.loads(r.content)),
        httpx.Response(200, json={}),
    )[1]
    outcomes: list[dict[str, Any]] = []
    node.routes[("POST", path + "/outcomes")] = lambda r: (
        outcomes.append(json.loads(r.content)),
        problem(409, "fair-rule", "hires 9 are more than the intentions reached 5")
        if json.loads(r.content)["hires"] == "9"
        else httpx.Response(200, json=event),
    )[1]
    page = client.get(f"/fairs/{event['id']}").text
    assert "张伟" in page and "13712345678" in page  # the organiser's registrations
    assert "电工" in page and "本节点尚未收到此岗位" in page  # Sichuan's listing, one vacancy not replicated here
    assert sent(node, "GET", "/api/v1/vacancies")[-1].url.params["province"] == ZJ
    token = csrf_of(page)
    listed = client.post(
        f"/fairs/{event['id']}/vacancies",
        content=f"csrf_token={token}&vacancy_ids=330000-V-1&vacancy_ids=330000-V-2",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert listed.status_code == 303
    assert puts == [{"vacancy_ids": ["330000-V-1", "330000-V-2"]}]  # both boxes, Zhejiang's first listing
    refused = client.post(
        f"/fairs/{event['id']}/outcomes",
        data={"csrf_token": token, "employers_attending": "40", "intentions_reached": "5", "hires": "9"},
    )
    assert refused.status_code == 409 and "more than the intentions reached" in refused.text
    assert 'value="9"' in refused.text
    done = client.post(
        f"/fairs/{event['id']}/outcomes",
        data={"csrf_token": token, "employers_attending": "40", "intentions_reached": "5", "hires": "3"},
    )
    assert done.status_code == 303
    assert outcomes[-1] == {"employers_attending": "40", "intentions_reached": "5", "hires": "3"}


def test_another_province_reads_an_event_without_its_registrations(client: TestClient, node: FakeNode) -> None:
    event = fair(CQ, [SC], phase="upcoming")
    node.routes[("GET", f"{JOBS}/api/v1/fairs/{event['id']}")] = lambda r: httpx.Response(200, json=event)
    page = client.get(f"/fairs/{event['id']}").text
    assert "电工" in page and "已接受 2" in page
    assert "报名情况（仅主办方可见）" not in page
    assert f'action="/fairs/{event["id"]}/outcomes"' not in page  # the organiser records them
    assert f'action="/fairs/{event["id"]}/vacancies"' not in page  # Zhejiang does not take part
    assert not sent(node, "GET", f"/api/v1/fairs/{event['id']}/registrations")
    assert not sent(node, "GET", "/api/v1/vacancies")


def test_the_event_list_and_the_create_form(client: TestClient, node: FakeNode) -> None:
    event = fair(CQ, [SC], phase="upcoming")
    node.routes[("GET", f"{JOBS}/api/v1/fairs")] = lambda r: httpx.Response(
        200, json={"items": [{k: v for k, v in event.items() if k != "listings"}], "next_cursor": None}
    )
    bodies: list[dict[str, Any]] = []

    def create(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        if bodies[-1].get("starts_on", "") < "2026-03-10":
            return problem(
                422, "validation-error", "not valid", [{"field": "starts_on", "message": "the first day is past"}]
            )
        return httpx.Response(201, json=fair(ZJ, [SC, CQ]))

    node.routes[("POST", f"{JOBS}/api/v1/fairs")] = create
    listing = client.get("/fairs?phase=upcoming").text
    assert "春风行动" in listing and "重庆 (500000)" in listing and "即将举办" in listing
    assert sent(node, "GET", "/api/v1/fairs")[-1].url.params["phase"] == "upcoming"
    form = client.get("/fairs/new").text
    fields = {
        "title": "浙川渝联合招聘会",
        "campaign": "spring-breeze-action",
        "mode": "venue",
        "venue.division_code": "330106",
        "venue.address": "杭州市西湖区人力资源市场",
        "starts_on": "2026-03-01",
        "ends_on": "2026-03-20",
    }
    body = "&".join(f"{k}={v}" for k, v in fields.items()) + f"&csrf_token={csrf_of(form)}"
    body += f"&co_organisers={SC}&co_organisers={CQ}"
    refused = client.post(
        "/fairs", content=body.encode(), headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert refused.status_code == 422
    assert re.search(r'id="starts_on-error">the first day is past', refused.text)
    assert refused.text.count("checked") == 2  # the co-organisers ticked stay ticked
    assert bodies[0]["co_organisers"] == [SC, CQ] and bodies[0]["venue"]["division_code"] == "330106"
    created = client.post(
        "/fairs",
        content=body.replace("2026-03-01", "2026-03-16").encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert created.status_code == 303 and created.headers["location"].startswith("/fairs/330000-F-")


# Placement statistics --------------------------------------------------------------------------------------------


def test_the_placement_page_shows_both_directions(client: TestClient, node: FakeNode) -> None:
    def figures(cells: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "total": sum(c["hires"] for c in cells),
            "by_province": [],
            "by_month": [],
            "by_occupation": [],
            "by_target_group": [],
            "cells": cells,
        }

    def statistics(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("month_from") == "2026-04":
            return problem(
                422, "validation-error", "not valid", [{"field": "query.month_from", "message": "after month_to"}]
            )
        cell = {"direction": "outbound", "occupation_code": "5120", "target_groups": {}}
        return httpx.Response(
            200,
            json={
                "province": ZJ,
                "source": "own",
                "generation": None,
                "as_of": None,
                "outbound": figures([]),
                "inbound": figures(
                    [
                        {**cell, "direction": "inbound", "counterpart_province": SC, "month": "2026-03", "hires": 2},
                        {**cell, "direction": "inbound", "counterpart_province": SC, "month": "2026-02", "hires": 1},
                    ]
                ),
            },
        )

    node.routes[("GET", f"{JOBS}/api/v1/placements/statistics")] = statistics
    html = client.get("/placements?month_from=2026-01").text
    assert 'data-testid="inbound-total">3<' in html and 'data-testid="outbound-total">0<' in html
    row = html[html.index(f'data-province="{SC}"') :]
    assert re.search(r"<td>1</td>\s*<td>2</td>\s*<td>3</td>", row)
    assert sent(node, "GET", "/api/v1/placements/statistics")[-1].url.params["month_from"] == "2026-01"
    refused = client.get("/placements?month_from=2026-04&month_to=2026-01")
    assert refused.status_code == 422 and 'id="month_from-error">after month_to' in refused.text


def test_a_stale_cancellation_of_a_dispatch_says_so(client: TestClient, node: FakeNode) -> None:
    path = f"{JOBS}/api/v1/dispatches/330000-G-1"
    node.routes[("GET", path)] = lambda r: httpx.Response(200, json=dispatch("sent", id="330000-G-1", version=3))
    node.routes[("POST", path + "/cancel")] = lambda r: problem(
        409, "stale-version", "dispatch 330000-G-1 is at version 3, not 2"
    )
    token = csrf_of(client.get("/dispatches/330000-G-1").text)
    answer = client.post("/dispatches/330000-G-1/cancel", data={"csrf_token": token, "version": "2", "reason": "停运"})
    assert answer.status_code == 409
    assert "此劳务输送已被对方或他人更新" in answer.text and 'name="version" value="3"' in answer.text
    assert 'value="停运"' not in answer.text  # a stale form starts again from what is held now


def test_every_word_of_the_new_pages_is_in_both_languages() -> None:
    templates = Path(__file__).parents[1] / "src" / "labornet" / "console" / "templates"
    names = ("application", "applications", "dispatch", "dispatch_new", "dispatches", "fair", "fair_new", "fairs")
    used: set[str] = set()
    for name in (*names, "placements", "base", "today"):
        used |= set(re.findall(r"\bt\('([a-z_.-]+)'\)", (templates / f"{name}.html").read_text("utf-8")))

    used |= {f"application-state.{s}" for s in applications.STATES}
    used |= {f"application.step.{s}" for s in applications.STEPS} | {
        f"application.done.{s}" for s in applications.STEPS
    }
    used |= {f"dispatch-state.{s}" for s in dispatches.STATES} | {f"transport.{m}" for m in dispatches.TRANSPORTS}
    used |= {f"campaign.{c}" for c in fairs.CAMPAIGNS} | {f"phase.{p}" for p in fairs.PHASES}
    used |= {f"kind.{k}" for k in Kind} | {f"placements.source.{s}" for s in ("own", "snapshot", "none")}
    used |= {f"dispatches.role.{r}" for r in ("sent", "received")} | {
        f"dispatch.done.{s}" for s in ("arrival", "cancel")
    }
    assert {"dispatch.confirm_arrival", "fair.record_outcomes", "nav.placements"} <= used  # the pages were read
    missing = sorted(key for key in used if key not in CATALOGUE)
    assert not missing
    assert all(CATALOGUE[key][0] != CATALOGUE[key][1] or key.startswith("transport.") for key in used if "." in key)

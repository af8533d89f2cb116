"""The rights API of one node (Sichuan), served by uvicorn against a real database and the session broker.

Cases whose work place lies in Sichuan are handled at home, which lets one node walk a case through every step;
referrals to other provinces are checked up to the directed message in the outbox (the federation test follows
them across nodes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from labornet.rights.adapters.tables import rights_case
from labornet.rights.app import build_spec
from labornet.rights.config import RightsSettings
from labornet.shared.app import create_service_app
from labornet.shared.clock import today_in_china
from labornet.shared.db import create_engine, outbox
from labornet.shared.envelope import Envelope
from labornet.shared.identifiers import make_resident_id
from labornet.shared.keys import NodeKeys
from labornet.shared.outbox import decode_headers
from labornet.shared.settings import Settings
from labornet.shared.testing import assert_problem, bearer, eventually, serving

SC = "510000"
WANG = make_resident_id("511602", date(1985, 4, 12), 37)
LI = make_resident_id("510104", date(1992, 8, 1), 12)
CASES = "/api/v1/cases"


def body(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "complainant": {"name": "王小明", "phone": "13812345678"},
        "category": "wage-arrears",
        "sector": "construction",
        "employer": {
            "name": "成都某建筑劳务有限公司",
            "credit_code": "91350100M000100Y43",
            "address": "成都市锦江区某路 8 号",
            "province": SC,
        },
        "work_place": {"division_code": "510104", "site": "锦江某安置房项目"},
        "period": {"start": "2025-06-01", "end": "2025-11-30"},
        "amount_owed": "36000.00",
        "workers_affected": 6,
        "evidence": [{"name": "工资欠条.jpg", "sha256": "0f" * 32, "size": 182044}],
        "facts": "包工头拖欠半年工资。",
    }
    data.update(overrides)
    return data


@pytest.fixture
def settings(make_settings: Callable[..., Settings], database_url: str) -> Settings:
    return make_settings(SC, "rights", database_url)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    # the service without its consumers: nothing here arrives from partners, and no consumer group joins and
    # leaves the shared broker under the other tests' feet
    spec = dataclasses.replace(build_spec(RightsSettings(sweep_interval_s=0.05)), consumers=lambda _runtime: ())
    async with serving(create_service_app(spec, settings)) as served:
        yield served


@pytest.fixture
def keys(node_keys: dict[str, NodeKeys]) -> NodeKeys:
    return node_keys[SC]


async def set_columns(settings: Settings, case_id: str, **values: Any) -> None:
    """Change a stored case behind the service's back (to move its limits into the past)."""
    engine = create_engine(settings.database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(update(rights_case).where(rights_case.c.id == case_id).values(**values))
    finally:
        await engine.dispose()


def worker(keys: NodeKeys, resident_id: str = WANG) -> dict[str, str]:
    return bearer(keys, "worker", sub=resident_id)


def officer(keys: NodeKeys, sub: str = "sc-officer") -> dict[str, str]:
    return bearer(keys, "officer", sub=sub)


async def test_bad_filings_are_422_problems_naming_the_field_and_write_nothing(
    client: httpx.AsyncClient, keys: NodeKeys
) -> None:
    complainant = body()["complainant"]
    cases: list[tuple[dict[str, Any], str, str]] = [
        (body(evidence=[{"name": "x", "sha256": "0f" * 31, "size": 1}]), "evidence.0.sha256", "64 hexadecimal"),
        (body(evidence=[{"name": "x", "sha256": "g" * 64, "size": 1}]), "evidence.0.sha256", "64 hexadecimal"),
        (body(evidence=[{"name": "x", "sha256": "0f" * 32, "size": -5}]), "evidence.0.size", "greater than 0"),
        (body(amount_owed="-1"), "amount_owed", "greater than 0"),
        (body(amount_owed="one thousand"), "amount_owed", "decimal"),
        (body(workers_affected=0), "workers_affected", "greater than or equal to 1"),
        (body(category="holiday-pay"), "category", "wage-arrears"),
        (body(period={"start": "2025-06-01", "end": "2025-01-01"}), "period", "before its start"),
        (body(employer={**body()["employer"], "credit_code": "91350100M000100Y4"}), "employer.credit_code", "18"),
        (body(complainant={**complainant, "phone": "110"}), "complainant.phone", "mobile number"),
        (body(work_place={"division_code": "440305"}), "work_place.division_code", "not a member"),
        (body(work_place={"division_code": "519900"}), "work_place.division_code", "no prefecture 519900"),
        (body(complainant={**complainant, "home_province": "320000"}), "complainant.home_province", "510000"),
        ({k: v for k, v in body().items() if k != "sector"}, "sector", "Field required"),
    ]
    for data, field, message in cases:
        problem = assert_problem(await client.post(CASES, json=data, headers=worker(keys)), 422)
        errors: list[dict[str, Any]] = problem["errors"]  # type: ignore[assignment]
        assert [e["field"] for e in errors] == [field], problem
        assert message in errors[0]["message"], problem
    officer_without_whom = assert_problem(await client.post(CASES, json=body(), headers=officer(keys)), 422)
    assert officer_without_whom["errors"][0]["field"] == "complainant.resident_id"  # type: ignore[index]
    assert_problem(await client.post(CASES, content=b"{broken", headers=worker(keys)), 422)
    assert (await client.get(CASES, headers=officer(keys))).json() == {"items": [], "next_after": None}


async def test_filing_needs_the_right_role_province_and_identity(client: httpx.AsyncClient, keys: NodeKeys) -> None:
    assert_problem(await client.post(CASES, json=body()), 401, "bearer token")
    assert_problem(await client.post(CASES, json=body(), headers=bearer(keys, "admin")), 403, "worker or officer")
    elsewhere = bearer(keys, "officer", sub="x", province="320000")
    assert_problem(await client.post(CASES, json=body(), headers=elsewhere), 403, "reserved to province 510000")
    anonymous_worker = bearer(keys, "worker", sub="wang-xiaoming")
    assert_problem(await client.post(CASES, json=body(), headers=anonymous_worker), 403, "resident identity number")
    for_someone_else = body(complainant={**body()["complainant"], "resident_id": LI})
    assert_problem(await client.post(CASES, json=for_someone_else, headers=worker(keys)), 403, "for themselves")

    on_behalf = await client.post(CASES, json=for_someone_else, headers=officer(keys))
    assert on_behalf.status_code == 201, on_behalf.text
    assert on_behalf.json()["complainant"]["resident_id"] == LI
    assert on_behalf.json()["timeline"][0]["actor"] == "officer:sc-officer"


async def test_a_worker_sees_their_own_cases_and_nobody_else_s(client: httpx.AsyncClient, keys: NodeKeys) -> None:
    filed = await client.post(CASES, json=body(), headers=worker(keys))
    assert filed.status_code == 201, filed.text
    case = filed.json()
    location = filed.headers["Location"]
    assert location == f"{CASES}/{case['id']}" and case["id"].startswith("510000-R-")
    assert case["complainant"] == {"resident_id": WANG, "name": "王小明", "phone": "13812345678"}
    assert case["timeline"][0]["actor"] == "complainant", "a worker's identity never enters the timeline"
    assert WANG not in str(case["timeline"])

    own = await client.get(location, headers=worker(keys))
    assert own.status_code == 200 and own.json()["complainant"]["resident_id"] == WANG
    assert [c["id"] for c in (await client.get(CASES, headers=worker(keys))).json()["items"]] == [case["id"]]
    seen_by_officer = (await client.get(location, headers=officer(keys))).json()
    assert seen_by_officer["complainant"]["resident_id"] == WANG, "officers of the province handling it see it all"
    assert seen_by_officer["timeline"] == case["timeline"]

    stranger = worker(keys, LI)
    assert_problem(await client.get(location, headers=stranger), 404, case["id"])
    assert_problem(await client.post(f"{location}/withdraw", json={}, headers=stranger), 404, case["id"])
    assert (await client.get(CASES, headers=stranger)).json()["items"] == []
    assert_problem(await client.get(f"{CASES}/510000-R-NOPE", headers=officer(keys)), 404, "510000-R-NOPE")
    elsewhere = bearer(keys, "officer", sub="js-officer", province="320000")
    for step in ("accept", "updates", "resolve", "refer"):
        assert_problem(await client.post(f"{location}/{step}", json={}, headers=worker(keys)), 403, "officer")
        assert_problem(await client.post(f"{location}/{step}", json={}, headers=elsewhere), 403, "province 510000")
    assert_problem(await client.get(location, headers=elsewhere), 404, case["id"])


async def test_a_case_handled_at_home_walks_through_every_step(client: httpx.AsyncClient, keys: NodeKeys) -> None:
    case_id = (await client.post(CASES, json=body(), headers=worker(keys))).json()["id"]
    url = f"{CASES}/{case_id}"
    staff = officer(keys)
    today = today_in_china()

    accepted = await client.post(f"{url}/accept", json={"note": "予以受理"}, headers=staff)
    assert accepted.status_code == 200, accepted.text
    assert (accepted.json()["status"], accepted.json()["side"]) == ("investigating", "home")
    assert date.fromisoformat(accepted.json()["investigation_due"]) > today + timedelta(days=80)
    assert_problem(await client.post(f"{url}/accept", json={}, headers=staff), 409, "is investigating")
    assert_problem(await client.post(f"{url}/updates", json={"note": ""}, headers=staff), 422, "note")
    assert (await client.post(f"{url}/updates", json={"note": "约谈项目负责人"}, headers=staff)).status_code == 200
    extended = (await client.post(f"{url}/extend", json={"reason": "需调取银行流水"}, headers=staff)).json()
    assert extended["extended"] is True
    assert extended["investigation_due"] > accepted.json()["investigation_due"]
    assert_problem(await client.post(f"{url}/extend", json={"reason": "again"}, headers=staff), 409, "once only")
    too_many = {"amount_recovered": "36000", "workers_paid": 7}
    assert_problem(await client.post(f"{url}/resolve", json=too_many, headers=staff), 409, "6 workers affected")
    assert_problem(
        await client.post(f"{url}/resolve", json={"amount_recovered": "0", "workers_paid": 1}, headers=staff),
        422,
        "amount_recovered",
    )
    assert_problem(
        await client.post(f"{url}/close", json={"reason": "withdrawn", "note": "x"}, headers=staff), 422, "reason"
    )
    resolved = await client.post(
        f"{url}/resolve", json={"amount_recovered": "36000.00", "workers_paid": 6, "note": "全部结清"}, headers=staff
    )
    assert resolved.status_code == 200, resolved.text
    done = resolved.json()
    assert (done["status"], done["amount_recovered"], done["workers_paid"]) == ("resolved", "36000.00", 6)
    assert [e["kind"] for e in done["timeline"]] == ["filed", "referred", "accepted", "updated", "extended", "resolved"]
    assert_problem(await client.post(f"{url}/updates", json={"note": "late"}, headers=staff), 409, "concluded")
    assert_problem(await client.post(f"{url}/withdraw", json={}, headers=worker(keys)), 409, "concluded")
    assert (await client.get(url, headers=worker(keys))).json() == done

    # a second case: declined at home (wrong place), referred again to Chongqing, then withdrawn by the worker
    other = (await client.post(CASES, json=body(), headers=worker(keys))).json()["id"]
    other_url = f"{CASES}/{other}"
    assert_problem(
        await client.post(f"{other_url}/decline", json={"reason": "x", "suggested_province": "440000"}, headers=staff),
        422,
        "not a member",
    )
    returned = await client.post(
        f"{other_url}/decline", json={"reason": "实际用工地在重庆", "suggested_province": "500000"}, headers=staff
    )
    assert (returned.json()["status"], returned.json()["handling_province"]) == ("returned", None)
    assert_problem(await client.post(f"{other_url}/refer", json={"province": "110000"}, headers=staff), 422, "member")
    referred = await client.post(f"{other_url}/refer", json={"province": "500000", "note": "转重庆"}, headers=staff)
    assert (referred.json()["status"], referred.json()["holder"]) == ("referred", "500000")
    assert_problem(await client.post(f"{other_url}/accept", json={}, headers=staff), 403, "handled by 500000")
    pending = await client.post(f"{other_url}/withdraw", json={"note": "已和解"}, headers=worker(keys))
    assert pending.status_code == 202, pending.text
    assert pending.json()["status"] == "referred" and pending.json()["withdrawal_requested_at"]

    statistics = (await client.get("/api/v1/statistics")).json()
    assert statistics["totals"] == {
        "cases": 2,
        "workers_affected": 12,
        "amount_owed": "72000.00",
        "amount_recovered": "36000.00",
    }
    assert [(r["handling_province"], r["cases"]) for r in statistics["by_handling_province"]] == [
        ("500000", 1),
        ("510000", 1),
    ]
    assert WANG not in str(statistics) and "王小明" not in str(statistics)


async def test_referral_is_a_directed_message_and_statistics_carry_no_person(
    client: httpx.AsyncClient, keys: NodeKeys, settings: Settings
) -> None:
    chongqing = body(work_place={"division_code": "500103"}, employer={**body()["employer"], "province": "500000"})
    filed = (await client.post(CASES, json=chongqing, headers=worker(keys))).json()
    assert (filed["status"], filed["holder"], filed["handling_province"]) == ("referred", "500000", "500000")
    assert filed["work_place_name"] == "重庆市市辖区"

    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as connection:
            rows = (await connection.execute(select(outbox).order_by(outbox.c.id))).all()
    finally:
        await engine.dispose()
    events = [(r.topic, Envelope.from_kafka(r.message_key, r.payload, decode_headers(r.headers))) for r in rows]
    directed = [(topic, e) for topic, e in events if e.type == "org.labornet.rights.case.referred.v1"]
    assert [(topic, e.destprovince, e.partitionkey) for topic, e in directed] == [
        ("labornet.500000.rights.inbox", "500000", filed["id"])
    ]
    assert directed[0][1].json()["complainant"]["resident_id"] == WANG, "the handling province gets the identity"
    broadcast = [(topic, e) for topic, e in events if e.destprovince is None]
    assert {topic for topic, _ in broadcast} == {"labornet.510000.rights.events"}
    assert {e.type for _, e in broadcast} == {"org.labornet.rights.statistics.published.v1"}
    for _, envelope in broadcast:
        for secret in (WANG, "王小明", "13812345678", filed["id"], "91350100M000100Y43"):
            assert secret.encode() not in envelope.data


async def test_overdue_cases_are_listed_for_officers_and_counted_in_metrics(
    client: httpx.AsyncClient, keys: NodeKeys, settings: Settings
) -> None:
    staff = officer(keys)
    late_acceptance = (await client.post(CASES, json=body(), headers=worker(keys))).json()["id"]
    late_investigation = (await client.post(CASES, json=body(amount_owed="1000.00"), headers=worker(keys))).json()["id"]
    on_time = (await client.post(CASES, json=body(amount_owed="500.00"), headers=worker(keys))).json()["id"]
    await client.post(f"{CASES}/{late_investigation}/accept", json={}, headers=staff)
    yesterday = today_in_china() - timedelta(days=1)
    await set_columns(settings, late_acceptance, acceptance_due=yesterday)
    await set_columns(settings, late_investigation, investigation_due=yesterday)

    listed = (await client.get(CASES, params={"overdue": "true"}, headers=staff)).json()["items"]
    assert sorted(c["id"] for c in listed) == sorted([late_acceptance, late_investigation])
    assert {c["id"]: c["overdue"] for c in listed} == {
        late_acceptance: "acceptance",
        late_investigation: "investigation",
    }
    assert "timeline" not in listed[0]
    by_deadline = (await client.get(CASES, params={"deadline": "acceptance"}, headers=staff)).json()["items"]
    assert [c["id"] for c in by_deadline] == [late_acceptance]
    assert (await client.get(f"{CASES}/{on_time}", headers=staff)).json()["overdue"] is None
    assert (await client.get(CASES, params={"overdue": "true"}, headers=worker(keys, LI))).json()["items"] == []
    assert_problem(await client.get(CASES, params={"deadline": "soon"}, headers=staff), 422, "deadline")
    page = (await client.get(CASES, params={"limit": 2}, headers=staff)).json()
    rest = (await client.get(CASES, params={"limit": 2, "after": page["next_after"]}, headers=staff)).json()
    assert len(page["items"]) == 2 and len(rest["items"]) == 1 and rest["next_after"] is None

    expected = [
        'labornet_rights_cases_overdue{deadline="acceptance",province="510000",side="home"} 1.0',
        'labornet_rights_cases_overdue{deadline="investigation",province="510000",side="home"} 1.0',
        'labornet_rights_cases{province="510000",side="home",state="referred"} 2.0',
        'labornet_rights_cases{province="510000",side="home",state="investigating"} 1.0',
        'labornet_rights_amount_owed_yuan{province="510000",side="home"} 37500.0',
        'labornet_rights_amount_recovered_yuan{province="510000",side="home"} 0.0',
    ]

    async def counted() -> bool:
        metrics = (await client.get("/metrics")).text
        return all(line in metrics for line in expected)

    await eventually(counted, timeout_s=10)


async def test_an_overdue_investigation_is_escalated_with_a_reason_and_not_extended(
    client: httpx.AsyncClient, keys: NodeKeys, settings: Settings
) -> None:
    staff = officer(keys)
    case_id = (await client.post(CASES, json=body(), headers=worker(keys))).json()["id"]
    url = f"{CASES}/{case_id}"
    await client.post(f"{url}/accept", json={}, headers=staff)
    assert_problem(
        await client.post(f"{url}/escalate", json={"reason": "早了"}, headers=staff), 409, "within its limits"
    )
    forty_days_ago = today_in_china() - timedelta(days=40)
    await set_columns(settings, case_id, investigation_due=forty_days_ago)
    late = (await client.get(url, headers=staff)).json()
    assert (late["overdue"], late["escalated"]) == ("investigation", None)

    refused = assert_problem(await client.post(f"{url}/extend", json={"reason": "补充调查"}, headers=staff), 409)
    assert f"limit passed on {forty_days_ago} (40 days ago" in str(refused["detail"]), refused
    assert "escalated with a reason" in str(refused["detail"])
    assert (await client.get(url, headers=staff)).json()["overdue"] == "investigation", "still overdue"
    assert_problem(await client.post(f"{url}/escalate", json={}, headers=staff), 422, "reason")
    assert_problem(await client.post(f"{url}/escalate", json={"reason": "x"}, headers=worker(keys)), 403, "officer")

    escalated = await client.post(f"{url}/escalate", json={"reason": "用人单位拒不配合，报请上级督办"}, headers=staff)
    assert escalated.status_code == 200, escalated.text
    view = escalated.json()
    assert (view["status"], view["overdue"], view["escalated"], view["extended"]) == (
        "investigating",
        "investigation",
        "investigation",
        False,
    )
    assert (
        view["timeline"][-1]["kind"] == "escalated" and view["timeline"][-1]["note"] == "用人单位拒不配合，报请上级督办"
    )
    assert view["timeline"][-1]["details"] == {
        "deadline": "investigation",
        "due": forty_days_ago.isoformat(),
        "days_late": 40,
    }
    assert_problem(await client.post(f"{url}/escalate", json={"reason": "again"}, headers=staff), 409, "already")
    resolved = await client.post(f"{url}/resolve", json={"amount_recovered": "100", "workers_paid": 1}, headers=staff)
    assert resolved.json()["status"] == "resolved" and resolved.json()["overdue"] is None


async def test_a_re_referral_may_correct_the_work_place_within_the_new_province(
    client: httpx.AsyncClient, keys: NodeKeys
) -> None:
    staff = officer(keys)
    case_id = (await client.post(CASES, json=body(), headers=worker(keys))).json()["id"]
    url = f"{CASES}/{case_id}"
    await client.post(
        f"{url}/decline", json={"reason": "实际用工地在重庆渝中区", "suggested_province": "500000"}, headers=staff
    )
    for place, message in [
        ({"division_code": "510104"}, "not in province 500000"),
        ({"division_code": "509900"}, "no prefecture 509900 in province 500000"),
        ({"division_code": "500"}, "expected 6 digits"),
    ]:
        problem = assert_problem(
            await client.post(f"{url}/refer", json={"province": "500000", "work_place": place}, headers=staff), 422
        )
        errors: list[dict[str, Any]] = problem["errors"]  # type: ignore[assignment]
        assert [e["field"] for e in errors] == ["work_place.division_code"], problem
        assert message in errors[0]["message"], problem
    assert (await client.get(url, headers=staff)).json()["status"] == "returned", "nothing changed"

    corrected = {"division_code": "500103", "site": "解放碑某项目"}
    referred = await client.post(
        f"{url}/refer", json={"province": "500000", "work_place": corrected, "note": "更正用工地"}, headers=staff
    )
    assert referred.status_code == 200, referred.text
    view = referred.json()
    assert (view["status"], view["handling_province"], view["work_place"], view["work_place_name"]) == (
        "referred",
        "500000",
        corrected,
        "重庆市市辖区",
    )
    assert view["timeline"][-1]["details"] == {
        "to": "500000",
        "work_place": corrected,
        "previous_work_place": {"division_code": "510104", "site": "锦江某安置房项目"},
    }


async def test_statistics_are_broadcast_again_without_a_change(settings: Settings) -> None:
    """A partner that lost a snapshot (a broker that lost its log beyond the republish window) catches up: the
    snapshot goes out again every LABORNET_RIGHTS_STATISTICS_INTERVAL_S, with a higher generation each time."""
    spec = dataclasses.replace(
        build_spec(RightsSettings(sweep_interval_s=0.05, statistics_interval_s=0.3)), consumers=lambda _runtime: ()
    )

    async def generations() -> list[int]:
        engine = create_engine(settings.database_url)
        try:
            async with engine.connect() as connection:
                rows = (await connection.execute(select(outbox).order_by(outbox.c.id))).all()
        finally:
            await engine.dispose()
        envelopes = [Envelope.from_kafka(r.message_key, r.payload, decode_headers(r.headers)) for r in rows]
        return [e.json()["generation"] for e in envelopes if e.type == "org.labornet.rights.statistics.published.v1"]

    async with serving(create_service_app(spec, settings)):

        async def three_more() -> bool:
            return len(await generations()) >= 4  # the one at start-up and three again

        await eventually(three_more, timeout_s=15)
    published = await generations()
    assert published == sorted(published) and len(set(published)) == len(published), published

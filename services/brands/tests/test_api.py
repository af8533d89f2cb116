"""The brands HTTP API of one node, served by uvicorn on a real database: who may write, what is refused and why,
optimistic concurrency, search, statistics, demands and healing from a snapshot.

The nodes here run without a bus (their broker address leads nowhere), so nothing another test published can
reach them: partners' brands and demands are put into the replica directly, as the consumers would. The bus
itself is exercised by tests/integration/test_brands_federation.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator, FormatChecker
from prometheus_client import REGISTRY
from sqlalchemy import insert

from labornet.brands.adapters.tables import demand
from labornet.brands.app import create_app
from labornet.brands.domain.brand import BrandDraft
from labornet.brands.entrypoints.federation import SNAPSHOT_PATH
from labornet.brands.service_layer.brands import apply_replica_row, from_event
from labornet.shared.broker import free_port
from labornet.shared.clock import today_in_china
from labornet.shared.db import create_engine, sessionmaker
from labornet.shared.envelope import format_time
from labornet.shared.keys import NodeKeys
from labornet.shared.migrations import upgrade
from labornet.shared.settings import Settings
from labornet.shared.signing import SignatureRejected, TrustList
from labornet.shared.testing import assert_problem, bearer, serving

T0 = datetime(2026, 1, 5, 2, 0, tzinfo=UTC)


def draft(name_zh: str = "川菜师傅", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name_zh": name_zh,
        "name_en": "Sichuan Chefs",
        "division_code": "510100",
        "category": "catering",
        "level": "provincial",
        "cultivating_body": {"type": "regional-public", "name": "四川省人力资源和社会保障厅"},
        "description": "川菜烹饪技能品牌",
        "skills": ["川菜", "面点"],
        "destination_regions": ["330000", "320000"],
        "people_trained": 12000,
        "jobs_supported": 30000,
        "annual_labour_income_cny": 1_800_000_000,
    }
    body.update(overrides)
    return body


def partner_brand(number: int, name_zh: str, *, status: str = "recognised", **fields: Any) -> dict[str, Any]:
    """A Chongqing brand as its events carry it."""
    record: dict[str, Any] = {
        "id": f"500000-B-{number:06d}",
        "origin_province": "500000",
        "name_zh": name_zh,
        "name_en": None,
        "division_code": "500101",
        "division_name": "重庆市市辖区",
        "category": "domestic-services",
        "category_name": "家政服务",
        "level": "provincial",
        "cultivating_body_type": "regional-public",
        "cultivating_body_name": "重庆市人力资源和社会保障局",
        "cultivating_body_credit_code": None,
        "description": "",
        "skills": [],
        "training_bases": [],
        "destination_regions": ["510000"],
        "people_trained": 1000,
        "jobs_supported": 2000,
        "annual_labour_income_cny": 100_000_000,
        "spokespersons": [],
        "trademark_number": None,
        "status": status,
        "registered_at": format_time(T0),
        "recognised_at": format_time(T0 + timedelta(minutes=number)) if status == "recognised" else None,
        "revoked_at": None,
        "revocation_reason": None,
        "updated_at": format_time(T0),
        "version": 2 if status == "recognised" else 1,
    }
    record.update(fields)
    return record


async def seed(database_url: str, *records: dict[str, Any], demands: tuple[dict[str, Any], ...] = ()) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine, "labornet.brands:migrations")
        async with sessionmaker(engine)() as session, session.begin():
            for record in records:
                await apply_replica_row(session, from_event(record))
            if demands:
                await session.execute(insert(demand), list(demands))
    finally:
        await engine.dispose()


@pytest.fixture
def offline(make_settings: Callable[..., Settings]) -> Callable[[str, str], Settings]:
    """Settings of a brands node that reaches no broker (its relay and consumers keep retrying quietly)."""

    def build(province: str, database_url: str) -> Settings:
        return make_settings(
            province,
            "brands",
            database_url,
            kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
            kafka_create_topics=False,
        )

    return build


@pytest.fixture
def settings(offline: Callable[[str, str], Settings], database_url: str) -> Settings:
    return offline("510000", database_url)


@pytest.fixture
def officer(node_keys: dict[str, NodeKeys]) -> dict[str, str]:
    return bearer(node_keys["510000"], "officer", sub="sc-officer")


def fields_of(problem: dict[str, Any]) -> list[str]:
    return [error["field"] for error in problem.get("errors", [])]


async def test_officers_of_the_origin_write_their_brands_and_nobody_else_does(
    settings: Settings, node_keys: dict[str, NodeKeys], officer: dict[str, str]
) -> None:
    sc_keys = node_keys["510000"]
    await seed(settings.database_url, partner_brand(1, "巴渝大嫂"))
    async with serving(create_app(settings)) as client:
        assert_problem(await client.post("/api/v1/brands", json=draft()), 401, "bearer token")
        assert_problem(await client.post("/api/v1/brands", headers=bearer(sc_keys, "worker"), json=draft()), 403)
        other_officer = bearer(sc_keys, "officer", province="330000")
        assert_problem(await client.post("/api/v1/brands", headers=other_officer, json=draft()), 403, "510000")
        foreign = bearer(node_keys["330000"], "officer")
        assert_problem(await client.post("/api/v1/brands", headers=foreign, json=draft()), 403, "labornet:510000")

        enterprise = {"type": "enterprise", "name": "川厨餐饮管理有限公司"}
        for body, field in [
            (
                draft(cultivating_body={**enterprise, "credit_code": "91350100M000100Y44"}),
                "cultivating_body.credit_code",
            ),
            (draft(cultivating_body=enterprise), "cultivating_body.credit_code"),
            (draft(division_code="330106"), "division_code"),
            (draft(division_code="519900"), "division_code"),
            (draft(destination_regions=["110000"]), "destination_regions.0"),
            (draft(category="cooking"), "category"),
            (draft(name_zh="Sichuan Chefs"), "name_zh"),
            (draft(trademark_number="TM"), "trademark_number"),
            (draft(people_trained=-5), "people_trained"),
            (draft(level=None), "level"),
        ]:
            problem = assert_problem(await client.post("/api/v1/brands", headers=officer, json=body), 422)
            assert field in fields_of(problem), (field, problem)
        assert_problem(await client.post("/api/v1/brands", headers=officer, content=b"{not json"), 422)
        assert (await client.get("/api/v1/brands", params={"status": "proposed"})).json()["total"] == 0

        registered = await client.post("/api/v1/brands", headers=officer, json=draft())
        assert registered.status_code == 201, registered.text
        chefs = registered.json()
        bid = chefs["id"]
        assert registered.headers["ETag"] == '"1"' and registered.headers["Location"] == f"/api/v1/brands/{bid}"
        assert (chefs["status"], chefs["division_name"], chefs["display_name"], chefs["name_conflict"]) == (
            "proposed",
            "成都市",
            "川菜师傅",
            False,
        )
        assert_problem(await client.post("/api/v1/brands", headers=officer, json=draft("川菜 师傅")), 409, bid)

        url = f"/api/v1/brands/{bid}"
        assert_problem(await client.patch(url, headers=officer, json={"people_trained": 1}), 428)
        assert_problem(await client.patch(url, headers=officer | {"If-Match": "v1"}, json={"people_trained": 1}), 422)
        problem = assert_problem(
            await client.patch(url, headers=officer, json={"version": 1, "level": "galactic"}), 422
        )
        assert fields_of(problem) == ["level"]
        changed = await client.patch(url, headers=officer | {"If-Match": '"1"'}, json={"people_trained": 13000})
        assert (changed.status_code, changed.json()["version"], changed.headers["ETag"]) == (200, 2, '"2"')
        assert_problem(
            await client.patch(url, headers=officer, json={"version": 1, "people_trained": 2}), 409, "version 2"
        )
        assert_problem(
            await client.post(f"{url}/recognise", headers=bearer(sc_keys, "worker"), json={"version": 2}), 403
        )
        recognised = await client.post(f"{url}/recognise", headers=officer, json={"version": 2})
        assert recognised.status_code == 200, recognised.text
        assert recognised.json()["status"] == "recognised" and recognised.json()["recognised_at"]
        assert_problem(await client.post(f"{url}/recognise", headers=officer, json={"version": 3}), 409, "recognised")
        renamed = await client.patch(url, headers=officer, json={"version": 3, "name_zh": "川菜大师"})
        assert str(assert_problem(renamed, 409, "does not change")["type"]).endswith("/name-fixed")

        public = await client.get(url)
        assert (public.status_code, public.json()["version"], public.headers["ETag"]) == (200, 3, '"3"')
        assert [b["id"] for b in (await client.get("/api/v1/brands")).json()["items"]] == [bid, "500000-B-000001"]
        assert_problem(await client.get("/api/v1/brands/510000-B-NOSUCH"), 404, "510000-B-NOSUCH")

        partner = "/api/v1/brands/500000-B-000001"
        assert_problem(
            await client.patch(partner, headers=officer, json={"version": 2, "jobs_supported": 1}), 403, "500000"
        )
        assert_problem(await client.post(f"{partner}/revoke", headers=officer, json={"version": 2, "reason": "x"}), 403)

        problem = assert_problem(await client.post(f"{url}/revoke", headers=officer, json={"version": 3}), 422)
        assert fields_of(problem) == ["reason"]
        revoked = await client.post(f"{url}/revoke", headers=officer | {"If-Match": '"3"'}, json={"reason": "品牌整合"})
        assert (revoked.status_code, revoked.json()["status"], revoked.json()["revocation_reason"]) == (
            200,
            "revoked",
            "品牌整合",
        )
        assert [b["id"] for b in (await client.get("/api/v1/brands")).json()["items"]] == ["500000-B-000001"]
        assert (await client.post("/api/v1/brands", headers=officer, json=draft("川菜师傅"))).status_code == 201


async def test_search_statistics_and_name_conflicts_over_http(settings: Settings, officer: dict[str, str]) -> None:
    await seed(
        settings.database_url,
        partner_brand(1, "巴渝大嫂", name_en="Bayu Housekeepers", description="家政，擅长川菜家常菜"),
        partner_brand(2, "川妹子", jobs_supported=5000),  # recognised long before Sichuan's 川妹子
        partner_brand(3, "重庆火锅师", status="proposed", category="catering", category_name="餐饮烹饪"),
    )
    async with serving(create_app(settings)) as client:

        async def recognise(body: dict[str, Any]) -> dict[str, Any]:
            created = (await client.post("/api/v1/brands", headers=officer, json=body)).json()
            answer = await client.post(
                f"/api/v1/brands/{created['id']}/recognise", headers=officer, json={"version": 1}
            )
            assert answer.status_code == 200, answer.text
            result: dict[str, Any] = answer.json()
            return result

        chefs = await recognise(draft())
        sister = await recognise(
            draft(
                "川妹子",
                name_en="Chuanmeizi",
                category="domestic-services",
                level="national",
                jobs_supported=70000,
                description="家政服务品牌",
                skills=["家政", "育婴"],
            )
        )
        await recognise(
            draft(
                "蜀绣",
                name_en="Shu Embroidery",
                category="traditional-crafts",
                skills=[],
                description="",
                jobs_supported=800,
            )
        )
        assert sister["name_conflict"] is True and sister["display_name"] == "川妹子（四川）"
        assert sister["name_conflict_with"] == ["500000-B-000002"]

        async def names(**params: Any) -> list[str]:
            found = await client.get("/api/v1/brands", params=params)
            assert found.status_code == 200, found.text
            return sorted(item["display_name"] for item in found.json()["items"])

        assert await names(q="川菜") == ["川菜师傅", "巴渝大嫂"]
        assert await names(q="chef") == ["川菜师傅"]
        assert await names(q="川妹子") == ["川妹子", "川妹子（四川）"]
        assert await names(q="火锅") == []
        assert await names(q="火锅", status=["proposed", "recognised"]) == ["重庆火锅师"]
        assert await names(province="510000", category="catering") == ["川菜师傅"]
        assert await names(level="national") == ["川妹子（四川）"]
        assert await names(destination="320000", division_code="510100") == ["川妹子（四川）", "川菜师傅", "蜀绣"]
        paged = (await client.get("/api/v1/brands", params={"sort": "jobs", "limit": 2})).json()
        assert [b["name_zh"] for b in paged["items"]] == ["川妹子", "川菜师傅"] and paged["total"] == 5
        rest = (await client.get("/api/v1/brands", params={"sort": "jobs", "cursor": paged["next_cursor"]})).json()
        assert [b["jobs_supported"] for b in rest["items"]] == [5000, 2000, 800]
        bad_queries: list[tuple[dict[str, Any], str]] = [
            ({"province": "51"}, "query.province"),
            ({"limit": 0}, "query.limit"),
            ({"cursor": "garbage"}, "query.cursor"),
            ({"status": "lost"}, "query.status.0"),
            ({"level": "galactic"}, "query.level"),
        ]
        for params, field in bad_queries:
            assert field in fields_of(assert_problem(await client.get("/api/v1/brands", params=params), 422))

        stats = (await client.get("/api/v1/brands/stats")).json()
        assert stats["statuses"] == ["recognised"]
        assert stats["total"] == {
            "brands": 5,
            "people_trained": 3 * 12000 + 2 * 1000,
            "jobs_supported": 30000 + 70000 + 800 + 2000 + 5000,
            "annual_labour_income_cny": 3 * 1_800_000_000 + 2 * 100_000_000,
            "name_conflicts": 1,
        }
        provinces = {p["province"]: p for p in stats["provinces"]}
        assert len(provinces) == 9 and provinces["330000"]["brands"] == 0
        assert provinces["510000"] | {"levels": None, "categories": None} == {
            "province": "510000",
            "name": "四川",
            "brands": 3,
            "people_trained": 36000,
            "jobs_supported": 100800,
            "annual_labour_income_cny": 5_400_000_000,
            "name_conflicts": 1,
            "levels": None,
            "categories": None,
        }
        assert provinces["510000"]["levels"] == {"national": 1, "provincial": 2, "city-county": 0}
        assert provinces["510000"]["categories"] == {"catering": 1, "domestic-services": 1, "traditional-crafts": 1}
        assert (provinces["500000"]["brands"], provinces["500000"]["name_conflicts"]) == (2, 0)
        categories = {c["category"]: c for c in stats["categories"]}
        assert categories["domestic-services"]["brands"] == 3
        assert categories["domestic-services"]["provinces"] == {"500000": 2, "510000": 1}
        assert (categories["catering"]["name"], categories["security"]["brands"]) == ("餐饮烹饪", 0)
        proposed = (
            await client.get("/api/v1/brands/stats", params={"status": "proposed", "province": "500000"})
        ).json()
        assert proposed["total"]["brands"] == 1 and [p["province"] for p in proposed["provinces"]] == ["500000"]
        assert_problem(await client.get("/api/v1/brands/stats", params={"province": "5100"}), 422)

        listed = (await client.get("/api/v1/categories")).json()["items"]
        assert {"code": "catering", "zh": "餐饮烹饪", "en": "Catering and cooking"} in listed
        assert chefs["id"].startswith("510000-B-")


def received_demand(brand_id: str, **fields: Any) -> dict[str, Any]:
    """A demand Zhejiang posted for one of Sichuan's brands, as Sichuan's consumer records it."""
    today = today_in_china()
    row: dict[str, Any] = {
        "id": "330000-D-000001",
        "brand_id": brand_id,
        "brand_name_zh": "川菜师傅",
        "origin_province": "510000",
        "demanding_province": "330000",
        "workers": 20,
        "division_code": "330106",
        "city": "杭州市",
        "period_start": today + timedelta(days=10),
        "period_end": today + timedelta(days=100),
        "conditions": "包食宿",
        "contact": "0571-88000000",
        "posted_by": "zj-officer",
        "posted_at": T0,
        "status": "open",
        "workers_offered": None,
        "answer_note": None,
        "answered_by": None,
        "answered_at": None,
        "updated_at": T0,
        "version": 1,
    }
    row.update(fields)
    return row


async def test_demands_are_posted_and_answered_by_the_right_officers(
    settings: Settings, node_keys: dict[str, NodeKeys], officer: dict[str, str]
) -> None:
    sc_keys = node_keys["510000"]
    today = today_in_china()
    period = {"start": (today + timedelta(days=7)).isoformat(), "end": (today + timedelta(days=90)).isoformat()}

    def wanted(brand_id: str = "500000-B-000001", **overrides: Any) -> dict[str, Any]:
        body = {
            "brand_id": brand_id,
            "workers": 30,
            "division_code": "510104",
            "period": period,
            "conditions": "月薪6000元，包住宿",
            "contact": "成都市就业局 028-86000000",
        }
        return body | overrides

    posted_metric = {"origin_province": "500000"}
    posted_before = REGISTRY.get_sample_value("labornet_brands_demands_posted_total", posted_metric) or 0
    await seed(settings.database_url, partner_brand(1, "巴渝大嫂"), partner_brand(2, "巴渝厨娘", status="proposed"))
    async with serving(create_app(settings)) as client:
        own = (await client.post("/api/v1/brands", headers=officer, json=draft())).json()
        await client.post(f"/api/v1/brands/{own['id']}/recognise", headers=officer, json={"version": 1})

        assert_problem(await client.post("/api/v1/demands", json=wanted()), 401)
        assert_problem(await client.post("/api/v1/demands", headers=bearer(sc_keys, "worker"), json=wanted()), 403)
        other_officer = bearer(sc_keys, "officer", province="500000")
        assert_problem(await client.post("/api/v1/demands", headers=other_officer, json=wanted()), 403)
        for body, field in [
            (wanted(workers=0), "workers"),
            (wanted(division_code="330106"), "division_code"),
            (wanted(period={"start": "2020-01-01", "end": "2020-03-01"}), "period"),
            (wanted(conditions=""), "conditions"),
            (wanted("500000-B-999999"), "brand_id"),
            (wanted(own["id"]), "brand_id"),
        ]:
            problem = assert_problem(await client.post("/api/v1/demands", headers=officer, json=body), 422)
            assert field in fields_of(problem), (field, problem)
        assert_problem(await client.post("/api/v1/demands", headers=officer, json=wanted("500000-B-000002")), 409)

        posted = await client.post("/api/v1/demands", headers=officer, json=wanted())
        assert posted.status_code == 201, posted.text
        mine = posted.json()
        assert (mine["side"], mine["status"], mine["city"], mine["posted_by"]) == (
            "posted",
            "open",
            "成都市",
            "sc-officer",
        )
        assert (
            REGISTRY.get_sample_value("labornet_brands_demands_posted_total", posted_metric) or 0
        ) == posted_before + 1
        assert_problem(
            await client.post(
                f"/api/v1/demands/{mine['id']}/answer", headers=officer, json={"decision": "declined", "note": "x"}
            ),
            403,
            "500000 answers it",
        )

    answered_metric = {"decision": "accepted", "by": "officer"}
    answered_before = REGISTRY.get_sample_value("labornet_brands_demands_answered_total", answered_metric) or 0
    await seed(settings.database_url, demands=(received_demand(own["id"]),))
    async with serving(create_app(settings)) as client:
        url = "/api/v1/demands/330000-D-000001"
        assert_problem(await client.get(url), 401)
        assert (await client.get(url, headers=officer)).json()["side"] == "received"
        assert_problem(await client.post(f"{url}/answer", headers=bearer(sc_keys, "worker"), json={}), 403)
        bad_answers: list[tuple[dict[str, Any], str]] = [
            ({"decision": "accepted"}, "body"),
            ({"decision": "declined"}, "body"),
            ({"decision": "maybe"}, "decision"),
            ({"decision": "accepted", "workers_offered": 21}, "workers_offered"),
        ]
        for body, field in bad_answers:
            problem = assert_problem(await client.post(f"{url}/answer", headers=officer, json=body), 422)
            assert field in fields_of(problem), (field, problem)
        accepted = await client.post(
            f"{url}/answer", headers=officer, json={"decision": "accepted", "workers_offered": 20, "note": "4月到岗"}
        )
        assert accepted.status_code == 200, accepted.text
        assert (accepted.json()["status"], accepted.json()["version"], accepted.json()["answered_by"]) == (
            "accepted",
            2,
            "sc-officer",
        )
        assert_problem(
            await client.post(f"{url}/answer", headers=officer, json={"decision": "declined", "note": "x"}), 409
        )
        answered_now = REGISTRY.get_sample_value("labornet_brands_demands_answered_total", answered_metric) or 0
        assert answered_now == answered_before + 1
        assert_problem(await client.get("/api/v1/demands/330000-D-NOSUCH", headers=officer), 404)

        async def listed(**params: Any) -> list[str]:
            page = await client.get("/api/v1/demands", headers=officer, params=params)
            assert page.status_code == 200, page.text
            return [item["id"] for item in page.json()["items"]]

        assert await listed(side="received") == ["330000-D-000001"]
        assert await listed(side="posted") == [mine["id"]]
        assert await listed(status="accepted") == ["330000-D-000001"]
        first = (await client.get("/api/v1/demands", headers=officer, params={"limit": 1})).json()
        assert first["items"][0]["id"] == mine["id"]
        rest = await listed(cursor=first["next_cursor"])
        assert rest == ["330000-D-000001"]
        assert_problem(await client.get("/api/v1/demands", headers=officer, params={"cursor": "x"}), 422, "cursor")


async def test_the_origin_serves_a_signed_snapshot_and_a_replica_heals_from_it(
    offline: Callable[[str, str], Settings],
    settings: Settings,
    new_database_url: Callable[[], Awaitable[str]],
    node_keys: dict[str, NodeKeys],
    officer: dict[str, str],
    federation_dir: Path,
) -> None:
    sichuan, chongqing = settings, offline("500000", await new_database_url())
    cq_admin = bearer(node_keys["500000"], "admin", sub="cq-operator")
    async with serving(create_app(sichuan)) as sc, serving(create_app(chongqing)) as cq:
        for name in ("川菜师傅", "川妹子", "蜀绣"):
            created = (await sc.post("/api/v1/brands", headers=officer, json=draft(name))).json()
        await sc.post(f"/api/v1/brands/{created['id']}/revoke", headers=officer, json={"version": 1, "reason": "撤回"})
        assert_problem(await cq.post("/admin/v1/replica/heal", headers=cq_admin, json={"origin": "500000"}), 422)
        assert_problem(await cq.post("/admin/v1/replica/heal", headers=officer, json={"origin": "510000"}), 403)
        healed = await cq.post(
            "/admin/v1/replica/heal", headers=cq_admin, json={"origin": "510000", "base_url": str(sc.base_url)}
        )
        assert healed.status_code == 200, healed.text
        repaired = ("origin", "differing_rows", "inserted", "replaced", "deleted")
        assert [healed.json()[k] for k in repaired] == ["510000", 3, 3, 0, 0]
        statuses = (await cq.get("/api/v1/brands", params={"status": ["proposed", "revoked"]})).json()
        assert sorted(b["status"] for b in statuses["items"]) == ["proposed", "proposed", "revoked"]
        again = (
            await cq.post(
                "/admin/v1/replica/heal", headers=cq_admin, json={"origin": "510000", "base_url": str(sc.base_url)}
            )
        ).json()
        assert [again[k] for k in repaired] == ["510000", 0, 0, 0, 0]
        unreachable = await cq.post(
            "/admin/v1/replica/heal", headers=cq_admin, json={"origin": "510000", "base_url": "http://127.0.0.1:9"}
        )
        assert_problem(unreachable, 502, "did not answer")

        # the page verifies against the trust list as served, and not once a byte of it changes
        context = f"{SNAPSHOT_PATH}?after=&limit=200"
        page = await sc.get(context)
        trust = TrustList.load(federation_dir / "trust-list.json")
        key_id, signature = page.headers["X-LaborNet-Key-Id"], page.headers["X-LaborNet-Signature"]
        assert trust.verify_document("510000", key_id, signature, context, page.content).province == "510000"
        with pytest.raises(SignatureRejected):
            trust.verify_document("510000", key_id, signature, context, page.content.replace("蜀绣".encode(), b"x"))


# --- the response contract --------------------------------------------------------------------------------

# What each operation answered before its response was typed (the response model drops any key it does not
# declare, so a key missing here would have vanished from the API).
BRAND_KEYS = {
    "id",
    "origin_province",
    "name_zh",
    "name_en",
    "division_code",
    "division_name",
    "category",
    "category_name",
    "level",
    "cultivating_body_type",
    "cultivating_body_name",
    "cultivating_body_credit_code",
    "description",
    "skills",
    "training_bases",
    "destination_regions",
    "people_trained",
    "jobs_supported",
    "annual_labour_income_cny",
    "spokespersons",
    "trademark_number",
    "status",
    "registered_at",
    "recognised_at",
    "revoked_at",
    "revocation_reason",
    "updated_at",
    "version",
    "display_name",
    "display_name_en",
    "name_conflict",
    "name_conflict_with",
}
DEMAND_KEYS = {
    "id",
    "brand_id",
    "brand_name_zh",
    "origin_province",
    "demanding_province",
    "workers",
    "division_code",
    "city",
    "period_start",
    "period_end",
    "conditions",
    "contact",
    "posted_by",
    "posted_at",
    "status",
    "workers_offered",
    "answer_note",
    "answered_by",
    "answered_at",
    "updated_at",
    "version",
    "side",
}
SUM_KEYS = {"brands", "people_trained", "jobs_supported", "annual_labour_income_cny"}


class Contract:
    """The app's OpenAPI document: each response checked against the schema of its operation and status."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def check(self, response: httpx.Response, method: str, path: str) -> Any:
        operation = self.document["paths"][path][method]
        schema = operation["responses"][str(response.status_code)]["content"]["application/json"]["schema"]
        validator = Draft202012Validator(
            {**schema, "components": self.document["components"]}, format_checker=FormatChecker()
        )
        body = response.json()
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]
        assert errors == [], (method, path, errors)
        return body


async def test_every_main_response_keeps_its_keys_and_matches_its_openapi_schema(
    settings: Settings, node_keys: dict[str, NodeKeys], officer: dict[str, str]
) -> None:
    today = today_in_china()
    await seed(settings.database_url, partner_brand(1, "巴渝大嫂", training_bases=[{"name": "渝中基地"}]))
    app = create_app(settings)
    contract = Contract(app.openapi())
    async with serving(app) as client:
        enterprise = draft(
            "川厨匠",
            cultivating_body={
                "type": "enterprise",
                "name": "川厨餐饮管理有限公司",
                "credit_code": "91350100M000100Y43",
            },
            training_bases=[{"name": "成都川菜烹饪培训基地", "division_code": "510104"}],
            spokespersons=["张师傅"],
            trademark_number="第12345678号",
        )
        created = contract.check(
            await client.post("/api/v1/brands", headers=officer, json=enterprise), "post", "/api/v1/brands"
        )
        assert created.keys() == BRAND_KEYS
        assert (created["cultivating_body_credit_code"], created["trademark_number"]) == (
            "91350100M000100Y43",
            "12345678",
        )
        url, one = f"/api/v1/brands/{created['id']}", "/api/v1/brands/{brand_id}"
        changed = await client.patch(url, headers=officer, json={"version": 1, "people_trained": 1})
        assert contract.check(changed, "patch", one).keys() == BRAND_KEYS
        recognised = await client.post(f"{url}/recognise", headers=officer, json={"version": 2})
        assert contract.check(recognised, "post", one + "/recognise").keys() == BRAND_KEYS
        shown = contract.check(await client.get(url), "get", one)
        assert shown == recognised.json() and shown["recognised_at"].endswith("Z")
        proposal = (await client.post("/api/v1/brands", headers=officer, json=draft())).json()
        revoked = await client.post(
            f"/api/v1/brands/{proposal['id']}/revoke", headers=officer, json={"version": 1, "reason": "撤回"}
        )
        assert contract.check(revoked, "post", one + "/revoke")["revoked_at"] is not None

        page = await client.get("/api/v1/brands", params={"status": ["recognised", "revoked"], "limit": 2})
        searched = contract.check(page, "get", "/api/v1/brands")
        assert searched.keys() == {"items", "next_cursor", "total"} and searched["total"] == 3
        assert all(item.keys() == BRAND_KEYS for item in searched["items"]) and searched["next_cursor"]
        partner = contract.check(await client.get("/api/v1/brands/500000-B-000001"), "get", one)
        # a seeded time keeps the form LaborNet writes (zero microseconds included), not a re-serialised one
        assert partner["registered_at"] == format_time(T0) and partner["training_bases"] == [
            {"name": "渝中基地", "division_code": None}
        ]

        stats = contract.check(await client.get("/api/v1/brands/stats"), "get", "/api/v1/brands/stats")
        assert stats.keys() == {"statuses", "total", "provinces", "categories"}
        assert stats["total"].keys() == SUM_KEYS | {"name_conflicts"}
        assert all(
            p.keys() == SUM_KEYS | {"province", "name", "name_conflicts", "levels", "categories"}
            for p in stats["provinces"]
        )
        assert all(c.keys() == SUM_KEYS | {"category", "name", "provinces"} for c in stats["categories"])
        assert stats["provinces"][0]["levels"].keys() == {"national", "provincial", "city-county"}
        categories = contract.check(await client.get("/api/v1/categories"), "get", "/api/v1/categories")
        assert categories.keys() == {"items"} and categories["items"][0].keys() == {"code", "zh", "en"}

        period = {"start": (today + timedelta(days=7)).isoformat(), "end": (today + timedelta(days=90)).isoformat()}
        body = {
            "brand_id": "500000-B-000001",
            "workers": 30,
            "division_code": "510104",
            "period": period,
            "conditions": "月薪6000元，包住宿",
            "contact": "成都市就业局 028-86000000",
        }
        posted = contract.check(
            await client.post("/api/v1/demands", headers=officer, json=body), "post", "/api/v1/demands"
        )
        assert posted.keys() == DEMAND_KEYS and posted["period_start"] == period["start"]
        demand_url = "/api/v1/demands/{demand_id}"
        fetched = contract.check(
            await client.get(f"/api/v1/demands/{posted['id']}", headers=officer), "get", demand_url
        )
        assert fetched == posted
    await seed(settings.database_url, demands=(received_demand(created["id"]),))
    async with serving(create_app(settings)) as client:
        answer = {"decision": "accepted", "workers_offered": 20, "note": "4月到岗"}
        answered = await client.post("/api/v1/demands/330000-D-000001/answer", headers=officer, json=answer)
        assert contract.check(answered, "post", demand_url + "/answer").keys() == DEMAND_KEYS
        assert (answered.json()["side"], answered.json()["answered_at"].endswith("Z")) == ("received", True)
        listed = contract.check(
            await client.get("/api/v1/demands", headers=officer, params={"limit": 1}), "get", "/api/v1/demands"
        )
        assert listed.keys() == {"items", "next_cursor"} and listed["next_cursor"]
        assert listed["items"][0].keys() == DEMAND_KEYS


async def test_a_client_sends_back_the_shape_it_read_and_the_deprecated_forms_still_work(
    settings: Settings, officer: dict[str, str]
) -> None:
    today = today_in_china()
    start, end = (today + timedelta(days=7)).isoformat(), (today + timedelta(days=90)).isoformat()
    await seed(settings.database_url, partner_brand(1, "巴渝大嫂"))
    async with serving(create_app(settings)) as client:
        nested = (await client.post("/api/v1/brands", headers=officer, json=draft())).json()
        # a brand as read, with a new name, registers another brand: every field it shows under a draft's name
        read = (await client.get(f"/api/v1/brands/{nested['id']}")).json()
        as_read = {name: read[name] for name in BrandDraft.model_fields if name in read} | {"name_zh": "川菜厨娘"}
        assert {"cultivating_body_type", "cultivating_body_name", "cultivating_body_credit_code"} <= as_read.keys()
        flat = await client.post("/api/v1/brands", headers=officer, json=as_read)
        assert flat.status_code == 201, flat.text
        shown = {k: v for k, v in flat.json().items() if k not in ("id", "name_zh", "display_name")}
        assert shown | {"registered_at": None, "updated_at": None} == {
            k: v for k, v in read.items() if k not in ("id", "name_zh", "display_name")
        } | {"registered_at": None, "updated_at": None}

        url = f"/api/v1/brands/{flat.json()['id']}"
        body = {"cultivating_body_type": "enterprise", "cultivating_body_name": "川厨餐饮管理有限公司"}
        problem = assert_problem(await client.patch(url, headers=officer, json={"version": 1, **body}), 422)
        assert fields_of(problem) == ["cultivating_body_credit_code"]
        body["cultivating_body_credit_code"] = "91350100M000100Y43"
        changed = await client.patch(url, headers=officer, json={"version": 1, **body})
        assert changed.status_code == 200, changed.text
        assert {k: changed.json()[k] for k in body} == body
        for wrong, detail in [
            ({"cultivating_body_name": "川厨"}, "cultivating_body_type missing"),
            ({"cultivating_body_type": None}, "cannot be removed"),
            ({"cultivating_body": None}, "cannot be removed"),
            ({**body, "cultivating_body": {"type": "regional-public", "name": "x"}}, "not both"),
        ]:
            assert_problem(await client.patch(url, headers=officer, json={"version": 2, **wrong}), 422, detail)
        back = {"type": "regional-public", "name": "四川省人力资源和社会保障厅"}
        deprecated = await client.patch(url, headers=officer, json={"version": 2, "cultivating_body": back})
        assert [deprecated.json()[k] for k in body] == ["regional-public", "四川省人力资源和社会保障厅", None]
        assert_problem(
            await client.post(
                "/api/v1/brands",
                headers=officer,
                json=as_read | {"name_zh": "川菜娘子", **body} | {"cultivating_body_credit_code": None},
            ),
            422,
        )

        demand = {
            "brand_id": "500000-B-000001",
            "workers": 30,
            "division_code": "510104",
            "conditions": "月薪6000元，包住宿",
            "contact": "成都市就业局 028-86000000",
        }
        by_fields = await client.post(
            "/api/v1/demands", headers=officer, json=demand | {"period_start": start, "period_end": end}
        )
        by_object = await client.post(
            "/api/v1/demands", headers=officer, json=demand | {"period": {"start": start, "end": end}}
        )
        assert (by_fields.status_code, by_object.status_code) == (201, 201), (by_fields.text, by_object.text)
        for posted in (by_fields.json(), by_object.json()):
            assert (posted["period_start"], posted["period_end"]) == (start, end)
        for wrong, field in [
            ({"period_start": "2020-01-01", "period_end": end}, "period_start"),
            ({"period_start": start, "period_end": "2020-01-01"}, "period_end"),
            ({"period_start": start}, "body"),
            ({}, "body"),
            ({"period_start": start, "period_end": end, "period": {"start": start, "end": end}}, "body"),
        ]:
            problem = assert_problem(await client.post("/api/v1/demands", headers=officer, json=demand | wrong), 422)
            assert fields_of(problem) == [field], (wrong, problem)

    schema = create_app(settings).openapi()["components"]["schemas"]
    for model, deprecated in [
        ("BrandDraft", "cultivating_body"),
        ("BrandChanges", "cultivating_body"),
        ("DemandRequest", "period"),
    ]:
        field = schema[model]["properties"][deprecated]
        assert field["deprecated"] is True and field["description"].startswith("Deprecated"), (model, field)


def test_the_documented_examples_are_answers_the_schemas_accept(settings: Settings) -> None:
    document = create_app(settings).openapi()
    checked = 0
    for name in ("Brand", "BrandPage", "BrandStatistics", "CategoryList", "Demand", "DemandPage"):
        schema = document["components"]["schemas"][name]
        validator = Draft202012Validator(
            {**schema, "components": document["components"]}, format_checker=FormatChecker()
        )
        for example in schema["examples"]:
            assert list(validator.iter_errors(example)) == [], name
            checked += 1
    brand = document["components"]["schemas"]["Brand"]["examples"][0]
    assert brand.keys() == BRAND_KEYS and checked == 6

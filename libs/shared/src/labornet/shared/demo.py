"""Demo data and the smoke story, both through the public HTTP APIs of a running federation only.

``load_demo`` fills a fresh federation with a small realistic data set that exercises every service: vacancies
posted in every province, Sichuan's insured persons with contribution histories and a transfer to Zhejiang in
progress, recognised labour brands, a wage-arrears case referred from Sichuan to Jiangsu, Sichuan workers' applications
to Zhejiang vacancies (one hired), a Spring Breeze Action recruitment event organised by Chongqing with Sichuan,
and a special train of workers from Sichuan to Zhejiang answering a brand demand. It runs once per
data directory (``demo-loaded.json`` records what was created) and skips any province not in the federation.

``smoke`` walks one story across nodes and fails loudly at the first step that does not happen: a vacancy posted
in one province found by search in another; an insurance relationship moved from one province to another with
the officer's answer, the receipt and the settlement; a brand recognised at home and listed elsewhere; a rights
case referred, accepted and resolved with the same timeline on both nodes; a Sichuan worker applying to the Zhejiang
vacancy, hired there, the vacancy's open headcount lower in Sichuan and both provinces counting the placement; a
recruitment event with a Sichuan registration reaching its organiser; a dispatch confirmed with a difference.

Tokens are minted with each node's dev issuer key (``labornet token``), so this is for federations started by
``labornet up``, not for production nodes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from labornet.shared.auth import issue_token
from labornet.shared.identifiers import make_credit_code, make_resident_id
from labornet.shared.settings import Settings
from labornet.shared.signing import load_private_key

SC, ZJ, JS, CQ = "510000", "330000", "320000", "500000"


class DemoError(RuntimeError):
    """A demo or smoke step failed; the message says which and why."""


def credit_code(division: str, number: int) -> str:
    return make_credit_code(f"91{division}MA{number:07d}")


@dataclass
class FederationClient:
    """HTTP access to every service of a running federation, as any role of any province."""

    document: dict[str, Any]
    data_dir: Path
    http: httpx.AsyncClient
    _tokens: dict[tuple[str, str, str], str] = field(default_factory=dict)

    @classmethod
    def open(cls, data_dir: Path, timeout_s: float = 10.0) -> FederationClient:
        path = data_dir / "federation.json"
        try:
            document = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise DemoError(f"{path}: cannot read the federation description ({exc}); is the federation up?") from exc
        return cls(document, data_dir, httpx.AsyncClient(timeout=timeout_s))

    @property
    def provinces(self) -> list[str]:
        return list(self.document["provinces"])

    def url(self, province: str, service: str) -> str:
        return str(self.document["provinces"][province]["services"][service])

    def token(self, province: str, role: str, sub: str) -> dict[str, str]:
        key = (province, role, sub)
        if key not in self._tokens:
            settings = Settings(province=province, data_dir=self.data_dir)
            assert settings.keys_dir is not None and settings.auth_issuer is not None
            self._tokens[key] = issue_token(
                load_private_key(settings.keys_dir / "token.key"),
                sub=sub,
                province=province,
                roles=[role],
                issuer=settings.auth_issuer,
                audience=settings.auth_audience,
                ttl_s=3600,
            )
        return {"Authorization": f"Bearer {self._tokens[key]}"}

    def officer(self, province: str) -> dict[str, str]:
        return self.token(province, "officer", f"officer-{province}")

    async def call(
        self,
        method: str,
        province: str,
        service: str,
        path: str,
        *,
        expect: tuple[int, ...] = (200, 201),
        **kwargs: Any,
    ) -> Any:
        response = await self.http.request(method, self.url(province, service) + path, **kwargs)
        if response.status_code not in expect:
            raise DemoError(
                f"{method} {service}@{province} {path}: HTTP {response.status_code} (expected {expect}): "
                f"{response.text[:500]}"
            )
        return response.json() if response.content else None

    async def until(
        self, what: str, check: Callable[[], Awaitable[Any]], timeout_s: float = 30.0, interval_s: float = 0.1
    ) -> Any:
        """Poll ``check`` until it returns something truthy; the value, or :class:`DemoError` naming ``what``."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = await check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise DemoError(f"timed out after {timeout_s:.0f}s waiting for: {what}")
            await asyncio.sleep(interval_s)

    async def aclose(self) -> None:
        await self.http.aclose()


# Demo data -------------------------------------------------------------------------------------------------

# (province, city division, employer, title, occupation, salary min, max, type, target groups, skills, brand)
VACANCIES: list[tuple[str, str, str, str, str, int, int, str, list[str], list[str]]] = [
    (ZJ, "330100", "杭州川味轩餐饮有限公司", "川菜厨师 Sichuan chef", "5120", 7000, 11000, "full-time",
     ["migrant-workers"], ["川菜", "刀工"]),
    (ZJ, "330200", "宁波港鑫物流有限公司", "货车司机 truck driver (A2)", "8332", 9000, 13000, "full-time",
     ["migrant-workers"], ["A2驾照"]),
    (JS, "320500", "苏州精密电子科技有限公司", "电子设备装配工 electronics assembler", "8212", 5500, 7500, "full-time",
     ["migrant-workers", "college-graduates"], ["SMT", "焊接"]),
    (JS, "320100", "南京城建安装工程有限公司", "电工 electrician", "7411", 8000, 12000, "full-time",
     ["migrant-workers"], ["低压电工证"]),
    ("350000", "350200", "厦门鹭岛鞋服有限公司", "缝纫工 sewing machinist", "8153", 5000, 7000, "full-time",
     ["migrant-workers", "lifted-out-of-poverty"], ["平车"]),
    (CQ, "500100", "重庆巴渝家政服务有限公司", "家政服务员 domestic helper", "9111", 4500, 6500, "full-time",
     ["migrant-workers"], ["育婴", "保洁"]),
    (SC, "510100", "成都天府软件园有限公司", "软件开发人员 software developer", "2512", 12000, 20000, "full-time",
     ["college-graduates"], ["Python", "Java"]),
    ("520000", "520100", "贵阳黔茶茶业有限公司", "评茶员 tea taster", "7515", 4000, 6000, "seasonal",
     ["lifted-out-of-poverty"], ["绿茶"]),
    ("530000", "530100", "昆明滇花农业有限公司", "花卉种植工 flower grower", "6111", 3800, 5200, "seasonal",
     ["migrant-workers"], ["鲜切花"]),
    ("640000", "640100", "银川塞上枸杞有限公司", "枸杞采摘工 wolfberry picker", "9211", 3500, 5000, "seasonal",
     ["migrant-workers"], ["采摘"]),
    ("540000", "540100", "拉萨雪域酒店管理有限公司", "餐厅服务员 restaurant server", "5131", 4200, 5800, "full-time",
     ["college-graduates"], ["藏语", "普通话"]),
]  # fmt: skip


def vacancy_body(row: tuple[str, str, str, str, str, int, int, str, list[str], list[str]], n: int) -> dict[str, Any]:
    _province, division, employer, title, occupation, low, high, kind, groups, skills = row
    return {
        "employer": {"name": employer, "credit_code": credit_code(division, n)},
        "title": title,
        "description": f"{employer}招聘{title.split()[0]}，包住宿，按月足额发放工资。",
        "occupation_code": occupation,
        "division_code": division,
        "headcount": 5 + n % 4,
        "salary": {"min": low, "max": high},
        "employment_type": kind,
        "target_groups": groups,
        "skills": skills,
        "contact": f"0{division[:3]}-8800{n:04d}",
        "closing_date": (date.today() + timedelta(days=60)).isoformat(),
    }


def insured_person(n: int, *, claiming: bool) -> dict[str, Any]:
    return {
        "resident_id": make_resident_id("511602", date(1985 + n, 3, 7), 100 + n),
        "name": ["王晓明", "李秀英", "张建国", "刘芳"][n % 4],
        "hukou_division": "511602",
        "status": "unemployed-claiming" if claiming else "insured-employed",
        "employer_credit_code": None if claiming else credit_code("510100", 900 + n),
        "months_used": 0,
        "benefit_months_paid": 2 if claiming else 0,
        "periods": [
            {"start_month": "2016-01", "end_month": "2019-12", "kind": "actual"},
            {"start_month": "2020-01", "end_month": "2021-06", "kind": "former-migrant"},
            {"start_month": "2021-07", "end_month": "2024-12", "kind": "actual"},
        ],
    }


BRANDS: list[dict[str, Any]] = [
    {"origin_province": SC, "name_zh": "川厨师", "name_en": "Sichuan Chefs", "division_code": "510100",
     "category": "catering", "level": "provincial", "skills": ["川菜", "面点"], "people_trained": 52000,
     "jobs_supported": 180000, "destination_regions": [ZJ, JS, "350000"]},
    {"origin_province": SC, "name_zh": "川妹子", "name_en": "Sichuan Sisters", "division_code": "510100",
     "category": "domestic-services", "level": "provincial", "skills": ["家政", "育婴"], "people_trained": 30000,
     "jobs_supported": 90000, "destination_regions": [ZJ, JS]},
    {"origin_province": CQ, "name_zh": "巴渝大嫂", "name_en": "Bayu Housekeepers", "division_code": "500100",
     "category": "domestic-services", "level": "national", "skills": ["家政", "护理"], "people_trained": 41000,
     "jobs_supported": 120000, "destination_regions": [ZJ, JS]},
]  # fmt: skip


PUBLIC_BODIES = {SC: "四川省人力资源和社会保障厅", CQ: "重庆市人力资源和社会保障局"}


async def post_demand(client: FederationClient, brand_id: str, *, at: str, workers: int) -> dict[str, Any]:
    """A demand from province ``at`` for a partner's brand, once the brand has reached ``at``'s replica."""

    async def replicated() -> bool:
        response = await client.http.get(client.url(at, "brands") + f"/api/v1/brands/{brand_id}")
        return response.status_code == 200 and response.json()["status"] == "recognised"

    await client.until(f"brand {brand_id} in the replica of {at}", replicated)
    start = date.today() + timedelta(days=30)
    demand: dict[str, Any] = await client.call(
        "POST",
        at,
        "brands",
        "/api/v1/demands",
        headers=client.officer(at),
        json={
            "brand_id": brand_id,
            "workers": workers,
            "division_code": DEMAND_CITIES[at],
            "period": {"start": start.isoformat(), "end": (start + timedelta(days=180)).isoformat()},
            "conditions": "包吃住，月薪 7000–11000 元，往返路费报销，岗前培训一周",
            "contact": "人社局劳务协作科 0571-87000000",
        },
    )
    return demand


DEMAND_CITIES = {ZJ: "330100", JS: "320500", CQ: "500100", SC: "510100"}


async def load_demo(client: FederationClient, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Create the demo data set once; returns (and records) what was created."""
    marker = client.data_dir / "demo-loaded.json"
    if marker.exists():
        log(f"demo data already loaded ({marker}); reusing it")
        loaded: dict[str, Any] = json.loads(marker.read_text("utf-8"))
        return loaded
    present = set(client.provinces)
    created: dict[str, Any] = {"vacancies": [], "persons": [], "transfers": [], "brands": [], "cases": []}

    for n, row in enumerate(VACANCIES):
        if row[0] in present:
            body = vacancy_body(row, n)
            vacancy = await client.call(
                "POST", row[0], "jobs", "/api/v1/vacancies", headers=client.officer(row[0]), json=body
            )
            created["vacancies"].append(vacancy["id"])
    log(f"demo: {len(created['vacancies'])} vacancies published")

    if SC in present:
        for n in range(4):
            person = insured_person(n, claiming=n % 2 == 0)
            await client.call(
                "POST", SC, "insurance", "/api/v1/insured-persons", headers=client.officer(SC), json=person
            )
            created["persons"].append(person["resident_id"])
        if ZJ in present:
            mover = insured_person(0, claiming=True)
            case = await client.call(
                "POST",
                ZJ,
                "insurance",
                "/api/v1/transfers",
                headers=client.token(ZJ, "worker", mover["resident_id"]),
                json={"from_province": SC, "reason": "claimant-relocation", "name": mover["name"]},
            )
            created["transfers"].append(case["id"])
        log(f"demo: {len(created['persons'])} insured persons in Sichuan, {len(created['transfers'])} transfer filed")

    for brand in BRANDS:
        origin = brand["origin_province"]
        if origin in present:
            created["brands"].append(await register_and_recognise(client, origin, brand))
    log(f"demo: {len(created['brands'])} labour brands recognised")
    if created["brands"] and ZJ in present and BRANDS[0]["origin_province"] in present:
        demand = await post_demand(client, created["brands"][0], at=ZJ, workers=40)
        created["demands"] = [demand["id"]]
        log(f"demo: Zhejiang asks Sichuan for 40 workers of brand {created['brands'][0]} (demand {demand['id']})")

    if SC in present and JS in present:
        created["cases"].append((await file_wage_case(client, 7))["id"])
        log("demo: 1 wage-arrears case filed in Sichuan against a Jiangsu employer")

    if SC in present and ZJ in present:
        await load_matchmaking(client, created, log)

    marker.write_text(json.dumps(created, indent=2, ensure_ascii=False) + "\n", "utf-8")
    return created


# Matchmaking beyond postings: applications, recruitment events, organised dispatch ----------------------------

APPLICANTS = [
    ("王小明", "13812345678", ["川菜", "刀工"], ["中式烹调师四级"], 6),
    ("李春花", "13987654321", ["川菜", "面点"], ["中式面点师五级"], 3),
]


def applicant_token(client: FederationClient, n: int) -> dict[str, str]:
    return client.token(SC, "worker", make_resident_id("511602", date(1988 + n % 20, 5, 20), 100 + n % 900))


def application_body(n: int, note: str) -> dict[str, Any]:
    name, phone, skills, certificates, years = APPLICANTS[n % len(APPLICANTS)]
    return {
        "name": name,
        "phone": phone,
        "skills": skills,
        "certificates": certificates,
        "experience_years": years,
        "expected_salary": 8000,
        "available_from": (date.today() + timedelta(days=14)).isoformat(),
        "target_groups": ["migrant-workers"],
        "cover_note": note,
    }


async def in_replica(client: FederationClient, province: str, vacancy_id: str) -> dict[str, Any]:
    """The vacancy as ``province``'s replica holds it, once it has arrived."""

    async def held() -> Any:
        response = await client.http.get(client.url(province, "jobs") + f"/api/v1/vacancies/{vacancy_id}")
        return response.json() if response.status_code == 200 else None

    found: dict[str, Any] = await client.until(f"vacancy {vacancy_id} in the replica of {province}", held)
    return found


async def apply_from_sichuan(client: FederationClient, vacancy_id: str, n: int, note: str) -> dict[str, Any]:
    """A Sichuan worker applies to a Zhejiang vacancy; returns the application once Zhejiang holds it."""
    await in_replica(client, SC, vacancy_id)
    made: dict[str, Any] = await client.call(
        "POST",
        SC,
        "jobs",
        f"/api/v1/vacancies/{vacancy_id}/applications",
        headers=applicant_token(client, n),
        json=application_body(n, note),
    )

    async def received() -> Any:
        response = await client.http.get(
            client.url(ZJ, "jobs") + f"/api/v1/applications/{made['id']}", headers=client.officer(ZJ)
        )
        return response.json() if response.status_code == 200 else None

    held: dict[str, Any] = await client.until(f"application {made['id']} at Zhejiang", received)
    return held


async def move_to_hired(client: FederationClient, application: dict[str, Any]) -> dict[str, Any]:
    """Zhejiang's officer shortlists, interviews, offers and hires, each step at the version it read."""
    path = f"/api/v1/applications/{application['id']}"
    officer = client.officer(ZJ)
    moment = (date.today() + timedelta(days=3)).isoformat() + "T10:00:00+08:00"
    steps: list[tuple[str, dict[str, Any]]] = [
        ("shortlist", {}),
        ("interview", {"at": moment, "place": "杭州市西湖区文三路 90 号 川味轩人事部"}),
        ("offer", {"salary": 9000, "start_date": (date.today() + timedelta(days=20)).isoformat()}),
        ("hire", {"note": "已签订劳动合同"}),
    ]
    current = application
    for step, body in steps:
        current = await client.call(
            "POST", ZJ, "jobs", f"{path}/{step}", headers=officer, json=body | {"version": current["version"]}
        )
    return current


def dispatch_body(*, demand_id: str | None, fair_id: str | None, headcount: int, departure: date) -> dict[str, Any]:
    return {
        "destination_province": ZJ,
        "brand_demand_id": demand_id,
        "fair_id": fair_id,
        "employers": [
            {
                "name": "杭州川味轩餐饮有限公司",
                "credit_code": credit_code("330100", 0),
                "division_code": "330100",
                "site": "杭州市西湖区文三路 90 号",
            }
        ],
        "headcount": headcount,
        "transport": "special-train",
        "departure_at": departure.isoformat() + "T08:30:00+08:00",
        "departure_place": "成都东站",
        "expected_arrival_on": (departure + timedelta(days=1)).isoformat(),
        "escort": {"name": "张建国", "phone": "13700001111"},
        "note": "川厨师品牌劳务专列，岗前培训一周后出发",
    }


def fair_body(organiser: str, co_organiser: str) -> dict[str, Any]:
    start = date.today() + timedelta(days=10)
    return {
        "title": "春风行动 川渝劳务协作专场招聘会",
        "description": "川渝两地联合举办，现场签约，提供包车返岗。",
        "campaign": "spring-breeze-action",
        "co_organisers": [co_organiser],
        "mode": "venue",
        "venue": {"address": "重庆市渝中区人力资源市场一楼", "division_code": "500103"}
        if organiser == CQ
        else {"address": "杭州市上城区人力资源市场", "division_code": "330102"},
        "starts_on": start.isoformat(),
        "ends_on": (start + timedelta(days=2)).isoformat(),
        "capacity": 2000,
    }


async def organise_fair(client: FederationClient, organiser: str, vacancy_ids: dict[str, list[str]]) -> dict[str, Any]:
    """A Spring Breeze Action event by ``organiser`` with Sichuan co-organising, each listing its own vacancies."""
    fair: dict[str, Any] = await client.call(
        "POST", organiser, "jobs", "/api/v1/fairs", headers=client.officer(organiser), json=fair_body(organiser, SC)
    )

    async def at_sichuan() -> Any:
        response = await client.http.get(client.url(SC, "jobs") + f"/api/v1/fairs/{fair['id']}")
        return response.json() if response.status_code == 200 else None

    await client.until(f"recruitment event {fair['id']} at Sichuan", at_sichuan)
    for province, ids in vacancy_ids.items():
        for vacancy_id in ids:
            await in_replica(client, province, vacancy_id)
        if ids:
            await client.call(
                "PUT",
                province,
                "jobs",
                f"/api/v1/fairs/{fair['id']}/vacancies",
                headers=client.officer(province),
                json={"vacancy_ids": ids},
            )
    return fair


async def load_matchmaking(client: FederationClient, created: dict[str, Any], log: Callable[[str], None]) -> None:
    """Applications of Sichuan workers to Zhejiang vacancies (one hired), a recruitment event, a dispatch."""
    zhejiang = [vacancy_id for vacancy_id in created["vacancies"] if vacancy_id.startswith(ZJ)]
    applications = [
        await apply_from_sichuan(client, zhejiang[0], 0, "在成都做过六年川菜厨师。"),
        await apply_from_sichuan(client, zhejiang[0], 1, "会做川味面点，可以马上到岗。"),
    ]
    hired = await move_to_hired(client, applications[0])
    created["applications"] = [application["id"] for application in applications]
    log(f"demo: 2 Sichuan workers applied to Zhejiang vacancy {zhejiang[0]}; {hired['id']} hired")

    organiser = CQ if CQ in client.provinces else ZJ
    own = {
        organiser: [v for v in created["vacancies"] if v.startswith(organiser)][:2],
        SC: [v for v in created["vacancies"] if v.startswith(SC)][:2],
    }
    fair = await organise_fair(client, organiser, own)
    created["fairs"] = [fair["id"]]
    registration = await client.call(
        "POST",
        SC,
        "jobs",
        f"/api/v1/fairs/{fair['id']}/registrations",
        headers=applicant_token(client, 1),
        json={"name": APPLICANTS[1][0], "phone": APPLICANTS[1][1], "occupations": ["5120"], "note": "想找厨师工作"},
    )
    log(
        f"demo: recruitment event {fair['id']} organised by {organiser} with Sichuan; registration {registration['id']}"
    )

    demand = (created.get("demands") or [None])[0]
    dispatch = await client.call(
        "POST",
        SC,
        "jobs",
        "/api/v1/dispatches",
        headers=client.officer(SC),
        json=dispatch_body(
            demand_id=demand,
            fair_id=None if demand else fair["id"],
            headcount=40,
            departure=date.today() + timedelta(days=7),
        ),
    )
    created["dispatches"] = [dispatch["id"]]
    log(f"demo: special train {dispatch['id']} of 40 workers from Sichuan to Zhejiang announced")


async def register_and_recognise(client: FederationClient, origin: str, brand: dict[str, Any]) -> str:
    body = {k: v for k, v in brand.items() if k != "origin_province"}
    body.setdefault(
        "cultivating_body", {"type": "regional-public", "name": PUBLIC_BODIES.get(origin, "人力资源和社会保障厅")}
    )
    body.setdefault("description", f"{brand['name_zh']}：区域劳务品牌，技能扎实、口碑良好。")
    officer = client.officer(origin)
    registered = await client.call("POST", origin, "brands", "/api/v1/brands", headers=officer, json=body)
    recognised = await client.call(
        "POST",
        origin,
        "brands",
        f"/api/v1/brands/{registered['id']}/recognise",
        headers=officer,
        json={"version": registered["version"]},
    )
    return str(recognised["id"])


def wage_case_body(n: int) -> dict[str, Any]:
    """A Sichuan construction worker's wage-arrears complaint against a Jiangsu employer."""
    return {
        "complainant": {"name": "赵大勇", "phone": "13800138000", "home_province": SC},
        "sector": "construction",
        "category": "wage-arrears",
        "employer": {
            "name": "苏州吴中建筑劳务有限公司",
            "credit_code": credit_code("320500", 500 + n),
            "address": "江苏省苏州市吴中区东吴北路 100 号",
            "province": JS,
        },
        "work_place": {"division_code": "320500", "site": "吴中区东吴北路安置房项目"},
        "period": {"start": "2025-03-01", "end": "2025-12-31"},
        "amount_owed": "86400.00",
        "workers_affected": 12,
        "evidence": [
            {"name": "考勤表.pdf", "sha256": hashlib.sha256(f"attendance-{n}".encode()).hexdigest(), "size": 48213},
            {"name": "工资欠条.jpg", "sha256": hashlib.sha256(f"iou-{n}".encode()).hexdigest(), "size": 913402},
        ],
        "facts": "2025 年 3 月至 12 月在苏州吴中区项目做钢筋工，包工头拖欠 12 人工资共 86400 元。",
    }


async def file_wage_case(client: FederationClient, n: int) -> dict[str, Any]:
    complainant = make_resident_id("511602", date(1979, 8, 15), (300 + n) % 1000)
    body = wage_case_body(n)
    case: dict[str, Any] = await client.call(
        "POST", SC, "rights", "/api/v1/cases", headers=client.token(SC, "worker", complainant), json=body
    )
    return case


# The smoke story ---------------------------------------------------------------------------------------------


async def smoke(client: FederationClient, log: Callable[[str], None] = print) -> dict[str, float]:
    """Walk one story across nodes through the public APIs; returns seconds per step."""
    for needed in (SC, ZJ):
        if needed not in client.provinces:
            raise DemoError(f"the smoke story needs Sichuan and Zhejiang; this federation has {client.provinces}")
    marker = uuid.uuid4().hex[:8]
    timings: dict[str, float] = {}

    started = time.monotonic()
    body = vacancy_body(VACANCIES[0], 77) | {"title": f"川菜厨师 smoke {marker}"}
    vacancy = await client.call("POST", ZJ, "jobs", "/api/v1/vacancies", headers=client.officer(ZJ), json=body)

    async def found_in_sichuan() -> bool:
        page = await client.call("GET", SC, "jobs", "/api/v1/vacancies", params={"q": marker})
        return [item["id"] for item in page["items"]] == [vacancy["id"]]

    await client.until("the Zhejiang vacancy in Sichuan's search", found_in_sichuan)
    timings["vacancy Zhejiang → Sichuan search"] = time.monotonic() - started
    log(f"smoke: vacancy {vacancy['id']} posted in Zhejiang, found by search in Sichuan")

    started = time.monotonic()
    sequence = int(marker, 16) % 900 + 50
    mover = insured_person(0, claiming=True) | {
        "resident_id": make_resident_id("511602", date(1990, 1, 1) + timedelta(days=sequence), sequence)
    }
    await client.call("POST", SC, "insurance", "/api/v1/insured-persons", headers=client.officer(SC), json=mover)
    worker = client.token(ZJ, "worker", mover["resident_id"])
    filed = await client.call(
        "POST",
        ZJ,
        "insurance",
        "/api/v1/transfers",
        headers=worker,
        json={"from_province": SC, "reason": "claimant-relocation", "name": mover["name"]},
    )

    async def letter_in_sichuan() -> Any:
        listed = await client.call(
            "GET", SC, "insurance", "/api/v1/transfers", params={"side": "sending"}, headers=client.officer(SC)
        )
        return next((c for c in listed["items"] if c["peer_case"] == filed["id"]), None)

    sending = await client.until("the contact letter at Sichuan", letter_in_sichuan)
    await client.call(
        "POST",
        SC,
        "insurance",
        f"/api/v1/transfers/{sending['id']}/answer",
        headers=client.officer(SC),
        json={"decision": "send-sheet"},
    )

    async def completed() -> Any:
        case = await client.call("GET", ZJ, "insurance", f"/api/v1/transfers/{filed['id']}", headers=worker)
        return case if case["state"] == "completed" else None

    done = await client.until("the transfer completed in Zhejiang", completed)

    async def settled() -> Any:
        listed = await client.call("GET", SC, "insurance", "/api/v1/settlements", headers=client.officer(SC))
        return next((s for s in listed["items"] if s["peer_case"] == filed["id"]), None)

    settlement = await client.until("the settlement at Sichuan", settled)
    timings["insurance transfer Sichuan → Zhejiang"] = time.monotonic() - started
    log(
        f"smoke: transfer {filed['id']} completed; {done['sheet']['cumulative_months']} months carried, "
        f"settlement of {settlement['amount']} CNY due in Sichuan"
    )

    started = time.monotonic()
    brand = {
        "origin_province": SC,
        "name_zh": f"川建工{marker}",
        "division_code": "510100",
        "category": "construction",
        "level": "provincial",
        "skills": ["钢筋", "砌筑"],
    }
    brand_id = await register_and_recognise(client, SC, brand)

    async def brand_in_zhejiang() -> bool:
        response = await client.http.get(client.url(ZJ, "brands") + f"/api/v1/brands/{brand_id}")
        return response.status_code == 200 and response.json()["status"] == "recognised"

    await client.until("the recognised Sichuan brand in Zhejiang", brand_in_zhejiang)
    timings["brand Sichuan → Zhejiang"] = time.monotonic() - started
    log(f"smoke: brand {brand_id} recognised in Sichuan, listed in Zhejiang")

    started = time.monotonic()
    demand = await post_demand(client, brand_id, at=ZJ, workers=25)

    async def demand_in_sichuan() -> Any:
        response = await client.http.get(
            client.url(SC, "brands") + f"/api/v1/demands/{demand['id']}", headers=client.officer(SC)
        )
        return response.json() if response.status_code == 200 else None

    await client.until("Zhejiang's demand at Sichuan", demand_in_sichuan)
    await client.call(
        "POST",
        SC,
        "brands",
        f"/api/v1/demands/{demand['id']}/answer",
        headers=client.officer(SC),
        json={"decision": "accepted", "workers_offered": 20, "note": "首批 20 人，岗前培训后出发"},
    )

    async def answered_in_zhejiang() -> Any:
        seen = await client.call("GET", ZJ, "brands", f"/api/v1/demands/{demand['id']}", headers=client.officer(ZJ))
        return seen if seen["status"] == "accepted" else None

    answered = await client.until("Sichuan's answer at Zhejiang", answered_in_zhejiang)
    timings["brand demand Zhejiang → Sichuan → Zhejiang"] = time.monotonic() - started
    log(f"smoke: demand {demand['id']} answered by Sichuan: {answered['workers_offered']} workers offered")

    if JS in client.provinces:
        started = time.monotonic()
        case = await file_wage_case(client, sequence)

        async def referred() -> Any:
            response = await client.http.get(
                client.url(JS, "rights") + f"/api/v1/cases/{case['id']}", headers=client.officer(JS)
            )
            return response.json() if response.status_code == 200 else None

        await client.until("the case referred to Jiangsu", referred)
        js_officer = client.officer(JS)
        path = f"/api/v1/cases/{case['id']}"
        await client.call("POST", JS, "rights", path + "/accept", headers=js_officer, json={"note": "已受理"})
        await client.call(
            "POST", JS, "rights", path + "/updates", headers=js_officer, json={"note": "已约谈总包单位，责令限期支付"}
        )
        await client.call(
            "POST",
            JS,
            "rights",
            path + "/resolve",
            headers=js_officer,
            json={"amount_recovered": "86400.00", "workers_paid": 12, "note": "总包单位已代发全部工资"},
        )
        worker = client.token(SC, "worker", case["complainant"]["resident_id"])

        async def resolved_at_home() -> Any:
            seen = await client.call("GET", SC, "rights", path, headers=worker)
            return seen if seen["status"] == "resolved" else None

        at_home = await client.until("the resolved case back at Sichuan", resolved_at_home)
        at_jiangsu = await client.call("GET", JS, "rights", path, headers=js_officer)
        if at_home["timeline"] != at_jiangsu["timeline"]:
            raise DemoError(f"case {case['id']}: the timelines of Sichuan and Jiangsu differ")
        timings["rights case Sichuan → Jiangsu → resolved"] = time.monotonic() - started
        log(
            f"smoke: wage-arrears case {case['id']} referred to Jiangsu, accepted, resolved; "
            f"{len(at_home['timeline'])} timeline entries identical on both nodes"
        )

    started = time.monotonic()
    hired = await smoke_application(client, vacancy["id"], sequence)
    timings["application Sichuan → Zhejiang → hired"] = time.monotonic() - started
    log(f"smoke: application {hired['id']} hired in Zhejiang, seen hired in Sichuan, placement counted on both sides")

    started = time.monotonic()
    dispatch = await smoke_dispatch(client, demand["id"])
    timings["dispatch Sichuan → Zhejiang confirmed"] = time.monotonic() - started
    log(f"smoke: dispatch {dispatch['id']} of 30 confirmed with 29 arrived; Sichuan sees the difference of 1")

    started = time.monotonic()
    fair = await smoke_fair(client, vacancy["id"], sequence)
    timings["recruitment event Zhejiang + Sichuan, registration"] = time.monotonic() - started
    log(f"smoke: recruitment event {fair['id']} listed in Sichuan; a Sichuan registration reached Zhejiang")

    log("smoke: " + "; ".join(f"{name} {seconds:.2f}s" for name, seconds in timings.items()))
    return timings


async def placements_total(client: FederationClient, province: str, direction: str) -> int:
    figures = await client.call(
        "GET", province, "jobs", "/api/v1/placements/statistics", headers=client.officer(province)
    )
    total: int = figures[direction]["total"]
    return total


async def smoke_application(client: FederationClient, vacancy_id: str, sequence: int) -> dict[str, Any]:
    """A Sichuan worker applies to the Zhejiang vacancy and is hired; Sichuan sees it, and one place fewer."""
    outbound, inbound = await placements_total(client, SC, "outbound"), await placements_total(client, ZJ, "inbound")
    application = await apply_from_sichuan(client, vacancy_id, sequence, "smoke: 川菜厨师求职")
    hired = await move_to_hired(client, application)
    worker = applicant_token(client, sequence)

    async def hired_at_home() -> Any:
        seen = await client.call("GET", SC, "jobs", f"/api/v1/applications/{hired['id']}", headers=worker)
        return seen if seen["state"] == "hired" else None

    await client.until("the hire seen by the worker in Sichuan", hired_at_home)

    async def one_place_fewer() -> Any:
        held = await in_replica(client, SC, vacancy_id)
        return held if held["hired"] == 1 and held["open_headcount"] == held["headcount"] - 1 else None

    await client.until("the vacancy's open headcount lower in Sichuan", one_place_fewer)
    if await placements_total(client, SC, "outbound") != outbound + 1:
        raise DemoError("Sichuan's placement statistics did not count its worker hired in Zhejiang")
    if await placements_total(client, ZJ, "inbound") != inbound + 1:
        raise DemoError("Zhejiang's placement statistics did not count the worker it hired from Sichuan")
    return hired


async def smoke_dispatch(client: FederationClient, demand_id: str) -> dict[str, Any]:
    """A special train of 30 from Sichuan answering Zhejiang's demand; Zhejiang confirms 29 arrived."""
    sent = await client.call(
        "POST",
        SC,
        "jobs",
        "/api/v1/dispatches",
        headers=client.officer(SC),
        json=dispatch_body(demand_id=demand_id, fair_id=None, headcount=30, departure=date.today() - timedelta(days=1)),
    )
    path = f"/api/v1/dispatches/{sent['id']}"

    async def announced_at_zhejiang() -> Any:
        response = await client.http.get(client.url(ZJ, "jobs") + path, headers=client.officer(ZJ))
        return response.json() if response.status_code == 200 else None

    received = await client.until("the dispatch announced at Zhejiang", announced_at_zhejiang)
    await client.call(
        "POST",
        ZJ,
        "jobs",
        f"{path}/arrival",
        headers=client.officer(ZJ),
        json={
            "arrived_at": datetime.now(UTC).isoformat(),
            "headcount_received": 29,
            "note": "1 人因家中有事改期出发",
            "version": received["version"],
        },
    )

    async def confirmed_at_sichuan() -> Any:
        seen = await client.call("GET", SC, "jobs", path, headers=client.officer(SC))
        return seen if seen["state"] == "arrived" else None

    seen: dict[str, Any] = await client.until("the arrival confirmed at Sichuan", confirmed_at_sichuan)
    if seen["difference"] != 1:
        raise DemoError(f"dispatch {sent['id']}: Sichuan shows a difference of {seen['difference']}, not 1")
    return seen


async def smoke_fair(client: FederationClient, vacancy_id: str, sequence: int) -> dict[str, Any]:
    """Zhejiang organises an event with Sichuan, lists the smoke vacancy; a Sichuan worker registers."""
    fair = await organise_fair(client, ZJ, {ZJ: [vacancy_id]})

    async def listed_in_sichuan() -> Any:
        seen = await client.call("GET", SC, "jobs", f"/api/v1/fairs/{fair['id']}")
        listed = [vacancy["id"] for listing in seen["listings"] for vacancy in listing["vacancies"]]
        return seen if vacancy_id in listed else None

    await client.until("the event's listing in Sichuan", listed_in_sichuan)
    name, phone, *_ = APPLICANTS[sequence % len(APPLICANTS)]
    registration = await client.call(
        "POST",
        SC,
        "jobs",
        f"/api/v1/fairs/{fair['id']}/registrations",
        headers=applicant_token(client, sequence),
        json={"name": name, "phone": phone, "occupations": ["5120"]},
    )

    async def registered_at_organiser() -> Any:
        listed = await client.call(
            "GET", ZJ, "jobs", f"/api/v1/fairs/{fair['id']}/registrations", headers=client.officer(ZJ)
        )
        return next((r for r in listed["items"] if r["id"] == registration["id"]), None)

    await client.until("the Sichuan registration at Zhejiang", registered_at_organiser)
    return fair

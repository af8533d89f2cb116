"""A partner's view of the contract: a Python client generated from the OpenAPI the nodes serve walks the smoke story.

Sichuan (510000) and Zhejiang (330000) run their jobs, insurance and brands services on a broker of their own. The
clients are generated with openapi-python-client from each service's ``/openapi.json`` during the run, imported, and
used through their typed functions and models only: a Zhejiang officer posts a vacancy and a Sichuan worker finds
it by search; a Sichuan claimant's transfer to Zhejiang completes and the settlement is due in Sichuan; a brand
recognised in Sichuan reaches Zhejiang, whose demand for workers Sichuan accepts.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from labornet.brands.app import create_app as create_brands_app
from labornet.insurance.app import create_app as create_insurance_app
from labornet.jobs.app import create_app as create_jobs_app
from labornet.shared.broker import EmbeddedBroker
from labornet.shared.demo import credit_code, insured_person
from labornet.shared.identifiers import make_resident_id
from labornet.shared.keys import NodeKeys
from labornet.shared.settings import Settings
from labornet.shared.testing import bearer, eventually, serving

pytestmark = pytest.mark.integration

SC, ZJ = "510000", "330000"
APPS = {"jobs": create_jobs_app, "insurance": create_insurance_app, "brands": create_brands_app}
GENERATOR = Path(sys.prefix) / "generator" / "bin" / "openapi-python-client"
GENERATOR_REQUIREMENTS = "tests/contract/requirements-generator.txt"


async def generate_client(spec: dict[str, Any], package: str, into: Path) -> None:
    """openapi-python-client, as a partner runs it, on the document a node served."""
    (into / f"{package}.json").write_text(json.dumps(spec), encoding="utf-8")
    config = into / "generator-config.json"
    config.write_text(json.dumps({"post_hooks": []}))  # no formatting pass: the code only has to run
    process = await asyncio.create_subprocess_exec(
        str(GENERATOR),
        "generate",
        "--path",
        str(into / f"{package}.json"),
        "--output-path",
        str(into / package),
        "--meta",
        "none",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, output.decode()
    assert (into / package / "client.py").exists(), output.decode()


@contextlib.contextmanager
def importable(folder: Path, *packages: str) -> Iterator[None]:
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))
        for name in [m for m in sys.modules if m.split(".")[0] in packages]:
            del sys.modules[name]


def module(name: str) -> ModuleType:
    return importlib.import_module(name)


@pytest.fixture
async def nodes(
    new_database_url: Callable[[], Awaitable[str]],
    federation_dir: Path,
    private_broker: EmbeddedBroker,
) -> AsyncIterator[dict[tuple[str, str], str]]:
    """The base URL of each (province, service) of the two running nodes."""
    async with contextlib.AsyncExitStack() as stack:
        urls: dict[tuple[str, str], str] = {}
        probes: list[httpx.AsyncClient] = []
        for province in (SC, ZJ):
            for service, create_app in APPS.items():
                settings = Settings(  # type: ignore[call-arg]
                    province=province,
                    service=service,
                    data_dir=federation_dir,
                    database_url=await new_database_url(),
                    kafka_bootstrap_servers=private_broker.bootstrap_servers,
                    kafka_session_timeout_ms=3000,
                    kafka_heartbeat_interval_ms=500,
                    log_json=False,
                    inbox_retry_backoff_s=0.05,
                    receipt_wait_s=3.0,
                )
                client = await stack.enter_async_context(serving(create_app(settings)))
                urls[province, service] = str(client.base_url)
                probes.append(client)

        async def all_ready() -> bool:
            return all([(await c.get("/readyz")).status_code == 200 for c in probes])

        await eventually(all_ready, timeout_s=60)
        yield urls


class Partner:
    """The generated clients of each service, and a client of them per role, province and service."""

    def __init__(self, nodes: dict[tuple[str, str], str], keys: dict[str, NodeKeys]) -> None:
        self.nodes, self.keys = nodes, keys
        self.packages = {service: module(f"{service}_client") for service in APPS}

    def models(self, service: str) -> Any:
        return module(f"{service}_client.models")

    def operation(self, service: str, path: str) -> Any:
        """A generated operation module, e.g. ``operation("jobs", "vacancies.search_api_v1_vacancies_get")``."""
        return module(f"{service}_client.api.{path}")

    def as_role(self, province: str, service: str, role: str, sub: str) -> Any:
        token = bearer(self.keys[province], role, sub=sub)["Authorization"].removeprefix("Bearer ")
        return self.packages[service].AuthenticatedClient(base_url=self.nodes[province, service], token=token)

    def anonymous(self, province: str, service: str) -> Any:
        return self.packages[service].Client(base_url=self.nodes[province, service])


async def test_a_generated_client_walks_the_smoke_story(
    nodes: dict[tuple[str, str], str], node_keys: dict[str, NodeKeys], tmp_path: Path
) -> None:
    assert GENERATOR.exists(), f"{GENERATOR} is missing: `make install` installs it from {GENERATOR_REQUIREMENTS}"
    async with httpx.AsyncClient() as http:
        specs = {s: (await http.get(nodes[SC, s] + "/openapi.json")).json() for s in APPS}
    await asyncio.gather(*(generate_client(spec, f"{s}_client", tmp_path) for s, spec in specs.items()))

    with importable(tmp_path, *(f"{s}_client" for s in APPS)):
        partner = Partner(nodes, node_keys)
        marker = uuid.uuid4().hex[:8]
        await vacancy_found_across_provinces(partner, marker)
        await transfer_completes(partner, marker)
        await brand_demand_answered(partner, marker)


async def vacancy_found_across_provinces(partner: Partner, marker: str) -> None:
    """A Zhejiang officer posts a vacancy; a Sichuan worker finds it by search."""
    models = partner.models("jobs")
    publish = partner.operation("jobs", "vacancies.publish_api_v1_vacancies_post")
    search = partner.operation("jobs", "vacancies.search_api_v1_vacancies_get")
    draft = models.VacancyDraft(
        employer_name="杭州川味轩餐饮有限公司",
        employer_credit_code=credit_code("330100", 77),
        title=f"川菜厨师 smoke {marker}",
        occupation_code="5120",
        division_code="330100",
        headcount=5,
        salary_min=7000,
        salary_max=11000,
        employment_type=models.EmploymentType.FULL_TIME,
        target_groups=[models.TargetGroup.MIGRANT_WORKERS],
        skills=["川菜", "刀工"],
        contact="0571-88000077",
        closing_date=date.today() + timedelta(days=60),
    )
    vacancy = await publish.asyncio(client=partner.as_role(ZJ, "jobs", "officer", "zj-officer"), body=draft)
    assert isinstance(vacancy, models.Vacancy), vacancy
    assert vacancy.owner_province == ZJ and vacancy.title == draft.title and vacancy.salary_max == 11000

    sc_worker = partner.as_role(SC, "jobs", "worker", "sc-worker")

    async def found_in_sichuan() -> bool:
        page = await search.asyncio(client=sc_worker, q=marker)
        assert isinstance(page, models.VacancyPage), page
        return [item.id for item in page.items] == [vacancy.id]

    await eventually(found_in_sichuan, timeout_s=30)


async def transfer_completes(partner: Partner, marker: str) -> None:
    """A Sichuan claimant moves to Zhejiang: the transfer completes and the money is due in Sichuan."""
    models = partner.models("insurance")
    create_person = partner.operation("insurance", "insurance.create_person_api_v1_insured_persons_post")
    file_transfer = partner.operation("insurance", "insurance.file_transfer_api_v1_transfers_post")
    list_transfers = partner.operation("insurance", "insurance.list_transfers_api_v1_transfers_get")
    answer = partner.operation("insurance", "insurance.answer_transfer_api_v1_transfers_case_id_answer_post")
    get_transfer = partner.operation("insurance", "insurance.get_transfer_api_v1_transfers_case_id_get")
    list_settlements = partner.operation("insurance", "insurance.list_settlements_api_v1_settlements_get")

    sequence = int(marker, 16) % 900 + 50
    mover = insured_person(0, claiming=True) | {
        "resident_id": make_resident_id("511602", date(1990, 1, 1) + timedelta(days=sequence), sequence)
    }
    sc_officer = partner.as_role(SC, "insurance", "officer", "sc-officer")
    created = await create_person.asyncio(client=sc_officer, body=models.PersonIn.from_dict(mover))
    assert isinstance(created, models.PersonCreated), created

    worker = partner.as_role(ZJ, "insurance", "worker", mover["resident_id"])
    request = models.TransferRequest.from_dict({"from_province": SC, "reason": "claimant-relocation", "name": "王晓明"})
    filed = await file_transfer.asyncio(client=worker, body=request)
    assert isinstance(filed, models.TransferView), filed
    assert filed.state == "awaiting-answer"

    async def letter_in_sichuan() -> Any:
        page = await list_transfers.asyncio(client=sc_officer, side="sending")
        assert isinstance(page, models.TransferPage), page
        return next((case for case in page.items if case.peer_case == filed.id), None)

    await eventually(letter_in_sichuan, timeout_s=30)
    sending = await letter_in_sichuan()
    sheet_sent = await answer.asyncio(
        case_id=sending.id, client=sc_officer, body=models.Answer.from_dict({"decision": "send-sheet"})
    )
    assert isinstance(sheet_sent, models.TransferView), sheet_sent
    assert sheet_sent.state == "sheet-sent"

    async def completed() -> bool:
        case = await get_transfer.asyncio(case_id=filed.id, client=worker)
        assert isinstance(case, models.TransferDetail), case
        return bool(case.state == "completed")

    await eventually(completed, timeout_s=30)
    done = await get_transfer.asyncio(case_id=filed.id, client=worker)
    # 108 months = 9 years → 18 months of benefit; 2 paid → 16 remain
    assert done.sheet.cumulative_months == 108 and done.sheet.benefit_months_remaining == 16

    async def settlement_due() -> Any:
        listed = await list_settlements.asyncio(client=sc_officer)
        assert isinstance(listed, models.SettlementList), listed
        return next((s for s in listed.items if s.peer_case == filed.id), None)

    await eventually(settlement_due, timeout_s=30)
    settlement = await settlement_due()
    assert settlement.status == "pending" and Decimal(str(settlement.amount)) > 0


async def brand_demand_answered(partner: Partner, marker: str) -> None:
    """Sichuan recognises a labour brand; Zhejiang sees it and asks for workers; Sichuan's answer reaches Zhejiang."""
    models = partner.models("brands")
    register = partner.operation("brands", "brands.register_api_v1_brands_post")
    recognise = partner.operation("brands", "brands.recognise_api_v1_brands_brand_id_recognise_post")
    get_brand = partner.operation("brands", "brands.get_one_api_v1_brands_brand_id_get")
    post_demand = partner.operation("brands", "demands.post_api_v1_demands_post")
    get_demand = partner.operation("brands", "demands.get_one_api_v1_demands_demand_id_get")
    answer = partner.operation("brands", "demands.answer_api_v1_demands_demand_id_answer_post")

    sc_officer = partner.as_role(SC, "brands", "officer", "sc-officer")
    draft = models.BrandDraft.from_dict(
        {
            "name_zh": f"川建工{marker}",
            "division_code": "510100",
            "category": "construction",
            "level": "provincial",
            "skills": ["钢筋", "砌筑"],
            "cultivating_body_type": "regional-public",
            "cultivating_body_name": "四川省人力资源和社会保障厅",
            "description": "区域劳务品牌，技能扎实、口碑良好。",
        }
    )
    registered = await register.asyncio(client=sc_officer, body=draft)
    assert isinstance(registered, models.Brand), registered
    recognised = await recognise.asyncio(
        brand_id=registered.id, client=sc_officer, body=models.RecogniseRequest(version=registered.version)
    )
    assert isinstance(recognised, models.Brand) and recognised.status == "recognised", recognised

    zj_public = partner.anonymous(ZJ, "brands")

    async def brand_in_zhejiang() -> bool:
        seen = await get_brand.asyncio(brand_id=registered.id, client=zj_public)
        return isinstance(seen, models.Brand) and seen.status == "recognised"

    await eventually(brand_in_zhejiang, timeout_s=30)
    start = date.today() + timedelta(days=30)
    zj_officer = partner.as_role(ZJ, "brands", "officer", "zj-officer")
    request = models.DemandRequest(
        brand_id=registered.id,
        workers=25,
        division_code="330100",
        period_start=start,
        period_end=start + timedelta(days=180),
        conditions="包吃住，月薪 7000–11000 元，往返路费报销",
        contact="人社局劳务协作科 0571-87000000",
    )
    demand = await post_demand.asyncio(client=zj_officer, body=request)
    assert isinstance(demand, models.Demand) and demand.demanding_province == ZJ, demand

    async def demand_in_sichuan() -> bool:
        return isinstance(await get_demand.asyncio(demand_id=demand.id, client=sc_officer), models.Demand)

    await eventually(demand_in_sichuan, timeout_s=30)
    accepted = models.DemandAnswer.from_dict({"decision": "accepted", "workers_offered": 20, "note": "首批 20 人"})
    assert isinstance(await answer.asyncio(demand_id=demand.id, client=sc_officer, body=accepted), models.Demand)

    async def answered_in_zhejiang() -> bool:
        seen = await get_demand.asyncio(demand_id=demand.id, client=zj_officer)
        assert isinstance(seen, models.Demand), seen
        return bool(seen.status == "accepted" and seen.workers_offered == 20)

    await eventually(answered_in_zhejiang, timeout_s=30)

"""A partner's view of the contract: a Python client generated from the OpenAPI the nodes serve walks the smoke story.

Sichuan (510000) and Zhejiang (330000) run their jobs and insurance services on a broker of their own. The clients
are generated with openapi-python-client from each service's ``/openapi.json`` during the run, imported, and used
through their typed functions and models only: a Zhejiang officer posts a vacancy and a Sichuan worker finds it by
search; a Sichuan officer records an insured worker, the worker asks Zhejiang for a transfer, Sichuan sends the
sheet, the case completes in Zhejiang and the settlement is due in Sichuan.
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
    apps = {"jobs": create_jobs_app, "insurance": create_insurance_app}
    async with contextlib.AsyncExitStack() as stack:
        urls: dict[tuple[str, str], str] = {}
        probes: list[httpx.AsyncClient] = []
        for province in (SC, ZJ):
            for service, create_app in apps.items():
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


async def test_a_generated_client_walks_the_smoke_story(
    nodes: dict[tuple[str, str], str], node_keys: dict[str, NodeKeys], tmp_path: Path
) -> None:
    assert GENERATOR.exists(), f"{GENERATOR} is missing: `make install` installs it from {GENERATOR_REQUIREMENTS}"
    async with httpx.AsyncClient() as http:
        specs = {s: (await http.get(nodes[SC, s] + "/openapi.json")).json() for s in ("jobs", "insurance")}
    await asyncio.gather(*(generate_client(spec, f"{s}_client", tmp_path) for s, spec in specs.items()))

    with importable(tmp_path, "jobs_client", "insurance_client"):
        jobs = module("jobs_client")
        insurance = module("insurance_client")
        jobs_models, insurance_models = module("jobs_client.models"), module("insurance_client.models")
        publish = module("jobs_client.api.vacancies.publish_api_v1_vacancies_post")
        search = module("jobs_client.api.vacancies.search_api_v1_vacancies_get")
        api = "insurance_client.api.insurance."
        create_person = module(api + "create_person_api_v1_insured_persons_post")
        file_transfer = module(api + "file_transfer_api_v1_transfers_post")
        list_transfers = module(api + "list_transfers_api_v1_transfers_get")
        answer_transfer = module(api + "answer_transfer_api_v1_transfers_case_id_answer_post")
        get_transfer = module(api + "get_transfer_api_v1_transfers_case_id_get")
        list_settlements = module(api + "list_settlements_api_v1_settlements_get")

        def as_role(package: ModuleType, province: str, service: str, role: str, sub: str) -> Any:
            token = bearer(node_keys[province], role, sub=sub)["Authorization"].removeprefix("Bearer ")
            return package.AuthenticatedClient(base_url=nodes[province, service], token=token)

        marker = uuid.uuid4().hex[:8]

        # a Zhejiang officer posts a vacancy; a Sichuan worker finds it by search
        draft = jobs_models.VacancyDraft(
            employer_name="杭州川味轩餐饮有限公司",
            employer_credit_code=credit_code("330100", 77),
            title=f"川菜厨师 smoke {marker}",
            occupation_code="5120",
            division_code="330100",
            headcount=5,
            salary_min=7000,
            salary_max=11000,
            employment_type=jobs_models.EmploymentType.FULL_TIME,
            target_groups=[jobs_models.TargetGroup.MIGRANT_WORKERS],
            skills=["川菜", "刀工"],
            contact="0571-88000077",
            closing_date=date.today() + timedelta(days=60),
        )
        zj_officer = as_role(jobs, ZJ, "jobs", "officer", "zj-officer")
        vacancy = await publish.asyncio(client=zj_officer, body=draft)
        assert isinstance(vacancy, jobs_models.Vacancy), vacancy
        assert vacancy.owner_province == ZJ and vacancy.title == draft.title and vacancy.salary_max == 11000

        sc_worker = as_role(jobs, SC, "jobs", "worker", "sc-worker")

        async def found_in_sichuan() -> bool:
            page = await search.asyncio(client=sc_worker, q=marker)
            assert isinstance(page, jobs_models.VacancyPage), page
            return [item.id for item in page.items] == [vacancy.id]

        await eventually(found_in_sichuan, timeout_s=30)

        # a Sichuan worker moves to Zhejiang: the transfer completes and the money is due in Sichuan
        sequence = int(marker, 16) % 900 + 50
        mover = insured_person(0, claiming=True) | {
            "resident_id": make_resident_id("511602", date(1990, 1, 1) + timedelta(days=sequence), sequence)
        }
        sc_officer = as_role(insurance, SC, "insurance", "officer", "sc-officer")
        created = await create_person.asyncio(client=sc_officer, body=insurance_models.PersonIn.from_dict(mover))
        assert isinstance(created, insurance_models.PersonCreated), created

        worker = as_role(insurance, ZJ, "insurance", "worker", mover["resident_id"])
        request = insurance_models.TransferRequest.from_dict(
            {"from_province": SC, "reason": "claimant-relocation", "name": mover["name"]}
        )
        filed = await file_transfer.asyncio(client=worker, body=request)
        assert isinstance(filed, insurance_models.TransferView), filed
        assert filed.state == "awaiting-answer"

        async def letter_in_sichuan() -> Any:
            page = await list_transfers.asyncio(client=sc_officer, side="sending")
            assert isinstance(page, insurance_models.TransferPage), page
            return next((case for case in page.items if case.peer_case == filed.id), None)

        await eventually(letter_in_sichuan, timeout_s=30)
        sending = await letter_in_sichuan()
        answered = await answer_transfer.asyncio(
            case_id=sending.id, client=sc_officer, body=insurance_models.Answer.from_dict({"decision": "send-sheet"})
        )
        assert isinstance(answered, insurance_models.TransferView), answered
        assert answered.state == "sheet-sent"

        async def completed() -> bool:
            case = await get_transfer.asyncio(case_id=filed.id, client=worker)
            assert isinstance(case, insurance_models.TransferDetail), case
            return bool(case.state == "completed")

        await eventually(completed, timeout_s=30)
        done = await get_transfer.asyncio(case_id=filed.id, client=worker)
        # 108 months = 9 years → 18 months of benefit; 2 paid → 16 remain
        assert done.sheet.cumulative_months == 108 and done.sheet.benefit_months_remaining == 16

        async def settlement_due() -> Any:
            listed = await list_settlements.asyncio(client=sc_officer)
            assert isinstance(listed, insurance_models.SettlementList), listed
            return next((s for s in listed.items if s.peer_case == filed.id), None)

        await eventually(settlement_due, timeout_s=30)
        settlement = await settlement_due()
        assert settlement.status == "pending" and Decimal(str(settlement.amount)) > 0

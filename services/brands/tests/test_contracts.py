"""The brands service's bus contract (``labornet.brands.contracts.EVENTS``) against what its code really publishes.

A Sichuan and a Chongqing node run the brand and demand use cases on their own databases; each one's events are
read back from its outbox (the bus minus Kafka) and handed to the other's handlers, through a brand's whole life,
a demand answered by an officer and a demand declined automatically. Every event both outboxes hold validates
against the JSON Schema of its contract, carries no field the schema does not declare, travels on the channel the
contract names, and every listed event type is seen.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from sqlalchemy.ext.asyncio import AsyncEngine

from labornet.brands.contracts import EVENTS
from labornet.brands.domain.brand import BrandChanges, BrandDraft
from labornet.brands.domain.demand import Decision, DemandAnswer, DemandRequest
from labornet.brands.service_layer.brands import BrandService
from labornet.brands.service_layer.demands import DemandService
from labornet.shared.clock import today_in_china
from labornet.shared.db import create_engine, sessionmaker
from labornet.shared.divisions import load_divisions
from labornet.shared.envelope import Envelope
from labornet.shared.keys import NodeKeys
from labornet.shared.migrations import upgrade
from labornet.shared.outbox import Outbox
from labornet.shared.provinces import load_registry
from labornet.shared.signing import Signer
from labornet.shared.testing import outbox_events

SC, CQ = "510000", "500000"


class Node:
    """One province's brands use cases on its own database; what it wrote is read back from its outbox."""

    def __init__(self, province: str, engine: AsyncEngine, keys: NodeKeys) -> None:
        self.province, self.engine = province, engine
        outbox = Outbox(province, "brands", Signer.from_file(keys.signing_key, province))
        divisions, sessions = load_divisions(), sessionmaker(engine)
        self.brands = BrandService(
            province=province, sessions=sessions, outbox=outbox, divisions=divisions, registry=load_registry()
        )
        self.demands = DemandService(province=province, sessions=sessions, outbox=outbox, divisions=divisions)
        self.written: list[Envelope] = []
        self._read = 0

    async def new_events(self) -> list[Envelope]:
        envelopes, self._read = await outbox_events(self.engine, self._read)
        self.written.extend(envelopes)
        return envelopes

    async def receive(self, envelopes: list[Envelope]) -> None:
        """Apply a partner's events, each in its own transaction, as the consumers do."""
        handlers = self.demands.handlers()
        for envelope in envelopes:
            async with sessionmaker(self.engine)() as session, session.begin():
                await handlers.get(envelope.type, self.brands.apply_event)(session, envelope)


@pytest.fixture
async def nodes(new_database_url: Any, node_keys: dict[str, NodeKeys]) -> AsyncIterator[tuple[Node, Node]]:
    engines = [create_engine(await new_database_url()) for _ in range(2)]
    for engine in engines:
        await upgrade(engine, "labornet.brands:migrations")
    yield Node(SC, engines[0], node_keys[SC]), Node(CQ, engines[1], node_keys[CQ])
    for engine in engines:
        await engine.dispose()


def draft(name_zh: str, division_code: str, **fields: Any) -> BrandDraft:
    body = {
        "name_zh": name_zh,
        "division_code": division_code,
        "category": "catering",
        "level": "provincial",
        "cultivating_body_type": "regional-public",
        "cultivating_body_name": "人力资源和社会保障厅",
        "destination_regions": [SC if division_code[:2] != SC[:2] else CQ],
    }
    return BrandDraft.model_validate(body | fields)


def wanted(brand_id: str) -> DemandRequest:
    today = today_in_china()
    return DemandRequest.model_validate(
        {
            "brand_id": brand_id,
            "workers": 12,
            "division_code": "510104",
            "period_start": (today + timedelta(days=10)).isoformat(),
            "period_end": (today + timedelta(days=200)).isoformat(),
            "conditions": "月薪7000元，包住宿",
            "contact": "成都市就业局 028-86000000",
        }
    )


async def test_every_published_event_validates_against_its_listed_contract(nodes: tuple[Node, Node]) -> None:
    sc, cq = nodes
    # Chongqing's brands: one recognised with every optional field, one recognised and later revoked
    full = await cq.brands.register(
        draft(
            "巴渝大嫂",
            "500101",
            name_en="Bayu Housekeepers",
            cultivating_body_type="enterprise",
            cultivating_body_name="重庆家政服务有限公司",
            cultivating_body_credit_code="91350100M000100Y43",
            training_bases=[{"name": "渝中家政培训基地", "division_code": "500103"}, {"name": "线上课堂"}],
            skills=["家政", "育婴"],
            spokespersons=["李大姐"],
            trademark_number="12345678",
        )
    )
    await cq.brands.update(full["id"], BrandChanges(people_trained=800), 1)
    await cq.brands.recognise(full["id"], 2)
    short_lived = await cq.brands.register(draft("渝厨", "500101"))
    await cq.brands.recognise(short_lived["id"], 1)
    await sc.receive(await cq.new_events())

    # Sichuan asks for workers of both; Chongqing accepts one and, the other revoked meanwhile, declines it at once
    await cq.brands.revoke(short_lived["id"], "品牌整合", 2)
    accepted = await sc.demands.post(wanted(full["id"]), "sc-officer")
    await sc.demands.post(wanted(short_lived["id"]), "sc-officer")
    await cq.receive(await sc.new_events())
    await cq.demands.answer(accepted["id"], DemandAnswer(decision=Decision.ACCEPTED, workers_offered=10), "cq-officer")
    await sc.receive(await cq.new_events())
    # Sichuan's own brand, through its whole life
    own = await sc.brands.register(draft("川菜师傅", "510100"))
    await sc.brands.revoke(own["id"], "撤回申报", 1)
    await sc.new_events()

    contracts = {contract.type: contract for contract in EVENTS}
    assert len(contracts) == len(EVENTS), "an event type is listed twice"
    seen: dict[str, int] = {}
    for envelope in sc.written + cq.written:
        contract = contracts.get(envelope.type)
        assert contract is not None, f"{envelope.type} is published but not listed in EVENTS"
        schema = contract.model.model_json_schema()
        data = envelope.json()
        errors = [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in Draft202012Validator(schema, format_checker=FormatChecker()).iter_errors(data)
        ]
        assert errors == [], (envelope.type, errors)
        assert data.keys() <= schema["properties"].keys(), (envelope.type, data.keys() - schema["properties"].keys())
        topic = envelope.stream.split("/", 1)[1]
        if contract.channel == "events":
            assert envelope.destprovince is None and topic == f"labornet.{envelope.originprovince}.brands.events"
        else:
            assert envelope.destprovince and topic == f"labornet.{envelope.destprovince}.brands.inbox"
        seen[envelope.type] = seen.get(envelope.type, 0) + 1
    assert seen.keys() == contracts.keys(), f"listed but never published here: {contracts.keys() - seen.keys()}"
    # the automatic decline is an answer too: one by Chongqing's officer, one by its node
    assert seen["org.labornet.brands.demand.answered.v1"] == 2

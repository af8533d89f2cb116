"""Apply re-checks the rules: a replica holds every partner event to the rules of the origin's API, on SQLite and
PostgreSQL, through the real inbox consumer.

The origin runs its real use cases and signs with its real node key; its events are read back from its outbox and
handed to the partner's consumer record by record. An event correctly signed by the origin that its API would have
refused (an unknown occupation code, a version its stream cannot have reached, a renamed recognised brand) is
quarantined at once with reason ``rule-violation``, and the origin's next real change still applies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from labornet.brands.adapters.tables import brand
from labornet.brands.domain.brand import EVENT_TYPES as BRAND_EVENTS
from labornet.brands.domain.brand import BrandChanges, BrandDraft
from labornet.brands.service_layer.brands import BrandService
from labornet.jobs.adapters.brands import FixedBrandRegister
from labornet.jobs.adapters.tables import vacancy
from labornet.jobs.domain.vacancy import EVENT_TYPES as VACANCY_EVENTS
from labornet.jobs.domain.vacancy import UPDATED as VACANCY_UPDATED
from labornet.jobs.domain.vacancy import VacancyChanges, VacancyDraft
from labornet.jobs.service_layer.vacancies import VacancyService
from labornet.shared.clock import today_in_china
from labornet.shared.db import create_engine, quarantine, sessionmaker
from labornet.shared.divisions import load_divisions
from labornet.shared.envelope import Envelope, encode_data, new_event_id
from labornet.shared.inbox import EventConsumer, Handler, Outcome, RuleViolation, check_version_continuity
from labornet.shared.keys import NodeKeys
from labornet.shared.migrations import upgrade
from labornet.shared.outbox import Outbox
from labornet.shared.provinces import load_registry
from labornet.shared.signing import Signer, TrustListFile
from labornet.shared.testing import outbox_events
from labornet.shared.topics import deadletter_topic, events_topic

pytestmark = pytest.mark.integration

ORIGIN, PARTNER = "510000", "330000"


@dataclass
class Node:
    """One province's service database, its outbox writer and what it published so far."""

    province: str
    engine: AsyncEngine
    outbox: Outbox
    _read: int = field(default=0)

    async def new_events(self) -> list[Envelope]:
        envelopes, self._read = await outbox_events(self.engine, self._read)
        return envelopes

    async def row(self, table: Table, row_id: str) -> Mapping[str, Any] | None:
        async with sessionmaker(self.engine)() as session:
            return (await session.execute(select(table).where(table.c.id == row_id))).mappings().one_or_none()

    async def quarantined(self) -> list[Any]:
        async with sessionmaker(self.engine)() as session:
            return list((await session.execute(select(quarantine).order_by(quarantine.c.id))).all())


NodeFactory = Callable[[str, str], Awaitable[Node]]


@pytest.fixture
async def make_node(
    new_database_url: Callable[[], Awaitable[str]], node_keys: dict[str, NodeKeys]
) -> AsyncIterator[NodeFactory]:
    engines: list[AsyncEngine] = []

    async def make(province: str, service: str) -> Node:
        engine = create_engine(await new_database_url())
        engines.append(engine)
        await upgrade(engine, f"labornet.{service}:migrations")
        signer = Signer.from_file(node_keys[province].signing_key, province)
        return Node(province, engine, Outbox(province, service, signer))

    yield make
    for engine in engines:
        await engine.dispose()


def replica_consumer(node: Node, service: str, events: tuple[str, ...], handler: Handler, trust: Path) -> EventConsumer:
    def no_broker(_group: str) -> Any:
        raise AssertionError("records are handed to the consumer directly")

    return EventConsumer(
        name=f"{service}-replica",
        province=node.province,
        service=service,
        topics=[events_topic(ORIGIN, service)],
        handlers=dict.fromkeys(events, handler),
        sessions=sessionmaker(node.engine),
        outbox=node.outbox,
        trust=TrustListFile(trust),
        consumer_factory=no_broker,
        deadletter_topic=deadletter_topic(node.province, service),
        retry_backoff_s=0.01,
    )


class Feed:
    """Hands envelopes to a consumer as records of one partition, offset after offset."""

    def __init__(self, consumer: EventConsumer) -> None:
        self.consumer = consumer
        self.offset = 0

    async def __call__(self, envelope: Envelope) -> Outcome:
        key, value, headers = envelope.to_kafka()
        topic = self.consumer.topics[0]
        record = ConsumerRecord(topic, 0, self.offset, 0, 0, key, value, None, len(key), len(value), tuple(headers))
        self.offset += 1
        return await self.consumer.handle(record)


def signed_as_origin(
    keys: NodeKeys, event: Envelope, event_type: str, data: Mapping[str, Any], streamseq: int
) -> Envelope:
    """An event of the origin's stream carrying ``data``, signed with the origin's real key."""
    changed = dataclasses.replace(
        event, id=new_event_id(), type=event_type, data=encode_data(data), streamseq=streamseq, keyid="", signature=""
    )
    return Signer.from_file(keys.signing_key, keys.province).sign(changed)


def vacancy_draft() -> VacancyDraft:
    return VacancyDraft.model_validate(
        {
            "employer": {"name": "成都川味餐饮有限公司", "credit_code": "91350100M000100Y43"},
            "title": "川菜厨师",
            "occupation_code": "5120",
            "division_code": "510100",
            "headcount": 3,
            "salary": {"min": 6000, "max": 9000},
            "employment_type": "full-time",
            "contact": "028-88000000",
            "closing_date": (today_in_china() + timedelta(days=30)).isoformat(),
        }
    )


async def test_a_signed_vacancy_event_the_origin_api_would_refuse_is_quarantined_and_the_next_update_applies(
    make_node: NodeFactory, node_keys: dict[str, NodeKeys], federation_dir: Path
) -> None:
    origin, partner = await make_node(ORIGIN, "jobs"), await make_node(PARTNER, "jobs")
    divisions = load_divisions()
    sichuan, zhejiang = (
        VacancyService(
            province=node.province,
            sessions=sessionmaker(node.engine),
            outbox=node.outbox,
            divisions=divisions,
            brands=FixedBrandRegister(),
        )
        for node in (origin, partner)
    )
    feed = Feed(
        replica_consumer(partner, "jobs", VACANCY_EVENTS, zhejiang.apply_event, federation_dir / "trust-list.json")
    )

    posted = await sichuan.publish(vacancy_draft())
    (published,) = await origin.new_events()
    assert (await feed(published)).status == "applied"

    # a bug at the origin: version 97 ahead of the replica's and an occupation code outside the list, signed
    ahead = {**published.json(), "version": 98, "occupation_code": "0000", "title": "川菜厨师（错误）"}
    forged = signed_as_origin(node_keys[ORIGIN], published, VACANCY_UPDATED, ahead, streamseq=2)
    assert await feed(forged) == Outcome("quarantined", "rule-violation")
    # the same, with every field valid: version continuity alone refuses it (version 98 in the stream's event 3)
    valid_but_ahead = {**ahead, "occupation_code": "5120"}
    only_ahead = signed_as_origin(node_keys[ORIGIN], published, VACANCY_UPDATED, valid_but_ahead, streamseq=3)
    assert await feed(only_ahead) == Outcome("quarantined", "rule-violation")
    # a division Sichuan does not have and a salary range upside down: the API's 422s
    for wrong in ({"division_code": "519900"}, {"salary_min": 9000, "salary_max": 6000}):
        data = {**published.json(), **wrong, "version": 2}
        event = signed_as_origin(node_keys[ORIGIN], published, VACANCY_UPDATED, data, streamseq=4)
        assert await feed(event) == Outcome("quarantined", "rule-violation")
    held = await partner.row(vacancy, posted["id"])
    assert held is not None and (held["version"], held["occupation_code"]) == (1, "5120")

    updated = await sichuan.update(posted["id"], VacancyChanges(title="川菜主厨"), 1)
    (update,) = await origin.new_events()
    assert update.json()["version"] == updated["version"] == 2
    assert (await feed(update)).status == "applied"
    held = await partner.row(vacancy, posted["id"])
    assert held is not None and (held["version"], held["title"]) == (2, "川菜主厨")

    rows = await partner.quarantined()
    assert [(row.event_id, row.reason, row.attempts) for row in rows] == [
        (forged.id, "rule-violation", 1),
        (only_ahead.id, "rule-violation", 1),
        (rows[2].event_id, "rule-violation", 1),
        (rows[3].event_id, "rule-violation", 1),
    ]
    assert "occupation code '0000' is not in the federation's ISCO-08 list" in rows[0].error
    assert "version 98" in rows[1].error and "event 3 of stream" in rows[1].error
    assert "519900" in rows[2].error and "salary min 9000 is greater than max 6000" in rows[3].error


def brand_draft(name_zh: str) -> BrandDraft:
    return BrandDraft.model_validate(
        {
            "name_zh": name_zh,
            "division_code": "510100",
            "category": "catering",
            "level": "provincial",
            "cultivating_body": {"type": "regional-public", "name": "四川省人力资源和社会保障厅"},
            "destination_regions": ["330000"],
        }
    )


async def test_a_signed_brand_event_breaking_a_brand_rule_is_quarantined_and_valid_ones_apply(
    make_node: NodeFactory, node_keys: dict[str, NodeKeys], federation_dir: Path
) -> None:
    origin, partner = await make_node(ORIGIN, "brands"), await make_node(PARTNER, "brands")
    divisions, registry = load_divisions(), load_registry()
    sichuan, zhejiang = (
        BrandService(
            province=node.province,
            sessions=sessionmaker(node.engine),
            outbox=node.outbox,
            divisions=divisions,
            registry=registry,
        )
        for node in (origin, partner)
    )
    feed = Feed(
        replica_consumer(partner, "brands", BRAND_EVENTS, zhejiang.apply_event, federation_dir / "trust-list.json")
    )

    registered = await sichuan.register(brand_draft("川厨师"))
    await sichuan.recognise(registered["id"], 1)
    events = await origin.new_events()
    assert [(await feed(event)).status for event in events] == ["applied", "applied"]
    recognised = events[-1]

    # a recognised brand renamed, an enterprise brand without a credit code, a destination outside the federation
    breaking = [
        {"name_zh": "川大厨"},
        {"cultivating_body_type": "enterprise", "cultivating_body_credit_code": None},
        {"destination_regions": ["110000"]},
        {"name_zh": "Sichuan Chefs"},
    ]
    for seq, change in enumerate(breaking, start=3):
        data = {**recognised.json(), **change, "version": 3}
        event = signed_as_origin(node_keys[ORIGIN], recognised, recognised.type, data, streamseq=seq)
        assert await feed(event) == Outcome("quarantined", "rule-violation"), change
    errors = [row.error for row in await partner.quarantined()]
    assert "the Chinese name of a recognised brand does not change" in errors[0]
    assert "unified social credit code" in errors[1]
    assert "110000 is not a member" in errors[2]
    assert "should be the brand's Chinese name" in errors[3]

    await sichuan.update(registered["id"], BrandChanges(people_trained=5000), 2)
    (update,) = await origin.new_events()
    assert (await feed(update)).status == "applied"
    held = await partner.row(brand, registered["id"])
    assert held is not None and (held["version"], held["people_trained"], held["name_zh"]) == (3, 5000, "川厨师")
    assert len(await partner.quarantined()) == len(breaking)


def test_version_continuity_bounds_the_version_by_the_stream_and_optionally_the_jump() -> None:
    event = Envelope(
        id="e",
        source="/labornet/510000/jobs",
        type="t",
        time=datetime.now(UTC),
        partitionkey="510000-V-1",
        originprovince=ORIGIN,
        stream="510000/labornet.510000.jobs.events",
        streamseq=50,
        schemaversion=1,
        data=b"{}",
    )
    check_version_continuity(event, 50, None)
    check_version_continuity(event, 40, 2)  # the replica missed 37 versions: a wiped log, not a lie
    with pytest.raises(RuleViolation, match="event 50 of stream"):
        check_version_continuity(event, 51, 50)
    check_version_continuity(event, 7, 2, max_jump=5)
    with pytest.raises(RuleViolation, match="at most 5"):
        check_version_continuity(event, 8, 2, max_jump=5)

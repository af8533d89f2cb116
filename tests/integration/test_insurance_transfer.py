"""The unemployment-insurance transfer saga between real nodes on a broker of their own, over real HTTP.

Sichuan (510000) holds the records; Zhejiang (330000) and Chongqing (500000) receive workers. Covered: the full
happy path with the money and the months checked on both sides; a refusal; a cancellation; the sending node
down while the request is made; every message delivered twice; two provinces asking for the same person at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from labornet.insurance.app import create_app
from labornet.shared.broker import EmbeddedBroker
from labornet.shared.db import create_engine, inbox, outbox
from labornet.shared.identifiers import make_resident_id
from labornet.shared.keys import NodeKeys
from labornet.shared.outbox import awaiting_receipt
from labornet.shared.receipts import RECEIPT
from labornet.shared.settings import Settings
from labornet.shared.testing import assert_problem, bearer, consume_all, eventually, serving
from labornet.shared.topics import inbox_topic

pytestmark = pytest.mark.integration

PROVINCES = ("510000", "330000", "500000")
SC, ZJ, CQ = PROVINCES


def person(n: int, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resident_id": make_resident_id("511602", date(1988, 3, 7), n),
        "name": f"王晓明{n}",
        "hukou_division": "511602",
        "status": "unemployed-claiming",
        "months_used": 0,
        "benefit_months_paid": 3,
        "periods": [
            {"start_month": "2017-01", "end_month": "2020-12", "kind": "actual"},
            {"start_month": "2021-01", "end_month": "2022-12", "kind": "former-migrant"},
        ],
    }
    body.update(overrides)
    return body


class Federation:
    def __init__(self, settings_for: Callable[[str], Settings], keys: dict[str, NodeKeys]) -> None:
        self.settings_for = settings_for
        self.keys = keys
        self.clients: dict[str, httpx.AsyncClient] = {}
        self._stacks: dict[str, contextlib.AsyncExitStack] = {}

    async def start(self, province: str) -> httpx.AsyncClient:
        stack = contextlib.AsyncExitStack()
        client = await stack.enter_async_context(serving(create_app(self.settings_for(province))))
        self.clients[province], self._stacks[province] = client, stack

        async def ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await eventually(ready, timeout_s=60)
        return client

    async def stop(self, province: str) -> None:
        await self._stacks.pop(province).aclose()
        del self.clients[province]

    async def close(self) -> None:
        for province in list(self._stacks):
            await self.stop(province)

    def officer(self, province: str) -> dict[str, str]:
        return bearer(self.keys[province], "officer", sub=f"officer-{province}")

    def worker(self, province: str, resident_id: str) -> dict[str, str]:
        return bearer(self.keys[province], "worker", sub=resident_id)

    async def case(self, province: str, case_id: str) -> dict[str, Any]:
        found: dict[str, Any] = (
            await self.clients[province].get(f"/api/v1/transfers/{case_id}", headers=self.officer(province))
        ).json()
        return found

    async def sending_case(self, receiving_case: str) -> dict[str, Any] | None:
        listed = (
            await self.clients[SC].get("/api/v1/transfers", params={"side": "sending"}, headers=self.officer(SC))
        ).json()["items"]
        return next((c for c in listed if c["peer_case"] == receiving_case), None)

    async def wait_state(self, province: str, case_id: str, state: str) -> dict[str, Any]:
        async def reached() -> bool:
            return (await self.case(province, case_id))["state"] == state

        await eventually(reached, timeout_s=30)
        return await self.case(province, case_id)

    async def wait_sending(self, receiving_case: str, state: str, timeout_s: float = 30) -> dict[str, Any]:
        async def reached() -> bool:
            found = await self.sending_case(receiving_case)
            return found is not None and found["state"] == state

        await eventually(reached, timeout_s=timeout_s)
        found = await self.sending_case(receiving_case)
        assert found is not None
        return found


@pytest.fixture
async def nodes(
    new_database_url: Callable[[], Awaitable[str]],
    federation_dir: Path,
    node_keys: dict[str, NodeKeys],
    private_broker: EmbeddedBroker,
) -> AsyncIterator[Federation]:
    urls = {p: await new_database_url() for p in PROVINCES}

    def settings_for(province: str) -> Settings:
        return Settings(  # type: ignore[call-arg]
            province=province,
            service="insurance",
            data_dir=federation_dir,
            database_url=urls[province],
            kafka_bootstrap_servers=private_broker.bootstrap_servers,
            kafka_session_timeout_ms=3000,
            kafka_heartbeat_interval_ms=500,
            log_json=False,
            inbox_retry_backoff_s=0.05,
            broker_check_interval_s=1.0,
            kafka_metadata_max_age_ms=3000,
            receipt_wait_s=3.0,
        )

    federation = Federation(settings_for, node_keys)
    for province in PROVINCES:
        await federation.start(province)
    yield federation
    await federation.close()


async def test_full_transfer_from_sichuan_to_zhejiang(nodes: Federation) -> None:
    sc, zj = nodes.clients[SC], nodes.clients[ZJ]
    record = person(11)
    rid = record["resident_id"]
    assert (await sc.post("/api/v1/insured-persons", headers=nodes.officer(SC), json=record)).status_code == 201

    filed = await zj.post(
        "/api/v1/transfers",
        headers=nodes.worker(ZJ, rid),
        json={"from_province": SC, "reason": "claimant-relocation", "name": record["name"]},
    )
    assert filed.status_code == 201, filed.text
    case_id = filed.json()["id"]
    assert filed.json()["state"] == "awaiting-answer"

    sending = await nodes.wait_sending(case_id, "received")
    assert sending["resident_id"] == rid, "officers of the handling provinces see the identity number"
    answered = await sc.post(
        f"/api/v1/transfers/{sending['id']}/answer", headers=nodes.officer(SC), json={"decision": "send-sheet"}
    )
    assert answered.json()["state"] == "sheet-sent"

    done = await nodes.wait_state(ZJ, case_id, "completed")
    # 72 months = 6 years → 18 months of benefit; 3 paid → 15 remain
    assert done["sheet"]["cumulative_months"] == 72 and done["sheet"]["benefit_months_remaining"] == 15
    assert Decimal(done["sheet"]["fund_due"]) == Decimal("42075.00")  # 15 × 1870 × 1.5
    assert done["entitlement"]["remaining_months"] == 15
    assert Decimal(done["entitlement"]["remaining_amount"]) == Decimal("31350.00")  # 15 × Zhejiang's 2090
    assert [step["state"] for step in done["timeline"]] == ["awaiting-answer", "completed"]
    closed = await nodes.wait_sending(case_id, "completed")
    assert closed["peer_case"] == case_id and done["peer_case"] == closed["id"], "both case numbers on both sides"

    # the person holds exactly one active relationship, and no month is lost or counted twice
    at_sc = (await sc.get(f"/api/v1/insured-persons/{rid}", headers=nodes.officer(SC))).json()
    at_zj = (await zj.get(f"/api/v1/insured-persons/{rid}", headers=nodes.officer(ZJ))).json()
    assert at_sc["status"] == "transferred-out" and at_zj["status"] == "unemployed-claiming"
    assert all(p["carried_out_by"] == closed["id"] for p in at_sc["periods"])
    assert all(p["carried_in_by"] == case_id and p["province"] == SC for p in at_zj["periods"])
    assert len(at_zj["periods"]) == len(record["periods"])

    # the money follows in Sichuan's next monthly plan
    settlements = (await sc.get("/api/v1/settlements", headers=nodes.officer(SC))).json()["items"]
    assert [(s["transfer_id"], Decimal(s["amount"]), s["status"]) for s in settlements] == [
        (closed["id"], Decimal("42075.00"), "pending")
    ]
    paid = await sc.post(f"/api/v1/settlements/{settlements[0]['id']}/paid", headers=nodes.officer(SC))
    assert paid.json()["status"] == "paid"
    assert_problem(await sc.post(f"/api/v1/settlements/{settlements[0]['id']}/paid", headers=nodes.officer(SC)), 409)

    # every message of the transfer and every receipt is keyed by Zhejiang's case: each node took them all from one
    # partition of its inbox, a receipt in the run of the answer sent with it (receipts keyed by the message's id
    # were scattered over the partitions, each in a transaction of its own)
    for province in (SC, ZJ):
        url = nodes.settings_for(province).database_url
        await eventually(lambda url=url: acknowledged(url), timeout_s=30)
        taken = await inbox_partitions(url)
        assert len(taken) == 1 and sum(taken.values()) >= 4, (province, taken)

    # the worker sees their own case; another worker and other provinces' officers see nothing
    own = await zj.get(f"/api/v1/transfers/{case_id}", headers=nodes.worker(ZJ, rid))
    assert own.status_code == 200 and own.json()["resident_id"] == rid
    stranger = make_resident_id("330102", date(1990, 1, 1), 5)
    assert_problem(await zj.get(f"/api/v1/transfers/{case_id}", headers=nodes.worker(ZJ, stranger)), 404)
    assert_problem(await zj.get(f"/api/v1/insured-persons/{rid}", headers=nodes.worker(ZJ, stranger)), 404)
    assert (await zj.get("/api/v1/transfers", headers=nodes.worker(ZJ, stranger))).json()["items"] == []
    # filing again is refused: the person is insured in Zhejiang now
    again = await zj.post(
        "/api/v1/transfers",
        headers=nodes.worker(ZJ, rid),
        json={"from_province": SC, "reason": "claimant-relocation", "name": record["name"]},
    )
    assert_problem(again, 409, "already insured")


async def test_refusal_and_cancellation(nodes: Federation) -> None:
    sc, zj = nodes.clients[SC], nodes.clients[ZJ]
    unknown = make_resident_id("511602", date(1992, 5, 5), 21)
    filed = await zj.post(
        "/api/v1/transfers",
        headers=nodes.worker(ZJ, unknown),
        json={"from_province": SC, "reason": "return-to-hukou", "name": "李四"},
    )
    refused = await nodes.wait_state(ZJ, filed.json()["id"], "refused")
    assert "no insurance record" in refused["refusal_reason"]

    record = person(31)
    rid = record["resident_id"]
    await sc.post("/api/v1/insured-persons", headers=nodes.officer(SC), json=record)
    filed = await zj.post(
        "/api/v1/transfers",
        headers=nodes.worker(ZJ, rid),
        json={"from_province": SC, "reason": "claimant-relocation", "name": record["name"]},
    )
    case_id = filed.json()["id"]
    sending = await nodes.wait_sending(case_id, "received")
    cancelled = await zj.post(f"/api/v1/transfers/{case_id}/cancel", headers=nodes.worker(ZJ, rid))
    assert cancelled.json()["state"] == "cancel-requested"
    assert (await nodes.wait_state(ZJ, case_id, "cancelled"))["peer_case"] == sending["id"]
    await nodes.wait_sending(case_id, "cancelled")
    assert_problem(
        await sc.post(
            f"/api/v1/transfers/{sending['id']}/answer", headers=nodes.officer(SC), json={"decision": "send-sheet"}
        ),
        409,
    )
    assert_problem(await zj.post(f"/api/v1/transfers/{case_id}/cancel", headers=nodes.worker(ZJ, rid)), 409)
    at_sc = (await sc.get(f"/api/v1/insured-persons/{rid}", headers=nodes.officer(SC))).json()
    assert (at_sc["status"], at_sc["transfer_lock"]) == ("unemployed-claiming", None), "the lock is released"


async def test_sending_node_down_then_duplicates_change_nothing(
    nodes: Federation, private_broker: EmbeddedBroker
) -> None:
    record = person(41, status="insured-employed", benefit_months_paid=0)
    rid = record["resident_id"]
    await nodes.clients[SC].post("/api/v1/insured-persons", headers=nodes.officer(SC), json=record)
    await nodes.stop(SC)  # Sichuan's insurance node goes down

    zj = nodes.clients[ZJ]
    filed = await zj.post(
        "/api/v1/transfers",
        headers=nodes.worker(ZJ, rid),
        json={
            "from_province": SC,
            "reason": "new-employment",
            "name": record["name"],
            "new_employer_credit_code": "91350100M000100Y43",
        },
    )
    case_id = filed.json()["id"]
    await asyncio.sleep(1.0)
    assert (await nodes.case(ZJ, case_id))["state"] == "awaiting-answer", "the request waits for Sichuan"

    sc = await nodes.start(SC)  # back: it catches up from its committed offsets
    sending = await nodes.wait_sending(case_id, "received")
    await sc.post(
        f"/api/v1/transfers/{sending['id']}/answer", headers=nodes.officer(SC), json={"decision": "send-sheet"}
    )
    done = await nodes.wait_state(ZJ, case_id, "completed")
    assert Decimal(done["sheet"]["fund_due"]) == 0, "an employed mover moves the relationship, not money"
    await nodes.wait_sending(case_id, "completed")

    # deliver every message of both inboxes again
    topics = [inbox_topic(SC, "insurance"), inbox_topic(ZJ, "insurance")]
    before = {p: await snapshot(nodes, p, rid) for p in (SC, ZJ)}
    duplicates_before = sum(
        REGISTRY.get_sample_value(
            "labornet_events_consumed_total", {"service": "insurance", "topic": t, "outcome": "duplicate"}
        )
        or 0
        for t in topics
    )
    producer = AIOKafkaProducer(bootstrap_servers=private_broker.bootstrap_servers)
    await producer.start()
    sent, messages, acknowledged = 0, set(), set()
    try:
        for topic in topics:
            for record_ in await consume_all(private_broker.bootstrap_servers, topic, 2):
                await producer.send_and_wait(topic, record_.value, key=record_.key, headers=list(record_.headers))
                sent += 1
                headers = dict(record_.headers)
                if headers["ce_type"] == RECEIPT.encode():
                    acknowledged.add(json.loads(record_.value)["event_id"])
                else:
                    messages.add(headers["ce_id"].decode())
                    # an answer carries the acknowledgement of the message it answers (ADR 39)
                    acknowledged.update(headers.get("ce_acknowledges", b"").decode().split())
    finally:
        await producer.stop()
    # a message resent while Sichuan was down is on the log twice under one id, and has a receipt per delivery
    assert len(messages) == 3, "the contact letter, the information sheet and the insurance receipt"
    assert acknowledged == messages, "each acknowledged by a platform receipt or by the answer to it"

    async def absorbed() -> bool:
        seen = sum(
            REGISTRY.get_sample_value(
                "labornet_events_consumed_total", {"service": "insurance", "topic": t, "outcome": "duplicate"}
            )
            or 0
            for t in topics
        )
        return seen >= duplicates_before + sent

    await eventually(absorbed)
    assert {p: await snapshot(nodes, p, rid) for p in (SC, ZJ)} == before


async def query(database_url: str, statement: Any) -> list[Any]:
    """The rows of ``statement`` in a node's database (an engine of its own, closed after)."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            return list((await connection.execute(statement)).all())
    finally:
        await engine.dispose()


async def all_published(database_url: str) -> bool:
    """Whether the node's relay has handed every outbox row to the broker."""
    pending = await query(database_url, select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None)))
    return pending[0][0] == 0


async def test_a_transfer_in_flight_completes_after_the_broker_loses_its_log(
    nodes: Federation, private_broker: EmbeddedBroker
) -> None:
    """The contact letter is on the bus, unread, when the log is wiped; the information sheet is wiped too."""
    record = person(61, status="insured-employed", benefit_months_paid=0)
    rid = record["resident_id"]
    await nodes.clients[SC].post("/api/v1/insured-persons", headers=nodes.officer(SC), json=record)
    await nodes.stop(SC)  # Sichuan's insurance node is down: the letter waits on the broker, unread
    filed = await nodes.clients[ZJ].post(
        "/api/v1/transfers",
        headers=nodes.worker(ZJ, rid),
        json={
            "from_province": SC,
            "reason": "new-employment",
            "name": record["name"],
            "new_employer_credit_code": "91350100M000100Y43",
        },
    )
    assert filed.status_code == 201, filed.text
    case_id = filed.json()["id"]
    await eventually(lambda: all_published(nodes.settings_for(ZJ).database_url))
    private_broker.stop()
    private_broker.start()  # empty: the letter is gone from the log

    sc = await nodes.start(SC)
    sending = await nodes.wait_sending(case_id, "received")  # Zhejiang sent it again
    answered = await sc.post(
        f"/api/v1/transfers/{sending['id']}/answer", headers=nodes.officer(SC), json={"decision": "send-sheet"}
    )
    assert answered.status_code == 200, answered.text
    await eventually(lambda: all_published(nodes.settings_for(SC).database_url))
    private_broker.stop()
    private_broker.start()  # the sheet is gone from the log as well

    done = await nodes.wait_state(ZJ, case_id, "completed")
    assert done["sheet"] is not None
    # the receipt travels on the second new log: the broker watch, the relay's resend backoff and the consumers'
    # rejoin all come after it; on two test workers sharing the machine this took more than 30 s (a CI run)
    await nodes.wait_sending(case_id, "completed", timeout_s=90)
    # each directed message is acknowledged by its receiver, so nothing is left to resend (the receipt for the
    # last message may still be on its way when the states are reached)
    for province in (SC, ZJ):
        url = nodes.settings_for(province).database_url
        await eventually(lambda url=url: acknowledged(url), timeout_s=30)


async def acknowledged(database_url: str) -> bool:
    """Whether every directed message of the node got its receipt."""
    waiting = await query(
        database_url,
        select(func.count()).select_from(outbox).where(awaiting_receipt(), outbox.c.destination.is_not(None)),
    )
    return waiting[0][0] == 0


async def inbox_partitions(database_url: str) -> dict[tuple[str, int], int]:
    """How many events the node took from each partition of its inbox."""
    rows = await query(
        database_url,
        select(inbox.c.topic, inbox.c.partition, func.count())
        .where(inbox.c.topic.like("%.inbox"))
        .group_by(inbox.c.topic, inbox.c.partition),
    )
    return {(row[0], row[1]): row[2] for row in rows}


async def snapshot(nodes: Federation, province: str, rid: str) -> dict[str, Any]:
    client, officer = nodes.clients[province], nodes.officer(province)
    cases = (await client.get("/api/v1/transfers", headers=officer)).json()["items"]
    record = (await client.get(f"/api/v1/insured-persons/{rid}", headers=officer)).json()
    settlements = (await client.get("/api/v1/settlements", headers=officer)).json()["items"]
    return {
        "cases": sorted((c["id"], c["state"], c["version"]) for c in cases),
        "record": (record.get("status"), record.get("version"), len(record.get("periods", []))),
        "settlements": len(settlements),
    }


async def test_two_provinces_ask_for_the_same_person_at_once(nodes: Federation) -> None:
    record = person(51)
    rid = record["resident_id"]
    await nodes.clients[SC].post("/api/v1/insured-persons", headers=nodes.officer(SC), json=record)
    body = {"from_province": SC, "reason": "claimant-relocation", "name": record["name"]}
    zj_case, cq_case = await asyncio.gather(
        nodes.clients[ZJ].post("/api/v1/transfers", headers=nodes.worker(ZJ, rid), json=body),
        nodes.clients[CQ].post("/api/v1/transfers", headers=nodes.worker(CQ, rid), json=body),
    )
    ids = {ZJ: zj_case.json()["id"], CQ: cq_case.json()["id"]}

    async def both_settled_at_sichuan() -> bool:
        found = [await nodes.sending_case(ids[p]) for p in (ZJ, CQ)]
        return all(f is not None for f in found)

    await eventually(both_settled_at_sichuan)
    states = sorted([(await nodes.sending_case(ids[p]) or {})["state"] for p in (ZJ, CQ)])
    assert states == ["received", "refused"], "exactly one proceeds"
    loser = ZJ if (await nodes.sending_case(ids[ZJ]) or {})["state"] == "refused" else CQ
    assert "already in progress" in (await nodes.wait_state(loser, ids[loser], "refused"))["refusal_reason"]

    # at one node, two simultaneous requests for the same person: one is accepted, one is a conflict
    other = person(52)
    await nodes.clients[SC].post("/api/v1/insured-persons", headers=nodes.officer(SC), json=other)
    body = {"from_province": SC, "reason": "claimant-relocation", "name": other["name"]}
    first, second = await asyncio.gather(
        *(
            nodes.clients[ZJ].post("/api/v1/transfers", headers=nodes.worker(ZJ, other["resident_id"]), json=body)
            for _ in range(2)
        )
    )
    assert sorted([first.status_code, second.status_code]) == [201, 409]


async def sending_case_at(nodes: Federation, province: str, receiving_case: str, state: str) -> dict[str, Any]:
    """The sending case at ``province`` answering ``receiving_case``, once it is in ``state``."""

    async def find() -> dict[str, Any] | None:
        listed = (
            await nodes.clients[province].get(
                "/api/v1/transfers", params={"side": "sending"}, headers=nodes.officer(province)
            )
        ).json()["items"]
        return next((c for c in listed if c["peer_case"] == receiving_case and c["state"] == state), None)

    async def found() -> bool:
        return await find() is not None

    await eventually(found, timeout_s=30)
    case = await find()
    assert case is not None
    return case


async def settlements_at(nodes: Federation, province: str) -> list[tuple[str, str, str, Decimal, str]]:
    items = (await nodes.clients[province].get("/api/v1/settlements", headers=nodes.officer(province))).json()["items"]
    return sorted((s["direction"], s["from_province"], s["to_province"], Decimal(s["amount"]), s["id"]) for s in items)


async def test_a_worker_moves_sichuan_zhejiang_sichuan_chongqing_and_keeps_one_entitlement(nodes: Federation) -> None:
    """One claimant, three transfers, counted by hand.

    Sichuan's record: 2014-01…2022-12 contributions (108 months); an earlier claim used 72 of them and granted
    18 months, of which 6 were drawn, so 12 months are unclaimed; 2 months drawn of the current entitlement.
    Art. 17: the 36 new months (3 years) give 12 months; with the 12 unclaimed months (second paragraph) 24,
    within the cap of 24; 2 drawn → **22 months remain**, at every step and at the end.

    1. Sichuan → Zhejiang: 22 × 1,870.00 × 1.5 = **61,710.00** Sichuan pays Zhejiang; in Zhejiang the 22 months
       are worth 22 × 2,090.00 = 45,980.00.
    2. Zhejiang → Sichuan: nothing was contributed in Zhejiang, but the claimant's fund came with the relationship
       and moves on with it: 22 × 2,090.00 × 1.5 = **68,970.00** Zhejiang pays Sichuan; 22 × 1,870.00 = 41,140.00.
    3. Sichuan → Chongqing: 22 × 1,870.00 × 1.5 = **61,710.00** Sichuan pays Chongqing. Chongqing's record: the
       108 months, 72 used, 12 unclaimed, 2 drawn; 22 months × 1,890.00 = **41,580.00** of benefit remain.

    (The old arithmetic added Sichuan's stale 72 used and 2 drawn to the sheet's on the way back: 144 used, 4
    drawn, nothing left.)
    """
    record = person(
        71,
        months_used=72,
        earlier_unclaimed_months=12,
        benefit_months_paid=2,
        periods=[
            {"start_month": "2014-01", "end_month": "2019-12", "kind": "actual"},
            {"start_month": "2020-01", "end_month": "2022-12", "kind": "actual"},
        ],
    )
    rid = record["resident_id"]
    assert (
        await nodes.clients[SC].post("/api/v1/insured-persons", headers=nodes.officer(SC), json=record)
    ).status_code == 201
    body = {"reason": "claimant-relocation", "name": record["name"]}
    journey = [(SC, ZJ, "61710.00", "45980.00"), (ZJ, SC, "68970.00", "41140.00"), (SC, CQ, "61710.00", "41580.00")]
    for sender, receiver, fund, worth in journey:
        filed = await nodes.clients[receiver].post(
            "/api/v1/transfers", headers=nodes.worker(receiver, rid), json=body | {"from_province": sender}
        )
        assert filed.status_code == 201, filed.text
        case_id = filed.json()["id"]
        sending = await sending_case_at(nodes, sender, case_id, "received")
        answered = await nodes.clients[sender].post(
            f"/api/v1/transfers/{sending['id']}/answer", headers=nodes.officer(sender), json={"decision": "send-sheet"}
        )
        assert answered.status_code == 200, answered.text
        done = await nodes.wait_state(receiver, case_id, "completed")
        assert (done["sheet"]["benefit_months_remaining"], done["sheet"]["fund_due"]) == (22, fund)
        assert (done["entitlement"]["entitled_months"], done["entitlement"]["remaining_months"]) == (24, 22)
        assert done["entitlement"]["remaining_amount"] == worth
        await sending_case_at(nodes, sender, case_id, "completed")

    final = (await nodes.clients[CQ].get(f"/api/v1/insured-persons/{rid}", headers=nodes.officer(CQ))).json()
    assert (final["status"], final["months_used"], final["benefit_months_paid"], final["earlier_unclaimed_months"]) == (
        "unemployed-claiming",
        72,
        2,
        12,
    )
    live = [p for p in final["periods"] if p["carried_out_by"] is None]
    assert (
        sum(
            int(p["end_month"][:4]) * 12
            + int(p["end_month"][5:7])
            - int(p["start_month"][:4]) * 12
            - int(p["start_month"][5:7])
            + 1
            for p in live
        )
        == 108
    )
    for province in (SC, ZJ):
        held = (
            await nodes.clients[province].get(f"/api/v1/insured-persons/{rid}", headers=nodes.officer(province))
        ).json()
        assert held["status"] == "transferred-out"
        assert all(p["carried_out_by"] is not None for p in held["periods"]), "no month stays live behind"

    # both sides list every settlement: what each province pays and what it is owed
    async def listed_on_both_sides() -> bool:
        return (
            len(await settlements_at(nodes, ZJ)) == 2
            and len(await settlements_at(nodes, CQ)) == 1
            and len(await settlements_at(nodes, SC)) == 3
        )

    await eventually(listed_on_both_sides, timeout_s=30)
    at_sc, at_zj, at_cq = [await settlements_at(nodes, p) for p in (SC, ZJ, CQ)]
    assert [row[:4] for row in at_sc] == [
        ("incoming", ZJ, SC, Decimal("68970.00")),
        ("outgoing", SC, ZJ, Decimal("61710.00")),
        ("outgoing", SC, CQ, Decimal("61710.00")),
    ]
    assert [row[:4] for row in at_zj] == [
        ("incoming", SC, ZJ, Decimal("61710.00")),
        ("outgoing", ZJ, SC, Decimal("68970.00")),
    ]
    assert [row[:4] for row in at_cq] == [("incoming", SC, CQ, Decimal("61710.00"))]
    owed_to_chongqing = at_cq[0][4]
    assert owed_to_chongqing in {row[4] for row in at_sc}, "the same settlement on both sides"
    incoming = await nodes.clients[ZJ].get(
        "/api/v1/settlements", params={"direction": "incoming"}, headers=nodes.officer(ZJ)
    )
    assert [s["from_province"] for s in incoming.json()["items"]] == [SC]

    # Sichuan pays Chongqing; Chongqing learns it, with the reference; only the payer may mark it paid
    assert_problem(
        await nodes.clients[CQ].post(f"/api/v1/settlements/{owed_to_chongqing}/paid", headers=nodes.officer(CQ)), 409
    )
    paid = await nodes.clients[SC].post(
        f"/api/v1/settlements/{owed_to_chongqing}/paid",
        headers=nodes.officer(SC),
        json={"payment_reference": "SC-2026-12-0007"},
    )
    assert (paid.status_code, paid.json()["status"]) == (200, "paid"), paid.text

    async def chongqing_knows() -> bool:
        items = (await nodes.clients[CQ].get("/api/v1/settlements", headers=nodes.officer(CQ))).json()["items"]
        return [(s["status"], s["payment_reference"]) for s in items] == [("paid", "SC-2026-12-0007")]

    await eventually(chongqing_knows, timeout_s=30)

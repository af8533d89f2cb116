"""Properties of repeated transfers: one worker moves among four provinces, again and again, while the bus
reorders and duplicates the saga's messages, officers refuse and workers cancel (sometimes too late).

Each node is a real transfer service on a real database; messages are taken from each node's outbox and applied
at their destination in an order hypothesis chooses, some twice, and at the end the whole conversation is
delivered once more. Whatever happens:

* contribution months are conserved: the live periods are exactly the worker's original ones, all at one node;
* months used, benefit months paid and earlier unclaimed entitlement arrive unchanged, however often the worker
  moves (never doubled by a return to a province that held them before);
* the remaining entitlement is never negative and is the one the rules give for the original history;
* money is conserved: the fund that moves is the remaining entitlement at the sender's standard, and once it
  left the province where it was contributed it moves on with the claimant (one province at a time holds it);
  one settlement per completed transfer with money, seen by both provinces with the same amount and status;
* a person never holds two active relationships, and both sides of every transfer agree on its outcome.
"""

from __future__ import annotations

import contextlib
import itertools
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from labornet.insurance.adapters.tables import benefit_config, contribution_period, insured_person, settlement, transfer
from labornet.insurance.domain.transfer import TERMINAL, Reason, TransferRefused
from labornet.insurance.service_layer.records import PersonIn, add_person, ensure_config
from labornet.insurance.service_layer.transfers import TransferService
from labornet.shared.db import create_engine, outbox, readonly_sessionmaker, sessionmaker
from labornet.shared.envelope import Envelope
from labornet.shared.identifiers import make_resident_id
from labornet.shared.keys import ensure_node_keys
from labornet.shared.migrations import upgrade
from labornet.shared.outbox import Outbox, decode_headers
from labornet.shared.signing import Signer
from labornet.shared.workdays import WorkCalendar

SC, ZJ, CQ, GZ = PROVINCES = ("510000", "330000", "500000", "520000")
ACTIVE_STATUSES = ("insured-employed", "unemployed-claiming")
EMPLOYER = "91350100M000100Y43"


@dataclass
class Node:
    province: str
    engine: AsyncEngine
    service: TransferService
    last_taken: int = 0


@pytest.fixture
async def network(new_database_url: Callable[[], Awaitable[str]], tmp_path: Path) -> AsyncIterator[dict[str, Node]]:
    """Four provinces' transfer services, shared by every example (each example moves a worker of its own)."""
    nodes = {}
    for province in PROVINCES:
        keys = ensure_node_keys(province, tmp_path / "keys" / province, tmp_path / "trust-list.json")
        engine = create_engine(await new_database_url())
        await upgrade(engine, "labornet.insurance:migrations")
        sessions = sessionmaker(engine)
        async with sessions() as session, session.begin():
            await ensure_config(session, province)
        service = TransferService(
            province=province,
            sessions=sessions,
            outbox=Outbox(province, "insurance", Signer.from_file(keys.signing_key, province)),
            calendar=WorkCalendar(),
            members=list(PROVINCES),
        )
        nodes[province] = Node(province, engine, service)
    yield nodes
    for node in nodes.values():
        await node.engine.dispose()


# The rules, written out independently of the code under test ---------------------------------------------------


def duration(months: int) -> int:
    """失业保险条例 art. 17 first paragraph (art. 14: under one year, nothing)."""
    return 0 if months < 12 else 12 if months < 60 else 18 if months < 120 else 24


def remaining_of(history: History) -> int:
    """Art. 17 second paragraph: unclaimed months of the earlier entitlement are combined with the new, cap 24."""
    combined = min(duration(history.months - history.months_used) + history.earlier_unclaimed, 24)
    return max(combined - history.paid, 0)


def cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


# What hypothesis draws -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class History:
    claiming: bool
    spans: tuple[int, ...]  # lengths of consecutive contribution periods, in months
    months_used: int
    earlier_unclaimed: int
    paid: int

    @property
    def months(self) -> int:
        return sum(self.spans)


@dataclass(frozen=True)
class Move:
    to: str
    fate: str  # complete | refuse | cancel (the worker withdraws at some moment; the sheet may win)


@st.composite
def histories(draw: st.DrawFn) -> History:
    spans = tuple(draw(st.lists(st.integers(1, 60), min_size=1, max_size=4)))
    months = sum(spans)
    used = draw(st.integers(0, max(months - 1, 0)))
    unclaimed = draw(st.integers(0, 24)) if used else 0
    claiming = draw(st.booleans())
    paid = draw(st.integers(0, min(duration(months - used) + unclaimed, 24))) if claiming else 0
    return History(claiming, spans, used, unclaimed, paid)


moves = st.lists(
    st.builds(Move, st.sampled_from(PROVINCES), st.sampled_from(["complete", "complete", "refuse", "cancel"])),
    min_size=1,
    max_size=5,
)


# Driving the network ---------------------------------------------------------------------------------------------


async def new_messages(node: Node) -> list[tuple[str, Envelope]]:
    """Directed messages the node committed since the last look: (destination, event)."""
    async with readonly_sessionmaker(node.engine)() as session:
        query = select(outbox).where(outbox.c.id > node.last_taken).order_by(outbox.c.id)
        rows = (await session.execute(query)).mappings().all()
    fresh = []
    for row in rows:
        node.last_taken = row["id"]
        envelope = Envelope.from_kafka(row["message_key"], row["payload"], decode_headers(row["headers"]))
        fresh.append((envelope.destprovince or "", envelope))
    return fresh


async def deliver(nodes: dict[str, Node], destination: str, envelope: Envelope) -> bool:
    handler = nodes[destination].service.handlers().get(envelope.type)
    if handler is None:
        return True
    try:
        async with sessionmaker(nodes[destination].engine)() as session, session.begin():
            await handler(session, envelope)
    except LookupError:  # it overtook the message it answers: the inbox retries it later
        return False
    return True


async def person_at(node: Node, resident_id: str) -> dict[str, Any] | None:
    async with readonly_sessionmaker(node.engine)() as session:
        row = (
            (await session.execute(select(insured_person).where(insured_person.c.resident_id == resident_id)))
            .mappings()
            .one_or_none()
        )
    return dict(row) if row is not None else None


async def active_at(nodes: dict[str, Node], resident_id: str) -> list[str]:
    found = []
    for province, node in nodes.items():
        person = await person_at(node, resident_id)
        if person is not None and person["status"] in ACTIVE_STATUSES:
            found.append(province)
    return found


async def live_months(node: Node, resident_id: str) -> list[tuple[date, date]]:
    async with readonly_sessionmaker(node.engine)() as session:
        rows = await session.execute(
            select(contribution_period.c.start_month, contribution_period.c.end_month).where(
                contribution_period.c.resident_id == resident_id, contribution_period.c.carried_out_by.is_(None)
            )
        )
        return sorted((start, end) for start, end in rows)


async def cases_of(node: Node, resident_id: str) -> list[dict[str, Any]]:
    async with readonly_sessionmaker(node.engine)() as session:
        rows = await session.execute(select(transfer).where(transfer.c.resident_id == resident_id))
        return [dict(r) for r in rows.mappings()]


async def settlements_of(node: Node, resident_id: str) -> list[dict[str, Any]]:
    async with readonly_sessionmaker(node.engine)() as session:
        rows = await session.execute(select(settlement).where(settlement.c.resident_id == resident_id))
        return [dict(r) for r in rows.mappings()]


async def standard_of(node: Node) -> tuple[Decimal, Decimal]:
    async with readonly_sessionmaker(node.engine)() as session:
        row = (await session.execute(select(benefit_config))).mappings().one()
    return Decimal(row["monthly_standard"]), Decimal(row["fund_multiplier"])


async def settle(
    nodes: dict[str, Node],
    rng: random.Random,
    resident_id: str,
    actions: list[Any],
    conversation: list[tuple[str, Envelope]],
) -> None:
    """Run the officers' and the worker's actions and deliver every message, in a random order with duplicates;
    after each step at most one province holds an active relationship."""
    in_flight: list[tuple[str, Envelope]] = []
    pending = list(actions)
    for _ in range(400):
        for node in nodes.values():
            for message in await new_messages(node):
                conversation.append(message)
                in_flight.extend([message] * rng.choice([1, 1, 2]))
        ready = [a for a in pending if await a.ready()]
        choices = ["act"] * len(ready) + ["deliver"] * (2 * bool(in_flight))
        if not choices:
            if pending:  # an action waits for a message that was dropped as stale: give up on it
                pending.clear()
                continue
            return
        if rng.choice(choices) == "act":
            action = rng.choice(ready)
            pending.remove(action)
            await action.run()
        else:
            destination, envelope = in_flight.pop(rng.randrange(len(in_flight)))
            if not await deliver(nodes, destination, envelope):
                in_flight.append((destination, envelope))
        assert len(await active_at(nodes, resident_id)) <= 1, "never two active relationships"
    pytest.fail("the transfers did not settle within 400 steps")


@dataclass
class Answer:
    """The sending office's officer answers the contact letter once it has arrived."""

    node: Node
    receiving_case: str
    send_sheet: bool

    async def ready(self) -> bool:
        return await self.sending_case() is not None

    async def sending_case(self) -> str | None:
        async with readonly_sessionmaker(self.node.engine)() as session:
            return (
                await session.execute(
                    select(transfer.c.id).where(
                        transfer.c.side == "sending", transfer.c.peer_case == self.receiving_case
                    )
                )
            ).scalar()

    async def run(self) -> None:
        case_id = await self.sending_case()
        assert case_id is not None
        with contextlib.suppress(TransferRefused):  # cancelled before the officer got to it, or refused on arrival
            await self.node.service.answer(case_id, send_sheet=self.send_sheet, reason="no record of contributions")


@dataclass
class Cancel:
    """The worker withdraws the request at the receiving office, at any moment."""

    node: Node
    receiving_case: str

    async def ready(self) -> bool:
        return True

    async def run(self) -> None:
        with contextlib.suppress(TransferRefused):  # answered already: too late, as the rules say
            await self.node.service.cancel(self.receiving_case)


residents = itertools.count()


def new_resident() -> str:
    n = next(residents)
    return make_resident_id("511602", date(1980, 1, 1) + timedelta(days=n // 900), n % 900 + 1)


@settings(
    max_examples=60,
    deadline=timedelta(seconds=20),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories(), journey=moves, seed=st.integers(0, 2**32 - 1))
async def test_repeated_transfers_carry_everything_once(
    network: dict[str, Node], history: History, journey: list[Move], seed: int
) -> None:
    rng = random.Random(seed)
    resident_id = new_resident()
    start, month = date(2000, 1, 1), 0
    periods = []
    for span in history.spans:
        first = date(start.year + (start.month - 1 + month) // 12, (start.month - 1 + month) % 12 + 1, 1)
        month += span
        last = date(start.year + (start.month - 2 + month) // 12, (start.month - 2 + month) % 12 + 1, 1)
        periods.append({"start_month": f"{first:%Y-%m}", "end_month": f"{last:%Y-%m}", "kind": "actual"})
    record: dict[str, Any] = {
        "resident_id": resident_id,
        "name": "王晓明",
        "hukou_division": "511602",
        "status": "unemployed-claiming" if history.claiming else "insured-employed",
        "months_used": history.months_used,
        "benefit_months_paid": history.paid,
        "periods": periods,
    }
    if history.earlier_unclaimed:
        record["earlier_unclaimed_months"] = history.earlier_unclaimed
    async with sessionmaker(network[SC].engine)() as session, session.begin():
        await add_person(session, SC, PersonIn.model_validate(record))
    original = await live_months(network[SC], resident_id)
    holder = SC
    conversation: list[tuple[str, Envelope]] = []
    expected_remaining = remaining_of(history)
    assert expected_remaining >= 0

    for move in journey:
        receiving, sending = network[move.to], network[holder]
        try:
            case = await receiving.service.file(
                resident_id=resident_id,
                name="王晓明",
                from_province=holder,
                reason=Reason.CLAIMANT_RELOCATION if history.claiming else Reason.NEW_EMPLOYMENT,
                new_employer=None if history.claiming else EMPLOYER,
                filed_by="worker",
            )
        except TransferRefused:
            assert move.to == holder, "only a request at the province already holding the relationship is refused"
            continue
        case_id = case.id
        actions: list[Any] = [Answer(sending, case_id, send_sheet=move.fate != "refuse")]
        if move.fate == "cancel":
            actions.append(Cancel(receiving, case_id))
        await settle(network, rng, resident_id, actions, conversation)

        (receiving_case,) = [c for c in await cases_of(receiving, resident_id) if c["id"] == case_id]
        (sending_case,) = [c for c in await cases_of(sending, resident_id) if c["peer_case"] == case_id]
        assert receiving_case["state"] in TERMINAL
        assert receiving_case["state"] == sending_case["state"], "both sides agree on the outcome"
        if receiving_case["state"] != "completed":
            continue

        # the money: the remaining entitlement at the sender's standard; it leaves the province where it was
        # contributed (a year at least) and moves on with the claimant from every province it reached
        sheet = receiving_case["sheet"]
        standard, multiplier = await standard_of(sending)
        assert sheet["benefit_months_remaining"] == (expected_remaining if history.claiming else 0)
        moves_money = history.claiming and expected_remaining > 0 and history.months >= 12
        assert Decimal(sheet["fund_due"]) == (cents(expected_remaining * standard * multiplier) if moves_money else 0)
        holder = move.to

        # the worker's history arrived whole, and nothing of it stayed behind
        person = await person_at(network[holder], resident_id)
        assert person is not None and person["status"] in ACTIVE_STATUSES
        carried = (person["months_used"], person["benefit_months_paid"], person["earlier_unclaimed_months"])
        assert carried == (history.months_used, history.paid, history.earlier_unclaimed), (
            "months used, paid and unclaimed are carried, never doubled"
        )
        assert receiving_case["entitlement"]["remaining_months"] == expected_remaining >= 0

    # contribution months are conserved and live only where the relationship is
    assert await active_at(network, resident_id) == [holder]
    for province, node in network.items():
        assert await live_months(node, resident_id) == (original if province == holder else [])

    # money: one settlement per completed transfer that moved money, the same on both sides
    sheets = {}
    for node in network.values():
        for case in await cases_of(node, resident_id):
            if case["side"] == "sending" and case["state"] == "completed":
                sheets[case["id"]] = Decimal(case["sheet"]["fund_due"])
    outgoing, incoming = {}, {}
    for province, node in network.items():
        for row in await settlements_of(node, resident_id):
            side = outgoing if row["direction"] == "outgoing" else incoming
            side[row["id"]] = (row["from_province"], row["to_province"], Decimal(row["amount"]), row["status"])
            if row["direction"] == "outgoing":
                assert row["from_province"] == province and row["transfer_id"] in sheets
                assert Decimal(row["amount"]) == sheets[row["transfer_id"]]
    assert len(outgoing) == sum(1 for amount in sheets.values() if amount > 0), "one settlement, never of nothing"
    assert incoming == outgoing, "the receiving province sees every settlement owed to it"

    # the payer pays each: the receiving province learns it, with the reference
    for settlement_id, (payer, _receiver, _, _) in outgoing.items():
        await network[payer].service.mark_paid(settlement_id, by="officer", reference=f"PAY-{settlement_id[-6:]}")
    await settle(network, rng, resident_id, [], conversation)
    for node in network.values():
        for row in await settlements_of(node, resident_id):
            assert (row["status"], row["payment_reference"]) == ("paid", f"PAY-{row['id'][-6:]}")

    # the whole conversation once more, in another order: nothing changes
    before = [await cases_of(node, resident_id) for node in network.values()]
    replay = list(conversation)
    rng.shuffle(replay)
    for destination, envelope in replay:
        await deliver(network, destination, envelope)
    assert [await cases_of(node, resident_id) for node in network.values()] == before

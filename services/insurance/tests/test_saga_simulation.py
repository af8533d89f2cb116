"""The transfer saga under a hostile bus: two real nodes' services on real databases, their directed messages
taken from each node's outbox and delivered in random order, duplicated, and with the worker's cancellation and
the sending officer's answer racing each other — then every message delivered once more.

The platform inbox already drops duplicates (tests/integration); this test bypasses it on purpose, so the saga's
own state machine must hold the invariants of issue 4 on its own:

* every transfer ends in exactly one terminal state, and both sides agree on it;
* a person never holds two active relationships;
* contribution months are never lost or double-counted across the two provinces;
* a settlement exists exactly when the transfer completed with money to move, once.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from labornet.insurance.adapters.tables import contribution_period, insured_person, settlement, transfer
from labornet.insurance.domain.rules import ACTIVE, PersonStatus
from labornet.insurance.domain.transfer import TERMINAL, Reason, TransferRefused
from labornet.insurance.service_layer.records import PersonIn, add_person, ensure_config
from labornet.insurance.service_layer.transfers import TransferService
from labornet.shared.db import create_engine, outbox, readonly_sessionmaker, sessionmaker
from labornet.shared.envelope import Envelope
from labornet.shared.identifiers import make_resident_id
from labornet.shared.keys import NodeKeys
from labornet.shared.migrations import upgrade
from labornet.shared.outbox import Outbox, decode_headers
from labornet.shared.signing import Signer
from labornet.shared.workdays import WorkCalendar

SC, ZJ = "510000", "330000"
SEEDS = range(24)


@dataclass
class SagaNode:
    province: str
    engine: AsyncEngine
    service: TransferService
    delivered: set[int] = field(default_factory=set)


@pytest.fixture
async def pair(
    new_database_url: Callable[[], Awaitable[str]], node_keys: dict[str, NodeKeys], tmp_path: Path
) -> AsyncIterator[dict[str, SagaNode]]:
    nodes = {}
    for province in (SC, ZJ):
        engine = create_engine(await new_database_url())
        await upgrade(engine, "labornet.insurance:migrations")
        sessions = sessionmaker(engine)
        async with sessions() as session, session.begin():
            await ensure_config(session, province)
        service = TransferService(
            province=province,
            sessions=sessions,
            outbox=Outbox(province, "insurance", Signer.from_file(node_keys[province].signing_key, province)),
            calendar=WorkCalendar(),
            members=[SC, ZJ],
        )
        nodes[province] = SagaNode(province, engine, service)
    yield nodes
    for node in nodes.values():
        await node.engine.dispose()


async def new_messages(node: SagaNode) -> list[tuple[str, Envelope]]:
    """Directed messages this node has committed to its outbox and that were not yet taken: (destination, event)."""
    async with readonly_sessionmaker(node.engine)() as session:
        rows = (await session.execute(select(outbox).order_by(outbox.c.id))).mappings().all()
    fresh = []
    for row in rows:
        if row["id"] in node.delivered:
            continue
        node.delivered.add(row["id"])
        envelope = Envelope.from_kafka(row["message_key"], row["payload"], decode_headers(row["headers"]))
        fresh.append((envelope.destprovince or "", envelope))
    return fresh


async def deliver(nodes: dict[str, SagaNode], destination: str, envelope: Envelope) -> bool:
    """Apply one message at its destination in one transaction, as the inbox would; False if it must wait."""
    node = nodes[destination]
    handler = node.service.handlers()[envelope.type]
    try:
        async with sessionmaker(node.engine)() as session, session.begin():
            await handler(session, envelope)
    except LookupError:  # overtook the message it answers: the inbox retries it later
        return False
    return True


async def state_of(nodes: dict[str, SagaNode], resident_id: str) -> dict[str, Any]:
    snapshot: dict[str, Any] = {}
    for province, node in nodes.items():
        async with readonly_sessionmaker(node.engine)() as session:
            cases = (await session.execute(select(transfer.c.side, transfer.c.state, transfer.c.version))).all()
            person = (
                await session.execute(
                    select(insured_person.c.status, insured_person.c.version).where(
                        insured_person.c.resident_id == resident_id
                    )
                )
            ).one_or_none()
            periods = (
                await session.execute(
                    select(
                        contribution_period.c.start_month,
                        contribution_period.c.end_month,
                        contribution_period.c.carried_out_by.is_(None),
                    ).where(contribution_period.c.resident_id == resident_id)
                )
            ).all()
            settlements = (await session.execute(select(settlement.c.amount))).scalars().all()
        snapshot[province] = {
            "cases": sorted(tuple(c) for c in cases),
            "person": tuple(person) if person else None,
            "periods": sorted(tuple(p) for p in periods),
            "settlements": sorted(settlements),
        }
    return snapshot


def months(periods: list[tuple[date, date, bool]], *, live_only: bool) -> int:
    return sum(
        (end.year - start.year) * 12 + end.month - start.month + 1
        for start, end, live in periods
        if live or not live_only
    )


@pytest.mark.parametrize("seed", SEEDS)
async def test_random_interleavings_keep_the_saga_invariants(pair: dict[str, SagaNode], seed: int) -> None:
    rng = random.Random(seed)
    resident_id = make_resident_id("511602", date(1988, 3, 7), seed + 1)
    claiming = rng.random() < 0.7
    async with sessionmaker(pair[SC].engine)() as session, session.begin():
        await add_person(
            session,
            SC,
            PersonIn.model_validate(
                {
                    "resident_id": resident_id,
                    "name": "王晓明",
                    "hukou_division": "511602",
                    "status": "unemployed-claiming" if claiming else "insured-employed",
                    "benefit_months_paid": 3 if claiming else 0,
                    "periods": [
                        {"start_month": "2017-01", "end_month": "2020-12", "kind": "actual"},
                        {"start_month": "2021-01", "end_month": "2022-12", "kind": "former-migrant"},
                    ],
                }
            ),
        )
    original_months = 72

    case = await pair[ZJ].service.file(
        resident_id=resident_id,
        name="王晓明",
        from_province=SC,
        reason=Reason.CLAIMANT_RELOCATION if claiming else Reason.NEW_EMPLOYMENT,
        new_employer=None if claiming else "91350100M000100Y43",
        filed_by="worker",
    )
    officer_decision = rng.choice(["send-sheet", "refuse", None])  # None: the worker cancels first, unanswered
    worker_cancels = officer_decision is None or rng.random() < 0.5
    in_flight: list[tuple[str, Envelope]] = []
    answered = cancelled = False
    for _ in range(200):
        for node in pair.values():
            for message in await new_messages(node):
                in_flight.extend([message] * rng.choice([1, 1, 2]))  # some are delivered twice
        actions: list[str] = []
        if worker_cancels and not cancelled:
            actions.append("cancel")
        if officer_decision and not answered:
            actions.append("answer")
        if in_flight:
            actions.extend(["deliver"] * 3)
        if not actions:
            break
        action = rng.choice(actions)
        if action == "cancel":
            cancelled = True
            with contextlib.suppress(TransferRefused):  # the answer came first: too late to cancel, as the rules say
                await pair[ZJ].service.cancel(case.id)
        elif action == "answer":
            async with readonly_sessionmaker(pair[SC].engine)() as session:
                sending = (
                    await session.execute(select(transfer.c.id, transfer.c.state).where(transfer.c.side == "sending"))
                ).one_or_none()
            if sending is None:
                continue  # the contact letter has not arrived yet
            answered = True
            with contextlib.suppress(TransferRefused):  # cancelled before the officer got to it
                await pair[SC].service.answer(
                    sending.id, send_sheet=officer_decision == "send-sheet", reason="no record of contributions"
                )
        else:
            index = rng.randrange(len(in_flight))
            destination, envelope = in_flight.pop(index)
            if not await deliver(pair, destination, envelope):
                in_flight.append((destination, envelope))
    else:
        pytest.fail("the saga did not settle within 200 steps")

    final = await state_of(pair, resident_id)
    (zj_case,) = [c for c in final[ZJ]["cases"] if c[0] == "receiving"]
    (sc_case,) = [c for c in final[SC]["cases"] if c[0] == "sending"]
    assert zj_case[1] in TERMINAL and sc_case[1] in TERMINAL
    assert zj_case[1] == sc_case[1], f"both sides agree: {final}"
    outcome = zj_case[1]

    active = [p for p in (SC, ZJ) if final[p]["person"] and final[p]["person"][0] in ACTIVE]
    assert active == ([ZJ] if outcome == "completed" else [SC]), "exactly one active relationship"
    live = sum(months(final[p]["periods"], live_only=True) for p in (SC, ZJ))
    assert live == original_months, "no month lost or counted twice"
    if outcome == "completed":
        assert final[SC]["person"][0] == PersonStatus.TRANSFERRED
        assert months(final[ZJ]["periods"], live_only=True) == original_months
        expected = [Decimal("42075.00")] if claiming else []  # an employed mover moves no money: no settlement
        assert [Decimal(str(a)) for a in final[SC]["settlements"]] == expected
    else:
        assert final[SC]["settlements"] == []
        assert final[ZJ]["person"] is None

    # the whole conversation once more, in yet another order: nothing changes
    replay = []
    for node in pair.values():
        node.delivered.clear()
        replay.extend(await new_messages(node))
    rng.shuffle(replay)
    for destination, envelope in replay:
        assert await deliver(pair, destination, envelope)
    assert await state_of(pair, resident_id) == final

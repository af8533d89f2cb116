"""Partners' vacancy events applied in runs (one transaction, one handler call for many events) leave the replica
exactly as applying them one by one does; subscriptions are matched against each vacancy's last version of the run.

Sichuan's real vacancy service publishes, updates and closes vacancies; its outbox holds the signed events. Three
Zhejiang replicas on real databases receive the same stream, with replays of earlier events mixed in:

* ``single`` applies every event in its own transaction (``apply_event``);
* ``runs`` applies runs of random length through ``apply_events`` (what the inbox consumer does);
* ``newest`` applies, one by one, only the last version of each vacancy of each run: the matches ``runs`` must hold.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from labornet.jobs.adapters.brands import FixedBrandRegister
from labornet.jobs.adapters.tables import match, subscription, vacancy
from labornet.jobs.domain.vacancy import Status, VacancyChanges, VacancyDraft
from labornet.jobs.service_layer.vacancies import VacancyService
from labornet.shared.db import create_engine, sessionmaker, utcnow
from labornet.shared.divisions import load_divisions
from labornet.shared.envelope import Envelope, encode_data, new_event_id
from labornet.shared.inbox import RuleViolation
from labornet.shared.migrations import upgrade
from labornet.shared.outbox import Outbox
from labornet.shared.signing import Signer, generate_private_key, key_id_for
from labornet.shared.testing import outbox_events

MIGRATIONS = "labornet.jobs:migrations"
SC, ZJ = "510000", "330000"
TITLES = (("川菜厨师", "5120"), ("电焊工", "7212"), ("叉车司机", "8343"), ("育婴员", "5311"))
DIVISIONS = ("510104", "510105", "510106", "511302")
# Zhejiang job seekers: by occupation, by district, by salary, by keyword, by target group
SUBSCRIPTIONS: tuple[dict[str, Any], ...] = (
    {"occupation_codes": ["5120"]},
    {"occupation_codes": ["7"], "min_salary": 7000},
    {"division_codes": ["510104"]},
    {"provinces": [SC], "keywords": ["司机"]},
    {"provinces": [SC], "target_group": "migrant-workers"},
    {"occupation_codes": ["5311"], "division_codes": ["511300"]},
)


def draft(n: int, rng: random.Random) -> VacancyDraft:
    title, occupation = rng.choice(TITLES)
    low = rng.randrange(4000, 8000, 500)
    return VacancyDraft.model_validate(
        {
            "employer_name": f"成都第{n}劳务有限公司",
            "employer_credit_code": "91350100M000100Y43",
            "title": title,
            "occupation_code": occupation,
            "division_code": rng.choice(DIVISIONS),
            "headcount": rng.randint(1, 30),
            "salary_min": low,
            "salary_max": low + rng.randrange(0, 3000, 500),
            "employment_type": "full-time",
            "target_groups": rng.sample(
                ["migrant-workers", "college-graduates", "lifted-out-of-poverty"], rng.randint(0, 2)
            ),
            "contact": "028-80000000",
            "closing_date": (date.today() + timedelta(days=60)).isoformat(),
        }
    )


def change(rng: random.Random) -> VacancyChanges:
    title, occupation = rng.choice(TITLES)
    low = rng.randrange(4000, 8000, 500)
    options: list[dict[str, Any]] = [
        {"title": title, "occupation_code": occupation},
        {"salary_min": low, "salary_max": low + 1500},
        {"division_code": rng.choice(DIVISIONS)},
        {"headcount": rng.randint(1, 30)},
    ]
    return VacancyChanges.model_validate(rng.choice(options))


def outbox(province: str) -> Outbox:
    key = generate_private_key()
    return Outbox(province, "jobs", Signer(key_id_for(province, key.public_key()), key))


def service(engine: AsyncEngine, province: str, outbox: Outbox) -> VacancyService:
    return VacancyService(
        province=province,
        sessions=sessionmaker(engine),
        outbox=outbox,
        divisions=load_divisions(),
        brands=FixedBrandRegister(),
    )


async def sichuan_stream(engine: AsyncEngine, seed: int, vacancies: int = 12, changes: int = 40) -> list[Envelope]:
    """Sichuan's vacancy events: publishes, updates and closes in a random order, as its outbox signed them."""
    rng = random.Random(seed)
    sichuan = service(engine, SC, outbox(SC))
    held: dict[str, int] = {}
    for n in range(vacancies):
        posted = await sichuan.publish(draft(n, rng))
        held[posted["id"]] = posted["version"]
    for _ in range(changes):
        vacancy_id = rng.choice(sorted(held))
        if rng.random() < 0.15:
            await sichuan.close(vacancy_id, Status.WITHDRAWN, held.pop(vacancy_id))
            if not held:
                break
        else:
            held[vacancy_id] = (await sichuan.update(vacancy_id, change(rng), held[vacancy_id]))["version"]
    events, _ = await outbox_events(engine)
    return events


def with_replays(events: list[Envelope], rng: random.Random) -> list[Envelope]:
    """The stream with a fifth of its events delivered a second time, later (a broker replay, a resend)."""
    delivered = list(events)
    for event in rng.sample(events, len(events) // 5):
        position = delivered.index(event)
        delivered.insert(rng.randint(position + 1, len(delivered)), event)
    return delivered


def runs_of(events: list[Envelope], rng: random.Random) -> list[list[Envelope]]:
    runs, at = [], 0
    while at < len(events):
        size = rng.choice((1, 2, 3, 7, 20, 60))
        runs.append(events[at : at + size])
        at += size
    return runs


def newest_of(run: list[Envelope]) -> list[Envelope]:
    """The last version of each vacancy in ``run``, in the order those versions came."""
    best: dict[str, Envelope] = {}
    for event in run:
        held = best.get(event.partitionkey)
        if held is None or event.json()["version"] > held.json()["version"]:
            best[event.partitionkey] = event
    return sorted(best.values(), key=run.index)


def replica_changes() -> dict[str, float]:
    return {
        result: REGISTRY.get_sample_value("labornet_jobs_replica_changes_total", {"result": result}) or 0.0
        for result in ("inserted", "updated", "stale")
    }


async def subscribed(engine: AsyncEngine) -> None:
    async with sessionmaker(engine)() as session, session.begin():
        await session.execute(
            insert(subscription),
            [
                {
                    "id": f"sub-{n}",
                    "worker": f"worker-{n}",
                    "occupation_codes": criteria.get("occupation_codes", []),
                    "provinces": criteria.get("provinces", []),
                    "division_codes": criteria.get("division_codes", []),
                    "min_salary": criteria.get("min_salary"),
                    "keywords": criteria.get("keywords", []),
                    "target_group": criteria.get("target_group"),
                    "active": True,
                    "created_at": utcnow(),
                }
                for n, criteria in enumerate(SUBSCRIPTIONS)
            ],
        )


async def state(engine: AsyncEngine) -> tuple[list[dict[str, Any]], set[tuple[Any, ...]]]:
    async with sessionmaker(engine)() as session:
        rows = [dict(row) for row in (await session.execute(select(vacancy).order_by(vacancy.c.id))).mappings()]
        matches = {
            tuple(row)
            for row in await session.execute(
                select(match.c.subscription_id, match.c.vacancy_id, match.c.vacancy_version, match.c.vacancy_status)
            )
        }
    return rows, matches


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_runs_leave_the_replica_as_one_by_one_and_match_each_vacancy_s_last_version(
    new_database_url: Callable[[], Awaitable[str]], seed: int
) -> None:
    engines = {name: create_engine(await new_database_url()) for name in ("sichuan", "single", "runs", "newest")}
    try:
        for name, engine in engines.items():
            await upgrade(engine, MIGRATIONS)
            if name != "sichuan":
                await subscribed(engine)
        rng = random.Random(seed)
        written = await sichuan_stream(engines["sichuan"], seed)
        delivered = with_replays(written, rng)
        runs = runs_of(delivered, rng)
        assert any(len(run) > 1 for run in runs)
        zhejiang = {name: service(engines[name], ZJ, outbox(ZJ)) for name in ("single", "runs", "newest")}

        before = replica_changes()
        for event in delivered:
            async with sessionmaker(engines["single"])() as session, session.begin():
                await zhejiang["single"].apply_event(session, event)
        one_by_one = {k: v - before[k] for k, v in replica_changes().items()}

        before = replica_changes()
        for run in runs:
            async with sessionmaker(engines["runs"])() as session, session.begin():
                await zhejiang["runs"].apply_events(session, run)
        in_runs = {k: v - before[k] for k, v in replica_changes().items()}

        for run in runs:
            for event in newest_of(run):
                async with sessionmaker(engines["newest"])() as session, session.begin():
                    await zhejiang["newest"].apply_event(session, event)

        single_rows, single_matches = await state(engines["single"])
        run_rows, run_matches = await state(engines["runs"])
        _, newest_matches = await state(engines["newest"])
        assert run_rows == single_rows, "runs and single events leave the same replica"
        assert len(run_rows) == len({event.partitionkey for event in delivered})
        assert in_runs == one_by_one, "every event is counted inserted, updated or stale as it would be alone"
        assert one_by_one["stale"] >= len(delivered) - len(written), "every replay is stale"
        assert run_matches == newest_matches, "each vacancy is matched in its last version of the run"
        assert run_matches, "the stream has vacancies the subscriptions accept"
        assert {m[:2] for m in run_matches} <= {m[:2] for m in single_matches}
    finally:
        for engine in engines.values():
            await engine.dispose()


async def test_a_run_holding_an_event_that_breaks_a_rule_is_refused_whole(
    new_database_url: Callable[[], Awaitable[str]],
) -> None:
    """A run with one bad event raises, and the run's transaction writes nothing: the consumer then applies its
    events one by one and quarantines the bad one alone (the inbox's split, tested with the bus)."""
    sichuan_db, zhejiang_db = create_engine(await new_database_url()), create_engine(await new_database_url())
    try:
        for engine in (sichuan_db, zhejiang_db):
            await upgrade(engine, MIGRATIONS)
        first, second, *_ = await sichuan_stream(sichuan_db, seed=7, vacancies=3, changes=0)
        data = {**second.json(), "occupation_code": "0000"}  # not an occupation of the classification
        bad = dataclasses.replace(second, id=new_event_id(), data=encode_data(data))
        zhejiang = service(zhejiang_db, ZJ, outbox(ZJ))
        with pytest.raises(RuleViolation, match="occupation"):
            async with sessionmaker(zhejiang_db)() as session, session.begin():
                await zhejiang.apply_events(session, [first, bad])
        rows, _ = await state(zhejiang_db)
        assert rows == []
    finally:
        await sichuan_db.dispose()
        await zhejiang_db.dispose()

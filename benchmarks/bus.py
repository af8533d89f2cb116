"""Bus benchmark: end-to-end event latency and throughput between two provinces on the embedded broker.

Sichuan writes vacancy events through its outbox (one transaction each); the relay publishes them; Zhejiang's
inbox consumer verifies the Ed25519 signature and applies each one in its own transaction. Latency is measured
from the event's time (set inside the writing transaction) to the moment the applying transaction commits.

    make bench                       # SQLite
    LABORNET_BENCH_POSTGRES_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/test make bench
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from labornet.shared.broker import EmbeddedBroker
from labornet.shared.db import inbox, readonly_sessionmaker, sessionmaker
from labornet.shared.envelope import Envelope
from labornet.shared.inbox import EventConsumer
from labornet.shared.kafka import ensure_topics, make_consumer, make_producer
from labornet.shared.keys import ensure_node_keys
from labornet.shared.outbox import Outbox, OutboxRelay
from labornet.shared.settings import Settings
from labornet.shared.signing import Signer, TrustListFile
from labornet.shared.testing import create_postgres_database, drop_postgres_database, platform_engine
from labornet.shared.topics import deadletter_topic, events_topic

EVENT_TYPE = "org.labornet.jobs.vacancy.published.v1"
replica = MetaData()
applied = Table(
    "bench_applied",
    replica,
    Column("n", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False, index=True),  # the handler updates the row it inserted
    Column("latency_s", Float, nullable=False),
)


async def apply(session: AsyncSession, envelope: Envelope) -> None:
    await session.execute(applied.insert().values(event_id=envelope.id, latency_s=0.0))
    latency = (datetime.now(UTC) - envelope.time).total_seconds()
    await session.execute(applied.update().where(applied.c.event_id == envelope.id).values(latency_s=latency))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def count(engine: AsyncEngine) -> int:
    async with sessionmaker(engine)() as session:
        return int((await session.execute(select(func.count()).select_from(applied))).scalar_one())


async def inbox_count(engine: AsyncEngine, consumer: str) -> int:
    async with sessionmaker(engine)() as session:
        query = select(func.count()).select_from(inbox).where(inbox.c.consumer == consumer)
        return int((await session.execute(query)).scalar_one())


async def run(rate: int, events: int, burst: int, backend: str) -> dict[str, object]:
    data_dir = Path(tempfile.mkdtemp(prefix="labornet-bench-"))
    broker = EmbeddedBroker(log_path=data_dir / "tansu.log")
    broker.start()
    base = os.environ.get("LABORNET_BENCH_POSTGRES_URL")
    databases: list[str] = []
    engines: dict[str, AsyncEngine] = {}
    settings: dict[str, Settings] = {}
    for province in ("510000", "330000"):
        ensure_node_keys(province, data_dir / "keys" / province, data_dir / "trust-list.json")
        if backend == "postgresql" and base:
            url, name = await create_postgres_database(base)
            databases.append(name)
        else:
            url = f"sqlite+aiosqlite:///{data_dir / f'{province}.sqlite3'}"
        settings[province] = Settings(  # type: ignore[call-arg]
            province=province,
            service="jobs",
            data_dir=data_dir,
            database_url=url,
            kafka_bootstrap_servers=broker.bootstrap_servers,
        )
        engines[province] = await platform_engine(url, replica)
    sc, zj = settings["510000"], settings["330000"]
    topic = events_topic("510000", "jobs")
    await ensure_topics(zj, [topic, deadletter_topic("330000", "jobs")])
    writer = Outbox("510000", "jobs", Signer.from_file(data_dir / "keys/510000/signing.key", "510000"))
    relay = OutboxRelay(
        sessionmaker(engines["510000"]),
        readonly_sessionmaker(engines["510000"]),
        lambda: make_producer(sc),
        writer,
        service="jobs",
    )
    consumer = EventConsumer(
        name="vacancies",
        province="330000",
        service="jobs",
        topics=[topic],
        handlers={EVENT_TYPE: apply},
        sessions=sessionmaker(engines["330000"]),
        outbox=Outbox("330000", "jobs", Signer.from_file(data_dir / "keys/330000/signing.key", "330000")),
        trust=TrustListFile(data_dir / "trust-list.json"),
        consumer_factory=lambda group: make_consumer(zj, group),
        deadletter_topic=deadletter_topic("330000", "jobs"),
    )
    tasks = [asyncio.create_task(relay.run()), asyncio.create_task(consumer.run())]
    await consumer.wait_assigned(60)

    async def write(n: int) -> None:
        async with sessionmaker(engines["510000"])() as session, session.begin():
            await writer.add(
                session,
                topic=topic,
                event_type=EVENT_TYPE,
                key=f"510000-V-{n}",
                data={"id": f"510000-V-{n}", "title": "川菜厨师", "salary_min": 6000},
            )

    async def wait_for(total: int, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while await count(engines["330000"]) < total:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {await count(engines['330000'])}/{total} applied")
            await asyncio.sleep(0.02)

    # 1. steady rate: end-to-end latency
    started = time.monotonic()
    for n in range(events):
        await write(n)
        await asyncio.sleep(max(0.0, started + (n + 1) / rate - time.monotonic()))
    await wait_for(events)
    async with sessionmaker(engines["330000"])() as session:
        latencies = [float(v) for v in (await session.execute(select(applied.c.latency_s))).scalars()]

    # 2. burst: how fast a backlog drains (write all, then relay + consume)
    burst_started = time.monotonic()
    for n in range(events, events + burst):
        await write(n)
    written_s = time.monotonic() - burst_started
    await wait_for(events + burst)
    drained_s = time.monotonic() - burst_started

    # 3. backlog: a consumer that joins late reads the whole topic; one transaction per record, then per run
    backlog: dict[str, float] = {}
    total = events + burst
    for batch_size in (1, EventConsumer.batch_size):
        name = f"backlog-{batch_size}"
        late = EventConsumer(
            name=name,
            province="330000",
            service="jobs",
            topics=[topic],
            handlers={EVENT_TYPE: apply},
            sessions=sessionmaker(engines["330000"]),
            outbox=consumer.outbox,
            trust=TrustListFile(data_dir / "trust-list.json"),
            consumer_factory=lambda group: make_consumer(zj, group),
            deadletter_topic=deadletter_topic("330000", "jobs"),
        )
        late.batch_size = batch_size
        late_started = time.monotonic()
        task = asyncio.create_task(late.run())
        deadline = late_started + 600
        while await inbox_count(engines["330000"], name) < total:
            if time.monotonic() > deadline:
                raise TimeoutError(f"backlog consumer {name} did not finish")
            await asyncio.sleep(0.05)
        backlog[f"batch_{batch_size}_per_s"] = round(total / (time.monotonic() - late_started), 1)
        await late.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    await consumer.stop()
    await relay.stop()
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for engine in engines.values():
        await engine.dispose()
    if base:
        for name in databases:
            await drop_postgres_database(base, name)
    broker.stop()
    ms = [v * 1000 for v in latencies]
    return {
        "backend": backend,
        "steady": {
            "events": events,
            "rate_per_s": rate,
            "latency_ms": {
                "p50": round(percentile(ms, 0.50), 1),
                "p95": round(percentile(ms, 0.95), 1),
                "p99": round(percentile(ms, 0.99), 1),
                "max": round(max(ms), 1),
                "mean": round(statistics.fmean(ms), 1),
            },
        },
        "burst": {
            "events": burst,
            "write_s": round(written_s, 2),
            "all_applied_s": round(drained_s, 2),
            "applied_per_s": round(burst / drained_s, 1),
        },
        "backlog": {"events": total, **backlog},
        "load_avg": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=100, help="events per second in the steady phase")
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=2000)
    args = parser.parse_args()
    backends = ["sqlite"] + (["postgresql"] if os.environ.get("LABORNET_BENCH_POSTGRES_URL") else [])
    results = [asyncio.run(run(args.rate, args.events, args.burst, backend)) for backend in backends]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

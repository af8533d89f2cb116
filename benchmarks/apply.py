"""Backlog benchmark: a jobs node catching up with a partner's backlog of real vacancy events.

Zhejiang's jobs node (uvicorn, exactly as ``labornet serve jobs`` runs it) imports N vacancies, and its relay
publishes the N signed ``vacancy.published`` events to its events topic on the embedded broker. Then, in the same
run, one after the other:

1. **anchor**: a raw aiokafka consumer (no group, every partition from the beginning) reads the whole topic, and the
   same process decodes and verifies every record's Ed25519 signature through the trust list (the irreducible
   per-event work of any consumer);
2. **LaborNet**: Sichuan's jobs node starts with an empty replica and applies the backlog through its
   ``vacancy-replica`` consumer (signature checks, the publishing rules, the replica upsert, subscription matching,
   the inbox rows). The rate is counted from the inbox rows' application times (first to last), and the node's CPU
   time per event from ``/proc``. A hundred Sichuan job seekers' subscriptions are in place, so matching has work.

    python -m benchmarks apply --events 5000
    LABORNET_BENCH_POSTGRES_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/test python -m benchmarks apply

Goal (issue 12): ≥ 2,000 events/s per jobs node on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import func, select

from benchmarks import chosen_backends, process_cpu_seconds
from benchmarks.imports import DIVISIONS, OCCUPATIONS, ZJ, jobs_node, prepare_provinces, release, write_csv
from labornet.jobs.adapters.tables import vacancy
from labornet.shared.broker import EmbeddedBroker, free_port
from labornet.shared.db import create_engine, inbox, outbox, readonly_sessionmaker
from labornet.shared.envelope import Envelope
from labornet.shared.signing import TrustListFile
from labornet.shared.testing import bearer
from labornet.shared.topics import events_topic

SC = "510000"
SUBSCRIPTIONS = 100


async def wait_ready(client: httpx.AsyncClient, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{client.base_url} was not ready within {timeout_s} s")
        await asyncio.sleep(0.3)


async def partitions_of(bootstrap: str, topic: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return [TopicPartition(topic, p["partition"]) for p in described.get("partitions") or ()]


async def published(url: str, topic: str) -> int:
    """Vacancy events of Zhejiang's outbox that its relay has sent to ``topic``."""
    engine = create_engine(url)
    try:
        async with readonly_sessionmaker(engine)() as session:
            query = (
                select(func.count()).select_from(outbox).where(outbox.c.topic == topic, outbox.c.sent_at.is_not(None))
            )
            return int((await session.execute(query)).scalar_one())
    finally:
        await engine.dispose()


async def raw_read(bootstrap: str, topic: str, trust: TrustListFile) -> dict[str, Any]:
    """Read the whole topic with a bare aiokafka consumer; then decode and verify each record (CPU only)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10, max_poll_records=500
    )
    partitions = await partitions_of(bootstrap, topic)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records = []
        started = time.perf_counter()
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
        read_s = time.perf_counter() - started
    finally:
        await consumer.stop()
    cpu = time.process_time()
    for record in records:
        trust.verify(Envelope.from_kafka(record.key, record.value, list(record.headers or ())))
    verify_s = time.process_time() - cpu
    return {
        "records": len(records),
        "raw_read_per_s": round(len(records) / read_s),
        "decode_verify_ms": round(1000 * verify_s / len(records), 3),
    }


async def drained(url: str, events: int, timeout_s: float = 1800) -> dict[str, Any]:
    """Wait until Sichuan's replica holds the N Zhejiang vacancies; the inbox rows' first and last times."""
    engine = create_engine(url)
    sessions = readonly_sessionmaker(engine)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            async with sessions() as session:
                held = (
                    await session.execute(
                        select(func.count()).select_from(vacancy).where(vacancy.c.owner_province == ZJ)
                    )
                ).scalar_one()
                if held >= events:
                    first, last, rows = (
                        await session.execute(
                            select(func.min(inbox.c.applied_at), func.max(inbox.c.applied_at), func.count()).where(
                                inbox.c.consumer == "vacancy-replica", inbox.c.origin_province == ZJ
                            )
                        )
                    ).one()
                    return {"held": held, "inbox_rows": rows, "first": first, "last": last}
            if time.monotonic() > deadline:
                raise SystemExit(f"Sichuan held {held} of {events} after {timeout_s} s")
            await asyncio.sleep(0.2)
    finally:
        await engine.dispose()


async def subscribe(client: httpx.AsyncClient, keys: Any) -> None:
    """A hundred Sichuan job seekers looking for a kind of work in a district of Zhejiang (about one match in
    five vacancies)."""
    for n in range(SUBSCRIPTIONS):
        worker = bearer(keys, "worker", sub=f"bench-worker-{n}")
        criteria: dict[str, Any] = {
            "provinces": [ZJ],
            "occupation_codes": [OCCUPATIONS[n % len(OCCUPATIONS)]],
            "division_codes": [DIVISIONS[n % len(DIVISIONS)]],
        }
        if n % 2:
            criteria["min_salary"] = 6000 + n * 10
        answer = await client.post("/api/v1/me/subscriptions", headers=worker, json=criteria)
        if answer.status_code != 201:
            raise SystemExit(f"subscription refused: {answer.status_code} {answer.text[:300]}")


def step(message: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


async def run(events: int, backend: str, base_url: str | None) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="labornet-apply-bench-"))
    keys, urls, created = await prepare_provinces(data_dir, [ZJ, SC], backend, base_url)
    trust = TrustListFile(data_dir / "trust-list.json")
    source = data_dir / "vacancies.csv"
    write_csv(source, events)
    broker = EmbeddedBroker(log_path=data_dir / "tansu.log")
    broker.start()
    topic = events_topic(ZJ, "jobs")
    ports = {p: free_port() for p in (ZJ, SC)}
    try:
        async with contextlib.AsyncExitStack() as stack:
            stack.enter_context(jobs_node(ZJ, ports[ZJ], data_dir, urls[ZJ], broker.bootstrap_servers))
            zj = await stack.enter_async_context(
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[ZJ]}", timeout=300)
            )
            step("Zhejiang starting")
            await wait_ready(zj)  # its topics exist: Sichuan's consumer has partitions to be assigned
            # Sichuan's job seekers subscribe first; its node is then stopped while the backlog builds up
            with jobs_node(SC, ports[SC], data_dir, urls[SC], broker.bootstrap_servers) as first:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[SC]}", timeout=300) as sc:
                    await wait_ready(sc)
                    # what starting a node costs (imports, migrations, clients), taken off the drain's CPU below
                    startup_cpu = process_cpu_seconds(first.pid)
                    step("Sichuan ready; subscribing")
                    await subscribe(sc, keys[SC])
            step("importing at Zhejiang")
            officer = bearer(keys[ZJ], "officer", sub="bench-officer")
            answer = await zj.post(
                "/api/v1/vacancies/imports",
                headers={**officer, "Content-Type": "text/csv"},
                content=source.read_bytes(),
            )
            if answer.status_code != 202:
                raise SystemExit(f"the import was refused: {answer.status_code} {answer.text[:500]}")
            deadline = time.monotonic() + 1800
            while await published(urls[ZJ], topic) < events:
                if time.monotonic() > deadline:
                    raise SystemExit("the backlog was not published within 30 min")
                await asyncio.sleep(1)
            step("backlog published; raw read")
            anchor = await raw_read(broker.bootstrap_servers, topic, trust)
            load_before = os.getloadavg()
            with jobs_node(SC, ports[SC], data_dir, urls[SC], broker.bootstrap_servers) as sc_proc:
                step("Sichuan draining")
                result = await drained(urls[SC], events)
                cpu = process_cpu_seconds(sc_proc.pid) - startup_cpu
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[SC]}", timeout=300) as sc:
                    matched = (await sc.get("/metrics")).text
            load_after = os.getloadavg()
    finally:
        await release(broker, created, base_url, data_dir)
    span = (result["last"] - result["first"]).total_seconds()
    rate = (result["inbox_rows"] - 1) / span if span > 0 else float("inf")
    matches = sum(
        float(line.rsplit(" ", 1)[1])
        for line in matched.splitlines()
        if line.startswith("labornet_jobs_matches_total{")
    )
    return {
        "backend": backend,
        "events": events,
        "anchor_raw_read_per_s": anchor["raw_read_per_s"],
        "anchor_decode_verify_ms": anchor["decode_verify_ms"],
        "applied_per_s": round(rate),
        "ratio_to_raw_read": round(rate / anchor["raw_read_per_s"], 4),
        "node_cpu_ms_per_event": round(1000 * cpu / events, 3),  # the start-up's CPU taken off
        "matches": int(matches),
        "goal_per_s": 2000,
        "load_avg_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5000, help="vacancy events in the backlog")
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    args = parser.parse_args()
    backends, base_url = chosen_backends(args.backends)
    for backend in backends:
        print(json.dumps(asyncio.run(run(args.events, backend, base_url)), ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()

"""Transfer saga benchmark: latency and throughput of insurance transfers between two real nodes.

Sichuan's and Zhejiang's insurance services run as two processes (uvicorn, like ``labornet up --process-per
node``) against the embedded broker, each with its own database: a SQLite file, or with
``LABORNET_BENCH_POSTGRES_URL`` set also a PostgreSQL database per node (created for the run, dropped after).
Sichuan holds the records and answers contact letters itself (``insurance_auto_answer``, as a province that
automates step 2), so what is measured is the machinery, not an officer: Zhejiang files N transfers through its
HTTP API at a steady rate; each goes contact letter → information sheet → receipt across the bus.

Latency is read from the databases: from the request's ``filed_at`` to the timeline step that completed it on
the receiving side (relationship opened) and on the sending side (receipt applied, settlement created).
Throughput is completed transfers per second from the first filing to the last completion. One line per
backend and offered rate, with the load average (the machine's other work counts: note it beside the figures)
and the CPU time each node spent per transfer, which does not depend on how busy the machine is.

    python -m benchmarks saga --transfers 300 --rates 20,50,100
    LABORNET_BENCH_POSTGRES_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/test python -m benchmarks saga
    python -m benchmarks saga --backends postgresql --rates 100 --keep   # prints the nodes' pids, for py-spy
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from benchmarks import machine_meters, process_cpu_seconds
from labornet.insurance.adapters.tables import transfer, transfer_step
from labornet.shared.broker import EmbeddedBroker, free_port
from labornet.shared.db import as_utc, create_engine, outbox, readonly_sessionmaker
from labornet.shared.identifiers import make_resident_id
from labornet.shared.keys import ensure_node_keys
from labornet.shared.testing import bearer, create_postgres_database, drop_postgres_database

SC, ZJ = "510000", "330000"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "p50_ms": round(percentile(values, 0.50) * 1000, 1),
        "p95_ms": round(percentile(values, 0.95) * 1000, 1),
        "p99_ms": round(percentile(values, 0.99) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


async def completions(engine: AsyncEngine, side: str) -> dict[str, tuple[float, float]]:
    """Case id (receiving case number on both sides) → (filed, completed) epoch seconds, completed cases only."""
    async with readonly_sessionmaker(engine)() as session:
        rows = await session.execute(
            select(transfer.c.id, transfer.c.peer_case, transfer.c.filed_at, transfer_step.c.at)
            .join(transfer_step, transfer_step.c.transfer_id == transfer.c.id)
            .where(transfer.c.side == side, transfer_step.c.state == "completed")
        )
        return {
            (case_id if side == "receiving" else peer): (as_utc(filed).timestamp(), as_utc(done).timestamp())
            for case_id, peer, filed, done in rows
        }


@contextlib.contextmanager
def node(province: str, env: dict[str, str], log_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """One province's insurance service in a process of its own; yields it and its base URL once it is ready."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "labornet.insurance.app:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{province} did not get ready:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.2)
            yield proc, base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def directed_state(engine: AsyncEngine) -> dict[str, int]:
    """A node's outbox after the run: the records it put on the bus, the directed messages still waiting for their
    acknowledgement, and how often messages were published again because none came."""
    async with readonly_sessionmaker(engine)() as session:
        records, waiting, resends = (
            await session.execute(
                select(
                    func.count(),
                    func.count().filter(outbox.c.expects_receipt.is_(True), outbox.c.acked_at.is_(None)),
                    func.coalesce(func.sum(outbox.c.resends), 0),
                )
            )
        ).one()
    return {"records": int(records), "unacknowledged": int(waiting), "resends": int(resends)}


async def acknowledged(engines: dict[str, AsyncEngine], wait_s: float = 10.0) -> dict[str, dict[str, int]]:
    """:func:`directed_state` of both nodes once every directed message is acknowledged (the last message's
    acknowledgement comes after the transfer completed), or after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        states = {p: await directed_state(engines[p]) for p in (SC, ZJ)}
        if all(state["unacknowledged"] == 0 for state in states.values()) or time.monotonic() > deadline:
            return states
        await asyncio.sleep(0.2)


async def register(client: httpx.AsyncClient, officer: dict[str, str], movers: list[str]) -> None:
    """Sichuan's records of the people who move, 16 requests at a time."""

    async def one(resident_id: str) -> None:
        response = await client.post(
            "/api/v1/insured-persons",
            headers=officer,
            json={
                "resident_id": resident_id,
                "name": "测试",  # the name the transfer gives: a mismatch would wait for an officer
                "hukou_division": "511602",
                "status": "unemployed-claiming",
                "benefit_months_paid": 1,
                "periods": [{"start_month": "2015-01", "end_month": "2022-12", "kind": "actual"}],
            },
        )
        response.raise_for_status()

    for start in range(0, len(movers), 16):
        await asyncio.gather(*(one(r) for r in movers[start : start + 16]))


async def measure(
    zhejiang: aiohttp.ClientSession, engines: dict[str, AsyncEngine], headers: list[dict[str, str]], rate: float
) -> dict[str, Any]:
    """File one transfer per header at ``rate`` a second; wait for them to complete; read the latencies."""
    transfers = len(headers)
    refused: list[str] = []
    request_s: list[float] = []

    async def file(header: dict[str, str]) -> None:
        sent = time.monotonic()
        try:
            async with zhejiang.post(
                "/api/v1/transfers",
                headers=header,
                json={"from_province": SC, "reason": "claimant-relocation", "name": "测试"},
            ) as response:
                status = response.status
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            refused.append(type(exc).__name__)
            return
        request_s.append(time.monotonic() - sent)
        if status != 201:
            refused.append(str(status))

    started = time.monotonic()
    client_cpu = time.process_time()
    filings = []
    for n, header in enumerate(headers):
        filings.append(asyncio.create_task(file(header)))
        await asyncio.sleep(max(0.0, started + (n + 1) / rate - time.monotonic()))
    await asyncio.gather(*filings)
    filed_s = time.monotonic() - started
    client_cpu = time.process_time() - client_cpu
    expected = transfers - len(refused)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if len(await completions(engines[SC], "sending")) >= expected:
            break
        await asyncio.sleep(0.2)
    receiving = await completions(engines[ZJ], "receiving")
    sending = await completions(engines[SC], "sending")
    done = [c for c in receiving if c in sending]
    first_filed = min((filed for filed, _ in receiving.values()), default=0.0)
    last_done = max((sending[c][1] for c in done), default=first_filed)
    first_done = min((sending[c][1] for c in done), default=last_done)
    # filing to settlement, in the order the transfers were filed: a queue that grows makes the later half slower
    closed = [sending[c][1] - receiving[c][0] for c in sorted(done, key=lambda c: receiving[c][0])]
    return {
        "transfers": transfers,
        "offered_rate_per_s": rate,
        "achieved_offer_per_s": round(transfers / filed_s, 1),
        "refused": len(refused),
        "refusals": sorted(set(refused)),
        "completed": len(done),
        "filing_request": summary(request_s),
        # this benchmark's own process while it filed: it shares the two cores with the nodes (aiohttp, as the
        # replication benchmark: httpx spent a few milliseconds of CPU a request, as much as a node's share)
        "client_cpu_ms_per_transfer": round(1000 * client_cpu / transfers, 2),
        "relationship_opened_at_receiving": summary([done_at - filed for filed, done_at in receiving.values()]),
        "closed_at_sending_with_settlement": summary(closed),
        "closed_p95_ms_earlier_and_later_half": [
            summary(half)["p95_ms"] for half in (closed[: len(closed) // 2], closed[len(closed) // 2 :])
        ],
        # first filing to last settlement: includes one transfer's latency, so it stays below the offered rate
        # even when the nodes keep up (1,000 at 100/s with 0.5 s to the last settlement: 95/s)
        "throughput_per_s": round(len(done) / (last_done - first_filed), 1) if last_done > first_filed else 0.0,
        # the pace at which transfers completed, first settlement to last: the offered rate while the nodes keep up,
        # below it when they fall behind
        "completion_rate_per_s": round((len(done) - 1) / (last_done - first_done), 1)
        if last_done > first_done
        else 0.0,
    }


async def run(backend: str, transfers: int, rate: float, keep: bool = False) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="labornet-saga-bench-"))
    broker = EmbeddedBroker(log_path=data_dir / "tansu.log")
    broker.start()
    keys = {p: ensure_node_keys(p, data_dir / "keys" / p, data_dir / "trust-list.json") for p in (SC, ZJ)}
    base = os.environ.get("LABORNET_BENCH_POSTGRES_URL")
    databases: list[str] = []
    urls: dict[str, str] = {}
    try:
        for p in (SC, ZJ):
            if backend == "postgresql":
                assert base, "LABORNET_BENCH_POSTGRES_URL is needed for the PostgreSQL runs"
                urls[p], name = await create_postgres_database(base)
                databases.append(name)
            else:
                urls[p] = f"sqlite+aiosqlite:///{data_dir / f'{p}.sqlite3'}"

        def env(province: str) -> dict[str, str]:
            return {
                "LABORNET_PROVINCE": province,
                "LABORNET_SERVICE": "insurance",
                "LABORNET_DATA_DIR": str(data_dir),
                "LABORNET_DATABASE_URL": urls[province],
                "LABORNET_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                "LABORNET_INSURANCE_AUTO_ANSWER": "true" if province == SC else "false",
                "LABORNET_LOG_JSON": "false",
                "LABORNET_LOG_LEVEL": "WARNING",
            }

        with contextlib.ExitStack() as stack:
            nodes = {p: stack.enter_context(node(p, env(p), data_dir / f"{p}.log")) for p in (SC, ZJ)}
            if keep:
                print(f"{backend} {rate:g}/s: pids SC {nodes[SC][0].pid}, ZJ {nodes[ZJ][0].pid}", flush=True)
            limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
            # Sichuan's records are registered through httpx; Zhejiang's filings, the measured load, through aiohttp
            async with httpx.AsyncClient(base_url=nodes[SC][1], timeout=30, limits=limits) as sichuan:
                movers = [
                    make_resident_id("511602", date(1980, 1, 1).replace(year=1980 + n % 30), n % 1000)
                    for n in range(transfers)
                ]
                await register(sichuan, bearer(keys[SC], "officer", sub="officer-510000"), movers)
                headers = [bearer(keys[ZJ], "worker", sub=resident_id) for resident_id in movers]  # signed up front
                engines = {p: create_engine(urls[p]) for p in (SC, ZJ)}
                cpu = {p: process_cpu_seconds(nodes[p][0].pid) for p in (SC, ZJ)}
                # the broker's and, when it runs here, the PostgreSQL server's CPU: the rest of what a transfer costs
                meters = await machine_meters(broker.pid, urls[SC], backend)
                before = {name: meter() for name, meter in meters.items()}
                try:
                    async with aiohttp.ClientSession(
                        nodes[ZJ][1],
                        connector=aiohttp.TCPConnector(limit=200),
                        timeout=aiohttp.ClientTimeout(total=30),
                    ) as zhejiang:
                        result = await measure(zhejiang, engines, headers, rate)
                    result["outbox"] = await acknowledged(engines)
                finally:
                    for engine in engines.values():
                        await engine.dispose()
                # what the nodes themselves spent per transfer: comparable however busy the machine is
                result["node_cpu_ms_per_transfer"] = {
                    p: round((process_cpu_seconds(nodes[p][0].pid) - cpu[p]) * 1000 / transfers, 1) for p in (SC, ZJ)
                }
                result["other_cpu_ms_per_transfer"] = {
                    name: round((meter() - before[name]) * 1000 / transfers, 1) for name, meter in meters.items()
                }
            errors = sum((data_dir / f"{p}.log").read_text().count("database is locked") for p in (SC, ZJ))
    finally:
        broker.stop()
        for name in databases:
            assert base is not None
            await drop_postgres_database(base, name)
    return {"backend": backend, **result, "database_is_locked_logged": errors, "load_avg": os.getloadavg()}


def line(result: dict[str, Any]) -> str:
    closed = result["closed_at_sending_with_settlement"]
    load = " ".join(f"{v:.2f}" for v in result["load_avg"])
    incomplete = result["transfers"] - result["completed"]
    return (
        f"saga {result['backend']:<10} offered {result['offered_rate_per_s']:>5g}/s  "
        f"achieved {result['throughput_per_s']:>5.1f}/s (completing {result['completion_rate_per_s']:.1f}/s)  "
        f"p50 {closed['p50_ms']} ms  p95 {closed['p95_ms']} ms  p99 {closed['p99_ms']} ms  "
        f"(p95 earlier/later half {'/'.join(str(v) for v in result['closed_p95_ms_earlier_and_later_half'])} ms)  "
        f"filing p95 {result['filing_request']['p95_ms']} ms  "
        f"refused {result['refused']}{' (' + ', '.join(result['refusals']) + ')' if result['refusals'] else ''}  "
        f"incomplete {incomplete}  locked {result['database_is_locked_logged']}  "
        f"cpu/transfer SC {result['node_cpu_ms_per_transfer'][SC]} ms ZJ {result['node_cpu_ms_per_transfer'][ZJ]} ms "
        f"client {result['client_cpu_ms_per_transfer']} ms "
        + "".join(f"{k.replace('_', ' ')} {v} ms " for k, v in result["other_cpu_ms_per_transfer"].items())
        + "records/transfer "
        + "+".join(f"{p} {result['outbox'][p]['records'] / result['transfers']:.2f}" for p in (SC, ZJ))
        + " unacknowledged "
        + "+".join(str(result["outbox"][p]["unacknowledged"]) for p in (SC, ZJ))
        + " resends "
        + "+".join(str(result["outbox"][p]["resends"]) for p in (SC, ZJ))
        + f"  load {load}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transfers", type=int, default=300, help="transfers per rate")
    parser.add_argument("--rates", default="20,50,100", help="comma-separated: transfers filed per second")
    parser.add_argument(
        "--backends",
        default=None,
        help="comma-separated sqlite,postgresql (default: sqlite, and postgresql when LABORNET_BENCH_POSTGRES_URL "
        "is set)",
    )
    parser.add_argument("--json", action="store_true", help="also print every figure as JSON")
    parser.add_argument("--keep", action="store_true", help="print the nodes' process ids (to attach a profiler)")
    args = parser.parse_args()
    backends = (
        args.backends.split(",")
        if args.backends
        else ["sqlite"] + (["postgresql"] if os.environ.get("LABORNET_BENCH_POSTGRES_URL") else [])
    )
    results = []
    for backend in backends:
        for rate in args.rates.split(","):
            result = asyncio.run(run(backend, args.transfers, float(rate), args.keep))
            print(line(result), flush=True)
            results.append(result)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""Transfer saga benchmark: latency and throughput of insurance transfers between two real nodes.

Sichuan's and Zhejiang's insurance services run under uvicorn against the embedded broker, each with its own
SQLite database. Sichuan holds the records and answers contact letters itself (``insurance_auto_answer``, as a
province that automates step 2), so what is measured is the machinery, not an officer: Zhejiang files N transfers
through its HTTP API at a steady rate; each goes contact letter → information sheet → receipt across the bus.

Latency is read from the databases: from the request's ``filed_at`` to the timeline step that completed it on
the receiving side (relationship opened) and on the sending side (receipt applied, settlement created).
Throughput is completed transfers per second from the first filing to the last completion.

    python -m benchmarks saga --transfers 150 --rates 5,20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from labornet.insurance.adapters.tables import transfer, transfer_step
from labornet.insurance.app import create_app
from labornet.shared.broker import EmbeddedBroker
from labornet.shared.db import as_utc, create_engine, readonly_sessionmaker
from labornet.shared.identifiers import make_resident_id
from labornet.shared.keys import ensure_node_keys
from labornet.shared.settings import Settings
from labornet.shared.testing import bearer, eventually, serving

SC, ZJ = "510000", "330000"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values: list[float]) -> dict[str, float]:
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


async def run(transfers: int, rate: float) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="labornet-saga-bench-"))
    broker = EmbeddedBroker(log_path=data_dir / "tansu.log")
    broker.start()
    keys = {p: ensure_node_keys(p, data_dir / "keys" / p, data_dir / "trust-list.json") for p in (SC, ZJ)}
    urls = {p: f"sqlite+aiosqlite:///{data_dir / f'{p}.sqlite3'}" for p in (SC, ZJ)}

    def settings(province: str) -> Settings:
        return Settings(  # type: ignore[call-arg]
            province=province,
            service="insurance",
            data_dir=data_dir,
            database_url=urls[province],
            kafka_bootstrap_servers=broker.bootstrap_servers,
            insurance_auto_answer=province == SC,
            log_json=False,
            log_level="WARNING",
        )

    try:
        async with contextlib.AsyncExitStack() as stack:
            clients = {p: await stack.enter_async_context(serving(create_app(settings(p)))) for p in (SC, ZJ)}
            for client in clients.values():

                async def ready(client: httpx.AsyncClient = client) -> bool:
                    return (await client.get("/readyz")).status_code == 200

                await eventually(ready, timeout_s=60)
            officer = bearer(keys[SC], "officer", sub="officer-510000")
            movers = [
                make_resident_id("511602", date(1980, 1, 1).replace(year=1980 + n % 30), n % 1000)
                for n in range(transfers)
            ]
            for n, resident_id in enumerate(movers):
                response = await clients[SC].post(
                    "/api/v1/insured-persons",
                    headers=officer,
                    json={
                        "resident_id": resident_id,
                        "name": f"测试{n}",
                        "hukou_division": "511602",
                        "status": "unemployed-claiming",
                        "benefit_months_paid": 1,
                        "periods": [{"start_month": "2015-01", "end_month": "2022-12", "kind": "actual"}],
                    },
                )
                response.raise_for_status()

            async def file(resident_id: str) -> None:
                response = await clients[ZJ].post(
                    "/api/v1/transfers",
                    headers=bearer(keys[ZJ], "worker", sub=resident_id),
                    json={"from_province": SC, "reason": "claimant-relocation", "name": "测试"},
                )
                response.raise_for_status()

            engines = {p: create_engine(urls[p]) for p in (SC, ZJ)}
            started = time.monotonic()
            filings = []
            for n, resident_id in enumerate(movers):
                filings.append(asyncio.create_task(file(resident_id)))
                await asyncio.sleep(max(0.0, started + (n + 1) / rate - time.monotonic()))
            await asyncio.gather(*filings)
            deadline = time.monotonic() + 120
            while len(await completions(engines[SC], "sending")) < transfers:
                if time.monotonic() > deadline:
                    raise RuntimeError("transfers did not complete within 120 s of the last filing")
                await asyncio.sleep(0.2)
            receiving = await completions(engines[ZJ], "receiving")
            sending = await completions(engines[SC], "sending")
            for engine in engines.values():
                await engine.dispose()
    finally:
        broker.stop()

    first_filed = min(filed for filed, _ in receiving.values())
    last_done = max(done for _, done in sending.values())
    return {
        "transfers": transfers,
        "offered_rate_per_s": rate,
        "relationship_opened_at_receiving": summary([done - filed for filed, done in receiving.values()]),
        "closed_at_sending_with_settlement": summary([sending[c][1] - receiving[c][0] for c in receiving]),
        "throughput_per_s": round(transfers / (last_done - first_filed), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transfers", type=int, default=150, help="transfers per rate")
    parser.add_argument("--rates", default="5,20", help="comma-separated: transfers filed per second")
    args = parser.parse_args()
    results = [asyncio.run(run(args.transfers, float(rate))) for rate in args.rates.split(",")]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

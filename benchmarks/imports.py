"""Bulk import benchmark: N vacancies imported at one node, until they are searchable on every node of three.

Three jobs nodes (Zhejiang, Sichuan, Chongqing; a registry of these three only) run under uvicorn, each in its own
process exactly as ``labornet serve jobs`` runs it, with its own SQLite database (or PostgreSQL with
LABORNET_BENCH_POSTGRES_URL), on the embedded broker. A CSV of N valid Zhejiang vacancies is written to disk and
sent to Zhejiang's ``POST /api/v1/vacancies/imports`` streamed from the file; the import is followed at its
``Location`` until it completes, and every node's database is counted until it holds all N (then the first and
the last vacancy are searched through each node's API). Reported: the upload's seconds, the import's rows per
second (from the start of the upload to the import's completion), and the seconds from the start of the upload
until the N vacancies are searchable on every node. The goal (issue 12): 100,000 searchable everywhere ≤ 120 s.

    python -m benchmarks imports --rows 100000
    python -m benchmarks imports --rows 20000
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from benchmarks import chosen_backends
from labornet.jobs.adapters.tables import vacancy
from labornet.jobs.domain.imports import CSV_COLUMNS
from labornet.shared.broker import EmbeddedBroker, free_port
from labornet.shared.clock import today_in_china
from labornet.shared.db import create_engine, readonly_sessionmaker
from labornet.shared.keys import NodeKeys, ensure_node_keys
from labornet.shared.testing import bearer, create_postgres_database, drop_postgres_database

ZJ = "330000"
PROVINCES = {"330000": ("浙江省", "浙江", "Zhejiang"), "510000": ("四川省", "四川", "Sichuan"),
             "500000": ("重庆市", "重庆", "Chongqing")}  # fmt: skip
DIVISIONS = ("330102", "330105", "330106", "330108", "330110", "330212", "330302")
TITLES = ("川菜厨师", "电子装配工", "快递分拣员", "养老护理员", "叉车司机", "服装车工", "保洁员", "电工")
OCCUPATIONS = ("5120", "8212", "9333", "5322", "8343", "7533", "9112", "7411")
SKILLS = ("刀工", "焊接", "叉车证", "育婴", "平车", "电工证")


def write_csv(path: Path, rows: int) -> None:
    """N valid vacancies of Zhejiang, each with a unique word in its title (``imp<n>``)."""
    closing = (today_in_china() + timedelta(days=60)).isoformat()
    columns = [c for c in CSV_COLUMNS if c not in ("id", "owner_province", "occupation_name", "posted_at")]
    columns = [c for c in columns if c not in ("updated_at", "status", "version", "brand_id", "city")]
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        for n in range(rows):
            kind = n % len(TITLES)
            writer.writerow(
                {
                    "employer_name": f"浙江第{n % 97}人力资源有限公司",
                    "employer_credit_code": "91350100M000100Y43",
                    "title": f"{TITLES[kind]} imp{n:07d}",
                    "description": "提供食宿，五险一金。",
                    "occupation_code": OCCUPATIONS[kind],
                    "division_code": DIVISIONS[n % len(DIVISIONS)],
                    "headcount": 1 + n % 9,
                    "salary_min": 4000 + n % 20 * 100,
                    "salary_max": 7000 + n % 30 * 100,
                    "employment_type": "full-time",
                    "target_groups": "migrant-workers" if n % 3 else "migrant-workers|college-graduates",
                    "skills": SKILLS[n % len(SKILLS)],
                    "contact": "0571-88000000",
                    "closing_date": closing,
                }
            )


async def prepare_provinces(
    data_dir: Path, provinces: Sequence[str], backend: str, base_url: str | None
) -> tuple[dict[str, NodeKeys], dict[str, str], list[str]]:
    """A registry of ``provinces`` only, their keys and trust list, and a database each (a SQLite file, or a new
    PostgreSQL database on ``base_url``): the keys, the database URLs and the PostgreSQL databases to drop after."""
    registry = {"version": 1, "provinces": [
        {"code": code, "zh": zh, "short_zh": short, "en": en} for code, (zh, short, en) in PROVINCES.items()
        if code in provinces
    ]}  # fmt: skip
    (data_dir / "provinces.json").write_text(json.dumps(registry, ensure_ascii=False))
    keys = {p: ensure_node_keys(p, data_dir / "keys" / p, data_dir / "trust-list.json") for p in provinces}
    created: list[str] = []
    urls: dict[str, str] = {}
    for province in provinces:
        if backend == "postgresql":
            assert base_url is not None
            urls[province], name = await create_postgres_database(base_url)
            created.append(name)
        else:
            urls[province] = f"sqlite+aiosqlite:///{data_dir / f'jobs-{province}.sqlite3'}"
    return keys, urls, created


async def release(broker: EmbeddedBroker, created: Sequence[str], base_url: str | None, data_dir: Path) -> None:
    """Stop the broker, drop the PostgreSQL databases :func:`prepare_provinces` created, remove the run's files."""
    broker.stop()
    for name in created:
        assert base_url is not None
        await drop_postgres_database(base_url, name)
    shutil.rmtree(data_dir, ignore_errors=True)


@contextmanager
def jobs_node(
    province: str, port: int, data_dir: Path, database_url: str, broker: str
) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "LABORNET_PROVINCE": province,
        "LABORNET_SERVICE": "jobs",
        "LABORNET_DATA_DIR": str(data_dir),
        "LABORNET_DATABASE_URL": database_url,
        "LABORNET_PROVINCES_PATH": str(data_dir / "provinces.json"),
        "LABORNET_KAFKA_BOOTSTRAP_SERVERS": broker,
        "LABORNET_REQUEST_MAX_IMPORT_BYTES": str(1024**3),
        "LABORNET_RATE_LIMIT_ENABLED": "false",
        "LABORNET_LOG_LEVEL": "WARNING",
    }
    log = (data_dir / f"jobs-{province}.log").open("wb")
    command = [sys.executable, "-m", "labornet.shared.cli", "serve", "jobs", "--port", str(port)]
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


async def held(urls: dict[str, str]) -> dict[str, int]:
    """How many Zhejiang vacancies each node's database holds."""
    counts = {}
    for province, url in urls.items():
        engine = create_engine(url)
        try:
            async with readonly_sessionmaker(engine)() as session:
                query = select(func.count()).select_from(vacancy).where(vacancy.c.owner_province == ZJ)
                counts[province] = int((await session.execute(query)).scalar_one())
        finally:
            await engine.dispose()
    return counts


async def run(rows: int, backend: str, base_url: str | None) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="labornet-imports-bench-"))
    keys, urls, created = await prepare_provinces(data_dir, list(PROVINCES), backend, base_url)
    source = data_dir / "vacancies.csv"
    write_csv(source, rows)
    size = source.stat().st_size
    broker = EmbeddedBroker(log_path=data_dir / "tansu.log")
    broker.start()
    ports = {p: free_port() for p in PROVINCES}
    try:
        with ExitStack() as stack:
            for province in PROVINCES:
                stack.enter_context(
                    jobs_node(province, ports[province], data_dir, urls[province], broker.bootstrap_servers)
                )
            clients = {p: httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[p]}", timeout=300) for p in PROVINCES}
            deadline = time.monotonic() + 120
            while True:
                try:
                    answers = [await c.get("/readyz") for c in clients.values()]
                    if all(a.status_code == 200 for a in answers):
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"the nodes were not ready within 120 s; see the logs in {data_dir}")
                await asyncio.sleep(0.5)
            officer = bearer(keys[ZJ], "officer", sub="bench-officer")

            async def chunks() -> AsyncIterator[bytes]:
                with source.open("rb") as file:
                    while chunk := file.read(256 * 1024):
                        yield chunk

            started = time.monotonic()
            answer = await clients[ZJ].post(
                "/api/v1/vacancies/imports", headers={**officer, "Content-Type": "text/csv"}, content=chunks()
            )
            uploaded = time.monotonic()
            if answer.status_code != 202:
                raise SystemExit(f"the import was refused: {answer.status_code} {answer.text[:500]}")
            location = answer.headers["Location"]
            imported_at: float | None = None
            everywhere_at: float | None = None
            job: dict[str, Any] = {}
            counts: dict[str, int] = {}
            while everywhere_at is None:
                if imported_at is None:
                    job = (await clients[ZJ].get(location, headers=officer)).json()
                    if job["state"] == "failed":
                        raise SystemExit(f"the import failed: {job['message']}")
                    if job["state"] == "completed":
                        imported_at = time.monotonic()
                counts = await held(urls)
                if all(count >= rows for count in counts.values()):
                    everywhere_at = time.monotonic()
                elif time.monotonic() - started > 1800:
                    raise SystemExit(f"not searchable everywhere after 30 min: {counts}, import {job}")
                else:
                    await asyncio.sleep(0.5)
            assert imported_at is not None
            for client in clients.values():  # searchable through each node's API, the first and the last
                for word in ("imp0000000", f"imp{rows - 1:07d}"):
                    found = (await client.get("/api/v1/vacancies", params={"q": word})).json()
                    if found["total"] != 1:
                        raise SystemExit(f"{word} is not searchable at {client.base_url}: {found}")
            for client in clients.values():
                await client.aclose()
    finally:
        await release(broker, created, base_url, data_dir)
    return {
        "backend": backend,
        "rows": rows,
        "file_mb": round(size / 1e6, 1),
        "rows_published": job["rows_published"],
        "upload_s": round(uploaded - started, 2),
        "import_s": round(imported_at - started, 1),
        "import_rows_per_s": round(rows / (imported_at - started)),
        "searchable_everywhere_s": round(everywhere_at - started, 1),
        "goal_s": 120 if rows == 100_000 else None,
        "load_avg": [round(v, 2) for v in os.getloadavg()],
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="vacancies in the imported file")
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    args = parser.parse_args()
    backends, base_url = chosen_backends(args.backends)
    for backend in backends:
        print(json.dumps(asyncio.run(run(args.rows, backend, base_url)), ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()

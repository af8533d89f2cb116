"""Reads benchmark: the jobs service's public reads under load, beside bare FastAPI answering the same bodies.

A jobs node (SQLite or PostgreSQL, migrated to head, bulk-loaded with synthetic vacancies of the nine provinces)
is served by uvicorn in its own process exactly as ``labornet serve jobs`` runs it; the anchor is a bare FastAPI
app in the same kind of process returning, from memory, bodies of the same size. Both are loaded by wrk (one
thread, 32 connections) one after the other, for a vacancy by id and for a text search (20 results).

Two more rows ask for many things instead of one (a wrk script picks each request's path at random): a vacancy by
id among 1,000 of the replica (``by_id_varied``), and a search of one of the benchmark's job titles, alone or with
one of the nine provinces (``search_varied``: 630 searches, pages of about the same size). Their anchor is the bare
app's figure for the same kind of read.

Besides requests per second (``ratio``: LaborNet's over the anchor's), each row gives the server process's CPU time
per request over the run (``cpu_ms_per_request``; ``cpu_ratio``: the anchor's over LaborNet's), which moves far less
with what else the shared machine runs. The PostgreSQL server's own CPU is not in it: when the server runs on this
machine it is given beside it (``database_server_cpu_ms_per_request``, the whole server's).

    python -m benchmarks reads --vacancies 10000
    LABORNET_BENCH_POSTGRES_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/test python -m benchmarks reads
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy import select, update

from benchmarks import database_server, process_cpu_seconds, server_cpu_seconds
from benchmarks.search import JOBS, PROVINCE_WEIGHTS, load_postgresql, load_sqlite, synthetic_vacancies
from labornet.jobs.adapters.tables import vacancy
from labornet.shared.broker import free_port
from labornet.shared.db import create_engine
from labornet.shared.keys import ensure_node_keys
from labornet.shared.migrations import upgrade
from labornet.shared.testing import create_postgres_database, drop_postgres_database

PROVINCE = "510000"  # the node served
BARE_APP = textwrap.dedent(
    """
    import json, sys
    from fastapi import FastAPI
    from fastapi.responses import Response

    bodies = json.load(open(sys.argv[1]))
    one, page = json.dumps(bodies["one"]).encode(), json.dumps(bodies["page"]).encode()
    app = FastAPI()

    @app.get("/api/v1/vacancies/{vacancy_id}")
    async def get_one(vacancy_id: str) -> dict:
        return json.loads(one)

    @app.get("/api/v1/vacancies")
    async def search(q: str = "") -> dict:
        return json.loads(page)

    if __name__ == "__main__":
        import uvicorn
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_config=None, access_log=False)
    """
)


@contextmanager
def serving(command: list[str], port: int, env: dict[str, str]) -> Any:
    proc = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/api/v1/vacancies/none", timeout=1)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{command} did not serve: {proc.stderr.read().decode()[-2000:]}") from None
                time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# a path of the file given after wrk's "--", at random, for every request
VARIED = textwrap.dedent(
    """
    local paths = {}
    function init(args)
      for line in io.lines(args[1]) do paths[#paths + 1] = line end
      math.randomseed(os.time())
    end
    function request()
      return wrk.format("GET", paths[math.random(#paths)])
    end
    """
)


def wrk(
    url: str, seconds: int, connections: int, pid: int, paths: Path | None = None, database: int | None = None
) -> dict[str, float]:
    """wrk's rate and latency, and the server's CPU time per request over the run: the figure that does not move
    with what else the machine runs. With ``paths``, each request asks for one of the paths in that file; with
    ``database`` (a local PostgreSQL server's process id), its CPU time per request too."""
    cpu_before = process_cpu_seconds(pid)
    database_before = server_cpu_seconds(database) if database is not None else 0.0
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if paths is not None:
        script = paths.with_suffix(".lua")
        script.write_text(VARIED)
        command[-1:-1] = ["-s", str(script)]
        command += ["--", str(paths)]
    out = subprocess.run(command, capture_output=True, text=True).stdout
    cpu = process_cpu_seconds(pid) - cpu_before
    database_cpu = server_cpu_seconds(database) - database_before if database is not None else None
    rate = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    result = {"req_per_s": rate, "cpu_ms_per_request": round(cpu * 1000 / max(requests, 1), 3)}
    if database_cpu is not None:
        result["database_server_cpu_ms_per_request"] = round(database_cpu * 1000 / max(requests, 1), 3)
    for label, key in (("50%", "p50_ms"), ("99%", "p99_ms")):
        found = re.search(rf"{label}\s+([0-9.]+)(us|ms|s)", out)
        if found:
            value, unit = float(found.group(1)), found.group(2)
            result[key] = value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} error responses under load")
    return result


def varied_paths(ids: list[str]) -> dict[str, list[str]]:
    """The paths of the varied rows: the vacancies by id given, and a search of each job title, alone and with each
    province."""
    searches = []
    for title, *_ in JOBS:
        for province in ("", *PROVINCE_WEIGHTS):
            query = f"q={quote(title)}&limit=20" + (f"&province={province}" if province else "")
            searches.append(f"/api/v1/vacancies?{query}")
    return {"by_id_varied": [f"/api/v1/vacancies/{i}" for i in ids], "search_varied": searches}


async def prepare(backend: str, size: int, directory: Path, base_url: str | None) -> tuple[str, str | None, list[str]]:
    if backend == "postgresql":
        assert base_url is not None
        url, name = await create_postgres_database(base_url)
    else:
        url, name = f"sqlite+aiosqlite:///{directory / 'jobs.sqlite3'}", None
    engine = create_engine(url)
    try:
        await upgrade(engine, "labornet.jobs:migrations")
        rows = synthetic_vacancies(size, seed=size, now=datetime.now(UTC).replace(microsecond=0))
        if backend == "postgresql":
            await load_postgresql(url, rows)
        else:
            await load_sqlite(engine, rows)
        # the served province's vacancies close in a month: the expiry sweep, which would otherwise close hundreds
        # of them while the reads are measured, has nothing to do
        async with engine.begin() as connection:
            await connection.execute(
                update(vacancy)
                .where(vacancy.c.owner_province == PROVINCE, vacancy.c.status == "open")
                .values(closing_date=date.today() + timedelta(days=30))
            )
            found = await connection.execute(select(vacancy.c.id).order_by(vacancy.c.id).limit(1_000))
            ids = list(found.scalars())
    finally:
        await engine.dispose()
    return url, name, ids


def run(backend: str, size: int, seconds: int, connections: int, base_url: str | None) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="labornet-reads-bench-"))
    url, name, ids = asyncio.run(prepare(backend, size, directory, base_url))
    database = asyncio.run(database_server(url)) if backend == "postgresql" else None
    varied: dict[str, Path] = {}
    counts: dict[str, int] = {}
    for kind, lines in varied_paths(ids).items():
        varied[kind] = directory / f"{kind}.txt"
        varied[kind].write_text("\n".join(lines) + "\n")
        counts[kind] = len(lines)
    ensure_node_keys(PROVINCE, directory / "keys" / PROVINCE, directory / "trust-list.json")
    port = free_port()
    env = {
        "LABORNET_PROVINCE": PROVINCE,
        "LABORNET_SERVICE": "jobs",
        "LABORNET_DATA_DIR": str(directory),
        "LABORNET_DATABASE_URL": url,
        "LABORNET_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # reads need no broker
        "LABORNET_RATE_LIMIT_ENABLED": "false",  # one load generator from one address is not a flood
    }
    command = [sys.executable, "-m", "labornet.shared.cli", "serve", "jobs", "--port", str(port)]
    paths = {"by_id": "", "search": "/api/v1/vacancies?q=%E5%8E%A8%E5%B8%88&limit=20"}
    results: dict[str, dict[str, Any]] = {}
    try:
        with serving(command, port, env) as server:
            base = f"http://127.0.0.1:{port}"
            page = httpx.get(base + paths["search"]).json()
            one_id = page["items"][0]["id"]
            paths["by_id"] = f"/api/v1/vacancies/{one_id}"
            bodies = {"one": httpx.get(base + paths["by_id"]).json(), "page": page}
            wrk(base + paths["by_id"], 2, connections, server.pid)  # warm-up
            for kind, path in paths.items():
                results[kind] = {"labornet": wrk(base + path, seconds, connections, server.pid, database=database)}
            for kind, file in varied.items():
                results[kind] = {"labornet": wrk(base + "/", seconds, connections, server.pid, file, database)}
        body_file = directory / "bodies.json"
        body_file.write_text(json.dumps(bodies, ensure_ascii=False))
        app_file = directory / "bare.py"
        app_file.write_text(BARE_APP)
        bare_port = free_port()
        with serving([sys.executable, str(app_file), str(body_file), str(bare_port)], bare_port, {}) as bare:
            base = f"http://127.0.0.1:{bare_port}"
            wrk(base + paths["by_id"], 2, connections, bare.pid)
            for kind, path in paths.items():
                results[kind]["bare_fastapi"] = wrk(base + path, seconds, connections, bare.pid)
    finally:
        if name is not None and base_url is not None:
            asyncio.run(drop_postgres_database(base_url, name))
        shutil.rmtree(directory, ignore_errors=True)
    for kind, count in counts.items():  # the anchor answers any vacancy or search alike
        results[kind]["bare_fastapi"] = results[kind.removesuffix("_varied")]["bare_fastapi"]
        results[kind]["paths"] = count
    for row in results.values():
        row["ratio"] = round(row["labornet"]["req_per_s"] / row["bare_fastapi"]["req_per_s"], 3)
        bare_cpu, labornet_cpu = row["bare_fastapi"]["cpu_ms_per_request"], row["labornet"]["cpu_ms_per_request"]
        row["cpu_ratio"] = round(bare_cpu / labornet_cpu, 3) if labornet_cpu else None
    return {"backend": backend, "vacancies": size, "reads": results, "load_avg": [round(v, 2) for v in os.getloadavg()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vacancies", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("the reads benchmark needs wrk (Debian package wrk)")
    base = os.environ.get("LABORNET_BENCH_POSTGRES_URL")
    backends = ["sqlite"] + (["postgresql"] if base else [])
    results = [run(b, args.vacancies, args.seconds, args.connections, base) for b in backends]
    print(json.dumps(results, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()

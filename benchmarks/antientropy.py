"""Anti-entropy benchmark: what one origin's vacancy digest costs (ADR 0008), on SQLite and PostgreSQL.

A fresh jobs database is migrated and loaded with synthetic vacancies of one origin (the search benchmark's
generator); then, as the services do it, the origin's digest is computed (every row read in id order, its wire
form hashed, the hashes cut into ranges), the replica's fold of the same rows into those ranges, and the read of
one range as a repair reads it. Reported: seconds per digest, microseconds per row, the digest document's size.

    python -m benchmarks antientropy --sizes 100000                 # SQLite only
    LABORNET_BENCH_POSTGRES_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/test python -m benchmarks antientropy
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import chosen_backends
from benchmarks.search import load_postgresql, load_sqlite, synthetic_vacancies
from labornet.jobs.entrypoints.federation import SPEC
from labornet.shared.antientropy import Digest, canonical_json, cut, fold, stored_hashes
from labornet.shared.db import create_engine, readonly_sessionmaker
from labornet.shared.migrations import upgrade
from labornet.shared.testing import create_postgres_database, drop_postgres_database

ORIGIN = "330000"


def one_origin(size: int, now: datetime) -> Any:
    for row in synthetic_vacancies(size, seed=size, now=now):
        yield {**row, "owner_province": ORIGIN, "id": f"{ORIGIN}-{row['id'].split('-', 1)[1]}"}


async def run(backend: str, size: int, range_rows: int, base_url: str | None) -> dict[str, Any]:
    now = datetime.now(UTC).replace(microsecond=0)
    name = None
    if backend == "postgresql":
        assert base_url is not None
        url, name = await create_postgres_database(base_url)
    else:
        url = f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp(prefix='labornet-ae-bench-')) / 'jobs.sqlite3'}"
    engine = create_engine(url)
    try:
        await upgrade(engine, "labornet.jobs:migrations")
        if backend == "postgresql":
            await load_postgresql(url, one_origin(size, now))
        else:
            await load_sqlite(engine, one_origin(size, now))
        sessions = readonly_sessionmaker(engine)

        started = time.perf_counter()
        async with sessions() as session:
            hashes = [item async for item in stored_hashes(session, SPEC, ORIGIN)]
        ranges = cut(hashes, range_rows)
        body = canonical_json(Digest(ORIGIN, SPEC.noun, now, len(hashes), tuple(ranges)).to_json())
        digest_s = time.perf_counter() - started

        started = time.perf_counter()
        async with sessions() as session:
            folded = fold([item async for item in stored_hashes(session, SPEC, ORIGIN)], ranges)
        fold_s = time.perf_counter() - started
        assert folded == ranges

        rows_only_started = time.perf_counter()
        async with sessions() as session:
            result = await session.stream(SPEC.owned_by(ORIGIN).execution_options(yield_per=2000))
            read = sum([1 async for _ in result.mappings()])
        read_s = time.perf_counter() - rows_only_started
        assert read == size

        middle = ranges[len(ranges) // 2]
        started = time.perf_counter()
        async with sessions() as session:
            query = SPEC.owned_by(ORIGIN).where(SPEC.table.c.id > middle.after)
            if middle.until is not None:
                query = query.where(SPEC.table.c.id <= middle.until)
            one_range = (await session.execute(query)).mappings().all()
        range_s = time.perf_counter() - started
        snapshot_bytes = len(canonical_json([SPEC.to_event(dict(r)) for r in one_range]))
    finally:
        await engine.dispose()
        if name is not None and base_url is not None:
            await drop_postgres_database(base_url, name)
    return {
        "backend": backend,
        "vacancies": size,
        "range_rows": range_rows,
        "ranges": len(ranges),
        "digest_s": round(digest_s, 2),
        "digest_us_per_row": round(digest_s / size * 1e6, 1),
        "read_only_s": round(read_s, 2),
        "replica_fold_s": round(fold_s, 2),
        "digest_bytes": len(body),
        "one_range_read_ms": round(range_s * 1000, 1),
        "one_range_snapshot_bytes": snapshot_bytes,
        "load_avg": [round(v, 2) for v in os.getloadavg()],
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000", help="comma-separated numbers of vacancies of the origin")
    parser.add_argument("--range-rows", type=int, default=1000, help="rows per digest range")
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    args = parser.parse_args()
    backends, base_url = chosen_backends(args.backends)
    for size in (int(s) for s in args.sizes.split(",") if s.strip()):
        for backend in backends:
            print(json.dumps(asyncio.run(run(backend, size, args.range_rows, base_url))), flush=True)


if __name__ == "__main__":
    main()

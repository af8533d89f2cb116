"""LaborNet benchmarks (`make bench`); numbers, never pass/fail assertions."""

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text

from labornet.shared.db import create_engine


def chosen_backends(spec: str) -> tuple[list[str], str | None]:
    """The backends named in ``spec`` (comma-separated: sqlite, postgresql) and the PostgreSQL server to use
    (``LABORNET_BENCH_POSTGRES_URL``); PostgreSQL is dropped, with a line saying so, when no server is named."""
    backends = [b.strip() for b in spec.split(",") if b.strip()]
    base_url = os.environ.get("LABORNET_BENCH_POSTGRES_URL") or None
    if base_url is None and "postgresql" in backends:
        print("LABORNET_BENCH_POSTGRES_URL is not set: running SQLite only", flush=True)
        backends = [b for b in backends if b != "postgresql"]
    return backends, base_url


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_stat(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the process's name: [0] its state, [1] its parent, [11] and [12] its
    user and system ticks, [13] and [14] those of its ended children (Linux, proc(5))."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def children_by_parent() -> dict[int, list[int]]:
    """Every process of this machine under its parent's id."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int(proc_stat(int(entry.name))[1]), []).append(int(entry.name))
            except OSError:  # ended meanwhile
                continue
    return children


def process_cpu_seconds(pid: int, children: bool = False) -> float:
    """User and system CPU time of process ``pid`` so far; with ``children``, also that of its children that have
    ended."""
    fields = proc_stat(pid)
    ticks = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if children else 0)
    return ticks / CLOCK_TICKS


async def database_server(url: str) -> int | None:
    """The process id of the PostgreSQL server behind ``url`` when it runs on this machine (the parent of the
    connection's backend), else None."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            backend = int((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())
            return _parent(backend)  # while the backend is there to ask
    finally:
        await engine.dispose()


def _parent(pid: int) -> int | None:
    try:
        parent = int(proc_stat(pid)[1])
        proc_stat(parent)
    except (OSError, ValueError):  # another machine's server, or a /proc this user cannot read
        return None
    return parent


def server_cpu_seconds(server: int) -> float:
    """CPU time of a PostgreSQL server so far: the postmaster, its ended backends and its live processes. It counts
    the whole server: every database's work, autovacuum and checkpoints included."""
    total = process_cpu_seconds(server, children=True)
    for child in children_by_parent().get(server, []):
        with contextlib.suppress(OSError):
            total += process_cpu_seconds(child)
    return total


async def machine_meters(broker_pid: int | None, database_url: str, backend: str) -> dict[str, Callable[[], float]]:
    """CPU meters (seconds so far) of what an event costs the machine besides the nodes: the broker and, when it runs
    here, the PostgreSQL server behind ``database_url`` (``backend`` "postgresql"; SQLite works inside the nodes)."""
    assert broker_pid is not None, "the broker is not running"
    meters: dict[str, Callable[[], float]] = {"broker": lambda: process_cpu_seconds(broker_pid)}
    server = await database_server(database_url) if backend == "postgresql" else None
    if server is not None:
        meters["database_server"] = lambda: server_cpu_seconds(server)
    return meters

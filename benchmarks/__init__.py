"""LaborNet benchmarks (`make bench`); numbers, never pass/fail assertions."""

import os


def chosen_backends(spec: str) -> tuple[list[str], str | None]:
    """The backends named in ``spec`` (comma-separated: sqlite, postgresql) and the PostgreSQL server to use
    (``LABORNET_BENCH_POSTGRES_URL``); PostgreSQL is dropped, with a line saying so, when no server is named."""
    backends = [b.strip() for b in spec.split(",") if b.strip()]
    base_url = os.environ.get("LABORNET_BENCH_POSTGRES_URL") or None
    if base_url is None and "postgresql" in backends:
        print("LABORNET_BENCH_POSTGRES_URL is not set: running SQLite only", flush=True)
        backends = [b for b in backends if b != "postgresql"]
    return backends, base_url

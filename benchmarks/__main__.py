"""`make bench`: every benchmark, one after the other (`python -m benchmarks bus` runs one)."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ("bus", "saga", "search")


def main() -> None:
    chosen = [name for name in sys.argv[1:] if not name.startswith("-")] or list(BENCHMARKS)
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    for name in chosen:
        print(f"== {name}", flush=True)
        sys.argv = [f"benchmarks.{name}", *[a for a in sys.argv[1:] if a.startswith("-")]]
        importlib.import_module(f"benchmarks.{name}").main()


if __name__ == "__main__":
    main()

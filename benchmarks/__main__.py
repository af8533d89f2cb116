"""`make bench`: every benchmark, one after the other.

python -m benchmarks search --sizes 1000000 --queries 100    # one benchmark, its options after the name
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ("antientropy", "apply", "bus", "idle", "imports", "reads", "replication", "saga", "search")


def main() -> None:
    arguments = sys.argv[1:]
    first_option = next((n for n, a in enumerate(arguments) if a.startswith("-")), len(arguments))
    chosen, options = arguments[:first_option] or list(BENCHMARKS), arguments[first_option:]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    for name in chosen:
        print(f"== {name}", flush=True)
        sys.argv = [f"benchmarks.{name}", *options]
        importlib.import_module(f"benchmarks.{name}").main()


if __name__ == "__main__":
    main()

"""Idle benchmark: what a federation that does nothing costs, and how soon it is ready.

Runs ``labornet up`` (no demo data) for the chosen provinces, waits until it says it is ready, lets it settle, then
adds up the CPU time of every process of the run (the broker included, read from /proc) over a window, in all and per
kind of process (the broker, the nodes or services, the consoles). The anchor is the same federation with the pacing
of earlier releases (fetch wait 10 ms always, no pause between fetches and no doorbell, consumers' metadata refreshed
every 10 s, relay poll every 50 ms), measured in the same run.

    python -m benchmarks idle                          # nine provinces, one process per node
    python -m benchmarks idle --process-per service    # 36 service processes as deployed
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import children_by_parent, process_cpu_seconds

READY = re.compile(r"ready in ([0-9.]+)s")
# the pacing of earlier releases, for the anchor row
EAGER = {
    "LABORNET_KAFKA_FETCH_IDLE_WAIT_MS": "10",
    "LABORNET_KAFKA_FETCH_IDLE_PAUSE_MS": "0",
    "LABORNET_KAFKA_FETCH_IDLE_FETCH_EVERY_MS": "0",
    "LABORNET_KAFKA_METADATA_MAX_AGE_MS": "10000",
    "LABORNET_OUTBOX_POLL_INTERVAL_S": "0.05",
}


def tree(root: int) -> list[int]:
    """``root`` and every process below it."""
    children = children_by_parent()
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, ()))
    return found


def kind(pid: int) -> str:
    """What a process of the run is: the broker, a node or service, a console, or the supervisor."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace").split("\0")
    except OSError:
        return "gone"
    if words and Path(words[0]).name == "tansu":
        return "broker"
    kinds = {"serve-node": "node", "serve": "service", "serve-console": "console", "up": "supervisor"}
    return next((kinds[word] for word in words if word in kinds), "other")


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """CPU seconds (user + system) each of ``pids`` still running has used so far."""
    used = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            used[pid] = process_cpu_seconds(pid)
    return used


def measure(process_per: str, provinces: str | None, settle_s: float, window_s: float, env: dict[str, str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="labornet-idle-") as data_dir:
        command = [
            sys.executable, "-m", "labornet.shared.cli", "up", "--no-demo", "--process-per", process_per,
            "--data-dir", data_dir, "--port-base", "28000", "--broker-port", "29092",
        ]  # fmt: skip
        if provinces:
            command += ["--provinces", provinces]
        started = time.monotonic()
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **env, "COLUMNS": "200"},
            start_new_session=True,
        )
        ready_in = None
        try:
            assert proc.stdout is not None
            said: list[str] = []
            for line in proc.stdout:
                said = [*said[-20:], line]
                found = READY.search(line)
                if found:
                    ready_in = float(found.group(1))
                    break
                if time.monotonic() - started > 300:
                    raise SystemExit("the federation was not ready within 300 s")
            if ready_in is None:
                raise SystemExit(f"labornet up stopped before it was ready (exit {proc.wait()}):\n{''.join(said)}")
            time.sleep(settle_s)
            pids = tree(proc.pid)
            kinds = {pid: kind(pid) for pid in pids}
            before, t0 = cpu_seconds(pids), time.monotonic()
            time.sleep(window_s)
            pids = sorted(set(pids) | set(tree(proc.pid)))
            kinds |= {pid: kind(pid) for pid in pids if pid not in kinds}
            after, elapsed = cpu_seconds(pids), time.monotonic() - t0
        finally:
            with contextlib.suppress(ProcessLookupError):  # it may have stopped on its own
                os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    by_kind: dict[str, float] = {}
    for pid, seconds in after.items():
        by_kind[kinds[pid]] = by_kind.get(kinds[pid], 0.0) + seconds - before.get(pid, 0.0)
    used = sum(by_kind.values())
    cores = os.cpu_count() or 1
    return {
        "ready_s": ready_in,
        "cores_busy": used / elapsed,
        "machine_pct": 100 * used / elapsed / cores,
        "by_kind": {name: seconds / elapsed for name, seconds in sorted(by_kind.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--process-per", choices=["node", "service"], default="node")
    parser.add_argument("--provinces", default=None, help="comma-separated subset (default: all nine)")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds after ready before measuring")
    parser.add_argument("--window", type=float, default=30.0, help="seconds measured")
    parser.add_argument("--no-anchor", action="store_true", help="measure LaborNet's defaults only")
    args = parser.parse_args()
    how = (args.process_per, args.provinces, args.settle, args.window)
    load = os.getloadavg()[0]
    print(f"idle federation ({args.process_per} mode, {args.provinces or 'nine provinces'}), load average {load:.2f}")
    rows = [] if args.no_anchor else [("earlier pacing (anchor)", measure(*how, EAGER))]
    rows.append(("LaborNet defaults", measure(*how, {})))
    print(f"{'pacing':<26}{'ready (s)':>10}{'cores busy':>12}{'% of machine':>14}{'goal':>10}")
    for name, row in rows:
        print(f"{name:<26}{row['ready_s']:>10.1f}{row['cores_busy']:>12.3f}{row['machine_pct']:>13.1f}%{'≤ 5 %':>10}")
    if len(rows) == 2:
        anchor, ours = rows[0][1], rows[1][1]
        print(f"ratio LaborNet / earlier pacing: {ours['cores_busy'] / max(anchor['cores_busy'], 1e-9):.3f}")
    print("cores busy by process kind (CPU seconds per second of the window):")
    for name, row in rows:
        print(f"  {name:<24}" + "  ".join(f"{kind_} {cores:.3f}" for kind_, cores in row["by_kind"].items()))
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

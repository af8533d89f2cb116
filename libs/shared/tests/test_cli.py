"""The `labornet` command: keys, dev tokens, the embedded broker's binary, the Prometheus targets of `labornet up`."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from labornet.shared.auth import TokenVerifier
from labornet.shared.broker import EmbeddedBroker, free_port, free_ports, port_open, tansu_binary
from labornet.shared.cli import app
from labornet.shared.federation import Federation, ServiceProcess, prometheus_targets, write_prometheus_targets
from labornet.shared.signing import TrustList, load_public_key

runner = CliRunner()


def test_keys_generate_then_token_verifies(tmp_path: Path) -> None:
    result = runner.invoke(app, ["keys", "generate", "--province", "510000", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    trust = TrustList.load(tmp_path / "trust-list.json")
    assert created["signing_key_id"] in trust.keys

    result = runner.invoke(
        app, ["token", "--province", "510000", "--role", "officer", "--sub", "alice", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    verifier = TokenVerifier(
        issuer="labornet:510000", audience="labornet", public_key=load_public_key(tmp_path / "keys/510000/token.pub")
    )
    principal = verifier.verify(result.stdout.strip())
    assert (principal.sub, principal.province, sorted(principal.roles)) == ("alice", "510000", ["officer"])


def test_rotation_from_the_command_line(tmp_path: Path) -> None:
    args = ["keys", "generate", "--province", "330000", "--data-dir", str(tmp_path)]
    first = json.loads(runner.invoke(app, args).stdout)["signing_key_id"]
    second = json.loads(runner.invoke(app, [*args, "--rotate"]).stdout)["signing_key_id"]
    assert first != second
    assert {k.key_id for k in TrustList.load(tmp_path / "trust-list.json").keys_of("330000")} == {first, second}


def test_clear_errors(tmp_path: Path) -> None:
    no_key = runner.invoke(
        app, ["token", "--province", "510000", "--role", "officer", "--sub", "a", "--data-dir", str(tmp_path)]
    )
    assert no_key.exit_code == 2
    assert "labornet keys generate --province 510000" in no_key.output
    unknown = runner.invoke(app, ["keys", "generate", "--province", "990000", "--data-dir", str(tmp_path)])
    assert unknown.exit_code == 2
    assert "990000" in unknown.output
    runner.invoke(app, ["keys", "generate", "--province", "510000", "--data-dir", str(tmp_path)])
    bad_role = runner.invoke(
        app, ["token", "--province", "510000", "--role", "boss", "--sub", "a", "--data-dir", str(tmp_path)]
    )
    assert bad_role.exit_code == 2
    assert "unknown role" in bad_role.output


def test_broker_binary_is_the_pinned_tansu() -> None:
    binary = tansu_binary()
    assert os.access(binary, os.X_OK)
    assert "tansu" in subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout


def test_embedded_broker_refuses_a_busy_port(kafka_broker: EmbeddedBroker) -> None:
    second = EmbeddedBroker(port=kafka_broker.port)
    with pytest.raises(RuntimeError, match="already in use"):
        second.start()


def local_federation(data_dir: Path, process_per: str) -> Federation:
    return Federation(
        data_dir=data_dir,
        provinces=["510000", "330000"],
        port_base=18000,
        broker_port=19092,
        bootstrap_servers="127.0.0.1:19092",
        database_url_template=None,
        console=Console(file=io.StringIO()),
        process_per=process_per,
    )


def test_labornet_up_writes_a_prometheus_targets_file_of_its_services(tmp_path: Path) -> None:
    federation = local_federation(tmp_path, "service")
    federation._report(elapsed=1.0)  # what `labornet up` does once every service answers /readyz
    targets = json.loads((tmp_path / "prometheus-targets.json").read_text("utf-8"))
    # Sichuan is the registry's first member (ports 18000…18004), Zhejiang its eighth (18070…18074)
    assert targets == [
        {"targets": ["127.0.0.1:18000"], "labels": {"province": "510000", "service": "jobs"}},
        {"targets": ["127.0.0.1:18001"], "labels": {"province": "510000", "service": "insurance"}},
        {"targets": ["127.0.0.1:18002"], "labels": {"province": "510000", "service": "brands"}},
        {"targets": ["127.0.0.1:18003"], "labels": {"province": "510000", "service": "rights"}},
        {"targets": ["127.0.0.1:18070"], "labels": {"province": "330000", "service": "jobs"}},
        {"targets": ["127.0.0.1:18071"], "labels": {"province": "330000", "service": "insurance"}},
        {"targets": ["127.0.0.1:18072"], "labels": {"province": "330000", "service": "brands"}},
        {"targets": ["127.0.0.1:18073"], "labels": {"province": "330000", "service": "rights"}},
        {"targets": ["127.0.0.1:18004"], "labels": {"province": "510000", "service": "console"}},
        {"targets": ["127.0.0.1:18074"], "labels": {"province": "330000", "service": "console"}},
    ]
    served = json.loads((tmp_path / "federation.json").read_text("utf-8"))["provinces"]
    assert {(t["labels"]["province"], t["labels"]["service"], t["targets"][0]) for t in targets} == {
        (code, service, url.removeprefix("http://"))
        for code, node in served.items()
        for service, url in [*node["services"].items(), ("console", node["console"])]
    }, "the targets are where federation.json says the services and consoles listen"


def test_a_node_process_is_one_target(tmp_path: Path) -> None:
    """In node mode the four services share one process and its metrics registry: one scrape of the process (the
    console stays a process of its own)."""
    assert prometheus_targets(local_federation(tmp_path, "node").processes()) == [
        {"targets": ["127.0.0.1:18000"], "labels": {"province": "510000", "service": "node"}},
        {"targets": ["127.0.0.1:18070"], "labels": {"province": "330000", "service": "node"}},
        {"targets": ["127.0.0.1:18004"], "labels": {"province": "510000", "service": "console"}},
        {"targets": ["127.0.0.1:18074"], "labels": {"province": "330000", "service": "console"}},
    ]


def test_the_targets_file_is_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "prometheus-targets.json"
    path.write_text("[] stale and longer than the new file" * 100, "utf-8")
    write_prometheus_targets(path, [ServiceProcess("510000", "jobs", 8000)])
    assert json.loads(path.read_text("utf-8")) == [
        {"targets": ["127.0.0.1:8000"], "labels": {"province": "510000", "service": "jobs"}}
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["prometheus-targets.json"], "no partial file left behind"


def test_labornet_up_starts_a_broker_that_exited_again_on_its_port(tmp_path: Path) -> None:
    """The embedded broker dies under a running federation: the supervisor starts a new one on the same address
    (a new cluster, an empty log the nodes recover from) instead of leaving every node without a broker."""
    federation = Federation(
        data_dir=tmp_path,
        provinces=["510000"],
        port_base=18100,
        broker_port=free_port(),
        bootstrap_servers=None,
        database_url_template=None,
        console=Console(file=io.StringIO()),
    )
    assert federation.broker is not None
    federation.broker.start()
    try:
        first_cluster = federation.broker.cluster_id
        federation.supervise()  # nothing to do
        assert federation.broker.cluster_id == first_cluster
        federation.broker._process.kill()  # type: ignore[union-attr]
        federation.broker._process.wait()  # type: ignore[union-attr]
        assert not federation.broker.running
        federation.supervise()
        assert federation.broker.running and federation.broker.cluster_id != first_cluster
        assert port_open("127.0.0.1", federation.broker.port)
        assert "starting it again" in federation.console.file.getvalue()  # type: ignore[attr-defined]
    finally:
        federation.broker.stop()


def _supervised(supervisor: int) -> list[int]:
    """The processes `labornet up` (process ``supervisor``) started for its services and consoles."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:  # gone, or not ours
                continue
            if f"LABORNET_SUPERVISOR_PID={supervisor}".encode() in environ:
                found.append(int(entry.name))
    return found


def _alive(pids: list[int], timeout_s: float) -> list[int]:
    """Those of ``pids`` still running (not zombies) after waiting up to ``timeout_s`` for them to end."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = []
        for pid in pids:
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z":
                    alive.append(pid)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


@contextlib.contextmanager
def _running_up(tmp_path: Path, ignore_sigint: bool = False) -> Iterator[tuple[subprocess.Popen[str], list[int]]]:
    """`labornet up` for Sichuan (its services, its console), as a command line starts it; yields it once ready, with
    the processes it started. Whatever is left is killed at the end."""
    port_base = free_ports(10)  # Sichuan, first in the registry: its services and its console
    command = [
        sys.executable, "-m", "labornet.shared.cli", "up", "--provinces", "510000", "--no-demo",
        "--data-dir", str(tmp_path / "run"), "--port-base", str(port_base), "--broker-port", str(free_port()),
    ]  # fmt: skip
    if ignore_sigint:  # as a script's background job starts it
        command = ["sh", "-c", 'trap "" INT; exec "$@"', "sh", *command]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    started: list[int] = []
    try:
        assert proc.stdout is not None
        printed = []
        for line in proc.stdout:
            printed.append(line)
            if "ready in" in line:
                break
        else:
            pytest.fail(f"labornet up ended before it was ready (exit {proc.wait()}):\n{''.join(printed)}")
        started = _supervised(proc.pid)
        assert len(started) >= 2, started  # its services and its console
        yield proc, started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for pid in _alive(started, 0):
            os.kill(pid, signal.SIGKILL)


def test_ctrl_c_stops_labornet_up_and_everything_it_started_even_when_started_deaf_to_it(tmp_path: Path) -> None:
    """A script's background job starts with SIGINT ignored; `labornet up` listens to it all the same and stops its
    node, its console and its broker."""
    with _running_up(tmp_path, ignore_sigint=True) as (proc, started):
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        assert _alive(started, 30) == []


def test_the_services_stop_when_labornet_up_is_killed_outright(tmp_path: Path) -> None:
    """The supervisor killed with SIGKILL cannot stop anything: its node and console, in sessions of their own, stop
    by themselves instead of serving on alone (Linux's parent-death signal)."""
    with _running_up(tmp_path) as (proc, started):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert _alive(started, 30) == []

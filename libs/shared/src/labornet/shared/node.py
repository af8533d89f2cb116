"""One node's four services in one process (``labornet serve-node``): the light mode of ``labornet up``.

Each service keeps its own app, port, database, outbox relay and consumer groups, exactly as when it runs alone;
only the Python process (and its ~100 MB of imports) is shared. Deployments still run one service per
container: this mode exists so that nine nodes fit comfortably on one small machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
from collections.abc import Generator

import uvicorn

from labornet.shared.settings import SERVICE_NAMES, Settings


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the node (several servers share one loop), and whose main
    loop wakes once a second, and at once when the node stops, instead of ten times a second: uvicorn's tick only
    refreshes the Date header (once a second) and looks for the signal to exit, and a node's four servers ticking
    were 40 of the 108 timers a second of a node at rest."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.stopping = asyncio.Event()

    def stop(self) -> None:
        self.should_exit = True
        self.stopping.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 1.0)
            counter += 10  # uvicorn refreshes the Date header on every tenth of its ticks: here every tick


async def serve_node(host: str, ports: dict[str, int]) -> None:
    """Serve the four services on ``ports`` until SIGINT/SIGTERM.

    ``LABORNET_DATABASE_URL`` may name one database per service with a ``{service}`` placeholder; without it each
    service gets its default SQLite file. One URL for all four is refused: every service owns its database.
    """
    template = os.environ.get("LABORNET_DATABASE_URL", "")
    if template and "{service}" not in template:
        raise ValueError("LABORNET_DATABASE_URL must contain {service}: the four services never share a database")
    servers = []
    for service in SERVICE_NAMES:
        settings = Settings(service=service, database_url=template.format(service=service) if template else "")
        app = importlib.import_module(f"labornet.{service}.app").create_app(settings)
        config = uvicorn.Config(
            app,
            host=host,
            port=ports[service],
            http="httptools",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=5,
        )
        servers.append(_Server(config))

    def stop() -> None:
        for server in servers:
            server.stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    await asyncio.gather(*(server.serve() for server in servers))

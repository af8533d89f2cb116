"""One node's four services in one process (``labornet serve-node``): the light mode of ``labornet up``.

Each service keeps its own app, port, database, outbox relay and consumer groups, exactly as when it runs alone;
only the Python process (and its ~100 MB of imports) is shared. Deployments still run one service per
container: this mode exists so that nine nodes fit comfortably on one small machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import os
import signal
import sys
from collections.abc import Callable, Generator, Sequence
from types import FrameType
from typing import Any

import uvicorn

from labornet.shared.settings import SERVICE_NAMES, Settings


class QuietServer(uvicorn.Server):
    """A uvicorn server whose main loop wakes once a second, and at once when it is told to stop, instead of ten
    times a second: uvicorn's tick only refreshes the Date header (once a second) and looks for the signal to exit,
    and four servers ticking were 40 of the 108 timers a second of a node at rest (every service process of a
    federation run one per service: 36 of them)."""

    tick_s = 1.0

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.stopping = asyncio.Event()
        self._serving_loop: asyncio.AbstractEventLoop | None = None
        self.on_serving: Callable[[], None] = settle_heap  # once started, before the first tick

    def stop(self) -> None:
        """End the server (on its event loop's thread)."""
        self.should_exit = True
        self.stopping.set()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """SIGINT or SIGTERM (uvicorn's handler, run between two statements of the loop's thread): the main loop is
        woken through the loop, never by setting the event from inside whatever the signal interrupted."""
        super().handle_exit(sig, frame)
        if self._serving_loop is not None:
            self._serving_loop.call_soon_threadsafe(self.stopping.set)

    async def main_loop(self) -> None:
        self._serving_loop = asyncio.get_running_loop()
        self.on_serving()
        counter = 0
        while not await self.on_tick(counter):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.tick_s)
            counter += 10  # uvicorn refreshes the Date header on every tenth of its ticks: here every tick


# the collector's first generation is collected after this many more objects made than freed (Python's default
# 700): a busy server keeps thousands alive for a moment (the requests in flight, a batch of records) and collected
# its young objects 500 times a second, moving the ones in flight on to older generations and full collections
YOUNG_OBJECTS = 7_000


def settle_heap() -> None:
    """Once a server has started, what start-up made and still holds (modules, apps, tables, compiled statements:
    about 180,000 objects in a jobs process) is left out of the garbage collector's full collections (``gc.freeze``,
    after a last full collection so that no garbage is kept with it), and the young generation is collected after
    ``YOUNG_OBJECTS``. A full collection walked all of it: 57–77 ms with the event loop stopped and every request in
    flight waiting, a few times a minute in a busy process, fifty times in ten seconds when many reads answered at
    once kept their requests alive together (p99 of a read by id 70–77 ms instead of 9–15). Objects made later are
    collected as before."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_OBJECTS, *gc.get_threshold()[1:])


def server_config(app: Any, host: str, port: int, *, factory: bool = False) -> uvicorn.Config:
    """How every LaborNet process serves HTTP: uvloop and httptools (ADR 27), LaborNet's own logging and no access
    log (request lines would log query strings), and a graceful shutdown bounded at 5 s (open event streams must not
    hold a shutdown forever)."""
    return uvicorn.Config(
        app,
        factory=factory,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )


def run_server(config: uvicorn.Config) -> None:
    """What ``uvicorn.run`` does for one process without reload or workers, with a :class:`QuietServer`; exits 3
    (uvicorn's start-up failure) when the server did not start."""
    server = QuietServer(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(3)


class _Server(QuietServer):
    """A node's server: the node handles the signals (its four servers share one loop) and stops each, and ticks
    for all of them (:func:`tick_together`); the server itself only waits to be told to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def main_loop(self) -> None:
        self._serving_loop = asyncio.get_running_loop()
        self.on_serving()
        await self.on_tick(0)  # the Date header, before the first request
        await self.stopping.wait()


async def tick_together(servers: Sequence[QuietServer], tick_s: float = QuietServer.tick_s) -> None:
    """uvicorn's tick of every one of ``servers`` that serves, once a second, in one wake-up: a tick refreshes the
    server's Date header (stopping is the node's to say), and a node at rest woke four times a second for it."""
    counter = 0
    while True:
        await asyncio.sleep(tick_s)
        counter += 10  # uvicorn refreshes the Date header on every tenth of its ticks: here every tick
        for server in servers:
            if server.started and not server.should_exit:
                await server.on_tick(counter)


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
        servers.append(_Server(server_config(app, host, ports[service])))  # on the loop uvloop.run made

    settle_when_all_serve(servers)

    def stop() -> None:
        for server in servers:
            server.stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    ticking = asyncio.create_task(tick_together(servers), name="node-servers-tick")
    try:
        await asyncio.gather(*(server.serve() for server in servers))
    finally:
        ticking.cancel()


def settle_when_all_serve(servers: Sequence[QuietServer]) -> None:
    """The servers of one process settle its heap once, when the last of them serves: each settling is a full
    collection of everything the process holds, and what the later servers' start-up made must be in the freeze."""
    unsettled = len(servers)

    def serving() -> None:
        nonlocal unsettled
        unsettled -= 1
        if unsettled == 0:
            settle_heap()

    for server in servers:
        server.on_serving = serving

"""A node's servers (``labornet serve-node``) at rest: one wake-up a second each, and a stop that ends them at once."""

from __future__ import annotations

import asyncio
import gc
import itertools
import signal
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from labornet.shared import node
from labornet.shared.broker import free_port
from labornet.shared.node import (
    YOUNG_OBJECTS,
    QuietServer,
    _Server,
    run_server,
    settle_when_all_serve,
    tick_together,
)
from labornet.shared.testing import eventually


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture(autouse=True)
def collector_as_it_was() -> Iterator[None]:
    """A server started here settles the test process's heap: the collector is put back as it was after."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


async def test_a_started_server_leaves_what_start_up_made_out_of_full_collections() -> None:
    """Once it serves, a server freezes what its process made so far (a full collection walked all of it, tens of
    milliseconds with every request waiting) and collects its young objects less often; what is made later is
    collected as before."""
    made_before = {"a vacancy": ["held since start-up"]}
    port = free_port()
    server = QuietServer(uvicorn.Config(hello, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    serving = asyncio.create_task(server._serve())
    try:
        await eventually(lambda: asyncio.sleep(0, bool(server.started)), timeout_s=10)
        await eventually(lambda: asyncio.sleep(0, gc.get_freeze_count() > 0), timeout_s=10)
        made_after = {"a vacancy": ["posted later"]}
        tracked = gc.get_objects()
        assert any(o is made_after for o in tracked)
        assert not any(o is made_before for o in tracked)  # frozen: no collection walks it
        assert gc.get_threshold()[0] == YOUNG_OBJECTS
        server.stop()
        await asyncio.wait_for(serving, 60)
    finally:
        serving.cancel()


async def test_the_servers_of_a_node_settle_its_heap_once_when_the_last_one_serves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A node runs four servers in one process: one full collection and freeze when the last serves, not one per
    server (the first would also miss what the others' start-up made)."""
    settled: list[int] = []
    monkeypatch.setattr(node, "settle_heap", lambda: settled.append(1))
    servers = [
        _Server(uvicorn.Config(hello, host="127.0.0.1", port=free_port(), log_config=None, lifespan="off"))
        for _ in range(2)
    ]
    settle_when_all_serve(servers)
    serving = [asyncio.create_task(servers[0].serve())]
    try:
        await eventually(lambda: asyncio.sleep(0, bool(servers[0].started)), timeout_s=10)
        await asyncio.sleep(0.2)
        assert settled == []  # one of two serves
        serving.append(asyncio.create_task(servers[1].serve()))
        await eventually(lambda: asyncio.sleep(0, settled == [1]), timeout_s=10)
        for server in servers:
            server.stop()
        await asyncio.wait_for(asyncio.gather(*serving), 60)
        assert settled == [1]
    finally:
        for task in serving:
            task.cancel()


async def test_a_node_s_servers_at_rest_tick_together_once_a_second_and_stop_at_once() -> None:
    """uvicorn's own main loop wakes ten times a second to refresh the Date header and look for the signal to
    exit; four servers in a node made that 40 wake-ups a second of a process doing nothing, and four once a second
    still four. The node's servers are ticked together once a second (each Date header still refreshed) and are
    woken at once by the node's stop (checked with the next tick two minutes away)."""
    ports = [free_port(), free_port()]
    servers = [
        _Server(uvicorn.Config(hello, host="127.0.0.1", port=port, log_config=None, lifespan="off")) for port in ports
    ]
    ticks: list[tuple[int, float]] = []  # (server, when)

    def counting(n: int, server: _Server) -> None:
        tick = server.on_tick

        async def counted(counter: int) -> bool:
            ticks.append((n, time.monotonic()))
            return await tick(counter)

        server.on_tick = counted  # type: ignore[method-assign]

    for n, server in enumerate(servers):
        counting(n, server)
    serving = [asyncio.create_task(server.serve()) for server in servers]
    ticking = asyncio.create_task(tick_together(servers))
    try:

        async def started() -> bool:
            return all(server.started for server in servers)

        await eventually(started, timeout_s=10)
        async with httpx.AsyncClient() as client:
            for port in ports:
                answer = await client.get(f"http://127.0.0.1:{port}/")
                assert answer.text == "ok" and answer.headers["date"].endswith("GMT")
        ticks.clear()
        await asyncio.sleep(3.5)
        for n in range(2):
            assert 2 <= sum(1 for server, _ in ticks if server == n) <= 4, ticks
        moments = sorted(when for _, when in ticks)
        wake_ups = 1 + sum(1 for a, b in itertools.pairwise(moments) if b - a > 0.05)
        assert wake_ups == len(ticks) // 2, f"{len(ticks)} ticks in {wake_ups} wake-ups: one a second for both"
        ticking.cancel()
        ticking = asyncio.create_task(tick_together(servers, tick_s=120))  # the stop must wake them, not a tick
        await asyncio.sleep(0.5)
        for server in servers:
            server.stop()
        await asyncio.wait_for(asyncio.gather(*serving), 60)
    finally:
        ticking.cancel()
        for task in serving:
            task.cancel()


async def test_a_service_server_stops_at_once_on_its_exit_signal() -> None:
    """``labornet serve`` (one service a process) runs the same quiet main loop under uvicorn's own signal handling:
    the handler's call wakes it through the loop, so SIGTERM ends the server without waiting for a tick."""
    port = free_port()
    server = QuietServer(uvicorn.Config(hello, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    serving = asyncio.create_task(server._serve())  # the serving part of serve(), without installing handlers

    async def started() -> bool:
        return bool(server.started)

    try:
        await eventually(started, timeout_s=10)
        server.tick_s = 120
        await asyncio.sleep(1.5)  # at rest: waiting on a tick minutes away
        asyncio.get_running_loop().call_soon(server.handle_exit, signal.SIGTERM, None)
        await asyncio.wait_for(asyncio.shield(serving), 60)  # woken by the signal's call, not by a tick
    finally:
        serving.cancel()


def test_a_service_that_cannot_listen_exits_with_uvicorns_start_up_failure() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = uvicorn.Config(hello, host="127.0.0.1", port=taken.getsockname()[1], log_config=None, lifespan="off")
        with pytest.raises(SystemExit) as exit_:
            run_server(config)
    assert exit_.value.code == 3

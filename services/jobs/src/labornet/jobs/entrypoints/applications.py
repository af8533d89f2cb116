"""Applications across provinces: a worker applies from the home node, the vacancy's owner moves the application
(directed messages between the two provinces only)."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from fastapi import APIRouter

from labornet.shared.app import Runtime
from labornet.shared.contracts import EventContract
from labornet.shared.inbox import Handler

router = APIRouter(prefix="/api/v1", tags=["applications"])

# the events of this part of the jobs service, listed in labornet.jobs.contracts.EVENTS
EVENTS: list[EventContract] = []


def setup(runtime: Runtime) -> None:
    """Wire this part's services into the runtime (called once, before the consumers start)."""


def inbox_handlers(runtime: Runtime) -> dict[str, Handler]:
    """Handlers of the directed messages of this part arriving on the province's jobs inbox."""
    return {}


def broadcast_handlers(runtime: Runtime) -> dict[str, Handler]:
    """Handlers of this part's events broadcast by partners on their jobs events topics."""
    return {}


def background(runtime: Runtime) -> list[Coroutine[Any, Any, None]]:
    """This part's long-running tasks (sweeps, rebroadcasts)."""
    return []

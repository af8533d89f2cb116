"""What the insurance aggregates raise: directed messages to another province's insurance inbox."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Message:
    """A directed message for the other province (sent through the outbox in the step's transaction)."""

    to: str
    type: str
    key: str
    data: dict[str, Any]

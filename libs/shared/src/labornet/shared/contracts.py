"""The bus contract of a service: which events it publishes, on which kind of channel, with which data.

Each service lists its events once, in ``labornet.<service>.contracts.EVENTS``; the AsyncAPI document of the
service (``/asyncapi.json``, ``docs/asyncapi/<service>.json``) is generated from that list, and the tests check
that every event the service's code publishes validates against the JSON Schema of its ``model``.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

Channel = Literal["events", "inbox"]


@dataclass(frozen=True)
class EventContract:
    """One event type a service publishes.

    ``channel`` says where it travels: ``events`` is the origin's broadcast stream
    (``labornet.<origin>.<service>.events``, read by every member), ``inbox`` a directed message to one province
    (``labornet.<destination>.<service>.inbox``, read by that province only; it carries ``destprovince`` and is
    answered with a receipt). ``model`` is the pydantic model of the CloudEvent's ``data``.
    """

    type: str
    model: builtins.type[BaseModel]  # `type` is the event type's name here
    channel: Channel
    summary: str
    description: str = ""

"""Topic names of the federation bus.

* ``labornet.<origin>.<service>.events`` — broadcast stream of one origin province (vacancies, brands,
  anonymous statistics). Only the origin writes it; every member reads it.
* ``labornet.<destination>.<service>.inbox`` — directed messages addressed to one province (insurance
  transfers, rights referrals, brand demand). Every member may write it; only the destination reads it.
* ``labornet.<province>.<service>.deadletter`` — records one province's consumers gave up on.

With these names Kafka prefix ACLs (``labornet.<province>.``) keep personal data on directed topics away from
third provinces; see docs/adr/0002-topics-and-envelope.md.
"""

from __future__ import annotations

from collections.abc import Iterable

PREFIX = "labornet"


def events_topic(origin: str, service: str) -> str:
    return f"{PREFIX}.{origin}.{service}.events"


def inbox_topic(destination: str, service: str) -> str:
    return f"{PREFIX}.{destination}.{service}.inbox"


def is_inbox_topic(topic: str) -> bool:
    return topic.startswith(PREFIX + ".") and topic.endswith(".inbox")


def deadletter_topic(province: str, service: str) -> str:
    return f"{PREFIX}.{province}.{service}.deadletter"


def node_topics(province: str, service: str, members: Iterable[str]) -> list[str]:
    """Every topic a service of one node produces to or consumes from."""
    names = {events_topic(code, service) for code in members}
    names |= {inbox_topic(code, service) for code in members}
    names.add(deadletter_topic(province, service))
    return sorted(names)


def stream_id(origin: str, topic: str) -> str:
    """The per-origin stream an event belongs to; its ``streamseq`` counts events in it without gaps."""
    return f"{origin}/{topic}"

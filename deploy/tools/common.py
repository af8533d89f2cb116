"""What the deployment generator and checkers share: paths, the federation's members and a small YAML writer.

The province registry and the topic names come from ``labornet.shared`` itself, so a deployment can never name a
topic the services do not use; run these tools with the repository's virtualenv (``.venv/bin/python``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labornet.shared.provinces import Province, load_registry
from labornet.shared.settings import SERVICE_NAMES, Settings
from labornet.shared.topics import deadletter_topic, events_topic, inbox_topic

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SERVICES: tuple[str, ...] = tuple(SERVICE_NAMES)
PARTITIONS = Settings.model_fields["kafka_topic_partitions"].default


def members() -> list[Province]:
    """The federation's members in registry order (the bundled ``provinces.json``)."""
    return list(load_registry(None))


def service_version(service: str) -> str:
    text = (ROOT / "services" / service / "pyproject.toml").read_text("utf-8")
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if match is None:
        raise SystemExit(f"services/{service}/pyproject.toml: no version")
    return match.group(1)


@dataclass(frozen=True)
class Topic:
    name: str
    kind: str  # events | inbox | deadletter
    province: str  # origin (events), destination (inbox) or owner (deadletter)
    service: str


def all_topics(codes: list[str]) -> list[Topic]:
    """Every topic of every member: what `labornet topics create` creates (node_topics over all members)."""
    topics = []
    for code in codes:
        for service in SERVICES:
            topics.append(Topic(events_topic(code, service), "events", code, service))
            topics.append(Topic(inbox_topic(code, service), "inbox", code, service))
            topics.append(Topic(deadletter_topic(code, service), "deadletter", code, service))
    return topics


# Topic retention (Kafka `retention.ms`). Broadcast streams carry no personal data and are the replayable log every
# node can verify and heal from, so they are kept; directed and dead-letter topics carry personal data and are only
# a transport (the receiving node's database and quarantine table hold what was applied), so they expire.
RETENTION_MS = {"events": -1, "inbox": 30 * 86_400_000, "deadletter": 30 * 86_400_000}


# YAML ----------------------------------------------------------------------------------------------------------

_PLAIN_UNSAFE = re.compile(
    r"""^$|^[\s\-?:,\[\]{}#&*!|>'"%@`~=]|[:#]\s|\s$|:$|^(true|false|yes|no|on|off|null|y|n)$|^[-+.\d]""",
    re.IGNORECASE,
)


class Literal(str):
    """A string written as a YAML literal block (``|``), e.g. a PromQL expression or an embedded file."""


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    text = str(value)
    if "\n" in text or _PLAIN_UNSAFE.search(text):
        return json.dumps(text, ensure_ascii=False)
    return text


def _block(value: Literal, indent: int) -> str:
    pad = " " * indent
    body = "\n".join(pad + line if line else "" for line in value.rstrip("\n").split("\n"))
    return ("|-" if not value.endswith("\n") else "|") + "\n" + body


def _emit(value: Any, indent: int) -> list[str]:
    """Lines of ``value`` (a dict or a list) at ``indent`` spaces."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            head = f"{pad}{_scalar(key)}:"
            if isinstance(item, Literal):
                lines.append(f"{head} {_block(item, indent + 2)}")
            elif isinstance(item, dict | list) and item:
                lines.append(head)
                lines.extend(_emit(item, indent + 2))
            else:
                lines.append(f"{head} {_inline(item)}")
    else:
        for item in value:
            if isinstance(item, dict | list) and item:
                nested = _emit(item, indent + 2)
                lines.append(f"{pad}- {nested[0].lstrip()}")
                lines.extend(nested[1:])
            elif isinstance(item, Literal):
                lines.append(f"{pad}- {_block(item, indent + 2)}")
            else:
                lines.append(f"{pad}- {_inline(item)}")
    return lines


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)


def dump_yaml(*documents: Any, header: str = "") -> str:
    """YAML text of one or more documents, with ``header`` as leading comment lines."""
    parts = []
    for document in documents:
        parts.append("\n".join(_emit(document, 0)) + "\n")
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.strip("\n").split("\n")) if header else ""
    return comment + "---\n".join(parts)


GENERATED = "Generated by deploy/tools/generate.py from the province registry; do not edit by hand."

"""Every event the services publish validates against their AsyncAPI documents, end to end.

Three provinces run as real node processes on the embedded broker (`labornet up --process-per node --smoke`): the
demo data is loaded and the smoke story walked through the public APIs (vacancies, brands and a brand demand, an
insurance transfer with its settlement, a rights referral accepted and resolved, receipts for every directed
message). Afterwards every record in every node's outbox — the exact key, headers and value the relay published —
is checked against the document the code generates for its service: its type must be a message of the channel
its topic belongs to, its headers must be the CloudEvents headers described there, its data must validate against
the message's JSON Schema and its key against the Kafka binding's key schema."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from labornet.shared.asyncapi import record_problems, service_document
from labornet.shared.broker import free_ports
from labornet.shared.outbox import decode_headers
from labornet.shared.provinces import load_registry
from labornet.shared.receipts import RECEIPT
from labornet.shared.settings import SERVICE_NAMES

PROVINCES = ("510000", "330000", "320000")


@pytest.fixture(scope="module")
def smoke_federation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data directory of a three-province federation that loaded the demo data and walked the smoke story."""
    data_dir = tmp_path_factory.mktemp("asyncapi-smoke")
    count = len(load_registry().codes())
    base = free_ports(10 * count + 1)  # ten for each province in registry order, then the broker's
    command = [sys.executable, "-m", "labornet.shared.cli", "up", "--provinces", ",".join(PROVINCES)]
    command += ["--data-dir", str(data_dir), "--port-base", str(base), "--process-per", "node", "--smoke"]
    command += ["--broker-port", str(base + 10 * count)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, f"the smoke federation failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return data_dir


def _outbox(database: Path) -> list[tuple[str, bytes | None, list[tuple[str, bytes]], bytes, str]]:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT topic, message_key, headers, payload, event_type FROM outbox ORDER BY id")
        return [
            (topic, key, decode_headers(json.loads(headers)), payload, kind)
            for topic, key, headers, payload, kind in rows
        ]
    finally:
        connection.close()


def test_every_published_event_validates_against_its_services_document(smoke_federation: Path) -> None:
    documents = {service: service_document(service) for service in SERVICE_NAMES}
    seen: Counter[tuple[str, str]] = Counter()
    problems: list[str] = []
    for province in PROVINCES:
        for service in SERVICE_NAMES:
            database = smoke_federation / "db" / province / f"{service}.sqlite3"
            assert database.exists(), f"no database {database}"
            for topic, key, headers, value, event_type in _outbox(database):
                seen[service, event_type] += 1
                found = record_problems(documents[service], topic, key, value, headers)
                problems += [f"{province} {service} {event_type} on {topic}: {problem}" for problem in found]
    assert problems == [], "events that break their AsyncAPI document:\n" + "\n".join(problems[:50])

    for service in SERVICE_NAMES:
        published = {event_type for (owner, event_type) in seen if owner == service}
        assert published, f"the smoke story published no {service} event"
        listed = set(documents[service]["components"]["messages"])
        assert published <= listed, f"{service} published types its document lacks: {published - listed}"
    receipts = sum(count for (_, event_type), count in seen.items() if event_type == RECEIPT)
    directed = {
        (service, event_type)
        for (service, event_type) in seen
        if event_type != RECEIPT and "directed" in str(documents[service]["components"]["messages"][event_type]["tags"])
    }
    assert receipts > 0 and directed, f"the story sent no directed message or receipt: {sorted(seen)}"
    assert len(seen) >= 12, f"the story covered only {sorted(seen)}"

"""What each service exposes on /metrics follows Prometheus's naming practice and the operator's documentation.

https://prometheus.io/docs/practices/naming/: a counter ends in ``_total``, a unit is in the name (``_seconds``,
``_bytes``, ``_yuan`` for money), an HTTP status is the label ``code`` (``status`` named HTTP codes on one metric and
domain states on others). No ``*_created`` series. Every ``labornet_*`` metric has HELP text and a row in
docs/operations/observability.md, the table operators read.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI

from labornet.brands.app import create_app as brands_app
from labornet.insurance.app import create_app as insurance_app
from labornet.jobs.app import create_app as jobs_app
from labornet.rights.app import create_app as rights_app
from labornet.shared.settings import Settings
from labornet.shared.testing import serving

APPS: dict[str, Callable[[Settings], FastAPI]] = {
    "jobs": jobs_app,
    "insurance": insurance_app,
    "brands": brands_app,
    "rights": rights_app,
}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations" / "observability.md"
UNIT_WORDS = {  # a word in a metric's HELP text and the suffix its name must then carry
    "CNY": "_yuan",
    "latency": "_seconds",
    "age of": "_seconds",
    "time from": "_seconds",
    "unix time": "_seconds",
}


def documented_metrics(markdown: str) -> set[str]:
    """Metric names of the docs' metrics table (name, type, labels, meaning); ``a_{b,c}_d`` stands for ``a_b_d`` and
    ``a_c_d``."""
    names: set[str] = set()
    rows = re.findall(
        r"^\| `(labornet_[a-z0-9_{},]+)` \| (?:counter|gauge|histogram|summary) \|", markdown, re.MULTILINE
    )
    for cell in rows:
        match = re.fullmatch(r"([a-z0-9_]*)\{([a-z0-9_,]+)\}([a-z0-9_]*)", cell)
        if match:
            names.update(f"{match[1]}{part}{match[3]}" for part in match[2].split(","))
        else:
            names.add(cell)
    return names


def families(exposition: str) -> dict[str, dict[str, str]]:
    """Per metric family of the text format: its TYPE and HELP."""
    found: dict[str, dict[str, str]] = {}
    for kind, name, value in re.findall(r"^# (HELP|TYPE) (\S+) ?(.*)$", exposition, re.MULTILINE):
        found.setdefault(name, {})[kind] = value
    return found


def samples(exposition: str) -> list[tuple[str, set[str]]]:
    """Each sample's name and label names."""
    parsed = []
    for line in exposition.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ", line)
        assert match, f"not a sample line: {line!r}"
        labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', match[2] or ""))
        parsed.append((match[1], labels))
    return parsed


def naming_problems(exposition: str, documented: set[str]) -> list[str]:
    problems = []
    described = families(exposition)
    for name, meta in sorted(described.items()):
        if not name.startswith("labornet_"):
            continue
        kind, help_text = meta.get("TYPE", ""), meta.get("HELP", "")
        if kind == "counter" and not name.endswith("_total"):
            problems.append(f"counter {name} does not end in _total")
        if not help_text.strip():
            problems.append(f"{name} has no HELP text")
        for word, suffix in UNIT_WORDS.items():
            if word.lower() in help_text.lower() and not name.endswith(suffix):
                problems.append(f"{name}: HELP says {word!r}, the name does not end in {suffix}")
        if name not in documented:
            problems.append(f"{name} is not documented in {DOCS.name}")
    for name, labels in samples(exposition):
        if name.endswith("_created"):
            problems.append(f"{name}: a _created series")
        if name.startswith("labornet_") and "status" in labels:
            problems.append(f"{name} has a `status` label (HTTP status: `code`, domain state: `state`)")
    return sorted(set(problems))


def test_the_checks_catch_each_kind_of_misnamed_metric() -> None:
    bad = "\n".join(
        [
            "# HELP labornet_x_events Events seen",
            "# TYPE labornet_x_events counter",
            "labornet_x_events 1.0",
            "# HELP labornet_x_created_total Things",
            "# TYPE labornet_x_created_total counter",
            "labornet_x_created_total 1.0",
            "labornet_x_created_created 1.7e9",
            "# HELP labornet_x_requests_seconds HTTP latency",
            "# TYPE labornet_x_requests_seconds histogram",
            'labornet_x_requests_seconds_count{route="/",status="200"} 1.0',
            "# HELP labornet_x_owed_amount CNY owed",
            "# TYPE labornet_x_owed_amount gauge",
            "labornet_x_owed_amount 3.0",
            "# HELP labornet_x_silent ",
            "# TYPE labornet_x_silent gauge",
            "labornet_x_silent 3.0",
        ]
    )
    documented = {"labornet_x_created_total", "labornet_x_requests_seconds", "labornet_x_owed_amount"}
    assert naming_problems(bad + "\n", documented) == [
        "counter labornet_x_events does not end in _total",
        "labornet_x_created_created: a _created series",
        "labornet_x_events is not documented in observability.md",
        "labornet_x_owed_amount: HELP says 'CNY', the name does not end in _yuan",
        "labornet_x_requests_seconds_count has a `status` label (HTTP status: `code`, domain state: `state`)",
        "labornet_x_silent has no HELP text",
        "labornet_x_silent is not documented in observability.md",
    ]
    table = (
        "| `labornet_a_{b,c}_total` | counter | x |\n| `labornet_d` | gauge | |\n| `labornet_old` | `labornet_new` |\n"
    )
    assert documented_metrics(table) == {
        "labornet_a_b_total",
        "labornet_a_c_total",
        "labornet_d",
    }


@pytest.mark.parametrize("service", list(APPS))
async def test_metrics_of_a_running_service_are_named_and_documented(
    service: str, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'metrics.sqlite3'}"  # the names do not depend on the database
    async with serving(APPS[service](make_settings("510000", service, database_url))) as client:
        assert (await client.get("/livez")).status_code == 200
        assert (await client.get("/api/v1/whoami")).status_code == 401
        exposition = (await client.get("/metrics")).text
    assert (
        f'labornet_http_request_duration_seconds_count{{code="401",method="GET",route="/api/v1/whoami",service="{service}"}}'
        in exposition
    )
    assert "labornet_events_published_total{" in exposition, "a counter of the bus, created at start-up"
    # SQLite: the queue of the process's writers for the write lock (ADR 35); the jobs service's start-up writers
    # may be in it
    assert re.search(rf'^labornet_db_writers_waiting{{service="{service}"}} \d+\.0$', exposition, re.MULTILINE)
    assert "# TYPE labornet_db_writers_refused_total counter" in exposition
    assert naming_problems(exposition, documented_metrics(DOCS.read_text("utf-8"))) == []

"""Schemathesis against each service of a real running node: no 5xx, and every response as its OpenAPI says.

Each service runs under uvicorn on a loopback port (``serving``) with its own SQLite database and an embedded
broker of its own (a fuzzed service's groups share nothing with what earlier tests of the worker left on the
session's broker); schemathesis loads ``/openapi.json`` over HTTP and, for every operation, Hypothesis generates
valid and invalid requests from it (``APIOperation.as_strategy`` in positive and negative mode), and the request
examples it documents are sent too. ``/api`` operations are sent with an officer's and with a worker's token of
the node, ``/admin`` operations with an operator's, so that what lies behind authentication is reached.

Checks, and why these:
- ``not_a_server_error``: no 5xx, whatever the input, but for a 502 the operation documents (an origin the caller
  named did not answer);
- ``response_schema_conformance``: the body of every documented status matches its schema (the typed 2xx models
  and the problem+json of the errors);
- ``content_type_conformance``: the body has the documented media type (JSON, problem+json, text, CSV).
Left out:
- ``status_code_conformance`` (the status is one the operation documents): some statuses come from the framework
  before any route runs, and which of them each operation documents is the OpenAPI's business, not a server fault;
  today a body that is not UTF-8 JSON gets FastAPI's 400 "There was an error parsing the body", which no operation
  documents. A 5xx fails ``not_a_server_error`` whether it is documented or not.
- ``negative_data_rejection`` and ``positive_data_acceptance`` judge the API's domain rules by the schema alone (a
  well-formed vacancy whose closing date is past is refused with 422 on purpose, and a worker is refused with 403
  what officers may do); ``use_after_free`` and ``ensure_resource_availability`` belong to stateful runs.

Every failure is collected (no shrinking: the first input that shows it is reported, with a curl command to
replay it) and the test fails listing them all. Bounded for CI: ``LABORNET_FUZZ_MAX_EXAMPLES`` (default 20) cases
per operation and mode, derandomized so that a CI run is reproducible: under two minutes for the four services on
two cores.

Schemathesis's own pytest integration (``schemathesis.pytest.from_fixture``) is not used: its 4.32.5 release sets
``Function._nodeid``, which pytest 9.2 no longer has.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import requests
import schemathesis
from aiokafka.admin import AIOKafkaAdminClient
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from hypothesis.strategies import SearchStrategy
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import (
    ServerError,
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)
from schemathesis.errors import FailureGroup

from labornet.shared.broker import EmbeddedBroker
from labornet.shared.kafka import client_config
from labornet.shared.keys import NodeKeys
from labornet.shared.settings import Settings
from labornet.shared.testing import bearer, serving

SERVICES = ("jobs", "insurance", "brands", "rights")
PROVINCE = "510000"
MAX_EXAMPLES = int(os.environ.get("LABORNET_FUZZ_MAX_EXAMPLES", "20"))
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]

# the jobs import takes NDJSON as a text body (its schema: a string), which schemathesis sends like text/plain
schemathesis.serializer.alias("application/x-ndjson", "text/plain")

# schemathesis 4.32.5 draws from `random` inside its strategies; Hypothesis warns, and the run is derandomized anyway
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")


@dataclass
class RunningService:
    service: str
    base_url: str
    tokens: dict[str, dict[str, str]]

    def roles_for(self, path: str) -> list[str]:
        """Whose token each case of an operation is sent with."""
        return ["admin"] if path.startswith("/admin/") else ["officer", "worker"]


@contextlib.contextmanager
def in_background(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` from a thread of its own (schemathesis calls it synchronously); yield its base URL."""
    loop = asyncio.new_event_loop()
    started: concurrent.futures.Future[str] = concurrent.futures.Future()
    stop = asyncio.Event()

    async def main() -> None:
        try:
            async with serving(app) as client:
                started.set_result(str(client.base_url))
                await stop.wait()
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            raise

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), name="fuzzed-service", daemon=True)
    thread.start()
    try:
        yield started.result(timeout=60)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        loop.close()


def wait_ready(base_url: str, settings: Settings, timeout_s: float = 60.0) -> None:
    """Wait for ``/readyz``; a service that stays unready is reported with the checks it last gave and, for each
    consumer without partitions, what the broker says of its group (its state and members)."""
    deadline = time.monotonic() + timeout_s
    while (answer := httpx.get(f"{base_url}/readyz", timeout=5)).status_code != 200:
        if time.monotonic() > deadline:
            checks: dict[str, str] = answer.json().get("checks", {})
            waiting = [
                f"labornet.{settings.province}.{settings.service}.{name.removeprefix('consumer:')}"
                for name, state in checks.items()
                if name.startswith("consumer:") and state != "assigned"
            ]
            groups = asyncio.run(describe_groups(settings, waiting)) if waiting else ""
            raise AssertionError(f"{base_url} not ready within {timeout_s:.0f} s: {answer.text}\n{groups}")
        time.sleep(0.2)


async def describe_groups(settings: Settings, group_ids: list[str]) -> str:
    """The broker's view of ``group_ids``: state and member ids, or why it could not be asked."""
    admin = AIOKafkaAdminClient(**client_config(settings))
    try:
        await asyncio.wait_for(admin.start(), 10)
        described = await asyncio.wait_for(admin.describe_consumer_groups(group_ids), 10)
        return "\n".join(
            f"group {group[1]}: {group[2]}, members {[member[0] for member in group[-1]]}"
            for response in described
            for group in response.groups
        )
    except Exception as exc:
        return f"groups {group_ids} not described: {exc!r}"
    finally:
        await admin.close()


@pytest.fixture(scope="module", params=SERVICES)
def running_service(
    request: pytest.FixtureRequest,
    federation_dir: Path,
    node_keys: dict[str, NodeKeys],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningService]:
    service: str = request.param
    module = __import__(f"labornet.{service}.app", fromlist=["create_app"])
    directory = tmp_path_factory.mktemp(f"fuzz-{service}")
    database = directory / f"{service}.sqlite3"
    broker = EmbeddedBroker(log_path=directory / "tansu.log")
    settings_ = Settings(
        province=PROVINCE,
        service=service,
        data_dir=federation_dir,
        database_url=f"sqlite+aiosqlite:///{database}",
        kafka_bootstrap_servers=broker.bootstrap_servers,
        log_json=False,
    )
    keys = node_keys[PROVINCE]
    tokens = {role: bearer(keys, role, sub=f"fuzz-{role}") for role in ("officer", "worker", "admin")}
    with broker, in_background(module.create_app(settings_)) as base_url:
        wait_ready(base_url, settings_)
        yield RunningService(service, base_url, tokens)


def streams(operation: APIOperation) -> bool:
    """The operation answers with a server-sent event stream, which stays open."""
    responses = operation.definition.raw.get("responses", {}).values()
    return any("text/event-stream" in response.get("content", {}) for response in responses)


def upstream_failure(operation: APIOperation, failure: Exception) -> bool:
    """A 502 the operation documents: an origin the caller named did not answer (``POST /admin/v1/replica/heal``
    with an address where nothing listens), which is that origin's failure, not this node's."""
    responses = operation.definition.raw.get("responses", {})
    return isinstance(failure, ServerError) and failure.status_code == 502 and "502" in responses


def strategies(operation: APIOperation) -> dict[str, SearchStrategy[Case]]:
    """What each operation is sent: generated valid and invalid requests, and the request examples its OpenAPI
    documents (which reach past validation to the success answers, whose bodies are then checked too)."""
    found = {
        "positive": operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        "negative": operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    }
    examples = operation.get_strategies_from_examples()
    if examples:
        found["examples"] = st.one_of(examples)
    return found


def fuzz(
    target: RunningService, operation: APIOperation, kind: str, strategy: SearchStrategy[Case]
) -> dict[tuple[str, ...], str]:
    """Every distinct failure of ``operation`` (by role, status and check) with the first case that showed it.

    An event stream that opens never ends: its request times out after a second, and that timeout is the stream
    having opened (a refusal or a server error is answered at once, and is checked like any other response)."""
    found: dict[tuple[str, ...], str] = {}
    stream = streams(operation)

    @given(case=strategy)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Case) -> None:
        for role in target.roles_for(operation.path):
            timeout = 1 if stream else 30
            try:
                case.call_and_validate(
                    base_url=target.base_url, headers=target.tokens[role], checks=CHECKS, timeout=timeout
                )
            except requests.exceptions.ReadTimeout:
                if not stream:
                    raise
            except FailureGroup as group:
                for failure in group.exceptions:
                    if upstream_failure(operation, failure):
                        continue
                    key = (operation.label, role, type(failure).__name__, failure.title)
                    found.setdefault(key, f"{operation.label} ({kind}, {role}): {group}")

    try:
        run()
    except Unsatisfiable:
        # nothing to make invalid: an operation without parameters or body (GET /livez) has no negative case
        assert kind == "negative", f"{operation.label}: no {kind} request could be generated"
    return found


def test_no_server_error_and_every_response_as_documented(running_service: RunningService) -> None:
    schema = schemathesis.openapi.from_url(f"{running_service.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 5, "the service's OpenAPI lists its operations"
    failures: dict[tuple[str, ...], str] = {}
    for operation in operations:
        for kind, strategy in strategies(operation).items():
            failures.update(fuzz(running_service, operation, kind, strategy))
    assert not failures, f"{len(failures)} failures in {running_service.service}:\n\n" + "\n\n".join(failures.values())

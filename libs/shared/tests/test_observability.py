"""JSON logs with trace ids, W3C trace context, settings."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from labornet.shared.observability import (
    JsonFormatter,
    child_traceparent,
    current_traceparent,
    new_traceparent,
    trace_id_of,
)
from labornet.shared.settings import Settings


def test_child_keeps_the_trace_and_changes_the_span() -> None:
    parent = new_traceparent()
    child = child_traceparent(parent)
    assert trace_id_of(child) == trace_id_of(parent)
    assert child.split("-")[2] != parent.split("-")[2]
    assert trace_id_of(child_traceparent("garbage")) is not None, "an invalid parent starts a new trace"


def test_json_log_line_carries_trace_id_and_extra_fields() -> None:
    traceparent = new_traceparent()
    token = current_traceparent.set(traceparent)
    try:
        record = logging.makeLogRecord(
            {
                "name": "labornet.test",
                "levelname": "INFO",
                "msg": "applied %s",
                "args": ("e-1",),
                "topic": "labornet.510000.jobs.events",
            }
        )
        line = json.loads(JsonFormatter("jobs", "510000").format(record))
    finally:
        current_traceparent.reset(token)
    assert line["msg"] == "applied e-1"
    assert line["trace_id"] == trace_id_of(traceparent)
    assert (line["service"], line["province"], line["topic"]) == ("jobs", "510000", "labornet.510000.jobs.events")


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LABORNET_PROVINCE", "330000")
    monkeypatch.setenv("LABORNET_SERVICE", "insurance")
    monkeypatch.setenv("LABORNET_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LABORNET_KAFKA_BOOTSTRAP_SERVERS", "10.0.0.1:9092, 10.0.0.2:9092")
    settings = Settings()  # type: ignore[call-arg]
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path.resolve()}/db/330000/insurance.sqlite3"
    assert settings.bootstrap_servers == ["10.0.0.1:9092", "10.0.0.2:9092"]
    assert settings.signing_key_path == tmp_path / "keys/330000/signing.key"
    assert settings.trust_list_path == tmp_path / "trust-list.json"
    assert settings.auth_issuer == "labornet:330000"
    monkeypatch.setenv("LABORNET_DATABASE_URL", "postgresql+asyncpg://u@db/insurance")
    assert not Settings().is_sqlite  # type: ignore[call-arg]


def test_bad_province_setting_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABORNET_PROVINCE", "5100")
    with pytest.raises(ValueError, match="expected a 6-digit GB/T 2260 province code"):
        Settings()  # type: ignore[call-arg]


def test_identity_numbers_never_reach_the_log() -> None:
    record = logging.makeLogRecord(
        {
            "name": "x",
            "levelname": "WARNING",
            "msg": "refused transfer for %s",
            "args": ("51010519900307123X",),
            "person": "11010519491231002X",
        }
    )
    line = JsonFormatter().format(record)
    assert "51010519900307123X" not in line and "11010519491231002X" not in line
    assert "5101**********123X" in line and "1101**********002X" in line
    assert "order 202611230000000000001" in JsonFormatter().format(
        logging.makeLogRecord({"msg": "order 202611230000000000001"})
    ), "a 21-digit number is not an identity number"


def test_set_counts_zeroes_a_label_set_that_is_no_longer_counted() -> None:
    from prometheus_client import REGISTRY, Gauge

    from labornet.shared.observability import set_counts

    gauge = Gauge("labornet_test_things", "Things by state", ["state"])
    try:
        set_counts(gauge, {("open",): 2, ("closed",): 1})
        set_counts(gauge, {("closed",): 3})
        assert REGISTRY.get_sample_value("labornet_test_things", {"state": "open"}) == 0
        assert REGISTRY.get_sample_value("labornet_test_things", {"state": "closed"}) == 3
    finally:
        REGISTRY.unregister(gauge)


async def test_an_unexpected_error_answers_500_with_the_trace_id_it_logged() -> None:
    import httpx
    from fastapi import FastAPI

    from labornet.shared.observability import HttpMetrics
    from labornet.shared.problems import install_problem_handlers

    app = FastAPI()
    install_problem_handlers(app)
    app.add_middleware(HttpMetrics, service="test")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(JsonFormatter("test"))
    logger = logging.getLogger("labornet.shared.problems")
    logger.addHandler(handler)
    parent = new_traceparent()
    try:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            response = await client.get("/boom", headers={"traceparent": parent})
    finally:
        logger.removeHandler(handler)
    assert response.status_code == 500
    assert response.json()["detail"].endswith("Quote the trace_id to an operator.")
    assert response.json()["trace_id"] == trace_id_of(parent), "the 500 names the trace its caller can quote"
    (logged,) = [json.loads(line) for line in lines if "unhandled error on GET /boom" in line]
    assert logged["trace_id"] == trace_id_of(parent) and "RuntimeError: boom" in logged["exc"]

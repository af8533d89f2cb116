"""Organised dispatch between real nodes — Sichuan (510000, origin), Zhejiang (330000, destination), Chongqing
(500000, bystander) — on a broker of their own, over real HTTP, on SQLite and PostgreSQL.

Sichuan records a special train of 30 workers answering a Zhejiang brand demand; Zhejiang sees it, confirms that
29 arrived, and both sides show the difference of one. A second dispatch left unconfirmed shows overdue on both
sides once their clocks pass the limit. Chongqing holds no trace of either. Bad inputs are refused with problems
and change nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import select

from labornet.jobs.adapters.tables import metadata as jobs_metadata
from labornet.jobs.app import create_app
from labornet.shared.broker import EmbeddedBroker
from labornet.shared.clock import today_in_china
from labornet.shared.db import create_engine, platform_metadata
from labornet.shared.keys import NodeKeys
from labornet.shared.settings import Settings
from labornet.shared.testing import assert_problem, bearer, eventually, serving

pytestmark = pytest.mark.integration

PROVINCES = ("510000", "330000", "500000")
SC, ZJ, CQ = PROVINCES
DEMAND = f"{ZJ}-D-0123456789ABCDEF0123"
ESCORT_NAME, ESCORT_PHONE = "李建国", "13912345678"
PATH = "/api/v1/dispatches"


class Clock:
    """The system clock, moved forward when the test says so."""

    def __init__(self) -> None:
        self.ahead = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.ahead


def dispatch_body(**overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    body: dict[str, Any] = {
        "destination_province": ZJ,
        "brand_demand_id": DEMAND,
        "employers": [{"name": "宁波某电子科技有限公司", "division_code": "330206", "site": "北仑园区二号厂房"}],
        "headcount": 30,
        "transport": "special-train",
        "departure_at": (now - timedelta(days=1)).isoformat(),
        "departure_place": "成都东站",
        "expected_arrival_on": today_in_china(now).isoformat(),
        "escort": {"name": ESCORT_NAME, "phone": ESCORT_PHONE},
        "note": "春风行动务工专列",
    }
    body.update(overrides)
    return body


@dataclasses.dataclass
class Federation:
    clients: dict[str, httpx.AsyncClient]
    keys: dict[str, NodeKeys]
    urls: dict[str, str]
    clock: Clock

    def officer(self, province: str) -> dict[str, str]:
        return bearer(self.keys[province], "officer", sub=f"officer-{province}")

    async def dispatch(self, province: str, dispatch_id: str) -> dict[str, Any] | None:
        response = await self.clients[province].get(f"{PATH}/{dispatch_id}", headers=self.officer(province))
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    async def wait(self, province: str, dispatch_id: str, **expected: Any) -> dict[str, Any]:
        async def reached() -> bool:
            found = await self.dispatch(province, dispatch_id)
            return found is not None and all(found[key] == value for key, value in expected.items())

        await eventually(reached, timeout_s=30)
        found = await self.dispatch(province, dispatch_id)
        assert found is not None
        return found

    async def listed(self, province: str, **params: Any) -> list[str]:
        response = await self.clients[province].get(PATH, params=params, headers=self.officer(province))
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]


@pytest.fixture
async def nodes(
    new_database_url: Callable[[], Awaitable[str]],
    federation_dir: Path,
    node_keys: dict[str, NodeKeys],
    private_broker: EmbeddedBroker,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Federation]:
    monkeypatch.setenv("LABORNET_JOBS_DISPATCH_SWEEP_INTERVAL_S", "0.2")
    urls = {p: await new_database_url() for p in PROVINCES}
    clock = Clock()

    def settings_for(province: str) -> Settings:
        return Settings(
            province=province,
            service="jobs",
            data_dir=federation_dir,
            database_url=urls[province],
            kafka_bootstrap_servers=private_broker.bootstrap_servers,
            kafka_session_timeout_ms=3000,
            kafka_heartbeat_interval_ms=500,
            log_json=False,
            inbox_retry_backoff_s=0.05,
            broker_check_interval_s=1.0,
            kafka_metadata_max_age_ms=3000,
            receipt_wait_s=3.0,
        )

    async with contextlib.AsyncExitStack() as stack:
        apps: dict[str, FastAPI] = {p: create_app(settings_for(p)) for p in PROVINCES}
        clients = {p: await stack.enter_async_context(serving(apps[p])) for p in PROVINCES}

        async def all_ready() -> bool:
            return all([(await c.get("/readyz")).status_code == 200 for c in clients.values()])

        await eventually(all_ready, timeout_s=60)
        for app in apps.values():  # every node reads the test's clock, as its bootstrap would the system's
            app.state.runtime.extras["dispatches"].clock = clock
        yield Federation(clients, node_keys, urls, clock)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def traces_in(database_url: str, *secrets: str) -> list[str]:
    """Where in a node's database (every table, outbox and inbox included) any of ``secrets`` appears."""
    found = []
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            for table in [*platform_metadata.sorted_tables, *jobs_metadata.sorted_tables]:
                for row in (await connection.execute(select(table))).all():
                    text = repr(tuple(row)) + "".join(
                        value.decode("utf-8", "replace") for value in row if isinstance(value, bytes)
                    )
                    found += [f"{table.name}: {secret}" for secret in secrets if secret in text]
    finally:
        await engine.dispose()
    return found


async def test_a_special_train_from_sichuan_to_zhejiang(nodes: Federation) -> None:
    sc, zj = nodes.clients[SC], nodes.clients[ZJ]

    # bad inputs at the origin are refused and record nothing
    for body, field in [
        (dispatch_body(headcount=0), "headcount"),
        (dispatch_body(destination_province=SC), "destination_province"),
    ]:
        problem = assert_problem(await sc.post(PATH, json=body, headers=nodes.officer(SC)), 422)
        errors: Any = problem["errors"]
        assert field in [error["field"] for error in errors]
    assert await nodes.listed(SC) == []

    created = await sc.post(PATH, json=dispatch_body(), headers=nodes.officer(SC))
    assert created.status_code == 201, created.text
    dispatch_id = created.json()["id"]
    assert dispatch_id.startswith(f"{SC}-G-")

    at_destination = await nodes.wait(ZJ, dispatch_id, state="announced")
    assert (at_destination["role"], at_destination["headcount"], at_destination["transport"]) == (
        "received",
        30,
        "special-train",
    )
    assert at_destination["brand_demand_id"] == DEMAND and at_destination["escort"]["phone"] == ESCORT_PHONE
    assert await nodes.dispatch(CQ, dispatch_id) is None

    # the origin cannot confirm; a stale version is refused; neither changes anything
    arrival = {
        "arrived_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "headcount_received": 29,
        "note": "一人途中因家事返乡",
    }
    assert_problem(
        await sc.post(f"{PATH}/{dispatch_id}/arrival", json=arrival, headers={**nodes.officer(SC), "If-Match": '"1"'}),
        403,
        "only the destination",
    )
    assert_problem(
        await zj.post(f"{PATH}/{dispatch_id}/arrival", json=arrival, headers={**nodes.officer(ZJ), "If-Match": '"2"'}),
        409,
        "version 1",
    )
    assert (await nodes.dispatch(ZJ, dispatch_id)) == at_destination

    sent_before = metric("labornet_jobs_dispatch_workers_sent_total", destination_province=ZJ)
    received_before = metric("labornet_jobs_dispatch_workers_received_total", origin_province=SC)
    confirmed = await zj.post(
        f"{PATH}/{dispatch_id}/arrival", json=arrival, headers={**nodes.officer(ZJ), "If-Match": '"1"'}
    )
    assert confirmed.status_code == 200, confirmed.text
    assert (confirmed.json()["state"], confirmed.json()["difference"]) == ("arrived", 1)
    assert_problem(
        await zj.post(f"{PATH}/{dispatch_id}/arrival", json={**arrival, "version": 1}, headers=nodes.officer(ZJ)),
        409,
        "confirmed already",
    )

    at_origin = await nodes.wait(SC, dispatch_id, state="arrived")
    assert (at_origin["role"], at_origin["headcount_received"], at_origin["difference"]) == ("sent", 29, 1)
    at_destination = await nodes.wait(ZJ, dispatch_id, state="arrived")
    assert {k: v for k, v in at_origin.items() if k != "role"} == {
        k: v for k, v in at_destination.items() if k != "role"
    }
    assert await nodes.listed(SC, difference="true") == [dispatch_id]
    # each side counted its workers once: Sichuan the 30 it sent, Zhejiang the 29 it received
    assert metric("labornet_jobs_dispatch_workers_sent_total", destination_province=ZJ) == sent_before + 30
    assert metric("labornet_jobs_dispatch_workers_received_total", origin_province=SC) == received_before + 29
    assert await nodes.listed(ZJ, difference="true", role="received") == [dispatch_id]
    assert_problem(
        await sc.post(f"{PATH}/{dispatch_id}/cancel", json={"reason": "x", "version": 1}, headers=nodes.officer(SC)),
        409,
        "final",
    )

    # a second dispatch, left unconfirmed, becomes overdue on both sides once the clock passes the limit
    late = await sc.post(PATH, json=dispatch_body(headcount=12, transport="chartered-bus"), headers=nodes.officer(SC))
    assert late.status_code == 201, late.text
    late_id = late.json()["id"]
    waiting = await nodes.wait(ZJ, late_id, state="announced", overdue=False)
    assert waiting["confirmation_due"] == late.json()["confirmation_due"]
    assert await nodes.listed(SC, overdue="true") == [] and await nodes.listed(ZJ, overdue="true") == []
    nodes.clock.ahead = timedelta(days=30)  # past any two working days, whatever the holidays
    for province in (SC, ZJ):
        found = await nodes.dispatch(province, late_id)
        assert found is not None and found["overdue"] is True, found
        assert await nodes.listed(province, overdue="true") == [late_id]
        assert await nodes.listed(province, overdue="false") == [dispatch_id]

    # Chongqing holds no trace: nothing listed, nothing in any of its tables
    assert await nodes.listed(CQ) == []
    assert await traces_in(nodes.urls[CQ], dispatch_id, late_id, ESCORT_PHONE, ESCORT_NAME) == []

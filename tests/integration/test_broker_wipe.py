"""The federation heals itself after the broker loses its log (issue 10), with no operator action.

Three provinces run their jobs service against a broker of their own, on SQLite and on PostgreSQL. Officers of
Sichuan and Zhejiang keep posting and updating vacancies, 20 writes a second between them; the broker is killed
for ``OUTAGE_S`` seconds and comes back empty (the embedded broker keeps its log in memory, so a restart is a wiped
log); Zhejiang's node is down from just before the kill until after the broker's return. Within 120 s of the
broker's return, every write an officer got a 2xx for must be held by its origin (that version or a later one),
and every node must hold each origin's vacancies exactly as the origin does. A write whose answer was lost (a
timeout on a loaded machine) may or may not have been made: the nodes must agree on it all the same, but the test
cannot expect a version it never saw. What repairs it: each service's broker watch sees the new cluster, its relay
publishes again what the log lost from the retained outbox, consumers start over on the new log, and anti-entropy
compares every replica with its origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from labornet.jobs.adapters.tables import vacancy
from labornet.jobs.app import create_app
from labornet.shared.broker import EmbeddedBroker, free_port
from labornet.shared.clock import today_in_china
from labornet.shared.db import create_engine
from labornet.shared.keys import NodeKeys
from labornet.shared.settings import Settings
from labornet.shared.testing import bearer, eventually, serving

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

SC, ZJ, CQ = "510000", "330000", "500000"
DIVISIONS = {SC: "510104", ZJ: "330106", CQ: "500103"}
WRITES_PER_S = 20  # between the two writing origins
OUTAGE_S = 60
CONVERGED_WITHIN_S = 120


def draft(province: str, n: int) -> dict[str, Any]:
    return {
        "employer": {"name": "川渝劳务合作有限公司", "credit_code": "91350100M000100Y43"},
        "title": f"厨师 cook {province} {n}",
        "description": "负责川菜热菜制作，提供住宿。",
        "occupation_code": "5120",
        "division_code": DIVISIONS[province],
        "headcount": 2,
        "salary": {"min": 5000, "max": 8000},
        "employment_type": "full-time",
        "target_groups": ["migrant-workers"],
        "skills": ["川菜"],
        "contact": "028-88000000",
        "closing_date": (today_in_china() + timedelta(days=30)).isoformat(),
    }


class Writers:
    """Officers of two provinces posting and updating vacancies; remembers every acknowledged write."""

    def __init__(self, clients: dict[str, httpx.AsyncClient], keys: dict[str, NodeKeys]) -> None:
        self.clients = clients
        self.officers = {p: bearer(keys[p], "officer", sub=f"officer-{p}") for p in (SC, ZJ)}
        self.acknowledged: dict[str, tuple[int, str]] = {}  # vacancy id -> (version, status) as the origin said
        self.paused: set[str] = set()
        self.refused = 0
        self.unanswered = 0  # writes whose answer was lost: made or not, the origin knows
        self._stop = asyncio.Event()
        self._random = random.Random(10)

    async def run(self) -> None:
        n = 0
        interval = 1 / WRITES_PER_S
        next_at = time.monotonic()
        while not self._stop.is_set():
            province = (SC, ZJ)[n % 2]
            n += 1
            next_at += interval
            if province not in self.paused:
                try:
                    await self.write(province, n)
                except httpx.HTTPError:
                    self.unanswered += 1
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def write(self, province: str, n: int) -> None:
        client, officer = self.clients[province], self.officers[province]
        own = [vid for vid in self.acknowledged if vid.startswith(province)]
        if own and self._random.random() < 0.5:
            vid = self._random.choice(own)
            version, status = self.acknowledged[vid]
            if status != "open":
                return
            headers = {**officer, "If-Match": f'"{version}"'}
            if self._random.random() < 0.2:
                response = await client.post(
                    f"/api/v1/vacancies/{vid}/close", headers=headers, json={"reason": "filled"}
                )
            else:
                response = await client.patch(
                    f"/api/v1/vacancies/{vid}", headers=headers, json={"headcount": self._random.randint(1, 9)}
                )
        else:
            response = await client.post("/api/v1/vacancies", headers=officer, json=draft(province, n))
        if response.is_success:
            body = response.json()
            self.acknowledged[body["id"]] = (body["version"], body["status"])
        else:
            self.refused += 1

    async def stop(self) -> None:
        self._stop.set()


Held = dict[str, dict[str, tuple[int, str, int]]]  # owner province -> vacancy id -> (version, status, headcount)


async def held(url: str) -> Held:
    engine = create_engine(url)
    found: Held = {}
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                select(vacancy.c.owner_province, vacancy.c.id, vacancy.c.version, vacancy.c.status, vacancy.c.headcount)
            )
            for owner, vid, version, status, headcount in rows:
                found.setdefault(owner, {})[vid] = (version, status, headcount)
    finally:
        await engine.dispose()
    return found


def disagreements(holdings: dict[str, Held], acknowledged: dict[str, tuple[int, str]]) -> list[str]:
    """What keeps the nodes from agreeing: an acknowledged write the origin does not hold (a lost write), or a
    node whose copy of an origin's vacancies differs from the origin's own rows (a missing, extra or older row)."""
    found = []
    for vid, (version, status) in acknowledged.items():
        origin = vid[:6]  # a vacancy's id begins with its province's code
        mine = holdings[origin].get(origin, {}).get(vid)
        if mine is None or mine[0] < version or (mine[0] == version and mine[1] != status):
            found.append(f"{origin} lost the acknowledged write {vid} v{version} {status}: holds {mine}")
    for origin, holding in holdings.items():
        own = holding.get(origin, {})
        for province, other in holdings.items():
            copy = other.get(origin, {})
            if province != origin and copy != own:
                differ = sorted(vid for vid in own.keys() | copy.keys() if own.get(vid) != copy.get(vid))
                found.append(f"{province}'s copy of {origin} differs in {len(differ)} rows, e.g. {differ[:3]}")
    return found


@contextlib.asynccontextmanager
async def node(settings: Settings, port: int) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_app(settings), port=port) as client:
        yield client


async def test_every_acknowledged_write_survives_a_wiped_broker(
    new_database_url: Callable[[], Awaitable[str]],
    federation_dir: Path,
    node_keys: dict[str, NodeKeys],
    private_broker: EmbeddedBroker,
    three_provinces: Path,
) -> None:
    provinces = (SC, ZJ, CQ)
    urls = {p: await new_database_url() for p in provinces}
    ports = {p: free_port() for p in provinces}
    peers = {p: f"http://127.0.0.1:{ports[p]}" for p in provinces}

    def settings_for(province: str) -> Settings:
        return Settings(  # type: ignore[call-arg]
            province=province,
            service="jobs",
            data_dir=federation_dir,
            database_url=urls[province],
            kafka_bootstrap_servers=private_broker.bootstrap_servers,
            kafka_session_timeout_ms=3000,
            kafka_heartbeat_interval_ms=500,
            kafka_metadata_max_age_ms=3000,
            broker_check_interval_s=1.0,
            provinces_path=three_provinces,
            peer_urls={p: url for p, url in peers.items() if p != province},
            antientropy_interval_s=20.0,
            antientropy_first_round_s=5.0,
            log_json=False,
        )

    zhejiang = contextlib.AsyncExitStack()
    async with contextlib.AsyncExitStack() as stack:
        clients = {p: await stack.enter_async_context(node(settings_for(p), ports[p])) for p in (SC, CQ)}
        clients[ZJ] = await zhejiang.enter_async_context(node(settings_for(ZJ), ports[ZJ]))

        async def all_ready() -> bool:
            return all([(await c.get("/readyz")).status_code == 200 for c in clients.values()])

        await eventually(all_ready, timeout_s=60)
        writers = Writers(clients, node_keys)
        writing = asyncio.create_task(writers.run())
        try:
            await asyncio.sleep(5)
            # Zhejiang goes down with whatever it published still unread by its partners; then the broker dies
            writers.paused.add(ZJ)
            await zhejiang.aclose()
            private_broker.stop()
            killed_at = time.monotonic()
            await asyncio.sleep(OUTAGE_S)
            private_broker.start()  # empty: a new cluster
            returned_at = time.monotonic()
            log.info("broker back after %.0f s", returned_at - killed_at)
            async with node(settings_for(ZJ), ports[ZJ]) as zhejiang_again:
                clients[ZJ] = zhejiang_again
                writers.paused.discard(ZJ)
                await asyncio.sleep(5)
                await writers.stop()
                await writing
                expected = dict(writers.acknowledged)
                assert len(expected) > 200, f"the writers got only {len(expected)} writes through"
                assert writers.refused < len(expected) / 10, f"{writers.refused} writes were refused"
                last: list[str] = []

                async def converged() -> bool:
                    last[:] = disagreements({p: await held(urls[p]) for p in provinces}, expected)
                    return not last

                try:
                    await eventually(converged, timeout_s=CONVERGED_WITHIN_S, interval_s=1.0)
                except AssertionError:
                    raise AssertionError(f"not converged within {CONVERGED_WITHIN_S} s: {last[:10]}") from None
                took = time.monotonic() - returned_at
                log.info("converged %.1f s after the broker's return (%d vacancies)", took, len(expected))
                print(
                    f"\nconverged {took:.1f} s after the broker's return; {len(expected)} vacancies, "
                    f"{writers.unanswered} writes unanswered"
                )
        finally:
            await writers.stop()
            with contextlib.suppress(Exception):
                await writing

"""Anti-entropy across real jobs nodes (ADR 0008): real HTTP, a broker of their own, SQLite and PostgreSQL.

A replica forced out of line in its own database — a title changed under the same version, a version 97 ahead,
a lost row, a row the origin never had — is made equal to the origin within two intervals, with no operator call;
the origin's next real update then applies through the bus; an origin that does not answer shows as such in
``/admin/v1/sync``; ``labornet federation verify`` says which replica differs and exits non-zero until it is healed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import insert, select, update
from typer.testing import CliRunner

from labornet.jobs.adapters.tables import vacancy
from labornet.jobs.app import create_app
from labornet.shared.broker import EmbeddedBroker, free_port
from labornet.shared.cli import app as cli
from labornet.shared.clock import today_in_china
from labornet.shared.db import create_engine
from labornet.shared.keys import NodeKeys
from labornet.shared.settings import Settings
from labornet.shared.testing import bearer, eventually, serving

pytestmark = pytest.mark.integration

SC, ZJ, CQ = "510000", "330000", "500000"
INTERVAL_S = 1.5
JITTER = 0.2
# "within two intervals": the longest two jittered intervals, plus the time of one round and of the reads
TWO_INTERVALS_S = 2 * INTERVAL_S * (1 + JITTER) + 2.0


def draft(title: str) -> dict[str, Any]:
    return {
        "employer": {"name": "杭州川味餐饮有限公司", "credit_code": "91350100M000100Y43"},
        "title": title,
        "description": "负责川菜热菜制作，提供住宿。",
        "occupation_code": "5120",
        "division_code": "330106",
        "headcount": 3,
        "salary": {"min": 6000, "max": 9000},
        "employment_type": "full-time",
        "target_groups": ["migrant-workers"],
        "skills": ["川菜"],
        "contact": "0571-88000000",
        "closing_date": (today_in_china() + timedelta(days=30)).isoformat(),
    }


@contextlib.asynccontextmanager
async def nodes(
    provinces: tuple[str, ...], settings_for: Callable[[str, int], Settings], ports: dict[str, int]
) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    async with contextlib.AsyncExitStack() as stack:
        clients = {
            p: await stack.enter_async_context(serving(create_app(settings_for(p, ports[p])), port=ports[p]))
            for p in provinces
        }

        async def all_ready() -> bool:
            return all([(await c.get("/readyz")).status_code == 200 for c in clients.values()])

        await eventually(all_ready, timeout_s=60)
        yield clients


def settings_factory(
    urls: dict[str, str],
    peers: dict[str, str],
    federation_dir: Path,
    broker: EmbeddedBroker,
    provinces_path: Path,
    **overrides: Any,
) -> Callable[[str, int], Settings]:
    def build(province: str, _port: int) -> Settings:
        values: dict[str, Any] = {
            "province": province,
            "service": "jobs",
            "data_dir": federation_dir,
            "database_url": urls[province],
            "kafka_bootstrap_servers": broker.bootstrap_servers,
            "kafka_session_timeout_ms": 3000,
            "kafka_heartbeat_interval_ms": 500,
            "log_json": False,
            "provinces_path": provinces_path,
            "peer_urls": {p: url for p, url in peers.items() if p != province},
            "antientropy_interval_s": INTERVAL_S,
            "antientropy_first_round_s": 0.5,
            "antientropy_jitter": JITTER,
            "antientropy_range_rows": 2,  # several ranges from a handful of vacancies
            "antientropy_digest_ttl_s": 0.5,
        }
        values.update(overrides)
        return Settings(**values)

    return build


async def replica_entry(client: httpx.AsyncClient, admin: dict[str, str], origin: str) -> dict[str, Any]:
    sync = (await client.get("/admin/v1/sync", headers=admin)).json()
    return next(r for r in sync["replicas"] if r["origin"] == origin and r["kind"] == "vacancies")


REPAIRS = ("inserted", "replaced", "deleted")


def metric(name: str, origin: str, **labels: str) -> float:
    labels = {"service": "jobs", "province": SC, "origin": origin, "kind": "vacancies", **labels}
    value = REGISTRY.get_sample_value(name, labels)
    assert value is not None, f"{name}{labels} is not exposed"
    return value


async def test_a_replica_forced_out_of_line_is_repaired_without_an_operator(
    new_database_url: Callable[[], Awaitable[str]],
    federation_dir: Path,
    node_keys: dict[str, NodeKeys],
    private_broker: EmbeddedBroker,
    three_provinces: Path,
) -> None:
    urls = {p: await new_database_url() for p in (SC, ZJ)}
    ports = {SC: free_port(), ZJ: free_port()}
    # Chongqing is a member but does not run: its address answers nothing
    peers = {
        SC: f"http://127.0.0.1:{ports[SC]}",
        ZJ: f"http://127.0.0.1:{ports[ZJ]}",
        CQ: f"http://127.0.0.1:{free_port()}",
    }
    settings_for = settings_factory(urls, peers, federation_dir, private_broker, three_provinces)
    zj_officer = bearer(node_keys[ZJ], "officer", sub="zj-officer")
    sc_admin = bearer(node_keys[SC], "admin", sub="sc-operator")
    async with nodes((SC, ZJ), settings_for, ports) as clients:
        sc, zj = clients[SC], clients[ZJ]
        # every series exists from start-up (metric() fails on one not exposed); the registry is the process's, so
        # an earlier test's nodes of the same provinces may have counted already: no round of this test counts
        # towards Chongqing, which never answers
        at_start = {a: metric("labornet_antientropy_rows_repaired_total", CQ, action=a) for a in REPAIRS}
        in_sync_with_chongqing = metric("labornet_antientropy_rounds_total", CQ, outcome="in-sync")

        ids = [
            (await zj.post("/api/v1/vacancies", headers=zj_officer, json=draft(f"焊工 welder {n}"))).json()["id"]
            for n in range(6)
        ]

        async def replicated() -> bool:
            return (await sc.get("/api/v1/vacancies", params={"province": ZJ})).json()["total"] == 6

        await eventually(replicated, timeout_s=30)
        held_all_at = datetime.now(UTC)

        async def compared_since() -> bool:
            # a round that began once all six were held found nothing to do, and every round before it (which may
            # have inserted a row the bus had not yet delivered) has finished counting: rounds never overlap
            entry = await replica_entry(sc, sc_admin, ZJ)
            began = entry["last_round_at"]
            return entry["status"] == "in-sync" and began is not None and datetime.fromisoformat(began) > held_all_at

        await eventually(compared_since, timeout_s=30)
        before = {
            a: metric("labornet_antientropy_rows_repaired_total", ZJ, action=a)
            for a in ("inserted", "replaced", "deleted")
        }
        # a round may already have repaired a row the bus had not yet delivered: count from here
        repaired_before = (await replica_entry(sc, sc_admin, ZJ))["rows_repaired"]

        # the replica's own database is changed behind the service's back
        ordered = sorted(ids)
        retitled, ahead, lost = ordered[0], ordered[2], ordered[4]
        stranger = f"{ZJ}-V-{'0' * 20}"
        engine = create_engine(urls[SC])
        async with engine.begin() as connection:
            await connection.execute(update(vacancy).where(vacancy.c.id == retitled).values(title="被改过的标题"))
            await connection.execute(
                update(vacancy).where(vacancy.c.id == ahead).values(version=vacancy.c.version + 97)
            )
            template = (await connection.execute(select(vacancy).where(vacancy.c.id == lost))).mappings().one()
            await connection.execute(vacancy.delete().where(vacancy.c.id == lost))
            await connection.execute(insert(vacancy).values(**{**template, "id": stranger}))
        await engine.dispose()
        forced_at = asyncio.get_running_loop().time()

        async def equal_to_the_origin() -> bool:
            for vid in ids:
                mine, theirs = (await sc.get(f"/api/v1/vacancies/{vid}")), (await zj.get(f"/api/v1/vacancies/{vid}"))
                if mine.status_code != 200 or mine.json() != theirs.json():
                    return False
            return (await sc.get(f"/api/v1/vacancies/{stranger}")).status_code == 404

        await eventually(equal_to_the_origin, timeout_s=TWO_INTERVALS_S, interval_s=0.1)
        repaired_in = asyncio.get_running_loop().time() - forced_at
        print(f"repaired {repaired_in:.2f}s after the rows were forced out of line (interval {INTERVAL_S}s)")

        after = {a: metric("labornet_antientropy_rows_repaired_total", ZJ, action=a) for a in before}
        assert {a: after[a] - before[a] for a in after} == {"inserted": 1, "replaced": 2, "deleted": 1}
        entry = await replica_entry(sc, sc_admin, ZJ)
        assert {a: n - repaired_before[a] for a, n in entry["rows_repaired"].items()} == {
            "inserted": 1,
            "replaced": 2,
            "deleted": 1,
        }
        assert entry["last_error"] is None and entry["checkpoint_age_s"] is not None

        # the origin's next real update applies through the bus: the bogus version no longer pins the row
        stale_before = REGISTRY.get_sample_value("labornet_jobs_replica_changes_total", {"result": "stale"}) or 0
        updated_before = REGISTRY.get_sample_value("labornet_jobs_replica_changes_total", {"result": "updated"}) or 0
        changed = await zj.patch(
            f"/api/v1/vacancies/{ahead}", headers=zj_officer | {"If-Match": '"1"'}, json={"headcount": 7}
        )
        assert changed.status_code == 200, changed.text

        async def update_applied() -> bool:
            held = (await sc.get(f"/api/v1/vacancies/{ahead}")).json()
            return (held["version"], held["headcount"]) == (2, 7)

        await eventually(update_applied, timeout_s=10)
        assert (REGISTRY.get_sample_value("labornet_jobs_replica_changes_total", {"result": "updated"}) or 0) == (
            updated_before + 1
        )
        assert (
            REGISTRY.get_sample_value("labornet_jobs_replica_changes_total", {"result": "stale"}) or 0
        ) == stale_before

        # the origin that does not run is reported as unreachable, truthfully and without stopping the others
        unreachable = await replica_entry(sc, sc_admin, CQ)
        assert unreachable["status"] == "unreachable", unreachable
        assert "did not answer" in unreachable["last_error"] and unreachable["last_in_sync_at"] is None
        assert metric("labornet_antientropy_rounds_total", CQ, outcome="unreachable") >= 1
        assert metric("labornet_antientropy_rounds_total", CQ, outcome="in-sync") == in_sync_with_chongqing
        assert {a: metric("labornet_antientropy_rows_repaired_total", CQ, action=a) for a in REPAIRS} == at_start
        assert (await sc.get("/admin/v1/sync", headers=bearer(node_keys[SC], "officer"))).status_code == 403


async def test_federation_verify_reports_a_differing_replica_until_it_is_healed(
    new_database_url: Callable[[], Awaitable[str]],
    federation_dir: Path,
    node_keys: dict[str, NodeKeys],
    private_broker: EmbeddedBroker,
    three_provinces: Path,
    tmp_path: Path,
) -> None:
    provinces = (SC, ZJ, CQ)
    urls = {p: await new_database_url() for p in provinces}
    ports = {p: free_port() for p in provinces}
    peers = {p: f"http://127.0.0.1:{ports[p]}" for p in provinces}
    # rounds far apart: only the operator's verify and heal act here
    settings_for = settings_factory(
        urls, peers, federation_dir, private_broker, three_provinces, antientropy_first_round_s=3600
    )
    data_dir = tmp_path / "operator"
    data_dir.mkdir()
    (data_dir / "keys").symlink_to(federation_dir / "keys")
    (data_dir / "federation.json").write_text(
        json.dumps({"provinces": {p: {"services": {"jobs": peers[p]}} for p in provinces}})
    )

    async def verify() -> tuple[int, str]:
        result = await asyncio.to_thread(CliRunner().invoke, cli, ["federation", "verify", "--data-dir", str(data_dir)])
        return result.exit_code, result.stdout

    zj_officer = bearer(node_keys[ZJ], "officer", sub="zj-officer")
    cq_admin = bearer(node_keys[CQ], "admin", sub="cq-operator")
    async with nodes(provinces, settings_for, ports) as clients:
        ids = [
            (await clients[ZJ].post("/api/v1/vacancies", headers=zj_officer, json=draft(f"电工 {n}"))).json()["id"]
            for n in range(3)
        ]

        async def replicated() -> bool:
            totals = [
                (await clients[p].get("/api/v1/vacancies", params={"province": ZJ})).json()["total"] for p in (SC, CQ)
            ]
            return totals == [3, 3]

        await eventually(replicated, timeout_s=30)
        code, output = await verify()
        assert code == 0, output
        lines = [line.split() for line in output.splitlines()[1:-1]]
        assert len(lines) == 6  # three nodes, two origins each, one kind
        assert all(line[1:2] == ["jobs"] and line[3] == "vacancies" and line[-2:] == ["in", "sync"] for line in lines)
        assert output.splitlines()[-1] == "6 of 6 replicas in sync"

        engine = create_engine(urls[CQ])
        async with engine.begin() as connection:
            await connection.execute(
                update(vacancy).where(vacancy.c.id == ids[1]).values(version=vacancy.c.version + 97)
            )
        await engine.dispose()

        code, output = await verify()
        assert code == 1, output
        assert [line.split()[:4] for line in output.splitlines() if "differing" in line] == [
            [CQ, "jobs", ZJ, "vacancies"]
        ]
        assert "1 differing rows" in output and output.splitlines()[-1] == "5 of 6 replicas in sync"
        on_demand = (await clients[CQ].get("/admin/v1/sync/verify", headers=cq_admin)).json()
        assert on_demand["in_sync"] is False
        assert [(r["origin"], r["differing_rows"]) for r in on_demand["replicas"] if not r["in_sync"]] == [(ZJ, 1)]

        # the operator's heal is one authoritative round: the version 97 ahead is replaced by the origin's
        healed = await clients[CQ].post("/admin/v1/replica/heal", headers=cq_admin, json={"origin": ZJ})
        assert healed.status_code == 200, healed.text
        assert {k: healed.json()[k] for k in ("differing_rows", "inserted", "replaced", "deleted")} == {
            "differing_rows": 1,
            "inserted": 0,
            "replaced": 1,
            "deleted": 0,
        }
        assert (await clients[CQ].get(f"/api/v1/vacancies/{ids[1]}")).json()["version"] == 1
        code, output = await verify()
        assert code == 0, output

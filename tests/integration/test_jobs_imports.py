"""Two real jobs nodes (Zhejiang, Sichuan) on a broker of their own, over real HTTP: vacancies a Zhejiang officer
imports in bulk reach Sichuan through the normal consumers and are searchable there, the same as at home."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from labornet.jobs.app import create_app
from labornet.shared.broker import EmbeddedBroker
from labornet.shared.keys import NodeKeys
from labornet.shared.testing import bearer, eventually, serving
from tests.integration.test_jobs_federation import draft, node_settings

pytestmark = pytest.mark.integration

ZJ, SC = "330000", "510000"
ROWS = 600


def ndjson(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()


async def test_imported_vacancies_are_searchable_on_the_other_node(
    new_database_url: Callable[[], Awaitable[str]],
    federation_dir: Path,
    node_keys: dict[str, NodeKeys],
    private_broker: EmbeddedBroker,
) -> None:
    rows = [draft(title=f"川菜厨师 batch{n:05d}", headcount=1 + n % 7) for n in range(ROWS)]
    rows[7] = draft(division_code="510104")  # a Sichuan division: rejected at Zhejiang, line 8
    officer = bearer(node_keys[ZJ], "officer", sub="zj-officer")
    async with contextlib.AsyncExitStack() as stack:
        nodes: dict[str, httpx.AsyncClient] = {}
        for province in (ZJ, SC):
            settings = node_settings(federation_dir, private_broker, province, "jobs", await new_database_url())
            nodes[province] = await stack.enter_async_context(serving(create_app(settings)))

        async def all_ready() -> bool:
            return all([(await c.get("/readyz")).status_code == 200 for c in nodes.values()])

        await eventually(all_ready, timeout_s=60)
        zj, sc = nodes[ZJ], nodes[SC]
        answer = await zj.post(
            "/api/v1/vacancies/imports",
            headers={**officer, "Content-Type": "application/x-ndjson"},
            content=ndjson(rows),
        )
        assert answer.status_code == 202, answer.text
        job: dict[str, Any] = {}

        async def completed() -> bool:
            job.update((await zj.get(answer.headers["Location"], headers=officer)).json())
            return job["state"] == "completed"

        await eventually(completed, timeout_s=60)
        assert (job["rows_read"], job["rows_published"], job["rows_rejected"]) == (ROWS, ROWS - 1, 1)
        assert [(e["line"], e["field"]) for e in job["errors"]] == [(8, "division_code")]

        async def searchable_in_sichuan() -> bool:
            found = (await sc.get("/api/v1/vacancies", params={"province": ZJ, "limit": 1})).json()
            return bool(found["total"] == ROWS - 1)

        await eventually(searchable_in_sichuan, timeout_s=90, interval_s=0.5)
        hit = (await sc.get("/api/v1/vacancies", params={"q": "batch00042"})).json()["items"]
        assert len(hit) == 1 and hit[0]["owner_province"] == ZJ and hit[0]["city"] == "杭州市"
        assert hit[0] == (await zj.get(f"/api/v1/vacancies/{hit[0]['id']}")).json()  # the replica is the original

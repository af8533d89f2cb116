"""The API edge of a jobs node over real HTTP: integers beyond 64 bits are a 422, a partner province's token is a
403 naming this node's issuer, bodies beyond the limit a 413 before they are read, rate limits a 429, every bad
search parameter a 422 naming it."""

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from labornet.jobs.app import create_app
from labornet.shared.broker import free_port
from labornet.shared.keys import NodeKeys
from labornet.shared.settings import Settings
from labornet.shared.testing import assert_problem, bearer, serving

HUGE = "143768709221122270633656320"


async def test_integers_beyond_64_bits_are_refused_as_422(
    make_settings: Callable[..., Settings], database_url: str, node_keys: dict[str, NodeKeys]
) -> None:
    admin = bearer(node_keys["510000"], "admin")
    async with serving(create_app(make_settings("510000", "jobs", database_url))) as client:
        body = assert_problem(await client.get(f"/api/v1/vacancies?salary_min={HUGE}"), 422, "salary_min")
        assert body["errors"][0]["field"] == "query.salary_min"  # type: ignore[index]
        assert_problem(await client.get(f"/api/v1/vacancies?salary_max={HUGE}"), 422, "salary_max")
        # salaries are stored as 32-bit integers: PostgreSQL refuses a larger parameter even in a comparison
        assert (await client.get(f"/api/v1/vacancies?salary_min={2**31 - 1}")).status_code == 200
        assert_problem(await client.get(f"/api/v1/vacancies?salary_min={2**40}"), 422, "salary_min")
        assert_problem(await client.get("/admin/v1/quarantine?after=73367047785774424064", headers=admin), 422)
        for action in ("replay", "discard"):
            assert_problem(await client.post(f"/admin/v1/quarantine/{HUGE}/{action}", headers=admin), 422)
            assert_problem(await client.post(f"/admin/v1/quarantine/{2**63 - 1}/{action}", headers=admin), 404)
        officer = bearer(node_keys["510000"], "officer")
        changed = await client.patch(
            "/api/v1/vacancies/510000-V-000001", json={"version": int(HUGE), "title": "x"}, headers=officer
        )
        assert_problem(changed, 422, "version")
        if_match = await client.patch(
            "/api/v1/vacancies/510000-V-000001", json={"title": "x"}, headers={**officer, "If-Match": HUGE}
        )
        assert_problem(if_match, 422, "If-Match")
        beyond_int32 = await client.patch(
            "/api/v1/vacancies/510000-V-000001", json={"title": "x"}, headers={**officer, "If-Match": str(2**40)}
        )
        assert_problem(beyond_int32, 422, "If-Match")


async def test_a_partner_provinces_token_is_403_and_a_bad_one_401_both_naming_the_issuer(
    make_settings: Callable[..., Settings], database_url: str, node_keys: dict[str, NodeKeys]
) -> None:
    async with serving(create_app(make_settings("510000", "jobs", database_url))) as client:
        partner = await client.get("/api/v1/whoami", headers=bearer(node_keys["330000"], "officer"))
        assert_problem(partner, 403, "accepts tokens issued by labornet:510000")
        forged = await client.get("/api/v1/whoami", headers={"Authorization": "Bearer a.b.c"})
        assert_problem(forged, 401, "labornet:510000")
        assert forged.headers["www-authenticate"] == "Bearer"


async def raw_request(port: int, head: bytes, body: bytes = b"") -> tuple[bytes, float]:
    """Send a request head (and part of a body) on a socket; the response's first bytes and the seconds it took."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.perf_counter()
    writer.write(head + body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(4096), 5)
    elapsed = time.perf_counter() - started
    writer.close()
    return answer, elapsed


async def test_a_body_beyond_the_limit_is_refused_before_it_is_read(
    make_settings: Callable[..., Settings], database_url: str, node_keys: dict[str, NodeKeys]
) -> None:
    port = free_port()
    officer = bearer(node_keys["510000"], "officer")["Authorization"]
    async with serving(create_app(make_settings("510000", "jobs", database_url)), port=port) as client:
        for authorization in (b"", f"Authorization: {officer}\r\n".encode()):
            head = (
                b"POST /api/v1/vacancies HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                + authorization
                + f"Content-Length: {40 * 1024 * 1024}\r\n\r\n".encode()
            )
            answer, elapsed = await raw_request(port, head, b'{"title": "')  # the rest is never sent
            assert answer.startswith(b"HTTP/1.1 413"), answer
            assert b"application/problem+json" in answer and b"1048576 bytes" in answer
            # refused without waiting for the body, which never comes (the wait for an answer would end at 5 s);
            # not a speed test: a loaded machine takes some tenths of a second
            assert elapsed < 3, elapsed

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(40):
                yield b" " * 65536

        streamed = await client.post("/api/v1/vacancies", content=chunks(), headers={"Authorization": officer})
        assert_problem(streamed, 413, "larger than 1048576 bytes")
        small = await client.post("/api/v1/vacancies", json={"title": "厨师"}, headers={"Authorization": officer})
        assert_problem(small, 422)


async def test_rate_limits_answer_429_with_retry_after(
    make_settings: Callable[..., Settings], database_url: str, node_keys: dict[str, NodeKeys]
) -> None:
    settings = make_settings(
        "510000",
        "jobs",
        database_url,
        rate_limit_enabled=True,
        rate_limit_per_address="400/minute",
        rate_limit_auth_failures_per_address="20/minute",
        rate_limit_per_principal="5/minute",
    )
    async with serving(create_app(settings)) as client:
        statuses = []
        for _ in range(300):
            refused = await client.get("/api/v1/whoami", headers={"Authorization": "Bearer a.b.c"})
            statuses.append(refused.status_code)
        assert statuses == [401] * 20 + [429] * 280
        body = assert_problem(refused, 429, "address 127.0.0.1")
        assert 1 <= int(refused.headers["retry-after"]) <= 60, body
        assert_problem(await client.get("/api/v1/whoami"), 429)  # no token: a failure of the same address

        officer = bearer(node_keys["510000"], "officer")
        other = make_settings(
            "510000", "jobs", database_url, rate_limit_enabled=True, rate_limit_per_principal="5/minute"
        )
        async with serving(create_app(other)) as fresh:
            answers = [(await fresh.get("/api/v1/whoami", headers=officer)).status_code for _ in range(7)]
            assert answers == [200] * 5 + [429] * 2
            assert (
                await fresh.get("/api/v1/whoami", headers=bearer(node_keys["510000"], "officer", sub="li"))
            ).is_success

        while len(statuses) < 400:  # the address limit counts every request, public ones too
            statuses.append((await client.get("/livez")).status_code)
        answer = await client.get("/livez")
        assert_problem(answer, 429, "limit 400 per 1 minute")
        assert "retry-after" in answer.headers


BAD_QUERIES = (
    ("province=51", "query.province"),
    ("division_code=5101", "query.division_code"),
    ("occupation_code=12345", "query.occupation_code"),
    ("salary_min=-1", "query.salary_min"),
    ("employment_type=forever", "query.employment_type"),
    ("target_group=everyone", "query.target_group"),
    ("posted_since=yesterday", "query.posted_since"),
    ("status=open&status=lost", "query.status.1"),
    ("sort=oldest", "query.sort"),
    ("limit=0", "query.limit"),
    ("limit=101", "query.limit"),
    (f"q={'厨' * 101}", "query.q"),
    (f"cursor={'x' * 501}", "query.cursor"),
)


async def test_every_bad_search_parameter_is_a_422_naming_it_and_good_ones_pass(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    """Each of the search's fourteen query parameters, when bad, is a problem naming it; repeated ``status`` is a
    list, an unknown parameter is ignored, and a salary range upside down is refused by the search itself."""
    async with serving(create_app(make_settings("510000", "jobs", database_url))) as client:
        for query, field in BAD_QUERIES:
            body = assert_problem(await client.get(f"/api/v1/vacancies?{query}"), 422)
            assert [error["field"] for error in body["errors"]] == [field], (query, body)  # type: ignore[index]
        good = (
            "q=厨师&province=510000&division_code=510104&occupation_code=5120&salary_min=3000&salary_max=9000"
            "&employment_type=full-time&target_group=migrant-workers&posted_since=2026-01-01T00:00:00Z"
            "&status=open&status=filled&sort=salary&limit=100&unknown=1"
        )
        answer = await client.get(f"/api/v1/vacancies?{good}")
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"items": [], "next_cursor": None, "total": 0, "total_exact": True}
        assert_problem(await client.get("/api/v1/vacancies?salary_min=9000&salary_max=3000"), 422, "salary_min")

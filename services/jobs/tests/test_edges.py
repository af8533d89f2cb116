"""The API edge of a jobs node over real HTTP: integers beyond 64 bits are a 422, a partner province's token is a
403 naming this node's issuer."""

from collections.abc import Callable

from labornet.jobs.app import create_app
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
        assert (await client.get(f"/api/v1/vacancies?salary_min={2**63 - 1}")).status_code == 200
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


async def test_a_partner_provinces_token_is_403_and_a_bad_one_401_both_naming_the_issuer(
    make_settings: Callable[..., Settings], database_url: str, node_keys: dict[str, NodeKeys]
) -> None:
    async with serving(create_app(make_settings("510000", "jobs", database_url))) as client:
        partner = await client.get("/api/v1/whoami", headers=bearer(node_keys["330000"], "officer"))
        assert_problem(partner, 403, "accepts tokens issued by labornet:510000")
        forged = await client.get("/api/v1/whoami", headers={"Authorization": "Bearer a.b.c"})
        assert_problem(forged, 401, "labornet:510000")
        assert forged.headers["www-authenticate"] == "Bearer"

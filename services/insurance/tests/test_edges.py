"""The records' CSV import has a body limit of its own, larger than every other operation's."""

from collections.abc import Callable

from labornet.insurance.app import create_app
from labornet.shared.keys import NodeKeys
from labornet.shared.settings import Settings
from labornet.shared.testing import assert_problem, bearer, serving

ZJ = "330000"


async def test_the_csv_import_takes_bodies_up_to_its_own_limit(
    make_settings: Callable[..., Settings], database_url: str, node_keys: dict[str, NodeKeys]
) -> None:
    settings = make_settings(
        ZJ, "insurance", database_url, request_max_body_bytes=64 * 1024, request_max_import_bytes=256 * 1024
    )
    headers = bearer(node_keys[ZJ], "officer") | {"Content-Type": "text/csv"}
    header_row = "resident_id,name,hukou_division,status,months_used,kind,start_month,end_month\n"
    async with serving(create_app(settings)) as client:
        beyond_the_general_limit = header_row + "x\n" * 50_000  # 100 KB of rows that are not valid
        answer = await client.post("/api/v1/insured-persons/import", headers=headers, content=beyond_the_general_limit)
        assert_problem(answer, 422, "not valid")
        too_large = header_row + "x\n" * 200_000
        answer = await client.post("/api/v1/insured-persons/import", headers=headers, content=too_large)
        assert_problem(answer, 413, f"larger than {256 * 1024} bytes")
        other = await client.post("/api/v1/insured-persons", headers=headers, content=beyond_the_general_limit)
        assert_problem(other, 413, f"larger than {64 * 1024} bytes")

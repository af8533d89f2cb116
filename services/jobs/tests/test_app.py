"""The jobs service runs as a real FastAPI app: health, metrics, auth, problems, its first migration."""

from collections.abc import Callable

from labornet.jobs.app import create_app
from labornet.shared.keys import NodeKeys
from labornet.shared.settings import Settings
from labornet.shared.testing import check_platform_contract


async def test_platform_contract(
    make_settings: Callable[..., Settings], database_url: str, node_keys: dict[str, NodeKeys]
) -> None:
    await check_platform_contract(
        create_app, make_settings("510000", "jobs", database_url), node_keys, "labornet.jobs:migrations"
    )

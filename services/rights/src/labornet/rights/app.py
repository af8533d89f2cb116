"""Entry point: `uvicorn --factory labornet.rights.app:create_app` (configuration from LABORNET_* variables)."""

from __future__ import annotations

from fastapi import FastAPI

from labornet.rights import __doc__ as description
from labornet.rights import __version__
from labornet.shared.app import ServiceSpec, create_service_app
from labornet.shared.settings import Settings

SPEC = ServiceSpec(
    name="rights",
    version=__version__,
    migrations="labornet.rights:migrations",
    description=description or "",
)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(SPEC, settings)

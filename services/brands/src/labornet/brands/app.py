"""Entry point: `uvicorn --factory labornet.brands.app:create_app` (configuration from LABORNET_* variables)."""

from __future__ import annotations

from fastapi import FastAPI

from labornet.brands import __doc__ as description
from labornet.brands import __version__
from labornet.shared.app import ServiceSpec, create_service_app
from labornet.shared.settings import Settings

SPEC = ServiceSpec(
    name="brands",
    version=__version__,
    migrations="labornet.brands:migrations",
    description=description or "",
)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(SPEC, settings)

"""Every route of every service is reached by its own paths: none is shadowed by a route matched before it.

A request is matched against the routes in the order they were included; the services' own routes come before the
platform's (ADR 31: matching a vacancy by id behind ten platform routes was a fifth of its CPU), so a service route
whose path template also matched ``/readyz`` or ``/admin/v1/sync`` would silently take its requests — and two
routes of one service can shadow each other the same way (``/vacancies/{id}`` before ``/vacancies/imports``).
"""

from __future__ import annotations

import importlib
import re

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Match

from labornet.shared.settings import SERVICE_NAMES, ServiceName, Settings

PARAMETER = re.compile(r"{([^}:]+)(:[^}]+)?}")


def app_of(service: ServiceName) -> FastAPI:
    settings = Settings(service=service, province="510000")
    app: FastAPI = importlib.import_module(f"labornet.{service}.app").create_app(settings)
    return app


def api_routes(app: FastAPI) -> list[APIRoute]:
    """Every API route of ``app``, with its full path, in the order the routers were included."""
    found: list[APIRoute] = []
    for route in app.routes:
        original = getattr(route, "original_router", None)
        routes = original.routes if original is not None else [route]
        found.extend(r for r in routes if isinstance(r, APIRoute))
    return found


def first_match(app: FastAPI, method: str, path: str) -> object | None:
    """The endpoint the app gives ``method path`` to: the first route (in match order) that matches it fully."""
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": [], "query_string": b""}
    for route in app.router.routes:
        # an included router answers which of its routes matched through its own _match (FastAPI 0.165)
        match, _, found, _ = route._match(scope) if hasattr(route, "_match") else (*route.matches(scope), route, None)
        if match is Match.FULL:
            return getattr(found, "endpoint", None)
    return None


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_every_route_is_reached_by_its_own_path(service: ServiceName) -> None:
    app = app_of(service)
    routes = api_routes(app)
    assert len(routes) > 10
    shadowed = []
    for route in routes:
        # a path of the route's own: each parameter a value no literal segment of any route spells
        path = PARAMETER.sub(lambda m: f"{m.group(1)}-1", route.path)
        for method in sorted(route.methods):
            if first_match(app, method, path) is not route.endpoint:
                shadowed.append(f"{method} {route.path}")
    assert shadowed == [], f"{service}: routes whose own requests another route takes first: {shadowed}"


def test_a_service_route_comes_before_the_platform_routes() -> None:
    """The order this test file guards exists: the vacancy by id is matched before /readyz."""
    paths = [route.path for route in api_routes(app_of("jobs"))]
    assert paths.index("/api/v1/vacancies/{vacancy_id}") < paths.index("/readyz")

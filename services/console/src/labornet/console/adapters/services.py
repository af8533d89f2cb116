"""The node's four services, through their public HTTP APIs, as the signed-in officer.

Every call carries the officer's bearer token; an error answer (RFC 9457 problem+json) becomes :class:`ApiError`
with the service's detail and the fields its ``errors`` name, so a page can show each message beside its input.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from labornet.console.config import ConsoleService, ConsoleSettings

SERVICES: tuple[ConsoleService, ...] = ("jobs", "insurance", "brands", "rights")


@dataclass
class ApiError(Exception):
    """A service refused a call; ``errors`` maps a field path (``salary.min``) to what is wrong with it."""

    status: int
    detail: str
    errors: dict[str, str] = field(default_factory=dict)
    slug: str | None = None

    def __str__(self) -> str:
        return self.detail


def field_errors(problem: Mapping[str, Any]) -> dict[str, str]:
    """The problem's ``errors`` by field path, without the ``body.`` prefix some services put first."""
    found: dict[str, str] = {}
    for item in problem.get("errors") or []:
        if isinstance(item, Mapping) and "field" in item:
            name = str(item["field"]).removeprefix("body.")
            found.setdefault(name, str(item.get("message", "")))
    return found


def api_error(response: httpx.Response) -> ApiError:
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, Mapping):
        return ApiError(response.status_code, f"HTTP {response.status_code}")
    slug = str(problem.get("type", "")).rsplit("/", 1)[-1] or None
    detail = str(problem.get("detail") or problem.get("title") or f"HTTP {response.status_code}")
    return ApiError(response.status_code, detail, field_errors(problem), slug)


class Services:
    """HTTP access to the node's services; one connection pool for the console's life."""

    def __init__(self, settings: ConsoleSettings, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.http = http

    async def call(
        self,
        service: ConsoleService,
        method: str,
        path: str,
        token: str | None,
        *,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        pairs = params.items() if isinstance(params, Mapping) else (params or [])
        clean = [(k, v) for k, v in pairs if v not in (None, "")]
        try:
            response = await self.http.request(
                method, self.settings.service_url(service) + path, params=clean, json=json, headers=sent
            )
        except httpx.HTTPError as exc:
            raise ApiError(503, f"the {service} service did not answer ({type(exc).__name__})") from exc
        if response.status_code >= 400:
            raise api_error(response)
        return response.json() if response.content else None

    async def get(self, service: ConsoleService, path: str, token: str | None, **params: Any) -> Any:
        return await self.call(service, "GET", path, token, params=params)

    async def post(
        self, service: ConsoleService, path: str, token: str, body: Any, headers: Mapping[str, str] | None = None
    ) -> Any:
        return await self.call(service, "POST", path, token, json=body, headers=headers)

    async def readiness(self) -> dict[ConsoleService, tuple[bool, str]]:
        """Each service's /readyz: whether it is ready, and what it said (or why it could not be asked)."""

        async def ask(service: ConsoleService) -> tuple[bool, str]:
            try:
                response = await self.http.get(
                    self.settings.service_url(service) + "/readyz", timeout=self.settings.readyz_timeout_s
                )
            except httpx.HTTPError as exc:
                return False, f"no answer ({type(exc).__name__})"
            try:
                checks = response.json().get("checks", {})
                said = ", ".join(f"{name}: {value}" for name, value in checks.items())
            except (ValueError, AttributeError):
                said = ""
            return response.status_code == 200, said or f"HTTP {response.status_code}"

        answers = await asyncio.gather(*(ask(service) for service in SERVICES))
        return dict(zip(SERVICES, answers, strict=True))

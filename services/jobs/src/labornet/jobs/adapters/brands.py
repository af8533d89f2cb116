"""The federation's brand register as the jobs service sees it: its own node's brands service, asked over HTTP.

The brands service of a node holds its province's brands and the replica of every partner's, kept equal by the
bus and by anti-entropy, so it answers for any brand id of the federation (ADR 0010). The jobs service asks it
``GET /api/v1/brands/{id}`` when an officer names a brand on a vacancy; it keeps no brand data of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol
from urllib.parse import quote

import httpx
from prometheus_client import Counter

from labornet.jobs.domain.vacancy import BrandRef

BRAND_CHECKS = Counter(
    "labornet_jobs_brand_checks_total",
    "Brand ids named on vacancies, looked up in the node's brand register, by result",
    ["result"],
)
BRAND_CHECK_RESULTS = ("found", "unknown", "unavailable")


class BrandRegisterUnavailable(Exception):
    """The brand register could not answer (not configured, unreachable, failing); the message says which."""


class BrandRegister(Protocol):
    async def find(self, brand_id: str) -> BrandRef | None:
        """The brand, or ``None`` if the register has no such id; :class:`BrandRegisterUnavailable` otherwise."""
        ...


class HttpBrandRegister:
    """The node's brands service. ``base_url`` is asked on every lookup: the federation file that names the
    service may be written after the jobs service starts."""

    def __init__(
        self,
        base_url: Callable[[], str | None],
        *,
        timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.transport = transport

    async def find(self, brand_id: str) -> BrandRef | None:
        try:
            found = await self._get(brand_id)
        except BrandRegisterUnavailable:
            BRAND_CHECKS.labels("unavailable").inc()
            raise
        BRAND_CHECKS.labels("found" if found is not None else "unknown").inc()
        return found

    async def _get(self, brand_id: str) -> BrandRef | None:
        base = self.base_url()
        if not base:
            raise BrandRegisterUnavailable(
                "this node does not know where its brands service listens (set LABORNET_JOBS_BRANDS_URL, or list "
                "the province's brands service in the federation file)"
            )
        url = f"{base.rstrip('/')}/api/v1/brands/{quote(brand_id, safe='')}"
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s, transport=self.transport) as client:
                response = await client.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise BrandRegisterUnavailable(f"the brands service at {base} cannot be reached ({exc!r})") from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise BrandRegisterUnavailable(f"the brands service at {base} answered {response.status_code}")
        try:
            body = response.json()
            return BrandRef(id=str(body["id"]), status=str(body["status"]), name_zh=str(body["name_zh"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise BrandRegisterUnavailable(f"the brands service at {base} sent no brand for {brand_id}") from exc


class FixedBrandRegister:
    """A register of the brands given (tests, tools): any other id is unknown."""

    def __init__(self, *brands: BrandRef) -> None:
        self.brands = {found.id: found for found in brands}

    async def find(self, brand_id: str) -> BrandRef | None:
        return self.brands.get(brand_id)

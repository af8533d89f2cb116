"""Delivery of match notifications to workers' webhooks.

Every match of a subscription with a webhook URL leaves a ``webhook_delivery`` row (written in the transaction that
created the match). :class:`WebhookDispatcher` POSTs due rows and records the outcome: any 2xx answer delivers;
anything else (another status, a timeout, a refused connection) is retried with exponential backoff and, after the
last attempt, marked failed with the last error. Delivery is at least once: a receiver deduplicates on
``X-LaborNet-Delivery``.

What a receiver gets::

    POST <webhook_url>
    Content-Type: application/json
    X-LaborNet-Delivery: 42                      (the delivery id; the same on every retry)
    X-LaborNet-Timestamp: 1764000000             (Unix seconds of this attempt)
    X-LaborNet-Signature: sha256=<hex>           (HMAC-SHA256 with the subscription's webhook_secret)

    {"match_id": 7, "subscription_id": "…", "vacancy": {"id": …, "title": …, "owner_province": …, "city": …,
     "salary_min": …, "salary_max": …, "employment_type": …, "closing_date": "2026-12-31", "status": "open",
     "version": 1}}

The signed string is ``f"{timestamp}.{body}"``: the timestamp as sent in the header, a dot, and the exact bytes of
the body. A receiver recomputes the HMAC over the raw body (before parsing it), compares in constant time and
rejects timestamps too far from its clock, so a captured request cannot be replayed later.

Only public addresses are called. A worker chooses the URL, so without this a subscription could make the node
POST into its own network (the database, the metrics endpoint, a cloud metadata service). A URL naming a
loopback, private, link-local or otherwise non-public address is refused when the subscription is made; a host
name is resolved at each attempt, refused if any of its addresses is not public, and the request goes to the
address that was checked (``Host`` and TLS server name stay the URL's), so a name that changes its answer
between the check and the call cannot slip through. ``LABORNET_WEBHOOK_PRIVATE_TARGETS=true`` lifts this for a
closed test network.

Several replicas may run a dispatcher: a delivery is claimed in a short transaction (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, the write lock on SQLite) by pushing its ``next_attempt_at`` a lease ahead, and the HTTP call happens
outside any transaction. A replica that dies mid-call leaves the row to be retried when the lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from labornet.jobs.adapters.tables import subscription, webhook_delivery
from labornet.jobs.metrics import MATCH_DELIVERIES
from labornet.shared.db import as_utc_or_none, on_commit, utcnow

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-LaborNet-Signature"
DELIVERY_HEADER = "X-LaborNet-Delivery"
TIMESTAMP_HEADER = "X-LaborNet-Timestamp"
_MAX_ERROR_LENGTH = 500

# the dispatchers of this process, woken when a transaction that queued deliveries commits
_dispatchers: weakref.WeakSet[WebhookDispatcher] = weakref.WeakSet()


class WebhookSettings(BaseSettings):
    """Webhook delivery, from ``LABORNET_WEBHOOK_*`` variables (e.g. ``LABORNET_WEBHOOK_MAX_ATTEMPTS=8``)."""

    model_config = SettingsConfigDict(env_prefix="LABORNET_WEBHOOK_", env_file=".env", extra="ignore")

    timeout_s: float = Field(5.0, gt=0, description="time limit of one POST")
    first_backoff_s: float = Field(1.0, ge=0, description="wait before the first retry")
    backoff_factor: float = Field(2.0, ge=1, description="each further retry waits this many times longer")
    max_backoff_s: float = Field(3600.0, gt=0, description="longest wait between two attempts")
    max_attempts: int = Field(8, ge=1, description="attempts before a delivery is marked failed")
    poll_interval_s: float = Field(
        30.0,
        gt=0,
        description="longest wait between two looks for due deliveries. The dispatcher wakes when a transaction of "
        "its process that queued deliveries commits and when the earliest retry falls due; this look finds what "
        "another replica queued",
    )
    batch_size: int = Field(20, ge=1, le=1000, description="deliveries claimed and sent concurrently per pass")
    lease_s: float = Field(60.0, gt=0, description="how long a claimed delivery is left to the replica that took it")
    max_error_backoff_s: float = Field(30.0, gt=0, description="longest pause while the database is unreachable")
    private_targets: bool = Field(
        False, description="also call loopback, private and link-local addresses (a closed test network only)"
    )


class UnsafeTarget(ValueError):
    """A webhook URL that would make the node call an address that is not public."""


def check_webhook_url(url: str, settings: WebhookSettings) -> None:
    """Refuse, when a subscription is made, a URL whose host is a non-public address written out or ``localhost``.

    Host names are checked again at every attempt (:func:`public_address`), when they are resolved."""
    if settings.private_targets:
        return
    host = httpx.URL(url).host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        raise UnsafeTarget(f"{host} is this machine; webhooks go to public addresses only")
    try:
        why = _not_public(host)
    except ValueError:  # a host name, not an address
        return
    if why is not None:
        raise UnsafeTarget(f"{host} is not a public address ({why}); webhooks go to public addresses only")


# IPv6 forms that carry an IPv4 address in their last 32 bits; what they reach is judged by that IPv4 address
_IPV4_IN_LOW_BITS = (
    ipaddress.IPv6Network("64:ff9b::/96"),  # NAT64, well-known prefix (RFC 6052)
    ipaddress.IPv6Network("::ffff:0:0:0/96"),  # SIIT, IPv4-translated (RFC 2765)
    ipaddress.IPv6Network("::/96"),  # IPv4-compatible, deprecated (RFC 4291); also :: and ::1
)
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # NAT64 for local use (RFC 8215)


def _not_public(address: str) -> str | None:
    """Why an IP address (an IPv6 zone, ``%eth0``, ignored) is not public, None when it is; ValueError for anything
    else. An IPv6 address that embeds an IPv4 address (mapped, NAT64, 6to4, IPv4-compatible) is public only when the
    IPv4 address is: on a network with NAT64 or 6to4 it reaches that IPv4 host. Teredo tunnels are never called."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.teredo is not None:
            return "a Teredo tunnel address"
        if ip in _NAT64_LOCAL:
            return "a local-use NAT64 address"
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and any(ip in network for network in _IPV4_IN_LOW_BITS):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return None if embedded.is_global else f"it embeds the IPv4 address {embedded}, which is not public"
    return None if ip.is_global else "loopback, private, link-local or reserved"


async def public_address(url: httpx.URL, settings: WebhookSettings) -> str:
    """The address to call for ``url``: its host resolved, every address public (unless private targets are on)."""
    port = url.port or (443 if url.scheme == "https" else 80)
    infos = await asyncio.get_running_loop().getaddrinfo(url.host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not settings.private_targets:
        for address in addresses:
            why = _not_public(address)
            if why is not None:
                raise UnsafeTarget(f"{url.host} resolves to {address}, which is not a public address ({why})")
    return addresses[0]


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-LaborNet-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 of ``timestamp.body``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


@dataclass(frozen=True)
class _Claimed:
    id: int
    attempts: int
    payload: dict[str, Any]
    url: str | None
    secret: str | None
    active: bool


@dataclass(frozen=True)
class _Outcome:
    delivered: bool
    error: str | None = None
    give_up: bool = False  # no point in retrying


def wake_after_commit(session: AsyncSession) -> None:
    """Wake this process's dispatchers when ``session``'s transaction, which queued deliveries, commits."""
    on_commit(session, _wake_dispatchers)


def _wake_dispatchers() -> None:
    for dispatcher in list(_dispatchers):
        dispatcher.wake()


class WebhookDispatcher:
    """Sends due webhook deliveries until :meth:`stop` (or cancellation); survives database and network trouble."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        read_sessions: async_sessionmaker[AsyncSession],
        settings: WebhookSettings | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self.read_sessions = read_sessions
        self.settings = settings or WebhookSettings()
        self.clock = clock
        self._stopping = asyncio.Event()
        self._queued = asyncio.Event()
        self._next_due: datetime | None = None  # when the earliest pending delivery falls due, as of the last look
        self._client: httpx.AsyncClient | None = None
        _dispatchers.add(self)

    async def run(self) -> None:
        """Deliver until stopped; a cancelled run closes its HTTP client and ends."""
        error_backoff = 0.0
        self._client = self._new_client()
        try:
            while not self._stopping.is_set():
                try:
                    sent = await self.deliver_due()
                    error_backoff = 0.0
                except Exception as exc:
                    error_backoff = min(self.settings.max_error_backoff_s, max(0.1, error_backoff * 2))
                    log.warning("webhooks: delivery pass failed, retrying in %.1fs: %s", error_backoff, exc)
                    await self._sleep(error_backoff)
                    continue
                if sent < self.settings.batch_size:
                    await self._wait_for_work()
        finally:
            client, self._client = self._client, None
            await client.aclose()

    async def stop(self) -> None:
        self._stopping.set()
        self._queued.set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _wait_for_work(self) -> None:
        """Until the earliest pending delivery falls due, a transaction of this process queues deliveries, or
        ``poll_interval_s`` has passed; a dispatcher at rest asks the database nothing in between."""
        wait = self.settings.poll_interval_s
        if self._next_due is not None:
            wait = min(wait, max((self._next_due - self.clock()).total_seconds(), 0.0))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queued.wait(), wait)
        self._queued.clear()

    def wake(self) -> None:
        """Deliveries were queued: look at once."""
        self._queued.set()

    async def deliver_due(self) -> int:
        """One pass: claim due deliveries, send them concurrently, record the outcomes; return how many were tried."""
        self._next_due = await self._earliest_pending()
        if self._next_due is None or self._next_due > self.clock():
            return 0
        claimed = await self._claim()
        if not claimed:
            return 0
        async with contextlib.AsyncExitStack() as stack:
            # outside run() (a test, a one-off command) a pass brings its own client
            client = self._client if self._client is not None else await stack.enter_async_context(self._new_client())
            outcomes = await asyncio.gather(*(self._send(client, delivery) for delivery in claimed))
        await self._record(claimed, outcomes)
        return len(claimed)

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self.settings.timeout_s, follow_redirects=False)

    # neither delivered nor failed
    _PENDING = (webhook_delivery.c.delivered_at.is_(None), webhook_delivery.c.failed_at.is_(None))

    @classmethod
    def _due(cls, now: datetime) -> tuple[ColumnElement[bool], ...]:
        return (*cls._PENDING, webhook_delivery.c.next_attempt_at <= now)

    async def _earliest_pending(self) -> datetime | None:
        """When the earliest delivery neither delivered nor failed is due (None: there is none). A read-only look
        first, so that an idle dispatcher never takes SQLite's write lock."""
        async with self.read_sessions() as session, session.begin():
            query = select(func.min(webhook_delivery.c.next_attempt_at)).where(*self._PENDING)
            return as_utc_or_none((await session.execute(query)).scalar_one())

    async def _claim(self) -> list[_Claimed]:
        now = self.clock()
        async with self.sessions() as session, session.begin():
            query = (
                select(
                    webhook_delivery.c.id,
                    webhook_delivery.c.attempts,
                    webhook_delivery.c.payload,
                    subscription.c.webhook_url,
                    subscription.c.webhook_secret,
                    subscription.c.active,
                )
                .outerjoin(subscription, subscription.c.id == webhook_delivery.c.subscription_id)
                .where(*self._due(now))
                .order_by(webhook_delivery.c.next_attempt_at, webhook_delivery.c.id)
                .limit(self.settings.batch_size)
            )
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(of=webhook_delivery, skip_locked=True)
            rows = (await session.execute(query)).all()
            if rows:
                await session.execute(
                    update(webhook_delivery)
                    .where(webhook_delivery.c.id.in_([row.id for row in rows]))
                    .values(next_attempt_at=now + timedelta(seconds=self.settings.lease_s))
                )
        return [
            _Claimed(row.id, row.attempts, row.payload, row.webhook_url, row.webhook_secret, bool(row.active))
            for row in rows
        ]

    async def _send(self, client: httpx.AsyncClient, delivery: _Claimed) -> _Outcome:
        if not delivery.active or not delivery.url or not delivery.secret:
            return _Outcome(False, "the subscription was deactivated or has no webhook any more", give_up=True)
        body = json.dumps(delivery.payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()
        timestamp = str(int(self.clock().timestamp()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "LaborNet-Webhooks/1",
            DELIVERY_HEADER: str(delivery.id),
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(delivery.secret, timestamp, body),
        }
        try:
            url = httpx.URL(delivery.url)
            address = await public_address(url, self.settings)
        except UnsafeTarget as exc:
            return _Outcome(False, f"refused: {exc}"[:_MAX_ERROR_LENGTH], give_up=True)
        except (httpx.InvalidURL, OSError) as exc:  # OSError: the name does not resolve (yet): retried later
            return _Outcome(False, f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_LENGTH])
        headers["Host"] = url.netloc.decode("ascii")
        extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
        try:
            response = await client.post(
                url.copy_with(host=address), content=body, headers=headers, extensions=extensions
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return _Outcome(False, f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_LENGTH])
        if response.is_success:
            return _Outcome(True)
        return _Outcome(False, f"HTTP {response.status_code} from {delivery.url}"[:_MAX_ERROR_LENGTH])

    def _backoff(self, attempts: int) -> timedelta:
        """Wait after failed attempt number ``attempts`` (1-based): first, first × factor, first × factor², …"""
        wait = self.settings.first_backoff_s * self.settings.backoff_factor ** min(attempts - 1, 64)
        return timedelta(seconds=min(wait, self.settings.max_backoff_s))

    async def _record(self, claimed: Sequence[_Claimed], outcomes: Sequence[_Outcome]) -> None:
        now = self.clock()
        results: list[str] = []
        async with self.sessions() as session, session.begin():
            for delivery, outcome in zip(claimed, outcomes, strict=True):
                attempts = delivery.attempts + 1
                values: dict[str, Any] = {"attempts": attempts, "last_error": outcome.error}
                if outcome.delivered:
                    values["delivered_at"] = now
                    results.append("delivered")
                elif outcome.give_up or attempts >= self.settings.max_attempts:
                    values["failed_at"] = now
                    results.append("failed")
                    log.warning(
                        "webhooks: delivery %d failed after %d attempt(s): %s", delivery.id, attempts, outcome.error
                    )
                else:
                    values["next_attempt_at"] = now + self._backoff(attempts)
                    results.append("retrying")
                await session.execute(
                    update(webhook_delivery).where(webhook_delivery.c.id == delivery.id).values(**values)
                )
        for result in results:  # after the commit: what the metric says happened is recorded
            MATCH_DELIVERIES.labels("webhook", result).inc()

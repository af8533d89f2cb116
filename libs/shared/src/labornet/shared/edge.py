"""Guards of the API edge that run before a request is parsed or its token checked: a body size limit and rate limits.

The body limit is an ASGI middleware: a ``Content-Length`` above the limit is refused at once with 413, without
reading the body; a body sent in chunks is counted as it is read and refused as soon as it passes the limit. The
imports a service names (``ServiceSpec.import_paths``) have a larger limit of their own.

Rate limits use the ``limits`` library (moving windows) and answer 429 with ``Retry-After``: every request counts
against its client address, failed authentications count again against a tighter limit of that address (a caller
guessing tokens is slowed down long before it reaches the general limit), and an authenticated caller counts
against its principal. Limits are per process unless ``LABORNET_RATE_LIMIT_STORAGE`` names a shared storage.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import Storage as AsyncStorage
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labornet.shared.problems import problem_response
from labornet.shared.settings import Settings


class BodyTooLarge(HTTPException):
    """The request body passes the limit of its route (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes; send less or split it")


class TooManyRequests(HTTPException):
    """A rate limit was reached (429); ``Retry-After`` says when the next request is allowed."""

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(429, detail, headers={"Retry-After": str(retry_after_s)})


class BodyLimit:
    """ASGI middleware: refuses a body above ``max_bytes`` (``import_max_bytes`` on ``import_paths``) with 413."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, import_max_bytes: int, import_paths: Collection[str]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.import_max_bytes = import_max_bytes
        self.import_paths = frozenset(import_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.import_max_bytes if scope["path"] in self.import_paths else self.max_bytes
        declared, chunked = None, False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _refuse(scope, send, BodyTooLarge(limit))
            return
        if declared is None and not chunked:  # no body at all (HTTP/1.1, RFC 9112 6.3): nothing to count
            await self.app(scope, receive, send)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as exc:  # read outside a route (a middleware); the routes answer it themselves
            if started:
                raise
            await _refuse(scope, send, exc)


async def _refuse(scope: Scope, send: Send, exc: HTTPException) -> None:
    response = problem_response(Request(scope), exc.status_code, exc.detail, headers=exc.headers)
    response.headers["Connection"] = "close"  # the rest of the body is not read
    await response(scope, _nothing, send)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


class InlineExpiryMemoryStorage(MemoryStorage):
    """``limits``' per-process storage (``memory://``), with its expired entries dropped by the requests themselves,
    at most once a second, instead of by a timer thread.

    ``MemoryStorage`` starts a ``threading.Timer`` on any count when the last one has finished (10 ms after it
    began): with requests more than 10 ms apart, nearly every request started an operating-system thread, which then
    competed with the event loop for the interpreter (py-spy of a node filing transfers at 100/s: 7 % of the
    process's samples in the rate limiter and its timer threads). Expiry only frees memory; what a window admits is
    decided from the entries' times on every count, so the limits hold exactly as before."""

    STORAGE_SCHEME = ["labornet-memory"]  # noqa: RUF012 (as the base class declares it)
    expiry_interval_s = 1.0

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: str) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self._next_expiry = 0.0

    # MemoryStorage calls this (name-mangled) before every count; test_edge fails should that change
    def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now >= self._next_expiry:
            self._next_expiry = now + self.expiry_interval_s
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]


def rate_limit_storage(uri: str) -> Storage | AsyncStorage:
    """The storage ``LABORNET_RATE_LIMIT_STORAGE`` names; ``memory://`` is :class:`InlineExpiryMemoryStorage`."""
    return InlineExpiryMemoryStorage() if uri == "memory://" else storage_from_string(uri)


@dataclass(frozen=True)
class RateLimits:
    """The rate limits of one service process; ``None`` in ``app.state.rate_limits`` when they are off."""

    limiter: MovingWindowRateLimiter
    per_address: RateLimitItem
    auth_failures_per_address: RateLimitItem
    per_principal: RateLimitItem

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits | None:
        if not settings.rate_limit_enabled:
            return None
        return cls(
            MovingWindowRateLimiter(rate_limit_storage(settings.rate_limit_storage)),
            parse(settings.rate_limit_per_address),
            parse(settings.rate_limit_auth_failures_per_address),
            parse(settings.rate_limit_per_principal),
        )

    def hit(self, item: RateLimitItem, kind: str, key: str, who: str) -> None:
        """Count one request of ``key``; 429 when ``item`` is used up."""
        if not self.limiter.hit(item, kind, key):
            self.refuse(item, kind, key, who)

    def check(self, item: RateLimitItem, kind: str, key: str, who: str) -> None:
        """429 when ``item`` is used up for ``key``, without counting a request."""
        if not self.limiter.test(item, kind, key):
            self.refuse(item, kind, key, who)

    def refuse(self, item: RateLimitItem, kind: str, key: str, who: str) -> None:
        reset_at = self.limiter.get_window_stats(item, kind, key).reset_time
        retry_after = max(1, math.ceil(reset_at - time.time()))
        raise TooManyRequests(f"too many requests from {who} (limit {item}); retry in {retry_after} s", retry_after)


def client_address(connection: HTTPConnection) -> str:
    return connection.client.host if connection.client else "unknown"


class AddressRateLimit:
    """ASGI middleware: every request counts against its client address (429 beyond the limit)."""

    def __init__(self, app: ASGIApp, *, limits: RateLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            address = client_address(HTTPConnection(scope))
            try:
                self.limits.hit(self.limits.per_address, "address", address, f"address {address}")
            except TooManyRequests as exc:
                await _refuse(scope, send, exc)
                return
        await self.app(scope, receive, send)

"""The officer's session: one encrypted, HttpOnly, SameSite=Lax cookie, and the CSRF token bound to it.

The cookie holds who signed in, their roles, the bearer token the services accept, the session's CSRF token and
the next flash message, encrypted and authenticated with a key derived from ``LABORNET_CONSOLE_SESSION_SECRET``
(Fernet: AES-128-CBC with HMAC-SHA256), so the token never travels readable, never appears in a URL or a log,
and a cookie changed by anyone else is ignored. Every visitor gets a session (unsigned-in at first) so that the
sign-in form carries a CSRF token too; signing in starts a new session with a new CSRF token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from fastapi import Request, Response

COOKIE = "labornet_console"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


@dataclass
class Session:
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    sub: str | None = None
    name: str | None = None
    roles: list[str] = field(default_factory=list)
    token: str | None = None
    expires_at: float = 0.0
    flash: list[tuple[str, str]] = field(default_factory=list)  # (kind: ok | error, message)
    oidc: dict[str, str] | None = None  # state, nonce and PKCE verifier of a sign-in under way
    changed: bool = False

    @property
    def signed_in(self) -> bool:
        return self.token is not None and self.expires_at > time.time()

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def notify(self, message: str, kind: str = "ok") -> None:
        self.flash.append((kind, message))
        self.changed = True

    def take_flash(self) -> list[tuple[str, str]]:
        shown, self.flash = self.flash, []
        if shown:
            self.changed = True
        return shown

    def csrf_matches(self, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(self.csrf.encode(), str(sent).encode())


class SessionCodec:
    def __init__(self, secret: str, ttl_s: int, secure: bool) -> None:
        key = hashlib.sha256(b"labornet-console-session\x00" + secret.encode()).digest()
        self.fernet = Fernet(base64.urlsafe_b64encode(key))
        self.ttl_s = ttl_s
        self.secure = secure

    def load(self, request: Request) -> Session:
        raw = request.cookies.get(COOKIE)
        if raw:
            try:
                data: dict[str, Any] = json.loads(self.fernet.decrypt(raw.encode(), ttl=self.ttl_s))
                session = Session(**data)
                session.flash = [(kind, message) for kind, message in session.flash]
                return session
            except (InvalidToken, ValueError, TypeError):
                pass
        return Session(changed=True)

    def save(self, session: Session, response: Response) -> None:
        data = asdict(session)
        data.pop("changed")
        value = self.fernet.encrypt(json.dumps(data, separators=(",", ":")).encode()).decode()
        response.set_cookie(
            COOKIE, value, max_age=self.ttl_s, path="/", secure=self.secure, httponly=True, samesite="lax"
        )

    def start(self, *, sub: str, name: str, roles: list[str], token: str, ttl_s: int) -> Session:
        """A new session for a signed-in officer (a new CSRF token: nothing from before sign-in carries over)."""
        return Session(
            sub=sub,
            name=name,
            roles=roles,
            token=token,
            expires_at=time.time() + min(ttl_s, self.ttl_s),
            changed=True,
        )

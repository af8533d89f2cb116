"""Bearer-token authentication (JWT, PyJWT) and FastAPI dependencies for roles and provinces.

Claims: ``sub`` (who), ``province`` (the GB/T 2260 code of the node that issued the token), ``roles`` (any of
``worker``, ``officer``, ``admin``), plus ``iss``, ``aud``, ``iat``, ``exp``.

Production verifies tokens against the identity provider's JWKS URL (``LABORNET_AUTH_JWKS_URL``). The embedded
mode has a dev issuer per node: an Ed25519 key pair made by ``labornet keys generate`` whose public half the
services read from ``LABORNET_AUTH_PUBLIC_KEY_PATH``; ``labornet token`` prints tokens signed with it.
"""

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from labornet.shared.edge import RateLimits, client_address
from labornet.shared.identifiers import InvalidIdentifier, validate_resident_id
from labornet.shared.signing import load_public_key

ALGORITHMS = ["EdDSA", "RS256", "ES256"]


class Role(StrEnum):
    WORKER = "worker"
    OFFICER = "officer"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """The caller, as the token says."""

    sub: str
    province: str
    roles: frozenset[Role] = field(default_factory=frozenset)
    claims: dict[str, Any] = field(default_factory=dict, compare=False)

    def has(self, role: Role) -> bool:
        return role in self.roles

    @property
    def resident_id(self) -> str | None:
        """A worker's own resident identity number: the ``resident_id`` claim, or the ``sub`` when it is one."""
        if not self.has(Role.WORKER):
            return None
        try:
            return validate_resident_id(str(self.claims.get("resident_id") or self.sub))
        except InvalidIdentifier:
            return None


class AuthError(Exception):
    """Why a token was refused, in words a caller can act on."""


class ForeignIssuer(AuthError):
    """A token of another province's issuer: the caller is known in the federation, but not at this node (403)."""


class TokenVerifier:
    """Verifies bearer tokens with a static public key (dev issuer) or a JWKS URL (production).

    A token verified once is remembered, by its exact text, with the caller it names: the caller's next requests
    with the same token (an officer's app sends one token for hours) skip the decoding and the signature check,
    which were the largest part of an authenticated request's own work. A remembered token is verified again after
    ``remember_s`` (60 s: a key the identity provider withdrew stops its tokens within that of the JWKS client's own
    refresh) and never outlives its expiry; at most ``remember_count`` are kept, the oldest dropped first. Refused
    tokens are never remembered."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        public_key: Ed25519PublicKey | None = None,
        jwks_url: str | None = None,
        leeway_s: int = 30,
        partner_issuers: frozenset[str] = frozenset(),
        remember_s: float = 60.0,
        remember_count: int = 4096,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if public_key is None and jwks_url is None:
            raise ValueError("token verification needs a public key or a JWKS URL")
        self.issuer = issuer
        self.audience = audience
        self.public_key = public_key
        self.jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300) if jwks_url else None
        self.leeway_s = leeway_s
        self.partner_issuers = partner_issuers - {issuer}
        self.remember_s = remember_s
        self.remember_count = remember_count
        self.clock = clock
        # token → (the caller it names, until when it is taken without a check); JWKS verification runs in threads
        self._verified: dict[str, tuple[Principal, float]] = {}
        self._verified_lock = threading.Lock()

    def remembered(self, token: str) -> Principal | None:
        """The caller of a token verified recently and not expired since; ``None`` if it must be verified."""
        found = self._verified.get(token)
        if found is None:
            return None
        principal, until = found
        if self.clock() < until:
            return principal
        with self._verified_lock:
            self._verified.pop(token, None)
        return None

    def _remember(self, token: str, principal: Principal) -> None:
        # PyJWT takes a token as expired once its ``exp`` is ``leeway_s`` in the past
        until = min(self.clock() + self.remember_s, float(principal.claims["exp"]) + self.leeway_s)
        with self._verified_lock:
            while len(self._verified) >= self.remember_count:
                self._verified.pop(next(iter(self._verified)))  # dicts keep insertion order: the oldest first
            self._verified[token] = (principal, until)

    @classmethod
    def from_settings(
        cls,
        *,
        issuer: str,
        audience: str,
        public_key_path: Path | None,
        jwks_url: str | None,
        partner_issuers: frozenset[str] = frozenset(),
    ) -> Self:
        key = load_public_key(public_key_path) if (public_key_path is not None and jwks_url is None) else None
        return cls(issuer=issuer, audience=audience, public_key=key, jwks_url=jwks_url, partner_issuers=partner_issuers)

    def _refuse_partner_token(self, token: str) -> None:
        """A token that names a partner province's issuer is refused as that (403), whatever else is wrong with it:
        this node cannot check a partner's signature, and the caller's fix is the same: use this node's issuer."""
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError:
            return
        if isinstance(issuer, str) and issuer in self.partner_issuers:
            raise ForeignIssuer(
                f"the token was issued by {issuer}, another province's issuer; this node accepts tokens issued by "
                f"{self.issuer} only"
            )

    def verify(self, token: str) -> Principal:
        """The caller a valid token names; :class:`AuthError` saying why otherwise."""
        principal = self.remembered(token)
        if principal is None:
            principal = self._verify(token)
            self._remember(token, principal)
        return principal

    def _verify(self, token: str) -> Principal:
        self._refuse_partner_token(token)
        try:
            key: Any = self.public_key
            if self.jwks is not None:
                key = self.jwks.get_signing_key_from_jwt(token).key
            claims = jwt.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["sub", "exp", "iat", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("the token has expired; ask for a new one") from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthError(f"the token was not issued by {self.issuer}") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthError(f"the token is not meant for audience {self.audience!r}") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"the token lacks the {exc.claim!r} claim") from exc
        except jwt.PyJWTError as exc:
            raise AuthError(
                f"the token is not valid (bad signature or malformed); this node accepts tokens issued by {self.issuer}"
            ) from exc
        province = claims.get("province")
        if not isinstance(province, str) or len(province) != 6 or not province.isdigit():
            raise AuthError("the token lacks a valid 'province' claim (a 6-digit code)")
        raw_roles = claims.get("roles", [])
        if not isinstance(raw_roles, list):
            raise AuthError("the 'roles' claim must be a list")
        roles = frozenset(Role(r) for r in raw_roles if isinstance(r, str) and r in Role._value2member_map_)
        return Principal(sub=str(claims["sub"]), province=province, roles=roles, claims=claims)


def issue_token(
    private_key: Ed25519PrivateKey,
    *,
    sub: str,
    province: str,
    roles: Sequence[str],
    issuer: str,
    audience: str = "labornet",
    ttl_s: int = 8 * 3600,
    key_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """A dev token signed by the node's dev issuer key (EdDSA)."""
    unknown = [r for r in roles if r not in Role._value2member_map_]
    if unknown:
        raise ValueError(f"unknown role(s) {', '.join(unknown)}; expected worker, officer or admin")
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": sub,
        "province": province,
        "roles": list(roles),
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "exp": now + ttl_s,
        **(extra or {}),
    }
    headers = {"kid": key_id} if key_id else None
    return jwt.encode(claims, private_key, algorithm="EdDSA", headers=headers)


# FastAPI dependencies ----------------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"})


async def current_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """The authenticated caller; 401 with a reason when the token is missing or invalid, 429 when the caller's
    address failed too often (checked before any token work) or the caller sent too many requests."""
    limits: RateLimits | None = getattr(request.app.state, "rate_limits", None)
    address = client_address(request)
    if limits is not None:
        limits.check(limits.auth_failures_per_address, "auth-failures", address, f"address {address}")
    verifier: TokenVerifier = request.app.state.token_verifier
    try:
        if credentials is None:
            raise AuthError("this endpoint needs a bearer token (Authorization: Bearer <token>)")
        remembered = verifier.remembered(credentials.credentials)
        if remembered is not None:
            principal = remembered
        elif verifier.jwks is not None:  # may fetch the JWKS over HTTP: keep it off the event loop
            principal = await asyncio.to_thread(verifier.verify, credentials.credentials)
        else:
            principal = verifier.verify(credentials.credentials)
    except ForeignIssuer as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=str(exc)) from exc
    except AuthError as exc:
        if limits is not None:
            limits.hit(limits.auth_failures_per_address, "auth-failures", address, f"address {address}")
        raise _unauthorized(str(exc)) from exc
    if limits is not None:
        caller = f"{principal.province}:{principal.sub}"
        limits.hit(limits.per_principal, "principal", caller, caller)
    return principal


async def optional_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal | None:
    """The caller if a token was sent (a bad token is still a 401), else ``None`` for public reads."""
    if credentials is None:
        return None
    return await current_principal(request, credentials)


def _holds_one_of(principal: Principal, roles: Sequence[Role]) -> None:
    if not any(principal.has(role) for role in roles):
        wanted = " or ".join(role.value for role in roles)
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"this action needs the role {wanted}")


def require_role(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """Dependency: the caller must hold one of ``roles``; 403 otherwise.

    One dependency that authenticates and checks, not one for each step: FastAPI solves every level of a
    dependency chain again for each request (issue 12)."""

    async def dependency(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Principal:
        principal = await current_principal(request, credentials)
        _holds_one_of(principal, roles)
        return principal

    return dependency


def require_province_role(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """Dependency: one of ``roles`` *and* a token of this node's province (writes to its own records)."""

    async def dependency(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Principal:
        principal = await current_principal(request, credentials)
        _holds_one_of(principal, roles)
        own = request.app.state.settings.province
        if principal.province != own:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"this action is reserved to province {own}; your token is for {principal.province}",
            )
        return principal

    return dependency

"""OpenID Connect sign-in against the province's identity provider: the authorization-code flow with PKCE.

1. :meth:`OidcClient.begin` draws a ``state``, a ``nonce`` and a PKCE verifier (kept in the encrypted session
   cookie) and returns the IdP's authorization URL with the S256 challenge.
2. The IdP sends the browser back to the callback with ``code`` and ``state``; :meth:`OidcClient.finish` checks
   the state, redeems the code at the token endpoint with the verifier (and the client secret, if any), verifies
   the ID token's signature (the IdP's JWKS), issuer, audience and nonce, and returns who signed in with the
   access token the services accept (they verify it against the same IdP's JWKS: ``LABORNET_AUTH_JWKS_URL``).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt

from labornet.console.config import ConsoleSettings


class OidcError(Exception):
    """The sign-in did not complete; the message says why (shown to the user, never with a token)."""


@dataclass(frozen=True)
class SignedIn:
    sub: str
    name: str
    roles: list[str]
    access_token: str
    expires_in: int


def pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class OidcClient:
    def __init__(self, settings: ConsoleSettings, http: httpx.AsyncClient) -> None:
        assert settings.oidc_discovery_url and settings.oidc_client_id
        self.discovery_url = settings.oidc_discovery_url
        self.client_id = settings.oidc_client_id
        self.client_secret = settings.oidc_client_secret.get_secret_value() if settings.oidc_client_secret else None
        self.redirect_url = settings.oidc_redirect_url
        self.scopes = settings.oidc_scopes
        self.http = http
        self._metadata: dict[str, Any] | None = None
        self._jwks: jwt.PyJWKSet | None = None

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            try:
                response = await self.http.get(self.discovery_url)
                response.raise_for_status()
                found = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise OidcError(f"the identity provider's discovery document could not be read ({exc})") from exc
            missing = [k for k in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri") if k not in found]
            if missing:
                raise OidcError(f"the identity provider's discovery document lacks {', '.join(missing)}")
            self._metadata = found
        return self._metadata

    async def begin(self, callback_url: str) -> tuple[str, dict[str, str]]:
        """The authorization URL to send the browser to, and what the callback must find in the session.

        ``callback_url`` is where the IdP sends the browser back when no redirect URL is configured."""
        metadata = await self.metadata()
        flow = {
            "state": secrets.token_urlsafe(24),
            "nonce": secrets.token_urlsafe(24),
            "verifier": secrets.token_urlsafe(48),
            "redirect_uri": self.redirect_url or callback_url,
        }
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": flow["redirect_uri"],
                "scope": self.scopes,
                "state": flow["state"],
                "nonce": flow["nonce"],
                "code_challenge": pkce_challenge(flow["verifier"]),
                "code_challenge_method": "S256",
            }
        )
        return f"{metadata['authorization_endpoint']}?{query}", flow

    async def _signing_key(self, token: str, jwks_uri: str) -> Any:
        header = jwt.get_unverified_header(token)
        for refresh in (False, True):
            if self._jwks is None or refresh:
                try:
                    response = await self.http.get(jwks_uri)
                    response.raise_for_status()
                    self._jwks = jwt.PyJWKSet.from_dict(response.json())
                except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
                    raise OidcError(f"the identity provider's keys could not be read ({exc})") from exc
            for key in self._jwks.keys:
                if header.get("kid") in (None, key.key_id):
                    return key.key
        raise OidcError("the ID token is signed with a key the identity provider does not publish")

    async def finish(self, flow: dict[str, str] | None, code: str | None, state: str | None) -> SignedIn:
        if not flow or not state or not secrets.compare_digest(flow.get("state", ""), state):
            raise OidcError("the sign-in answer does not match a sign-in started here (state); start again")
        if not code:
            raise OidcError("the identity provider sent no authorization code")
        metadata = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": flow["redirect_uri"],
            "client_id": self.client_id,
            "code_verifier": flow["verifier"],
        }
        if self.client_secret:
            form["client_secret"] = self.client_secret
        try:
            response = await self.http.post(metadata["token_endpoint"], data=form)
        except httpx.HTTPError as exc:
            raise OidcError(f"the identity provider's token endpoint did not answer ({type(exc).__name__})") from exc
        if response.status_code != 200:
            raise OidcError(f"the identity provider refused the code (HTTP {response.status_code})")
        tokens = response.json()
        id_token, access_token = tokens.get("id_token"), tokens.get("access_token")
        if not id_token or not access_token:
            raise OidcError("the identity provider's answer lacks an ID token or an access token")
        key = await self._signing_key(id_token, metadata["jwks_uri"])
        try:
            claims = jwt.decode(
                id_token,
                key,
                algorithms=["RS256", "ES256", "EdDSA"],
                audience=self.client_id,
                issuer=metadata["issuer"],
                options={"require": ["sub", "exp", "iat", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise OidcError(f"the ID token is not valid ({exc})") from exc
        if not secrets.compare_digest(str(claims.get("nonce", "")), flow["nonce"]):
            raise OidcError("the ID token answers another sign-in (nonce)")
        # roles as the access token states them, for what the pages offer; the services verify the token itself
        try:
            access_claims = jwt.decode(access_token, options={"verify_signature": False})
        except jwt.PyJWTError:
            access_claims = {}
        roles = [r for r in access_claims.get("roles", claims.get("roles", [])) if r in ("officer", "admin")]
        name = str(claims.get("name") or claims.get("preferred_username") or claims["sub"])
        return SignedIn(str(claims["sub"]), name, roles, access_token, int(tokens.get("expires_in", 3600)))

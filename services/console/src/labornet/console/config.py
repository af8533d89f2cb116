"""Settings of the officer console, from ``LABORNET_CONSOLE_*`` variables.

The console talks to the four services of its own node only (their base URLs below) with the signed-in officer's
token. Sign-in is either the dev issuer of the node (``dev_issuer_key_path``: embedded federations started by
``labornet up``) or OpenID Connect against the province's identity provider (``oidc_*``); see the README.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

ConsoleService = Literal["jobs", "insurance", "brands", "rights"]


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LABORNET_CONSOLE_", env_file=".env", extra="ignore")

    province: str = Field("510000", description="GB/T 2260 code of the province whose officers use this console")
    jobs_url: str = Field("http://127.0.0.1:8000", description="base URL of this node's jobs service")
    insurance_url: str = Field("http://127.0.0.1:8001", description="base URL of this node's insurance service")
    brands_url: str = Field("http://127.0.0.1:8002", description="base URL of this node's brands service")
    rights_url: str = Field("http://127.0.0.1:8003", description="base URL of this node's rights service")
    service_timeout_s: float = Field(10.0, gt=0, description="HTTP timeout of one call to a service")
    readyz_timeout_s: float = Field(2.0, gt=0, description="/readyz: how long each service's /readyz may take")

    session_secret: SecretStr = Field(
        SecretStr(""),
        description="key of the session cookie (at least 32 characters); empty: a random key per process, so "
        "sessions end when the console restarts (development only)",
    )
    session_ttl_s: int = Field(8 * 3600, ge=60, description="how long a sign-in lasts")
    cookie_secure: bool = Field(True, description="send cookies over HTTPS only; off for plain-HTTP development")

    dev_issuer_key_path: Path | None = Field(
        None, description="dev sign-in: the node's dev issuer private key (keys/<province>/token.key)"
    )
    auth_issuer: str | None = Field(None, description="iss of dev tokens; default labornet:<province>")
    auth_audience: str = Field("labornet", description="aud of dev tokens")

    oidc_discovery_url: str | None = Field(
        None, description="production sign-in: the IdP's .well-known/openid-configuration URL"
    )
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_redirect_url: str | None = Field(
        None,
        description="this console's callback as registered at the IdP, e.g. https://console.example/auth/callback; "
        "default: /auth/callback on the host and scheme the request came to (behind a proxy: its X-Forwarded-* "
        "headers, trusted from FORWARDED_ALLOW_IPS)",
    )
    oidc_scopes: str = Field("openid profile", description="scopes asked for (space-separated)")

    provinces_path: Path | None = Field(None, description="province registry (JSON); default: the bundled one")
    calendar_path: Path | None = Field(
        None, description="calendar file of regional holidays (docs/operations/calendars.md) for working days left"
    )
    near_limit_workdays: int = Field(
        10, ge=0, le=250, description="today's work lists an investigation this many working days before its limit"
    )
    log_level: str = "INFO"
    log_json: bool = True

    @field_validator("province")
    @classmethod
    def _province_is_division_code(cls, value: str) -> str:
        if len(value) != 6 or not value.isdigit() or not value.endswith("0000"):
            raise ValueError(f"province {value!r}: expected a 6-digit GB/T 2260 province code such as 510000")
        return value

    @field_validator("session_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value() and len(value.get_secret_value()) < 32:
            raise ValueError("the session secret must have at least 32 characters")
        return value

    @model_validator(mode="after")
    def _fill_defaults(self) -> ConsoleSettings:
        if self.auth_issuer is None:
            self.auth_issuer = f"labornet:{self.province}"
        if not self.session_secret.get_secret_value():
            log.warning("LABORNET_CONSOLE_SESSION_SECRET is not set: a random key is used, sessions end at restart")
            self.session_secret = SecretStr(secrets.token_urlsafe(48))
        if self.oidc_discovery_url and not self.oidc_client_id:
            raise ValueError("OpenID Connect sign-in needs oidc_client_id too")
        return self

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_discovery_url)

    @property
    def dev_sign_in(self) -> bool:
        return self.dev_issuer_key_path is not None and not self.oidc_enabled

    def service_url(self, service: ConsoleService) -> str:
        url: str = getattr(self, f"{service}_url")
        return url.rstrip("/")

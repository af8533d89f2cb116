"""Ed25519 signatures over events and the federation trust list.

The signature covers a canonical byte form of every context attribute except ``signature`` (sorted JSON of the
wire strings, including the record key as ``partitionkey``) followed by the exact data bytes. Any change to a
``ce_`` header, the key or the body breaks it.

The trust list is a versioned JSON file: province code → keys, each with a key id, the raw public key (base64),
``not_before``/``not_after`` and an optional ``revoked_at``. A key is judged at the event's own ``time`` so that a
replayed log stays verifiable after a key has been rotated out; events dated too far in the future are refused.
Two keys of one province may be valid at once: that is how rotation works.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time as _time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from labornet.shared.envelope import Envelope, format_time, parse_time

log = logging.getLogger(__name__)

SIGNATURE_DOMAIN = b"labornet-event-signature-v1\x00"
DOCUMENT_DOMAIN = b"labornet-document-signature-v1\x00"
DEFAULT_CLOCK_SKEW = timedelta(minutes=5)

RejectReason = Literal["bad-signature", "unknown-key", "expired-key", "province-mismatch", "future-time"]


class SignatureRejected(Exception):
    """An event that must not be applied; ``reason`` is a short metric label."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason: RejectReason = reason


class TrustListError(ValueError):
    """The trust list file is unreadable or inconsistent."""


def canonical_bytes(attributes: Mapping[str, str], data: bytes) -> bytes:
    """What a signature covers: the attributes but the signature, as compact UTF-8 JSON with sorted keys, then the
    data's bytes as sent. orjson writes a map of strings byte for byte as ``json.dumps(sort_keys=True,
    ensure_ascii=False, separators=(",", ":"))`` did (test_signing checks it on every kind of character), in a
    tenth of the time: nodes of either version verify each other's events."""
    attrs = {name: value for name, value in attributes.items() if name != "signature"}
    return SIGNATURE_DOMAIN + orjson.dumps(attrs, option=orjson.OPT_SORT_KEYS) + b"\x00" + data


def document_bytes(province: str, context: str, body: bytes) -> bytes:
    return DOCUMENT_DOMAIN + province.encode() + b"\x00" + context.encode() + b"\x00" + body


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_for(province: str, public_key: Ed25519PublicKey) -> str:
    """A stable key id: the owner province and a fingerprint of the public key."""
    return f"{province}:{hashlib.sha256(raw_public_key(public_key)).hexdigest()[:16]}"


# Key files -----------------------------------------------------------------------------------------


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def write_private_key(key: Ed25519PrivateKey, path: Path) -> None:
    """Write a PKCS#8 PEM private key readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


def write_public_key(key: Ed25519PublicKey, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"signing key {path} not found; create it with `labornet keys generate`") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key


# Signing -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    """A node's event-signing key."""

    key_id: str
    private_key: Ed25519PrivateKey
    # the same key for libsodium, which signs in two thirds of the time OpenSSL takes; Ed25519 signatures are
    # deterministic, so the signature is the same byte for byte (ADR 26 verifies through libsodium likewise)
    _signing_key: SigningKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        raw = self.private_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        object.__setattr__(self, "_signing_key", SigningKey(raw))

    @classmethod
    def from_file(cls, path: Path, province: str, key_id: str | None = None) -> Signer:
        key = load_private_key(path)
        return cls(key_id or key_id_for(province, key.public_key()), key)

    def sign_document(self, province: str, context: str, body: bytes) -> str:
        """Sign an HTTP document (e.g. a snapshot page): the signature binds province, request and body."""
        return _b64(self.private_key.sign(document_bytes(province, context, body)))

    def sign(self, envelope: Envelope) -> Envelope:
        # what the envelope with this key's id says (one copy of the envelope, not two: 5 % of an import's CPU)
        attributes = {**envelope.attributes(), "keyid": self.key_id}
        signature = self._signing_key.sign(canonical_bytes(attributes, envelope.data)).signature
        return envelope.with_signature(self.key_id, _b64(signature))


# Trust list ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustedKey:
    key_id: str
    province: str
    public_key: Ed25519PublicKey
    not_before: datetime
    not_after: datetime
    revoked_at: datetime | None = None
    # the same key for libsodium, which checks an Ed25519 signature in half the time OpenSSL takes (ADR 26)
    _verify_key: VerifyKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_verify_key", VerifyKey(raw_public_key(self.public_key)))

    def signed(self, signature: bytes, message: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``message``."""
        try:
            self._verify_key.verify(message, signature)
        except (BadSignatureError, ValueError, TypeError):
            return False
        return True

    def valid_at(self, moment: datetime) -> bool:
        if self.revoked_at is not None and moment >= self.revoked_at:
            return False
        return self.not_before <= moment <= self.not_after

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "key_id": self.key_id,
            "public_key": _b64(raw_public_key(self.public_key)),
            "not_before": format_time(self.not_before),
            "not_after": format_time(self.not_after),
        }
        if self.revoked_at is not None:
            entry["revoked_at"] = format_time(self.revoked_at)
        return entry


@dataclass
class TrustList:
    """Whom the federation believes: province code → public keys."""

    version: int = 0
    keys: dict[str, TrustedKey] = field(default_factory=dict)
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> TrustList:
        try:
            version = int(document["version"])
            provinces = document["provinces"]
            keys: dict[str, TrustedKey] = {}
            for province, entry in provinces.items():
                for item in entry["keys"]:
                    key_id = str(item["key_id"])
                    if key_id in keys:
                        raise TrustListError(f"key id {key_id} is listed twice")
                    public = Ed25519PublicKey.from_public_bytes(_unb64(item["public_key"]))
                    revoked = item.get("revoked_at")
                    keys[key_id] = TrustedKey(
                        key_id=key_id,
                        province=str(province),
                        public_key=public,
                        not_before=parse_time(item["not_before"]),
                        not_after=parse_time(item["not_after"]),
                        revoked_at=parse_time(revoked) if revoked else None,
                    )
        except TrustListError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise TrustListError(f"malformed trust list: {exc!r}") from exc
        return cls(version=version, keys=keys)

    @classmethod
    def load(cls, path: Path) -> TrustList:
        try:
            return cls.from_json(json.loads(path.read_text("utf-8")))
        except FileNotFoundError as exc:
            raise TrustListError(f"trust list {path} not found; create it with `labornet keys generate`") from exc
        except json.JSONDecodeError as exc:
            raise TrustListError(f"trust list {path} is not JSON: {exc}") from exc

    def to_json(self) -> dict[str, Any]:
        provinces: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for key in sorted(self.keys.values(), key=lambda k: (k.province, k.not_before, k.key_id)):
            provinces.setdefault(key.province, {"keys": []})["keys"].append(key.to_json())
        return {"version": self.version, "provinces": provinces}

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n", "utf-8")
        tmp.replace(path)

    def add(self, key: TrustedKey) -> None:
        """Add a key and bump the version."""
        if key.key_id in self.keys:
            raise TrustListError(f"key id {key.key_id} is already trusted")
        self.keys[key.key_id] = key
        self.version += 1

    def keys_of(self, province: str) -> list[TrustedKey]:
        return [key for key in self.keys.values() if key.province == province]

    def verify_document(
        self, province: str, key_id: str, signature: str, context: str, body: bytes, now: datetime | None = None
    ) -> TrustedKey:
        """Check a signed HTTP document from ``province``; raise :class:`SignatureRejected` otherwise."""
        key = self.keys.get(key_id)
        if key is None:
            raise SignatureRejected("unknown-key", f"document key {key_id!r} is not in the trust list")
        if key.province != province:
            raise SignatureRejected("province-mismatch", f"key {key_id} belongs to {key.province}, not {province}")
        try:
            holds = key.signed(_unb64(signature), document_bytes(province, context, body))
        except ValueError:  # not base64
            holds = False
        if not holds:
            raise SignatureRejected("bad-signature", "document signature does not match its body")
        if not key.valid_at(now or datetime.now(UTC)):
            raise SignatureRejected("expired-key", f"key {key_id} is not valid now")
        return key

    def verify(self, envelope: Envelope, now: datetime | None = None) -> TrustedKey:
        """Return the key that signed ``envelope`` or raise :class:`SignatureRejected`."""
        key = self.keys.get(envelope.keyid)
        if key is None:
            raise SignatureRejected(
                "unknown-key", f"event {envelope.id}: key {envelope.keyid!r} is not in the trust list"
            )
        if key.province != envelope.originprovince:
            raise SignatureRejected(
                "province-mismatch",
                f"event {envelope.id}: origin province {envelope.originprovince} but key {key.key_id} "
                f"belongs to {key.province}",
            )
        try:
            holds = key.signed(_unb64(envelope.signature), canonical_bytes(envelope.attributes(), envelope.data))
        except ValueError:  # not base64, or attributes with no UTF-8 form
            holds = False
        if not holds:
            raise SignatureRejected("bad-signature", f"event {envelope.id}: signature does not match headers and body")
        current = now or datetime.now(UTC)
        if envelope.time > current + self.clock_skew:
            raise SignatureRejected(
                "future-time", f"event {envelope.id}: time {format_time(envelope.time)} is in the future"
            )
        if not key.valid_at(envelope.time):
            raise SignatureRejected(
                "expired-key",
                f"event {envelope.id}: key {key.key_id} was not valid at {format_time(envelope.time)} "
                f"(valid {format_time(key.not_before)} to {format_time(key.not_after)}"
                + (f", revoked {format_time(key.revoked_at)})" if key.revoked_at else ")"),
            )
        return key


class TrustListFile:
    """A trust list read from disk and re-read when the file changes (key rotation without restart).

    The first load must succeed. Later, a file that disappears or does not parse is logged and the last good
    list stays in force until a readable file is back; it is never half-applied.
    """

    def __init__(self, path: Path, check_interval_s: float = 1.0, clock_skew: timedelta = DEFAULT_CLOCK_SKEW) -> None:
        self.path = path
        self.check_interval_s = check_interval_s
        self.clock_skew = clock_skew
        self._mtime_ns = -1
        self._checked_at = 0.0
        self._current = self._load(path.stat().st_mtime_ns if path.exists() else -1)

    def _load(self, mtime_ns: int) -> TrustList:
        trust = TrustList.load(self.path)
        trust.clock_skew = self.clock_skew
        self._mtime_ns = mtime_ns
        return trust

    def refresh(self) -> TrustList:
        now = _time.monotonic()
        if now - self._checked_at < self.check_interval_s:
            return self._current
        self._checked_at = now
        try:
            mtime = self.path.stat().st_mtime_ns
            if mtime != self._mtime_ns:
                self._current = self._load(mtime)
                log.info("trust list %s reloaded: version %d", self.path, self._current.version)
        except (OSError, TrustListError) as exc:
            log.error("trust list %s unreadable, keeping version %d: %s", self.path, self._current.version, exc)
        return self._current

    @property
    def current(self) -> TrustList:
        return self.refresh()

    def verify(self, envelope: Envelope, now: datetime | None = None) -> TrustedKey:
        return self.current.verify(envelope, now)


def new_trusted_key(province: str, public_key: Ed25519PublicKey, valid_from: datetime, valid_days: int) -> TrustedKey:
    return TrustedKey(
        key_id=key_id_for(province, public_key),
        province=province,
        public_key=public_key,
        not_before=valid_from,
        not_after=valid_from + timedelta(days=valid_days),
    )

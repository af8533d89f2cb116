"""Node key files and the federation trust list on disk.

Layout under a keys directory of one province::

    <keys_dir>/signing.key   Ed25519 private key that signs the node's events (mode 0600)
    <keys_dir>/signing.pub   its public half (also listed in the trust list)
    <keys_dir>/token.key     Ed25519 private key of the node's dev token issuer (embedded mode only)
    <keys_dir>/token.pub     what the services verify dev tokens with
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from labornet.shared.signing import (
    TrustList,
    TrustListError,
    generate_private_key,
    key_id_for,
    load_private_key,
    new_trusted_key,
    write_private_key,
    write_public_key,
)


@dataclass(frozen=True)
class NodeKeys:
    province: str
    keys_dir: Path
    signing_key_id: str

    @property
    def signing_key(self) -> Path:
        return self.keys_dir / "signing.key"

    @property
    def token_key(self) -> Path:
        return self.keys_dir / "token.key"

    @property
    def token_public_key(self) -> Path:
        return self.keys_dir / "token.pub"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise trust-list updates between processes starting at the same time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(path.suffix + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _load_or_empty(trust_list_path: Path) -> TrustList:
    try:
        return TrustList.load(trust_list_path)
    except TrustListError:
        if trust_list_path.exists():
            raise
        return TrustList()


def ensure_node_keys(
    province: str, keys_dir: Path, trust_list_path: Path, valid_days: int = 365, rotate: bool = False
) -> NodeKeys:
    """Create the node's keys if missing (or a new signing key when ``rotate``) and trust the signing key.

    Rotation adds a second signing key. The old one stays in the trust list (events it signed keep verifying
    while its validity covers their time); the services sign with the new key after their next restart.
    """
    signing_path = keys_dir / "signing.key"
    with _locked(trust_list_path):
        trust = _load_or_empty(trust_list_path)
        if rotate or not signing_path.exists():
            if signing_path.exists():
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
                signing_path.rename(keys_dir / f"signing.{stamp}.key")
            write_private_key(generate_private_key(), signing_path)
        signing = load_private_key(signing_path)
        write_public_key(signing.public_key(), keys_dir / "signing.pub")
        key_id = key_id_for(province, signing.public_key())
        if key_id not in trust.keys:
            trust.add(new_trusted_key(province, signing.public_key(), datetime.now(UTC), valid_days))
            trust.save(trust_list_path)
        token_path = keys_dir / "token.key"
        if not token_path.exists():
            write_private_key(generate_private_key(), token_path)
        write_public_key(load_private_key(token_path).public_key(), keys_dir / "token.pub")
    return NodeKeys(province=province, keys_dir=keys_dir, signing_key_id=key_id)

"""Bearer tokens: the dev issuer, verification errors, and a JWKS URL served over real HTTP."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from labornet.shared.auth import AuthError, ForeignIssuer, Role, TokenVerifier, issue_token

ISSUER = "labornet:510000"


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def verifier(key: Ed25519PrivateKey) -> TokenVerifier:
    return TokenVerifier(issuer=ISSUER, audience="labornet", public_key=key.public_key())


def test_dev_token_round_trip(key: Ed25519PrivateKey) -> None:
    token = issue_token(key, sub="alice", province="510000", roles=["officer", "admin"], issuer=ISSUER)
    principal = verifier(key).verify(token)
    assert (principal.sub, principal.province) == ("alice", "510000")
    assert principal.roles == {Role.OFFICER, Role.ADMIN}
    assert principal.has(Role.ADMIN) and not principal.has(Role.WORKER)


def test_unknown_roles_are_refused_at_issue(key: Ed25519PrivateKey) -> None:
    with pytest.raises(ValueError, match="unknown role"):
        issue_token(key, sub="x", province="510000", roles=["superuser"], issuer=ISSUER)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ttl_s": -120}, "expired"),
        ({"issuer": "labornet:330000"}, "not issued by labornet:510000"),
        ({"audience": "someone-else"}, "audience"),
        ({"province": "51"}, "'province' claim"),
    ],
)
def test_refusals_say_why(key: Ed25519PrivateKey, kwargs: dict[str, object], message: str) -> None:
    claims: dict[str, object] = {"sub": "bob", "province": "510000", "roles": ["worker"], "issuer": ISSUER}
    claims.update(kwargs)
    token = issue_token(key, **claims)  # type: ignore[arg-type]
    with pytest.raises(AuthError, match=message):
        verifier(key).verify(token)


def test_token_signed_by_another_key_is_refused(key: Ed25519PrivateKey) -> None:
    token = issue_token(Ed25519PrivateKey.generate(), sub="eve", province="510000", roles=["admin"], issuer=ISSUER)
    with pytest.raises(AuthError, match="not valid"):
        verifier(key).verify(token)


def test_unsigned_token_is_refused(key: Ed25519PrivateKey) -> None:
    now = int(time.time())
    token = jwt.encode(
        {
            "sub": "eve",
            "province": "510000",
            "roles": ["admin"],
            "iss": ISSUER,
            "aud": "labornet",
            "iat": now,
            "exp": now + 60,
        },
        key=None,
        algorithm="none",
    )
    with pytest.raises(AuthError):
        verifier(key).verify(token)


@pytest.fixture
def jwks_server(key: Ed25519PrivateKey) -> Iterator[str]:
    jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="prod-1", use="sig", alg="EdDSA")
    body = json.dumps({"keys": [jwk]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    server.shutdown()


def test_production_verifies_against_a_jwks_url(key: Ed25519PrivateKey, jwks_server: str) -> None:
    production = TokenVerifier(issuer="https://idp.sichuan.example", audience="labornet", jwks_url=jwks_server)
    token = issue_token(
        key,
        sub="officer-7",
        province="510000",
        roles=["officer"],
        issuer="https://idp.sichuan.example",
        key_id="prod-1",
    )
    assert production.verify(token).sub == "officer-7"
    stranger = issue_token(
        Ed25519PrivateKey.generate(),
        sub="eve",
        province="510000",
        roles=["admin"],
        issuer="https://idp.sichuan.example",
        key_id="prod-1",
    )
    with pytest.raises(AuthError):
        production.verify(stranger)


def test_a_workers_resident_id_comes_from_the_claim_or_the_sub() -> None:
    from labornet.shared.auth import Principal, Role
    from labornet.shared.identifiers import make_resident_id

    rid = make_resident_id("511602", date(1988, 3, 7), 1)
    assert Principal(sub=rid, province="510000", roles=frozenset({Role.WORKER})).resident_id == rid
    claimed = Principal(sub="alice", province="510000", roles=frozenset({Role.WORKER}), claims={"resident_id": rid})
    assert claimed.resident_id == rid
    assert Principal(sub="alice", province="510000", roles=frozenset({Role.WORKER})).resident_id is None
    assert Principal(sub=rid, province="510000", roles=frozenset({Role.OFFICER})).resident_id is None, "workers only"


def test_a_partner_provinces_token_is_refused_as_foreign_naming_this_nodes_issuer() -> None:
    partner_key = Ed25519PrivateKey.generate()
    token = issue_token(partner_key, sub="li", province="330000", roles=["officer"], issuer="labornet:330000")
    verifier = TokenVerifier(
        issuer=ISSUER,
        audience="labornet",
        public_key=Ed25519PrivateKey.generate().public_key(),
        partner_issuers=frozenset({"labornet:330000", ISSUER}),
    )
    with pytest.raises(ForeignIssuer, match=f"issued by labornet:330000.*accepts tokens issued by {ISSUER}"):
        verifier.verify(token)
    unknown = issue_token(partner_key, sub="li", province="330000", roles=["officer"], issuer="elsewhere")
    with pytest.raises(AuthError, match=f"not valid.*{ISSUER}") as refused:
        verifier.verify(unknown)
    assert not isinstance(refused.value, ForeignIssuer)


class Clock:
    """The verifier's clock, moved by the test (PyJWT's own expiry check keeps the real time)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_a_verified_token_is_taken_again_without_a_check_for_a_minute_at_most(key: Ed25519PrivateKey) -> None:
    """The same token is taken from memory (here: still taken after the node's key changed) until ``remember_s``
    has passed; then it is verified again, and a token its key no longer verifies is refused."""
    clock = Clock()
    node = TokenVerifier(issuer=ISSUER, audience="labornet", public_key=key.public_key(), clock=clock)
    token = issue_token(key, sub="officer-3", province="510000", roles=["officer"], issuer=ISSUER)
    first = node.verify(token)
    node.public_key = Ed25519PrivateKey.generate().public_key()  # the key is withdrawn
    clock.now += 59
    assert node.verify(token) is first
    clock.now += 2
    with pytest.raises(AuthError, match="not valid"):
        node.verify(token)
    with pytest.raises(AuthError, match="not valid"):  # and a refused token is not remembered either
        node.verify(token)


def test_a_remembered_token_expires_when_the_token_does() -> None:
    """A token with 2 s left is refused as expired once they have passed, though it was verified and remembered;
    the verifier's leeway is counted as PyJWT counts it."""
    key = Ed25519PrivateKey.generate()
    node = TokenVerifier(issuer=ISSUER, audience="labornet", public_key=key.public_key(), leeway_s=0)
    token = issue_token(key, sub="worker-1", province="510000", roles=["worker"], issuer=ISSUER, ttl_s=2)
    assert node.verify(token).sub == "worker-1"
    expiry = jwt.decode(token, options={"verify_signature": False})["exp"]
    time.sleep(max(0.0, expiry - time.time()) + 0.05)
    assert node.remembered(token) is None
    with pytest.raises(AuthError, match="expired"):
        node.verify(token)


def test_at_most_remember_count_tokens_are_kept_the_oldest_dropped_first(key: Ed25519PrivateKey) -> None:
    node = TokenVerifier(issuer=ISSUER, audience="labornet", public_key=key.public_key(), remember_count=2)
    tokens = [
        issue_token(key, sub=f"officer-{n}", province="510000", roles=["officer"], issuer=ISSUER) for n in range(3)
    ]
    for token in tokens:
        node.verify(token)
    assert [node.remembered(token) is not None for token in tokens] == [False, True, True]
    assert len(node._verified) == 2

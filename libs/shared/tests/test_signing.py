"""Ed25519 signatures and the federation trust list."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from labornet.shared.envelope import Envelope, encode_data
from labornet.shared.keys import ensure_node_keys
from labornet.shared.signing import (
    SignatureRejected,
    Signer,
    TrustedKey,
    TrustList,
    TrustListError,
    TrustListFile,
    generate_private_key,
    key_id_for,
    new_trusted_key,
)

NOW = datetime.now(UTC)


def make_envelope(origin: str = "510000", **overrides: object) -> Envelope:
    values: dict[str, object] = {
        "id": "e-1",
        "source": f"/labornet/{origin}/jobs",
        "type": "org.labornet.jobs.vacancy.published.v1",
        "time": NOW,
        "partitionkey": f"{origin}-V-1",
        "originprovince": origin,
        "stream": f"{origin}/labornet.{origin}.jobs.events",
        "streamseq": 1,
        "schemaversion": 1,
        "data": encode_data({"title": "焊工", "headcount": 3}),
    }
    values.update(overrides)
    return Envelope(**values)  # type: ignore[arg-type]


@pytest.fixture
def sichuan() -> tuple[Signer, TrustList]:
    key = generate_private_key()
    trust = TrustList()
    trust.add(new_trusted_key("510000", key.public_key(), NOW - timedelta(days=1), 30))
    return Signer(key_id_for("510000", key.public_key()), key), trust


def test_signed_event_verifies_and_survives_the_wire(sichuan: tuple[Signer, TrustList]) -> None:
    signer, trust = sichuan
    signed = signer.sign(make_envelope())
    key, value, headers = signed.to_kafka()
    received = Envelope.from_kafka(key, value, headers)
    assert trust.verify(received).province == "510000"


def test_tampered_body_is_rejected(sichuan: tuple[Signer, TrustList]) -> None:
    signer, trust = sichuan
    signed = signer.sign(make_envelope())
    forged = dataclasses.replace(signed, data=encode_data({"title": "焊工", "headcount": 300}))
    with pytest.raises(SignatureRejected) as caught:
        trust.verify(forged)
    assert caught.value.reason == "bad-signature"


@pytest.mark.parametrize(
    ("header", "value"),
    [("ce_type", b"org.labornet.jobs.vacancy.closed.v1"), ("ce_streamseq", b"2"), ("ce_subject", b"other")],
)
def test_tampered_header_is_rejected(sichuan: tuple[Signer, TrustList], header: str, value: bytes) -> None:
    signer, trust = sichuan
    key, body, headers = signer.sign(make_envelope(subject="510000-V-1")).to_kafka()
    changed = [(n, value if n == header else v) for n, v in headers]
    with pytest.raises(SignatureRejected) as caught:
        trust.verify(Envelope.from_kafka(key, body, changed))
    assert caught.value.reason == "bad-signature"


def test_changed_record_key_is_rejected(sichuan: tuple[Signer, TrustList]) -> None:
    signer, trust = sichuan
    _, body, headers = signer.sign(make_envelope()).to_kafka()
    with pytest.raises(SignatureRejected, match="signature does not match"):
        trust.verify(Envelope.from_kafka(b"510000-V-2", body, headers))


def test_added_ce_header_is_rejected(sichuan: tuple[Signer, TrustList]) -> None:
    signer, trust = sichuan
    key, body, headers = signer.sign(make_envelope()).to_kafka()
    with pytest.raises(SignatureRejected):
        trust.verify(Envelope.from_kafka(key, body, [*headers, ("ce_destprovince", b"330000")]))


def test_unknown_key_is_rejected(sichuan: tuple[Signer, TrustList]) -> None:
    _, trust = sichuan
    stranger = generate_private_key()
    signed = Signer(key_id_for("510000", stranger.public_key()), stranger).sign(make_envelope())
    with pytest.raises(SignatureRejected) as caught:
        trust.verify(signed)
    assert caught.value.reason == "unknown-key"


def test_key_of_another_province_cannot_speak_for_sichuan(sichuan: tuple[Signer, TrustList]) -> None:
    _, trust = sichuan
    zhejiang = generate_private_key()
    trust.add(new_trusted_key("330000", zhejiang.public_key(), NOW - timedelta(days=1), 30))
    forged = Signer(key_id_for("330000", zhejiang.public_key()), zhejiang).sign(make_envelope(origin="510000"))
    with pytest.raises(SignatureRejected) as caught:
        trust.verify(forged)
    assert caught.value.reason == "province-mismatch"
    assert "belongs to 330000" in str(caught.value)


def test_key_id_claiming_a_trusted_key_but_signed_by_another_is_rejected(sichuan: tuple[Signer, TrustList]) -> None:
    signer, trust = sichuan
    impostor = Signer(signer.key_id, generate_private_key())
    with pytest.raises(SignatureRejected) as caught:
        trust.verify(impostor.sign(make_envelope()))
    assert caught.value.reason == "bad-signature"


def test_expired_and_revoked_keys() -> None:
    key = generate_private_key()
    key_id = key_id_for("510000", key.public_key())
    trust = TrustList(
        keys={
            key_id: TrustedKey(key_id, "510000", key.public_key(), NOW - timedelta(days=60), NOW - timedelta(days=30))
        }
    )
    signer = Signer(key_id, key)
    with pytest.raises(SignatureRejected) as caught:
        trust.verify(signer.sign(make_envelope()))
    assert caught.value.reason == "expired-key"
    # an event signed while the key was valid stays verifiable when a log is replayed later
    assert trust.verify(signer.sign(make_envelope(time=NOW - timedelta(days=45)))).key_id == key_id

    trust.keys[key_id] = dataclasses.replace(
        trust.keys[key_id], not_after=NOW + timedelta(days=30), revoked_at=NOW - timedelta(hours=1)
    )
    with pytest.raises(SignatureRejected, match="revoked"):
        trust.verify(signer.sign(make_envelope()))


def test_future_dated_event_is_rejected(sichuan: tuple[Signer, TrustList]) -> None:
    signer, trust = sichuan
    with pytest.raises(SignatureRejected) as caught:
        trust.verify(signer.sign(make_envelope(time=NOW + timedelta(hours=1))))
    assert caught.value.reason == "future-time"


def test_rotation_keeps_two_keys_valid(tmp_path: Path) -> None:
    keys_dir, trust_path = tmp_path / "keys" / "510000", tmp_path / "trust-list.json"
    first = ensure_node_keys("510000", keys_dir, trust_path)
    old_signer = Signer.from_file(first.signing_key, "510000")
    second = ensure_node_keys("510000", keys_dir, trust_path, rotate=True)
    new_signer = Signer.from_file(second.signing_key, "510000")
    assert first.signing_key_id != second.signing_key_id
    trust = TrustList.load(trust_path)
    assert trust.version == 2
    assert {k.key_id for k in trust.keys_of("510000")} == {first.signing_key_id, second.signing_key_id}
    after_rotation = datetime.now(UTC)
    assert trust.verify(old_signer.sign(make_envelope(time=after_rotation))).key_id == first.signing_key_id
    assert trust.verify(new_signer.sign(make_envelope(time=after_rotation))).key_id == second.signing_key_id


def test_ensure_node_keys_is_idempotent_and_private(tmp_path: Path) -> None:
    trust_path = tmp_path / "trust-list.json"
    a = ensure_node_keys("510000", tmp_path / "keys" / "510000", trust_path)
    b = ensure_node_keys("510000", tmp_path / "keys" / "510000", trust_path)
    assert a == b
    assert TrustList.load(trust_path).version == 1
    assert os.stat(a.signing_key).st_mode & 0o077 == 0
    assert a.token_public_key.exists()


def test_trust_list_file_reloads_on_change(tmp_path: Path) -> None:
    trust_path = tmp_path / "trust-list.json"
    ensure_node_keys("510000", tmp_path / "keys" / "510000", trust_path)
    watched = TrustListFile(trust_path, check_interval_s=0)
    zhejiang = ensure_node_keys("330000", tmp_path / "keys" / "330000", trust_path)
    signer = Signer.from_file(zhejiang.signing_key, "330000")
    os.utime(trust_path, ns=(1, 10**18))  # make sure the mtime differs even on coarse clocks
    event = make_envelope(origin="330000", time=datetime.now(UTC))
    assert watched.verify(signer.sign(event)).province == "330000"


def test_malformed_trust_list_says_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "trust-list.json"
    path.write_text(json.dumps({"version": 1, "provinces": {"510000": {"keys": [{"key_id": "x"}]}}}))
    with pytest.raises(TrustListError, match="malformed trust list"):
        TrustList.load(path)
    with pytest.raises(TrustListError, match="not found"):
        TrustList.load(tmp_path / "absent.json")


def test_unreadable_trust_list_keeps_the_last_good_one(tmp_path: Path) -> None:
    trust_path = tmp_path / "trust-list.json"
    sichuan = ensure_node_keys("510000", tmp_path / "keys" / "510000", trust_path)
    watched = TrustListFile(trust_path, check_interval_s=0)
    trust_path.write_text("{ half written")
    signer = Signer.from_file(sichuan.signing_key, "510000")
    assert watched.verify(signer.sign(make_envelope(time=datetime.now(UTC)))).province == "510000"
    trust_path.unlink()
    assert watched.current.version == 1


def test_missing_trust_list_at_start_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(TrustListError, match="labornet keys generate"):
        TrustListFile(tmp_path / "trust-list.json")


def test_forged_event_with_an_expired_key_id_counts_as_bad_signature() -> None:
    key = generate_private_key()
    key_id = key_id_for("510000", key.public_key())
    trust = TrustList(
        keys={
            key_id: TrustedKey(key_id, "510000", key.public_key(), NOW - timedelta(days=60), NOW - timedelta(days=30))
        }
    )
    forged = Signer(key_id, generate_private_key()).sign(make_envelope())
    with pytest.raises(SignatureRejected) as caught:
        trust.verify(forged)
    assert caught.value.reason == "bad-signature"


def test_signed_documents_bind_province_context_and_body(sichuan: tuple[Signer, TrustList]) -> None:
    signer, trust = sichuan
    body = b'{"items": []}'
    signature = signer.sign_document("510000", "/snapshot?after=", body)
    assert trust.verify_document("510000", signer.key_id, signature, "/snapshot?after=", body).province == "510000"
    for province, context, changed in [
        ("510000", "/snapshot?after=", b'{"items": [1]}'),
        ("510000", "/snapshot?after=X", body),
    ]:
        with pytest.raises(SignatureRejected) as caught:
            trust.verify_document(province, signer.key_id, signature, context, changed)
        assert caught.value.reason == "bad-signature"
    with pytest.raises(SignatureRejected) as caught:
        trust.verify_document("330000", signer.key_id, signature, "/snapshot?after=", body)
    assert caught.value.reason == "province-mismatch"


@pytest.mark.parametrize(
    "signature",
    ["", "not base64 at all!", "AAAA", "A" * 86, "A" * 200, "%%%%", "\u6c49\u5b57"],
    ids=["empty", "not-base64", "too-short", "zeros", "too-long", "symbols", "chinese"],
)
def test_a_malformed_signature_is_a_bad_signature_never_an_error(
    sichuan: tuple[Signer, TrustList], signature: str
) -> None:
    """Whatever the signature field holds, the answer is "bad-signature": never another exception, never accepted."""
    signer, trust = sichuan
    forged = dataclasses.replace(signer.sign(make_envelope()), signature=signature)
    with pytest.raises(SignatureRejected) as caught:
        trust.verify(forged)
    assert caught.value.reason == "bad-signature"
    with pytest.raises(SignatureRejected) as caught:
        trust.verify_document("510000", signer.key_id, signature, "/snapshot?after=", b"{}")
    assert caught.value.reason == "bad-signature"


def test_a_signature_of_the_right_key_over_other_bytes_is_refused_and_the_true_one_accepted() -> None:
    """The two Ed25519 implementations agree: signed by OpenSSL (cryptography), checked by libsodium."""
    key = generate_private_key()
    trusted = new_trusted_key("510000", key.public_key(), NOW - timedelta(days=1), 30)
    for message in (b"", b"x", "汉字".encode() * 500):
        signature = key.sign(message)
        assert trusted.signed(signature, message)
        assert not trusted.signed(signature, message + b"\x00")
        assert not trusted.signed(signature[:-1] + bytes([signature[-1] ^ 1]), message)
        assert not trusted.signed(signature[:63], message)


# every kind of character an attribute can hold: controls, quotes, backslashes, line and paragraph separators,
# CJK, characters beyond the basic plane
TRICKY = [chr(c) for c in range(0x80)] + ["\u2028", "\u2029", "\ufeff", "\u00e9", "焊工", "😀", "\U0010fffd", '"\\/']


def earlier_signature(signer: Signer, envelope: Envelope) -> bytes:
    """What the signer wrote before libsodium and orjson: OpenSSL over the standard library's JSON."""
    attributes = {**envelope.attributes(), "keyid": signer.key_id}
    attributes.pop("signature", None)
    head = json.dumps(attributes, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return signer.private_key.sign(b"labornet-event-signature-v1\x00" + head + b"\x00" + envelope.data)


def test_signatures_are_those_of_the_earlier_signer_byte_for_byte(sichuan: tuple[Signer, TrustList]) -> None:
    """A federation runs nodes of both versions at once: what one signs the other must verify. Ed25519 is
    deterministic, so the same bytes signed give the same signature whichever library signs."""
    signer, trust = sichuan
    for n, subject in enumerate(["".join(TRICKY), *TRICKY]):
        envelope = make_envelope(subject=subject, traceparent=f"00-{n:032x}-{n:016x}-01", id=f"e-{n}")
        signed = signer.sign(envelope)
        assert signed.signature is not None
        assert base64.urlsafe_b64decode(signed.signature + "==") == earlier_signature(signer, envelope), repr(subject)
        earlier = envelope.with_signature(
            signer.key_id, base64.urlsafe_b64encode(earlier_signature(signer, envelope)).decode().rstrip("=")
        )
        assert trust.verify(Envelope.from_kafka(*earlier.to_kafka())).province == "510000"

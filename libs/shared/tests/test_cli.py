"""The `labornet` command: keys, dev tokens, the embedded broker's binary."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labornet.shared.auth import TokenVerifier
from labornet.shared.broker import EmbeddedBroker, tansu_binary
from labornet.shared.cli import app
from labornet.shared.signing import TrustList, load_public_key

runner = CliRunner()


def test_keys_generate_then_token_verifies(tmp_path: Path) -> None:
    result = runner.invoke(app, ["keys", "generate", "--province", "510000", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    trust = TrustList.load(tmp_path / "trust-list.json")
    assert created["signing_key_id"] in trust.keys

    result = runner.invoke(
        app, ["token", "--province", "510000", "--role", "officer", "--sub", "alice", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    verifier = TokenVerifier(
        issuer="labornet:510000", audience="labornet", public_key=load_public_key(tmp_path / "keys/510000/token.pub")
    )
    principal = verifier.verify(result.stdout.strip())
    assert (principal.sub, principal.province, sorted(principal.roles)) == ("alice", "510000", ["officer"])


def test_rotation_from_the_command_line(tmp_path: Path) -> None:
    args = ["keys", "generate", "--province", "330000", "--data-dir", str(tmp_path)]
    first = json.loads(runner.invoke(app, args).stdout)["signing_key_id"]
    second = json.loads(runner.invoke(app, [*args, "--rotate"]).stdout)["signing_key_id"]
    assert first != second
    assert {k.key_id for k in TrustList.load(tmp_path / "trust-list.json").keys_of("330000")} == {first, second}


def test_clear_errors(tmp_path: Path) -> None:
    no_key = runner.invoke(
        app, ["token", "--province", "510000", "--role", "officer", "--sub", "a", "--data-dir", str(tmp_path)]
    )
    assert no_key.exit_code == 2
    assert "labornet keys generate --province 510000" in no_key.output
    unknown = runner.invoke(app, ["keys", "generate", "--province", "990000", "--data-dir", str(tmp_path)])
    assert unknown.exit_code == 2
    assert "990000" in unknown.output
    runner.invoke(app, ["keys", "generate", "--province", "510000", "--data-dir", str(tmp_path)])
    bad_role = runner.invoke(
        app, ["token", "--province", "510000", "--role", "boss", "--sub", "a", "--data-dir", str(tmp_path)]
    )
    assert bad_role.exit_code == 2
    assert "unknown role" in bad_role.output


def test_broker_binary_is_the_pinned_tansu() -> None:
    binary = tansu_binary()
    assert os.access(binary, os.X_OK)
    assert "tansu" in subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout


def test_embedded_broker_refuses_a_busy_port(kafka_broker: EmbeddedBroker) -> None:
    second = EmbeddedBroker(port=kafka_broker.port)
    with pytest.raises(RuntimeError, match="already in use"):
        second.start()

"""`labornet up` starts a console per province: its port, its settings, the table, federation.json and the
Prometheus targets."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from labornet.console.config import ConsoleSettings
from labornet.shared.federation import Federation


def local_federation(data_dir: Path, process_per: str) -> tuple[Federation, io.StringIO]:
    out = io.StringIO()
    federation = Federation(
        data_dir=data_dir,
        provinces=["510000", "330000"],
        port_base=18000,
        broker_port=19092,
        bootstrap_servers="127.0.0.1:19092",
        database_url_template=None,
        console=Console(file=out, width=200),
        process_per=process_per,
    )
    return federation, out


def test_each_province_gets_a_console_beside_its_services(tmp_path: Path) -> None:
    for process_per in ("service", "node"):
        federation, out = local_federation(tmp_path, process_per)
        # Sichuan is the registry's first member (18000…), Zhejiang its eighth (18070…): the console is jobs + 4
        assert [(c.province, c.port) for c in federation.consoles] == [("510000", 18004), ("330000", 18074)]
        federation._report(elapsed=1.0)
        document = json.loads((tmp_path / "federation.json").read_text("utf-8"))
        assert document["provinces"]["330000"]["console"] == "http://127.0.0.1:18074"
        assert "console" not in document["provinces"]["330000"]["services"]  # the services' peers stay four
        printed = out.getvalue()
        assert "http://127.0.0.1:18004 (510000)" in printed and "http://127.0.0.1:18074 (330000)" in printed
        targets = json.loads((tmp_path / "prometheus-targets.json").read_text("utf-8"))
        consoles = [group for group in targets if group["labels"]["service"] == "console"]
        assert [group["targets"] for group in consoles] == [["127.0.0.1:18004"], ["127.0.0.1:18074"]]


def test_the_console_is_configured_for_its_own_node(tmp_path: Path) -> None:
    federation, _ = local_federation(tmp_path, "node")
    zhejiang = federation.consoles[1]
    env = federation._env(zhejiang)
    settings = ConsoleSettings(
        **{
            key.removeprefix("LABORNET_CONSOLE_").lower(): value
            for key, value in env.items()
            if key.startswith("LABORNET_CONSOLE_")
        }
    )
    assert settings.province == "330000"
    assert settings.jobs_url == "http://127.0.0.1:18070"
    assert settings.rights_url == "http://127.0.0.1:18073"
    assert settings.dev_issuer_key_path == tmp_path / "keys" / "330000" / "token.key"
    assert settings.dev_sign_in and not settings.cookie_secure
    assert len(settings.session_secret.get_secret_value()) >= 32
    assert (
        env["LABORNET_CONSOLE_SESSION_SECRET"]
        == federation._env(federation.consoles[0])["LABORNET_CONSOLE_SESSION_SECRET"]
    )

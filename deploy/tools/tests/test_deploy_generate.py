"""The deployment generator: every province overlay builds with the officer console, compose runs one per province.

The overlays are built with `kubectl kustomize` (or `kustomize build`) as scripts/validate-deploy.sh builds them;
the checks of deploy/tools/check_k8s.py and check_compose.py then run on the result, and on copies broken on
purpose to show that they notice what they are there for.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

TOOLS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOOLS))

import check_compose  # noqa: E402
import check_k8s  # noqa: E402
import generate  # noqa: E402
from common import ROOT, SERVICES, members, service_version  # noqa: E402

CODES = [p.code for p in members()]


def _kustomize() -> list[str] | None:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


KUSTOMIZE = _kustomize()
needs_kustomize = pytest.mark.skipif(KUSTOMIZE is None, reason="neither kubectl nor kustomize is installed")


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict[str, Any]]]:
    """Every committed overlay, built."""
    assert KUSTOMIZE is not None
    result = {}
    for code in CODES:
        out = subprocess.run(
            [*KUSTOMIZE, str(ROOT / "deploy" / "k8s" / "overlays" / code)],
            capture_output=True,
            text=True,
            check=True,
        )
        result[code] = [doc for doc in yaml.safe_load_all(out.stdout) if doc]
    return result


@pytest.fixture
def k8s_errors() -> Iterator[Callable[[str, list[dict[str, Any]]], list[str]]]:
    def run(code: str, docs: list[dict[str, Any]]) -> list[str]:
        check_k8s.errors.clear()
        check_k8s.check_overlay(code, docs, {f"labornet-{c}" for c in CODES})
        return list(check_k8s.errors)

    yield run
    check_k8s.errors.clear()


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name)]
    return doc


def _env(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_generated_files_are_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    assert generate.main(["--check"]) == 0, capsys.readouterr().err


def test_every_overlay_lists_the_console_base_and_its_ingress() -> None:
    files = generate.generated()
    for code in CODES:
        overlay = yaml.safe_load(files[ROOT / "deploy" / "k8s" / "overlays" / code / "kustomization.yaml"])
        assert "../../base/console" in overlay["resources"]
        assert "ingress.yaml" in overlay["resources"]
        images = {i["name"]: f"{i['newName']}:{i['newTag']}" for i in overlay["images"]}
        assert images["labornet-console"] == f"{generate.IMAGE_REGISTRY}/console:{service_version('console')}"
        ingress = yaml.safe_load(files[ROOT / "deploy" / "k8s" / "overlays" / code / "ingress.yaml"])
        assert ingress["spec"]["tls"] == [
            {"hosts": [f"console-{code}.labornet.example"], "secretName": "labornet-console-tls"}
        ]


@needs_kustomize
@pytest.mark.parametrize("code", CODES)
def test_overlay_builds_with_the_console_of_its_province(
    code: str, built: dict[str, list[dict[str, Any]]], k8s_errors: Callable[..., list[str]]
) -> None:
    docs = built[code]
    console = _one(docs, "Deployment", "console")
    container = console["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"{generate.IMAGE_REGISTRY}/console:{service_version('console')}"
    assert container["command"][:2] == ["labornet", "serve-console"]
    node = _one(docs, "ConfigMap", "labornet-node")
    env = _env(console)
    province = env["LABORNET_CONSOLE_PROVINCE"]["valueFrom"]["configMapKeyRef"]
    assert province["name"] == node["metadata"]["name"]  # the hash-suffixed name kustomize generated
    assert node["data"][province["key"]] == code
    assert env["LABORNET_CONSOLE_JOBS_URL"]["value"] == "http://jobs:8000"
    client_id = env["LABORNET_CONSOLE_OIDC_CLIENT_ID"]["valueFrom"]["configMapKeyRef"]["key"]
    assert node["data"][client_id] == "labornet-console"
    assert node["data"]["LABORNET_CONSOLE_OIDC_DISCOVERY_URL"] == (
        f"https://id.labornet.example/realms/{code}/.well-known/openid-configuration"
    )
    assert env["LABORNET_CONSOLE_SESSION_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "labornet-console",
        "key": "session-secret",
    }
    # the Kafka client certificate goes to the four services, not to the console
    volumes = {v["name"] for v in console["spec"]["template"]["spec"]["volumes"]}
    assert "kafka-user" not in volumes
    for service in SERVICES:
        user = [
            v
            for v in _one(docs, "Deployment", service)["spec"]["template"]["spec"]["volumes"]
            if v["name"] == "kafka-user"
        ]
        assert user[0]["secret"]["secretName"] == f"labornet-{code}"
    ingress = _one(docs, "Ingress", "console")
    assert ingress["metadata"]["namespace"] == f"labornet-{code}"
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "console"
    assert k8s_errors(code, docs) == []


@needs_kustomize
def test_overlay_check_notices_a_missing_or_miswired_console(
    built: dict[str, list[dict[str, Any]]], k8s_errors: Callable[..., list[str]]
) -> None:
    code = "330000"

    def broken(change: Callable[[list[dict[str, Any]]], None]) -> list[str]:
        docs = copy.deepcopy(built[code])
        change(docs)
        return k8s_errors(code, docs)

    def without_console(docs: list[dict[str, Any]]) -> None:
        docs.remove(_one(docs, "Deployment", "console"))

    assert any("expected ['brands', 'console'" in e for e in broken(without_console))

    def other_province(docs: list[dict[str, Any]]) -> None:
        env = _env(_one(docs, "Deployment", "console"))
        env["LABORNET_CONSOLE_PROVINCE"].clear()
        env["LABORNET_CONSOLE_PROVINCE"].update({"name": "LABORNET_CONSOLE_PROVINCE", "value": "510000"})

    assert any("LABORNET_CONSOLE_PROVINCE is '510000', expected 330000" in e for e in broken(other_province))

    def partner_jobs(docs: list[dict[str, Any]]) -> None:
        _env(_one(docs, "Deployment", "console"))["LABORNET_CONSOLE_JOBS_URL"]["value"] = (
            "http://jobs.labornet-510000.svc:8000"
        )

    assert any("is not the Service jobs of namespace labornet-330000" in e for e in broken(partner_jobs))

    def literal_secret(docs: list[dict[str, Any]]) -> None:
        variable = _env(_one(docs, "Deployment", "console"))["LABORNET_CONSOLE_SESSION_SECRET"]
        del variable["valueFrom"]
        variable["value"] = "x" * 40

    assert any("should come from Secret labornet-console key session-secret" in e for e in broken(literal_secret))

    def with_kafka_certificate(docs: list[dict[str, Any]]) -> None:
        spec = _one(docs, "Deployment", "console")["spec"]["template"]["spec"]
        spec["volumes"].append({"name": "kafka-user", "secret": {"secretName": f"labornet-{code}"}})

    assert any("reads Secret labornet-330000" in e for e in broken(with_kafka_certificate))

    def other_issuer(docs: list[dict[str, Any]]) -> None:
        _one(docs, "ConfigMap", "labornet-node")["data"]["LABORNET_CONSOLE_OIDC_DISCOVERY_URL"] = (
            "https://id.labornet.example/realms/510000/.well-known/openid-configuration"
        )

    assert any("is not that of the services' issuer" in e for e in broken(other_issuer))

    def no_client_id(docs: list[dict[str, Any]]) -> None:
        del _one(docs, "ConfigMap", "labornet-node")["data"]["LABORNET_CONSOLE_OIDC_CLIENT_ID"]

    errors = broken(no_client_id)
    assert any("reads LABORNET_CONSOLE_OIDC_CLIENT_ID, unset in the ConfigMap" in e for e in errors)

    def exposes_jobs(docs: list[dict[str, Any]]) -> None:
        path = _one(docs, "Ingress", "console")["spec"]["rules"][0]["http"]["paths"][0]
        path["backend"]["service"]["name"] = "jobs"

    assert any("only the console's Service is public" in e for e in broken(exposes_jobs))

    def plain_http(docs: list[dict[str, Any]]) -> None:
        del _one(docs, "Ingress", "console")["spec"]["tls"]

    assert any("has no TLS" in e for e in broken(plain_http))

    def callback_elsewhere(docs: list[dict[str, Any]]) -> None:
        _one(docs, "ConfigMap", "labornet-node")["data"]["LABORNET_CONSOLE_OIDC_REDIRECT_URL"] = (
            "https://console.example/auth/callback"
        )

    assert any("is not https://<Ingress host>/auth/callback" in e for e in broken(callback_elsewhere))

    def dev_sign_in(docs: list[dict[str, Any]]) -> None:
        container = _one(docs, "Deployment", "console")["spec"]["template"]["spec"]["containers"][0]
        container["env"].append({"name": "LABORNET_CONSOLE_DEV_ISSUER_KEY_PATH", "value": "/keys/token.key"})

    assert any("the dev sign-in is for local federations only" in e for e in broken(dev_sign_in))


# docker compose ------------------------------------------------------------------------------------------------


@pytest.fixture
def compose_errors(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], list[str]]]:
    def run(document: dict[str, Any]) -> list[str]:
        path = tmp_path / "compose.yml"
        path.write_text(yaml.safe_dump(document), "utf-8")
        check_compose.errors.clear()
        check_compose.check(path, None)
        return list(check_compose.errors)

    yield run
    check_compose.errors.clear()


def _compose(codes: list[str]) -> dict[str, Any]:
    everyone = members()
    chosen = [p for p in everyone if p.code in codes]
    document: dict[str, Any] = yaml.safe_load(generate.compose(chosen, everyone))
    return document


def test_default_compose_runs_a_console_per_province(compose_errors: Callable[..., list[str]]) -> None:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text("utf-8"))
    consoles = sorted(name for name in document["services"] if name.startswith("console-"))
    assert consoles == ["console-330000", "console-510000"]
    assert compose_errors(document) == []


def test_nine_province_compose_has_one_console_each(compose_errors: Callable[..., list[str]]) -> None:
    document = _compose(CODES)
    services = document["services"]
    assert sorted(name for name in services if name.startswith("console-")) == sorted(f"console-{c}" for c in CODES)
    for index, code in enumerate(CODES):
        console = services[f"console-{code}"]
        assert console["build"]["dockerfile"] == "services/console/Dockerfile"
        assert console["image"] == f"labornet-console:{service_version('console')}"
        assert console["environment"]["LABORNET_CONSOLE_PROVINCE"] == code
        assert console["environment"]["LABORNET_CONSOLE_COOKIE_SECURE"] == "false"
        assert console["environment"]["LABORNET_CONSOLE_DEV_ISSUER_KEY_PATH"] == "/keys/token.key"
        assert f"keys-{code}:/keys:ro" in console["volumes"]
        assert console["environment"]["LABORNET_CONSOLE_RIGHTS_URL"] == f"http://rights-{code}:8000"
        assert console["depends_on"] == {f"{s}-{code}": {"condition": "service_healthy"} for s in SERVICES}
        # the port `labornet up` gives the province's console: its jobs port + 4
        assert console["ports"] == [f"127.0.0.1:{8004 + 10 * index}:8000"]
    assert compose_errors(document) == []


def test_compose_check_notices_a_missing_or_miswired_console(compose_errors: Callable[..., list[str]]) -> None:
    document = _compose(["510000", "330000"])

    def broken(change: Callable[[dict[str, Any]], None]) -> list[str]:
        copied = copy.deepcopy(document)
        change(copied["services"])
        return compose_errors(copied)

    def without_console(services: dict[str, Any]) -> None:
        del services["console-330000"]

    assert "province 330000: has no officer console (console-330000)" in broken(without_console)

    def partner_services(services: dict[str, Any]) -> None:
        services["console-330000"]["environment"]["LABORNET_CONSOLE_INSURANCE_URL"] = "http://insurance-510000:8000"

    assert any("is not the insurance service of 330000" in e for e in broken(partner_services))

    def starts_early(services: dict[str, Any]) -> None:
        del services["console-330000"]["depends_on"]["rights-330000"]

    assert any("should wait for rights-330000 to be healthy" in e for e in broken(starts_early))

    def partner_key(services: dict[str, Any]) -> None:
        services["console-330000"]["volumes"] = ["keys-510000:/keys:ro"]

    assert any("is not in the keys volume of 330000" in e for e in broken(partner_key))

    def secure_cookie(services: dict[str, Any]) -> None:
        services["console-330000"]["environment"]["LABORNET_CONSOLE_COOKIE_SECURE"] = "true"

    assert any("must be false: this stack serves plain HTTP" in e for e in broken(secure_cookie))

    def service_setting(services: dict[str, Any]) -> None:
        services["console-330000"]["environment"]["LABORNET_PROVINCE"] = "330000"

    assert any("sets LABORNET_PROVINCE, which is not a setting of the console" in e for e in broken(service_setting))

    def not_scraped(services: dict[str, Any]) -> None:
        del services["console-510000"]

    assert any("('510000', 'console')" in e for e in broken(not_scraped))

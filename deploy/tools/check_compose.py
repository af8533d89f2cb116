"""Checks of docker-compose.yml beyond the Compose Specification schema (check-jsonschema does that part).

    check_compose.py docker-compose.yml --targets-out DIR/labornet.json

Without a Docker engine `docker compose config` is not available, so this reads the file with YAML merge keys
resolved and checks what would otherwise only fail at `docker compose up`: every depends_on, volume and config
exists and fits its condition (service_healthy needs a healthcheck, service_completed_successfully a one-shot),
bind-mounted files exist, host ports are unique, third-party images are pinned, each province runs all four
services with its own database, keys volume and a Prometheus target, every LABORNET_* variable of a service is a
setting the code reads, and the topic list is exactly the federation's topics. Each province also runs one officer
console (`console-<code>`, check_console): built from services/console/Dockerfile, only console settings, its own
province, its node's four services as URLs and as healthy dependencies, dev sign-in with its own province's dev
issuer key, plain-HTTP cookies, a healthcheck and a Prometheus target. Writes the Prometheus file_sd
targets to --targets-out so that `promtool check config` can check them with deploy/prometheus/prometheus.yml.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RETENTION_MS, ROOT, SERVICES, all_topics, members

from labornet.console.config import ConsoleSettings
from labornet.shared.settings import Settings

KNOWN_SETTINGS = {f"LABORNET_{name.upper()}" for name in Settings.model_fields}
CONSOLE = "console"
CONSOLE_SETTINGS = {f"LABORNET_CONSOLE_{name.upper()}" for name in ConsoleSettings.model_fields}
SERVICE_NAME = re.compile(r"^(?P<service>[a-z]+)-(?P<code>\d{6})$")

errors: list[str] = []


def fail(where: str, message: str) -> None:
    errors.append(f"{where}: {message}")


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def check(path: Path, targets_out: Path | None) -> None:
    compose = yaml.safe_load(path.read_text("utf-8"))
    services: dict[str, Any] = compose["services"]
    volumes = set(compose.get("volumes") or {})
    configs = compose.get("configs") or {}
    ports: dict[str, str] = {}

    for name, service in services.items():
        where = f"service {name}"
        for target, condition in (service.get("depends_on") or {}).items():
            if target not in services:
                fail(where, f"depends on unknown service {target}")
                continue
            wanted = condition.get("condition", "service_started")
            if wanted == "service_healthy" and "healthcheck" not in services[target]:
                fail(where, f"waits for {target} to be healthy, but {target} has no healthcheck")
            if wanted == "service_completed_successfully" and services[target].get("restart", "no") != "no":
                fail(where, f"waits for {target} to complete, but {target} restarts ({services[target]['restart']})")
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if source.startswith((".", "/")):
                if not (ROOT / source).exists():
                    fail(where, f"bind-mounts {source}, which does not exist")
            elif source not in volumes:
                fail(where, f"uses volume {source}, which is not declared")
        for config in service.get("configs", []):
            source = config["source"] if isinstance(config, dict) else config
            if source not in configs:
                fail(where, f"uses config {source}, which is not declared")
        for port in service.get("ports", []):
            host = str(port).rsplit(":", 1)[0]
            if host in ports:
                fail(where, f"host port {host} is also published by {ports[host]}")
            ports[host] = name
        image = service.get("image", "")
        if "build" not in service and (":" not in image or image.endswith(":latest")):
            fail(where, f"image {image!r} is not pinned to a version")

    provinces: dict[str, set[str]] = {}
    for name, service in services.items():
        match = SERVICE_NAME.match(name)
        if not match or match["service"] not in SERVICES:
            continue
        code, svc = match["code"], match["service"]
        provinces.setdefault(code, set()).add(svc)
        where = f"service {name}"
        env = _environment(service)
        for key in sorted(k for k in env if k.startswith("LABORNET_") and k not in KNOWN_SETTINGS):
            fail(where, f"sets {key}, which is not a setting of the services")
        if env.get("LABORNET_PROVINCE") != code:
            fail(where, f"LABORNET_PROVINCE={env.get('LABORNET_PROVINCE')}, expected {code}")
        database = f"labornet_{code}_{svc}"
        if not env.get("LABORNET_DATABASE_URL", "").endswith(f"/{database}"):
            fail(where, f"should use its own database {database}")
        if f"{database}" not in _environment(services["postgres"]).get("LABORNET_DATABASES", "").split():
            fail(where, f"database {database} is not created by the postgres service")
        if f"keys-{code}:/keys:ro" not in service.get("volumes", []):
            fail(where, f"should mount its province's keys read-only (keys-{code}:/keys:ro)")
        if service.get("build", {}).get("dockerfile") != f"services/{svc}/Dockerfile":
            fail(where, f"should be built from services/{svc}/Dockerfile")
        if not any(f"labornet migrate {svc}" in str(part) for part in service.get("command", [])):
            fail(where, "should run its migrations before serving")
    for code, present in provinces.items():
        if present != set(SERVICES):
            fail(f"province {code}", f"runs {sorted(present)}, expected all of {sorted(SERVICES)}")
        if code not in _environment(services["keys"]).get("LABORNET_KEY_PROVINCES", "").split():
            fail(f"province {code}", "gets no keys from the keys service")

    consoles = {}
    for name in services:
        match = SERVICE_NAME.match(name)
        if match and match["service"] == CONSOLE:
            consoles[match["code"]] = name
            check_console(match["code"], name, services, provinces)
    for code in sorted(set(provinces) - set(consoles)):
        fail(f"province {code}", f"has no officer console ({CONSOLE}-{code})")

    targets = json.loads(configs["prometheus-targets"]["content"])
    scraped = {(t["labels"]["province"], t["labels"]["service"]) for t in targets}
    expected = {(code, s) for code in provinces for s in SERVICES} | {(code, CONSOLE) for code in consoles}
    if scraped != expected:
        fail(
            "config prometheus-targets",
            f"targets differ from the province services and consoles: {sorted(scraped ^ expected)}",
        )
    if targets_out:
        targets_out.write_text(json.dumps(targets), "utf-8")

    listed = [line.split() for line in configs["kafka-topics"]["content"].splitlines() if line.strip()]
    wanted = [[t.name, str(RETENTION_MS[t.kind])] for t in all_topics([p.code for p in members()])]
    if sorted(listed) != sorted(wanted):
        fail("config kafka-topics", "is not the list of every member's events/inbox/deadletter topics")
    federation = json.loads(configs["federation"]["content"])
    if sorted(federation["provinces"]) != sorted(provinces):
        fail("config federation", "does not list exactly the provinces of this file")


def check_console(code: str, name: str, services: dict[str, Any], provinces: dict[str, set[str]]) -> None:
    """The officer console of province ``code``: what it is built from and how it reaches its node and its users."""
    where = f"service {name}"
    service = services[name]
    if code not in provinces:
        fail(where, f"runs for province {code}, whose services are not in this file")
    if service.get("build", {}).get("dockerfile") != "services/console/Dockerfile":
        fail(where, "should be built from services/console/Dockerfile")
    env = _environment(service)
    for key in sorted(k for k in env if k.startswith("LABORNET_") and k not in CONSOLE_SETTINGS):
        fail(where, f"sets {key}, which is not a setting of the console (LABORNET_CONSOLE_*)")
    if env.get("LABORNET_CONSOLE_PROVINCE") != code:
        fail(where, f"LABORNET_CONSOLE_PROVINCE={env.get('LABORNET_CONSOLE_PROVINCE')}, expected {code}")
    waits = service.get("depends_on") or {}
    for svc in SERVICES:
        variable = f"LABORNET_CONSOLE_{svc.upper()}_URL"
        url = urlsplit(env.get(variable, ""))
        target = f"{svc}-{code}"
        command = " ".join(str(part) for part in services.get(target, {}).get("command", []))
        if url.scheme != "http" or url.hostname != target or f"--port {url.port}" not in command:
            fail(where, f"{variable}={env.get(variable)!r} is not the {svc} service of {code} ({target})")
        if waits.get(target, {}).get("condition") != "service_healthy":
            fail(where, f"should wait for {target} to be healthy")
    # dev sign-in: tokens minted with the province's own dev issuer key, which its services verify
    key = env.get("LABORNET_CONSOLE_DEV_ISSUER_KEY_PATH", "")
    mounts = {m.split(":")[1].rstrip("/"): m.split(":")[0] for m in service.get("volumes", []) if ":" in m}
    directory = key.rsplit("/", 1)[0] if "/" in key else ""
    if not key or mounts.get(directory) != f"keys-{code}":
        fail(where, f"dev sign-in key {key!r} is not in the keys volume of {code} (keys-{code})")
    if env.get("LABORNET_CONSOLE_OIDC_DISCOVERY_URL"):
        fail(where, "sets LABORNET_CONSOLE_OIDC_DISCOVERY_URL, which turns the dev sign-in off")
    if env.get("LABORNET_CONSOLE_COOKIE_SECURE", "true").lower() not in ("false", "0", "no", "off"):
        fail(where, "LABORNET_CONSOLE_COOKIE_SECURE must be false: this stack serves plain HTTP")
    if "healthcheck" not in service:
        fail(where, "has no healthcheck")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("compose", type=Path)
    parser.add_argument("--targets-out", type=Path)
    args = parser.parse_args(argv)
    check(args.compose, args.targets_out)
    for error in errors:
        print(f"ERROR {error}", file=sys.stderr)
    if errors:
        return 1
    print(f"{args.compose}: services, volumes, configs, ports and province wiring consistent")
    return 0


if __name__ == "__main__":
    sys.exit(main())

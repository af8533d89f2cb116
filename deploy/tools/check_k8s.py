"""Checks of the built Kubernetes manifests that a schema alone cannot make.

    check_k8s.py --kafka BUILT_KAFKA.yaml --overlay CODE=BUILT_OVERLAY.yaml ... --rules-out RULES.yml

Input: the output of `kubectl kustomize` for deploy/k8s/kafka and for each province overlay (core resources are
validated separately by `kubernetes-validate --strict`). This tool

1. validates every custom resource against deploy/k8s/schemas/ (and fails on any kind it has no schema for);
2. checks the province overlays: everything in namespace labornet-<code>; the node ConfigMap names the province
   and only sets LABORNET_* variables the services or the console know (labornet.shared.settings.Settings,
   labornet.console.config.ConsoleSettings); the four services and the officer console run; probes /livez and
   /readyz; non-root, read-only root filesystem, no privilege escalation; ServiceMonitors and Services select
   what exists; every Secret and ConfigMap a pod needs is either built or one of the documented out-of-band ones,
   and every ConfigMap key it reads is set; the Kafka client certificate is the one of the province's own
   KafkaUser; the console (check_console) is this province's, reaches the four Services of its namespace, signs
   in at the province's IdP with its secrets from Secret labornet-console, holds no Kafka or node key, and is
   exposed by one Ingress with TLS whose host is its registered callback;
3. checks the bus: one KafkaTopic for every topic of every member (labornet.shared.topics), one KafkaUser per
   member, and evaluates each user's ACLs like Kafka's simple authorizer against every topic and consumer group:
   a province may write only its own topics and its partners' inboxes, and read only its own topics and its
   partners' broadcast streams (docs/operations/deploy.md#kafka-acls);
4. writes the PrometheusRule's groups to --rules-out for `promtool check rules`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEPLOY, SERVICES, all_topics, members

from labornet.console.config import ConsoleSettings
from labornet.shared.settings import Settings
from labornet.shared.topics import events_topic, inbox_topic

SCHEMAS = DEPLOY / "k8s" / "schemas"
CORE_GROUPS = {"v1", "apps/v1", "policy/v1", "batch/v1", "networking.k8s.io/v1", "rbac.authorization.k8s.io/v1"}
KNOWN_SETTINGS = {f"LABORNET_{name.upper()}" for name in Settings.model_fields}
CONSOLE = "console"
CONSOLE_SETTINGS = {f"LABORNET_CONSOLE_{name.upper()}" for name in ConsoleSettings.model_fields}
# created out of band in every province namespace (docs/operations/deploy.md#secrets-and-keys)
CONSOLE_SECRET = "labornet-console"
EXTERNAL_SECRETS = {f"labornet-{s}-db" for s in SERVICES} | {
    "labornet-node-key",
    "labornet-cluster-ca-cert",
    CONSOLE_SECRET,
}
EXTERNAL_TLS_SECRETS = {"labornet-console-tls"}  # the console's certificate, named by its Ingress
EXTERNAL_CONFIGMAPS = {"labornet-trust-list"}
CALLBACK_PATH = "/auth/callback"  # the console's OIDC redirect path (services/console README)

errors: list[str] = []


def fail(where: str, message: str) -> None:
    errors.append(f"{where}: {message}")


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text("utf-8")) if doc]


def schema_for(doc: dict[str, Any]) -> dict[str, Any] | None:
    group = doc["apiVersion"].replace("/", "_")
    path = SCHEMAS / f"{group}_{doc['kind'].lower()}.json"
    return json.loads(path.read_text("utf-8")) if path.exists() else None


def validate_custom_resources(where: str, docs: list[dict[str, Any]]) -> int:
    count = 0
    for doc in docs:
        if doc["apiVersion"] in CORE_GROUPS:
            continue
        name = f"{where} {doc['kind']}/{doc.get('metadata', {}).get('name')}"
        schema = schema_for(doc)
        if schema is None:
            fail(name, f"no schema for {doc['apiVersion']} {doc['kind']} in {SCHEMAS.relative_to(DEPLOY.parent)}")
            continue
        validator = jsonschema.Draft202012Validator(schema)
        for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
            path = ".".join(str(p) for p in error.path) or "(root)"
            fail(name, f"{path}: {error.message}")
        count += 1
    return count


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _pod_refs(spec: dict[str, Any]) -> tuple[set[str], set[str]]:
    secrets: set[str] = set()
    configmaps: set[str] = set()
    for volume in spec.get("volumes", []):
        if "secret" in volume:
            secrets.add(volume["secret"]["secretName"])
        if "configMap" in volume:
            configmaps.add(volume["configMap"]["name"])
    for container in spec.get("initContainers", []) + spec.get("containers", []):
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                configmaps.add(source["configMapRef"]["name"])
            if "secretRef" in source:
                secrets.add(source["secretRef"]["name"])
        for variable in container.get("env", []):
            ref = variable.get("valueFrom", {})
            if "secretKeyRef" in ref:
                secrets.add(ref["secretKeyRef"]["name"])
            if "configMapKeyRef" in ref:
                configmaps.add(ref["configMapKeyRef"]["name"])
    return secrets, configmaps


def check_overlay(code: str, docs: list[dict[str, Any]], kafka_users: set[str]) -> None:
    where = f"overlay {code}"
    namespace = f"labornet-{code}"
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
        meta = doc["metadata"]
        if doc["kind"] == "Namespace":
            if meta["name"] != namespace:
                fail(where, f"Namespace {meta['name']}, expected {namespace}")
        elif meta.get("namespace") != namespace:
            fail(where, f"{doc['kind']}/{meta['name']} is in namespace {meta.get('namespace')}, not {namespace}")
        if meta.get("labels", {}).get("labornet.example/province") != code:
            fail(where, f"{doc['kind']}/{meta['name']} lacks label labornet.example/province={code}")

    configmaps = {doc["metadata"]["name"]: doc for doc in by_kind.get("ConfigMap", [])}
    node = [doc for name, doc in configmaps.items() if name.startswith("labornet-node")]
    if len(node) != 1:
        fail(where, "expected one labornet-node ConfigMap")
    else:
        data = node[0].get("data", {})
        if data.get("LABORNET_PROVINCE") != code:
            fail(where, f"labornet-node sets LABORNET_PROVINCE={data.get('LABORNET_PROVINCE')}, expected {code}")
        for key in sorted(set(data) - KNOWN_SETTINGS - CONSOLE_SETTINGS):
            fail(where, f"labornet-node sets {key}, which neither a service nor the console reads")

    deployments = {doc["metadata"]["name"]: doc for doc in by_kind.get("Deployment", [])}
    if set(deployments) != {*SERVICES, CONSOLE}:
        fail(where, f"Deployments {sorted(deployments)}, expected {sorted([*SERVICES, CONSOLE])}")
    for name, deployment in deployments.items():
        spec = deployment["spec"]["template"]["spec"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        if not _matches(deployment["spec"]["selector"]["matchLabels"], labels):
            fail(where, f"Deployment/{name}: selector does not match its pod template")
        if not spec.get("securityContext", {}).get("runAsNonRoot"):
            fail(where, f"Deployment/{name}: pod securityContext.runAsNonRoot is not true")
        for container in spec.get("initContainers", []) + spec["containers"]:
            security = container.get("securityContext", {})
            for key, wanted in (("readOnlyRootFilesystem", True), ("allowPrivilegeEscalation", False)):
                if security.get(key) is not wanted:
                    fail(where, f"Deployment/{name} container {container['name']}: {key} should be {wanted}")
            if "ALL" not in security.get("capabilities", {}).get("drop", []):
                fail(where, f"Deployment/{name} container {container['name']}: capabilities not dropped")
            if not container.get("resources", {}).get("requests") or not container["resources"].get("limits"):
                fail(where, f"Deployment/{name} container {container['name']}: no resource requests/limits")
            known = CONSOLE_SETTINGS if name == CONSOLE else KNOWN_SETTINGS
            for variable in container.get("env", []):
                if variable["name"].startswith("LABORNET_") and variable["name"] not in known:
                    what = "a ConsoleSettings" if name == CONSOLE else "a Settings"
                    fail(where, f"Deployment/{name}: env {variable['name']} is not {what} field")
                ref = variable.get("valueFrom", {}).get("configMapKeyRef")
                data = configmaps.get(ref["name"], {}).get("data", {}) if ref else {}
                if ref and ref["name"] in configmaps and not ref.get("optional") and ref["key"] not in data:
                    fail(where, f"Deployment/{name}: env {variable['name']} reads {ref['key']}, unset in the ConfigMap")
        main = spec["containers"][0]
        probes = {
            kind: main.get(kind, {}).get("httpGet", {}).get("path") for kind in ("livenessProbe", "readinessProbe")
        }
        if probes != {"livenessProbe": "/livez", "readinessProbe": "/readyz"}:
            fail(where, f"Deployment/{name}: probes {probes}, expected /livez and /readyz")
        secrets, needed_configmaps = _pod_refs(spec)
        for configmap in sorted(needed_configmaps - set(configmaps) - EXTERNAL_CONFIGMAPS):
            fail(where, f"Deployment/{name}: ConfigMap {configmap} does not exist")
        if name == CONSOLE:
            # the console keeps no keys: its Secret is its own, it never reaches Kafka
            for secret in sorted(secrets - {CONSOLE_SECRET}):
                fail(where, f"Deployment/console: reads Secret {secret}; the console needs only {CONSOLE_SECRET}")
            continue
        if [c["command"][:3] for c in spec.get("initContainers", [])] != [["labornet", "migrate", name]]:
            fail(where, f"Deployment/{name}: expected one init container running `labornet migrate {name}`")
        user_secrets = {v["secret"]["secretName"] for v in spec["volumes"] if v["name"] == "kafka-user"}
        if user_secrets != {f"labornet-{code}"}:
            fail(where, f"Deployment/{name}: Kafka client certificate from {user_secrets}, expected labornet-{code}")
        if f"labornet-{code}" not in kafka_users:
            fail(where, f"no KafkaUser labornet-{code} in deploy/k8s/kafka")
        for secret in sorted(secrets - EXTERNAL_SECRETS - user_secrets):
            fail(where, f"Deployment/{name}: Secret {secret} is neither built nor a documented out-of-band secret")

    services = {doc["metadata"]["name"]: doc for doc in by_kind.get("Service", [])}
    for name, service in services.items():
        targets = [
            d
            for d in deployments.values()
            if _matches(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
        ]
        if len(targets) != 1:
            fail(where, f"Service/{name} selects {len(targets)} Deployments, expected 1")
            continue
        ports = {p["name"] for c in targets[0]["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            if port["targetPort"] not in ports:
                fail(where, f"Service/{name}: targetPort {port['targetPort']} is not a container port")
    for monitor in by_kind.get("ServiceMonitor", []):
        name = monitor["metadata"]["name"]
        selected = [
            s
            for s in services.values()
            if _matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        if len(selected) != 1:
            fail(where, f"ServiceMonitor/{name} selects {len(selected)} Services, expected 1")
            continue
        port_names = {p["name"] for p in selected[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            if endpoint.get("port") not in port_names:
                fail(where, f"ServiceMonitor/{name}: port {endpoint.get('port')} is not a port of the Service")
            if not endpoint.get("honorLabels"):
                fail(where, f"ServiceMonitor/{name}: honorLabels must be true (the metrics carry `service`)")
        job_label = monitor["spec"].get("jobLabel")
        if selected[0]["metadata"]["labels"].get(job_label) != "labornet":
            fail(where, f"ServiceMonitor/{name}: jobLabel does not yield job=labornet (the alert rules expect it)")
    if len(by_kind.get("PrometheusRule", [])) != 1:
        fail(where, "expected one PrometheusRule")
    if CONSOLE in deployments and len(node) == 1:
        check_console(where, code, deployments, services, node[0].get("data", {}), by_kind.get("Ingress", []))


def _console_env(container: dict[str, Any], node_data: dict[str, str]) -> dict[str, str | tuple[str, str]]:
    """The console container's variables: a text (a literal with $(VAR) expanded, or a key of the node ConfigMap)
    or (secret, key) for one read from a Secret."""
    env: dict[str, str | tuple[str, str]] = {}
    for variable in container.get("env", []):
        source = variable.get("valueFrom", {})
        if "secretKeyRef" in source:
            env[variable["name"]] = (source["secretKeyRef"]["name"], source["secretKeyRef"]["key"])
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            if ref["name"].startswith("labornet-node") and ref["key"] in node_data:
                env[variable["name"]] = node_data[ref["key"]]
        else:
            value = str(variable.get("value", ""))
            for name, known in env.items():
                if isinstance(known, str):
                    value = value.replace(f"$({name})", known)
            env[variable["name"]] = value
    return env


def check_console(
    where: str,
    code: str,
    deployments: dict[str, dict[str, Any]],
    services: dict[str, dict[str, Any]],
    node_data: dict[str, str],
    ingresses: list[dict[str, Any]],
) -> None:
    """The officer console of the province: its settings, its way to the four services and to the officers."""
    who = f"{where} Deployment/console"
    container = deployments[CONSOLE]["spec"]["template"]["spec"]["containers"][0]
    env = _console_env(container, node_data)
    if env.get("LABORNET_CONSOLE_PROVINCE") != code:
        fail(who, f"LABORNET_CONSOLE_PROVINCE is {env.get('LABORNET_CONSOLE_PROVINCE')!r}, expected {code}")
    namespace = f"labornet-{code}"
    for service in SERVICES:
        variable = f"LABORNET_CONSOLE_{service.upper()}_URL"
        url = urlsplit(str(env.get(variable, "")))
        host = url.hostname or ""
        if host not in (service, f"{service}.{namespace}", f"{service}.{namespace}.svc"):
            fail(who, f"{variable}={env.get(variable)!r} is not the Service {service} of namespace {namespace}")
            continue
        target = services.get(service)
        ports = {p["port"] for p in target["spec"]["ports"]} if target else set()
        if url.scheme != "http" or url.port not in ports:
            fail(who, f"{variable}={env.get(variable)!r}: Service {service} listens on http port(s) {sorted(ports)}")
        elif not _matches(target["spec"]["selector"], deployments[service]["spec"]["template"]["metadata"]["labels"]):
            fail(who, f"{variable}: Service {service} does not select Deployment {service}")
    if "LABORNET_CONSOLE_DEV_ISSUER_KEY_PATH" in env:
        fail(who, "sets LABORNET_CONSOLE_DEV_ISSUER_KEY_PATH: the dev sign-in is for local federations only")
    if str(env.get("LABORNET_CONSOLE_COOKIE_SECURE", "true")).lower() in ("false", "0", "no", "off"):
        fail(who, "LABORNET_CONSOLE_COOKIE_SECURE is off: behind the Ingress the console is reached over HTTPS")
    issuer = node_data.get("LABORNET_AUTH_ISSUER", "")
    discovery = env.get("LABORNET_CONSOLE_OIDC_DISCOVERY_URL")
    if not issuer or discovery != f"{issuer.rstrip('/')}/.well-known/openid-configuration":
        fail(who, f"OIDC discovery URL {discovery!r} is not that of the services' issuer {issuer!r}")
    if not isinstance(env.get("LABORNET_CONSOLE_OIDC_CLIENT_ID"), str) or not env["LABORNET_CONSOLE_OIDC_CLIENT_ID"]:
        fail(who, "no LABORNET_CONSOLE_OIDC_CLIENT_ID")
    for variable, key in (
        ("LABORNET_CONSOLE_SESSION_SECRET", "session-secret"),
        ("LABORNET_CONSOLE_OIDC_CLIENT_SECRET", "oidc-client-secret"),
    ):
        if env.get(variable) != (CONSOLE_SECRET, key):
            fail(who, f"{variable} should come from Secret {CONSOLE_SECRET} key {key}, not {env.get(variable)!r}")

    if len(ingresses) != 1:
        fail(where, f"{len(ingresses)} Ingresses, expected one for the console")
        return
    ingress = ingresses[0]
    name = f"{where} Ingress/{ingress['metadata']['name']}"
    console_ports = {p.get("name") for p in services.get(CONSOLE, {}).get("spec", {}).get("ports", [])} | {
        p.get("port") for p in services.get(CONSOLE, {}).get("spec", {}).get("ports", [])
    }
    hosts: set[str] = set()
    for rule in ingress["spec"].get("rules", []):
        if not rule.get("host"):
            fail(name, "a rule without host")
            continue
        hosts.add(rule["host"])
        for path in rule.get("http", {}).get("paths", []):
            backend = path["backend"].get("service", {})
            port = backend.get("port", {}).get("name", backend.get("port", {}).get("number"))
            if backend.get("name") != CONSOLE or port not in console_ports:
                fail(name, f"{rule['host']}{path.get('path')} goes to {backend}; only the console's Service is public")
    covered = {host for tls in ingress["spec"].get("tls", []) for host in tls.get("hosts", [])}
    for host in sorted(hosts - covered):
        fail(name, f"host {host} has no TLS")
    for tls in ingress["spec"].get("tls", []):
        if tls.get("secretName") not in EXTERNAL_TLS_SECRETS:
            fail(name, f"TLS Secret {tls.get('secretName')} is not the documented {sorted(EXTERNAL_TLS_SECRETS)}")
    redirect = env.get("LABORNET_CONSOLE_OIDC_REDIRECT_URL")
    if redirect is not None and redirect not in {f"https://{host}{CALLBACK_PATH}" for host in hosts}:
        fail(who, f"OIDC redirect URL {redirect!r} is not https://<Ingress host>{CALLBACK_PATH} ({sorted(hosts)})")


# The bus ---------------------------------------------------------------------------------------------------------


def allowed(acls: list[dict[str, Any]], kind: str, name: str, operation: str) -> bool:
    """Kafka's simple authorizer for one principal with allow rules only (Read/Write imply Describe)."""
    for rule in acls:
        resource = rule["resource"]
        if resource["type"] != kind or rule.get("type", "allow") != "allow":
            continue
        pattern = resource.get("patternType", "literal")
        hit = name.startswith(resource["name"]) if pattern == "prefix" else name == resource["name"]
        if not hit:
            continue
        operations = set(rule["operations"])
        if operation in operations or "All" in operations:
            return True
        if operation == "Describe" and operations & {"Read", "Write", "Delete", "Alter"}:
            return True
    return False


def check_kafka(docs: list[dict[str, Any]]) -> set[str]:
    where = "deploy/k8s/kafka"
    codes = [p.code for p in members()]
    topics = all_topics(codes)
    built = {doc["spec"].get("topicName", doc["metadata"]["name"]) for doc in docs if doc["kind"] == "KafkaTopic"}
    expected = {t.name for t in topics}
    for name in sorted(expected - built):
        fail(where, f"no KafkaTopic for {name}")
    for name in sorted(built - expected):
        fail(where, f"KafkaTopic {name} is not a topic of the federation")
    users = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "KafkaUser"}
    if set(users) != {f"labornet-{c}" for c in codes}:
        fail(where, f"KafkaUsers {sorted(users)}, expected one labornet-<code> per member")
    kafkas = [doc for doc in docs if doc["kind"] == "Kafka"]
    if len(kafkas) != 1 or kafkas[0]["spec"]["kafka"].get("authorization", {}).get("type") != "simple":
        fail(where, "expected one Kafka with simple authorization (the KafkaUser ACLs would not be enforced)")
    pools = [doc for doc in docs if doc["kind"] == "KafkaNodePool"]
    roles = {role for pool in pools for role in pool["spec"]["roles"]}
    if roles != {"controller", "broker"}:
        fail(where, f"node pools provide roles {sorted(roles)}; KRaft needs controller and broker")

    for code in codes:
        user = users.get(f"labornet-{code}")
        if user is None:
            continue
        acls = user["spec"]["authorization"]["acls"]
        who = f"{where} KafkaUser labornet-{code}"
        for topic in topics:
            own = topic.province == code
            may_write = own or topic.kind == "inbox"
            may_read = own or topic.kind == "events"
            for operation, wanted in (("Write", may_write), ("Read", may_read)):
                if allowed(acls, "topic", topic.name, operation) != wanted:
                    outcome = "is denied" if wanted else "is allowed"
                    rule = "needs" if wanted else "forbids"
                    fail(
                        who,
                        f"{outcome} {operation} on {topic.name} ({topic.kind} of {topic.province}); "
                        f"the policy {rule} it",
                    )
        for partner in codes:
            for service in SERVICES:
                group = f"labornet.{partner}.{service}.consumer"
                if allowed(acls, "group", group, "Read") != (partner == code):
                    fail(who, f"consumer group {group}: Read {'denied' if partner == code else 'allowed'}")
        # what the services do, in the words of the code: read partners' events, write partners' inboxes
        partner = next(c for c in codes if c != code)
        for service in SERVICES:
            if not allowed(acls, "topic", events_topic(partner, service), "Read"):
                fail(who, f"cannot read {events_topic(partner, service)}")
            if not allowed(acls, "topic", inbox_topic(partner, service), "Write"):
                fail(who, f"cannot write {inbox_topic(partner, service)}")
        if any(rule["resource"]["type"] == "cluster" for rule in acls):
            fail(who, "has cluster-level ACLs (not needed: Write on a topic covers the idempotent producer)")
    return set(users)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kafka", type=Path, required=True, help="kubectl kustomize deploy/k8s/kafka")
    parser.add_argument("--overlay", action="append", default=[], help="CODE=file of kubectl kustomize output")
    parser.add_argument("--rules-out", type=Path, help="write the PrometheusRule groups here (promtool)")
    args = parser.parse_args(argv)

    codes = [p.code for p in members()]
    given = dict(item.split("=", 1) for item in args.overlay)
    if sorted(given) != sorted(codes):
        fail("overlays", f"got {sorted(given)}, expected every member {sorted(codes)}")
    kafka_docs = load(args.kafka)
    custom = validate_custom_resources("deploy/k8s/kafka", kafka_docs)
    users = check_kafka(kafka_docs)
    rules: list[Any] = []
    for code, path in sorted(given.items()):
        docs = load(Path(path))
        custom += validate_custom_resources(f"overlay {code}", docs)
        check_overlay(code, docs, users)
        rules.extend(doc["spec"] for doc in docs if doc["kind"] == "PrometheusRule")
    if args.rules_out and rules:
        if any(r != rules[0] for r in rules):
            fail("overlays", "the PrometheusRules of the overlays differ")
        args.rules_out.write_text(yaml.safe_dump(rules[0], sort_keys=False), "utf-8")
    for error in errors:
        print(f"ERROR {error}", file=sys.stderr)
    if errors:
        return 1
    print(f"{custom} custom resources match their schemas; {len(given)} overlays and the bus pass the policy checks")
    return 0


if __name__ == "__main__":
    sys.exit(main())

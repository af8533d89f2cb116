"""Generate the deployment files that follow from the province registry and the topic names.

    .venv/bin/python deploy/tools/generate.py            # rewrite every generated file
    .venv/bin/python deploy/tools/generate.py --check    # fail if any is missing or out of date (validate-deploy)
    .venv/bin/python deploy/tools/generate.py --compose-provinces all --compose-output docker-compose.nine.yml

Generated: docker-compose.yml (provinces 510000 and 330000 by default: four services and an officer console
each), the kustomize bases of the four services, the node base (shared ConfigMap, federation file), one overlay per
member (the four services, the officer console and its Ingress), the Strimzi KafkaTopics and KafkaUsers, the
PrometheusRule (a copy of deploy/prometheus/rules/labornet.rules.yml) and the Grafana dashboards.
Hand-written: deploy/k8s/base/console/**, deploy/k8s/kafka/kafka.yaml, deploy/prometheus/**,
deploy/grafana/provisioning/**, deploy/compose/**.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    DEPLOY,
    GENERATED,
    PARTITIONS,
    RETENTION_MS,
    ROOT,
    SERVICES,
    Literal,
    all_topics,
    dump_yaml,
    members,
    service_version,
)
from dashboards import DASHBOARDS

from labornet.shared.federation import CONSOLE_OFFSET
from labornet.shared.provinces import Province

DEFAULT_COMPOSE_PROVINCES = ("510000", "330000")
KAFKA_IMAGE = "apache/kafka:4.1.0"
POSTGRES_IMAGE = "postgres:17.6-bookworm"
PROMETHEUS_IMAGE = "prom/prometheus:v3.5.0"
GRAFANA_IMAGE = "grafana/grafana:12.1.1"
KAFKA_CLUSTER = "labornet"
KAFKA_NAMESPACE = "labornet-kafka"
KAFKA_BOOTSTRAP = f"{KAFKA_CLUSTER}-kafka-bootstrap.{KAFKA_NAMESPACE}.svc:9093"
IMAGE_REGISTRY = "registry.labornet.example/labornet"
PROVINCE_LABEL = "labornet.example/province"
HTTP_PORT = 8000
# The officer console (services/console, ADR 12): the fifth deployable of a node; its base deploy/k8s/base/console
# is written by hand.
CONSOLE = "console"
# What the operator creates in each province namespace (docs/operations/deploy.md#secrets-and-keys): the console's
# session key and OIDC client secret, and the certificate of its public host.
CONSOLE_SECRET = "labornet-console"
CONSOLE_TLS_SECRET = "labornet-console-tls"
# The console's client at the province's identity provider (one realm per province, as the services' issuer).
CONSOLE_OIDC_CLIENT_ID = "labornet-console"
# /readyz answers 503 until the database and the consumers are ready; urlopen raises on it
READY_CHECK = f"import urllib.request as r; r.urlopen('http://127.0.0.1:{HTTP_PORT}/readyz', timeout=4)"
# a small heap for the probe's JVM: the container's KAFKA_HEAP_OPTS is the broker's
KAFKA_HEALTH_CHECK = (
    "KAFKA_HEAP_OPTS=-Xmx64m /opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server 127.0.0.1:9092"
    " > /dev/null 2>&1"
)

# Resources per service (requests; memory limit). jobs holds the federation's vacancy replica and the search.
RESOURCES = {
    "jobs": ("200m", "256Mi", "768Mi"),
    "insurance": ("100m", "192Mi", "512Mi"),
    "brands": ("100m", "192Mi", "512Mi"),
    "rights": ("100m", "192Mi", "512Mi"),
}


def kafka_user(code: str) -> str:
    return f"labornet-{code}"


def identity_provider(code: str) -> str:
    """The province's identity provider (issuer). A placeholder: set the real realm before deploying."""
    return f"https://id.labornet.example/realms/{code}"


def console_host(code: str) -> str:
    """Where the province's officers reach their console (a placeholder like the IdP's; one *.labornet.example
    certificate covers every province)."""
    return f"console-{code}.labornet.example"


def database(code: str, service: str) -> str:
    return f"labornet_{code}_{service}"


# docker-compose.yml ----------------------------------------------------------------------------------------------


def compose(chosen: list[Province], everyone: list[Province]) -> str:
    codes = [p.code for p in chosen]
    index = {p.code: i for i, p in enumerate(everyone)}
    names = ", ".join(f"{p.code} ({p.en})" for p in chosen)
    versions = {service: service_version(service) for service in (*SERVICES, CONSOLE)}
    federation = {
        "provinces": {
            p.code: {
                "name": p.en,
                "name_zh": p.zh,
                "services": {s: f"http://{s}-{p.code}:{HTTP_PORT}" for s in SERVICES},
            }
            for p in chosen
        },
        "bootstrap_servers": "kafka:9092",
    }
    targets = [
        {"targets": [f"{s}-{p.code}:{HTTP_PORT}"], "labels": {"province": p.code, "service": s}}
        for p in chosen
        for s in (*SERVICES, CONSOLE)
    ]
    targets_json = "[\n" + ",\n".join("  " + json.dumps(t) for t in targets) + "\n]"
    topics = "".join(f"{t.name} {RETENTION_MS[t.kind]}\n" for t in all_topics([p.code for p in everyone]))
    databases = " ".join(database(c, s) for c in codes for s in SERVICES)

    def indent(text: str, spaces: int) -> str:
        return "".join(" " * spaces + line + "\n" for line in text.rstrip("\n").split("\n"))

    images = "".join(
        f"""
x-{s}-image: &{s}-image
  image: labornet-{s}:{versions[s]}
  build:
    context: .
    dockerfile: services/{s}/Dockerfile
"""
        for s in (*SERVICES, CONSOLE)
    )
    key_volumes = "".join(f"      - keys-{c}:/federation/keys/{c}\n" for c in codes)
    cli_volumes = "".join(f"      - keys-{c}:/federation/keys/{c}:ro\n" for c in codes)
    services = ""
    for p in chosen:
        for offset, s in enumerate(SERVICES):
            port = 8000 + 10 * index[p.code] + offset
            db = database(p.code, s)
            services += f"""
  {s}-{p.code}:
    <<: [*labornet-service, *{s}-image]
    command: ["sh", "-c", "labornet migrate {s} && exec labornet serve {s} --host 0.0.0.0 --port {HTTP_PORT}"]
    environment:
      <<: *labornet-env
      LABORNET_PROVINCE: "{p.code}"
      LABORNET_DATABASE_URL: "postgresql+asyncpg://{db}:${{LABORNET_DB_PASSWORD:-labornet-dev}}@postgres:5432/{db}"
    volumes:
      - keys-{p.code}:/keys:ro
      - trust:/trust:ro
    ports:
      - "127.0.0.1:{port}:{HTTP_PORT}"
"""
        urls = "".join(f'      LABORNET_CONSOLE_{s.upper()}_URL: "http://{s}-{p.code}:{HTTP_PORT}"\n' for s in SERVICES)
        waits = "".join(f"      {s}-{p.code}:\n        condition: service_healthy\n" for s in SERVICES)
        services += f"""
  {CONSOLE}-{p.code}:
    <<: [*labornet-console, *{CONSOLE}-image]
    environment:
      <<: *labornet-console-env
      LABORNET_CONSOLE_PROVINCE: "{p.code}"
{urls.rstrip()}
    volumes:
      - keys-{p.code}:/keys:ro
    ports:
      - "127.0.0.1:{8000 + 10 * index[p.code] + CONSOLE_OFFSET}:{HTTP_PORT}"
    depends_on:
{waits.rstrip()}
"""
    volumes = "".join(f"  keys-{c}:\n" for c in codes)
    return f"""# LaborNet on Apache Kafka (KRaft) and PostgreSQL, for a laptop or a demo: {names}.
# {GENERATED}
#   .venv/bin/python deploy/tools/generate.py           rewrites it (after a registry or topic change)
#   .venv/bin/python deploy/tools/generate.py --compose-provinces all --compose-output docker-compose.nine.yml
#                                                       writes the same for all nine members
# Run: docker compose up --build -d   (Compose >= 2.23.1; see docs/operations/deploy.md)
# HTTP ports follow `make up`: province i of the registry listens on 8000+10i (jobs) ... 8003+10i (rights), and its
# officer console on 8004+10i (dev sign-in: any name, officer or admin).
name: labornet

x-labornet-env: &labornet-env
  LABORNET_KAFKA_BOOTSTRAP_SERVERS: "kafka:9092"
  LABORNET_KAFKA_ENABLE_IDEMPOTENCE: "true"
  LABORNET_KAFKA_CREATE_TOPICS: "false"
  LABORNET_KAFKA_FETCH_MAX_WAIT_MS: "500"
  LABORNET_MIGRATE_ON_START: "false"
  LABORNET_KEYS_DIR: /keys
  LABORNET_TRUST_LIST_PATH: /trust/trust-list.json
  LABORNET_FEDERATION_PATH: /etc/labornet/federation.json
  LABORNET_LOG_JSON: "true"

x-labornet-service: &labornet-service
  restart: unless-stopped
  read_only: true
  tmpfs:
    - /tmp
  cap_drop:
    - ALL
  security_opt:
    - "no-new-privileges:true"
  configs:
    - source: federation
      target: /etc/labornet/federation.json
  depends_on:
    postgres:
      condition: service_healthy
    kafka-topics:
      condition: service_completed_successfully
    keys:
      condition: service_completed_successfully
  healthcheck:
    test:
      - CMD
      - python
      - -c
      - "{READY_CHECK}"
    interval: 15s
    timeout: 5s
    retries: 5
    start_period: 60s

# The officer console of a province (services/console): pages on its node's four services, no database, no Kafka.
x-labornet-console: &labornet-console
  restart: unless-stopped
  read_only: true
  tmpfs:
    - /tmp
  cap_drop:
    - ALL
  security_opt:
    - "no-new-privileges:true"
  command: ["labornet", "serve-console", "--host", "0.0.0.0", "--port", "{HTTP_PORT}"]
  healthcheck:
    test:
      - CMD
      - python
      - -c
      - "{READY_CHECK}"
    interval: 15s
    timeout: 5s
    retries: 5
    start_period: 30s

# Dev sign-in with the province's dev token issuer key (its keys volume, mounted at /keys), as `labornet up` does;
# cookies without the Secure flag, since this stack serves plain HTTP. An empty session secret is a random key per
# start (officers sign in again after a restart); set LABORNET_CONSOLE_SESSION_SECRET (32+ characters) to keep them.
x-labornet-console-env: &labornet-console-env
  LABORNET_CONSOLE_DEV_ISSUER_KEY_PATH: /keys/token.key
  LABORNET_CONSOLE_COOKIE_SECURE: "false"
  LABORNET_CONSOLE_SESSION_SECRET: "${{LABORNET_CONSOLE_SESSION_SECRET:-}}"
  LABORNET_CONSOLE_LOG_JSON: "true"
{images}
services:
  kafka:
    image: {KAFKA_IMAGE}
    hostname: kafka
    restart: unless-stopped
    environment:
      CLUSTER_ID: TGFib3JOZXQtY29tcG9zZQ
      KAFKA_NODE_ID: "1"
      KAFKA_PROCESS_ROLES: broker,controller
      KAFKA_CONTROLLER_QUORUM_VOTERS: "1@kafka:9093"
      KAFKA_LISTENERS: "INTERNAL://:9092,CONTROLLER://:9093,EXTERNAL://:9094"
      KAFKA_ADVERTISED_LISTENERS: "INTERNAL://kafka:9092,EXTERNAL://127.0.0.1:9094"
      KAFKA_LISTENER_SECURITY_PROTOCOL_MAP: "INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT,EXTERNAL:PLAINTEXT"
      KAFKA_INTER_BROKER_LISTENER_NAME: INTERNAL
      KAFKA_CONTROLLER_LISTENER_NAMES: CONTROLLER
      KAFKA_LOG_DIRS: /var/lib/kafka/data
      KAFKA_AUTO_CREATE_TOPICS_ENABLE: "false"
      KAFKA_NUM_PARTITIONS: "{PARTITIONS}"
      KAFKA_DEFAULT_REPLICATION_FACTOR: "1"
      KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR: "1"
      KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR: "1"
      KAFKA_TRANSACTION_STATE_LOG_MIN_ISR: "1"
      KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR: "1"
      KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR: "1"
      KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS: "0"
      KAFKA_HEAP_OPTS: "-Xms512m -Xmx512m"
    volumes:
      - kafka-data:/var/lib/kafka/data
    ports:
      - "127.0.0.1:9094:9094"
    healthcheck:
      test:
        - CMD-SHELL
        - "{KAFKA_HEALTH_CHECK}"
      interval: 15s
      timeout: 30s
      retries: 10
      start_period: 30s

  # One-shot: every events/inbox/deadletter topic of every registry member (the services of any province address
  # all members' topics), with kafka-topics.sh; the list is the `kafka-topics` config below.
  kafka-topics:
    image: {KAFKA_IMAGE}
    restart: "no"
    entrypoint: ["/bin/sh", "/labornet/create-topics.sh"]
    environment:
      BOOTSTRAP_SERVERS: "kafka:9092"
      TOPIC_PARTITIONS: "{PARTITIONS}"
      TOPIC_REPLICATION: "1"
      TOPIC_LIST: /labornet/topics.txt
      PARALLEL: "4"
      KAFKA_HEAP_OPTS: "-Xmx128m"
    configs:
      - source: kafka-topics
        target: /labornet/topics.txt
    volumes:
      - ./deploy/compose/kafka/create-topics.sh:/labornet/create-topics.sh:ro
    depends_on:
      kafka:
        condition: service_healthy

  postgres:
    image: {POSTGRES_IMAGE}
    restart: unless-stopped
    environment:
      POSTGRES_USER: postgres
      POSTGRES_PASSWORD: "${{LABORNET_POSTGRES_PASSWORD:-labornet-dev}}"
      LABORNET_DATABASES: "{databases}"
      LABORNET_DB_PASSWORD: "${{LABORNET_DB_PASSWORD:-labornet-dev}}"
    volumes:
      - postgres-data:/var/lib/postgresql/data
      - ./deploy/compose/postgres/init-databases.sh:/docker-entrypoint-initdb.d/10-labornet-databases.sh:ro
    healthcheck:
      # TCP, not the socket: during initialisation the entrypoint's temporary server listens on the socket only.
      test: ["CMD-SHELL", "pg_isready -h 127.0.0.1 -U postgres -d postgres"]
      interval: 5s
      timeout: 5s
      retries: 20
      start_period: 10s

  # One-shot: node keys (signing key, dev token issuer) per province and the federation trust list listing every
  # signing key. Each province's keys live in a volume of their own; the trust list in the shared `trust` volume.
  keys:
    <<: *jobs-image
    restart: "no"
    user: "0:0"
    entrypoint: ["/bin/sh", "/labornet/generate-keys.sh"]
    environment:
      LABORNET_KEY_PROVINCES: "{" ".join(codes)}"
      LABORNET_DATA_DIR: /federation
    volumes:
      - trust:/federation
{key_volumes.rstrip()}
      - ./deploy/compose/keys/generate-keys.sh:/labornet/generate-keys.sh:ro

  # Tools: docker compose run --rm cli token --province 510000 --role officer --sub alice
  cli:
    <<: *jobs-image
    profiles: [tools]
    restart: "no"
    entrypoint: ["labornet"]
    command: ["--help"]
    environment:
      LABORNET_DATA_DIR: /federation
    volumes:
      - trust:/federation:ro
{cli_volumes.rstrip()}

  prometheus:
    image: {PROMETHEUS_IMAGE}
    restart: unless-stopped
    command:
      - --config.file=/etc/prometheus/prometheus.yml
      - --storage.tsdb.path=/prometheus
      - --storage.tsdb.retention.time=15d
      - --web.enable-lifecycle
    volumes:
      - ./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro
      - ./deploy/prometheus/rules:/etc/prometheus/rules:ro
      - prometheus-data:/prometheus
    configs:
      - source: prometheus-targets
        target: /etc/prometheus/targets/labornet.json
    ports:
      - "127.0.0.1:9090:9090"
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9090/-/ready"]
      interval: 15s
      timeout: 5s
      retries: 5

  grafana:
    image: {GRAFANA_IMAGE}
    restart: unless-stopped
    environment:
      GF_SECURITY_ADMIN_USER: admin
      GF_SECURITY_ADMIN_PASSWORD: "${{LABORNET_GRAFANA_PASSWORD:-labornet-dev}}"
      GF_USERS_ALLOW_SIGN_UP: "false"
      GF_AUTH_ANONYMOUS_ENABLED: "false"
      GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH: /etc/labornet/dashboards/labornet-federation.json
    volumes:
      - ./deploy/grafana/provisioning:/etc/grafana/provisioning:ro
      - ./deploy/grafana/dashboards:/etc/labornet/dashboards:ro
      - grafana-data:/var/lib/grafana
    ports:
      - "127.0.0.1:3000:3000"
    depends_on:
      prometheus:
        condition: service_healthy

  # The province services and officer consoles: {names}.
{services.lstrip(chr(10)).rstrip()}

configs:
  federation:
    # Where every node's services listen (jobs heals its replica from an origin's snapshot over HTTP).
    content: |
{indent(json.dumps(federation, indent=2, ensure_ascii=False), 6).rstrip()}
  prometheus-targets:
    content: |
{indent(targets_json, 6).rstrip()}
  kafka-topics:
    # name retention.ms (-1: kept; broadcast streams are the replayable log)
    content: |
{indent(topics, 6).rstrip()}

volumes:
  kafka-data:
  postgres-data:
  prometheus-data:
  grafana-data:
  trust:
{volumes.rstrip()}
"""


# Kubernetes: bases ----------------------------------------------------------------------------------------------


def labels(service: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": service,
        "app.kubernetes.io/component": "service",
        "app.kubernetes.io/part-of": "labornet",
    }


def selector(service: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": service, "app.kubernetes.io/part-of": "labornet"}


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def deployment(service: str) -> dict[str, Any]:
    cpu, memory, memory_limit = RESOURCES[service]
    image = f"labornet-{service}"
    env = [
        {
            "name": "LABORNET_DATABASE_URL",
            "valueFrom": {"secretKeyRef": {"name": f"labornet-{service}-db", "key": "url"}},
        }
    ]
    env_from = [{"configMapRef": {"name": "labornet-node"}}]
    mounts = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "data", "mountPath": "/data"},
        {"name": "node-key", "mountPath": "/etc/labornet/node-key", "readOnly": True},
        {"name": "trust-list", "mountPath": "/etc/labornet/trust", "readOnly": True},
        {"name": "federation", "mountPath": "/etc/labornet/federation", "readOnly": True},
        {"name": "kafka-user", "mountPath": "/etc/labornet/kafka-user", "readOnly": True},
        {"name": "kafka-ca", "mountPath": "/etc/labornet/kafka-ca", "readOnly": True},
    ]
    probe = {"httpGet": {"path": "/livez", "port": "http"}}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": service, "labels": labels(service)},
        "spec": {
            "replicas": 2,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector(service)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels(service)},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "runAsGroup": 10001,
                        "fsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "initContainers": [
                        {
                            "name": "migrate",
                            "image": image,
                            "command": ["labornet", "migrate", service],
                            "envFrom": env_from,
                            "env": env,
                            "resources": {
                                "requests": {"cpu": "50m", "memory": "128Mi"},
                                "limits": {"memory": "256Mi"},
                            },
                            "securityContext": _container_security(),
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                        }
                    ],
                    "containers": [
                        {
                            "name": service,
                            "image": image,
                            "command": ["labornet", "serve", service, "--host", "0.0.0.0", "--port", str(HTTP_PORT)],
                            "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
                            "envFrom": env_from,
                            "env": env,
                            "startupProbe": {**probe, "periodSeconds": 5, "failureThreshold": 24},
                            "livenessProbe": {**probe, "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 3},
                            "readinessProbe": {
                                "httpGet": {"path": "/readyz", "port": "http"},
                                "periodSeconds": 10,
                                "timeoutSeconds": 5,
                                "failureThreshold": 3,
                            },
                            "resources": {
                                "requests": {"cpu": cpu, "memory": memory},
                                "limits": {"memory": memory_limit},
                            },
                            "securityContext": _container_security(),
                            "volumeMounts": mounts,
                        }
                    ],
                    "volumes": [
                        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
                        {"name": "data", "emptyDir": {"sizeLimit": "256Mi"}},
                        {
                            "name": "node-key",
                            "secret": {
                                "secretName": "labornet-node-key",
                                "defaultMode": 0o440,
                                "items": [{"key": "signing.key", "path": "signing.key"}],
                            },
                        },
                        {"name": "trust-list", "configMap": {"name": "labornet-trust-list"}},
                        {"name": "federation", "configMap": {"name": "labornet-federation"}},
                        {
                            "name": "kafka-user",
                            "secret": {
                                "secretName": "labornet-kafka-user",
                                "defaultMode": 0o440,
                                "items": [
                                    {"key": "user.crt", "path": "user.crt"},
                                    {"key": "user.key", "path": "user.key"},
                                ],
                            },
                        },
                        {
                            "name": "kafka-ca",
                            "secret": {
                                "secretName": f"{KAFKA_CLUSTER}-cluster-ca-cert",
                                "items": [{"key": "ca.crt", "path": "ca.crt"}],
                            },
                        },
                    ],
                },
            },
        },
    }


def base_service(service: str) -> dict[str, str]:
    header = f"LaborNet {service}: one service of one province node.\n{GENERATED}"
    service_resource = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service, "labels": labels(service)},
        "spec": {
            "type": "ClusterIP",
            "selector": selector(service),
            "ports": [{"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": service, "labels": labels(service)},
        "spec": {
            # job="labornet" for every service, as in the compose Prometheus and the alert rules
            "jobLabel": "app.kubernetes.io/part-of",
            "selector": {"matchLabels": selector(service)},
            "endpoints": [
                {
                    "port": "http",
                    "path": "/metrics",
                    "interval": "30s",
                    "scrapeTimeout": "10s",
                    # the metrics carry their own `service` label; keep it instead of exported_service
                    "honorLabels": True,
                    "relabelings": [
                        {
                            "action": "replace",
                            "sourceLabels": ["__meta_kubernetes_pod_label_labornet_example_province"],
                            "targetLabel": "province",
                        },
                    ],
                }
            ],
        },
    }
    budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": service, "labels": labels(service)},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": selector(service)}},
    }
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["deployment.yaml", "service.yaml", "servicemonitor.yaml", "poddisruptionbudget.yaml"],
    }
    base = f"k8s/base/{service}"
    return {
        f"{base}/kustomization.yaml": dump_yaml(kustomization, header=header),
        f"{base}/deployment.yaml": dump_yaml(deployment(service), header=header),
        f"{base}/service.yaml": dump_yaml(service_resource, header=header),
        f"{base}/servicemonitor.yaml": dump_yaml(monitor, header=header),
        f"{base}/poddisruptionbudget.yaml": dump_yaml(budget, header=header),
    }


def base_node(everyone: list[Province]) -> dict[str, str]:
    header = (
        "What the four services of a node share: configuration and the federation file (the officer console reads\n"
        f"its province and sign-in settings from the same ConfigMap).\n{GENERATED}"
    )
    federation = {
        "provinces": {
            p.code: {
                "name": p.en,
                "name_zh": p.zh,
                "services": {s: f"http://{s}.labornet-{p.code}.svc:{HTTP_PORT}" for s in SERVICES},
            }
            for p in everyone
        },
        "bootstrap_servers": KAFKA_BOOTSTRAP,
    }
    config = [
        f"LABORNET_KAFKA_BOOTSTRAP_SERVERS={KAFKA_BOOTSTRAP}",
        "LABORNET_KAFKA_SECURITY_PROTOCOL=SSL",
        "LABORNET_KAFKA_SSL_CAFILE=/etc/labornet/kafka-ca/ca.crt",
        "LABORNET_KAFKA_SSL_CERTFILE=/etc/labornet/kafka-user/user.crt",
        "LABORNET_KAFKA_SSL_KEYFILE=/etc/labornet/kafka-user/user.key",
        "LABORNET_KAFKA_ENABLE_IDEMPOTENCE=true",
        "LABORNET_KAFKA_CREATE_TOPICS=false",
        "LABORNET_KAFKA_FETCH_MAX_WAIT_MS=500",
        "LABORNET_MIGRATE_ON_START=false",
        "LABORNET_SIGNING_KEY_PATH=/etc/labornet/node-key/signing.key",
        "LABORNET_TRUST_LIST_PATH=/etc/labornet/trust/trust-list.json",
        "LABORNET_FEDERATION_PATH=/etc/labornet/federation/federation.json",
        "LABORNET_DATA_DIR=/data",
        "LABORNET_LOG_JSON=true",
        "LABORNET_LOG_LEVEL=INFO",
    ]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "configMapGenerator": [
            {"name": "labornet-node", "literals": config},
            {"name": "labornet-federation", "files": ["federation.json"]},
        ],
    }
    return {
        "k8s/base/node/kustomization.yaml": dump_yaml(kustomization, header=header),
        "k8s/base/node/federation.json": json.dumps(federation, indent=2, ensure_ascii=False) + "\n",
    }


def base_monitoring() -> dict[str, str]:
    rules = (DEPLOY / "prometheus" / "rules" / "labornet.rules.yml").read_text("utf-8")
    body = "\n".join(line for line in rules.split("\n") if not line.startswith("#")).strip("\n")
    header = f"The alert rules of deploy/prometheus/rules/labornet.rules.yml for the Prometheus Operator.\n{GENERATED}"
    metadata = dump_yaml(
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": {
                "name": "labornet",
                "labels": {"app.kubernetes.io/part-of": "labornet", "role": "alert-rules"},
            },
        },
        header=header,
    )
    rule = metadata + "spec:\n" + "".join(f"  {line}".rstrip() + "\n" for line in body.split("\n"))
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["prometheusrule.yaml"],
    }
    return {
        "k8s/base/monitoring/kustomization.yaml": dump_yaml(kustomization, header=GENERATED),
        "k8s/base/monitoring/prometheusrule.yaml": rule,
    }


# Kubernetes: one overlay per province ---------------------------------------------------------------------------


def console_ingress(code: str) -> dict[str, Any]:
    """The console's public address; the four services stay inside the cluster (ClusterIP only)."""
    host = console_host(code)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": CONSOLE,
            "labels": {
                "app.kubernetes.io/name": CONSOLE,
                "app.kubernetes.io/component": CONSOLE,
                "app.kubernetes.io/part-of": "labornet",
            },
        },
        "spec": {
            # no ingressClassName: the cluster's default IngressClass (patch one in if the cluster has none)
            "tls": [{"hosts": [host], "secretName": CONSOLE_TLS_SECRET}],
            "rules": [
                {
                    "host": host,
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": CONSOLE, "port": {"name": "http"}}},
                            }
                        ]
                    },
                }
            ],
        },
    }


def overlay(p: Province) -> dict[str, str]:
    namespace = f"labornet-{p.code}"
    header = (
        f"Province node {p.code} {p.en} ({p.zh}) in namespace {namespace}: the four services and the officer console.\n"
        "Created out of band (docs/operations/deploy.md#secrets-and-keys): Secrets labornet-<service>-db of the four\n"
        f"services, labornet-node-key, {kafka_user(p.code)} (Kafka client), {KAFKA_CLUSTER}-cluster-ca-cert,\n"
        f"{CONSOLE_SECRET}, {CONSOLE_TLS_SECRET}; ConfigMap labornet-trust-list.\n"
        f"{GENERATED}"
    )
    idp = identity_provider(p.code)
    secret_patch = dump_yaml(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "any"},
            "spec": {
                "template": {
                    "spec": {"volumes": [{"name": "kafka-user", "secret": {"secretName": kafka_user(p.code)}}]}
                }
            },
        }
    )
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": namespace,
        "resources": [
            "namespace.yaml",
            "../../base/node",
            *[f"../../base/{s}" for s in SERVICES],
            f"../../base/{CONSOLE}",
            "ingress.yaml",
            "../../base/monitoring",
        ],
        "labels": [
            {
                "pairs": {PROVINCE_LABEL: p.code},
                "includeSelectors": False,
                "includeTemplates": True,
            }
        ],
        "configMapGenerator": [
            {
                "name": "labornet-node",
                "behavior": "merge",
                "literals": [
                    f"LABORNET_PROVINCE={p.code}",
                    # the province's identity provider (placeholders: set the real realm before deploying)
                    f"LABORNET_AUTH_ISSUER={idp}",
                    f"LABORNET_AUTH_JWKS_URL={idp}/protocol/openid-connect/certs",
                    # the officer console's sign-in at the same IdP (its client there; the callback on its Ingress)
                    f"LABORNET_CONSOLE_OIDC_DISCOVERY_URL={idp}/.well-known/openid-configuration",
                    f"LABORNET_CONSOLE_OIDC_CLIENT_ID={CONSOLE_OIDC_CLIENT_ID}",
                    f"LABORNET_CONSOLE_OIDC_REDIRECT_URL=https://{console_host(p.code)}/auth/callback",
                ],
            }
        ],
        "images": [
            {
                "name": f"labornet-{s}",
                "newName": f"{IMAGE_REGISTRY}/{s}",
                "newTag": service_version(s),
            }
            for s in (*SERVICES, CONSOLE)
        ],
        "patches": [
            # the client certificate Strimzi's User Operator issues for this province's KafkaUser (the four services
            # only: the console does not reach Kafka)
            {
                "target": {"kind": "Deployment", "labelSelector": "app.kubernetes.io/component=service"},
                "patch": Literal(secret_patch),
            }
        ],
    }
    ns = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": namespace,
            "labels": {
                PROVINCE_LABEL: p.code,
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/audit": "restricted",
            },
        },
    }
    return {
        f"k8s/overlays/{p.code}/kustomization.yaml": dump_yaml(kustomization, header=header),
        f"k8s/overlays/{p.code}/namespace.yaml": dump_yaml(
            ns, header=f"Province node {p.code} {p.en} ({p.zh}) in namespace {namespace}.\n{GENERATED}"
        ),
        f"k8s/overlays/{p.code}/ingress.yaml": dump_yaml(
            console_ingress(p.code),
            header=(
                f"The officer console of {p.code} {p.en} at https://{console_host(p.code)} (a placeholder host).\n"
                f"TLS: Secret {CONSOLE_TLS_SECRET} (kubernetes.io/tls, created by the operator or cert-manager).\n"
                "Register https://<host>/auth/callback as the console's redirect URI at the province's IdP.\n"
                f"{GENERATED}"
            ),
        ),
    }


# Kubernetes: Strimzi topics and users ---------------------------------------------------------------------------


def kafka_topics(everyone: list[Province]) -> str:
    documents = []
    for topic in all_topics([p.code for p in everyone]):
        documents.append(
            {
                "apiVersion": "kafka.strimzi.io/v1beta2",
                "kind": "KafkaTopic",
                "metadata": {
                    "name": topic.name,
                    "labels": {
                        "strimzi.io/cluster": KAFKA_CLUSTER,
                        PROVINCE_LABEL: topic.province,
                        "labornet.example/service": topic.service,
                        "labornet.example/topic-kind": topic.kind,
                    },
                },
                "spec": {
                    "topicName": topic.name,
                    "partitions": PARTITIONS,
                    "replicas": 3,
                    "config": {
                        "retention.ms": RETENTION_MS[topic.kind],
                        "min.insync.replicas": 2,
                        "cleanup.policy": "delete",
                    },
                },
            }
        )
    header = (
        "Every topic of the federation bus: events, inbox and deadletter of each member and service\n"
        "(labornet.shared.topics). Retention: events kept (-1), inbox and deadletter 30 days.\n"
        f"{GENERATED}"
    )
    return dump_yaml(*documents, header=header)


def acl(kind: str, name: str, pattern: str, operations: list[str]) -> dict[str, Any]:
    return {"resource": {"type": kind, "name": name, "patternType": pattern}, "operations": operations, "host": "*"}


def kafka_users(everyone: list[Province]) -> str:
    from labornet.shared.topics import events_topic, inbox_topic

    documents = []
    for p in everyone:
        partners = [q.code for q in everyone if q.code != p.code]
        acls = [
            # own prefix: write own broadcast streams and dead letters, read own inbox and dead letters
            acl("topic", f"labornet.{p.code}.", "prefix", ["Read", "Write", "Describe"]),
            # consumer groups are labornet.<province>.<service>.<consumer> (EventConsumer.group_id)
            acl("group", f"labornet.{p.code}.", "prefix", ["Read", "Describe"]),
        ]
        for code in partners:
            for s in SERVICES:
                # directed messages to a partner: write (never read) its inbox
                acls.append(acl("topic", inbox_topic(code, s), "literal", ["Write", "Describe"]))
        for code in partners:
            for s in SERVICES:
                # a partner's broadcast stream: read (never write) it
                acls.append(acl("topic", events_topic(code, s), "literal", ["Read", "Describe"]))
        documents.append(
            {
                "apiVersion": "kafka.strimzi.io/v1beta2",
                "kind": "KafkaUser",
                "metadata": {
                    "name": kafka_user(p.code),
                    "labels": {"strimzi.io/cluster": KAFKA_CLUSTER, PROVINCE_LABEL: p.code},
                },
                "spec": {
                    "authentication": {"type": "tls"},
                    "authorization": {"type": "simple", "acls": acls},
                    # one province cannot starve the others of the shared bus
                    "quotas": {
                        "producerByteRate": 5_242_880,
                        "consumerByteRate": 10_485_760,
                        "requestPercentage": 50,
                    },
                },
            }
        )
    header = (
        "One KafkaUser per province (mTLS): write only as yourself, read only what is addressed to you.\n"
        "See docs/operations/deploy.md#kafka-acls for the reasoning.\n"
        f"{GENERATED}"
    )
    return dump_yaml(*documents, header=header)


# Everything ------------------------------------------------------------------------------------------------------


def generated(compose_codes: list[str] | None = None) -> dict[Path, str]:
    everyone = members()
    by_code = {p.code: p for p in everyone}
    chosen = [by_code[c] for c in (compose_codes or DEFAULT_COMPOSE_PROVINCES)]
    files: dict[str, str] = {}
    for service in SERVICES:
        files.update(base_service(service))
    files.update(base_node(everyone))
    files.update(base_monitoring())
    for p in everyone:
        files.update(overlay(p))
    files["k8s/kafka/topics.yaml"] = kafka_topics(everyone)
    files["k8s/kafka/users.yaml"] = kafka_users(everyone)
    for name, build in DASHBOARDS.items():
        files[f"grafana/dashboards/{name}"] = json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
    result = {DEPLOY / path: text for path, text in files.items()}
    result[ROOT / "docker-compose.yml"] = compose(chosen, everyone)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if a generated file is missing or differs")
    parser.add_argument("--compose-provinces", help="comma-separated codes or 'all' (for --compose-output)")
    parser.add_argument("--compose-output", type=Path, help="write only a compose file for --compose-provinces")
    args = parser.parse_args(argv)

    if args.compose_output:
        everyone = members()
        by_code = {p.code: p for p in everyone}
        wanted = args.compose_provinces or ",".join(DEFAULT_COMPOSE_PROVINCES)
        codes = [p.code for p in everyone] if wanted == "all" else [c.strip() for c in wanted.split(",")]
        unknown = [c for c in codes if c not in by_code]
        if unknown:
            parser.error(f"not federation members: {', '.join(unknown)}")
        args.compose_output.write_text(compose([by_code[c] for c in codes], everyone), "utf-8")
        print(f"wrote {args.compose_output} for {', '.join(codes)}")
        return 0

    files = generated()
    overlays = DEPLOY / "k8s" / "overlays"
    stray = [
        path
        for path in (sorted(overlays.iterdir()) if overlays.is_dir() else [])
        if path.is_dir() and not any(f.parent == path for f in files)
    ]
    if args.check:
        stale = [path for path, text in files.items() if not path.exists() or path.read_text("utf-8") != text]
        for path in stale:
            print(f"out of date: {path.relative_to(ROOT)}", file=sys.stderr)
        for path in stray:
            print(f"overlay of no registry member: {path.relative_to(ROOT)}", file=sys.stderr)
        if stale or stray:
            print("run: .venv/bin/python deploy/tools/generate.py", file=sys.stderr)
            return 1
        print(f"{len(files)} generated files up to date")
        return 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text("utf-8") != text:
            path.write_text(text, "utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    for path in stray:
        print(f"warning: {path.relative_to(ROOT)} belongs to no registry member; remove it", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# Offline validation of everything under deploy/ and of docker-compose.yml (what `make validate-deploy` runs).
#
#   scripts/validate-deploy.sh
#
# Steps: generated files up to date; docker-compose.yml against the Compose Specification and its wiring;
# Prometheus configurations (compose, and the local one with the targets file `labornet up` writes), alert rules and
# their unit tests; every province overlay and the Strimzi bus built with
# kustomize, core resources validated strictly by kubernetes-validate, custom resources against
# deploy/k8s/schemas/ and the ACL policy; the PrometheusRule and every dashboard query through promtool; the
# services' Dockerfiles through hadolint. Every step runs; the script exits non-zero if any failed.
#
# A missing tool fails the run, unless LABORNET_ALLOW_MISSING_VALIDATORS=1, which skips the steps needing it
# with a message. Tools: .venv/bin/{python,check-jsonschema,kubernetes-validate,hadolint} (make install),
# kubectl (or kustomize), promtool (Debian/Ubuntu: apt-get install prometheus).
set -uo pipefail
export PYTHONDONTWRITEBYTECODE=1  # leave no __pycache__ under deploy/tools
cd "$(dirname "$0")/.."

VENV_BIN=.venv/bin
KUBERNETES_VERSIONS=(1.27 1.37)  # oldest supported by Strimzi 0.48, newest known to kubernetes-validate
ALLOW_MISSING="${LABORNET_ALLOW_MISSING_VALIDATORS:-0}"
failed=()
skipped=()
passed=0

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# tool NAME: print the path of NAME (the virtualenv's first), or nothing.
tool() {
  if [ -x "$VENV_BIN/$1" ]; then
    echo "$VENV_BIN/$1"
  else
    command -v "$1" || true
  fi
}

PYTHON=$(tool python)
CHECK_JSONSCHEMA=$(tool check-jsonschema)
KUBERNETES_VALIDATE=$(tool kubernetes-validate)
PROMTOOL=$(tool promtool)
HADOLINT=$(tool hadolint)
KUSTOMIZE=()
if [ -n "$(tool kubectl)" ]; then
  KUSTOMIZE=("$(tool kubectl)" kustomize)
elif [ -n "$(tool kustomize)" ]; then
  KUSTOMIZE=("$(tool kustomize)" build)
fi
# the deploy/tools scripts import labornet.shared, labornet.console (its settings), PyYAML and jsonschema
if [ -n "$PYTHON" ] && ! "$PYTHON" -c 'import yaml, jsonschema, labornet.shared, labornet.console' 2>/dev/null; then
  PYTHON=""
fi

# missing TOOL_DESCRIPTION STEP: record a step that cannot run; fatal unless missing tools are allowed.
missing() {
  if [ "$ALLOW_MISSING" = "1" ]; then
    echo "SKIP  $2: $1 not found (LABORNET_ALLOW_MISSING_VALIDATORS=1)"
    skipped+=("$2")
  else
    echo "FAIL  $2: $1 not found (install it, or set LABORNET_ALLOW_MISSING_VALIDATORS=1 to skip)"
    failed+=("$2")
  fi
}

# step NAME COMMAND...: run a command quietly; show its output only when it fails.
step() {
  local name=$1 log
  shift
  log="$work/log.$RANDOM"
  if "$@" > "$log" 2>&1; then
    echo "ok    $name"
    passed=$((passed + 1))
  else
    echo "FAIL  $name"
    sed 's/^/      /' "$log" | head -n 60
    failed+=("$name")
  fi
}

started=$SECONDS

# 1. generated files ------------------------------------------------------------------------------------------
if [ -n "$PYTHON" ]; then
  step "generated files up to date (deploy/tools/generate.py --check)" "$PYTHON" deploy/tools/generate.py --check
else
  missing "python with labornet.shared, labornet.console, PyYAML and jsonschema (make install)" "generated files"
fi

# 2. docker compose -------------------------------------------------------------------------------------------
if [ -n "$CHECK_JSONSCHEMA" ]; then
  step "docker-compose.yml: Compose Specification schema" \
    "$CHECK_JSONSCHEMA" --builtin-schema vendor.compose-spec docker-compose.yml
else
  missing check-jsonschema "docker-compose.yml schema"
fi
if [ -n "$PYTHON" ]; then
  mkdir -p "$work/prometheus/targets" "$work/prometheus/rules"
  step "docker-compose.yml: dependencies, volumes, ports, province wiring" \
    "$PYTHON" deploy/tools/check_compose.py docker-compose.yml --targets-out "$work/prometheus/targets/labornet.json"
else
  missing "python (make install)" "docker-compose.yml wiring"
fi

# 3. Prometheus -----------------------------------------------------------------------------------------------
if [ -n "$PROMTOOL" ]; then
  cp deploy/prometheus/prometheus.yml "$work/prometheus/"
  cp deploy/prometheus/rules/*.yml "$work/prometheus/rules/"
  step "prometheus.yml with the compose targets (promtool check config)" \
    "$PROMTOOL" check config "$work/prometheus/prometheus.yml"
  step "alert rules (promtool check rules)" "$PROMTOOL" check rules deploy/prometheus/rules/*.yml
  step "alert rule unit tests (promtool test rules)" "$PROMTOOL" test rules deploy/prometheus/tests/*.test.yml
  # prometheus-local.yml reads ../../.labornet/prometheus-targets.json: lay out a copy of the repository's paths
  local_root="$work/local"
  mkdir -p "$local_root/deploy/prometheus/rules" "$local_root/.labornet"
  cp deploy/prometheus/prometheus-local.yml "$local_root/deploy/prometheus/"
  cp deploy/prometheus/rules/*.yml "$local_root/deploy/prometheus/rules/"
  if [ -n "$PYTHON" ]; then
    step "targets file of labornet up, nine provinces (labornet.shared.federation)" "$PYTHON" -c '
import sys
from pathlib import Path
from rich.console import Console
from labornet.shared.federation import PROMETHEUS_TARGETS, Federation, write_prometheus_targets
data_dir = Path(sys.argv[1])
federation = Federation(data_dir=data_dir, provinces=None, port_base=8000, broker_port=9092,
                        bootstrap_servers="127.0.0.1:9092", database_url_template=None, console=Console())
write_prometheus_targets(data_dir / PROMETHEUS_TARGETS, federation.processes())' "$local_root/.labornet"
  fi
  step "prometheus-local.yml with the targets of labornet up (promtool check config)" \
    "$PROMTOOL" check config "$local_root/deploy/prometheus/prometheus-local.yml"
else
  missing promtool "Prometheus configuration, alert rules and tests, PrometheusRule and dashboard queries"
fi

# 4. Kubernetes -----------------------------------------------------------------------------------------------
codes=()
if [ -n "$PYTHON" ]; then
  mapfile -t codes < <("$PYTHON" -c 'from labornet.shared.provinces import load_registry
print("\n".join(load_registry(None).codes()))')
else
  mapfile -t codes < <(find deploy/k8s/overlays -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort)
fi
if [ ${#KUSTOMIZE[@]} -gt 0 ]; then
  built=()
  build_failed=0
  for target in kafka console "${codes[@]}"; do
    case "$target" in
      kafka) dir=deploy/k8s/kafka ;;
      console) dir=deploy/k8s/base/console ;;  # the officer console's base (not generated)
      *) dir=deploy/k8s/overlays/$target ;;
    esac
    if "${KUSTOMIZE[@]}" "$dir" > "$work/k8s-$target.yaml" 2> "$work/k8s-$target.err"; then
      built+=("$target")
    else
      echo "FAIL  kustomize build $dir"
      sed 's/^/      /' "$work/k8s-$target.err"
      failed+=("kustomize build $dir")
      build_failed=1
    fi
  done
  [ "$build_failed" = 0 ] && echo "ok    kustomize build deploy/k8s/kafka, deploy/k8s/base/console and ${#codes[@]} overlays" && passed=$((passed + 1))

  if [ -n "$KUBERNETES_VALIDATE" ]; then
    versions=()
    for version in "${KUBERNETES_VERSIONS[@]}"; do versions+=(-k "$version"); done
    files=()
    for target in "${built[@]}"; do files+=("$work/k8s-$target.yaml"); done
    step "core resources, strict (kubernetes-validate ${KUBERNETES_VERSIONS[*]})" \
      "$KUBERNETES_VALIDATE" --strict --quiet --no-warn "${versions[@]}" "${files[@]}"
  else
    missing kubernetes-validate "core Kubernetes resources"
  fi

  if [ -n "$PYTHON" ] && [ "$build_failed" = 0 ]; then
    overlays=()
    for code in "${codes[@]}"; do overlays+=(--overlay "$code=$work/k8s-$code.yaml"); done
    step "custom resources (deploy/k8s/schemas), overlay wiring, Kafka ACL policy" \
      "$PYTHON" deploy/tools/check_k8s.py --kafka "$work/k8s-kafka.yaml" "${overlays[@]}" \
      --rules-out "$work/prometheusrule.yml"
    if [ -n "$PROMTOOL" ] && [ -s "$work/prometheusrule.yml" ]; then
      step "PrometheusRule of the overlays (promtool check rules)" \
        "$PROMTOOL" check rules "$work/prometheusrule.yml"
    fi
  elif [ -z "$PYTHON" ]; then
    missing "python (make install)" "custom resources and ACL policy"
  fi
else
  missing "kubectl or kustomize" "Kubernetes manifests"
fi

# 5. Grafana --------------------------------------------------------------------------------------------------
if [ -n "$PYTHON" ]; then
  step "dashboards: JSON, variables, metric names registered by the code" \
    "$PYTHON" deploy/tools/check_observability.py --rules-out "$work/dashboards.rules.yml"
  if [ -n "$PROMTOOL" ] && [ -s "$work/dashboards.rules.yml" ]; then
    step "dashboard queries parse (promtool check rules)" "$PROMTOOL" check rules "$work/dashboards.rules.yml"
  fi
else
  missing "python (make install)" "dashboards"
fi

# 6. Dockerfiles ----------------------------------------------------------------------------------------------
if [ -n "$HADOLINT" ]; then
  step "services/*/Dockerfile (hadolint)" "$HADOLINT" services/*/Dockerfile
else
  missing hadolint "Dockerfiles"
fi

echo
summary="$passed passed, ${#failed[@]} failed, ${#skipped[@]} skipped in $((SECONDS - started)) s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "validate-deploy: FAILED ($summary)"
  exit 1
fi
echo "validate-deploy: OK ($summary)"

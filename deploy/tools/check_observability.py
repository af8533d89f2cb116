"""Checks of the Grafana dashboards and of the metric names used by dashboards and alert rules.

    check_observability.py --rules-out DIR/dashboards.rules.yml

1. Every dashboard in deploy/grafana/dashboards/ parses, has a unique uid, unique panel ids, queries through the
   `datasource` variable and uses only variables it defines.
2. Every PromQL expression of a panel or of a variable query (label_values(<selector>, label)) is written, with
   Grafana's variables replaced by sample values, as a recording rule to --rules-out, for `promtool check rules`
   to parse.
3. Every `labornet_*` metric named by a dashboard or by deploy/prometheus/rules/*.yml is registered by the code
   (Counter/Gauge/Histogram definitions under libs/ and services/, with the suffixes prometheus_client exposes;
   no `_created` series: labornet.shared.observability turns them off).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEPLOY, ROOT

DASHBOARDS = DEPLOY / "grafana" / "dashboards"
RULES = DEPLOY / "prometheus" / "rules"
DEFINITION = re.compile(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"(labornet_[a-z0-9_]+)\"", re.MULTILINE)
SUFFIXES = {
    "Counter": ("_total",),
    "Gauge": ("",),
    "Histogram": ("_bucket", "_count", "_sum"),
    "Summary": ("", "_count", "_sum"),
}
SAMPLE_VALUES = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
    "province": "510000",
    "service": "jobs",
}
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
METRIC = re.compile(r"\b(labornet_[a-z0-9_]+)\b")
VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*[a-zA-Z_][a-zA-Z0-9_]*\)$")

errors: list[str] = []


def fail(where: str, message: str) -> None:
    errors.append(f"{where}: {message}")


def registered_series() -> set[str]:
    names: set[str] = set()
    sources = [ROOT / "libs" / "shared" / "src", *sorted((ROOT / "services").glob("*/src"))]
    for source in sources:
        for path in source.rglob("*.py"):
            for kind, name in DEFINITION.findall(path.read_text("utf-8")):
                if kind == "Counter":
                    name = name.removesuffix("_total")
                names.update(name + suffix for suffix in SUFFIXES[kind])
    return names


def substitute(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        return SAMPLE_VALUES.get(match.group(1), match.group(0))

    return VARIABLE.sub(value, expr)


def check_names(where: str, expr: str, known: set[str]) -> None:
    for name in METRIC.findall(STRING.sub('""', expr)):
        if name in known:
            continue
        fail(where, f"metric {name} is not registered anywhere in libs/ or services/")


def dashboard_rules(known: set[str]) -> list[dict[str, Any]]:
    groups = []
    uids: dict[str, Path] = {}
    paths = sorted(DASHBOARDS.glob("*.json"))
    if not paths:
        fail(str(DASHBOARDS), "no dashboards")
    for path in paths:
        where = str(path.relative_to(ROOT))
        try:
            board = json.loads(path.read_text("utf-8"))
        except json.JSONDecodeError as exc:
            fail(where, f"not JSON: {exc}")
            continue
        uid = board.get("uid")
        if not uid or uid in uids:
            fail(where, f"uid {uid!r} missing or also used by {uids.get(uid)}")
        uids[uid] = path
        variables = {v["name"]: v for v in board.get("templating", {}).get("list", [])}
        if variables.get("datasource", {}).get("type") != "datasource":
            fail(where, "no `datasource` variable of type datasource")
        allowed = set(variables) | {"__rate_interval", "__interval", "__range"}
        rules: list[dict[str, Any]] = []
        expressions: list[tuple[str, str]] = []
        for name, variable in variables.items():
            if variable.get("type") != "query":
                continue
            match = LABEL_VALUES.match(variable["query"]["query"])
            if not match:
                fail(where, f"variable {name}: expected label_values(<selector>, <label>)")
                continue
            expressions.append((f"variable_{name}", match["selector"]))
        ids: set[int] = set()
        for panel in board.get("panels", []):
            if panel["id"] in ids:
                fail(where, f"panel id {panel['id']} used twice")
            ids.add(panel["id"])
            if panel["type"] == "row":
                continue
            if panel.get("datasource", {}).get("uid") != "${datasource}":
                fail(where, f"panel {panel['title']!r} does not use the datasource variable")
            if not panel.get("targets"):
                fail(where, f"panel {panel['title']!r} has no query")
            for target in panel.get("targets", []):
                expressions.append((f"panel_{panel['id']}_{target['refId']}", target["expr"]))
        for key, expr in expressions:
            for used in VARIABLE.findall(expr):
                if used not in allowed:
                    fail(where, f"{key} uses ${used}, which the dashboard does not define")
            check_names(f"{where} {key}", expr, known)
            rules.append({"record": f"dashboard:{uid.replace('-', '_')}:{key}", "expr": substitute(expr)})
        groups.append({"name": f"dashboard {uid}", "rules": rules})
    return groups


def check_rule_names(known: set[str]) -> int:
    count = 0
    for path in sorted(RULES.glob("*.yml")):
        for group in yaml.safe_load(path.read_text("utf-8"))["groups"]:
            for rule in group["rules"]:
                check_names(f"{path.relative_to(ROOT)} {rule.get('alert') or rule.get('record')}", rule["expr"], known)
                count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules-out", type=Path, required=True, help="recording rules of every dashboard query")
    args = parser.parse_args(argv)
    known = registered_series()
    groups = dashboard_rules(known)
    rules = check_rule_names(known)
    args.rules_out.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False, allow_unicode=True), "utf-8")
    for error in errors:
        print(f"ERROR {error}", file=sys.stderr)
    if errors:
        return 1
    queries = sum(len(g["rules"]) for g in groups)
    print(
        f"{len(groups)} dashboards, {queries} queries written for promtool; metric names of the dashboards and "
        f"{rules} alert rules are registered by the code"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

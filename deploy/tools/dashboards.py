"""The Grafana dashboards, as data: a per-node dashboard and a federation overview.

Metric names are the ones the code registers (``labornet/shared/observability.py`` and the services'
``Counter``/``Gauge``/``Histogram`` definitions); ``deploy/tools/check_observability.py`` fails on any other
``labornet_*`` name. Every series carries the target labels ``province`` and ``service`` (Prometheus scrape
configuration, ServiceMonitor relabelling).
"""

from __future__ import annotations

from typing import Any

from labornet.insurance.domain.transfer import TERMINAL

DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
OPEN_TRANSFER = 'state!~"' + "|".join(sorted(state.value for state in TERMINAL)) + '"'


def error_ratio(selector: str, by: str = "") -> str:
    """5xx share of requests; 0 (not empty) for whatever answered without a server error."""
    grouping = f"sum by ({by}) " if by else "sum "
    total = f"{grouping}(rate(labornet_http_request_duration_seconds_count{{{selector}}}[{RATE}]))"
    errors = f'{grouping}(rate(labornet_http_request_duration_seconds_count{{{selector}, code=~"5.."}}[{RATE}]))'
    return f"({errors} / {total}) or ({total} * 0)"


class Board:
    """Lays panels out left to right in rows of 24 grid units."""

    def __init__(self, uid: str, title: str, description: str, variables: list[dict[str, Any]]) -> None:
        self.uid = uid
        self.title = title
        self.description = description
        self.variables = variables
        self.panels: list[dict[str, Any]] = []
        self.x = 0
        self.y = 0
        self.row_height = 0

    def _next_id(self) -> int:
        return len(self.panels) + 1

    def row(self, title: str) -> None:
        self._wrap()
        self.panels.append(
            {
                "id": self._next_id(),
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def _wrap(self) -> None:
        if self.x:
            self.y += self.row_height
            self.x = 0
            self.row_height = 0

    def _place(self, w: int, h: int) -> dict[str, int]:
        if self.x + w > 24:
            self._wrap()
        position = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_height = max(self.row_height, h)
        return position

    def add(
        self,
        kind: str,
        title: str,
        targets: list[tuple[str, str]],
        *,
        unit: str = "short",
        w: int = 12,
        h: int = 8,
        description: str = "",
        stack: bool = False,
        thresholds: tuple[float, ...] = (),
        instant: bool = False,
        transformations: list[dict[str, Any]] | None = None,
    ) -> None:
        """A panel; ``targets`` are (PromQL, legend) pairs."""
        steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
        for value, color in zip(thresholds, ("orange", "red"), strict=False):
            steps.append({"color": color, "value": value})
        panel: dict[str, Any] = {
            "id": self._next_id(),
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": self._place(w, h),
            "targets": [
                {
                    "refId": chr(ord("A") + index),
                    "datasource": DS,
                    "expr": expr,
                    "legendFormat": legend,
                    "range": not instant,
                    "instant": instant,
                    **({"format": "table"} if kind == "table" else {}),
                }
                for index, (expr, legend) in enumerate(targets)
            ],
            "fieldConfig": {
                "defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
                "overrides": [],
            },
        }
        if kind == "timeseries":
            panel["fieldConfig"]["defaults"]["custom"] = {
                "drawStyle": "line",
                "lineWidth": 1,
                "fillOpacity": 15 if stack else 5,
                "showPoints": "never",
                "stacking": {"mode": "normal" if stack else "none", "group": "A"},
            }
            panel["options"] = {
                "legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull", "max"]},
                "tooltip": {"mode": "multi", "sort": "desc"},
            }
        elif kind == "stat":
            panel["options"] = {
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "background",
                "graphMode": "area",
                "textMode": "value_and_name",
                "justifyMode": "auto",
                "orientation": "auto",
            }
        elif kind == "table":
            panel["options"] = {"showHeader": True, "cellHeight": "sm"}
            panel["transformations"] = transformations or []
        self.panels.append(panel)

    def to_json(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["labornet"],
            "timezone": "browser",
            "editable": True,
            "graphTooltip": 1,
            "refresh": "30s",
            "schemaVersion": 39,
            "version": 1,
            "time": {"from": "now-6h", "to": "now"},
            "annotations": {"list": []},
            "links": [
                {
                    "type": "dashboards",
                    "tags": ["labornet"],
                    "asDropdown": False,
                    "includeVars": True,
                    "keepTime": True,
                    "title": "LaborNet",
                }
            ],
            "templating": {"list": self.variables},
            "panels": self.panels,
        }


def _datasource_variable() -> dict[str, Any]:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
        "options": [],
    }


def _query_variable(name: str, label: str, query: str, *, multi: bool) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-values"},
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
        **({"allValue": ".*"} if multi else {}),
        "current": {},
        "hide": 0,
        "options": [],
    }


def node_dashboard() -> dict[str, Any]:
    f = 'province="$province", service=~"$service"'
    p = 'province="$province"'
    board = Board(
        "labornet-node",
        "LaborNet / node",
        "One province node: its services' HTTP, events, bus health, replication and workflows.",
        [
            _datasource_variable(),
            _query_variable("province", "Province", 'label_values(up{job="labornet"}, province)', multi=False),
            _query_variable(
                "service", "Service", 'label_values(up{job="labornet", province="$province"}, service)', multi=True
            ),
        ],
    )
    board.row("Overview")
    board.add("stat", "Services up", [(f'sum(up{{job="labornet", {f}}})', "up")], w=4, h=4)
    board.add(
        "stat",
        "Requests / s",
        [(f"sum(rate(labornet_http_request_duration_seconds_count{{{f}}}[{RATE}]))", "req/s")],
        unit="reqps",
        w=4,
        h=4,
    )
    board.add(
        "stat",
        "5xx ratio",
        [(error_ratio(f), "5xx")],
        unit="percentunit",
        thresholds=(0.01, 0.05),
        w=4,
        h=4,
    )
    board.add(
        "stat",
        "Outbox backlog",
        [(f"sum(labornet_outbox_backlog{{{f}}})", "rows")],
        thresholds=(100, 1000),
        w=4,
        h=4,
    )
    board.add(
        "stat",
        "Consumer lag",
        [(f"sum(labornet_consumer_lag{{{f}}})", "records")],
        thresholds=(100, 1000),
        w=4,
        h=4,
    )
    board.add(
        "stat",
        "Quarantined",
        [(f"sum(labornet_quarantined_events{{{f}}})", "records")],
        thresholds=(1, 10),
        w=4,
        h=4,
    )

    board.row("HTTP")
    board.add(
        "timeseries",
        "Requests per second by status code",
        [
            (
                f"sum by (service, code) (rate(labornet_http_request_duration_seconds_count{{{f}}}[{RATE}]))",
                "{{service}} {{code}}",
            )
        ],
        unit="reqps",
        stack=True,
    )
    board.add(
        "timeseries",
        "Latency p50 / p95 / p99",
        [
            (
                f"histogram_quantile({q}, sum by (le, service) "
                f"(rate(labornet_http_request_duration_seconds_bucket{{{f}}}[{RATE}])))",
                f"{{{{service}}}} p{int(q * 100)}",
            )
            for q in (0.5, 0.95, 0.99)
        ],
        unit="s",
    )
    board.add(
        "timeseries",
        "Server errors (5xx) ratio",
        [(error_ratio(f, "service"), "{{service}}")],
        unit="percentunit",
    )
    board.add(
        "table",
        "Slowest routes (p95 over the last 5 minutes)",
        [
            (
                "topk(15, histogram_quantile(0.95, sum by (le, service, method, route) "
                f'(rate(labornet_http_request_duration_seconds_bucket{{{f}, route!="unmatched"}}[5m]))))',
                "",
            )
        ],
        unit="s",
        instant=True,
    )

    board.row("Events")
    board.add(
        "timeseries",
        "Published per second by topic",
        [(f"sum by (service, topic) (rate(labornet_events_published_total{{{f}}}[{RATE}]))", "{{topic}}")],
        unit="ops",
        w=8,
    )
    board.add(
        "timeseries",
        "Consumed per second by outcome",
        [
            (
                f"sum by (service, outcome) (rate(labornet_events_consumed_total{{{f}}}[{RATE}]))",
                "{{service}} {{outcome}}",
            )
        ],
        unit="ops",
        w=8,
    )
    board.add(
        "timeseries",
        "Rejected and dead-lettered by reason",
        [
            (
                f"sum by (service, reason) (rate(labornet_events_rejected_total{{{f}}}[{RATE}]))",
                "rejected {{service}} {{reason}}",
            ),
            (
                f"sum by (service, reason) (rate(labornet_events_dead_lettered_total{{{f}}}[{RATE}]))",
                "dead-lettered {{service}} {{reason}}",
            ),
        ],
        unit="ops",
        w=8,
    )
    board.add(
        "timeseries",
        "Handler retries and relay failures",
        [
            (f"sum by (service) (rate(labornet_event_retries_total{{{f}}}[{RATE}]))", "retries {{service}}"),
            (
                f"sum by (service) (rate(labornet_outbox_publish_failures_total{{{f}}}[{RATE}]))",
                "relay failures {{service}}",
            ),
        ],
        unit="ops",
        w=24,
        h=6,
    )

    board.row("Bus health")
    board.add(
        "timeseries",
        "Consumer lag by group and topic",
        [(f"sum by (group, topic) (labornet_consumer_lag{{{f}}})", "{{group}} {{topic}}")],
        w=8,
    )
    board.add(
        "timeseries",
        "Outbox backlog",
        [(f"sum by (service) (labornet_outbox_backlog{{{f}}})", "{{service}}")],
        w=8,
    )
    board.add(
        "timeseries",
        "Oldest unpublished outbox row",
        [(f"max by (service) (labornet_outbox_oldest_pending_age_seconds{{{f}}})", "{{service}}")],
        unit="s",
        w=8,
    )
    board.add(
        "timeseries",
        "Quarantined records",
        [(f"sum by (service) (labornet_quarantined_events{{{f}}})", "{{service}}")],
        w=8,
    )
    board.add(
        "timeseries",
        "Replica rows differing from their origin (anti-entropy)",
        [(f"sum by (service, origin) (labornet_antientropy_differing_rows{{{f}}})", "{{service}} of {{origin}}")],
        w=8,
    )
    board.add(
        "timeseries",
        "SQLite writers waiting for the write lock, and refused",
        [
            (f"sum by (service) (labornet_db_writers_waiting{{{f}}})", "waiting {{service}}"),
            (
                f"sum by (service) (increase(labornet_db_writers_refused_total{{{f}}}[5m]))",
                "refused (5 min) {{service}}",
            ),
        ],
        w=8,
        description="SQLite only (ADR 35): a node's writers queue in the process for the write lock. A queue that "
        "stays long, or any refusal (a 503 to the caller), is the alert LabornetDatabaseBusy.",
    )
    board.add(
        "timeseries",
        "Assigned partitions by consumer group",
        [(f"sum by (group) (labornet_consumer_assigned_partitions{{{f}}})", "{{group}}")],
        w=8,
    )
    board.add(
        "timeseries",
        "The broker's log found lost, and not yet published again",
        [
            (
                f"sum by (service, sign) (increase(labornet_broker_log_losses_total{{{f}}}[1h]))",
                "found (1 h) {{service}} {{sign}}",
            ),
            (f"max by (service) (labornet_broker_log_loss_pending{{{f}}})", "pending {{service}}"),
        ],
        w=16,
        description="ADR 9: a new cluster id, a vanished topic or an end offset gone down; the relay publishes again "
        "what the log held. Pending stays 1 while the tries fail (the broker watch tries at every check); for 5 "
        "minutes it is the alert LabornetLostLogNotRepublished.",
    )
    board.add(
        "timeseries",
        "Broker silence and age of the lag measurement",
        [
            (f"max by (service) (labornet_broker_silent_seconds{{{f}}})", "broker silent {{service}}"),
            (
                f"time() - max by (group) (labornet_consumer_lag_measured_timestamp_seconds{{{f}}})",
                "lag measured ago {{group}}",
            ),
        ],
        unit="s",
        w=24,
        h=6,
        description="A few seconds normally. Above LABORNET_BROKER_UNREADY_AFTER_S (20 s) /readyz answers 503; "
        "while the broker is silent the lag panels show the last lag measured, this long ago.",
    )

    board.row("Replication (end-to-end event age on apply)")
    board.add(
        "timeseries",
        "Event age p95 by origin",
        [
            (
                f"histogram_quantile(0.95, sum by (le, service, origin) "
                f"(rate(labornet_event_age_seconds_bucket{{{f}}}[{RATE}])))",
                "{{origin}} → {{service}}",
            )
        ],
        unit="s",
    )
    board.add(
        "timeseries",
        "Events applied per second by origin",
        [(f"sum by (service, origin) (rate(labornet_event_age_seconds_count{{{f}}}[{RATE}]))", "{{origin}}")],
        unit="ops",
    )

    board.row("Jobs")
    board.add(
        "timeseries",
        "Vacancies held by owner province and state",
        [(f"sum by (owner_province, state) (labornet_jobs_vacancies{{{p}}})", "{{owner_province}} {{state}}")],
        w=8,
    )
    board.add(
        "timeseries",
        "Replica changes by result",
        [(f"sum by (result) (rate(labornet_jobs_replica_changes_total{{{p}}}[{RATE}]))", "{{result}}")],
        unit="ops",
        w=8,
    )
    board.add(
        "timeseries",
        "Search latency p95 (database part)",
        [
            (
                f"histogram_quantile(0.95, sum by (le) (rate(labornet_jobs_search_duration_seconds_bucket{{{p}}}"
                f"[{RATE}])))",
                "p95",
            )
        ],
        unit="s",
        w=8,
    )
    board.add(
        "timeseries",
        "Public reads waiting for a database connection, and reads a statement",
        [
            (f"sum(labornet_jobs_replica_reads_waiting{{{p}}})", "waiting"),
            (
                f"sum by (kind) (rate(labornet_jobs_replica_reads_per_statement_sum{{{p}}}[{RATE}])) / "
                f"sum by (kind) (rate(labornet_jobs_replica_reads_per_statement_count{{{p}}}[{RATE}]))",
                "reads a statement ({{kind}})",
            ),
        ],
        w=12,
        description="PostgreSQL only (ADR 36): reads that find both held connections busy wait and are gathered, "
        "answered together by one statement. A queue that stays above zero: the database answers too slowly for "
        "the reads asked.",
    )
    board.add(
        "timeseries",
        "Matches recorded by vacancy province",
        [(f"sum by (owner_province) (rate(labornet_jobs_matches_total{{{p}}}[{RATE}]))", "{{owner_province}}")],
        unit="ops",
        w=12,
    )
    board.add(
        "timeseries",
        "Matches delivered by channel and outcome",
        [
            (
                f"sum by (channel, outcome) (rate(labornet_jobs_match_deliveries_total{{{p}}}[{RATE}]))",
                "{{channel}} {{outcome}}",
            )
        ],
        unit="ops",
        w=12,
    )

    board.row("Insurance transfers")
    board.add(
        "timeseries",
        "Transfers by side and state",
        [(f"sum by (side, state) (labornet_insurance_transfers{{{p}}})", "{{side}} {{state}}")],
        w=8,
    )
    board.add(
        "timeseries",
        "Overdue transfers",
        [(f"sum by (side) (labornet_insurance_transfers_overdue{{{p}}})", "{{side}}")],
        w=8,
    )
    board.add(
        "timeseries",
        "Time from filing to each state (p95, 6 h window)",
        [
            (
                "histogram_quantile(0.95, sum by (le, side, state) "
                f"(rate(labornet_insurance_transfer_step_seconds_bucket{{{p}}}[6h])))",
                "{{side}} {{state}}",
            )
        ],
        unit="s",
        w=8,
    )
    board.add(
        "stat",
        "Settlements unpaid (CNY)",
        [
            (f"sum(labornet_insurance_settlements_pending_yuan{{{p}}})", "owed to partners"),
            (f"sum(labornet_insurance_settlements_receivable_yuan{{{p}}})", "owed by partners"),
        ],
        unit="none",
        w=24,
        h=4,
    )

    board.row("Rights cases")
    board.add(
        "timeseries",
        "Cases by side and state",
        [(f"sum by (side, state) (labornet_rights_cases{{{p}}})", "{{side}} {{state}}")],
        w=8,
        description="side: home (filed here), handling (referred here), former (declined here).",
    )
    board.add(
        "timeseries",
        "Overdue cases by side and deadline",
        [(f"sum by (side, deadline) (labornet_rights_cases_overdue{{{p}}})", "{{side}} {{deadline}}")],
        w=8,
    )
    board.add(
        "timeseries",
        "Amounts owed and recovered (CNY)",
        [
            (f"sum by (side) (labornet_rights_amount_owed_yuan{{{p}}})", "owed {{side}}"),
            (f"sum by (side) (labornet_rights_amount_recovered_yuan{{{p}}})", "recovered {{side}}"),
        ],
        w=8,
    )

    board.row("Labour brands")
    board.add(
        "timeseries",
        "Brands held by origin province and state",
        [(f"sum by (origin_province, state) (labornet_brands_brands{{{p}}})", "{{origin_province}} {{state}}")],
        w=8,
    )
    board.add(
        "timeseries",
        "Demands posted, received and answered per hour",
        [
            (
                f"sum by (origin_province) (increase(labornet_brands_demands_posted_total{{{p}}}[1h]))",
                "posted to {{origin_province}}",
            ),
            (
                f"sum by (demanding_province) (increase(labornet_brands_demands_received_total{{{p}}}[1h]))",
                "received from {{demanding_province}}",
            ),
            (
                f"sum by (decision, by) (increase(labornet_brands_demands_answered_total{{{p}}}[1h]))",
                "answered {{decision}} ({{by}})",
            ),
        ],
        w=8,
    )
    board.add(
        "timeseries",
        "Brand replica changes and search latency p95",
        [
            (f"sum by (result) (rate(labornet_brands_replica_changes_total{{{p}}}[{RATE}]))", "replica {{result}}"),
            (
                f"histogram_quantile(0.95, sum by (le) (rate(labornet_brands_search_duration_seconds_bucket{{{p}}}"
                f"[{RATE}])))",
                "search p95 (s)",
            ),
        ],
        w=8,
    )
    return board.to_json()


def federation_dashboard() -> dict[str, Any]:
    f = 'province=~"$province"'
    board = Board(
        "labornet-federation",
        "LaborNet / federation overview",
        "All nine nodes: availability, the federation bus, replication between provinces and the shared workflows.",
        [
            _datasource_variable(),
            _query_variable("province", "Province", 'label_values(up{job="labornet"}, province)', multi=True),
        ],
    )
    board.row("Nodes")
    board.add(
        "stat",
        "Services up per province (of 4)",
        [(f'sum by (province) (up{{job="labornet", {f}}})', "{{province}}")],
        w=12,
        h=6,
    )
    board.add(
        "table",
        "Targets down",
        [(f'up{{job="labornet", {f}}} == 0', "")],
        w=12,
        h=6,
        instant=True,
        description="Every service Prometheus cannot scrape right now (empty when all are up).",
    )
    board.add(
        "timeseries",
        "HTTP requests per second by province",
        [(f"sum by (province) (rate(labornet_http_request_duration_seconds_count{{{f}}}[{RATE}]))", "{{province}}")],
        unit="reqps",
        w=8,
    )
    board.add(
        "timeseries",
        "HTTP p95 latency by province",
        [
            (
                "histogram_quantile(0.95, sum by (le, province) "
                f"(rate(labornet_http_request_duration_seconds_bucket{{{f}}}[{RATE}])))",
                "{{province}}",
            )
        ],
        unit="s",
        w=8,
    )
    board.add(
        "timeseries",
        "5xx ratio by province",
        [(error_ratio(f, "province"), "{{province}}")],
        unit="percentunit",
        w=8,
    )

    board.row("Federation bus")
    board.add(
        "timeseries",
        "Events published per second by province",
        [(f"sum by (province) (rate(labornet_events_published_total{{{f}}}[{RATE}]))", "{{province}}")],
        unit="ops",
        w=8,
        stack=True,
    )
    board.add(
        "timeseries",
        "Events applied per second by province",
        [
            (
                f'sum by (province) (rate(labornet_events_consumed_total{{{f}, outcome="applied"}}[{RATE}]))',
                "{{province}}",
            )
        ],
        unit="ops",
        w=8,
        stack=True,
    )
    board.add(
        "timeseries",
        "Rejected events by province and reason",
        [
            (
                f"sum by (province, reason) (rate(labornet_events_rejected_total{{{f}}}[{RATE}]))",
                "{{province}} {{reason}}",
            )
        ],
        unit="ops",
        w=8,
    )
    board.add(
        "timeseries",
        "Consumer lag by province",
        [(f"sum by (province) (labornet_consumer_lag{{{f}}})", "{{province}}")],
        w=6,
    )
    board.add(
        "timeseries",
        "Outbox backlog by province",
        [(f"sum by (province) (labornet_outbox_backlog{{{f}}})", "{{province}}")],
        w=6,
    )
    board.add(
        "timeseries",
        "Oldest unpublished outbox row by province",
        [(f"max by (province) (labornet_outbox_oldest_pending_age_seconds{{{f}}})", "{{province}}")],
        unit="s",
        w=6,
    )
    board.add(
        "timeseries",
        "Quarantined records and rows differing from their origins by province",
        [
            (f"sum by (province) (labornet_quarantined_events{{{f}}})", "quarantined {{province}}"),
            (f"sum by (province) (labornet_antientropy_differing_rows{{{f}}})", "differing {{province}}"),
        ],
        w=6,
    )

    board.row("Replication between provinces")
    board.add(
        "timeseries",
        "End-to-end event age p95 (origin → receiving province)",
        [
            (
                "histogram_quantile(0.95, sum by (le, origin, province) "
                f"(rate(labornet_event_age_seconds_bucket{{{f}}}[{RATE}])))",
                "{{origin}} → {{province}}",
            )
        ],
        unit="s",
    )
    board.add(
        "table",
        "Event age p95 over 15 minutes: rows receive, columns originate",
        [
            (
                "histogram_quantile(0.95, sum by (le, origin, province) "
                f"(rate(labornet_event_age_seconds_bucket{{{f}}}[15m])))",
                "",
            )
        ],
        unit="s",
        instant=True,
        transformations=[
            {
                "id": "groupingToMatrix",
                "options": {"columnField": "origin", "rowField": "province", "valueField": "Value"},
            }
        ],
    )
    board.add(
        "timeseries",
        "Open vacancies per owner (owner's count)",
        [(f'max by (owner_province) (labornet_jobs_vacancies{{{f}, state="open"}})', "{{owner_province}}")],
        stack=True,
    )
    board.add(
        "timeseries",
        "Vacancy replica divergence per owner (max − min across nodes)",
        [
            (
                f'max by (owner_province) (labornet_jobs_vacancies{{{f}, state="open"}})'
                f' - min by (owner_province) (labornet_jobs_vacancies{{{f}, state="open"}})',
                "{{owner_province}}",
            )
        ],
        description="0 when every node's replica holds as many open vacancies of an owner as the others.",
    )

    board.row("Workflows")
    board.add(
        "timeseries",
        "Insurance transfers by state (counted once, on the receiving side)",
        [(f'sum by (state) (labornet_insurance_transfers{{{f}, side="receiving"}})', "{{state}}")],
        w=8,
        stack=True,
    )
    board.add(
        "table",
        "Open transfers: from → to",
        [
            (
                f'sum by (from_province, to_province) (labornet_insurance_transfers{{{f}, side="receiving", '
                f"{OPEN_TRANSFER}}})",
                "",
            )
        ],
        w=8,
        instant=True,
    )
    board.add(
        "timeseries",
        "Overdue transfers by province and side",
        [(f"sum by (province, side) (labornet_insurance_transfers_overdue{{{f}}})", "{{province}} {{side}}")],
        w=8,
    )
    board.add(
        "timeseries",
        "Rights cases by state (counted once, at the home province)",
        [(f'sum by (state) (labornet_rights_cases{{{f}, side="home"}})', "{{state}}")],
        w=8,
        stack=True,
    )
    board.add(
        "timeseries",
        "Overdue rights cases by province and deadline",
        [
            (
                f"sum by (province, deadline) (labornet_rights_cases_overdue{{{f}}})",
                "{{province}} {{deadline}}",
            )
        ],
        w=8,
    )
    board.add(
        "table",
        "Brand demands posted in the last 24 h: demanding province → brand's province",
        [
            (
                f"sum by (province, origin_province) (increase(labornet_brands_demands_posted_total{{{f}}}[1d]))",
                "",
            )
        ],
        w=8,
        instant=True,
    )
    board.add(
        "timeseries",
        "Recognised labour brands per origin province",
        [
            (
                f'max by (origin_province) (labornet_brands_brands{{{f}, state="recognised"}})',
                "{{origin_province}}",
            )
        ],
        w=24,
        stack=True,
    )
    return board.to_json()


DASHBOARDS = {
    "labornet-node.json": node_dashboard,
    "labornet-federation.json": federation_dashboard,
}

"""Metrics of precise push: matches recorded and delivered (the vacancy and search metrics live with their code)."""

from __future__ import annotations

from prometheus_client import Counter

MATCHES = Counter(
    "labornet_jobs_matches_total",
    "Matches recorded for this node's workers (once per subscription and vacancy), by the vacancy's province",
    ["owner_province"],
)
MATCH_DELIVERIES = Counter(
    "labornet_jobs_match_deliveries_total",
    "Matches delivered to workers: channel stream (sent on a live stream) or webhook (delivered, retrying, failed)",
    ["channel", "outcome"],
)
for _outcome in ("delivered", "retrying", "failed"):  # every series exists from the start, at 0
    MATCH_DELIVERIES.labels("webhook", _outcome)
MATCH_DELIVERIES.labels("stream", "sent")

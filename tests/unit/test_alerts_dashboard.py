"""The Grafana dashboard of deploy/monitoring: it loads, and it shows only real metrics.

A dashboard that queries a misspelt or not-yet-exported metric shows "No data" and nobody
notices; here every query is read and each metric it names must be one the operator's
process exports, with the labels the query groups and filters by.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.integration.test_alerts import METRIC, check_labels, exported_metrics, labels_by_metric

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "monitoring" / "grafana-dashboard.json"


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def test_dashboard_is_grafana_json_with_unique_ids_and_a_datasource_variable() -> None:
    board = dashboard()
    assert board["uid"] == "cleo-operator"
    assert board["title"] == "cleo-operator"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert ref_ids, panel["title"]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        assert panel["description"], panel["title"]


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_query_reads_exported_metrics_with_their_labels() -> None:
    exported = exported_metrics()
    labels = labels_by_metric()
    queries = [t["expr"] for p in panels() for t in p["targets"]]
    variable = dashboard()["templating"]["list"][1]["definition"]
    for query in [*queries, variable]:
        metrics = set(METRIC.findall(query))
        assert metrics or "up{" in query, f"{query!r} reads none of the operator's metrics"
        unknown = metrics - exported
        assert not unknown, f"{query!r} reads metrics the operator does not export: {unknown}"
        check_labels(query, labels)


def test_dashboard_covers_reconciles_api_writes_backups_restores_failovers_and_keys() -> None:
    read = {m for p in panels() for t in p["targets"] for m in METRIC.findall(t["expr"])}
    for metric in (
        "cleo_operator_reconciles_total",
        "cleo_operator_reconcile_errors_total",
        "cleo_operator_reconcile_duration_seconds_bucket",
        "cleo_operator_api_writes_total",
        "cleo_operator_tenant_ready",
        "cleo_operator_backup_last_success_timestamp_seconds",
        "cleo_operator_backup_last_verification_passed",
        "cleo_operator_backup_failures_total",
        "cleo_operator_backup_restores_total",
        "cleo_operator_failovers_total",
        "cleo_operator_failover_objective_missed_total",
        "cleo_operator_failover_last_rto_seconds",
        "cleo_operator_key_next_rotation_timestamp_seconds",
    ):
        assert metric in read, metric

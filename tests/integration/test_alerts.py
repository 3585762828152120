"""The alert rules of deploy/monitoring: valid, unit-tested with promtool, on real metrics.

`promtool test rules` runs deploy/monitoring/tests/*.test.yaml (alerts-days.test.yaml: the
alerts that take days to fire, evaluated every 5 minutes to keep promtool fast): each alert
fires on the series it is about (with its labels and text) and stays silent on the healthy
ones beside it. Here, on top: the three copies of the rules (the rule file, the PrometheusRule for
clusters without Helm, the chart's copy) agree, and every metric an alert reads is one the
operator exports (with the labels the alert uses), except those listed in PENDING, which no
metrics module defines yet: the alerts on them stay silent until one does.

promtool is the toolchain's (tests/harness/promtool.py), built from Prometheus's Go module.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

import cleo_operator
from tests.harness.promtool import promtool

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "deploy" / "monitoring"
RULES = MONITORING / "cleo-operator.rules.yaml"

# Metrics alerts read that no `metrics` module of the operator defines yet (see the rule
# file's comments); an entry may stay after its metric lands, the check then uses the metric.
# The labels are the ones the alerts expect them to have.
PENDING: dict[str, set[str]] = {}
# Labels Prometheus adds to every series it scrapes, and the histogram bucket label.
TARGET_LABELS = {"job", "instance", "pod", "namespace", "service", "container", "le"}
METRIC = re.compile(r"\b(cleo_operator_[a-z0-9_]+|process_[a-z0-9_]+|python_[a-z0-9_]+)\b")
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def metric_modules() -> list[ModuleType]:
    """Every `metrics` module of the package (observability, backup, failover, ...)."""
    return [
        importlib.import_module(info.name)
        for info in pkgutil.walk_packages(cleo_operator.__path__, "cleo_operator.")
        if info.name.rsplit(".", 1)[-1] == "metrics"
    ]


def exported_metrics() -> set[str]:
    """Every series name the operator's process can expose."""
    assert metric_modules()
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + s for s in _SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def labels_by_metric() -> dict[str, set[str]]:
    """Label names of each of the operator's metrics, under every series name it exposes."""
    result: dict[str, set[str]] = {}
    for module in metric_modules():
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                # prometheus_client keeps the declared names here; no public accessor exists.
                name, labels = value._name, set(value._labelnames)
                for suffix in ("", "_total", "_bucket", "_sum", "_count", "_created"):
                    result[name + suffix] = labels
    return result


def labels_used(query: str) -> set[str]:
    """Label names a PromQL query groups by or matches on."""
    used = {n.strip() for group in re.findall(r"by \(([^)]*)\)", query) for n in group.split(",")}
    used |= set(re.findall(r"[{,]\s*([a-z_]+)\s*[!=]~?", query))
    used |= set(re.findall(r"label_values\([a-z_]+,\s*([a-z_]+)\)", query))
    return used - {""}


def check_labels(query: str, labels: dict[str, set[str]]) -> None:
    used = labels_used(query)
    for metric in set(METRIC.findall(query)) & set(labels):
        allowed = labels[metric] | TARGET_LABELS
        assert used <= allowed, f"{query!r}: {sorted(used - allowed)} are not labels of {metric}"


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def promtool_tests() -> list[str]:
    """The promtool test files, relative to deploy/monitoring."""
    found = sorted(str(p.relative_to(MONITORING)) for p in MONITORING.glob("tests/*.test.yaml"))
    assert "tests/alerts.test.yaml" in found
    return found


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    files = promtool_tests()
    result = subprocess.run(
        [promtool(), "test", "rules", *files],
        cwd=MONITORING,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(files), result.stdout


def test_every_alert_is_tested_firing_and_carries_severity_and_text() -> None:
    tests = [
        test
        for name in promtool_tests()
        for test in yaml.safe_load((MONITORING / name).read_text())["tests"]
    ]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    silent = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if not case.get("exp_alerts")
    }
    for rule in rules():
        name = rule["alert"]
        assert name in fired, f"{name}: no promtool case expects it to fire"
        assert name in silent, f"{name}: no promtool case expects it to stay silent"
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"], name
        assert len(rule["annotations"]["description"]) > 40, name
        assert rule["annotations"]["runbook_url"].endswith(f"/docs/runbooks/{name}.md"), name
        assert re.fullmatch(r"Cleo[A-Za-z]+", name), name


def test_alerts_read_only_exported_metrics_or_pending_ones() -> None:
    exported = exported_metrics()
    read = {m for rule in rules() for m in METRIC.findall(rule["expr"])}
    unknown = read - exported - set(PENDING)
    assert not unknown, f"alerts read metrics nobody exports: {sorted(unknown)}"
    assert read >= set(PENDING), "PENDING lists metrics no alert reads"
    labels = {**PENDING, **labels_by_metric()}
    for rule in rules():
        check_labels(rule["expr"], labels)
        # Labels the annotations print must survive the expression's aggregation.
        expr = rule["expr"]
        printed = set(re.findall(r"\$labels\.([a-z_]+)", str(rule["annotations"])))
        grouped = re.findall(r"by \(([^)]*)\)", expr)
        if grouped:
            kept = {n.strip() for group in grouped for n in group.split(",")}
        elif re.search(r"\b(sum|min|max|avg|count|absent)\s*\(", expr):
            kept = set()
        else:
            kept = {n for m in METRIC.findall(expr) for n in labels.get(m, set())}
        kept |= set(rule["labels"])
        assert printed <= kept, f"{rule['alert']}: prints {sorted(printed - kept)}, lost"


def test_the_three_copies_of_the_rules_agree() -> None:
    chart_copy = REPO / "charts" / "cleo-operator" / "files" / "cleo-operator.rules.yaml"
    assert chart_copy.read_bytes() == RULES.read_bytes(), f"copy {RULES} to {chart_copy}"
    resource = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert resource["apiVersion"] == "monitoring.coreos.com/v1"
    assert resource["kind"] == "PrometheusRule"
    assert resource["spec"] == yaml.safe_load(RULES.read_text())

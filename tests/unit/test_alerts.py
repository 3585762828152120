"""The alert rules of deploy/monitoring: valid, unit-tested with promtool, on real metrics.

`promtool test rules` runs deploy/monitoring/tests/alerts.test.yaml: each alert fires on the
series it is about (with its labels and text) and stays silent on the healthy ones beside
it. Here, on top: the three copies of the rules (the rule file, the PrometheusRule for
clusters without Helm, the chart's copy) agree, and every metric an alert reads is one the
operator exports, except those listed in PENDING, which are not exported yet (the alerts on
them stay silent until they are; an entry must leave PENDING once its metric exists).

promtool comes from Debian's `prometheus` package (.ci/system-deps installs it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import cleo_operator.backup.metrics
import cleo_operator.observability.metrics

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "deploy" / "monitoring"
RULES = MONITORING / "cleo-operator.rules.yaml"

# Metrics alerts read that the operator does not export yet (see the rule file's comments).
PENDING = {
    "cleo_operator_key_next_rotation_timestamp_seconds",
    "cleo_operator_failovers_total",
    "cleo_operator_failover_objective_missed_total",
}
_METRIC = re.compile(r"\b(cleo_operator_[a-z0-9_]+|process_[a-z0-9_]+|python_[a-z0-9_]+)\b")
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def exported_metrics() -> set[str]:
    """Every series name the operator's process can expose (its modules are imported above)."""
    assert cleo_operator.observability.metrics.RECONCILES is not None
    assert cleo_operator.backup.metrics.BACKUPS is not None
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + s for s in _SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: install Debian's prometheus package (.ci/system-deps)")
    return found


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", "tests/alerts.test.yaml"],
        cwd=MONITORING,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_carries_severity_and_text() -> None:
    tests = yaml.safe_load((MONITORING / "tests" / "alerts.test.yaml").read_text())["tests"]
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
        assert re.fullmatch(r"Cleo[A-Za-z]+", name), name


def test_alerts_read_only_exported_metrics_or_pending_ones() -> None:
    exported = exported_metrics()
    read = {m for rule in rules() for m in _METRIC.findall(rule["expr"])}
    unknown = read - exported - PENDING
    assert not unknown, f"alerts read metrics nobody exports: {sorted(unknown)}"
    landed = PENDING & exported
    assert not landed, f"now exported, take them out of PENDING (and the rule comments): {landed}"
    assert read >= PENDING, "PENDING lists metrics no alert reads"


def test_the_three_copies_of_the_rules_agree() -> None:
    chart_copy = REPO / "charts" / "cleo-operator" / "files" / "cleo-operator.rules.yaml"
    assert chart_copy.read_bytes() == RULES.read_bytes(), f"copy {RULES} to {chart_copy}"
    resource = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert resource["apiVersion"] == "monitoring.coreos.com/v1"
    assert resource["kind"] == "PrometheusRule"
    assert resource["spec"] == yaml.safe_load(RULES.read_text())

"""The chart's alerts, as Helm renders them, pass promtool: every alert fires and stays silent
when it should, with the thresholds of the chart's default values.

The real `helm template` renders the chart with `metrics.prometheusRule.enabled` and default
values; the PrometheusRule's groups become a Prometheus rule file, which `promtool check
rules` must accept (every alert counted) and on which `promtool test rules` runs the unit
tests of the alerts, deploy/monitoring/tests/*.test.yaml (their `rule_files` pointed at the
rendered file; a promtool test file names its rule files, so the same cases run on the rule
file in tests/integration/test_alerts.py and on the chart's rendering here). Every alert the chart
renders must have a case that expects it to fire and one that expects it to stay silent.
Alerts with other thresholds must still be rules promtool accepts.

promtool is the toolchain's (e2e/toolchain/promtool, from Prometheus's Go module: the rule
engine of current Prometheus servers), and Helm too; no cluster is needed.
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.harness.promtool import promtool
from tests.integration import test_helm_template as template
from tests.integration.test_helm_template import RELEASE, VALUE_SETS, only, render

helm = template.helm
"""The template tests' fixture: the toolchain's helm, its state in a temporary folder."""

REPO = Path(__file__).resolve().parents[2]
ALERT_TESTS = REPO / "deploy" / "monitoring" / "tests"


def rendered_rules(helm: list[str], tmp_path: Path, values: dict[str, Any]) -> Path:
    """The PrometheusRule the chart renders with `values`, as a Prometheus rule file."""
    rule = only(render(helm, tmp_path, values), "PrometheusRule", RELEASE)
    path = tmp_path / "chart.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


def alert_names(rules: Path) -> list[str]:
    groups = yaml.safe_load(rules.read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=120
    )


def retargeted_tests(rules: Path, into: Path) -> list[Path]:
    """Copies of the alerts' promtool test files that test `rules` instead of the kit's file."""
    copies = []
    for source in sorted(ALERT_TESTS.glob("*.test.yaml")):
        test = yaml.safe_load(source.read_text())
        test["rule_files"] = [str(rules)]
        copy_path = into / source.name
        copy_path.write_text(yaml.safe_dump(test, sort_keys=False))
        copies.append(copy_path)
    assert copies, f"no promtool test files in {ALERT_TESTS}"
    return copies


def cases(test_files: list[Path]) -> tuple[set[str], set[str]]:
    """The alerts some case expects to fire, and those some case expects to stay silent."""
    fired: set[str] = set()
    silent: set[str] = set()
    for path in test_files:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else silent).add(case["alertname"])
    return fired, silent


def test_promtool_tests_every_alert_of_the_chart_with_default_thresholds(
    helm: list[str], tmp_path: Path
) -> None:
    rules = rendered_rules(helm, tmp_path, VALUE_SETS["monitoring"])
    alerts = alert_names(rules)
    assert len(alerts) >= 10, alerts

    checked = run("check", "rules", str(rules), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerts)} rules found" in checked.stdout, checked.stdout

    tests = retargeted_tests(rules, tmp_path)
    fired, silent = cases(tests)
    assert not set(alerts) - fired, f"no case expects these to fire: {set(alerts) - fired}"
    assert not set(alerts) - silent, f"no case expects these silent: {set(alerts) - silent}"

    result = run("test", "rules", *(str(t) for t in tests), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(tests), result.stdout
    assert "FAILED" not in result.stdout + result.stderr


def test_promtool_catches_an_alert_that_does_not_fire(helm: list[str], tmp_path: Path) -> None:
    """The run above would notice a broken alert: a threshold no case reaches fails it."""
    values: dict[str, Any] = copy.deepcopy(VALUE_SETS["monitoring"])
    values["metrics"]["prometheusRule"]["thresholds"] = {"backupMaxAgeHours": 10000}
    rules = rendered_rules(helm, tmp_path, values)
    result = run(
        "test", "rules", *(str(t) for t in retargeted_tests(rules, tmp_path)), cwd=tmp_path
    )
    assert result.returncode != 0
    assert "CleoBackupTooOld" in result.stdout + result.stderr


def test_promtool_accepts_the_alerts_with_other_thresholds(helm: list[str], tmp_path: Path) -> None:
    values: dict[str, Any] = copy.deepcopy(VALUE_SETS["monitoring"])
    values["metrics"]["prometheusRule"]["thresholds"] = {
        "operatorDownFor": "3m",
        "reconcileErrorsFor": "1h",
        "tenantNotReadyFor": "45m",
        "backupMaxAgeHours": 50,
        "verificationMaxAgeDays": 15,
        "keyRotationOverdueSeconds": 7200,
    }
    rules = rendered_rules(helm, tmp_path, values)
    checked = run("check", "rules", str(rules), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_names(rules))} rules found" in checked.stdout

"""docs/observability.md and docs/runbooks/ against what the operator really exports and alerts.

The metrics table is read row by row and compared with the prometheus_client registry after
importing every `metrics` module of the package: a metric without a row, a row without a
metric, or a row whose type or labels differ fails. Every alert of every copy of the rules
(any YAML file of the repository with ``alert:`` rules) carries a summary, a description and
a ``runbook_url`` that points at ``docs/runbooks/<AlertName>.md``, and that page exists and
says what the alert means, how to check and how to fix; every page has its alert.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY

from tests.integration.test_alerts import labels_by_metric, metric_modules

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "observability.md"
RUNBOOKS = REPO / "docs" / "runbooks"
ROW = re.compile(r"^\| `(cleo_operator_[a-z0-9_]+)` \| (\w+) \| ([^|]*) \|")
SECTIONS = ("## What it means", "## How to check", "## How to fix")


def documented() -> dict[str, tuple[str, set[str]]]:
    """name -> (type, labels) of each row of the metrics table."""
    rows: dict[str, tuple[str, set[str]]] = {}
    for line in DOC.read_text().splitlines():
        match = ROW.match(line)
        if match:
            name, kind, labels = match.groups()
            assert name not in rows, f"{name} has two rows"
            rows[name] = (kind, set(re.findall(r"`([a-z_]+)`", labels)))
    return rows


def exported() -> dict[str, tuple[str, set[str]]]:
    """name (as scraped: counters with _total) -> (type, labels) of the operator's metrics."""
    assert metric_modules()
    labels = labels_by_metric()
    found: dict[str, tuple[str, set[str]]] = {}
    for family in REGISTRY.collect():
        if not family.name.startswith("cleo_operator_"):
            continue
        name = family.name + ("_total" if family.type == "counter" else "")
        found[name] = (family.type, labels[family.name])
    return found


def test_every_exported_metric_is_documented_and_every_documented_one_exists() -> None:
    docs, real = documented(), exported()
    assert "cleo_operator_build_info" in real
    assert sorted(set(real) - set(docs)) == [], "exported but not in docs/observability.md"
    assert sorted(set(docs) - set(real)) == [], "documented but not exported"
    for name, (kind, labels) in real.items():
        assert docs[name] == (kind, labels), name


def test_build_info_says_the_version() -> None:
    from cleo_operator import __version__  # noqa: PLC0415

    value = REGISTRY.get_sample_value("cleo_operator_build_info", {"version": __version__})
    assert value == 1.0


def test_one_meaning_per_label_name() -> None:
    """`kind` is the custom resource's kind wherever it appears, never a file's kind."""
    for name, (_, labels) in exported().items():
        if "kind" in labels:
            assert name.startswith(("cleo_operator_reconcile", "cleo_operator_reconciles")), name
    assert exported()["cleo_operator_backup_last_size_bytes"][1] == {"tenant", "archive_kind"}


def rule_files() -> list[Path]:
    """Every YAML file of the repository that holds alerting rules (all copies of them)."""
    found = []
    for path in sorted(REPO.glob("**/*.yaml")):
        parts = set(path.relative_to(REPO).parts)
        if parts & {".venv", "node_modules", ".git", "tests"} or "templates" in parts:
            continue
        if re.search(r"^\s*- alert: ", path.read_text(errors="replace"), re.MULTILINE):
            found.append(path)
    return found


def alerts_of(path: Path) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text())
    groups = data["spec"]["groups"] if "spec" in data else data["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_every_alert_of_every_copy_has_text_and_a_runbook_that_exists() -> None:
    files = rule_files()
    names = {str(p.relative_to(REPO)) for p in files}
    assert {
        "deploy/monitoring/cleo-operator.rules.yaml",
        "deploy/monitoring/prometheusrule.yaml",
        "charts/cleo-operator/files/cleo-operator.rules.yaml",
    } <= names, names
    for path in files:
        for rule in alerts_of(path):
            name, notes = rule["alert"], rule["annotations"]
            assert notes.get("summary"), f"{path}: {name}"
            assert notes.get("description"), f"{path}: {name}"
            url = notes.get("runbook_url", "")
            assert url.endswith(f"/docs/runbooks/{name}.md"), f"{path}: {name}: {url!r}"
            page = RUNBOOKS / f"{name}.md"
            assert page.is_file(), f"{name}: {page} is missing"


def test_every_runbook_page_is_complete_and_belongs_to_an_alert() -> None:
    alerts = {
        rule["alert"] for rule in alerts_of(REPO / "deploy/monitoring/cleo-operator.rules.yaml")
    }
    pages = {p.stem for p in RUNBOOKS.glob("*.md")} - {"README"}
    assert pages == alerts
    index = (RUNBOOKS / "README.md").read_text()
    for name in alerts:
        text = (RUNBOOKS / f"{name}.md").read_text()
        assert text.startswith(f"# {name}\n"), name
        positions = [text.find(section) for section in SECTIONS]
        assert -1 not in positions, f"{name}: needs {SECTIONS}"
        assert positions == sorted(positions), f"{name}: {SECTIONS} in this order"
        for start, end in zip(positions, [*positions[1:], len(text)], strict=True):
            assert len(text[start:end].split()) > 15, f"{name}: a section is nearly empty"
        assert f"]({name}.md)" in index, f"{name} is not in docs/runbooks/README.md"

"""`cleo-operator check-tenants`: the stored tenants an upgrade would make invalid are named,
with the field to fix, from what `kubectl get cleotenants -o json` prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cleo_operator.cli import main
from cleo_operator.cli.common import EXIT_FAILED, EXIT_OK
from tests.harness.specs import tenant_manifest

IMAGE = "registry.example.com/cleoai:2.0.0"


def _listed(*tenants: dict[str, Any]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(tenants)})


def _pods_value() -> dict[str, Any]:
    # Stored raw by a release before autoscaling was typed: a Pods target of type Value.
    metric = {
        "type": "Pods",
        "pods": {"metric": {"name": "rps"}, "target": {"type": "Value", "value": "5"}},
    }
    return tenant_manifest(
        "legacy", {"workload": {"image": IMAGE}, "autoscaling": {"metrics": [metric]}}
    )


def test_an_invalid_stored_tenant_is_named_with_its_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tenant_manifest("fine", {"workload": {"image": IMAGE}})
    path = tmp_path / "tenants.json"
    path.write_text(_listed(good, _pods_value()))
    assert main(["check-tenants", "-f", str(path)]) == EXIT_FAILED
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 1, printed
    assert printed[0].startswith("CleoTenant legacy: ")
    assert "spec.autoscaling.metrics[0].pods.target.type" in printed[0]


def test_valid_tenants_exit_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tenants.json"
    path.write_text(_listed(tenant_manifest("fine", {"workload": {"image": IMAGE}})))
    assert main(["check-tenants", "--file", str(path)]) == EXIT_OK
    assert capsys.readouterr().out == ""


def test_input_that_is_not_the_tenants_json_is_a_clear_error(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text("items: []\n")
    assert main(["check-tenants", "-f", str(path)]) == EXIT_FAILED
    assert "kubectl get cleotenants -o json" in capfd.readouterr().err

"""The operator process itself: it starts, reconciles a tenant, reports, and stops cleanly;
it refuses to start, saying why, when the cluster is not ready for it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.cluster import LocalCluster
from tests.harness.cluster_fixtures import kubectl_json, wait_for
from tests.harness.operator_fixtures import OperatorProcess
from tests.harness.specs import IMAGE, tenant_manifest

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

REPO = Path(__file__).resolve().parent.parent


def tenant_yaml(name: str, **spec: Any) -> str:
    body = tenant_manifest(name, {"workload": {"image": IMAGE}, **spec})
    return yaml.safe_dump(body)


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return None


def wait_ready(cluster: LocalCluster, name: str, timeout: float = 60) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        tenant = kubectl_json(cluster, "get", "cleotenant", name)
        cond = condition(tenant, "Ready")
        if cond and cond["status"] == "True":
            return dict(tenant)
        return None

    result: dict[str, Any] = wait_for(ready, timeout=timeout, what=f"tenant {name} Ready")
    return result


def test_example_tenant_becomes_ready_with_its_namespace(
    cluster: LocalCluster, operator_process: OperatorProcess
) -> None:
    cluster.kubectl("apply", "-f", str(REPO / "examples" / "tenant.yaml"))
    tenant = wait_ready(cluster, "acme")
    assert tenant["status"]["observedGeneration"] == tenant["metadata"]["generation"]
    assert tenant["status"]["namespace"] == "cleo-acme"
    ready = condition(tenant, "Ready")
    assert ready is not None
    assert ready["observedGeneration"] == tenant["metadata"]["generation"]

    ns = kubectl_json(cluster, "get", "namespace", "cleo-acme")
    labels = ns["metadata"]["labels"]
    assert labels["cleoai.io/tenant"] == "acme"
    assert labels["app.kubernetes.io/managed-by"] == "cleo-operator"
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    owner = ns["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "CleoTenant",
        "acme",
        tenant["metadata"]["uid"],
    )
    assert "cleoai.io/finalizer" in tenant["metadata"]["finalizers"]

    # What a person sees first: `kubectl get cleotenants`.
    table = cluster.kubectl("get", "cleotenants").stdout
    header, row = table.splitlines()[0].split(), table.splitlines()[1].split()
    assert dict(zip(header, row, strict=False))["READY"] == "True"
    assert operator_process.alive()


def test_deleted_namespace_is_put_back(
    cluster: LocalCluster, operator_process: OperatorProcess
) -> None:
    cluster.kubectl("apply", "-f", "-", input=tenant_yaml("phoenix"))
    wait_ready(cluster, "phoenix")
    old_uid = kubectl_json(cluster, "get", "namespace", "cleo-phoenix")["metadata"]["uid"]
    cluster.kubectl("delete", "namespace", "cleo-phoenix", "--wait=true", "--timeout=90s")

    def recreated() -> bool:
        ns = kubectl_json(cluster, "get", "namespace", "cleo-phoenix")
        return bool(ns and ns["metadata"]["uid"] != old_uid and ns["status"]["phase"] == "Active")

    wait_for(recreated, timeout=60, what="the operator to recreate the deleted namespace")
    wait_ready(cluster, "phoenix")
    assert operator_process.alive()


def test_retain_keeps_the_namespace_and_marks_it_orphaned(
    cluster: LocalCluster, operator_process: OperatorProcess
) -> None:
    cluster.kubectl("apply", "-f", "-", input=tenant_yaml("keeper"))
    wait_ready(cluster, "keeper")
    cluster.kubectl("create", "configmap", "data", "-n", "cleo-keeper", "--from-literal=k=v")
    cluster.kubectl("delete", "cleotenant", "keeper", "--timeout=60s")
    assert kubectl_json(cluster, "get", "cleotenant", "keeper") is None
    ns = kubectl_json(cluster, "get", "namespace", "cleo-keeper")
    assert ns["metadata"]["labels"]["cleoai.io/orphaned"] == "true"
    assert not ns["metadata"].get("ownerReferences")
    # The garbage collector had its chance: the tenant's data is still there.
    assert kubectl_json(cluster, "get", "configmap", "data", "-n", "cleo-keeper") is not None
    assert operator_process.alive()


def test_delete_policy_removes_the_namespace_before_releasing(
    cluster: LocalCluster, operator_process: OperatorProcess
) -> None:
    cluster.kubectl("apply", "-f", "-", input=tenant_yaml("goner", deletionPolicy="Delete"))
    wait_ready(cluster, "goner")
    cluster.kubectl("delete", "cleotenant", "goner", "--wait=false")
    wait_for(
        lambda: kubectl_json(cluster, "get", "cleotenant", "goner") is None,
        timeout=120,
        what="the tenant to be finalized",
    )
    assert kubectl_json(cluster, "get", "namespace", "cleo-goner") is None
    assert operator_process.alive()


def _run_operator_once(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cleo_operator.cli", "run", "--metrics-port", "0", "--liveness", ""],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def bare_cluster(cluster: LocalCluster) -> Iterator[LocalCluster]:
    """A second control plane without our CRDs, shared by the tests of a refused start:
    the operator only reads it and exits, so one start of its API server serves them all."""
    with LocalCluster(bin_dir=cluster.bin_dir, api_only=True) as bare:
        yield bare


def test_start_without_crds_says_which_are_missing(bare_cluster: LocalCluster) -> None:
    result = _run_operator_once(bare_cluster.env())
    assert result.returncode == 2
    assert "CRDs of cleoai.io/v1alpha1 are not installed" in result.stderr
    assert "kubectl apply -f crds/" in result.stderr


def test_start_with_unreachable_api_server_says_so(cluster: LocalCluster, tmp_path: Path) -> None:
    kubeconfig = yaml.safe_load(cluster.kubeconfig.read_text())
    kubeconfig["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"  # discard port
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    result = _run_operator_once({**cluster.env(), "KUBECONFIG": str(path)})
    assert result.returncode == 2
    assert "cannot reach the Kubernetes API server at https://127.0.0.1:9" in result.stderr
    # The admin token of the kubeconfig must not be echoed anywhere.
    assert cluster.admin_token not in result.stderr + result.stdout


def test_metrics_endpoint_exports_reconciles_and_durations(
    cluster: LocalCluster, operator_process: OperatorProcess
) -> None:
    cluster.kubectl("apply", "-f", "-", input=tenant_yaml("counted"))
    wait_ready(cluster, "counted")
    text = operator_process.metrics()
    assert (
        operator_process.metric("cleo_operator_reconciles_total", 'kind="CleoTenant",result="ok"')
        >= 1
    )
    assert 'cleo_operator_reconcile_duration_seconds_bucket{kind="CleoTenant",le="0.1"}' in text
    assert operator_process.metric("cleo_operator_tenant_ready", 'tenant="counted"') == 1.0
    assert "cleo_operator_api_writes_total" in text


def test_json_logs_are_one_object_per_line(bare_cluster: LocalCluster) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cleo_operator.cli", "--log-format", "json", "run",
         "--metrics-port", "0", "--liveness", ""],
        cwd=REPO, env=bare_cluster.env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert lines, result.stderr
    error = next(entry for entry in lines if entry["level"] == "error")
    assert error["logger"] == "cleo_operator"
    assert "CRDs of cleoai.io/v1alpha1 are not installed" in error["message"]


def test_next_key_rotation_is_exported_for_the_alert(
    cluster: LocalCluster, operator_process: OperatorProcess
) -> None:
    cluster.kubectl(
        "apply", "-f", "-", input=tenant_yaml("rotating", encryption={"rotationPeriod": "90d"})
    )
    wait_ready(cluster, "rotating")
    ninety_days = 90 * 24 * 3600
    wait_for(
        lambda: (
            operator_process.metric(
                "cleo_operator_key_next_rotation_timestamp_seconds", 'tenant="rotating"'
            )
            > time.time() + ninety_days - 3600
        ),
        timeout=30,
        what="cleo_operator_key_next_rotation_timestamp_seconds of the tenant",
    )


def test_shutdown_closes_the_poolers_check_lane(operator_process: OperatorProcess) -> None:
    # Kopf's cleanup handler runs on SIGTERM; it closes what the tenant parts hold for the
    # life of the process (the pooler's check lane), and the operator still exits 0.
    operator_process.pause()
    try:
        assert "the pooler's check lane is closed" in operator_process.log_text()
    finally:
        operator_process.resume()

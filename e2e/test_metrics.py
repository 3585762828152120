"""The metrics API on the local control plane, and a tenant's HPA that reads it.

metrics-server scrapes KWOK's simulated kubelet (e2e/metrics.py): what a test writes in a
pod's usage annotation is what `kubectl top` and the HorizontalPodAutoscaler see. One
tenant carries the whole story, so the suite pays for the metrics pipeline's start-up
delay (two or three scrapes, 20-40 s) once: its pods' metrics through the API, then a CPU rise that
the HPA answers by scaling up, and the tenant's Autoscaling condition True throughout.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from e2e.cluster import FAKE_NODE, LocalCluster
from e2e.metrics import DEFAULT_MEMORY, USAGE_CPU_ANNOTATION
from tests.harness.cluster_fixtures import kubectl_json, wait_for
from tests.harness.operator_fixtures import OperatorProcess
from tests.harness.specs import IMAGE, apply_tenant

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

TENANT = "busy"
NAMESPACE = f"cleo-{TENANT}"


def millicores(quantity: str) -> float:
    """A CPU quantity as the metrics API writes it (`249992726n`, `250m`, `1`)."""
    for suffix, scale in (("n", 1e-6), ("u", 1e-3), ("m", 1.0)):
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * scale
    return float(quantity) * 1000


def pod_metrics(cluster: LocalCluster, namespace: str) -> dict[str, dict[str, Any]]:
    """PodMetrics by pod name, as `kubectl top pods` reads them; {} until there are any."""
    result = cluster.kubectl(
        "get", "--raw", f"/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods", check=False
    )
    if result.returncode != 0:
        return {}
    return {item["metadata"]["name"]: item for item in json.loads(result.stdout)["items"]}


def pod_cpu(item: dict[str, Any]) -> float:
    return sum(millicores(c["usage"]["cpu"]) for c in item["containers"])


def tenant_condition(cluster: LocalCluster, type_: str) -> dict[str, Any]:
    tenant = kubectl_json(cluster, "get", "cleotenant", TENANT)
    for cond in (tenant.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return {}


def test_hpa_scales_a_tenant_up_when_its_simulated_cpu_rises(
    cluster: LocalCluster, operator_process: OperatorProcess
) -> None:
    del operator_process
    if not isinstance(cluster, LocalCluster):
        pytest.fail(
            "the CPU a pod's annotation sets is KWOK's simulation of the local cluster: "
            "deselect this test (-k 'not simulated_cpu') on a cluster of your own"
        )
    try:
        scale_up_story(cluster)
    finally:
        # Its HPA would keep four pods busy for the rest of the session.
        cluster.kubectl("delete", "cleotenant", TENANT, "--wait=false", check=False)


def scale_up_story(cluster: LocalCluster) -> None:
    apply_tenant(
        cluster,
        TENANT,
        {
            "deletionPolicy": "Delete",  # the finally below removes its namespace too
            "admins": [{"kind": "User", "name": "alice"}],
            "quota": {"cpu": "8", "memory": "16Gi", "pods": 40},
            "workload": {
                "image": IMAGE,
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
            },
            "autoscaling": {
                "minReplicas": 2,
                "maxReplicas": 4,
                "targetCPUUtilizationPercentage": 50,
            },
        },
    )
    wait_for(
        lambda: tenant_condition(cluster, "Ready").get("status") == "True",
        timeout=60,
        what=f"tenant {TENANT} Ready",
    )

    # `kubectl top pods`, through the aggregated API: both pods at the simulated defaults.
    def both_measured() -> dict[str, dict[str, Any]] | None:
        metrics = pod_metrics(cluster, NAMESPACE)
        return metrics if len(metrics) == 2 else None

    metrics = wait_for(both_measured, timeout=45, interval=1, what="metrics of both pods")
    for item in metrics.values():
        assert pod_cpu(item) < 5, item  # 1m each, idle
        assert {c["usage"]["memory"] for c in item["containers"]} == {DEFAULT_MEMORY}, item
    node = json.loads(
        cluster.kubectl("get", "--raw", f"/apis/metrics.k8s.io/v1beta1/nodes/{FAKE_NODE}").stdout
    )
    assert millicores(node["usage"]["cpu"]) > 0, node
    # The HPA reads the same numbers: metrics flow, so the tenant is not Degraded.
    wait_for(
        lambda: tenant_condition(cluster, "Autoscaling").get("status") == "True",
        timeout=30,
        what="the Autoscaling condition True once the HPA reads metrics",
    )
    assert kubectl_json(cluster, "get", "cleotenant", TENANT)["status"]["phase"] == "Ready"
    table = cluster.kubectl("get", "cleotenant", TENANT).stdout.splitlines()
    assert dict(zip(table[0].split(), table[1].split(), strict=False))["PHASE"] == "Ready"

    # Load arrives: 200m on a 100m request is 200% against a 50% target.
    for pod in metrics:
        cluster.kubectl("annotate", "pod", pod, "-n", NAMESPACE, f"{USAGE_CPU_ANNOTATION}=200m")
    wait_for(
        lambda: all(
            pod_cpu(pod_metrics(cluster, NAMESPACE).get(pod) or {"containers": []}) > 150
            for pod in metrics
        ),
        timeout=30,
        interval=1,
        what="the metrics API to report the raised CPU",
    )

    def scaled_up() -> dict[str, Any] | None:
        hpa = kubectl_json(cluster, "get", "hpa", "cleoai", "-n", NAMESPACE)
        return hpa if hpa["status"].get("desiredReplicas", 0) > 2 else None

    hpa = wait_for(scaled_up, timeout=30, interval=1, what="the HPA to want more replicas")
    assert hpa["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"] > 50
    wait_for(
        lambda: (
            (kubectl_json(cluster, "get", "deployment", "cleoai", "-n", NAMESPACE)["spec"])[
                "replicas"
            ]
            > 2
        ),
        timeout=15,
        what="the Deployment to be scaled up by the HPA (and left so by the operator)",
    )
    # Scaling (or capped at maxReplicas) is the autoscaler working: still True.
    autoscaling = tenant_condition(cluster, "Autoscaling")
    assert autoscaling["status"] == "True", autoscaling
    assert autoscaling["reason"] in {"ScalingActive", "ScalingLimited"}, autoscaling

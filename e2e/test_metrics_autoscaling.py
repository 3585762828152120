"""Autoscaling beyond CPU on the local control plane: memory, and metrics nobody serves.

Two tenants, both applied when the module starts so that their waits overlap (the metrics
pipeline needs 20-40 s before a new pod has metrics; see e2e/test_metrics.py):

- ``hungry`` scales on memory (``targetMemoryUtilizationPercentage``) with a typed
  ``behavior``: its pod's simulated memory is raised as soon as the pod exists, so the
  first metrics the HPA reads are already over the target and it scales up at once.
- ``blind`` scales on a Pods and an External metric. No custom or external metrics API is
  served here, so the HPA cannot read either, and the tenant's Autoscaling condition says
  so, naming the Pods metric first.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.cluster import LocalCluster
from e2e.metrics import USAGE_MEMORY_ANNOTATION
from e2e.test_metrics import pod_metrics
from tests.harness.cluster_fixtures import kubectl_json, wait_for
from tests.harness.operator_fixtures import OperatorProcess
from tests.harness.specs import IMAGE, apply_tenant

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

log = logging.getLogger("e2e.autoscaling")

HUNGRY, BLIND = "hungry", "blind"
REQUEST = "64Mi"
RAISED = "96Mi"  # 150% of the request, against a 50% target
BEHAVIOR = {
    "scaleUp": {
        "stabilizationWindowSeconds": 0,
        "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15}],
    },
    "scaleDown": {"stabilizationWindowSeconds": 60},
}
BLIND_METRICS = [
    {
        "type": "Pods",
        "pods": {
            "metric": {"name": "requests_per_second"},
            "target": {"type": "AverageValue", "averageValue": "100"},
        },
    },
    {
        "type": "External",
        "external": {
            "metric": {"name": "queue_depth", "selector": {"matchLabels": {"queue": "chat"}}},
            "target": {"type": "Value", "value": "30"},
        },
    },
]


def workload() -> dict[str, Any]:
    return {"image": IMAGE, "resources": {"requests": {"cpu": "100m", "memory": REQUEST}}}


@pytest.fixture(scope="module")
def tenants(cluster: LocalCluster, operator_process: OperatorProcess) -> Iterator[float]:
    """Both tenants applied; yields when ``hungry`` was applied (time.monotonic)."""
    del operator_process
    if not isinstance(cluster, LocalCluster):
        pytest.fail(
            "the memory a pod's annotation sets is KWOK's simulation of the local cluster: "
            "deselect these tests on a cluster of your own"
        )
    started = time.monotonic()
    apply_tenant(
        cluster,
        HUNGRY,
        {
            "deletionPolicy": "Delete",
            "workload": workload(),
            "autoscaling": {
                "minReplicas": 1,
                "maxReplicas": 3,
                "targetMemoryUtilizationPercentage": 50,
                "behavior": BEHAVIOR,
            },
        },
    )
    apply_tenant(
        cluster,
        BLIND,
        {
            "deletionPolicy": "Delete",
            "workload": workload(),
            "autoscaling": {"minReplicas": 1, "maxReplicas": 2, "metrics": BLIND_METRICS},
        },
    )
    try:
        yield started
    finally:
        # Their HPAs would keep pods busy for the rest of the session.
        for name in (HUNGRY, BLIND):
            cluster.kubectl("delete", "cleotenant", name, "--wait=false", check=False)


def condition(cluster: LocalCluster, tenant: str, type_: str) -> dict[str, Any]:
    obj = kubectl_json(cluster, "get", "cleotenant", tenant) or {}
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return {}


def pods(cluster: LocalCluster, namespace: str) -> list[str]:
    listed = cluster.kubectl(
        "get", "pods", "-n", namespace, "-l", "app.kubernetes.io/name=cleoai", "-o", "json",
        check=False,
    )  # fmt: skip
    if listed.returncode != 0:
        return []
    return [p["metadata"]["name"] for p in json.loads(listed.stdout)["items"]]


def test_the_hpa_scales_a_tenant_up_when_its_simulated_memory_rises(
    cluster: LocalCluster, tenants: float
) -> None:
    namespace = f"cleo-{HUNGRY}"
    first = wait_for(lambda: pods(cluster, namespace), timeout=30, what="the first pod")
    # Load arrives before the first scrape: 96Mi on a 64Mi request is 150% of a 50% target.
    cluster.kubectl(
        "annotate", "pod", first[0], "-n", namespace, f"{USAGE_MEMORY_ANNOTATION}={RAISED}"
    )
    raised = time.monotonic()

    hpa = kubectl_json(cluster, "get", "hpa", "cleoai", "-n", namespace)
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "memory",
                "target": {"type": "Utilization", "averageUtilization": 50},
            },
        }
    ]
    assert hpa["spec"]["behavior"]["scaleUp"]["policies"] == BEHAVIOR["scaleUp"]["policies"]
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 60

    def scaled_up() -> dict[str, Any] | None:
        live = kubectl_json(cluster, "get", "hpa", "cleoai", "-n", namespace)
        return live if live["status"].get("desiredReplicas", 0) > 1 else None

    hpa = wait_for(scaled_up, timeout=60, interval=1, what="the HPA to want more pods on memory")
    measured = time.monotonic()
    memory = hpa["status"]["currentMetrics"][0]["resource"]
    assert memory["name"] == "memory"
    assert memory["current"]["averageUtilization"] > 50, hpa["status"]
    metrics = pod_metrics(cluster, namespace)
    assert {c["usage"]["memory"] for c in metrics[first[0]]["containers"]} == {RAISED}

    wait_for(
        lambda: (
            kubectl_json(cluster, "get", "deployment", "cleoai", "-n", namespace)["spec"][
                "replicas"
            ]
            > 1
        ),
        timeout=15,
        what="the Deployment to be scaled up by the HPA (and left so by the operator)",
    )
    wait_for(
        lambda: condition(cluster, HUNGRY, "Autoscaling").get("status") == "True",
        timeout=20,
        what="the Autoscaling condition True while the HPA scales on memory",
    )
    # The figures docs/tenants.md quotes (--log-cli-level=INFO shows them).
    log.info(
        "memory scale-up: %.0fs from the raise (the pod existed %.0fs after the tenant was "
        "applied), %.0fs in all",
        measured - raised,
        raised - tenants,
        time.monotonic() - tenants,
    )


def test_a_metric_no_api_serves_makes_autoscaling_false_naming_it(
    cluster: LocalCluster, tenants: float
) -> None:
    del tenants

    def blind() -> dict[str, Any] | None:
        cond = condition(cluster, BLIND, "Autoscaling")
        return cond if cond.get("reason") == "FailedGetPodsMetric" else None

    cond = wait_for(blind, timeout=45, interval=1, what="Autoscaling False on the Pods metric")
    assert cond["status"] == "False"
    assert cond["message"].startswith(
        "pods/requests_per_second (also unread: external/queue_depth): ScalingActive: the "
        "cluster's custom metrics API does not answer"
    ), cond["message"]
    # Serving at its current size is a degradation, not an outage.
    obj = kubectl_json(cluster, "get", "cleotenant", BLIND)
    assert obj["status"]["phase"] == "Degraded", obj["status"]
    assert condition(cluster, BLIND, "Ready")["status"] == "True"

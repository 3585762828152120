"""Autoscaling on custom and external metrics, through a metrics adapter behind the aggregator.

The adapter (e2e/metrics_adapter.py) stands in for prometheus-adapter or KEDA; everything
else is the real path: the operator renders the HPA from the CleoTenant's spec, the HPA
controller asks the aggregator, the aggregator proxies to the adapter over verified TLS.
Two tenants, applied together when the module starts so their waits overlap:

- ``busy`` scales on ``pods/requests_per_second`` (AverageValue 100): read at 10 per pod
  it stays at one pod, raised to 150 it goes to two.
- ``queued`` scales on ``external/queue_depth`` of the ``queue=chat`` series (AverageValue
  30): at 5 it stays at one pod, at 90 it goes to exactly three. Another series of the same
  metric (``queue=batch``, 500) would take it to its maximum if the selector were lost.

Then the adapter stops while its APIServices stay: the HPA cannot read the Pods metric and
the Autoscaling condition names it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from e2e.cluster import LocalCluster
from e2e.metrics_adapter import CUSTOM, EXTERNAL, MetricsAdapter
from e2e.test_metrics_autoscaling import condition, pods
from tests.harness.cluster_fixtures import kubectl_json, wait_for
from tests.harness.operator_fixtures import OperatorProcess
from tests.harness.specs import IMAGE, apply_tenant

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

log = logging.getLogger("e2e.custom_metrics")

BUSY, QUEUED = "busy", "queued"
RPS, QUEUE = "requests_per_second", "queue_depth"
CHAT = {"queue": "chat"}
HPA_CONTROLLER = "system:kube-controller-manager"
"""Whom the HPA controller asks as (the harness runs it without per-controller accounts)."""
BEHAVIOR = {
    "scaleUp": {
        "stabilizationWindowSeconds": 0,
        "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15}],
    },
    "scaleDown": {"stabilizationWindowSeconds": 300},
}


def tenant_spec(max_replicas: int, metric: dict[str, Any]) -> dict[str, Any]:
    return {
        "deletionPolicy": "Delete",
        "workload": {"image": IMAGE, "resources": {"requests": {"cpu": "100m"}}},
        "autoscaling": {
            "minReplicas": 1,
            "maxReplicas": max_replicas,
            "metrics": [metric],
            "behavior": BEHAVIOR,
        },
    }


@pytest.fixture(scope="module")
def adapter(
    cluster: LocalCluster, operator_process: OperatorProcess
) -> Iterator[tuple[MetricsAdapter, float]]:
    """The adapter serving, both tenants applied; yields it and when they were applied."""
    del operator_process
    if not isinstance(cluster, LocalCluster) or cluster.pki is None or cluster.workdir is None:
        pytest.fail("the adapter registers on the local cluster: deselect these tests elsewhere")
    served = MetricsAdapter(
        server=cluster.server, token=cluster.admin_token, pki=cluster.pki, workdir=cluster.workdir
    )
    served.set_pods_metric(f"cleo-{BUSY}", RPS, "10")
    served.set_external_metric(f"cleo-{QUEUED}", QUEUE, CHAT, "5")
    served.set_external_metric(f"cleo-{QUEUED}", QUEUE, {"queue": "batch"}, "500")
    served.start()
    started = time.monotonic()
    apply_tenant(
        cluster,
        BUSY,
        tenant_spec(
            2,
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": RPS},
                    "target": {"type": "AverageValue", "averageValue": "100"},
                },
            },
        ),
    )
    apply_tenant(
        cluster,
        QUEUED,
        tenant_spec(
            5,
            {
                "type": "External",
                "external": {
                    "metric": {"name": QUEUE, "selector": {"matchLabels": CHAT}},
                    "target": {"type": "AverageValue", "averageValue": "30"},
                },
            },
        ),
    )
    try:
        yield served, started
    finally:
        served.stop()
        for name in (BUSY, QUEUED):
            cluster.kubectl("delete", "cleotenant", name, "--wait=false", check=False)


def hpa(cluster: LocalCluster, namespace: str) -> dict[str, Any]:
    return kubectl_json(cluster, "get", "hpa", "cleoai", "-n", namespace) or {}


def read_value(cluster: LocalCluster, namespace: str) -> str | None:
    """The metric value the HPA last read (its only metric), None before it read one."""
    current = (hpa(cluster, namespace).get("status") or {}).get("currentMetrics") or []
    for metric in current:
        source = metric.get("pods") or metric.get("external") or {}
        value = (source.get("current") or {}).get("averageValue")
        if value is not None:
            return str(value)
    return None


def scale_up(
    cluster: LocalCluster,
    adapter: tuple[MetricsAdapter, float],
    tenant: str,
    raise_to: Callable[[MetricsAdapter, str], None],
    *,
    replicas: int,
) -> tuple[MetricsAdapter, str]:
    """Wait for the HPA to read the low value at one pod, raise it (`raise_to(adapter,
    namespace)`), and wait for `replicas` pods and the Autoscaling condition True."""
    served, started = adapter
    namespace = f"cleo-{tenant}"
    low = wait_for(
        lambda: read_value(cluster, namespace), timeout=30, interval=0.5, what="a first read"
    )
    status = hpa(cluster, namespace)["status"]
    assert status["desiredReplicas"] == 1, status  # below the target: no scaling
    raise_to(served, namespace)
    raised = time.monotonic()
    wait_for(
        lambda: hpa(cluster, namespace)["status"].get("desiredReplicas", 0) > 1,
        timeout=20,
        interval=0.5,
        what=f"the HPA of {tenant} to want more pods",
    )
    measured = time.monotonic()
    live = hpa(cluster, namespace)
    assert live["status"]["desiredReplicas"] == replicas, live["status"]
    active = {c["type"]: c for c in live["status"]["conditions"]}["ScalingActive"]
    assert active["status"] == "True", active
    wait_for(
        lambda: len(pods(cluster, namespace)) == replicas,
        timeout=15,
        interval=0.5,
        what=f"{replicas} pods of {tenant}",
    )
    wait_for(
        lambda: condition(cluster, tenant, "Autoscaling").get("status") == "True",
        timeout=15,
        interval=0.5,
        what=f"the Autoscaling condition of {tenant} True",
    )
    log.info(
        "%s: read %s at one pod %.0fs after apply; %d pods %.1fs after the raise",
        tenant,
        low,
        raised - started,
        replicas,
        measured - raised,
    )
    return served, namespace


def test_a_pods_metric_from_the_adapter_scales_the_tenant_up(
    cluster: LocalCluster, adapter: tuple[MetricsAdapter, float]
) -> None:
    served, namespace = scale_up(
        cluster, adapter, BUSY, lambda a, ns: a.set_pods_metric(ns, RPS, "150"), replicas=2
    )
    # The HPA asked for the tenant's pods, in its namespace, as itself.
    deployment = kubectl_json(cluster, "get", "deployment", "cleoai", "-n", namespace)
    match = deployment["spec"]["selector"]["matchLabels"]
    asked = served.requests_for(f"/apis/{'/'.join(CUSTOM)}/namespaces/")
    assert asked, served.requests
    for request in asked:
        assert request.path == f"/apis/{'/'.join(CUSTOM)}/namespaces/{namespace}/pods/*/{RPS}"
        assert request.user == HPA_CONTROLLER
        assert request.status == 200
        assert request.label_selector is not None
        assert dict(t.split("=", 1) for t in request.label_selector.split(",")) == match


def test_an_external_metric_from_the_adapter_scales_the_tenant_up(
    cluster: LocalCluster, adapter: tuple[MetricsAdapter, float]
) -> None:
    # 90 on a 30 average: exactly three pods (the batch series would make it five).
    served, namespace = scale_up(
        cluster,
        adapter,
        QUEUED,
        lambda a, ns: a.set_external_metric(ns, QUEUE, CHAT, "90"),
        replicas=3,
    )
    asked = served.requests_for(f"/apis/{'/'.join(EXTERNAL)}/namespaces/")
    assert asked, served.requests
    for request in asked:
        assert request.path == f"/apis/{'/'.join(EXTERNAL)}/namespaces/{namespace}/{QUEUE}"
        assert request.label_selector == "queue=chat"
        assert request.user == HPA_CONTROLLER


def test_a_stopped_adapter_makes_autoscaling_false_naming_the_metric(
    cluster: LocalCluster, adapter: tuple[MetricsAdapter, float]
) -> None:
    served, _ = adapter
    served.stop(unregister=False)  # a crashed adapter: its APIServices stay, unavailable

    def blind() -> dict[str, Any] | None:
        cond = condition(cluster, BUSY, "Autoscaling")
        return cond if cond.get("status") == "False" else None

    cond = wait_for(blind, timeout=30, interval=0.5, what="Autoscaling False on the Pods metric")
    assert cond["reason"] == "FailedGetPodsMetric", cond
    assert cond["message"].startswith(f"pods/{RPS}: "), cond["message"]

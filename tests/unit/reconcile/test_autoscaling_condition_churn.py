"""The Autoscaling condition changes only when what it says changes: the HPA controller's
message names one pod picked from a map (its order is random), and a condition quoting it
as is would rewrite the tenant's status at every HPA sync (every 15 s).

FakeKube stands in for the API server, and the test does the HPA controller's part (its
status) by hand; the tenant reconciler is the real one.
"""

from __future__ import annotations

import datetime
from typing import Any

from cleo_operator.kube.kinds import HPA
from cleo_operator.reconcile.tenant_status import observe_autoscaling
from tests.harness.fake_kube import FakeKube
from tests.unit.reconcile.test_tenant_decisions import conditions, ready_tenant

NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
NAMESPACE = "cleo-acme"


def _message(pod: str) -> str:
    return (
        "the HPA was unable to compute the replica count: failed to get cpu utilization: "
        f"missing request for cpu in container cleoai of Pod {pod}"
    )


def _hpa_status(pod: str) -> dict[str, Any]:
    return {
        "currentReplicas": 2,
        "desiredReplicas": 2,
        "currentMetrics": [{"type": ""}],
        "conditions": [
            {"type": "AbleToScale", "status": "True", "reason": "SucceededGetScale"},
            {
                "type": "ScalingActive",
                "status": "False",
                "reason": "FailedGetResourceMetric",
                "message": _message(pod),
            },
        ],
    }


def test_the_condition_does_not_quote_which_pod() -> None:
    hpa = {"spec": {"metrics": [{"type": "Resource", "resource": {"name": "cpu"}}]}}
    first = observe_autoscaling({**hpa, "status": _hpa_status("cleoai-7d9f-abcde")}, enabled=True)
    second = observe_autoscaling({**hpa, "status": _hpa_status("cleoai-7d9f-xyz12")}, enabled=True)
    assert first == second
    assert "cleoai-7d9f" not in first.message
    assert "missing request for cpu in container cleoai of a pod" in first.message


def test_an_hpa_message_naming_different_pods_writes_status_once() -> None:
    kube = FakeKube(now=lambda: NOW)
    tenants = ready_tenant(kube, "acme", autoscaling={"enabled": True})
    written = []
    for pod in ("cleoai-7d9f-abcde", "cleoai-7d9f-xyz12", "cleoai-7d9f-q1w2e"):
        kube.patch_merge(
            HPA, "cleoai", {"status": _hpa_status(pod)}, namespace=NAMESPACE, subresource="status"
        )
        kube.writes.clear()
        written.append(tenants.reconcile("acme").status_written)
    assert written == [True, False, False]
    assert conditions(kube, "acme")["Autoscaling"]["reason"] == "FailedGetResourceMetric"

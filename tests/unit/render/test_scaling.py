"""The HPA and the PodDisruptionBudget: present when they do something, and only then."""

from __future__ import annotations

from typing import Any

import pytest

from cleo_operator.api.objects import KubeObject
from cleo_operator.api.tenant import CleoTenantSpec
from cleo_operator.render.meta import tenant_owner
from cleo_operator.render.scaling import render_hpa, render_pdb
from tests.unit.render.specs import FULL, TENANT, UID, WORKLOAD, spec_of

NS = "acme-prod"
OWNER = tenant_owner(name=TENANT, uid=UID)


def hpa(spec: CleoTenantSpec) -> KubeObject | None:
    return render_hpa(tenant=TENANT, namespace=NS, owner=OWNER, spec=spec)


def pdb(spec: CleoTenantSpec) -> KubeObject | None:
    return render_pdb(tenant=TENANT, namespace=NS, owner=OWNER, spec=spec)


def test_the_hpa_scales_the_deployment_on_cpu_memory_and_the_spec_metrics() -> None:
    rendered = hpa(spec_of())
    assert rendered is not None
    assert rendered["apiVersion"] == "autoscaling/v2"
    spec = rendered["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "cleoai",
    }
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 10)
    assert spec["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 70},
            },
        },
        {
            "type": "Resource",
            "resource": {
                "name": "memory",
                "target": {"type": "Utilization", "averageUtilization": 80},
            },
        },
        *FULL["autoscaling"]["metrics"],
    ]
    assert spec["behavior"] == FULL["autoscaling"]["behavior"]


def test_an_hpa_without_targets_aims_for_80_percent_cpu() -> None:
    rendered = hpa(spec_of({"workload": WORKLOAD}))
    assert rendered is not None
    assert rendered["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80},
            },
        }
    ]
    assert "behavior" not in rendered["spec"]
    assert (rendered["spec"]["minReplicas"], rendered["spec"]["maxReplicas"]) == (1, 5)


def test_spec_metrics_alone_get_no_default_cpu_target() -> None:
    metrics = FULL["autoscaling"]["metrics"]
    rendered = hpa(spec_of({"workload": WORKLOAD, "autoscaling": {"metrics": metrics}}))
    assert rendered is not None
    assert rendered["spec"]["metrics"] == metrics


def test_the_rendered_hpa_shares_nothing_with_the_spec() -> None:
    spec = spec_of()
    rendered = hpa(spec)
    assert rendered is not None
    rendered["spec"]["metrics"][-1]["pods"]["metric"]["name"] = "changed"
    rendered["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] = 1
    assert [metric.to_api() for metric in spec.autoscaling.metrics] == (
        FULL["autoscaling"]["metrics"]
    )
    assert spec.autoscaling.behavior is not None
    assert spec.autoscaling.behavior.to_api() == FULL["autoscaling"]["behavior"]


def test_no_hpa_when_autoscaling_is_off_or_nothing_runs() -> None:
    assert hpa(spec_of(autoscaling={"enabled": False})) is None
    assert hpa(spec_of(workload=None)) is None


def test_the_pdb_keeps_the_spec_min_available_for_the_cleoai_pods() -> None:
    rendered = pdb(spec_of())
    assert rendered is not None
    assert rendered["apiVersion"] == "policy/v1"
    assert rendered["spec"] == {
        "minAvailable": "50%",
        "selector": {
            "matchLabels": {"app.kubernetes.io/name": "cleoai", "cleoai.io/tenant": TENANT}
        },
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }


@pytest.mark.parametrize(
    ("workload", "autoscaling", "min_available"),
    [
        ({**WORKLOAD, "replicas": 3}, {"enabled": False}, 1),
        ({**WORKLOAD, "replicas": 1}, {"enabled": False}, None),  # would block every drain
        (WORKLOAD, {"enabled": False}, None),  # one pod by default
        (WORKLOAD, {"minReplicas": 2}, 1),
        (WORKLOAD, {}, None),  # the HPA may scale down to one
        # The HPA, not workload.replicas, decides the pod count while autoscaling.
        ({**WORKLOAD, "replicas": 4}, {"minReplicas": 1}, None),
    ],
)
def test_without_a_spec_budget_one_pod_is_kept_only_when_there_are_more(
    workload: dict[str, Any], autoscaling: dict[str, Any], min_available: int | None
) -> None:
    rendered = pdb(spec_of({"workload": workload, "autoscaling": autoscaling}))
    if min_available is None:
        assert rendered is None
    else:
        assert rendered is not None
        assert rendered["spec"]["minAvailable"] == min_available


def test_a_spec_budget_is_rendered_even_for_one_pod_and_none_without_a_workload() -> None:
    explicit = {"workload": WORKLOAD, "podDisruptionBudget": {"minAvailable": 1}}
    rendered = pdb(spec_of(explicit))
    assert rendered is not None
    assert rendered["spec"]["minAvailable"] == 1
    assert pdb(spec_of(workload=None)) is None

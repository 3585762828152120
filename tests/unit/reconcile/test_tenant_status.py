"""Conditions from what the cluster reports: never True on a guess."""

from __future__ import annotations

from typing import Any

import pytest

from cleo_operator.reconcile.status import MESSAGE_LIMIT, Observation
from cleo_operator.reconcile.tenant_status import (
    observe_autoscaling,
    observe_deployment,
    observe_namespace,
    observe_policies,
    phase_of,
    replicas,
)


def deployment(**status: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "observedGeneration": 2,
        "replicas": 2,
        "updatedReplicas": 2,
        "readyReplicas": 2,
        "availableReplicas": 2,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
        ],
    }
    base.update(status)
    return {"metadata": {"generation": 2}, "spec": {"replicas": 2}, "status": base}


def test_namespace() -> None:
    assert observe_namespace({"status": {"phase": "Active"}}, "n").ok
    assert observe_namespace(None, "n").reason == "NamespaceMissing"
    assert observe_namespace({"status": {"phase": "Terminating"}}, "n").status == "False"
    assert observe_namespace({}, "n").status == "Unknown"


def test_policies_name_what_was_refused() -> None:
    obs = observe_policies(["ResourceQuota cleo-quota: exceeded"], 5)
    assert (obs.status, obs.reason) == ("False", "ApplyFailed")
    assert "cleo-quota" in obs.message
    assert observe_policies([], 5).ok


def test_deployment_available_and_rolled_out() -> None:
    assert observe_deployment(deployment(), wanted=True).ok


def test_deployment_not_yet_observed_is_unknown() -> None:
    obs = observe_deployment(deployment(observedGeneration=1), wanted=True)
    assert obs.status == "Unknown"


def test_deployment_rolling_out_is_not_available() -> None:
    obs = observe_deployment(deployment(updatedReplicas=1, replicas=3), wanted=True)
    assert (obs.status, obs.reason) == ("False", "RollingOut")


def test_deployment_unavailable_carries_its_reason() -> None:
    dep = deployment(
        conditions=[
            {
                "type": "Available",
                "status": "False",
                "reason": "MinimumReplicasUnavailable",
                "message": "Deployment does not have minimum availability.",
            }
        ]
    )
    obs = observe_deployment(dep, wanted=True)
    assert (obs.status, obs.reason) == ("False", "MinimumReplicasUnavailable")


def test_deployment_stuck() -> None:
    dep = deployment(
        conditions=[
            {"type": "Available", "status": "True"},
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": "x" * 5000,
            },
        ]
    )
    obs = observe_deployment(dep, wanted=True)
    assert obs.reason == "ProgressDeadlineExceeded"
    assert len(obs.message) <= MESSAGE_LIMIT


def test_no_workload_is_not_an_error() -> None:
    assert observe_deployment(None, wanted=False).reason == "NoWorkload"
    assert observe_deployment(None, wanted=True).reason == "DeploymentMissing"


def hpa(*conditions: tuple[str, str, str]) -> dict[str, Any]:
    return {
        "status": {
            "conditions": [
                {"type": t, "status": s, "reason": r, "message": f"{t} says {r}"}
                for t, s, r in conditions
            ]
        }
    }


def test_hpa_that_cannot_read_metrics_is_false() -> None:
    obs = observe_autoscaling(
        hpa(
            ("AbleToScale", "True", "SucceededGetScale"),
            ("ScalingActive", "False", "FailedGetResourceMetric"),
        ),
        enabled=True,
    )
    assert (obs.status, obs.reason) == ("False", "FailedGetResourceMetric")


def test_an_hpa_without_a_metrics_api_says_what_to_install() -> None:
    missing = (
        "the HPA was unable to compute the replica count: failed to get cpu utilization: "
        "unable to get metrics for resource cpu: unable to fetch metrics from resource "
        "metrics API: the server could not find the requested resource (get pods.metrics.k8s.io)"
    )
    raw = hpa(("ScalingActive", "False", "FailedGetResourceMetric"))
    raw["status"]["conditions"][0]["message"] = missing
    obs = observe_autoscaling(raw, enabled=True)
    assert obs.reason == "FailedGetResourceMetric"
    assert obs.message.startswith(
        "ScalingActive: the cluster's resource metrics API does not answer (is metrics-server "
        "installed? kubectl get apiservice v1beta1.metrics.k8s.io): the HPA was unable"
    )
    # Another failure keeps the HPA's own words.
    other = observe_autoscaling(hpa(("ScalingActive", "False", "InvalidSelector")), enabled=True)
    assert other.message == "ScalingActive: ScalingActive says InvalidSelector"


def test_hpa_without_conditions_yet_is_unknown() -> None:
    assert observe_autoscaling({"status": {}}, enabled=True).status == "Unknown"


@pytest.mark.parametrize(
    ("conds", "reason"),
    [
        (
            (("AbleToScale", "True", "x"), ("ScalingActive", "True", "ValidMetricFound")),
            "ScalingActive",
        ),
        (
            (
                ("AbleToScale", "True", "x"),
                ("ScalingActive", "True", "y"),
                ("ScalingLimited", "True", "TooManyReplicas"),
            ),
            "ScalingLimited",
        ),
    ],
)
def test_working_hpa(conds: tuple[tuple[str, str, str], ...], reason: str) -> None:
    obs = observe_autoscaling(hpa(*conds), enabled=True)
    assert (obs.status, obs.reason) == ("True", reason)


def test_disabled_autoscaling() -> None:
    assert observe_autoscaling(None, enabled=False).reason == "Disabled"
    assert observe_autoscaling(None, enabled=True).reason == "HPAMissing"


def test_phase() -> None:
    ok = observe_autoscaling(None, enabled=False)
    broken = observe_autoscaling(hpa(("ScalingActive", "False", "F")), enabled=True)
    assert phase_of(True, ok, failed=False) == "Ready"
    assert phase_of(True, broken, failed=False) == "Degraded"
    assert phase_of(False, ok, failed=False) == "Progressing"
    assert phase_of(False, ok, failed=True) == "Failed"
    failed_migration = Observation("False", "BackoffLimitExceeded", "the migration failed")
    assert phase_of(True, ok, failed=False, migrations=failed_migration) == "Degraded"
    assert phase_of(True, ok, failed=False, migrations=Observation("True", "Migrated", "")) == (
        "Ready"
    )
    assert phase_of(False, ok, failed=False, migrations=failed_migration) == "Progressing"


def test_replicas() -> None:
    assert replicas(deployment(readyReplicas=1)) == {"desired": 2, "ready": 1, "available": 2}
    assert replicas(None) is None

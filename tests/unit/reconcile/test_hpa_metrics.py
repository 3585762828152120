"""The Autoscaling condition names the metric the HPA cannot read, first, from the HPA's
spec.metrics against its status.currentMetrics (as the HPA controller writes them)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cleo_operator.reconcile.hpa_metrics import (
    NAME_LIMIT,
    api_hint,
    metric_label,
    unread_metrics,
    without_pod_names,
)
from cleo_operator.reconcile.tenant_status import observe_autoscaling
from tests.unit.test_api_autoscaling import EVERY_SOURCE

MEMORY = {
    "type": "Resource",
    "resource": {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 60}},
}
PODS, EXTERNAL = EVERY_SOURCE[2], EVERY_SOURCE[4]
READ_MEMORY = {
    "type": "Resource",
    "resource": {"name": "memory", "current": {"averageUtilization": 40, "averageValue": "51Mi"}},
}
UNREAD: dict[str, Any] = {"type": ""}  # what the controller leaves for a metric it cannot read

# The HPA controller's words (pkg/controller/podautoscaler) when no custom metrics API is served.
NO_CUSTOM_API = (
    "the HPA was unable to compute the replica count: unable to get metric "
    "requests_per_second: unable to fetch metrics from custom metrics API: the server could "
    "not find the requested resource (get pods.custom.metrics.k8s.io *)"
)


def hpa(
    metrics: list[dict[str, Any]],
    current: list[dict[str, Any]] | None,
    *conditions: tuple[str, str, str, str],
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "conditions": [
            {"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in conditions
        ]
    }
    if current is not None:
        status["currentMetrics"] = current
    return {"spec": {"metrics": metrics}, "status": status}


ABLE = ("AbleToScale", "True", "ReadyForNewScale", "recommended size matches current size")


@pytest.mark.parametrize(
    ("metric", "label"),
    [
        (MEMORY, "memory"),
        (EVERY_SOURCE[1], "cpu of container cleoai"),
        (PODS, "pods/requests_per_second"),
        (EVERY_SOURCE[3], "object/Ingress/main-route/requests-per-second"),
        (EXTERNAL, "external/queue_depth"),
        ({"type": "Mystery"}, "a metric of type Mystery"),
        ({"type": "Pods"}, "pods/?"),
    ],
)
def test_each_source_has_a_short_name(metric: dict[str, Any], label: str) -> None:
    assert metric_label(metric) == label


def test_a_custom_metric_without_an_adapter_is_named_first() -> None:
    obs = observe_autoscaling(
        hpa(
            [PODS, EXTERNAL],
            [UNREAD, UNREAD],
            ABLE,
            ("ScalingActive", "False", "FailedGetPodsMetric", NO_CUSTOM_API),
        ),
        enabled=True,
    )
    assert (obs.status, obs.reason) == ("False", "FailedGetPodsMetric")
    assert obs.message.startswith(
        "pods/requests_per_second (also unread: external/queue_depth): ScalingActive: the "
        "cluster's custom metrics API does not answer (is an adapter such as "
        "prometheus-adapter installed? kubectl get apiservice v1beta1.custom.metrics.k8s.io): "
        "the HPA was unable"
    ), obs.message


def test_without_current_metrics_the_reason_picks_the_metric() -> None:
    obs = observe_autoscaling(
        hpa(
            [MEMORY, EXTERNAL],
            None,
            ("ScalingActive", "False", "FailedGetExternalMetric", "unable to get external metric"),
        ),
        enabled=True,
    )
    assert obs.message == "external/queue_depth: ScalingActive: unable to get external metric"


def test_a_blind_metric_beside_one_that_scales_makes_the_condition_false() -> None:
    # The controller keeps ScalingActive True while memory says "scale up".
    obs = observe_autoscaling(
        hpa(
            [MEMORY, EXTERNAL],
            [READ_MEMORY, UNREAD],
            ABLE,
            ("ScalingActive", "True", "ValidMetricFound", "from memory resource utilization"),
        ),
        enabled=True,
    )
    assert (obs.status, obs.reason) == ("False", "FailedGetExternalMetric")
    assert obs.message.startswith("external/queue_depth: the HPA cannot read it"), obs.message


def test_every_metric_read_is_true() -> None:
    obs = observe_autoscaling(
        hpa(
            [MEMORY],
            [READ_MEMORY],
            ABLE,
            ("ScalingActive", "True", "ValidMetricFound", "from memory resource utilization"),
        ),
        enabled=True,
    )
    assert (obs.status, obs.reason) == ("True", "ScalingActive")


@pytest.mark.parametrize(
    "current",
    [
        [READ_MEMORY],  # one status for two metrics: the status of an older spec
        [{"type": "Pods"}, UNREAD],  # another type at the same place: likewise
        None,  # not computed yet
    ],
)
def test_a_status_of_another_spec_names_nothing(current: list[dict[str, Any]] | None) -> None:
    assert unread_metrics(hpa([MEMORY, EXTERNAL], current)) == []


def test_other_failures_name_no_metric() -> None:
    obs = observe_autoscaling(
        hpa(
            [MEMORY],
            None,
            ("AbleToScale", "False", "FailedGetScale", "deployments/scale not found"),
        ),
        enabled=True,
    )
    assert obs.message == "AbleToScale: deployments/scale not found"


@pytest.mark.parametrize(
    ("message", "api"),
    [
        (NO_CUSTOM_API, "custom metrics API"),
        (
            "unable to fetch metrics from external metrics API: the server could not find the "
            "requested resource (get queue_depth.external.metrics.k8s.io)",
            "external metrics API",
        ),
        (
            "unable to get metrics for resource memory: unable to fetch metrics from resource "
            "metrics API: the server could not find the requested resource "
            "(get pods.metrics.k8s.io)",
            "resource metrics API",
        ),
    ],
)
def test_the_hint_names_the_api_that_is_missing(message: str, api: str) -> None:
    hint = api_hint(message)
    assert hint is not None
    assert api in hint


def test_no_hint_when_the_api_answers() -> None:
    assert api_hint("did not receive metrics for targeted pods (pods might be unready)") is None


def test_long_names_are_clipped() -> None:
    metric = {"type": "External", "external": {"metric": {"name": "q" * 500}}}
    label = metric_label(metric)
    assert label == "external/" + "q" * (NAME_LIMIT - 1) + "…"


@pytest.mark.parametrize(
    ("text", "stable"),
    [
        (
            "missing request for memory in container cleoai of Pod cleoai-5c7b9-x2k4p",
            "missing request for memory in container cleoai of a pod",
        ),
        ("unable to read pod cleoai-5c7b9-x2k4p: gone", "unable to read a pod: gone"),
        # Words that are no pod's name stay: the source type, and plain prose.
        ("invalid metrics (1 invalid out of 1), first error is: Pods metric", None),
        ("did not receive metrics for targeted pods (pods might be unready)", None),
    ],
)
def test_pod_names_leave_the_message(text: str, stable: str | None) -> None:
    assert without_pod_names(text) == (text if stable is None else stable)


def _message(metrics: list[dict[str, Any]], current: Any, reason: str, **status: Any) -> str:
    """The Autoscaling condition's message when ScalingActive is False for `reason`, with
    more `status` (observedGeneration) and the HPA's generation 4."""
    failing = ("ScalingActive", "False", reason, "unable to get metric")
    obj = hpa(metrics, current, failing)
    obj["metadata"] = {"generation": 4}
    obj["status"].update(status)
    return observe_autoscaling(obj, enabled=True).message


def test_a_status_of_an_older_spec_names_no_metric() -> None:
    # The same shape as before (a Resource, then an External metric), but the external
    # metric was another one when the controller last computed: its empty status is not
    # about queue_depth.
    shape = ([MEMORY, EXTERNAL], [READ_MEMORY, UNREAD], "FailedGetExternalMetric")
    assert _message(*shape, observedGeneration=3) == "ScalingActive: unable to get metric"
    # Once the controller has seen the current spec, the metric is named.
    assert _message(*shape, observedGeneration=4).startswith("external/queue_depth: ")
    older = hpa([MEMORY, EXTERNAL], [READ_MEMORY, UNREAD])
    older["metadata"] = {"generation": 4}
    older["status"]["observedGeneration"] = 3
    assert unread_metrics(older) == []


def test_when_two_metrics_could_be_the_one_none_is_guessed() -> None:
    other = copy.deepcopy(PODS)
    other["pods"]["metric"]["name"] = "queue_wait_seconds"
    message = _message([PODS, other], None, "FailedGetPodsMetric")
    assert message == "ScalingActive: unable to get metric"

"""What the cluster says about a tenant's children, as conditions: pure functions.

Each function reads live objects (as the API server returned them) and returns one
`Observation` (condition status, reason, message). They never guess: a child the API
server has not reported on yet is Unknown, not True.

Ready is the conjunction of NamespaceReady, PoliciesReady and WorkloadAvailable (and of
SecretsReady and DatabaseReady when the tenant has them): it says the tenant *serves*.
Autoscaling is reported on its own condition and does not gate Ready: an HPA that cannot
read metrics leaves the workload serving at its current size, which is not an outage, and
a cluster without a metrics API would otherwise have no Ready tenant at all. The phase says
Degraded in that case, so `kubectl get cleotenants` shows it, and the alert rules fire on
the Autoscaling condition. docs/tenants.md documents this choice. The same holds when one
metric of several cannot be read: the condition is False and names it first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from cleo_operator.api.base import REASON_PATTERN
from cleo_operator.reconcile.hpa_metrics import (
    FAILED_GET_REASONS,
    api_hint,
    metric_for_reason,
    metric_label,
    one_line,
    unread_metrics,
    without_pod_names,
)
from cleo_operator.reconcile.status import Observation, clip


def _conditions(obj: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    raw = ((obj or {}).get("status") or {}).get("conditions") or []
    return {str(c.get("type")): c for c in raw if isinstance(c, Mapping)}


def observe_namespace(ns: Mapping[str, Any] | None, name: str) -> Observation:
    if ns is None:
        return Observation("False", "NamespaceMissing", f"namespace {name} does not exist yet")
    phase = (ns.get("status") or {}).get("phase")
    if phase == "Active":
        return Observation("True", "Active", f"namespace {name} is active")
    if phase == "Terminating":
        return Observation("False", "Terminating", f"namespace {name} is being deleted")
    return Observation("Unknown", "Pending", f"namespace {name} is {phase or 'not reported yet'}")


def observe_policies(failures: Sequence[str], count: int) -> Observation:
    """Quota, limits, network policies and RBAC: all applied, or which were refused."""
    if failures:
        return Observation(
            "False", "ApplyFailed", clip("could not apply: " + "; ".join(sorted(failures)))
        )
    return Observation(
        "True",
        "Applied",
        f"{count} isolation objects (quota, limits, network policies, RBAC) are in place",
    )


def observe_deployment(dep: Mapping[str, Any] | None, *, wanted: bool) -> Observation:
    """From the Deployment's own status: Available, fully rolled out, and current."""
    if not wanted:
        return Observation("True", "NoWorkload", "spec.workload is not set: no pods to run")
    if dep is None:
        return Observation("False", "DeploymentMissing", "the CleoAI Deployment does not exist")
    status = dep.get("status") or {}
    generation = int((dep.get("metadata") or {}).get("generation", 0))
    if int(status.get("observedGeneration", -1)) < generation:
        return Observation(
            "Unknown", "RolloutPending", "the deployment controller has not seen the change yet"
        )
    conditions = _conditions(dep)
    progressing = conditions.get("Progressing") or {}
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return Observation(
            "False", "ProgressDeadlineExceeded", clip(str(progressing.get("message", "")))
        )
    available = conditions.get("Available")
    desired = int((dep.get("spec") or {}).get("replicas", 1))
    updated = int(status.get("updatedReplicas", 0))
    ready = int(status.get("availableReplicas", 0))
    if available is None:
        return Observation("Unknown", "Pending", "the Deployment reports no availability yet")
    if available.get("status") != "True":
        return Observation(
            "False",
            str(available.get("reason") or "Unavailable"),
            clip(str(available.get("message") or "the Deployment is not available")),
        )
    if updated < desired or int(status.get("replicas", 0)) > desired:
        return Observation(
            "False",
            "RollingOut",
            f"{updated} of {desired} pods run the current version ({ready} available)",
        )
    return Observation("True", "Available", f"{ready} of {desired} pods available")


def _named(unread: Sequence[Mapping[str, Any]]) -> str:
    """``pods/rps``, or ``pods/rps (also unread: external/queue_depth)``: the first first."""
    labels = [metric_label(m) for m in unread[:4]]
    more = f" and {len(unread) - 4} more" if len(unread) > 4 else ""
    also = f" (also unread: {', '.join(labels[1:])}{more})" if len(labels) > 1 else ""
    return labels[0] + also


def _reason(value: Any, fallback: str) -> str:
    # A reason that is no CamelCase word would make the whole status write fail.
    text = str(value or "")
    return text if _REASON.fullmatch(text) and len(text) <= 128 else fallback


_REASON = re.compile(REASON_PATTERN)


def observe_autoscaling(hpa: Mapping[str, Any] | None, *, enabled: bool) -> Observation:
    """From the HPA's own conditions and metrics; an HPA that cannot read a metric is False,
    and the message names that metric first (`hpa_metrics`)."""
    if not enabled:
        return Observation("True", "Disabled", "spec.autoscaling.enabled is false")
    if hpa is None:
        return Observation("False", "HPAMissing", "the HorizontalPodAutoscaler does not exist")
    conditions = _conditions(hpa)
    if not conditions:
        return Observation(
            "Unknown", "Pending", "the autoscaler controller has not reported on the HPA yet"
        )
    unread = unread_metrics(hpa)
    for type_ in ("AbleToScale", "ScalingActive"):
        cond = conditions.get(type_)
        if cond is not None and cond.get("status") == "False":
            reason = _reason(cond.get("reason"), type_)
            message = without_pod_names(one_line(str(cond.get("message", ""))))
            hint = api_hint(message)
            if hint is not None:
                # The HPA's words name the API group, not what is missing: say it first,
                # before a long message is clipped.
                message = f"{hint}: {message}"
            message = f"{type_}: {message}"
            if reason in FAILED_GET_REASONS.values():
                first = metric_for_reason(hpa, reason)
                named = unread or ([first] if first is not None else [])
                if named:
                    message = f"{_named(named)}: {message}"
            return Observation("False", reason, clip(message))
    if unread:
        # Another metric reads and scales the workload; this one is blind all the same.
        reason = FAILED_GET_REASONS.get(str(unread[0].get("type")), "FailedGetMetric")
        return Observation(
            "False",
            reason,
            clip(
                f"{_named(unread)}: the HPA cannot read it and scales on its other metrics "
                "only (kubectl describe hpa cleoai shows why)"
            ),
        )
    limited = conditions.get("ScalingLimited")
    if limited is not None and limited.get("status") == "True":
        return Observation(
            "True",
            "ScalingLimited",
            clip(without_pod_names(one_line(str(limited.get("message") or "at a replica bound")))),
        )
    return Observation("True", "ScalingActive", "the autoscaler reads its metrics and scales")


def replicas(dep: Mapping[str, Any] | None) -> dict[str, int] | None:
    if dep is None:
        return None
    status = dep.get("status") or {}
    return {
        "desired": int((dep.get("spec") or {}).get("replicas", 0)),
        "ready": int(status.get("readyReplicas", 0)),
        "available": int(status.get("availableReplicas", 0)),
    }


def phase_of(
    ready: bool, autoscaling: Observation, failed: bool, migrations: Observation | None = None
) -> str:
    """The one-word phase. A tenant that serves is `Degraded` when its HPA cannot scale or
    its last migration failed (the old pods still serve, but the spec's image does not)."""
    if failed:
        return "Failed"
    if not ready:
        return "Progressing"
    if not autoscaling.ok or (migrations is not None and migrations.status == "False"):
        return "Degraded"
    return "Ready"

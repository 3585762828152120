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
the Autoscaling condition. docs/tenants.md documents this choice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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


_METRICS_API = "metrics.k8s.io"
_NO_METRICS_API = (
    "the cluster's resource metrics API does not answer (is metrics-server installed? "
    "kubectl get apiservice v1beta1.metrics.k8s.io)"
)


def observe_autoscaling(hpa: Mapping[str, Any] | None, *, enabled: bool) -> Observation:
    """From the HPA's own conditions; an HPA that cannot read metrics is False, not True."""
    if not enabled:
        return Observation("True", "Disabled", "spec.autoscaling.enabled is false")
    if hpa is None:
        return Observation("False", "HPAMissing", "the HorizontalPodAutoscaler does not exist")
    conditions = _conditions(hpa)
    if not conditions:
        return Observation(
            "Unknown", "Pending", "the autoscaler controller has not reported on the HPA yet"
        )
    for type_ in ("AbleToScale", "ScalingActive"):
        cond = conditions.get(type_)
        if cond is not None and cond.get("status") == "False":
            message = str(cond.get("message", ""))
            if _METRICS_API in message:
                # The HPA's words name the API group, not what is missing: say it first,
                # before a long message is clipped.
                message = f"{_NO_METRICS_API}: {message}"
            return Observation(
                "False", str(cond.get("reason") or type_), clip(f"{type_}: {message}")
            )
    limited = conditions.get("ScalingLimited")
    if limited is not None and limited.get("status") == "True":
        return Observation(
            "True", "ScalingLimited", clip(str(limited.get("message") or "at a replica bound"))
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


def phase_of(ready: bool, autoscaling: Observation, failed: bool) -> str:
    if failed:
        return "Failed"
    if not ready:
        return "Progressing"
    return "Ready" if autoscaling.ok else "Degraded"

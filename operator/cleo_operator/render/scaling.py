"""How many CleoAI pods run: the HorizontalPodAutoscaler, and the PodDisruptionBudget that
keeps enough of them up while nodes are drained.

The HPA exists only when there is a workload and ``spec.autoscaling.enabled`` (the
default). Its CPU target is `AutoscalingSpec.effective_cpu_target` (80% when the spec
names no target and no metric at all, so an HPA always has something to scale on); the
spec's own ``metrics`` follow ours, and ``behavior`` is the spec's, both written out by
their typed models (api.autoscaling) with autoscaling/v2's names, so they are the same JSON
a user would give an HPA, and fresh objects that share nothing with the frozen spec.
Utilization targets only work when the container requests that resource
(``spec.workload.resources`` or ``spec.limits``).

The PDB, when there is a workload:

- ``spec.podDisruptionBudget`` set: its ``minAvailable``, as written.
- unset, and the workload never runs fewer than two pods (``autoscaling.minReplicas`` or
  ``workload.replicas`` above 1): ``minAvailable: 1``, so a drain never takes the tenant
  down completely.
- otherwise none: with a single pod, ``minAvailable: 1`` would block every node drain
  forever, and ``0`` protects nothing.

``unhealthyPodEvictionPolicy: AlwaysAllow`` lets a drain evict pods that are not ready
anyway (a crash-looping CleoAI must not pin a node that needs maintenance).
"""

from __future__ import annotations

from typing import Final, Literal

from cleo_operator.api.objects import KubeObject, OwnerReference
from cleo_operator.api.tenant import CleoTenantSpec
from cleo_operator.render.child import (
    WORKLOAD_NAME,
    workload_metadata,
    workload_selector,
)
from cleo_operator.render.k8s import (
    HorizontalPodAutoscaler,
    HorizontalPodAutoscalerSpec,
    PodDisruptionBudget,
    ResourceMetric,
    as_object,
)

DEFAULT_MIN_AVAILABLE: Final = 1
"""The PDB's minAvailable when the spec names none and the workload runs two pods or more."""


def _utilization(resource: Literal["cpu", "memory"], percent: int) -> ResourceMetric:
    return {
        "type": "Resource",
        "resource": {
            "name": resource,
            "target": {"type": "Utilization", "averageUtilization": percent},
        },
    }


def render_hpa(
    *, tenant: str, namespace: str, owner: OwnerReference, spec: CleoTenantSpec
) -> KubeObject | None:
    """The autoscaling/v2 HPA of the CleoAI Deployment; None when autoscaling is off."""
    autoscaling = spec.autoscaling
    if spec.workload is None or not autoscaling.enabled:
        return None
    hpa_spec: HorizontalPodAutoscalerSpec = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": WORKLOAD_NAME},
        "minReplicas": autoscaling.min_replicas,
        "maxReplicas": autoscaling.max_replicas,
        "metrics": [],
    }
    cpu = autoscaling.effective_cpu_target()
    if cpu is not None:
        hpa_spec["metrics"].append(_utilization("cpu", cpu))
    memory = autoscaling.target_memory_utilization_percentage
    if memory is not None:
        hpa_spec["metrics"].append(_utilization("memory", memory))
    hpa_spec["metrics"] += [metric.to_api() for metric in autoscaling.metrics]
    if autoscaling.behavior is not None:
        hpa_spec["behavior"] = autoscaling.behavior.to_api()
    obj: HorizontalPodAutoscaler = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": workload_metadata(tenant=tenant, namespace=namespace, owner=owner),
        "spec": hpa_spec,
    }
    return as_object(obj)


def fewest_pods(spec: CleoTenantSpec) -> int:
    """The fewest pods the workload runs when nothing is disrupting it."""
    if spec.autoscaling.enabled:
        return spec.autoscaling.min_replicas
    if spec.workload is None or spec.workload.replicas is None:
        return 1
    return spec.workload.replicas


def render_pdb(
    *, tenant: str, namespace: str, owner: OwnerReference, spec: CleoTenantSpec
) -> KubeObject | None:
    """The policy/v1 PDB of the CleoAI pods; None when there is none to keep (see module)."""
    if spec.workload is None:
        return None
    if spec.pod_disruption_budget is not None:
        min_available = spec.pod_disruption_budget.min_available
    elif fewest_pods(spec) > 1:
        min_available = DEFAULT_MIN_AVAILABLE
    else:
        return None
    obj: PodDisruptionBudget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": workload_metadata(tenant=tenant, namespace=namespace, owner=owner),
        "spec": {
            "minAvailable": min_available,
            "selector": {"matchLabels": workload_selector(tenant)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
    return as_object(obj)

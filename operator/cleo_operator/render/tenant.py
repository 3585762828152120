"""Desired objects of a CleoTenant: pure functions from the spec to Kubernetes objects."""

from __future__ import annotations

from cleo_operator.api.objects import KubeObject, OwnerReference
from cleo_operator.render.meta import tenant_labels

POD_SECURITY_LEVEL = "restricted"


def render_namespace(*, tenant: str, namespace: str, owner: OwnerReference) -> KubeObject:
    """The tenant's namespace, enforcing Pod Security `restricted` and owned by the tenant."""
    labels = tenant_labels(tenant)
    for mode in ("enforce", "audit", "warn"):
        labels[f"pod-security.kubernetes.io/{mode}"] = POD_SECURITY_LEVEL
        labels[f"pod-security.kubernetes.io/{mode}-version"] = "latest"
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace, "labels": labels, "ownerReferences": [owner]},
    }

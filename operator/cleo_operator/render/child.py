"""What the namespaced children of a tenant share: their metadata and the workload's names.

The names here are a contract with objects already in clusters: renaming one leaves the
old object behind under the old name, and a Deployment's selector cannot change after
creation at all (the API server refuses the update). So `workload_selector` is frozen:
it holds only labels that never change for the life of a tenant.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

from cleo_operator.api.objects import OwnerReference
from cleo_operator.render.k8s import ObjectMeta
from cleo_operator.render.meta import TENANT_LABEL, tenant_labels

WORKLOAD_NAME: Final = "cleoai"
"""Name of the Deployment, its Service, ServiceAccount, HPA and PDB, and of the container."""

CONFIG_MAP_NAME: Final = "cleoai-config"
"""Name of the ConfigMap holding spec.workload.config."""

APP_NAME_LABEL: Final = "app.kubernetes.io/name"
COMPONENT_LABEL: Final = "app.kubernetes.io/component"
HTTP_PORT_NAME: Final = "http"

Component = Literal["limits", "network", "access", "workload"]
"""The ``app.kubernetes.io/component`` label of each group of children."""


def sorted_map(mapping: Mapping[str, str]) -> dict[str, str]:
    """A copy with sorted keys: maps from the spec keep the user's order otherwise, and
    two specs that differ only in key order must render the same bytes."""
    return dict(sorted(mapping.items()))


def child_metadata(
    *,
    name: str,
    namespace: str,
    tenant: str,
    owner: OwnerReference,
    component: Component,
) -> ObjectMeta:
    """Metadata of a child: its name, the tenant's labels and the tenant as its owner."""
    return {
        "name": name,
        "namespace": namespace,
        "labels": sorted_map(tenant_labels(tenant, component=component)),
        # A copy per child, so that no two rendered objects share (and could both mutate) one.
        "ownerReferences": [owner.copy()],
    }


def workload_selector(tenant: str) -> dict[str, str]:
    """The Deployment's selector labels; never change them (see the module docstring)."""
    return sorted_map({APP_NAME_LABEL: WORKLOAD_NAME, TENANT_LABEL: tenant})


def workload_pod_labels(tenant: str) -> dict[str, str]:
    """Labels of the CleoAI pods: the selector plus the component.

    Not the operator's managed-by label: the pods are the ReplicaSet's children, not the
    operator's, and code that lists "our children" by that label must not find them.
    """
    return sorted_map({**workload_selector(tenant), COMPONENT_LABEL: "workload"})

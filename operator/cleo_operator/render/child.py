"""What the namespaced children of a tenant share: their metadata and the workload's names.

The names here are a contract with objects already in clusters: renaming one leaves the
old object behind under the old name, and a Deployment's selector cannot change after
creation at all (the API server refuses the update). So `workload_selector` is frozen:
it holds only labels that never change for the life of a tenant.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

from cleo_operator.api.objects import KubeObject, OwnerReference
from cleo_operator.data.sites import CA_KEY, CA_MOUNT_DIR
from cleo_operator.render.k8s import (
    ContainerSecurityContext,
    ObjectMeta,
    PodSecurityContext,
    SecretVolumeSource,
    VolumeMount,
)
from cleo_operator.render.meta import TENANT_LABEL, tenant_labels

WORKLOAD_NAME: Final = "cleoai"
"""Name of the Deployment, its Service, ServiceAccount, HPA and PDB, and of the container."""

CONFIG_MAP_NAME: Final = "cleoai-config"
"""Name of the ConfigMap holding spec.workload.config."""

APP_NAME_LABEL: Final = "app.kubernetes.io/name"
COMPONENT_LABEL: Final = "app.kubernetes.io/component"
HTTP_PORT_NAME: Final = "http"

Component = Literal["limits", "network", "access", "workload", "secrets", "database"]
"""The ``app.kubernetes.io/component`` label of each group of children."""


DATABASE_CA_VOLUME: Final = "database-ca"
"""The volume with the site's CA from the tenant's credentials Secret (``ca.crt``)."""
CA_FILE_MODE: Final = 0o444
"""A CA certificate is public: readable by whoever runs in the pod."""


def database_ca_source(database_secret: str) -> SecretVolumeSource:
    """The credentials Secret's ``ca.crt`` alone, as a file; nothing when it has none.

    Optional, so that the pod template does not depend on the site: a site with a weak
    sslMode (or one checked against the system's CAs) has no ``ca.crt`` and the folder
    stays empty, and a failover to a site with another CA changes the Secret only.
    """
    return {
        "secretName": database_secret,
        "items": [{"key": CA_KEY, "path": CA_KEY}],
        "defaultMode": CA_FILE_MODE,
        "optional": True,
    }


def database_ca_mount() -> VolumeMount:
    """Where the pods find the site's CA: ``PGSSLROOTCERT`` in the Secret names the file."""
    return {"name": DATABASE_CA_VOLUME, "mountPath": CA_MOUNT_DIR, "readOnly": True}


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


def workload_metadata(
    *, tenant: str, namespace: str, owner: OwnerReference, name: str = WORKLOAD_NAME
) -> ObjectMeta:
    """Metadata of a child that is part of the CleoAI workload (named `cleoai` by default)."""
    return child_metadata(
        name=name, namespace=namespace, tenant=tenant, owner=owner, component="workload"
    )


def opaque_secret(metadata: ObjectMeta, data: Mapping[str, str]) -> KubeObject:
    """An Opaque Secret (metadata from `child_metadata`); `data` is already base64-encoded."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "data": sorted_map(data),
    }


def restricted_pod_security(run_as: int) -> PodSecurityContext:
    """A pod's part of Pod Security `restricted`, running as `run_as` (user, group, fsGroup):
    the image's own non-root user (the operator's for the runner, CleoAI's for the workload)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": run_as,
        "runAsGroup": run_as,
        "fsGroup": run_as,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_container_security() -> ContainerSecurityContext:
    """A container's part of Pod Security `restricted`, with a read-only root filesystem."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
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

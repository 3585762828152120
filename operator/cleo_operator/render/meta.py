"""Names, labels and owner references shared by every rendered child."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from cleo_operator.api.objects import OwnerReference

GROUP: Final = "cleoai.io"
API_VERSION: Final = "cleoai.io/v1alpha1"
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "cleo-operator"
TENANT_LABEL: Final = "cleoai.io/tenant"
ORPHANED_LABEL: Final = "cleoai.io/orphaned"
TENANT_UID_LABEL: Final = "cleoai.io/tenant-uid"
"""On a tenant's namespace: the uid of the CleoTenant that owns it (names can be reused, uids
cannot). Only those who may write Namespaces can set it, never a tenant's admins."""
ADOPT_ANNOTATION: Final = "cleoai.io/adopt"
"""Put on a namespace by whoever owns it (a cluster administrator): the name of the one
tenant that may take it over. The operator removes it once the tenant owns the namespace."""
FINALIZER: Final = "cleoai.io/finalizer"
DEFAULT_OPERATOR_NAMESPACE: Final = "cleo-system"
"""Where the operator's own objects live unless `--operator-namespace` says otherwise."""


def default_namespace(tenant: str) -> str:
    """The namespace of a tenant that does not name one."""
    return f"cleo-{tenant}"


def tenant_labels(tenant: str, *, component: str | None = None) -> dict[str, str]:
    """Labels every child of a tenant carries (the operator watches children by them)."""
    labels = {MANAGED_BY_LABEL: MANAGED_BY, TENANT_LABEL: tenant}
    if component:
        labels["app.kubernetes.io/component"] = component
    return labels


def tenant_owner(*, name: str, uid: str) -> OwnerReference:
    """The owner reference that ties a child to its CleoTenant (for garbage collection)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "CleoTenant",
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def labels_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    """The labels of a Kubernetes object; empty when it has none."""
    labels: Mapping[str, str] = (obj.get("metadata") or {}).get("labels") or {}
    return labels


def managed_by_operator(obj: Mapping[str, Any]) -> bool:
    """Labelled as made by the operator (what the admission policy keeps to it)."""
    return labels_of(obj).get(MANAGED_BY_LABEL) == MANAGED_BY

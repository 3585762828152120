"""Who may do what in the tenant's namespace: the workload's ServiceAccount, two Roles and
the RoleBindings of spec.admins and spec.viewers.

`cleo-tenant-admin` runs the tenant's workloads but cannot loosen its own fence: it may
only read ResourceQuotas, LimitRanges and NetworkPolicies, and has no rights on RBAC
objects at all (so it can neither grant itself more nor hand rights to others). Roles are
namespaced, so namespaces themselves (and their Pod Security labels) are out of reach too.
`cleo-tenant-viewer` reads the same kinds but not Secrets (nor pods/exec).

The rules name every verb and resource: no wildcards, because ``*`` also grants whatever
kinds and subresources a later Kubernetes version or a CRD adds to the group.

The Roles are rendered even when nobody is bound, so platform teams can bind their own
subjects to them; a RoleBinding is rendered only for a non-empty list of subjects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from cleo_operator.api.objects import KubeObject, OwnerReference
from cleo_operator.api.tenant import CleoTenantSpec, Subject
from cleo_operator.render.child import WORKLOAD_NAME, child_metadata
from cleo_operator.render.k8s import (
    RBAC_GROUP,
    PolicyRule,
    RbacSubject,
    Role,
    RoleBinding,
    ServiceAccount,
    Verb,
    as_object,
)

ADMIN_ROLE: Final = "cleo-tenant-admin"
VIEWER_ROLE: Final = "cleo-tenant-viewer"
ADMIN_BINDING: Final = "cleo-tenant-admins"
VIEWER_BINDING: Final = "cleo-tenant-viewers"

READ: Final[tuple[Verb, ...]] = ("get", "list", "watch")
MANAGE: Final[tuple[Verb, ...]] = (*READ, "create", "delete", "deletecollection", "patch", "update")


def _rule(group: str, resources: Sequence[str], verbs: Sequence[Verb]) -> PolicyRule:
    # Sorted, because the order of rules, resources and verbs means nothing to RBAC.
    return {"apiGroups": [group], "resources": sorted(resources), "verbs": sorted(verbs)}


def admin_rules() -> list[PolicyRule]:
    """The rules of `cleo-tenant-admin`: manage workloads, only read the tenant's fence."""
    return [
        _rule("", ["configmaps", "persistentvolumeclaims", "pods", "secrets", "services"], MANAGE),
        # The fence (quota, limits) and the record (events): read only.
        _rule("", ["events", "limitranges", "pods/log", "resourcequotas"], READ),
        # Debugging inside a pod; an admin can read the namespace's Secrets anyway.
        _rule("", ["pods/exec"], ("create", "get")),
        _rule("apps", ["deployments", "replicasets"], MANAGE),
        _rule("apps", ["deployments/scale"], ("get", "patch", "update")),
        _rule("autoscaling", ["horizontalpodautoscalers"], MANAGE),
        _rule("batch", ["cronjobs", "jobs"], MANAGE),
        _rule("events.k8s.io", ["events"], READ),
        _rule("networking.k8s.io", ["networkpolicies"], READ),
        _rule("policy", ["poddisruptionbudgets"], MANAGE),
    ]


def viewer_rules() -> list[PolicyRule]:
    """The rules of `cleo-tenant-viewer`: read only, and neither Secrets nor pods/exec."""
    return [
        _rule(
            "",
            [
                "configmaps",
                "events",
                "limitranges",
                "persistentvolumeclaims",
                "pods",
                "pods/log",
                "resourcequotas",
                "services",
            ],
            READ,
        ),
        _rule("apps", ["deployments", "replicasets"], READ),
        _rule("autoscaling", ["horizontalpodautoscalers"], READ),
        _rule("batch", ["cronjobs", "jobs"], READ),
        _rule("events.k8s.io", ["events"], READ),
        _rule("networking.k8s.io", ["networkpolicies"], READ),
        _rule("policy", ["poddisruptionbudgets"], READ),
    ]


def render_service_account(
    *, tenant: str, namespace: str, owner: OwnerReference, spec: CleoTenantSpec
) -> KubeObject | None:
    """The CleoAI pods' ServiceAccount, without an API token; None without a workload."""
    if spec.workload is None:
        return None
    obj: ServiceAccount = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": child_metadata(
            name=WORKLOAD_NAME,
            namespace=namespace,
            tenant=tenant,
            owner=owner,
            component="workload",
        ),
        # CleoAI never calls the Kubernetes API; a token in the pod would only be a risk.
        "automountServiceAccountToken": False,
    }
    return as_object(obj)


def _role(
    *, name: str, tenant: str, namespace: str, owner: OwnerReference, rules: list[PolicyRule]
) -> KubeObject:
    obj: Role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": child_metadata(
            name=name, namespace=namespace, tenant=tenant, owner=owner, component="access"
        ),
        "rules": rules,
    }
    return as_object(obj)


def render_roles(*, tenant: str, namespace: str, owner: OwnerReference) -> list[KubeObject]:
    """The Roles `cleo-tenant-admin` and `cleo-tenant-viewer`."""
    return [
        _role(
            name=ADMIN_ROLE, tenant=tenant, namespace=namespace, owner=owner, rules=admin_rules()
        ),
        _role(
            name=VIEWER_ROLE, tenant=tenant, namespace=namespace, owner=owner, rules=viewer_rules()
        ),
    ]


def _subjects(subjects: Sequence[Subject]) -> list[RbacSubject]:
    unique = sorted({(s.kind, s.name) for s in subjects})
    return [{"kind": kind, "name": name, "apiGroup": RBAC_GROUP} for kind, name in unique]


def _binding(
    *,
    name: str,
    role: str,
    subjects: Sequence[Subject],
    tenant: str,
    namespace: str,
    owner: OwnerReference,
) -> KubeObject:
    obj: RoleBinding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": child_metadata(
            name=name, namespace=namespace, tenant=tenant, owner=owner, component="access"
        ),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": role},
        "subjects": _subjects(subjects),
    }
    return as_object(obj)


def render_role_bindings(
    *, tenant: str, namespace: str, owner: OwnerReference, spec: CleoTenantSpec
) -> list[KubeObject]:
    """RoleBindings of spec.admins and spec.viewers; none for an empty list."""
    bindings = []
    for name, role, subjects in (
        (ADMIN_BINDING, ADMIN_ROLE, spec.admins),
        (VIEWER_BINDING, VIEWER_ROLE, spec.viewers),
    ):
        if subjects:
            bindings.append(
                _binding(
                    name=name,
                    role=role,
                    subjects=subjects,
                    tenant=tenant,
                    namespace=namespace,
                    owner=owner,
                )
            )
    return bindings

"""Who may do what in the tenant's namespace: the workload's ServiceAccount, and the
RoleBindings of spec.admins and spec.viewers to the ClusterRoles `cleo-tenant-admin` and
`cleo-tenant-viewer`.

`cleo-tenant-admin` runs the tenant's workloads but cannot loosen its own fence: it may
only read ResourceQuotas, LimitRanges and NetworkPolicies, and has no rights on RBAC
objects at all (so it can neither grant itself more nor hand rights to others). Bound by a
RoleBinding, a ClusterRole grants its rules in that one namespace only, so namespaces
themselves (and their Pod Security labels) are out of reach too.
`cleo-tenant-viewer` reads the same kinds but not Secrets (nor pods/exec).

Both may read the CleoBackups and CleoFailovers of their namespace (how their backups and
failovers went). Neither may change them: a CleoBackup names a destination (and the egress
its runner gets) for the tenant's data, and a CleoFailover moves the tenant's database
between sites; those are the platform team's decisions (docs/security.md, the tenant
admin). An admin may ask for a backup now: `create` (and `delete`, to clean up) on
CleoBackups, never `update` or `patch`. RBAC cannot look inside an object, so the
tenant-protection admission policy narrows that to one-offs that only name a CleoBackup
of the platform's (``{tenant, from}``), and deletes to such one-offs; the operator then
takes everything else from the named CleoBackup (reconcile/backup_source.py). Because
that policy is optional (Kubernetes 1.28 and 1.29 have none; an admin may unbind it for a
repair), the grant is a ClusterRole of its own, `cleo-tenant-backup-requester`: the chart
installs it only with the policy, and the operator binds spec.admins to it only while it
sees the policy and its binding in place (reconcile/tenant_protection.py), and removes
that binding otherwise.

Why ClusterRoles that the operator only binds, and not Roles it writes per namespace:
RBAC's escalation check lets an identity write a Role only with permissions it holds
itself, so writing these Roles made the operator hold everything they grant (pods/exec,
deletecollection, ...) in every namespace, although it never used any of it. Binding
needs only the ``bind`` verb on the two ClusterRoles by name. The ClusterRoles are
installed once per cluster by a cluster admin (the Helm chart, or the generated
``deploy/rbac/tenant-roles.yaml``); their rules come from `admin_rules` and `viewer_rules`
here, and a test fails when either copy drifts.

The RoleBindings are named after the ClusterRole they bind (`cleo-tenant-admin`), not
``cleo-tenant-admins`` as when they bound namespaced Roles: a RoleBinding's roleRef cannot
change, so the old bindings could not be repointed. The reconciler prunes the old Roles
and RoleBindings, which are listed in the tenant's status.children and carry our labels.

The rules name every verb and resource: no wildcards, because ``*`` also grants whatever
kinds and subresources a later Kubernetes version or a CRD adds to the group.

A RoleBinding is rendered only for a non-empty list of subjects; platform teams can bind
their own subjects to the ClusterRoles in a tenant namespace with a RoleBinding of theirs.

The operator's own rights in a tenant namespace come the same way: `render_operator_binding`
binds its identity to its tenant ClusterRole (``cleo-operator-tenant``, the chart's
``<release>-tenant``; kube/permissions.py, scope ``tenant``) in that namespace only, so that
Secrets, Jobs, CronJobs and bindings are never writable by it cluster-wide. It is applied
right after the namespace, before anything else there (render/tenant.py). It has no owner
reference: it must outlive a foreground deletion of the CleoTenant while the finalizer
still writes in the namespace (the final backup, the credentials Secret), and it goes with
the namespace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, NotRequired, TypedDict

from cleo_operator.api.base import GROUP
from cleo_operator.api.objects import KubeObject, OwnerReference
from cleo_operator.api.tenant import CleoTenantSpec, Subject
from cleo_operator.render.child import child_metadata, sorted_map, workload_metadata
from cleo_operator.render.k8s import (
    RBAC_GROUP,
    ObjectMeta,
    PolicyRule,
    RbacSubject,
    ServiceAccount,
    Verb,
    as_object,
)
from cleo_operator.render.meta import tenant_labels

ADMIN_ROLE: Final = "cleo-tenant-admin"
"""The ClusterRole of tenant admins (spec.admins)."""
VIEWER_ROLE: Final = "cleo-tenant-viewer"
"""The ClusterRole of tenant viewers (spec.viewers)."""
TENANT_ROLES: Final = (ADMIN_ROLE, VIEWER_ROLE)
"""Both ClusterRoles, required at start (kube/permissions.py)."""
BACKUP_REQUESTER_ROLE: Final = "cleo-tenant-backup-requester"
"""The ClusterRole that lets spec.admins create and delete CleoBackups: bound only while the
tenant-protection policy that narrows it is in place (see the module docstring)."""
BACKUP_REQUESTER_BINDING: Final = BACKUP_REQUESTER_ROLE
"""The RoleBinding of spec.admins to `BACKUP_REQUESTER_ROLE` in the tenant's namespace."""
ADMIN_BINDING: Final = ADMIN_ROLE
"""The RoleBinding of spec.admins in the tenant's namespace."""
VIEWER_BINDING: Final = VIEWER_ROLE
"""The RoleBinding of spec.viewers in the tenant's namespace."""

# Not app.kubernetes.io/managed-by: cleo-operator: the operator neither writes nor watches
# these (a cluster admin installs them), and that label is how it selects its children.
CLUSTER_ROLE_LABELS: Final = {
    "app.kubernetes.io/part-of": "cleo-operator",
    "app.kubernetes.io/component": "tenant-access",
}

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
        # How the tenant's backups and failovers went (asking for a backup now is
        # BACKUP_REQUESTER_ROLE's, bound only under the admission policy).
        _rule(GROUP, ["cleobackups", "cleofailovers"], READ),
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
        _rule(GROUP, ["cleobackups", "cleofailovers"], READ),
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
        "metadata": workload_metadata(tenant=tenant, namespace=namespace, owner=owner),
        # CleoAI never calls the Kubernetes API; a token in the pod would only be a risk.
        "automountServiceAccountToken": False,
    }
    return as_object(obj)


class _ClusterRoleMeta(TypedDict):
    name: str
    labels: dict[str, str]


class ClusterRole(TypedDict):
    """rbac.authorization.k8s.io/v1 ClusterRole, the fields set here."""

    apiVersion: Literal["rbac.authorization.k8s.io/v1"]
    kind: Literal["ClusterRole"]
    metadata: _ClusterRoleMeta
    rules: list[PolicyRule]


class ClusterRoleRef(TypedDict):
    """A RoleBinding's roleRef to a ClusterRole (render.k8s's RoleRef names Roles only)."""

    apiGroup: Literal["rbac.authorization.k8s.io"]
    kind: Literal["ClusterRole"]
    name: str


class TenantRoleBinding(TypedDict):
    """A RoleBinding in the tenant's namespace that binds a ClusterRole there only."""

    apiVersion: Literal["rbac.authorization.k8s.io/v1"]
    kind: Literal["RoleBinding"]
    metadata: ObjectMeta
    roleRef: ClusterRoleRef
    subjects: list[RbacSubject]


def backup_requester_rules() -> list[PolicyRule]:
    """The rules of `cleo-tenant-backup-requester`: create and delete CleoBackups, which the
    tenant-protection policy narrows to one-offs ``{tenant, from}``."""
    return [_rule(GROUP, ["cleobackups"], ("create", "delete"))]


def tenant_role_rules() -> dict[str, list[PolicyRule]]:
    """The rules of each tenant ClusterRole, by name, in a stable order."""
    return {
        ADMIN_ROLE: admin_rules(),
        BACKUP_REQUESTER_ROLE: backup_requester_rules(),
        VIEWER_ROLE: viewer_rules(),
    }


def render_tenant_cluster_roles() -> list[KubeObject]:
    """The ClusterRoles `cleo-tenant-admin` and `cleo-tenant-viewer`, as installed once per
    cluster (not per tenant, and not by the operator: see the module docstring)."""
    roles: list[KubeObject] = []
    for name, rules in tenant_role_rules().items():
        obj: ClusterRole = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name, "labels": dict(CLUSTER_ROLE_LABELS)},
            "rules": rules,
        }
        roles.append(as_object(obj))
    return roles


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
    obj: TenantRoleBinding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": child_metadata(
            name=name, namespace=namespace, tenant=tenant, owner=owner, component="access"
        ),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
        "subjects": _subjects(subjects),
    }
    return as_object(obj)


def render_role_bindings(
    *,
    tenant: str,
    namespace: str,
    owner: OwnerReference,
    spec: CleoTenantSpec,
    backup_requests: bool = False,
) -> list[KubeObject]:
    """RoleBindings of spec.admins and spec.viewers to the tenant ClusterRoles, in the
    tenant's namespace; none for an empty list. With `backup_requests` (the admission policy
    is in place), spec.admins are bound to `BACKUP_REQUESTER_ROLE` too."""
    bindings = []
    for name, role, subjects in (
        (ADMIN_BINDING, ADMIN_ROLE, spec.admins),
        (BACKUP_REQUESTER_BINDING, BACKUP_REQUESTER_ROLE, spec.admins if backup_requests else []),
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


OPERATOR_BINDING: Final = "cleo-operator"
"""The RoleBinding of the operator's own identity in each tenant namespace."""
_SERVICE_ACCOUNT_PREFIX: Final = "system:serviceaccount:"


class OperatorSubject(TypedDict):
    """The subject of the operator's binding: its ServiceAccount, or the user it runs as."""

    kind: Literal["ServiceAccount", "User"]
    name: str
    namespace: NotRequired[str]
    apiGroup: NotRequired[Literal["rbac.authorization.k8s.io"]]


class _OperatorBindingMeta(TypedDict):
    name: str
    namespace: str
    labels: dict[str, str]


class OperatorRoleBinding(TypedDict):
    """The operator's RoleBinding to its tenant ClusterRole in one tenant namespace."""

    apiVersion: Literal["rbac.authorization.k8s.io/v1"]
    kind: Literal["RoleBinding"]
    metadata: _OperatorBindingMeta
    roleRef: ClusterRoleRef
    subjects: list[OperatorSubject]


@dataclass(frozen=True, kw_only=True)
class OperatorAccess:
    """Who the operator is and which ClusterRole holds its rights in tenant namespaces."""

    role: str
    """The operator's tenant ClusterRole (kube/permissions.py, scope ``tenant``)."""
    username: str
    """The user name the API server knows the operator by (a SelfSubjectReview)."""

    def subject(self) -> OperatorSubject:
        """A ServiceAccount subject for a ServiceAccount's user name, else a User."""
        if self.username.startswith(_SERVICE_ACCOUNT_PREFIX):
            namespace, _, name = self.username.removeprefix(_SERVICE_ACCOUNT_PREFIX).partition(":")
            if namespace and name and ":" not in name:
                return {"kind": "ServiceAccount", "name": name, "namespace": namespace}
        return {"kind": "User", "name": self.username, "apiGroup": RBAC_GROUP}


def render_operator_binding(*, tenant: str, namespace: str, access: OperatorAccess) -> KubeObject:
    """The operator's RoleBinding to its tenant ClusterRole in the tenant's namespace."""
    obj: OperatorRoleBinding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": OPERATOR_BINDING,
            "namespace": namespace,
            "labels": sorted_map(tenant_labels(tenant, component="access")),
        },
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": access.role},
        "subjects": [access.subject()],
    }
    return as_object(obj)

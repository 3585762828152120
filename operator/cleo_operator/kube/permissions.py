"""Every Kubernetes permission the operator needs, in one list, each with its reason.

Why one list in code: three things must agree and drift silently when they are kept apart.
The Helm chart's ClusterRoles and Role grant exactly this list (a test renders the chart and
compares, so a new verb here fails until the chart grants it, and a verb the chart grants
but nobody needs fails too); the operator checks at start that it holds all of it, and
names precisely what is missing instead of failing later with a Forbidden deep inside a
reconcile; and a reviewer reads one place to see why the operator may do what it may.

Scopes, which decide how the chart grants a permission. The rule behind them: what the
operator holds cluster-wide is the blast radius of every bug it has, so it holds there only
what it cannot do without, and a ValidatingAdmissionPolicy bound to its identity
(charts/cleo-operator/templates/admission-operator-scope.yaml, deploy/admission/) fences
even that to tenant namespaces and its own:

- ``cluster``: cluster-scoped resources (namespaces, CleoTenants, CRDs). Always through a
  ClusterRoleBinding.
- ``watch``: namespaced, but needed before (or outside) any one tenant namespace: Kopf's
  list and watch of the children it follows (a watch cannot be limited by label in RBAC,
  only by the label selector Kopf sends), and the bootstrap of each new tenant namespace:
  the operator's own RoleBinding there, by name, and ``bind`` on the ClusterRole it binds.
  Cluster-wide by default; a namespace-scoped install grants them with a RoleBinding in
  each watched namespace. Secrets are not in it: Kopf does not watch Secrets, so the
  operator holds no read on the Secrets of namespaces that are not tenants' (kube-system).
- ``tenant``: namespaced resources where tenants live, and every write there: the tenant
  namespaces (their children) and the namespaces of CleoBackups and CleoFailovers (tenant
  namespaces too). Never granted cluster-wide: the chart ships them as the ClusterRole
  ``<release>-tenant`` (``cleo-operator-tenant`` by default) and the operator binds it in
  each tenant namespace it creates, with the RoleBinding ``cleo-operator``, applied right
  after the namespace and before anything else in it (render/rbac.py). The start check
  asks for ``bind`` on that ClusterRole and reads its rules instead of asking for the
  rights themselves, which it holds in no namespace before its first tenant.
- ``cluster-events``: creating Events in the namespace ``default``, where the operator
  (kube/events.py) and Kopf (outside a pod) post the Events of cluster-scoped CleoTenants,
  as ``kubectl describe`` expects. A Role there, create only.
- ``operator``: namespaced resources in the operator's own namespace only: its keys (KEK,
  sealing keyring, wrapped tenant keyring copies), the site admin credentials, the sealing
  public key's ConfigMap, the Events Kopf posts about cluster-scoped objects (Kopf puts
  those in the namespace it runs in), and the leader Lease (kube/leader.py: read and
  renewed by name; created on any name, as RBAC cannot limit a create by name). A Role
  there.

Bound, not granted: tenants' admins and viewers get their rights from the ClusterRoles
``cleo-tenant-admin`` and ``cleo-tenant-viewer`` (`render/rbac.py`), installed once per
cluster by a cluster admin; the operator only writes RoleBindings to them. RBAC's escalation
check lets an identity write a binding only to a role whose permissions it holds, or when
it may ``bind`` that role: the operator holds ``bind`` on exactly those two ClusterRoles
(``resourceNames``), and none of what they grant (pods/exec, deletecollection, ...). It may
also ``get`` them, because a RoleBinding to a ClusterRole that does not exist is accepted
and grants nothing: `check_permissions` says so at start instead. A unit test keeps the
names equal to render/rbac.py's. No entry uses a wildcard: ``*`` would also grant whatever a
later Kubernetes version or a CRD adds.

Not listed, because every authenticated identity holds them already (the ``system:basic-user``
and ``system:discovery`` ClusterRoles): API discovery, SelfSubjectAccessReview and
SelfSubjectReview, which the start check (kube/access.py) uses.

The list is a table, one row per need; a row may name several resources of one group
needed for one reason. `policy_rules` turns it into RBAC rules (the chart's, the generated
files'); kube/access.py asks the API server whether they are held.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple, NotRequired, TypedDict, get_args

__all__ = [
    "BACKUP_REQUESTER_ROLE",
    "EVENTS_NAMESPACE",
    "LEADER_LEASE",
    "OPERATOR_BINDING",
    "OPERATOR_ROLE_HINT",
    "OPERATOR_TENANT_ROLE",
    "PERMISSIONS",
    "RBAC_GROUP",
    "TENANT_CLUSTER_ROLES",
    "TENANT_PROTECTION_POLICY",
    "TENANT_ROLES_HINT",
    "TENANT_ROLE_ENV",
    "VERB_ORDER",
    "Grant",
    "Permission",
    "PolicyRule",
    "Scope",
    "Verb",
    "grants",
    "permissions_for",
    "policy_rules",
    "sorted_verbs",
]

Verb = Literal[
    "get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "bind"
]
Scope = Literal["cluster", "watch", "tenant", "operator", "cluster-events"]

VERB_ORDER: Final[tuple[Verb, ...]] = get_args(Verb)

RBAC_GROUP: Final = "rbac.authorization.k8s.io"
TENANT_CLUSTER_ROLES: Final[tuple[str, ...]] = ("cleo-tenant-admin", "cleo-tenant-viewer")
"""The ClusterRoles of tenant admins and viewers (render/rbac.py's TENANT_ROLES; the kube
layer cannot import render, so a test keeps the two equal)."""
BACKUP_REQUESTER_ROLE: Final = "cleo-tenant-backup-requester"
"""The ClusterRole that lets tenant admins create and delete CleoBackups (render/rbac.py's
BACKUP_REQUESTER_ROLE): installed only with the tenant-protection policy, and bound only
while the operator sees that policy in place, so it is optional (not checked at start)."""
TENANT_PROTECTION_POLICY: Final = "cleo-tenant-protection"
"""The ValidatingAdmissionPolicy (and its binding) that narrows BACKUP_REQUESTER_ROLE."""
OPERATOR_TENANT_ROLE: Final = "cleo-operator-tenant"
"""The ClusterRole holding the operator's own rights in a tenant namespace (scope
``tenant``), by default; the chart names it ``<release>-tenant`` and tells the operator
(``CLEO_OPERATOR_TENANT_ROLE``). `permissions_for` puts the configured name in."""
TENANT_ROLE_ENV: Final = "CLEO_OPERATOR_TENANT_ROLE"
"""The environment variable naming the operator's tenant ClusterRole (set by the chart)."""
OPERATOR_BINDING: Final = "cleo-operator"
"""The RoleBinding in each tenant namespace that binds the operator to its tenant role."""
LEADER_LEASE: Final = "cleo-operator-leader"
"""The Lease in the operator's namespace whose holder is the one replica that reconciles
(kube/leader.py)."""
OPERATOR_ROLE_HINT: Final = (
    "install the chart (it ships <release>-tenant) or apply "
    "deploy/rbac/operator-tenant-role.yaml "
    "(`kubectl apply --server-side -f deploy/rbac/operator-tenant-role.yaml`, or without a "
    "checkout `cleo-operator tenant-roles --operator | kubectl apply --server-side -f -`), "
    "and name it to the operator with CLEO_OPERATOR_TENANT_ROLE"
)
"""What to do when the operator's tenant ClusterRole is missing or short of rules."""
TENANT_ROLES_HINT: Final = (
    "install the chart or apply deploy/rbac/tenant-roles.yaml "
    "(`kubectl apply --server-side -f deploy/rbac/tenant-roles.yaml`, or without a checkout "
    "`cleo-operator tenant-roles | kubectl apply --server-side -f -`)"
)
"""What to do when the tenant ClusterRoles are missing."""


class PolicyRule(TypedDict):
    """One RBAC rule, as a ClusterRole or Role holds it."""

    apiGroups: list[str]
    resources: list[str]
    verbs: list[Verb]
    resourceNames: NotRequired[list[str]]


class Grant(NamedTuple):
    """One verb on one resource (of one name, or of any), as RBAC grants it."""

    group: str
    resource: str
    verb: Verb
    name: str = ""
    """The object's name when the grant is restricted by ``resourceNames``; "" for any."""


@dataclass(frozen=True, kw_only=True)
class Permission:
    """One resource the operator acts on, the verbs it needs there, where, and why."""

    group: str
    """API group; ``""`` is the core group (``v1``)."""
    resource: str
    """Plural resource name, ``resource/subresource`` for a subresource."""
    verbs: tuple[Verb, ...]
    """The verbs needed, no more; never ``*``."""
    scope: Scope
    """Where the verbs are needed (see the module docstring)."""
    why: str
    """What the operator does with it, for people reading the list or an error."""
    resource_names: tuple[str, ...] = ()
    """Only these objects (RBAC's ``resourceNames``); empty for every object."""


class _Row(NamedTuple):
    """One row of the table: `resources` (space-separated) of `group`, the same need."""

    scope: Scope
    group: str
    resources: str
    verbs: str
    why: str
    names: tuple[str, ...] = ()


def _verbs(text: str) -> tuple[Verb, ...]:
    verbs = tuple(v for v in VERB_ORDER if v in text.split())
    if len(verbs) != len(text.split()):
        raise ValueError(f"not RBAC verbs of {VERB_ORDER}: {text!r}")
    return verbs


def _table(rows: Iterable[_Row]) -> tuple[Permission, ...]:
    return tuple(
        Permission(
            group=row.group,
            resource=resource,
            verbs=_verbs(row.verbs),
            scope=row.scope,
            why=row.why,
            resource_names=row.names,
        )
        for row in rows
        for resource in row.resources.split()
    )


_CHILD: Final = "get list watch create patch delete"
_CHILD_WHY: Final = (
    "a child of tenants: server-side applied (a patch, which creates it when missing), read "
    "back to compare, watched to notice edits by hand, deleted when no longer desired"
)
# What Kopf lists and watches cluster-wide (handlers/registry.py): the children it follows,
# with the label selector it sends, and our namespaced kinds. Not Secrets (see the module
# docstring).
_WATCHED_WHY: Final = (
    "Kopf lists and watches it in all (watched) namespaces, with a label selector, to wake "
    "the tenant or backup an event is about"
)

PERMISSIONS: Final[tuple[Permission, ...]] = _table(
    (
        # -- cluster-scoped --------------------------------------------------------------
        _Row(
            "cluster",
            "",
            "namespaces",
            "get list watch create patch delete",
            "each tenant's namespace: applied (patch, create when missing), watched to put "
            "it back, labelled when orphaned, deleted under deletionPolicy Delete; Kopf also "
            "lists and watches namespaces to follow them",
        ),
        _Row(
            "cluster",
            "cleoai.io",
            "cleotenants",
            "get list watch patch",
            "read and watch tenants; Kopf's finalizer and annotations are patches",
        ),
        _Row(
            "cluster",
            "cleoai.io",
            "cleotenants/status",
            "patch",
            "write what the operator observed to each tenant's status",
        ),
        _Row(
            "cluster",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "list watch",
            "Kopf notices CRDs installed or removed while it runs",
        ),
        _Row(
            "cluster",
            RBAC_GROUP,
            "clusterroles",
            "get",
            "checked at start to exist (and the operator's own tenant role to grant what it "
            "needs): a RoleBinding to a missing ClusterRole is accepted and grants nothing, "
            "so tenant admins, viewers or the operator would silently get no rights",
            (*TENANT_CLUSTER_ROLES, BACKUP_REQUESTER_ROLE, OPERATOR_TENANT_ROLE),
        ),
        _Row(
            "cluster",
            "admissionregistration.k8s.io",
            "validatingadmissionpolicies validatingadmissionpolicybindings",
            "get",
            "whether the tenant-protection policy and its binding are in place: only then "
            "are tenant admins bound to the ClusterRole that lets them ask for backups",
            (TENANT_PROTECTION_POLICY,),
        ),
        # -- namespaced, before any one tenant namespace ---------------------------------
        _Row(
            "watch",
            "",
            "configmaps limitranges resourcequotas serviceaccounts services",
            "list watch",
            _WATCHED_WHY,
        ),
        _Row("watch", "apps", "deployments", "list watch", _WATCHED_WHY),
        _Row("watch", "autoscaling", "horizontalpodautoscalers", "list watch", _WATCHED_WHY),
        _Row("watch", "batch", "cronjobs jobs", "list watch", _WATCHED_WHY),
        _Row("watch", "networking.k8s.io", "networkpolicies", "list watch", _WATCHED_WHY),
        _Row("watch", "policy", "poddisruptionbudgets", "list watch", _WATCHED_WHY),
        _Row("watch", RBAC_GROUP, "rolebindings roles", "list watch", _WATCHED_WHY),
        _Row("watch", "cleoai.io", "cleobackups cleofailovers", "list watch", _WATCHED_WHY),
        _Row(
            "watch",
            RBAC_GROUP,
            "rolebindings",
            "get create patch",
            "the operator's own RoleBinding in a new tenant namespace (to its tenant "
            "ClusterRole), applied right after the namespace: before it exists the operator "
            "holds nothing there; the admission policy fences it to tenant namespaces",
            (OPERATOR_BINDING,),
        ),
        _Row(
            "watch",
            RBAC_GROUP,
            "clusterroles",
            "bind",
            "lets the operator bind its tenant ClusterRole in a new tenant namespace without "
            "holding what it grants there yet (RBAC's escalation check)",
            (OPERATOR_TENANT_ROLE,),
        ),
        # -- namespaced, in each tenant namespace (the operator's tenant ClusterRole) ----
        _Row(
            "tenant",
            "cleoai.io",
            "cleobackups",
            "get list watch create patch delete",
            "read and watch backups; Kopf's finalizer and annotations are patches; the final "
            "backup of a tenant deleted under deletionPolicy Delete is created (and one left "
            "from an earlier deletion deleted) by the operator, and so are one-offs asked for "
            "with spec.from once their time is up; migrations with backupFirst create one-offs",
        ),
        _Row(
            "tenant",
            "cleoai.io",
            "cleobackups/status",
            "patch",
            "write each backup's history and verdicts to its status",
        ),
        _Row(
            "tenant",
            "cleoai.io",
            "cleofailovers",
            "get list watch create patch",
            "read and watch failovers; create one for each automatic failover (the audit "
            "trail); Kopf's finalizer and annotations are patches",
        ),
        _Row(
            "tenant",
            "cleoai.io",
            "cleofailovers/status",
            "patch",
            "write each failover's steps, measured RTO and RPO to its status",
        ),
        _Row(
            "tenant",
            "",
            "events",
            "create",
            "Kopf posts handler warnings as Events, the operator its significant actions",
        ),
        _Row(
            "tenant",
            "",
            "configmaps limitranges resourcequotas secrets serviceaccounts services",
            _CHILD,
            _CHILD_WHY,
        ),
        _Row("tenant", "apps", "deployments", _CHILD, _CHILD_WHY),
        _Row(
            "tenant",
            "apps",
            "replicasets",
            "get",
            "whether a workload pod's ReplicaSet is controlled by the workload's Deployment "
            "(by uid): only such pods count as the workload's for its pooler",
        ),
        _Row("tenant", "autoscaling", "horizontalpodautoscalers", _CHILD, _CHILD_WHY),
        _Row("tenant", "networking.k8s.io", "networkpolicies", _CHILD, _CHILD_WHY),
        _Row("tenant", "policy", "poddisruptionbudgets", _CHILD, _CHILD_WHY),
        # RoleBindings of tenant admins and viewers; the Roles (and their bindings) of
        # backup runners; and deleting the Roles older versions wrote in tenant namespaces.
        _Row("tenant", RBAC_GROUP, "rolebindings roles", _CHILD, _CHILD_WHY),
        _Row(
            "tenant",
            RBAC_GROUP,
            "clusterroles",
            "bind",
            "bound in tenant namespaces to spec.admins and spec.viewers; `bind` lets the "
            "operator write those RoleBindings without holding what the ClusterRoles grant",
            (*TENANT_CLUSTER_ROLES, BACKUP_REQUESTER_ROLE),
        ),
        _Row(
            "tenant",
            "batch",
            "cronjobs",
            _CHILD,
            "the CronJob of each scheduled CleoBackup: applied, watched, deleted with it",
        ),
        _Row(
            "tenant",
            "batch",
            "jobs",
            _CHILD,
            "one-off backup and verification Jobs: applied, watched, deleted after their "
            "report; the workload's migration Jobs: created, read, deleted when done",
        ),
        _Row(
            "tenant",
            "",
            "pods",
            "get list watch",
            "the reports of backup and migration Jobs' pods and the state of the workload's pods",
        ),
        _Row(
            "tenant",
            "",
            "persistentvolumeclaims",
            "get",
            "the claim a CleoBackup's pvc destination names, checked to exist before a run",
        ),
        # -- the operator's own namespace ------------------------------------------------
        _Row(
            "operator",
            "",
            "secrets",
            "get list watch create patch",
            "the operator's keys (kube/keys.py): the KEK Secret unless CLEO_KEK_DIR is set, "
            "the sealing keyring and each tenant keyring's wrapped copy, created once (POST) "
            "and rotated by preconditioned patches, never deleted; the site admin "
            "credentials (sites.*.adminSecret) and the registry Secrets backup runners pull "
            "with (backup.imagePullSecrets, copied into tenant namespaces), read",
        ),
        _Row(
            "operator",
            "",
            "configmaps",
            "get create patch",
            "the ConfigMap that publishes the sealing public key (applied: patch, create)",
        ),
        _Row(
            "operator",
            "",
            "events",
            "create",
            "Kopf posts Events about cluster-scoped objects (CleoTenants) in its own namespace",
        ),
        _Row(
            "operator",
            "coordination.k8s.io",
            "leases",
            "get update",
            "leader election (kube/leader.py): every replica reads the leader Lease, the one "
            "that leads renews it, a standby takes it over when it is free or expired",
            (LEADER_LEASE,),
        ),
        _Row(
            "operator",
            "coordination.k8s.io",
            "leases",
            "create",
            "the first replica ever to start creates the leader Lease (RBAC cannot limit "
            "create to a name, so this holds for any Lease of the operator's namespace only)",
        ),
        # -- the namespace default: Events of cluster-scoped objects ---------------------
        _Row(
            "cluster-events",
            "",
            "events",
            "create",
            "the Events of CleoTenants (cluster-scoped), which the operator posts in default, "
            "where kubectl describe looks for them",
        ),
    )
)
"""Every permission the operator needs, in the order the start check reports them."""

EVENTS_NAMESPACE: Final = "default"
"""Where the Events of cluster-scoped objects go (scope ``cluster-events``)."""


def permissions_for(tenant_role: str = OPERATOR_TENANT_ROLE) -> tuple[Permission, ...]:
    """PERMISSIONS, with `tenant_role` as the name of the operator's tenant ClusterRole
    (the chart names it after the release)."""
    if tenant_role == OPERATOR_TENANT_ROLE:
        return PERMISSIONS
    return tuple(
        dataclasses.replace(
            p,
            resource_names=tuple(
                tenant_role if n == OPERATOR_TENANT_ROLE else n for n in p.resource_names
            ),
        )
        for p in PERMISSIONS
    )


# --------------------------------------------------------------------------- rules


def sorted_verbs(verbs: Iterable[Verb]) -> list[Verb]:
    """`verbs` once each, in RBAC's usual order (get, list, watch, create, ...)."""
    unique = set(verbs)
    return [v for v in VERB_ORDER if v in unique]


def grants(scopes: Iterable[Scope], permissions: Iterable[Permission] = PERMISSIONS) -> set[Grant]:
    """Every grant the given scopes need, one per name where a permission names objects;
    what the chart must grant there."""
    wanted = set(scopes)
    return {
        Grant(p.group, p.resource, verb, name)
        for p in permissions
        if p.scope in wanted
        for verb in p.verbs
        for name in (p.resource_names or ("",))
    }


def policy_rules(
    scopes: Iterable[Scope], permissions: Iterable[Permission] = PERMISSIONS
) -> list[PolicyRule]:
    """The RBAC rules that grant exactly `scopes`' permissions, in a stable, compact order.

    Resources of one group that need the same verbs (on the same names) share a rule;
    groups, resources, verbs and names are sorted (their order means nothing to RBAC), so
    the output is deterministic.
    """
    names_of: dict[tuple[str, str, Verb], set[str]] = {}
    for grant in grants(scopes, permissions):
        names_of.setdefault((grant.group, grant.resource, grant.verb), set()).add(grant.name)
    verbs_of: dict[tuple[str, str, tuple[str, ...]], set[Verb]] = {}
    for (group, resource, verb), granted_names in names_of.items():
        # "" is any object, which includes every named one.
        only = () if "" in granted_names else tuple(sorted(granted_names))
        verbs_of.setdefault((group, resource, only), set()).add(verb)
    resources_of: dict[tuple[str, tuple[Verb, ...], tuple[str, ...]], list[str]] = {}
    for (group, resource, only), verbs in verbs_of.items():
        resources_of.setdefault((group, tuple(sorted_verbs(verbs)), only), []).append(resource)
    rules: list[PolicyRule] = []
    for (group, rule_verbs, names), resources in sorted(
        resources_of.items(), key=lambda item: (item[0][0], sorted(item[1])[0], item[0][2])
    ):
        rule: PolicyRule = {
            "apiGroups": [group],
            "resources": sorted(resources),
            "verbs": list(rule_verbs),
        }
        if names:
            rule["resourceNames"] = list(names)
        rules.append(rule)
    return rules

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
  public key's ConfigMap, and the Events Kopf posts about cluster-scoped objects (Kopf puts
  those in the namespace it runs in). A Role there.

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
SelfSubjectReview, which `missing_permissions` uses.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple, NotRequired, TypedDict, get_args

import yaml

from cleo_operator.core.errors import CleoError
from cleo_operator.kube.client import KubeClient, KubeError

__all__ = [
    "EVENTS_NAMESPACE",
    "OPERATOR_BINDING",
    "OPERATOR_ROLE_HINT",
    "OPERATOR_TENANT_ROLE",
    "PERMISSIONS",
    "TENANT_CLUSTER_ROLES",
    "TENANT_ROLES_HINT",
    "TENANT_ROLE_ENV",
    "AccessCheck",
    "Grant",
    "MissingPermission",
    "MissingPermissions",
    "Permission",
    "PolicyRule",
    "Scope",
    "Verb",
    "access_checks",
    "check_permissions",
    "describe_missing",
    "grants",
    "missing_operator_tenant_rules",
    "missing_permissions",
    "missing_tenant_roles",
    "permissions_for",
    "policy_rules",
    "register",
]

log = logging.getLogger(__name__)

Verb = Literal[
    "get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "bind"
]
Scope = Literal["cluster", "watch", "tenant", "operator", "cluster-events"]

VERB_ORDER: Final[tuple[Verb, ...]] = get_args(Verb)

RBAC_GROUP: Final = "rbac.authorization.k8s.io"
TENANT_CLUSTER_ROLES: Final[tuple[str, ...]] = ("cleo-tenant-admin", "cleo-tenant-viewer")
"""The ClusterRoles of tenant admins and viewers (render/rbac.py's TENANT_ROLES; the kube
layer cannot import render, so a test keeps the two equal)."""
OPERATOR_TENANT_ROLE: Final = "cleo-operator-tenant"
"""The ClusterRole holding the operator's own rights in a tenant namespace (scope
``tenant``), by default; the chart names it ``<release>-tenant`` and tells the operator
(``CLEO_OPERATOR_TENANT_ROLE``). `permissions_for` puts the configured name in."""
TENANT_ROLE_ENV: Final = "CLEO_OPERATOR_TENANT_ROLE"
"""The environment variable naming the operator's tenant ClusterRole (set by the chart)."""
OPERATOR_BINDING: Final = "cleo-operator"
"""The RoleBinding in each tenant namespace that binds the operator to its tenant role."""
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


_CHILD_VERBS: Final[tuple[Verb, ...]] = ("get", "list", "watch", "create", "patch", "delete")
_CHILD_WHY: Final = (
    "a child of tenants: server-side applied (a patch, which creates it when missing), read "
    "back to compare, watched to notice edits by hand, deleted when no longer desired"
)
_READ: Final[tuple[Verb, ...]] = ("get", "list", "watch")
_MANAGE: Final[tuple[Verb, ...]] = (
    *_READ,
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
)


def _children(group: str, resources: Iterable[str]) -> list[Permission]:
    return [
        Permission(group=group, resource=r, verbs=_CHILD_VERBS, scope="tenant", why=_CHILD_WHY)
        for r in resources
    ]


# What Kopf lists and watches cluster-wide (handlers/registry.py): the children it follows,
# with the label selector it sends, and our namespaced kinds. Not Secrets (see the module
# docstring).
_WATCHED: Final[tuple[tuple[str, str], ...]] = (
    ("", "configmaps"),
    ("", "limitranges"),
    ("", "resourcequotas"),
    ("", "serviceaccounts"),
    ("", "services"),
    ("apps", "deployments"),
    ("autoscaling", "horizontalpodautoscalers"),
    ("batch", "cronjobs"),
    ("batch", "jobs"),
    ("networking.k8s.io", "networkpolicies"),
    ("policy", "poddisruptionbudgets"),
    (RBAC_GROUP, "rolebindings"),
    (RBAC_GROUP, "roles"),
    ("cleoai.io", "cleobackups"),
    ("cleoai.io", "cleofailovers"),
)


PERMISSIONS: Final[tuple[Permission, ...]] = (
    # -- cluster-scoped ------------------------------------------------------------------
    Permission(
        group="",
        resource="namespaces",
        verbs=("get", "list", "watch", "create", "patch", "delete"),
        scope="cluster",
        why=(
            "each tenant's namespace: applied (patch, create when missing), watched to put "
            "it back, labelled when orphaned, deleted under deletionPolicy Delete; Kopf also "
            "lists and watches namespaces to follow them"
        ),
    ),
    Permission(
        group="cleoai.io",
        resource="cleotenants",
        verbs=("get", "list", "watch", "patch"),
        scope="cluster",
        why="read and watch tenants; Kopf's finalizer and annotations are patches",
    ),
    Permission(
        group="cleoai.io",
        resource="cleotenants/status",
        verbs=("patch",),
        scope="cluster",
        why="write what the operator observed to each tenant's status",
    ),
    Permission(
        group="apiextensions.k8s.io",
        resource="customresourcedefinitions",
        verbs=("list", "watch"),
        scope="cluster",
        why="Kopf notices CRDs installed or removed while it runs",
    ),
    Permission(
        group=RBAC_GROUP,
        resource="clusterroles",
        verbs=("get",),
        scope="cluster",
        resource_names=(*TENANT_CLUSTER_ROLES, OPERATOR_TENANT_ROLE),
        why=(
            "checked at start to exist (and the operator's own tenant role to grant what "
            "it needs): a RoleBinding to a missing ClusterRole is accepted and grants "
            "nothing, so tenant admins, viewers or the operator would silently get no rights"
        ),
    ),
    # -- namespaced, before any one tenant namespace -------------------------------------
    *(
        Permission(
            group=group,
            resource=resource,
            verbs=("list", "watch"),
            scope="watch",
            why=(
                "Kopf lists and watches it in all (watched) namespaces, with a label "
                "selector, to wake the tenant or backup an event is about"
            ),
        )
        for group, resource in _WATCHED
    ),
    Permission(
        group=RBAC_GROUP,
        resource="rolebindings",
        verbs=("get", "create", "patch"),
        scope="watch",
        resource_names=(OPERATOR_BINDING,),
        why=(
            "the operator's own RoleBinding in a new tenant namespace (to its tenant "
            "ClusterRole), applied right after the namespace: before it exists the operator "
            "holds nothing there; the admission policy fences it to tenant namespaces"
        ),
    ),
    Permission(
        group=RBAC_GROUP,
        resource="clusterroles",
        verbs=("bind",),
        scope="watch",
        resource_names=(OPERATOR_TENANT_ROLE,),
        why=(
            "lets the operator bind its tenant ClusterRole in a new tenant namespace "
            "without holding what it grants there yet (RBAC's escalation check)"
        ),
    ),
    # -- namespaced, in each tenant namespace (the operator's tenant ClusterRole) ---------
    Permission(
        group="cleoai.io",
        resource="cleobackups",
        verbs=("get", "list", "watch", "create", "patch", "delete"),
        scope="tenant",
        why=(
            "read and watch backups; Kopf's finalizer and annotations are patches; the "
            "final backup of a tenant deleted under deletionPolicy Delete is created (and "
            "one left from an earlier deletion deleted) by the operator"
        ),
    ),
    Permission(
        group="cleoai.io",
        resource="cleobackups/status",
        verbs=("patch",),
        scope="tenant",
        why="write each backup's history and verdicts to its status",
    ),
    Permission(
        group="cleoai.io",
        resource="cleofailovers",
        verbs=("get", "list", "watch", "create", "patch"),
        scope="tenant",
        why=(
            "read and watch failovers; create one for each automatic failover (the audit "
            "trail); Kopf's finalizer and annotations are patches"
        ),
    ),
    Permission(
        group="cleoai.io",
        resource="cleofailovers/status",
        verbs=("patch",),
        scope="tenant",
        why="write each failover's steps, measured RTO and RPO to its status",
    ),
    Permission(
        group="",
        resource="events",
        verbs=("create",),
        scope="tenant",
        why="Kopf posts handler warnings as Events, the operator its significant actions",
    ),
    *_children(
        "",
        ["configmaps", "limitranges", "resourcequotas", "secrets", "serviceaccounts", "services"],
    ),
    *_children("apps", ["deployments"]),
    *_children("autoscaling", ["horizontalpodautoscalers"]),
    *_children("networking.k8s.io", ["networkpolicies"]),
    *_children("policy", ["poddisruptionbudgets"]),
    # RoleBindings of tenant admins and viewers; the Roles (and their bindings) of backup
    # runners; and deleting the Roles older versions wrote in tenant namespaces.
    *_children(RBAC_GROUP, ["rolebindings", "roles"]),
    Permission(
        group=RBAC_GROUP,
        resource="clusterroles",
        verbs=("bind",),
        scope="tenant",
        resource_names=TENANT_CLUSTER_ROLES,
        why=(
            "bound in tenant namespaces to spec.admins and spec.viewers; `bind` lets the "
            "operator write those RoleBindings without holding what the ClusterRoles grant"
        ),
    ),
    Permission(
        group="batch",
        resource="cronjobs",
        verbs=_CHILD_VERBS,
        scope="tenant",
        why="the CronJob of each scheduled CleoBackup: applied, watched, deleted with it",
    ),
    Permission(
        group="batch",
        resource="jobs",
        verbs=_CHILD_VERBS,
        scope="tenant",
        why="one-off backup and verification Jobs: applied, watched, deleted after their report",
    ),
    Permission(
        group="",
        resource="pods",
        verbs=_READ,
        scope="tenant",
        why="the reports of backup Jobs' pods and the state of the workload's pods",
    ),
    Permission(
        group="",
        resource="persistentvolumeclaims",
        verbs=("get",),
        scope="tenant",
        why="the claim a CleoBackup's pvc destination names, checked to exist before a run",
    ),
    # -- the operator's own namespace ------------------------------------------------------
    Permission(
        group="",
        resource="secrets",
        verbs=("get", "list", "watch", "create", "patch"),
        scope="operator",
        why=(
            "the operator's keys (kube/keys.py): the KEK Secret unless CLEO_KEK_DIR is set, "
            "the sealing keyring and each tenant keyring's wrapped copy, created once (POST) "
            "and rotated by preconditioned patches, never deleted; and the site admin "
            "credentials (sites.*.adminSecret), read"
        ),
    ),
    Permission(
        group="",
        resource="configmaps",
        verbs=("get", "create", "patch"),
        scope="operator",
        why="the ConfigMap that publishes the sealing public key (applied: patch, create)",
    ),
    Permission(
        group="",
        resource="events",
        verbs=("create",),
        scope="operator",
        why="Kopf posts Events about cluster-scoped objects (CleoTenants) in its own namespace",
    ),
    # -- the namespace default: Events of cluster-scoped objects ---------------------------
    Permission(
        group="",
        resource="events",
        verbs=("create",),
        scope="cluster-events",
        why=(
            "the Events of CleoTenants (cluster-scoped), which the operator posts in default, "
            "where kubectl describe looks for them"
        ),
    ),
)

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


def _sorted_verbs(verbs: Iterable[Verb]) -> list[Verb]:
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
        resources_of.setdefault((group, tuple(_sorted_verbs(verbs)), only), []).append(resource)
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


# --------------------------------------------------------------------------- checking


@dataclass(frozen=True, kw_only=True)
class AccessCheck:
    """One question for the API server: may I `verb` this resource in `namespace`?"""

    permission: Permission
    """The entry of PERMISSIONS this check comes from."""
    verb: Verb
    """The verb asked about."""
    namespace: str | None
    """The namespace asked about; None for cluster-scoped or all namespaces."""
    name: str | None = None
    """The object asked about, for a permission restricted to names; None for any."""

    def where(self) -> str:
        """Where the permission is needed, for people."""
        if self.namespace is not None:
            return f"in namespace {self.namespace}"
        if self.permission.scope == "cluster":
            return "cluster-wide"
        return "in all namespaces"


@dataclass(frozen=True, kw_only=True)
class MissingPermission:
    """A permission the API server said the operator does not hold."""

    check: AccessCheck
    """What was asked."""
    reason: str = ""
    """The authorizer's reason, when it gave one (never secret material)."""


class MissingPermissions(CleoError):
    """The operator's identity lacks permissions it needs, or the ClusterRoles it binds
    (the tenant roles, its own tenant role) do not exist or lack rules; the message lists
    each one and what to do."""

    reason = "MissingPermissions"
    retryable = False

    def __init__(
        self,
        missing: Sequence[MissingPermission],
        *,
        identity: str | None,
        missing_roles: Sequence[str] = (),
        tenant_role: str = OPERATOR_TENANT_ROLE,
        tenant_role_lacks: Sequence[Grant] | None = (),
    ) -> None:
        super().__init__(
            describe_missing(
                missing,
                identity=identity,
                missing_roles=missing_roles,
                tenant_role=tenant_role,
                tenant_role_lacks=tenant_role_lacks,
            )
        )
        self.missing = list(missing)
        self.identity = identity
        self.missing_roles = list(missing_roles)
        self.tenant_role = tenant_role
        self.tenant_role_lacks = None if tenant_role_lacks is None else list(tenant_role_lacks)


def access_checks(
    *,
    operator_namespace: str,
    watch_namespaces: Sequence[str] = (),
    permissions: Iterable[Permission] = PERMISSIONS,
) -> list[AccessCheck]:
    """The questions that prove the operator holds every permission it needs up front.

    Cluster-wide (`watch_namespaces` empty), watch permissions are asked for all
    namespaces at once; namespace-scoped, once per watched namespace. Operator permissions
    are asked in `operator_namespace`. A permission restricted to names is asked per name.
    Tenant permissions are not asked: the operator holds them only in tenant namespaces,
    through the binding it makes there (`missing_operator_tenant_rules` checks the
    ClusterRole it binds instead, and `bind` on it is a watch permission).
    """
    checks: list[AccessCheck] = []
    for p in permissions:
        namespaces: Sequence[str | None]
        if p.scope == "tenant":
            continue
        if p.scope == "cluster":
            namespaces = [None]
        elif p.scope == "cluster-events":
            namespaces = [EVENTS_NAMESPACE]
        elif p.scope == "operator":
            namespaces = [operator_namespace]
        else:
            namespaces = list(watch_namespaces) or [None]
        names: Sequence[str | None] = p.resource_names or [None]
        checks.extend(
            AccessCheck(permission=p, verb=verb, namespace=ns, name=name)
            for ns in namespaces
            for verb in p.verbs
            for name in names
        )
    return checks


def _review(kube: KubeClient, check: AccessCheck) -> MissingPermission | None:
    resource, _, subresource = check.permission.resource.partition("/")
    attributes: dict[str, str] = {
        "group": check.permission.group,
        "resource": resource,
        "verb": check.verb,
    }
    if subresource:
        attributes["subresource"] = subresource
    if check.namespace is not None:
        attributes["namespace"] = check.namespace
    if check.name is not None:
        attributes["name"] = check.name
    review = kube.request(
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        body={
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        },
        what=f"ask whether we may {check.verb} {check.permission.resource}",
    )
    status = (review or {}).get("status") or {}
    if status.get("allowed") is True:
        return None
    return MissingPermission(check=check, reason=str(status.get("reason") or ""))


def whoami(kube: KubeClient) -> str | None:
    """The user name the API server knows us by (SelfSubjectReview); None if it cannot say."""
    try:
        review = kube.request(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            what="ask who we are",
        )
    except KubeError:
        return None
    name = (((review or {}).get("status") or {}).get("userInfo") or {}).get("username")
    return str(name) if name else None


def missing_permissions(
    kube: KubeClient,
    *,
    operator_namespace: str,
    watch_namespaces: Sequence[str] = (),
    tenant_role: str = OPERATOR_TENANT_ROLE,
    parallel: int = 8,
) -> list[MissingPermission]:
    """Ask the API server (SelfSubjectAccessReview) about every permission needed up front.

    Returns what is missing, in the order of PERMISSIONS; empty when everything is granted.
    Some fifty small reviews, asked `parallel` at a time: well under a second.
    """
    checks = access_checks(
        operator_namespace=operator_namespace,
        watch_namespaces=watch_namespaces,
        permissions=permissions_for(tenant_role),
    )
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        results = list(pool.map(lambda c: _review(kube, c), checks))
    return [m for m in results if m is not None]


def missing_tenant_roles(
    kube: KubeClient, names: Sequence[str] = TENANT_CLUSTER_ROLES
) -> list[str]:
    """The tenant ClusterRoles (of `names`) that do not exist; raises KubeError when the
    API server does not say (a refusal, an outage)."""
    missing: list[str] = []
    for name in names:
        try:
            kube.request(
                "GET",
                f"/apis/{RBAC_GROUP}/v1/clusterroles/{name}",
                what=f"get ClusterRole {name}",
            )
        except KubeError as exc:
            if not exc.not_found:
                raise
            missing.append(name)
    return missing


def _rule_grants(rules: Iterable[Mapping[str, Any]]) -> list[tuple[str, str, str, str]]:
    """Every (group, resource, verb, name) of RBAC rules; "*" stays as it is written."""
    return [
        (str(group), str(resource), str(verb), str(name))
        for rule in rules
        for group in rule.get("apiGroups") or []
        for resource in rule.get("resources") or []
        for verb in rule.get("verbs") or []
        for name in rule.get("resourceNames") or [""]
    ]


def _covers(held: tuple[str, str, str, str], grant: Grant) -> bool:
    group, resource, verb, name = held
    return (
        group in ("*", grant.group)
        and resource in ("*", grant.resource)
        and verb in ("*", grant.verb)
        and name in ("", grant.name)
    )


def missing_operator_tenant_rules(
    kube: KubeClient, tenant_role: str = OPERATOR_TENANT_ROLE
) -> list[Grant] | None:
    """What the operator's tenant ClusterRole `tenant_role` lacks of scope ``tenant``,
    sorted; None when the ClusterRole does not exist. Raises KubeError when the API server
    does not say (a refusal, an outage).

    The operator binds this ClusterRole in each tenant namespace and holds no tenant right
    anywhere else, so at start it checks the role's rules (a wildcard counts) instead of
    asking the API server about rights in a namespace it may not have made yet.
    """
    try:
        role = kube.request(
            "GET",
            f"/apis/{RBAC_GROUP}/v1/clusterroles/{tenant_role}",
            what=f"get ClusterRole {tenant_role}",
        )
    except KubeError as exc:
        if exc.not_found:
            return None
        raise
    held = _rule_grants((role or {}).get("rules") or [])
    needed = grants(["tenant"], permissions_for(tenant_role))
    return sorted(g for g in needed if not any(_covers(h, g) for h in held))


def describe_missing(
    missing: Sequence[MissingPermission],
    *,
    identity: str | None,
    missing_roles: Sequence[str] = (),
    tenant_role: str = OPERATOR_TENANT_ROLE,
    tenant_role_lacks: Sequence[Grant] | None = (),
) -> str:
    """A message for people: who lacks what, where, why it is needed, and what to do."""
    lines: list[str] = []
    if missing:
        who = identity or "the operator's identity"
        grouped: dict[tuple[str, str, str, str], list[MissingPermission]] = {}
        for m in missing:
            p = m.check.permission
            key = (p.group, p.resource, m.check.name or "", m.check.where())
            grouped.setdefault(key, []).append(m)
        lines.append(f"{who} lacks {len(missing)} permission(s) cleo-operator needs:")
        for (group, resource, name, where), items in grouped.items():
            verbs = ", ".join(_sorted_verbs(m.check.verb for m in items))
            qualified = f"{resource}.{group}" if group else resource
            if name:
                qualified += f" {name}"
            lines.append(f"  - {verbs} {qualified} {where}: {items[0].check.permission.why}")
        lines.append(
            "Install or upgrade the Helm chart with rbac.create=true (it grants exactly these), "
            "or grant the rules that `cleo-operator permissions rules` prints; "
            "see docs/install.md, section Permissions."
        )
    if missing_roles:
        lines.append(
            f"the ClusterRole(s) {', '.join(missing_roles)} do not exist: cleo-operator binds "
            "tenants' spec.admins and spec.viewers to them, and a binding to a missing "
            f"ClusterRole grants nothing. To fix: {TENANT_ROLES_HINT}; see docs/install.md."
        )
    if tenant_role_lacks is None:
        lines.append(
            f"the ClusterRole {tenant_role} does not exist: cleo-operator binds it in each "
            "tenant namespace and holds its rights there only. To fix: "
            f"{OPERATOR_ROLE_HINT}; see docs/install.md."
        )
    elif tenant_role_lacks:
        shown = ", ".join(
            f"{g.verb} {g.resource}.{g.group}" if g.group else f"{g.verb} {g.resource}"
            for g in tenant_role_lacks
        )
        lines.append(
            f"the ClusterRole {tenant_role}, which cleo-operator binds in each tenant "
            f"namespace, lacks {len(tenant_role_lacks)} permission(s): {shown}. To fix: "
            f"{OPERATOR_ROLE_HINT}; see docs/install.md."
        )
    return "\n".join(lines)


def check_permissions(
    kube: KubeClient,
    *,
    operator_namespace: str,
    watch_namespaces: Sequence[str] = (),
    tenant_role: str = OPERATOR_TENANT_ROLE,
) -> None:
    """Raise MissingPermissions unless every permission needed up front is granted, the
    tenant ClusterRoles exist, and the operator's tenant ClusterRole `tenant_role` exists
    with every tenant permission; the message names each missing permission and role."""
    missing = missing_permissions(
        kube,
        operator_namespace=operator_namespace,
        watch_namespaces=watch_namespaces,
        tenant_role=tenant_role,
    )
    unreadable = {
        m.check.name
        for m in missing
        if m.check.permission.resource == "clusterroles" and m.check.verb == "get"
    }
    missing_roles: list[str] = []
    lacks: list[Grant] | None = []
    try:
        if not unreadable & set(TENANT_CLUSTER_ROLES):
            missing_roles = missing_tenant_roles(kube)
        if tenant_role not in unreadable:
            lacks = missing_operator_tenant_rules(kube, tenant_role)
    except KubeError as exc:
        # Allowed a moment ago: a passing refusal or outage must not stop the start;
        # the reconciles that follow will meet it if it lasts.
        log.warning("could not check that the ClusterRoles the operator binds exist: %s", exc)
    if missing or missing_roles or lacks is None or lacks:
        raise MissingPermissions(
            missing,
            identity=whoami(kube) if missing else None,
            missing_roles=missing_roles,
            tenant_role=tenant_role,
            tenant_role_lacks=lacks,
        )


# --------------------------------------------------------------------------- command line


def _cmd_rules(args: argparse.Namespace) -> int:
    if args.scope:
        sys.stdout.write(yaml.safe_dump({"rules": policy_rules(args.scope)}, sort_keys=False))
        return 0
    sys.stdout.write(
        "# ClusterRole rules bound cluster-wide (scopes cluster and watch, a cluster-wide "
        "install)\n"
    )
    sys.stdout.write(yaml.safe_dump({"rules": policy_rules(["cluster", "watch"])}, sort_keys=False))
    sys.stdout.write(
        f"---\n# ClusterRole {OPERATOR_TENANT_ROLE} (scope tenant), never bound cluster-wide: "
        "the operator binds it in each tenant namespace\n"
    )
    sys.stdout.write(yaml.safe_dump({"rules": policy_rules(["tenant"])}, sort_keys=False))
    sys.stdout.write("---\n# Role rules in the operator's namespace (scope operator)\n")
    sys.stdout.write(yaml.safe_dump({"rules": policy_rules(["operator"])}, sort_keys=False))
    sys.stdout.write(
        f"---\n# Role rules in {EVENTS_NAMESPACE}, for the Events of CleoTenants "
        "(scope cluster-events)\n"
    )
    sys.stdout.write(yaml.safe_dump({"rules": policy_rules(["cluster-events"])}, sort_keys=False))
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    kube = KubeClient.from_environment(context=args.context)
    try:
        check_permissions(
            kube,
            operator_namespace=args.operator_namespace,
            watch_namespaces=tuple(args.namespace or ()),
            tenant_role=args.tenant_role,
        )
    except MissingPermissions as exc:
        log.error("%s", exc)
        return 1
    log.info("every permission cleo-operator needs is granted")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `cleo-operator permissions rules|check` to the command line."""
    parser = subparsers.add_parser(
        "permissions", help="the RBAC rules the operator needs, and a check that it holds them"
    )
    sub = parser.add_subparsers(dest="permissions_command", required=True)
    rules = sub.add_parser("rules", help="print the RBAC rules (YAML) the operator needs")
    rules.add_argument(
        "--scope",
        action="append",
        choices=get_args(Scope),
        help="only these scopes (repeatable); default: all, as ClusterRole and Role rules",
    )
    rules.set_defaults(func=_cmd_rules)
    check = sub.add_parser(
        "check", help="ask the API server whether the current identity holds every permission"
    )
    check.add_argument("--operator-namespace", default="cleo-system")
    check.add_argument(
        "--namespace", action="append", help="a watched namespace (repeatable); default: all"
    )
    check.add_argument(
        "--tenant-role",
        default=os.environ.get(TENANT_ROLE_ENV) or OPERATOR_TENANT_ROLE,
        help="the operator's tenant ClusterRole, bound in each tenant namespace "
        f"(default: ${TENANT_ROLE_ENV}, else {OPERATOR_TENANT_ROLE})",
    )
    check.add_argument("--context", help="kubeconfig context (default: the current one)")
    check.set_defaults(func=_cmd_check)

"""Every Kubernetes permission the operator needs, in one list, each with its reason.

Why one list in code: three things must agree and drift silently when they are kept apart.
The Helm chart's ClusterRoles and Role grant exactly this list (a test renders the chart and
compares, so a new verb here fails until the chart grants it, and a verb the chart grants
but nobody needs fails too); the operator checks at start that it holds all of it, and
names precisely what is missing instead of failing later with a Forbidden deep inside a
reconcile; and a reviewer reads one place to see why the operator may do what it may.

Scopes, which decide how the chart grants a permission:

- ``cluster``: cluster-scoped resources (namespaces, CleoTenants, CRDs). Always through a
  ClusterRoleBinding.
- ``tenant``: namespaced resources where tenants live: the tenant namespaces (their
  children) and the namespaces of CleoBackups and CleoFailovers. Cluster-wide by default;
  a namespace-scoped install grants them with a RoleBinding in each watched namespace.
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
import logging
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple, NotRequired, TypedDict, get_args

import yaml

from cleo_operator.kube.client import KubeClient, KubeError

__all__ = [
    "PERMISSIONS",
    "TENANT_CLUSTER_ROLES",
    "TENANT_ROLES_HINT",
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
    "missing_permissions",
    "missing_tenant_roles",
    "policy_rules",
    "register",
]

log = logging.getLogger(__name__)

Verb = Literal[
    "get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "bind"
]
Scope = Literal["cluster", "tenant", "operator"]

VERB_ORDER: Final[tuple[Verb, ...]] = get_args(Verb)

RBAC_GROUP: Final = "rbac.authorization.k8s.io"
TENANT_CLUSTER_ROLES: Final[tuple[str, ...]] = ("cleo-tenant-admin", "cleo-tenant-viewer")
"""The ClusterRoles of tenant admins and viewers (render/rbac.py's TENANT_ROLES; the kube
layer cannot import render, so a test keeps the two equal)."""
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
        resource_names=TENANT_CLUSTER_ROLES,
        why=(
            "checked at start to exist: a RoleBinding to a missing ClusterRole is accepted "
            "and grants nothing, so tenant admins and viewers would silently get no rights"
        ),
    ),
    # -- namespaced, where tenants live --------------------------------------------------
    Permission(
        group="cleoai.io",
        resource="cleobackups",
        verbs=("get", "list", "watch", "patch"),
        scope="tenant",
        why="read and watch backups; Kopf's finalizer and annotations are patches",
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


class MissingPermissions(Exception):
    """The operator's identity lacks permissions it needs, or the tenant ClusterRoles it
    binds do not exist; the message lists each one and what to do."""

    def __init__(
        self,
        missing: Sequence[MissingPermission],
        *,
        identity: str | None,
        missing_roles: Sequence[str] = (),
    ) -> None:
        super().__init__(describe_missing(missing, identity=identity, missing_roles=missing_roles))
        self.missing = list(missing)
        self.identity = identity
        self.missing_roles = list(missing_roles)


def access_checks(
    *,
    operator_namespace: str,
    watch_namespaces: Sequence[str] = (),
    permissions: Iterable[Permission] = PERMISSIONS,
) -> list[AccessCheck]:
    """The questions that prove the operator holds every permission it needs.

    Cluster-wide (`watch_namespaces` empty), tenant permissions are asked for all
    namespaces at once; namespace-scoped, once per watched namespace. Operator permissions
    are asked in `operator_namespace`. A permission restricted to names is asked per name.
    """
    checks: list[AccessCheck] = []
    for p in permissions:
        namespaces: Sequence[str | None]
        if p.scope == "cluster":
            namespaces = [None]
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
    parallel: int = 8,
) -> list[MissingPermission]:
    """Ask the API server (SelfSubjectAccessReview) about every needed permission.

    Returns what is missing, in the order of PERMISSIONS; empty when everything is granted.
    Some fifty small reviews, asked `parallel` at a time: well under a second.
    """
    checks = access_checks(operator_namespace=operator_namespace, watch_namespaces=watch_namespaces)
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


def describe_missing(
    missing: Sequence[MissingPermission],
    *,
    identity: str | None,
    missing_roles: Sequence[str] = (),
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
    return "\n".join(lines)


def check_permissions(
    kube: KubeClient,
    *,
    operator_namespace: str,
    watch_namespaces: Sequence[str] = (),
) -> None:
    """Raise MissingPermissions unless every permission is granted and the tenant
    ClusterRoles exist; the message names each missing permission and role."""
    missing = missing_permissions(
        kube, operator_namespace=operator_namespace, watch_namespaces=watch_namespaces
    )
    cannot_look = any(
        m.check.permission.resource == "clusterroles" and m.check.verb == "get" for m in missing
    )
    missing_roles: list[str] = []
    if not cannot_look:
        try:
            missing_roles = missing_tenant_roles(kube)
        except KubeError as exc:
            # Allowed a moment ago: a passing refusal or outage must not stop the start;
            # the reconciles that follow will meet it if it lasts.
            log.warning("could not check that the tenant ClusterRoles exist: %s", exc)
    if missing or missing_roles:
        raise MissingPermissions(
            missing, identity=whoami(kube) if missing else None, missing_roles=missing_roles
        )


# --------------------------------------------------------------------------- command line


def _cmd_rules(args: argparse.Namespace) -> int:
    if args.scope:
        sys.stdout.write(yaml.safe_dump({"rules": policy_rules(args.scope)}, sort_keys=False))
        return 0
    sys.stdout.write("# ClusterRole rules (scopes cluster and tenant, a cluster-wide install)\n")
    sys.stdout.write(
        yaml.safe_dump({"rules": policy_rules(["cluster", "tenant"])}, sort_keys=False)
    )
    sys.stdout.write("---\n# Role rules in the operator's namespace (scope operator)\n")
    sys.stdout.write(yaml.safe_dump({"rules": policy_rules(["operator"])}, sort_keys=False))
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    kube = KubeClient.from_environment(context=args.context)
    try:
        check_permissions(
            kube,
            operator_namespace=args.operator_namespace,
            watch_namespaces=tuple(args.namespace or ()),
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
    check.add_argument("--context", help="kubeconfig context (default: the current one)")
    check.set_defaults(func=_cmd_check)

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

Granted onward: RBAC lets a subject write a Role only with permissions it holds itself (the
API server's escalation check), so the operator must hold every rule of the tenant Roles it
renders (`render/rbac.py`), although it never uses them itself. Those entries carry
``onward=True``; a unit test keeps them equal to what the tenant Roles grant. No entry uses a
wildcard: ``*`` would also grant whatever a later Kubernetes version or a CRD adds.

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
from typing import Final, Literal, TypedDict, get_args

import yaml

from cleo_operator.kube.client import KubeClient, KubeError

__all__ = [
    "PERMISSIONS",
    "AccessCheck",
    "MissingPermission",
    "MissingPermissions",
    "Permission",
    "PolicyRule",
    "Scope",
    "Verb",
    "access_checks",
    "check_permissions",
    "describe_missing",
    "granted_triples",
    "missing_permissions",
    "policy_rules",
    "register",
]

log = logging.getLogger(__name__)

Verb = Literal["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]
Scope = Literal["cluster", "tenant", "operator"]

VERB_ORDER: Final[tuple[Verb, ...]] = get_args(Verb)


class PolicyRule(TypedDict):
    """One RBAC rule, as a ClusterRole or Role holds it."""

    apiGroups: list[str]
    resources: list[str]
    verbs: list[Verb]


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
    onward: bool = False
    """Held only so that the operator may grant it to tenant admins in a Role it writes."""


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
_ONWARD_WHY: Final = (
    "granted to tenant admins or viewers by the Roles the operator writes in tenant "
    "namespaces (RBAC lets it grant only what it holds); the operator does not use it itself"
)


def _children(group: str, resources: Iterable[str]) -> list[Permission]:
    return [
        Permission(group=group, resource=r, verbs=_CHILD_VERBS, scope="tenant", why=_CHILD_WHY)
        for r in resources
    ]


def _onward(group: str, resources: Iterable[str], verbs: tuple[Verb, ...]) -> list[Permission]:
    return [
        Permission(
            group=group, resource=r, verbs=verbs, scope="tenant", why=_ONWARD_WHY, onward=True
        )
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
    *_children("rbac.authorization.k8s.io", ["rolebindings", "roles"]),
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
    # -- granted onward to tenant admins and viewers (render/rbac.py) ---------------------
    *_onward("", ["configmaps", "persistentvolumeclaims", "pods", "secrets", "services"], _MANAGE),
    *_onward("", ["events", "limitranges", "pods/log", "resourcequotas"], _READ),
    *_onward("", ["pods/exec"], ("create", "get")),
    *_onward("apps", ["deployments", "replicasets"], _MANAGE),
    *_onward("apps", ["deployments/scale"], ("get", "patch", "update")),
    *_onward("autoscaling", ["horizontalpodautoscalers"], _MANAGE),
    *_onward("batch", ["cronjobs", "jobs"], _MANAGE),
    *_onward("events.k8s.io", ["events"], _READ),
    *_onward("networking.k8s.io", ["networkpolicies"], _READ),
    *_onward("policy", ["poddisruptionbudgets"], _MANAGE),
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


def granted_triples(
    scopes: Iterable[Scope], permissions: Iterable[Permission] = PERMISSIONS
) -> set[tuple[str, str, Verb]]:
    """Every (group, resource, verb) the given scopes need; what the chart must grant there."""
    wanted = set(scopes)
    return {
        (p.group, p.resource, verb) for p in permissions if p.scope in wanted for verb in p.verbs
    }


def policy_rules(
    scopes: Iterable[Scope], permissions: Iterable[Permission] = PERMISSIONS
) -> list[PolicyRule]:
    """The RBAC rules that grant exactly `scopes`' permissions, in a stable, compact order.

    Resources of one group that need the same verbs share a rule; groups, resources and
    verbs are sorted (their order means nothing to RBAC), so the output is deterministic.
    """
    by_resource: dict[tuple[str, str], set[Verb]] = {}
    for group, resource, verb in granted_triples(scopes, permissions):
        by_resource.setdefault((group, resource), set()).add(verb)
    by_verbs: dict[tuple[str, tuple[Verb, ...]], list[str]] = {}
    for (group, resource), verbs in by_resource.items():
        by_verbs.setdefault((group, tuple(_sorted_verbs(verbs))), []).append(resource)
    return [
        {"apiGroups": [group], "resources": sorted(resources), "verbs": list(verbs)}
        for (group, verbs), resources in sorted(
            by_verbs.items(), key=lambda item: (item[0][0], sorted(item[1])[0])
        )
    ]


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
    """The operator's identity lacks permissions it needs; the message lists each one."""

    def __init__(self, missing: Sequence[MissingPermission], *, identity: str | None) -> None:
        super().__init__(describe_missing(missing, identity=identity))
        self.missing = list(missing)
        self.identity = identity


def access_checks(
    *,
    operator_namespace: str,
    watch_namespaces: Sequence[str] = (),
    include_onward: bool = True,
    permissions: Iterable[Permission] = PERMISSIONS,
) -> list[AccessCheck]:
    """The questions that prove the operator holds every permission it needs.

    Cluster-wide (`watch_namespaces` empty), tenant permissions are asked for all
    namespaces at once; namespace-scoped, once per watched namespace. Operator permissions
    are asked in `operator_namespace`.
    """
    checks: list[AccessCheck] = []
    for p in permissions:
        if p.onward and not include_onward:
            continue
        namespaces: Sequence[str | None]
        if p.scope == "cluster":
            namespaces = [None]
        elif p.scope == "operator":
            namespaces = [operator_namespace]
        else:
            namespaces = list(watch_namespaces) or [None]
        checks.extend(
            AccessCheck(permission=p, verb=verb, namespace=ns)
            for ns in namespaces
            for verb in p.verbs
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
    include_onward: bool = True,
    parallel: int = 8,
) -> list[MissingPermission]:
    """Ask the API server (SelfSubjectAccessReview) about every needed permission.

    Returns what is missing, in the order of PERMISSIONS; empty when everything is granted.
    A hundred or so small reviews, asked `parallel` at a time: well under a second.
    """
    checks = access_checks(
        operator_namespace=operator_namespace,
        watch_namespaces=watch_namespaces,
        include_onward=include_onward,
    )
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        results = list(pool.map(lambda c: _review(kube, c), checks))
    return [m for m in results if m is not None]


def describe_missing(missing: Sequence[MissingPermission], *, identity: str | None) -> str:
    """A message for people: who lacks what, where, why it is needed, and what to do."""
    who = identity or "the operator's identity"
    grouped: dict[tuple[str, str, str], list[MissingPermission]] = {}
    for m in missing:
        p = m.check.permission
        grouped.setdefault((p.group, p.resource, m.check.where()), []).append(m)
    lines = [f"{who} lacks {len(missing)} permission(s) cleo-operator needs:"]
    for (group, resource, where), items in grouped.items():
        verbs = ", ".join(_sorted_verbs(m.check.verb for m in items))
        qualified = f"{resource}.{group}" if group else resource
        lines.append(f"  - {verbs} {qualified} {where}: {items[0].check.permission.why}")
    lines.append(
        "Install or upgrade the Helm chart with rbac.create=true (it grants exactly these), "
        "or grant the rules that `cleo-operator permissions rules` prints; "
        "see docs/install.md, section Permissions."
    )
    return "\n".join(lines)


def check_permissions(
    kube: KubeClient,
    *,
    operator_namespace: str,
    watch_namespaces: Sequence[str] = (),
    include_onward: bool = True,
) -> None:
    """Raise MissingPermissions, naming each missing permission, unless all are granted."""
    missing = missing_permissions(
        kube,
        operator_namespace=operator_namespace,
        watch_namespaces=watch_namespaces,
        include_onward=include_onward,
    )
    if missing:
        raise MissingPermissions(missing, identity=whoami(kube))


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

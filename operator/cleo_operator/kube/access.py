"""Whether the operator holds what kube/permissions.py lists: asked at start, said for people.

Why at start: a permission the operator lacks otherwise shows up late, as a Forbidden deep
inside some reconcile, naming one verb of one object. Asked up front (`check_permissions`,
also `cleo-operator permissions check`), every missing permission is named at once, with
where it is needed, why, and what to do; the operator does not start without them.

What is asked, and how:

- the permissions of scopes ``cluster``, ``watch``, ``operator`` and ``cluster-events``:
  one SelfSubjectAccessReview per verb, namespace and name (`access_checks`), some fifty,
  asked in parallel;
- scope ``tenant``: not asked (the operator holds it only in tenant namespaces, through the
  binding it makes there); the ClusterRole it binds is read instead, and its rules compared
  with the table (`missing_operator_tenant_rules`, a wildcard counts);
- the tenant ClusterRoles it binds tenants' admins and viewers to must exist
  (`missing_tenant_roles`): a binding to a missing ClusterRole is accepted and grants nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from cleo_operator.core.errors import CleoError
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.permissions import (
    EVENTS_NAMESPACE,
    OPERATOR_ROLE_HINT,
    OPERATOR_TENANT_ROLE,
    PERMISSIONS,
    RBAC_GROUP,
    TENANT_CLUSTER_ROLES,
    TENANT_ROLES_HINT,
    Grant,
    Permission,
    Verb,
    grants,
    permissions_for,
    sorted_verbs,
)

__all__ = [
    "AccessCheck",
    "MissingPermission",
    "MissingPermissions",
    "access_checks",
    "check_permissions",
    "describe_missing",
    "missing_operator_tenant_rules",
    "missing_permissions",
    "missing_tenant_roles",
    "whoami",
]

log = logging.getLogger(__name__)


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
            verbs = ", ".join(sorted_verbs(m.check.verb for m in items))
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

"""kube/permissions.py against the code whose needs it lists.

The list is only useful while it is complete and no larger than needed. These tests tie it
to the code that creates the needs: every kind the kube client knows, every resource Kopf is
told to watch, and the tenant ClusterRoles the operator binds (it may bind exactly those,
and holds nothing of what they grant). The chart is compared with the list in
tests/integration/test_helm_template.py.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Iterable, Mapping
from contextlib import redirect_stdout
from typing import Any

import pytest
import yaml

from cleo_operator.cli.permissions import register_permissions as register
from cleo_operator.handlers.registry import BACKUP_CHILDREN, CHILD_RESOURCES
from cleo_operator.kube.access import MissingPermission, access_checks, describe_missing
from cleo_operator.kube.kinds import KINDS
from cleo_operator.kube.permissions import (
    BACKUP_REQUESTER_ROLE,
    LEADER_LEASE,
    OPERATOR_BINDING,
    OPERATOR_TENANT_ROLE,
    PERMISSIONS,
    TENANT_CLUSTER_ROLES,
    Grant,
    Scope,
    grants,
    permissions_for,
    policy_rules,
)
from cleo_operator.render.backup import BACKUP_LABEL
from cleo_operator.render.rbac import OPERATOR_BINDING as RENDERED_OPERATOR_BINDING
from cleo_operator.render.rbac import TENANT_ROLES, admin_rules, viewer_rules

ALL_SCOPES: tuple[Scope, ...] = ("cluster", "watch", "tenant", "operator", "cluster-events")
RBAC = "rbac.authorization.k8s.io"


def own_triples() -> set[tuple[str, str, str]]:
    """What the operator holds on every object of a resource (not only on some names)."""
    return {(g.group, g.resource, g.verb) for g in grants(ALL_SCOPES) if not g.name}


def expand(rules: Iterable[Mapping[str, Any]]) -> set[tuple[str, str, str, str]]:
    """Every (group, resource, verb, name) a list of RBAC rules grants; "" for any name."""
    return {
        (group, resource, verb, name)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        for name in rule.get("resourceNames") or [""]
    }


def test_every_kind_the_client_knows_has_permissions() -> None:
    # Some only by name (the tenant-protection policy and its binding, read to decide).
    held = {(g.group, g.resource) for g in grants(ALL_SCOPES)}
    missing = [
        f"{kind.kind} ({kind.api_version}, {kind.plural})"
        for kind in KINDS.values()
        if (kind.group, kind.plural) not in held
    ]
    assert not missing, f"kube/permissions.py lists nothing for: {missing}"


@pytest.mark.parametrize(("group", "version", "plural"), CHILD_RESOURCES)
def test_kopf_may_list_and_watch_every_child_it_watches(
    group: str, version: str, plural: str
) -> None:
    del version
    triples = own_triples()
    assert {(group, plural, "list"), (group, plural, "watch")} <= triples


@pytest.mark.parametrize("plural", ["cleotenants", "cleobackups", "cleofailovers"])
def test_our_resources_can_be_watched_patched_and_their_status_written(plural: str) -> None:
    triples = own_triples()
    for verb in ("get", "list", "watch", "patch"):
        assert ("cleoai.io", plural, verb) in triples
    assert ("cleoai.io", f"{plural}/status", "patch") in triples


@pytest.mark.parametrize(
    "plural", [plural for _, _, plural in CHILD_RESOURCES] + ["cronjobs", "jobs"]
)
def test_applied_children_can_be_created_by_apply_and_deleted(plural: str) -> None:
    # Server-side apply of a missing object is authorized as patch and as create.
    verbs = {verb for _, resource, verb in own_triples() if resource == plural}
    assert {"get", "patch", "create", "delete"} <= verbs, plural


def test_the_operator_may_bind_the_tenant_cluster_roles_and_no_other() -> None:
    assert TENANT_CLUSTER_ROLES == TENANT_ROLES  # kube cannot import render: kept equal here
    assert OPERATOR_BINDING == RENDERED_OPERATOR_BINDING
    everywhere = grants(ALL_SCOPES)
    binds = {g for g in everywhere if g.verb in ("bind", "escalate")}
    tenant_roles = (*TENANT_ROLES, BACKUP_REQUESTER_ROLE)
    assert binds == {
        Grant(RBAC, "clusterroles", "bind", name) for name in (*tenant_roles, OPERATOR_TENANT_ROLE)
    }
    # The tenant roles are bound in tenant namespaces, through the operator's own binding
    # there; its own tenant role before it holds anything there (the watch scope).
    assert {g for g in binds if g.name in tenant_roles} <= grants(["tenant"])
    assert {g for g in binds if g.name == OPERATOR_TENANT_ROLE} <= grants(["watch"])
    # It may look the ClusterRoles up (to say when they are missing), and nothing more on them.
    on_cluster_roles = {g for g in everywhere if g.resource == "clusterroles"}
    assert on_cluster_roles == binds | {
        Grant(RBAC, "clusterroles", "get", name) for name in (*tenant_roles, OPERATOR_TENANT_ROLE)
    }
    assert not {g for g in everywhere if g.resource == "clusterrolebindings"}


def test_nothing_it_holds_beyond_tenant_namespaces_writes_or_reads_secrets() -> None:
    """The blast radius: outside tenant namespaces and its own, the operator writes nothing
    namespaced but its own RoleBinding (by name) and Events in default, and reads no Secret."""
    outside = grants(["cluster", "watch", "cluster-events"])
    cluster_scoped = {"namespaces", "cleotenants", "cleotenants/status", "clusterroles"}
    namespaced_writes = {
        g
        for g in outside
        if g.verb not in ("get", "list", "watch") and g.resource not in cluster_scoped
    }
    assert namespaced_writes == {
        Grant(RBAC, "rolebindings", "create", OPERATOR_BINDING),
        Grant(RBAC, "rolebindings", "patch", OPERATOR_BINDING),
        Grant("", "events", "create"),  # in default only (a Role there)
    }
    assert not {g for g in outside if g.resource == "secrets"}
    # Reads of namespaced kinds cluster-wide are Kopf's list and watch (with a label
    # selector), or of one object by name.
    assert all(
        g.verb in ("list", "watch") or g.name
        for g in outside
        if g.resource not in cluster_scoped and g.verb == "get"
    )
    # On clusterroles: get and bind by name only.
    assert all(g.name for g in outside if g.resource == "clusterroles")


def test_kopf_watches_no_secrets() -> None:
    assert ("", "v1", "secrets") not in CHILD_RESOURCES
    assert not {g for g in grants(["cluster", "watch"]) if g.resource == "secrets"}


def test_the_watch_scope_covers_what_kopf_watches_and_nothing_else() -> None:
    watched = {(g, p) for g, _, p in CHILD_RESOURCES if p != "namespaces"}
    watched |= {(g, p) for g, _, p in BACKUP_CHILDREN}
    watched |= {("cleoai.io", "cleobackups"), ("cleoai.io", "cleofailovers")}
    listed = {(g.group, g.resource) for g in grants(["watch"]) if g.verb in ("list", "watch")}
    assert listed == watched
    assert BACKUP_LABEL  # jobs and cronjobs are watched by the backup's label


def test_permissions_for_names_the_operators_tenant_role() -> None:
    assert permissions_for() == PERMISSIONS
    renamed = permissions_for("it-cleo-operator-tenant")
    names = {n for p in renamed for n in p.resource_names}
    assert "it-cleo-operator-tenant" in names
    assert OPERATOR_TENANT_ROLE not in names
    assert len(renamed) == len(PERMISSIONS)


def test_the_operator_holds_none_of_what_only_tenant_roles_grant() -> None:
    """Binding made those grants unnecessary; the chart's ClusterRole must not carry them."""
    tenant_roles = {(g, r, v) for g, r, v, _ in expand([*admin_rules(), *viewer_rules()])}
    held = {(g.group, g.resource, g.verb) for g in grants(ALL_SCOPES)}
    for grant in [
        ("", "pods/exec", "create"),
        ("", "pods/exec", "get"),
        ("", "pods/log", "get"),
        ("apps", "replicasets", "list"),
        ("apps", "deployments/scale", "update"),
    ]:
        assert grant in tenant_roles, grant  # the example is one the tenant roles do grant
        assert grant not in held, grant
    # No deletecollection anywhere, and no update but the renew of its one leader Lease (by
    # name): the operator applies (patch) and deletes.
    assert not {g for g in held if g[2] == "deletecollection"}
    updates = {g for g in grants(ALL_SCOPES) if g.verb == "update"}
    assert updates == {Grant("coordination.k8s.io", "leases", "update", LEADER_LEASE)}


def test_no_wildcards_and_every_entry_says_why() -> None:
    for p in PERMISSIONS:
        assert "*" not in (p.group, p.resource, *p.verbs), p
        assert p.verbs, p
        assert len(set(p.verbs)) == len(p.verbs), p
        assert len(p.why) > 20, p


def test_policy_rules_grant_exactly_the_grants_once_each() -> None:
    scope_sets: list[list[Scope]] = [
        ["cluster"],
        ["watch"],
        ["tenant"],
        ["operator"],
        list(ALL_SCOPES),
    ]
    for scopes in scope_sets:
        rules = policy_rules(scopes)
        wanted = grants(scopes)
        # A grant on any object includes the same grant on one named object.
        covered = {g for g in wanted if g.name and g._replace(name="") in wanted}
        assert expand(rules) == wanted - covered
        # Resources are merged into one rule per resource: no resource appears twice.
        # (A resource may appear once more for a grant restricted to names.)
        pairs = [
            (r["apiGroups"][0], res, tuple(r.get("resourceNames", [])))
            for r in rules
            for res in r["resources"]
        ]
        assert len(pairs) == len(set(pairs))
        assert rules == policy_rules(list(reversed(scopes)))


def test_policy_rules_keep_resource_names_apart_from_grants_on_every_object() -> None:
    rules = policy_rules(["cluster", "tenant"])
    named = [r for r in rules if "resourceNames" in r]
    assert named == [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["validatingadmissionpolicies", "validatingadmissionpolicybindings"],
            "verbs": ["get"],
            "resourceNames": ["cleo-tenant-protection"],
        },
        {
            "apiGroups": [RBAC],
            "resources": ["clusterroles"],
            "verbs": ["get"],
            "resourceNames": sorted([*TENANT_ROLES, BACKUP_REQUESTER_ROLE, OPERATOR_TENANT_ROLE]),
        },
        {
            "apiGroups": [RBAC],
            "resources": ["clusterroles"],
            "verbs": ["bind"],
            "resourceNames": sorted([*TENANT_ROLES, BACKUP_REQUESTER_ROLE]),
        },
    ]
    assert [r for r in policy_rules(["watch"]) if "resourceNames" in r] == [
        {
            "apiGroups": [RBAC],
            "resources": ["clusterroles"],
            "verbs": ["bind"],
            "resourceNames": [OPERATOR_TENANT_ROLE],
        },
        {
            "apiGroups": [RBAC],
            "resources": ["rolebindings"],
            "verbs": ["get", "create", "patch"],
            "resourceNames": [OPERATOR_BINDING],
        },
    ]


def test_access_checks_follow_the_scope_of_each_permission() -> None:
    cluster_wide = access_checks(operator_namespace="cleo-system")
    # Tenant permissions are held per tenant namespace only: not asked (the ClusterRole the
    # operator binds is read instead, missing_operator_tenant_rules).
    assert {(c.permission.scope, c.namespace) for c in cluster_wide} == {
        ("cluster", None),
        ("watch", None),
        ("operator", "cleo-system"),
        ("cluster-events", "default"),
    }
    scoped = access_checks(operator_namespace="cleo-system", watch_namespaces=["a", "b"])
    watch_namespaces = {c.namespace for c in scoped if c.permission.scope == "watch"}
    assert watch_namespaces == {"a", "b"}
    watch_checks = [c for c in cluster_wide if c.permission.scope == "watch"]
    assert len([c for c in scoped if c.permission.scope == "watch"]) == 2 * len(watch_checks)
    # A permission restricted to names is asked about each name.
    binds = [c for c in scoped if c.verb == "bind"]
    assert sorted((c.namespace, c.name) for c in binds) == [
        ("a", OPERATOR_TENANT_ROLE),
        ("b", OPERATOR_TENANT_ROLE),
    ]
    assert all(
        c.name is None
        for c in cluster_wide
        if c.permission.resource != "clusterroles" and c.permission.resource_names == ()
    )


def test_missing_permissions_are_described_for_people() -> None:
    checks = access_checks(operator_namespace="cleo-system")
    namespaces = [c for c in checks if c.permission.resource == "namespaces"]
    events = [
        c for c in checks if c.permission.resource == "events" and c.namespace == "cleo-system"
    ]
    missing = [MissingPermission(check=c) for c in [*namespaces, *events]]
    message = describe_missing(missing, identity="system:serviceaccount:cleo-system:op")
    lines = message.splitlines()
    assert lines[0] == (
        f"system:serviceaccount:cleo-system:op lacks {len(missing)} permission(s) "
        "cleo-operator needs:"
    )
    assert lines[1].startswith(
        "  - get, list, watch, create, patch, delete namespaces cluster-wide: "
    )
    assert "each tenant's namespace" in lines[1]
    assert lines[2].startswith("  - create events in namespace cleo-system: ")
    assert "docs/install.md" in lines[-1]
    assert describe_missing(missing, identity=None).startswith("the operator's identity lacks")


def test_a_missing_bind_names_the_cluster_role() -> None:
    checks = access_checks(operator_namespace="cleo-system", watch_namespaces=["team-a"])
    bind = next(c for c in checks if c.verb == "bind" and c.name == OPERATOR_TENANT_ROLE)
    line = describe_missing([MissingPermission(check=bind)], identity="op").splitlines()[1]
    assert line.startswith(
        "  - bind clusterroles.rbac.authorization.k8s.io cleo-operator-tenant in namespace team-a: "
    )


def test_a_missing_or_short_operator_tenant_role_says_what_to_do() -> None:
    gone = describe_missing([], identity=None, tenant_role="x-tenant", tenant_role_lacks=None)
    assert gone.startswith("the ClusterRole x-tenant does not exist")
    assert "deploy/rbac/operator-tenant-role.yaml" in gone
    assert "CLEO_OPERATOR_TENANT_ROLE" in gone
    short = describe_missing(
        [],
        identity=None,
        tenant_role_lacks=[Grant("", "secrets", "create"), Grant("batch", "jobs", "delete")],
    )
    assert "cleo-operator-tenant, which cleo-operator binds in each tenant namespace" in short
    assert "lacks 2 permission(s): create secrets, delete jobs.batch" in short
    assert describe_missing([], identity=None) == ""


def test_missing_tenant_cluster_roles_say_how_to_install_them() -> None:
    message = describe_missing([], identity=None, missing_roles=list(TENANT_ROLES))
    assert "lacks" not in message  # no permission is missing, only the roles
    assert "cleo-tenant-admin, cleo-tenant-viewer do not exist" in message
    assert "install the chart or apply deploy/rbac/tenant-roles.yaml" in message
    both = describe_missing(
        [MissingPermission(check=access_checks(operator_namespace="x")[0])],
        identity="op",
        missing_roles=["cleo-tenant-viewer"],
    )
    assert both.startswith("op lacks 1 permission(s)")
    assert both.splitlines()[-1].startswith("the ClusterRole(s) cleo-tenant-viewer do not exist")


def test_rules_command_prints_the_cluster_role_and_role_rules() -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    out = io.StringIO()
    args = parser.parse_args(["permissions", "rules"])
    with redirect_stdout(out):
        assert args.func(args) == 0
    cluster_doc, tenant_doc, operator_doc, events_doc = yaml.safe_load_all(out.getvalue())
    assert events_doc["rules"] == policy_rules(["cluster-events"])
    assert cluster_doc["rules"] == policy_rules(["cluster", "watch"])
    assert tenant_doc["rules"] == policy_rules(["tenant"])
    assert operator_doc["rules"] == policy_rules(["operator"])
    scoped = parser.parse_args(["permissions", "rules", "--scope", "operator"])
    out = io.StringIO()
    with redirect_stdout(out):
        scoped.func(scoped)
    assert yaml.safe_load(out.getvalue())["rules"] == policy_rules(["operator"])


def test_the_start_check_asks_for_the_leader_lease_in_the_operators_namespace() -> None:
    """`check_access` (cleo-operator run) names a missing Lease right before the election
    would meet a Forbidden."""
    checks = access_checks(operator_namespace="cleo-system", watch_namespaces=["a"])
    leases = {(c.verb, c.namespace, c.name) for c in checks if c.permission.resource == "leases"}
    assert leases == {
        ("get", "cleo-system", LEADER_LEASE),
        ("update", "cleo-system", LEADER_LEASE),
        ("create", "cleo-system", None),
    }

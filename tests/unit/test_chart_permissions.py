"""kube/permissions.py against the code whose needs it lists.

The list is only useful while it is complete and no larger than needed. These tests tie it
to the code that creates the needs: every kind the kube client knows, every resource Kopf is
told to watch, and every rule of the tenant Roles the operator writes (which RBAC lets it
grant only if it holds them itself). The chart is compared with the list in
tests/integration/test_helm_template.py.
"""

from __future__ import annotations

import argparse
import io
from contextlib import redirect_stdout

import pytest
import yaml

from cleo_operator.handlers.registry import CHILD_RESOURCES
from cleo_operator.kube.client import KINDS
from cleo_operator.kube.permissions import (
    PERMISSIONS,
    MissingPermission,
    access_checks,
    describe_missing,
    granted_triples,
    policy_rules,
    register,
)
from cleo_operator.render.rbac import admin_rules, viewer_rules

ALL_SCOPES = ("cluster", "tenant", "operator")


def own_triples() -> set[tuple[str, str, str]]:
    """What the operator holds for its own use (not granted onward)."""
    return granted_triples(ALL_SCOPES, [p for p in PERMISSIONS if not p.onward])


def test_every_kind_the_client_knows_has_permissions() -> None:
    held = {(group, resource) for group, resource, _ in own_triples()}
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


def test_onward_grants_are_exactly_what_the_tenant_roles_grant() -> None:
    tenant_roles = {
        (group, resource, verb)
        for rule in [*admin_rules(), *viewer_rules()]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    onward = granted_triples(["tenant"], [p for p in PERMISSIONS if p.onward])
    assert onward == tenant_roles, (
        f"missing {sorted(tenant_roles - onward)}, extra {sorted(onward - tenant_roles)}"
    )


def test_no_wildcards_and_every_entry_says_why() -> None:
    for p in PERMISSIONS:
        assert "*" not in (p.group, p.resource, *p.verbs), p
        assert p.verbs, p
        assert len(set(p.verbs)) == len(p.verbs), p
        assert len(p.why) > 20, p


def test_policy_rules_grant_exactly_the_triples_once_each() -> None:
    for scopes in (["cluster"], ["tenant"], ["operator"], list(ALL_SCOPES)):
        rules = policy_rules(scopes)
        expanded = [
            (group, resource, verb)
            for rule in rules
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
        ]
        assert set(expanded) == granted_triples(scopes)
        # Resources are merged into one rule per resource: no resource appears twice.
        pairs = [(r["apiGroups"][0], res) for r in rules for res in r["resources"]]
        assert len(pairs) == len(set(pairs))
        assert rules == policy_rules(list(reversed(scopes)))


def test_access_checks_follow_the_scope_of_each_permission() -> None:
    cluster_wide = access_checks(operator_namespace="cleo-system")
    assert {(c.permission.scope, c.namespace) for c in cluster_wide} == {
        ("cluster", None),
        ("tenant", None),
        ("operator", "cleo-system"),
    }
    scoped = access_checks(operator_namespace="cleo-system", watch_namespaces=["a", "b"])
    tenant_namespaces = {c.namespace for c in scoped if c.permission.scope == "tenant"}
    assert tenant_namespaces == {"a", "b"}
    tenant_checks = [c for c in cluster_wide if c.permission.scope == "tenant"]
    assert len([c for c in scoped if c.permission.scope == "tenant"]) == 2 * len(tenant_checks)
    without_onward = access_checks(operator_namespace="x", include_onward=False)
    assert not any(c.permission.onward for c in without_onward)


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


def test_rules_command_prints_the_cluster_role_and_role_rules() -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    out = io.StringIO()
    args = parser.parse_args(["permissions", "rules"])
    with redirect_stdout(out):
        assert args.func(args) == 0
    cluster_doc, operator_doc = yaml.safe_load_all(out.getvalue())
    assert cluster_doc["rules"] == policy_rules(["cluster", "tenant"])
    assert operator_doc["rules"] == policy_rules(["operator"])
    scoped = parser.parse_args(["permissions", "rules", "--scope", "operator"])
    out = io.StringIO()
    with redirect_stdout(out):
        scoped.func(scoped)
    assert yaml.safe_load(out.getvalue())["rules"] == policy_rules(["operator"])

"""RBAC, judged by what each subject may do (a small evaluator of RBAC rules): the tenant
ClusterRoles, and the RoleBindings that grant them in one tenant namespace only."""

from __future__ import annotations

from typing import Any

import pytest

from cleo_operator.api.objects import KubeObject
from cleo_operator.api.tenant import CleoTenantSpec, parse_tenant_spec
from cleo_operator.render.meta import tenant_owner
from cleo_operator.render.rbac import (
    BACKUP_REQUESTER_ROLE,
    TENANT_ROLES,
    render_role_bindings,
    render_service_account,
    render_tenant_cluster_roles,
)
from cleo_operator.render.tenant import render_tenant
from tests.unit.render.specs import TENANT, UID, spec_of

NS = "acme-prod"
OWNER = tenant_owner(name=TENANT, uid=UID)
ALL_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")


def roles() -> dict[str, KubeObject]:
    return {r["metadata"]["name"]: r for r in render_tenant_cluster_roles()}


def bindings(spec: CleoTenantSpec) -> dict[str, KubeObject]:
    rendered = render_role_bindings(tenant=TENANT, namespace=NS, owner=OWNER, spec=spec)
    return {b["metadata"]["name"]: b for b in rendered}


def allows(role: KubeObject, group: str, resource: str, verb: str) -> bool:
    """RBAC's rule matching (wildcards included, so a wildcard would show up as a grant)."""
    return any(
        (group in rule["apiGroups"] or "*" in rule["apiGroups"])
        and (resource in rule["resources"] or "*" in rule["resources"])
        and (verb in rule["verbs"] or "*" in rule["verbs"])
        for rule in role["rules"]
    )


ADMIN = roles()["cleo-tenant-admin"]
VIEWER = roles()["cleo-tenant-viewer"]

FENCE = [
    ("", "resourcequotas"),
    ("", "limitranges"),
    ("networking.k8s.io", "networkpolicies"),
]
RBAC_KINDS = [
    ("rbac.authorization.k8s.io", kind)
    for kind in ("roles", "rolebindings", "clusterroles", "clusterrolebindings")
]
WORKLOAD_KINDS = [
    ("", "pods"),
    ("", "services"),
    ("", "configmaps"),
    ("", "secrets"),
    ("apps", "deployments"),
    ("apps", "replicasets"),
    ("batch", "jobs"),
    ("batch", "cronjobs"),
    ("autoscaling", "horizontalpodautoscalers"),
    ("policy", "poddisruptionbudgets"),
]


@pytest.mark.parametrize(("group", "resource"), FENCE)
def test_admins_can_see_but_not_lift_their_quota_limits_or_isolation(
    group: str, resource: str
) -> None:
    assert all(allows(ADMIN, group, resource, verb) for verb in ("get", "list", "watch"))
    assert not any(allows(ADMIN, group, resource, verb) for verb in WRITE_VERBS)


@pytest.mark.parametrize(("group", "resource"), [*RBAC_KINDS, ("", "namespaces")])
def test_admins_have_no_rights_on_rbac_or_namespaces(group: str, resource: str) -> None:
    assert not any(
        allows(ADMIN, group, resource, verb) for verb in (*ALL_VERBS, "bind", "escalate")
    )


@pytest.mark.parametrize(("group", "resource"), WORKLOAD_KINDS)
def test_admins_manage_the_workload_kinds(group: str, resource: str) -> None:
    assert all(allows(ADMIN, group, resource, verb) for verb in ALL_VERBS)


def test_admins_can_debug_pods() -> None:
    assert allows(ADMIN, "", "pods/log", "get")
    assert allows(ADMIN, "", "pods/exec", "create")
    assert allows(ADMIN, "", "events", "list")
    assert not allows(ADMIN, "", "events", "delete")


@pytest.mark.parametrize(("group", "resource"), [*WORKLOAD_KINDS, *FENCE])
def test_viewers_only_read_and_never_secrets(group: str, resource: str) -> None:
    assert not any(allows(VIEWER, group, resource, verb) for verb in WRITE_VERBS)
    readable = resource != "secrets"
    assert all(allows(VIEWER, group, resource, v) == readable for v in ("get", "list", "watch"))
    assert not allows(VIEWER, "", "pods/exec", "create")


@pytest.mark.parametrize("role", [ADMIN, VIEWER], ids=["admin", "viewer"])
def test_no_wildcards_and_a_stable_order(role: KubeObject) -> None:
    for rule in role["rules"]:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key]
            assert rule[key] == sorted(rule[key])
        assert "resourceNames" not in rule


@pytest.mark.parametrize("role", [ADMIN, VIEWER], ids=["admin", "viewer"])
def test_the_tenant_roles_are_cluster_roles_no_tenant_owns(role: KubeObject) -> None:
    # One per cluster, installed by a cluster admin: not a child of any tenant, so neither
    # a namespace, an owner, nor the labels the operator selects its children by.
    assert role["kind"] == "ClusterRole"
    meta = role["metadata"]
    assert set(meta) == {"name", "labels"}
    assert meta["labels"] == {
        "app.kubernetes.io/part-of": "cleo-operator",
        "app.kubernetes.io/component": "tenant-access",
    }
    assert [r["metadata"]["name"] for r in render_tenant_cluster_roles()] == [
        TENANT_ROLES[0],
        BACKUP_REQUESTER_ROLE,
        TENANT_ROLES[1],
    ]


def test_no_namespaced_roles_are_rendered_for_a_tenant() -> None:
    spec = parse_tenant_spec(
        {
            "admins": [{"kind": "User", "name": "alice"}],
            "viewers": [{"kind": "User", "name": "victor"}],
            "workload": {"image": "registry.example.com/cleoai:1"},
        }
    )
    kinds = [o["kind"] for o in render_tenant(name=TENANT, uid="u", spec=spec, config_checksum="c")]
    assert "Role" not in kinds
    assert kinds.count("RoleBinding") == 2


def test_bindings_bind_the_spec_subjects_to_the_cluster_roles_in_the_namespace() -> None:
    rendered = bindings(spec_of())
    admins, viewers = rendered["cleo-tenant-admin"], rendered["cleo-tenant-viewer"]
    rbac = "rbac.authorization.k8s.io"
    assert admins["kind"] == "RoleBinding"  # never a ClusterRoleBinding: this namespace only
    assert admins["metadata"]["namespace"] == NS
    assert admins["metadata"]["labels"]["app.kubernetes.io/component"] == "access"
    assert admins["metadata"]["ownerReferences"] == [OWNER]
    assert admins["roleRef"] == {
        "apiGroup": rbac,
        "kind": "ClusterRole",
        "name": "cleo-tenant-admin",
    }
    assert admins["subjects"] == [
        {"kind": "Group", "name": "ops", "apiGroup": rbac},
        {"kind": "User", "name": "alice@example.com", "apiGroup": rbac},
    ]
    assert viewers["roleRef"] == {
        "apiGroup": rbac,
        "kind": "ClusterRole",
        "name": "cleo-tenant-viewer",
    }
    assert viewers["subjects"] == [{"kind": "Group", "name": "support", "apiGroup": rbac}]


def test_bindings_are_not_named_like_the_ones_that_bound_roles() -> None:
    # A RoleBinding's roleRef cannot change: the old bindings (to namespaced Roles) could
    # not be repointed, so the new ones need other names and the old ones are pruned.
    names = set(bindings(spec_of()))
    assert names.isdisjoint({"cleo-tenant-admins", "cleo-tenant-viewers"})


def test_no_binding_for_an_empty_list() -> None:
    assert list(bindings(spec_of(viewers=[]))) == ["cleo-tenant-admin"]
    assert list(bindings(spec_of(admins=[]))) == ["cleo-tenant-viewer"]
    assert bindings(spec_of({})) == {}


def test_subject_order_in_the_spec_does_not_matter() -> None:
    admins: list[dict[str, Any]] = [
        {"kind": "User", "name": "zed"},
        {"kind": "User", "name": "amy"},
        {"kind": "Group", "name": "ops"},
    ]
    assert bindings(spec_of(admins=admins)) == bindings(spec_of(admins=admins[::-1]))


def test_the_service_account_carries_no_token_and_exists_only_with_a_workload() -> None:
    account = render_service_account(tenant=TENANT, namespace=NS, owner=OWNER, spec=spec_of())
    assert account is not None
    assert account["metadata"]["name"] == "cleoai"
    assert account["automountServiceAccountToken"] is False
    assert (
        render_service_account(tenant=TENANT, namespace=NS, owner=OWNER, spec=spec_of({})) is None
    )


@pytest.mark.security
def test_tenant_admins_may_ask_for_backups_only_through_the_requester_binding() -> None:
    # The admission policy narrows create and delete of CleoBackups to one-offs; where it
    # may be missing, the grant must be missing too: it is a ClusterRole of its own.
    assert not allows(ADMIN, "cleoai.io", "cleobackups", "create")
    assert not allows(ADMIN, "cleoai.io", "cleobackups", "delete")
    requester = roles()[BACKUP_REQUESTER_ROLE]
    assert allows(requester, "cleoai.io", "cleobackups", "create")
    assert not allows(requester, "cleoai.io", "cleobackups", "update")
    spec = parse_tenant_spec({"admins": [{"kind": "User", "name": "alice"}]})
    assert set(bindings(spec)) == {"cleo-tenant-admin"}
    rendered = render_role_bindings(
        tenant=TENANT, namespace=NS, owner=OWNER, spec=spec, backup_requests=True
    )
    by_name = {b["metadata"]["name"]: b for b in rendered}
    assert by_name[BACKUP_REQUESTER_ROLE]["roleRef"]["name"] == BACKUP_REQUESTER_ROLE
    assert by_name[BACKUP_REQUESTER_ROLE]["subjects"] == by_name["cleo-tenant-admin"]["subjects"]
    # No admins, no binding, policy or not.
    no_admins = parse_tenant_spec({})
    assert (
        render_role_bindings(
            tenant=TENANT, namespace=NS, owner=OWNER, spec=no_admins, backup_requests=True
        )
        == []
    )

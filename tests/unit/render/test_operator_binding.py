"""The operator's own RoleBinding in a tenant namespace (render/rbac.py): whom it binds,
to what, and that it comes right after the namespace, before anything that needs it."""

from __future__ import annotations

import pytest

from cleo_operator.kube.permissions import OPERATOR_BINDING as PERMITTED_BINDING
from cleo_operator.kube.permissions import OPERATOR_TENANT_ROLE
from cleo_operator.render.meta import MANAGED_BY, MANAGED_BY_LABEL, TENANT_LABEL
from cleo_operator.render.rbac import OPERATOR_BINDING, OperatorAccess, render_operator_binding
from cleo_operator.render.tenant import render_tenant
from tests.unit.render.specs import TENANT, UID, spec_of

NS = "acme-prod"


@pytest.mark.parametrize(
    ("username", "subject"),
    [
        (
            "system:serviceaccount:cleo-system:cleo-operator",
            {"kind": "ServiceAccount", "name": "cleo-operator", "namespace": "cleo-system"},
        ),
        (
            "cleo-test-operator",
            {"kind": "User", "name": "cleo-test-operator", "apiGroup": "rbac.authorization.k8s.io"},
        ),
        # Not a ServiceAccount's user name: bound as the user it is, never guessed at.
        (
            "system:serviceaccount:only-namespace",
            {
                "kind": "User",
                "name": "system:serviceaccount:only-namespace",
                "apiGroup": "rbac.authorization.k8s.io",
            },
        ),
        (
            "system:serviceaccount:a:b:c",
            {
                "kind": "User",
                "name": "system:serviceaccount:a:b:c",
                "apiGroup": "rbac.authorization.k8s.io",
            },
        ),
    ],
)
def test_the_subject_is_the_identity_the_api_server_knows(
    username: str, subject: dict[str, str]
) -> None:
    assert OperatorAccess(role="r", username=username).subject() == subject


def test_the_binding_grants_the_operators_tenant_role_in_that_namespace_only() -> None:
    access = OperatorAccess(
        role=OPERATOR_TENANT_ROLE, username="system:serviceaccount:cleo-system:cleo-operator"
    )
    binding = render_operator_binding(tenant=TENANT, namespace=NS, access=access)
    assert binding["kind"] == "RoleBinding"
    assert binding["metadata"]["name"] == OPERATOR_BINDING == PERMITTED_BINDING
    assert binding["metadata"]["namespace"] == NS
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": OPERATOR_TENANT_ROLE,
    }
    # Watched as ours (its deletion wakes the tenant), and no owner: it outlives a
    # foreground deletion of the tenant until the namespace goes.
    labels = binding["metadata"]["labels"]
    assert labels[MANAGED_BY_LABEL] == MANAGED_BY
    assert labels[TENANT_LABEL] == TENANT
    assert "ownerReferences" not in binding["metadata"]


def test_render_tenant_puts_the_binding_right_after_the_namespace() -> None:
    access = OperatorAccess(role="x-tenant", username="op")
    objects = render_tenant(
        name=TENANT, uid=UID, spec=spec_of(), config_checksum="c", operator_access=access
    )
    assert [o["kind"] for o in objects[:2]] == ["Namespace", "RoleBinding"]
    assert objects[1]["metadata"]["name"] == OPERATOR_BINDING
    assert objects[1]["metadata"]["namespace"] == objects[0]["metadata"]["name"]
    without = render_tenant(name=TENANT, uid=UID, spec=spec_of(), config_checksum="c")
    assert [o for o in objects if o is not objects[1]] == without

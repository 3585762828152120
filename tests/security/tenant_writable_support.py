"""A tenant admin as the API server sees one, for the tests of tenant-writable objects.

A tenant admin is a user of a CleoTenant's `spec.admins`, bound to the ClusterRole
`cleo-tenant-admin` by the RoleBinding `render_role_bindings` renders in the tenant's
namespace. The tests' attacker is a real credential: a ServiceAccount token from the
TokenRequest API, whose user name (`system:serviceaccount:<ns>:<name>`) is named in
`spec.admins` as a `User`, exactly as a person's name would be. The ServiceAccount lives in a
namespace of its own with no rights there; everything it may do comes from that RoleBinding.
The API server authenticates it, authorizes it with the real RBAC rules and admits it
through the real admission policies; nothing is mocked.
"""

from __future__ import annotations

import uuid
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from cleo_operator.api.tenant import CleoTenantSpec, Subject
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import NAMESPACE, SERVICE_ACCOUNT
from cleo_operator.render.rbac import render_role_bindings
from e2e.cluster import LocalCluster

TENANT_NAMESPACE_LABEL = "cleoai.io/tenant"


def new_name(prefix: str) -> str:
    """A name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


ATTACKER_NAMESPACE = "cleo-test-attackers"
ATTACKER_ACCOUNT = "mallory"
ATTACKER = f"system:serviceaccount:{ATTACKER_NAMESPACE}:{ATTACKER_ACCOUNT}"
"""The attacker's user name, as `spec.admins` names it (kind User)."""


def client_for_token(cluster: LocalCluster, user: str, token: str) -> KubeClient:
    """A client that authenticates with `token` (no other credential)."""
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(cluster.kubeconfig_for(user, token)), client_configuration=configuration
    )
    return KubeClient(k8s.ApiClient(configuration))


def attacker_client(cluster: LocalCluster, kube: KubeClient) -> KubeClient:
    """The attacker's own credential: a fresh token of its ServiceAccount (made if absent)."""
    if kube.get(NAMESPACE, ATTACKER_NAMESPACE) is None:
        kube.create(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ATTACKER_NAMESPACE}}
        )
    if kube.get(SERVICE_ACCOUNT, ATTACKER_ACCOUNT, namespace=ATTACKER_NAMESPACE) is None:
        kube.create(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": ATTACKER_ACCOUNT, "namespace": ATTACKER_NAMESPACE},
            }
        )
    issued = kube.request(
        "POST",
        SERVICE_ACCOUNT.path(namespace=ATTACKER_NAMESPACE, name=ATTACKER_ACCOUNT) + "/token",
        body={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
    )
    client = client_for_token(cluster, "mallory", issued["status"]["token"])
    review = client.request(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    assert review["status"]["userInfo"]["username"] == ATTACKER, review
    return client


def bind_tenant_admin(kube: KubeClient, *, tenant: str, namespace: str, user: str) -> None:
    """The RoleBinding the operator renders for `spec.admins: [{kind: User, name: user}]`.

    Without the owner reference: the tests have no CleoTenant object to own it, and an owner
    that does not exist would make the garbage collector delete the binding.
    """
    spec = CleoTenantSpec.model_validate({"admins": [{"kind": "User", "name": user}]})
    assert spec.admins == [Subject(kind="User", name=user)]
    (binding,) = render_role_bindings(
        tenant=tenant,
        namespace=namespace,
        owner={
            "apiVersion": "cleoai.io/v1alpha1",
            "kind": "CleoTenant",
            "name": tenant,
            "uid": "00000000-0000-0000-0000-000000000000",
            "controller": True,
            "blockOwnerDeletion": True,
        },
        spec=spec,
    )
    binding["metadata"].pop("ownerReferences", None)
    kube.apply(binding)


def create_tenant_namespace(kube: KubeClient, name: str, tenant: str) -> None:
    """A namespace labelled as the operator labels a tenant's."""
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {TENANT_NAMESPACE_LABEL: tenant}},
        }
    )


def refused(call: Any, *args: Any, **kwargs: Any) -> KubeError:
    """Run a write that must be refused; return the API server's error."""
    try:
        call(*args, **kwargs)
    except KubeError as exc:
        return exc
    raise AssertionError(f"{getattr(call, '__name__', call)} was not refused")

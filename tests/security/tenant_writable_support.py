"""A tenant admin as the API server sees one, for the tests of tenant-writable objects.

A tenant admin is a user of a CleoTenant's `spec.admins`, bound to the ClusterRole
`cleo-tenant-admin` by the RoleBinding `render_role_bindings` renders in the tenant's
namespace. The tests act as that user through impersonation (`Impersonate-User`, what
`kubectl --as` sends): the API server then authorizes and admits every request as that user,
with the real RBAC rules and the real admission policies; nothing is mocked.
"""

from __future__ import annotations

import uuid
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from cleo_operator.api.tenant import CleoTenantSpec, Subject
from cleo_operator.kube.client import KINDS, KubeClient, KubeError
from cleo_operator.render.rbac import render_role_bindings
from e2e.cluster import LocalCluster

NAMESPACE = KINDS[("v1", "Namespace")]
TENANT_NAMESPACE_LABEL = "cleoai.io/tenant"


def new_name(prefix: str) -> str:
    """A name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def client_as(cluster: LocalCluster, user: str, groups: tuple[str, ...] = ()) -> KubeClient:
    """A client whose requests the API server handles as `user` (impersonated by the admin)."""
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(cluster.kubeconfig), client_configuration=configuration
    )
    api = k8s.ApiClient(configuration)
    api.set_default_header("Impersonate-User", user)
    for group in groups:
        # The client sends one value per header name; one group is all the tests need.
        api.set_default_header("Impersonate-Group", group)
    return KubeClient(api)


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

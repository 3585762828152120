"""Desired objects of a CleoTenant: pure functions from the spec to Kubernetes objects.

`render_tenant` is the one entry point the reconciler needs: every child the spec asks
for, in the order they are applied. The order matters on a first reconcile: the namespace
must exist before anything in it, the fence (quota, limits, network policies) should be
up before the first pod can start, and a Deployment names a ServiceAccount (and
ConfigMap) that must already be there for its pods to be created. Objects the spec does
not ask for are absent from the list (not empty objects), so the caller can prune
children that are no longer desired.

The concerns live in their own modules (`limits`, `network`, `rbac`, `workload`,
`scaling`); each renderer there can also be called alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from cleo_operator.api.objects import KubeObject, OwnerReference
from cleo_operator.api.tenant import CleoTenantSpec
from cleo_operator.render.limits import render_limit_range, render_resource_quota
from cleo_operator.render.meta import (
    TENANT_UID_LABEL,
    default_namespace,
    tenant_labels,
    tenant_owner,
)
from cleo_operator.render.migrations import render_migration_policy
from cleo_operator.render.network import render_network_policies
from cleo_operator.render.rbac import (
    OperatorAccess,
    render_operator_binding,
    render_role_bindings,
    render_service_account,
)
from cleo_operator.render.scaling import render_hpa, render_pdb
from cleo_operator.render.workload import (
    WorkloadTracing,
    render_config_map,
    render_deployment,
    render_service,
)

POD_SECURITY_LEVEL = "restricted"


def render_namespace(*, tenant: str, namespace: str, owner: OwnerReference) -> KubeObject:
    """The tenant's namespace, enforcing Pod Security `restricted` and owned by the tenant.

    It carries the tenant's uid (`cleoai.io/tenant-uid`) besides its name: the uid is what
    proves ownership, because a deleted tenant's name can be taken by someone else.
    """
    labels = tenant_labels(tenant)
    labels[TENANT_UID_LABEL] = owner["uid"]
    for mode in ("enforce", "audit", "warn"):
        labels[f"pod-security.kubernetes.io/{mode}"] = POD_SECURITY_LEVEL
        labels[f"pod-security.kubernetes.io/{mode}-version"] = "latest"
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace, "labels": labels, "ownerReferences": [owner]},
    }


def tenant_namespace(*, name: str, spec: CleoTenantSpec) -> str:
    """The tenant's namespace: spec.namespace, or cleo-<name> when unset."""
    return spec.namespace or default_namespace(name)


def render_tenant(
    *,
    name: str,
    uid: str,
    spec: CleoTenantSpec,
    config_checksum: str,
    secret_names: Sequence[str] = (),
    database_secret: str | None = None,
    keyring_secret: str | None = None,
    pooler_secret: str | None = None,
    operator_access: OperatorAccess | None = None,
    backup_requests: bool = False,
    workload_image: str | None = None,
    hold_workload: bool = False,
    workload_tracing: WorkloadTracing | None = None,
) -> list[KubeObject]:
    """Every child of tenant `name` (uid `uid`) that `spec` asks for, in apply order.

    Namespace, the operator's own RoleBinding there (with `operator_access`: the operator
    holds its rights in the namespace through it, so it comes before anything else),
    ResourceQuota, LimitRange, NetworkPolicies, ServiceAccount, RoleBindings (to
    the tenant ClusterRoles), ConfigMap, Deployment, Service, HPA, PDB. `config_checksum`,
    `secret_names`, `database_secret` and `keyring_secret` go to the Deployment (see
    `render_deployment`). `workload_image` replaces spec.workload.image in the Deployment
    (the image last migrated, while a migration of the spec's image has not succeeded);
    `hold_workload` leaves the Deployment and its HPA out (no image was ever migrated).
    `pooler_secret` goes to the Deployment too, and also takes the workload's pods out of
    the direct route to the database (see `render_network_policies`). `workload_tracing`
    (the operator's setting; None: off) gives the Deployment's pods the OTEL_* variables and
    a NetworkPolicy to the collector.
    """
    owner = tenant_owner(name=name, uid=uid)
    namespace = tenant_namespace(name=name, spec=spec)
    ordered: list[KubeObject | None] = [
        render_namespace(tenant=name, namespace=namespace, owner=owner),
        render_operator_binding(tenant=name, namespace=namespace, access=operator_access)
        if operator_access
        else None,
        render_resource_quota(tenant=name, namespace=namespace, owner=owner, spec=spec),
        render_limit_range(tenant=name, namespace=namespace, owner=owner, spec=spec),
        *render_network_policies(
            tenant=name,
            namespace=namespace,
            owner=owner,
            spec=spec,
            pooled=pooler_secret is not None,
            collector=workload_tracing.collector if workload_tracing is not None else None,
        ),
        render_migration_policy(tenant=name, namespace=namespace, owner=owner, spec=spec),
        render_service_account(tenant=name, namespace=namespace, owner=owner, spec=spec),
        *render_role_bindings(
            tenant=name,
            namespace=namespace,
            owner=owner,
            spec=spec,
            backup_requests=backup_requests,
        ),
        render_config_map(tenant=name, namespace=namespace, owner=owner, spec=spec),
        None
        if hold_workload
        else render_deployment(
            tenant=name,
            namespace=namespace,
            owner=owner,
            spec=spec,
            config_checksum=config_checksum,
            secret_names=secret_names,
            database_secret=database_secret,
            keyring_secret=keyring_secret,
            pooler_secret=pooler_secret,
            image=workload_image,
            tracing=workload_tracing,
        ),
        render_service(tenant=name, namespace=namespace, owner=owner, spec=spec),
        # No HPA without its Deployment: it would only report that it cannot find its target.
        None
        if hold_workload
        else render_hpa(tenant=name, namespace=namespace, owner=owner, spec=spec),
        render_pdb(tenant=name, namespace=namespace, owner=owner, spec=spec),
    ]
    return [obj for obj in ordered if obj is not None]

"""Two tenants on the real API server, laid out as the operator lays them out, for the plugin.

The operator is not running here: the objects it would make (the labelled namespace and
children, the CleoTenant's status, a CleoBackup's status) are written by hand, so the
plugin's reads, RBAC and error wording are tested against the real API server in seconds.
`backup now --wait` against the running operator is in e2e/test_plugin_operator.py.

`plug-a` has a tenant admin: a ServiceAccount of its own (a fresh identity, bound to
`cleo-tenant-admin` in the tenant's namespace as the operator binds `spec.admins`), with a
kubeconfig that carries its token.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import BACKUP, FAILOVER, TENANT
from cleo_operator.render.meta import API_VERSION, tenant_labels
from cleo_operator.render.meta import default_namespace as namespace_of
from cleo_operator.render.rbac import BACKUP_REQUESTER_BINDING, BACKUP_REQUESTER_ROLE
from e2e.cluster import LocalCluster
from tests.harness.specs import backup_manifest, tenant_manifest

TENANT_A = "plug-a"
TENANT_B = "plug-b"
ADMIN_ACCOUNT = "plug-a-admin"
ACCOUNTS_NAMESPACE = "plug-accounts"
KEYS_NAMESPACE = "plug-keys"


@dataclass(frozen=True)
class PluginWorld:
    admin: Path
    """The cluster admin's kubeconfig."""
    tenant_admin: Path
    """plug-a's tenant admin's kubeconfig."""


def _apply(cluster: LocalCluster, *objects: dict[str, Any]) -> None:
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", "-",
        input=yaml.safe_dump_all(objects),
    )  # fmt: skip


def _children(tenant: str) -> list[dict[str, Any]]:
    ns = namespace_of(tenant)
    labels = tenant_labels(tenant)
    meta = {"namespace": ns, "labels": labels}
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cleoai-config", **meta}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "cleoai", **meta},
            "spec": {"ports": [{"port": 80}], "selector": {"app": "cleoai"}},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "cleo-workload", **meta},
            "rules": [],
        },
        # Someone else's ConfigMap in the namespace: not the operator's, not in the tree.
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "hand-made", "namespace": ns},
        },
    ]


def _backup(tenant: str) -> dict[str, Any]:
    return backup_manifest(
        "nightly",
        namespace_of(tenant),
        {
            "tenant": tenant,
            "schedule": "0 3 * * *",
            "destination": {"type": "pvc", "pvc": {"claimName": f"{tenant}-backups"}},
        },
    )


def _failover(tenant: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "CleoFailover",
        "metadata": {"name": "drill-1", "namespace": namespace_of(tenant)},
        "spec": {"tenant": tenant, "type": "Drill"},
    }


def _set_status(kube: KubeClient, tenant: str) -> None:
    kube.patch_merge(
        TENANT,
        tenant,
        {
            "status": {
                "phase": "Degraded",
                "namespace": namespace_of(tenant),
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "AutoscalingNotReady",
                        "message": "the HPA reads no metrics",
                        "lastTransitionTime": "2026-12-03T10:00:00Z",
                    },
                    {
                        "type": "NamespaceReady",
                        "status": "True",
                        "reason": "Created",
                        "message": "",
                        "lastTransitionTime": "2026-12-03T10:00:00Z",
                    },
                ],
            }
        },
        subresource="status",
    )
    kube.patch_merge(
        BACKUP,
        "nightly",
        {
            "status": {
                "phase": "Succeeded",
                "lastBackup": {
                    "time": "2026-12-03T03:00:00Z",
                    "succeeded": True,
                    "sizeBytes": 123456,
                    "backupId": f"20261203T030000Z-{tenant}",
                },
                "lastSuccessfulBackup": {
                    "time": "2026-12-03T03:00:00Z",
                    "succeeded": True,
                    "sizeBytes": 123456,
                    "backupId": f"20261203T030000Z-{tenant}",
                },
            }
        },
        namespace=namespace_of(tenant),
        subresource="status",
    )
    kube.patch_merge(
        FAILOVER,
        "drill-1",
        {
            "status": {
                "phase": "Succeeded",
                "startTime": "2026-12-03T09:00:00Z",
                "steps": [{"name": "verify", "state": "Succeeded"}],
            }
        },
        namespace=namespace_of(tenant),
        subresource="status",
    )


def make_world(cluster: LocalCluster, kube: KubeClient) -> PluginWorld:
    """Both tenants and plug-a's tenant admin; idempotent (two test modules share it)."""
    for tenant in (TENANT_A, TENANT_B):
        _apply(cluster, tenant_manifest(tenant, {"admins": []}))
        _apply(
            cluster,
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": namespace_of(tenant), "labels": tenant_labels(tenant)},
            },
        )
        _apply(cluster, *_children(tenant), _backup(tenant), _failover(tenant))
        _set_status(kube, tenant)
    _apply(
        cluster,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ACCOUNTS_NAMESPACE}},
    )
    _apply(
        cluster,
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": ADMIN_ACCOUNT, "namespace": ACCOUNTS_NAMESPACE},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "cleo-tenant-admins", "namespace": namespace_of(TENANT_A)},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cleo-tenant-admin",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": ADMIN_ACCOUNT, "namespace": ACCOUNTS_NAMESPACE}
            ],
        },
        # What the operator binds beside it where the tenant-protection policy is in place
        # (render.rbac): the right to ask for a one-off backup.
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": BACKUP_REQUESTER_BINDING, "namespace": namespace_of(TENANT_A)},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": BACKUP_REQUESTER_ROLE,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": ADMIN_ACCOUNT, "namespace": ACCOUNTS_NAMESPACE}
            ],
        },
    )
    token = cluster.kubectl(
        "create", "token", ADMIN_ACCOUNT, "-n", ACCOUNTS_NAMESPACE, "--duration=1h"
    ).stdout.strip()
    return PluginWorld(
        admin=cluster.kubeconfig,
        tenant_admin=cluster.kubeconfig_for(ADMIN_ACCOUNT, token),
    )

"""CleoTenant specs and objects for every kind of test, written as users write them (camelCase).

One builder, so that a new field of the API is added to the complete spec once and every test
that wants "a tenant that uses everything" sees it. Each call returns a fresh deep copy: a test
may change what it gets without touching another test's spec.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from e2e.cluster import LocalCluster

API_VERSION = "cleoai.io/v1alpha1"
IMAGE = "registry.example.com/cleoai:1.4.2"

_COMPLETE: dict[str, Any] = {
    "namespace": "acme-prod",
    "paused": False,
    "deletionPolicy": "Delete",
    "admins": [{"kind": "User", "name": "alice@example.com"}, {"kind": "Group", "name": "ops"}],
    "viewers": [{"kind": "Group", "name": "support"}],
    "quota": {
        "cpu": "8",
        "memory": "16Gi",
        "storage": "100Gi",
        "pods": 40,
        "services": 10,
        "secrets": 50,
        "configMaps": 50,
        "persistentVolumeClaims": 5,
    },
    "limits": {
        "defaultCpu": "1",
        "defaultMemory": "1Gi",
        "defaultRequestCpu": "250m",
        "defaultRequestMemory": "256Mi",
        "maxCpu": 4,
        "maxMemory": "8Gi",
    },
    "network": {
        "ingressFrom": [
            {"namespaceSelector": {"kubernetes.io/metadata.name": "ingress-nginx"}},
            {"podSelector": {"app": "gateway"}},
        ],
        # Not in ascending order on purpose: render must sort what users write.
        "databaseEgress": [{"cidr": "10.20.0.0/16", "ports": [6432, 5432]}],
    },
    "workload": {
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "port": 8080,
        "resources": {
            "requests": {"cpu": "500m", "memory": "1Gi"},
            "limits": {"cpu": 2, "memory": "2Gi"},
        },
        "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "CLEO_FEATURES", "value": ""}],
        "config": {"cleo.yaml": "memory: postgres\n", "limits.json": "{}"},
        "replicas": 2,
    },
    "autoscaling": {
        "enabled": True,
        "minReplicas": 2,
        "maxReplicas": 10,
        "targetCPUUtilizationPercentage": 70,
        "targetMemoryUtilizationPercentage": 80,
        "metrics": [
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": "requests_per_second"},
                    "target": {"type": "AverageValue", "averageValue": "100"},
                },
            }
        ],
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
    },
    "podDisruptionBudget": {"minAvailable": "50%"},
    "secrets": [{"name": "openai", "data": {"api-key": "v1.c2VhbGVkIGJ5dGVz"}}],
    "encryption": {"rotationPeriod": "90d"},
    "database": {
        "enabled": True,
        "site": "eu-west",
        "connectionLimit": 50,
        "passwordRotationPeriod": "30d",
        "pooler": {
            "enabled": True,
            "mode": "session",
            "poolSize": 20,
            "maxClientConnections": 500,
            "replicas": 2,
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
        },
    },
    "failover": {"automatic": True, "failoverDelay": "2m", "standbySite": "eu-central"},
}


def tenant_spec(**overrides: Any) -> dict[str, Any]:
    """A tenant spec that uses every field of the API, with top-level `overrides` applied.

    An override of None removes the field, so `tenant_spec(failover=None)` is the complete
    spec without a standby.
    """
    spec = copy.deepcopy(_COMPLETE)
    for key, value in overrides.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = copy.deepcopy(value)
    return spec


def with_value(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of `body` with the value at a dotted `path` (list indexes as numbers)
    replaced or added."""
    changed = copy.deepcopy(body)
    *parents, last = path.split(".")
    node: Any = changed
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return changed


def tenant_children(namespace: str) -> list[tuple[str, str]]:
    """(kind, name) of every child a tenant with all optional parts gets, in apply order."""
    return [
        ("Namespace", namespace),
        ("ResourceQuota", "cleo-quota"),
        ("LimitRange", "cleo-limits"),
        ("NetworkPolicy", "cleo-default-deny"),
        ("NetworkPolicy", "cleo-allow-same-namespace"),
        ("NetworkPolicy", "cleo-allow-dns"),
        ("NetworkPolicy", "cleo-allow-ingress"),
        ("NetworkPolicy", "cleo-allow-database"),
        ("ServiceAccount", "cleoai"),
        ("RoleBinding", "cleo-tenant-admin"),
        ("RoleBinding", "cleo-tenant-viewer"),
        ("ConfigMap", "cleoai-config"),
        ("Deployment", "cleoai"),
        ("Service", "cleoai"),
        ("HorizontalPodAutoscaler", "cleoai"),
        ("PodDisruptionBudget", "cleoai"),
    ]


def tenant_manifest(name: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """The CleoTenant object `name` with `spec` (default: an empty spec)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "CleoTenant",
        "metadata": {"name": name},
        "spec": {} if spec is None else spec,
    }


def backup_manifest(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The CleoBackup object `name` in `namespace` with `spec`."""
    return {
        "apiVersion": API_VERSION,
        "kind": "CleoBackup",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def bound_backup_volume(volume: str, namespace: str, host_path: str) -> list[dict[str, Any]]:
    """A PersistentVolume `volume` at `host_path` and the claim ``backups`` in `namespace`
    bound to it. No storage provisioner or volume binder runs on the local control plane:
    the volume made by hand and the claim marked bound (what the binder would write) let a
    backup runner's pod be scheduled, as in a cluster with storage."""
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": volume},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "manual",
            "hostPath": {"path": host_path},
            "claimRef": {"namespace": namespace, "name": "backups"},
        },
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": "backups",
            "namespace": namespace,
            "annotations": {"pv.kubernetes.io/bind-completed": "yes"},
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "manual",
            "resources": {"requests": {"storage": "1Gi"}},
            "volumeName": volume,
        },
    }
    return [pv, claim]


def secret_manifest(
    name: str,
    namespace: str,
    data: dict[str, str],
    *,
    type_: str = "Opaque",
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The Secret `name` in `namespace` with `data` (values already base64)."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        metadata["labels"] = dict(labels)
    return {"apiVersion": "v1", "kind": "Secret", "type": type_, "metadata": metadata, "data": data}


def apply_tenant(cluster: LocalCluster, name: str, spec: dict[str, Any]) -> None:
    """Create or update the CleoTenant `name` with kubectl, as a user would."""
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(tenant_manifest(name, spec)))

"""Every kind the operator touches, by name, and where each lives in the API.

Why named constants: a kind spelled as ``("v1", "Secret")`` at each use is a typo the type
checker cannot see, and the lists that must agree with what the operator writes (the kinds
Kopf watches for a tenant's children, the kinds its permissions cover) drifted when kept by
hand. They are derived from here instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

__all__ = [
    "ADMISSION_POLICY",
    "ADMISSION_POLICY_BINDING",
    "BACKUP",
    "CONFIG_MAP",
    "CRD",
    "CRON_JOB",
    "DEPLOYMENT",
    "EVENT",
    "FAILOVER",
    "HPA",
    "JOB",
    "KINDS",
    "LEASE",
    "LIMIT_RANGE",
    "NAMESPACE",
    "NETWORK_POLICY",
    "PDB",
    "POD",
    "PVC",
    "REPLICA_SET",
    "RESOURCE_QUOTA",
    "ROLE",
    "ROLE_BINDING",
    "SECRET",
    "SERVICE",
    "SERVICE_ACCOUNT",
    "TENANT",
    "TENANT_CHILDREN",
    "Kind",
    "kind_of",
]


@dataclass(frozen=True)
class Kind:
    """Where a kind lives in the API."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def path(self, *, namespace: str | None = None, name: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name, safe='')}"
        return base


NAMESPACE: Final = Kind("v1", "Namespace", "namespaces", namespaced=False)
RESOURCE_QUOTA: Final = Kind("v1", "ResourceQuota", "resourcequotas")
LIMIT_RANGE: Final = Kind("v1", "LimitRange", "limitranges")
SERVICE_ACCOUNT: Final = Kind("v1", "ServiceAccount", "serviceaccounts")
SECRET: Final = Kind("v1", "Secret", "secrets")
CONFIG_MAP: Final = Kind("v1", "ConfigMap", "configmaps")
SERVICE: Final = Kind("v1", "Service", "services")
POD: Final = Kind("v1", "Pod", "pods")
PVC: Final = Kind("v1", "PersistentVolumeClaim", "persistentvolumeclaims")
EVENT: Final = Kind("v1", "Event", "events")
NETWORK_POLICY: Final = Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies")
ROLE: Final = Kind("rbac.authorization.k8s.io/v1", "Role", "roles")
ROLE_BINDING: Final = Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings")
DEPLOYMENT: Final = Kind("apps/v1", "Deployment", "deployments")
REPLICA_SET: Final = Kind("apps/v1", "ReplicaSet", "replicasets")
HPA: Final = Kind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers")
PDB: Final = Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets")
CRON_JOB: Final = Kind("batch/v1", "CronJob", "cronjobs")
JOB: Final = Kind("batch/v1", "Job", "jobs")
CRD: Final = Kind(
    "apiextensions.k8s.io/v1",
    "CustomResourceDefinition",
    "customresourcedefinitions",
    namespaced=False,
)
TENANT: Final = Kind("cleoai.io/v1alpha1", "CleoTenant", "cleotenants", namespaced=False)
BACKUP: Final = Kind("cleoai.io/v1alpha1", "CleoBackup", "cleobackups")
FAILOVER: Final = Kind("cleoai.io/v1alpha1", "CleoFailover", "cleofailovers")
LEASE: Final = Kind("coordination.k8s.io/v1", "Lease", "leases")
ADMISSION_POLICY: Final = Kind(
    "admissionregistration.k8s.io/v1",
    "ValidatingAdmissionPolicy",
    "validatingadmissionpolicies",
    namespaced=False,
)
ADMISSION_POLICY_BINDING: Final = Kind(
    "admissionregistration.k8s.io/v1",
    "ValidatingAdmissionPolicyBinding",
    "validatingadmissionpolicybindings",
    namespaced=False,
)

TENANT_CHILDREN: Final[tuple[Kind, ...]] = (
    NAMESPACE,
    RESOURCE_QUOTA,
    LIMIT_RANGE,
    SERVICE_ACCOUNT,
    CONFIG_MAP,
    SERVICE,
    NETWORK_POLICY,
    ROLE,
    ROLE_BINDING,
    DEPLOYMENT,
    HPA,
    PDB,
)
"""The kinds a tenant's reconcile renders and applies (Secrets are written apart, see
handlers/registry.py for why they are not watched)."""

KINDS: Final[dict[tuple[str, str], Kind]] = {
    (k.api_version, k.kind): k
    for k in (
        *TENANT_CHILDREN,
        SECRET,
        POD,
        REPLICA_SET,
        PVC,
        EVENT,
        CRON_JOB,
        JOB,
        CRD,
        TENANT,
        BACKUP,
        FAILOVER,
        ADMISSION_POLICY,
        ADMISSION_POLICY_BINDING,
        LEASE,
    )
}
"""Every kind above by (apiVersion, kind), for code that handles an object of any of them."""


def kind_of(obj: Mapping[str, Any]) -> Kind:
    """The Kind of a Kubernetes object by its apiVersion and kind."""
    key = (str(obj.get("apiVersion")), str(obj.get("kind")))
    try:
        return KINDS[key]
    except KeyError:
        raise ValueError(f"cleo-operator does not manage {key[1]} ({key[0]})") from None

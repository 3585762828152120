"""What the migration tests on the local control plane share: a tenant reconciled in the
test's own process, with the migrations part, and the pod shape a planted object needs.

The database part is not under test there: its credentials Secret is made by hand.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import DEPLOYMENT, JOB, SECRET, TENANT
from cleo_operator.reconcile.migrations import MigrationsPart
from cleo_operator.reconcile.tenant import TenantReconciler
from e2e.cluster import LocalCluster
from tests.harness.cluster_fixtures import wait_for
from tests.harness.specs import apply_tenant

__all__ = ["Tenant", "restricted_pod", "start", "tenant_fixture", "tenant_spec"]


def tenant_spec(image: str, **migrations: Any) -> dict[str, Any]:
    return {
        "workload": {
            "image": image,
            "replicas": 1,
            "migrations": {"command": ["alembic", "upgrade", "head"], **migrations},
        },
        "autoscaling": {"enabled": False},
        "database": {"enabled": True},
    }


class Tenant:
    """One tenant, reconciled here as often as a test polls."""

    def __init__(self, cluster: LocalCluster, kube: KubeClient, name: str) -> None:
        self.cluster = cluster
        self.kube = kube
        self.name = name
        self.namespace = f"cleo-{name}"
        self.reconciler = TenantReconciler(
            kube, parts=[MigrationsPart(kube)], operator_namespace="cleo-system"
        )

    def apply(self, spec: dict[str, Any]) -> None:
        apply_tenant(self.cluster, self.name, spec)

    def reconcile(self) -> None:
        self.reconciler.reconcile(self.name)

    def status(self) -> dict[str, Any]:
        tenant = self.kube.get(TENANT, self.name)
        assert tenant is not None
        return dict(tenant.get("status") or {})

    def migrations(self) -> dict[str, Any]:
        return dict(self.status().get("migrations") or {})

    def condition(self, type_: str) -> dict[str, Any]:
        found = [c for c in self.status().get("conditions") or [] if c["type"] == type_]
        return found[0] if found else {}

    def image(self) -> str | None:
        dep = self.kube.get(DEPLOYMENT, "cleoai", namespace=self.namespace)
        if dep is None:
            return None
        return str(dep["spec"]["template"]["spec"]["containers"][0]["image"])

    def jobs(self) -> list[dict[str, Any]]:
        return [
            j
            for j in self.kube.list(JOB, namespace=self.namespace)
            if j["metadata"]["name"].startswith("cleo-migrate-")
        ]

    @classmethod
    def new(cls, cluster: LocalCluster, kube: KubeClient, *, prefix: str) -> Tenant:
        """A tenant of a fresh name (`prefix` and six hex digits)."""
        return cls(cluster, kube, f"{prefix}{uuid.uuid4().hex[:6]}")

    def delete(self) -> None:
        """Delete the tenant and its namespace without waiting (no operator finalizes it)."""
        self.cluster.kubectl("delete", "cleotenant", self.name, "--wait=false", check=False)
        self.cluster.kubectl("delete", "namespace", self.namespace, "--wait=false", check=False)

    def until(self, check: Any, what: str, timeout: float = 45.0) -> Any:
        def step() -> Any:
            self.reconcile()
            return check()

        return wait_for(step, timeout=timeout, interval=0.3, what=what)


def start(tenant: Tenant, spec: dict[str, Any]) -> None:
    tenant.apply(spec)
    tenant.reconcile()  # the namespace and its fence
    tenant.kube.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "cleo-database", "namespace": tenant.namespace},
            "stringData": {"DATABASE_URL": "postgresql://cleo@db.invalid/cleo"},
        }
    )
    assert tenant.kube.get(SECRET, "cleo-database", namespace=tenant.namespace) is not None


def restricted_pod(image: str) -> dict[str, Any]:
    """A pod spec of someone else's that Pod Security `restricted` admits, running `image`."""
    return {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "migrate",
                "image": image,
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
    }


def tenant_fixture(prefix: str) -> Callable[..., Iterator[Tenant]]:
    """A `tenant` fixture: a fresh `Tenant` named `prefix`..., deleted after the test."""

    @pytest.fixture
    def tenant(cluster: LocalCluster, kube: KubeClient) -> Iterator[Tenant]:
        made = Tenant.new(cluster, kube, prefix=prefix)
        yield made
        made.delete()

    return tenant

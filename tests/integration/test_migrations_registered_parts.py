"""The migrations part in the tenant reconcile as the operator registers it, on the local
control plane with the session's PostgreSQL.

Every part of `handlers.registry.tenant_parts` runs here, in its registered order, against
the real API server, Job and deployment controllers and a real database site (the
database part makes the credentials Secret the migration Job reads). KWOK is the kubelet:
its default stage ends a Job's pods with exit 0, and a test-only stage
(e2e/kwok/test-stages.yaml) keeps those of one test image running until their deadline.

What it proves at run time, not from a list: within one round the migrations part runs
before the Deployment is applied, and what it says (hold_reason, the image last migrated)
decides the Deployment of that very round.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

import pytest

from cleo_operator.failover.automatic import AutomaticFailover
from cleo_operator.handlers.registry import tenant_parts
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import DEPLOYMENT, JOB, NAMESPACE, TENANT
from cleo_operator.reconcile.database import TenantDatabases
from cleo_operator.reconcile.keys import ensure_operator_keys
from cleo_operator.reconcile.migrations import MigrationsPart
from cleo_operator.reconcile.pooler import PoolerSettings
from cleo_operator.reconcile.tenant import TenantReconciler
from tests.harness.cluster_fixtures import wait_for
from tests.harness.marks import RECONCILERS_ALONE
from tests.harness.postgres import PostgresServer
from tests.harness.specs import tenant_manifest
from tests.integration import tenant_database_support as support

pytestmark = RECONCILERS_ALONE

REPORTS = "cleo-test.invalid/cleoai:migration-reports"
HANGS = "cleo-test.invalid/cleoai:migration-hangs"
T0 = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=datetime.UTC)

databases = support.databases_fixture("migparts-operator", sites={"default": {}})


def spec(image: str, port: int) -> dict[str, Any]:
    return {
        "workload": {
            "image": image,
            "replicas": 1,
            "migrations": {"command": ["alembic", "upgrade", "head"]},
        },
        "autoscaling": {"enabled": False},
        "network": {"databaseEgress": [{"cidr": "127.0.0.1/32", "ports": [port]}]},
        "database": {"enabled": True},
    }


@pytest.fixture
def reconciler(kube: KubeClient, databases: TenantDatabases) -> Iterator[TenantReconciler]:
    operator_namespace = support.unique("migparts-keys")
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": operator_namespace}})
    keys = ensure_operator_keys(kube, operator_namespace=operator_namespace, kek_dir=None, now=T0)
    parts = tenant_parts(
        kube,
        keys=keys,
        databases=databases,
        automatic=AutomaticFailover(kube, databases.pools),
        operator_namespace=operator_namespace,
        pooler_settings=PoolerSettings(),
    )
    yield TenantReconciler(kube, parts=parts, operator_namespace=operator_namespace)
    kube.delete(NAMESPACE, operator_namespace)


@pytest.fixture
def tenant_name(kube: KubeClient, postgres_server: PostgresServer) -> Iterator[str]:
    name = support.unique("migparts")
    kube.create(tenant_manifest(name, spec(REPORTS, postgres_server.port)))
    yield name
    kube.delete(TENANT, name)
    kube.delete(NAMESPACE, f"cleo-{name}")
    support.drop_tenant_objects(postgres_server, name)


def image(kube: KubeClient, namespace: str) -> str | None:
    deployment = kube.get(DEPLOYMENT, "cleoai", namespace=namespace)
    if deployment is None:
        return None
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def test_the_registered_parts_hold_the_deployment_until_the_migration_succeeded(
    kube: KubeClient,
    reconciler: TenantReconciler,
    tenant_name: str,
    postgres_server: PostgresServer,
) -> None:
    namespace = f"cleo-{tenant_name}"
    assert isinstance(reconciler.parts[-1], MigrationsPart)  # as registered (see below)

    def migration_jobs() -> list[dict[str, Any]]:
        return [
            j
            for j in kube.list(JOB, namespace=namespace)
            if str(j["metadata"]["name"]).startswith("cleo-migrate-")
        ]

    # The rounds until the database part made the credentials Secret and the migrations
    # part its Job: in every one of them the Deployment was decided after the part spoke,
    # so none made a Deployment with the unmigrated image.
    def job_made() -> bool:
        reconciler.reconcile(tenant_name)
        assert image(kube, namespace) is None, "a Deployment before the first migration"
        return bool(migration_jobs())

    wait_for(job_made, timeout=90, interval=0.5, what="the first migration Job")

    def rolled() -> bool:
        reconciler.reconcile(tenant_name)
        return image(kube, namespace) == REPORTS

    wait_for(rolled, timeout=90, interval=0.5, what="the Deployment after the first migration")

    # A new image whose migration runs on (KWOK keeps its pod running): every round keeps
    # the Deployment at the image last migrated (hold on the image, not on the spec's).
    kube.patch_merge(TENANT, tenant_name, {"spec": {"workload": {"image": HANGS}}})

    def running() -> bool:
        reconciler.reconcile(tenant_name)
        assert image(kube, namespace) == REPORTS
        attempt = (kube.get(TENANT, tenant_name) or {}).get("status", {}).get("migrations", {})
        return (attempt.get("attempt") or {}).get("image") == HANGS and (
            attempt["attempt"]["phase"] == "Running"
        )

    wait_for(running, timeout=90, interval=0.5, what="the second migration to run")
    for _ in range(3):
        reconciler.reconcile(tenant_name)
        assert image(kube, namespace) == REPORTS

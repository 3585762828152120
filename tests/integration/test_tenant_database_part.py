"""The database as a part of the real tenant reconcile: the Deployment reads the credentials
Secret, status and DatabaseReady report it, a rotation rolls the pods, and a no-op
reconcile writes nothing."""

from __future__ import annotations

import base64
import datetime
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from cleo_operator.data.tenant_db import tenant_database_name
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import DEPLOYMENT, NAMESPACE
from cleo_operator.reconcile.database import ROTATE_ANNOTATION, DatabasePart, TenantDatabases
from cleo_operator.reconcile.tenant import TenantReconciler
from tests.harness.cluster_fixtures import wait_for
from tests.harness.marks import RECONCILERS_ALONE
from tests.harness.postgres import PostgresServer
from tests.harness.specs import IMAGE, tenant_manifest
from tests.integration.tenant_database_support import (
    TENANT,
    databases_fixture,
    drop_tenant_objects,
    secret_of,
    secret_values,
    unique,
)

pytestmark = RECONCILERS_ALONE

CHECKSUM = "cleoai.io/config-checksum"


databases = databases_fixture("tdb-operator", sites={"default": {}})


class Clock:
    def __init__(self) -> None:
        self.now = datetime.datetime.now(datetime.UTC)

    def __call__(self) -> datetime.datetime:
        return self.now


@pytest.fixture
def tenant_name(kube: KubeClient, postgres_server: PostgresServer) -> Iterator[str]:
    name = unique("t")
    kube.create(
        tenant_manifest(
            name,
            {
                "workload": {"image": IMAGE},
                "database": {"enabled": True},
            },
        )
    )
    yield name
    kube.delete(TENANT, name)
    kube.delete(NAMESPACE, f"cleo-{name}")
    drop_tenant_objects(postgres_server, name)


def condition(tenant: dict[str, Any], type_: str) -> dict[str, Any]:
    for item in tenant["status"]["conditions"]:
        if item["type"] == type_:
            return dict(item)
    raise AssertionError(f"no {type_} condition in {tenant['status']['conditions']}")


def test_the_tenant_reconcile_wires_the_database_into_the_workload_and_status(
    kube: KubeClient, databases: TenantDatabases, tenant_name: str
) -> None:
    clock = Clock()
    reconciler = TenantReconciler(kube, parts=[DatabasePart(databases)], now=clock)
    ns = f"cleo-{tenant_name}"

    def reported() -> dict[str, Any] | None:
        # As the tenant's loop would: again until the first status is out (it waits for
        # the namespace, and for Ready or a grace period).
        clock.now = datetime.datetime.now(datetime.UTC)
        reconciler.reconcile(tenant_name)
        tenant = kube.get(TENANT, tenant_name)
        return tenant if tenant and (tenant.get("status") or {}).get("database") else None

    tenant = wait_for(reported, timeout=60, interval=0.5, what="the tenant's first status")
    ready = condition(tenant, "DatabaseReady")
    assert (ready["status"], ready["reason"]) == ("True", "Connected")
    database = tenant["status"]["database"]
    assert database["name"] == tenant_database_name(tenant_name)
    assert database["site"] == "default"
    assert database["secretName"] == "cleo-database"
    assert "lastPasswordRotation" in database

    deployment = kube.get(DEPLOYMENT, "cleoai", namespace=ns)
    assert deployment is not None
    pod = deployment["spec"]["template"]
    env_from = pod["spec"]["containers"][0]["envFrom"]
    assert {"secretRef": {"name": "cleo-database"}} in env_from
    checksum = pod["metadata"]["annotations"][CHECKSUM]
    values = secret_values(secret_of(kube, ns))
    with psycopg.connect(values["DATABASE_URL"], connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    # Nothing of the password in the objects the tenant's viewers can read.
    password = values["PGPASSWORD"]
    visible = repr(tenant) + repr(deployment)
    assert password not in visible
    assert base64.b64encode(password.encode()).decode() not in visible

    # Once the workload has settled (its pods come up meanwhile), a reconcile writes
    # nothing at all: the database part included.
    def quiet() -> bool:
        clock.now = datetime.datetime.now(datetime.UTC)
        result = reconciler.reconcile(tenant_name)
        return not result.applied and not result.status_written

    wait_for(quiet, timeout=60, interval=1.0, what="a reconcile that writes nothing")
    assert secret_values(secret_of(kube, ns))["PGPASSWORD"] == values["PGPASSWORD"]

    # Rotation on demand: a new password, and the pods roll (the checksum changes).
    kube.patch_merge(TENANT, tenant_name, {"metadata": {"annotations": {ROTATE_ANNOTATION: "now"}}})
    clock.now += datetime.timedelta(minutes=1)
    reconciler.reconcile(tenant_name)
    rotated = secret_values(secret_of(kube, ns))
    assert rotated["PGPASSWORD"] != password
    deployment = kube.get(DEPLOYMENT, "cleoai", namespace=ns)
    assert deployment is not None
    assert deployment["spec"]["template"]["metadata"]["annotations"][CHECKSUM] != checksum
    tenant = kube.get(TENANT, tenant_name)
    assert tenant is not None
    assert condition(tenant, "DatabaseReady")["status"] == "True"
    with psycopg.connect(rotated["DATABASE_URL"], connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)

    # Disabled again: the condition says so, the workload no longer reads the Secret, and
    # the database stays where it was (an edit of the spec never destroys data).
    kube.patch_merge(TENANT, tenant_name, {"spec": {"database": {"enabled": False}}})

    def disabled() -> dict[str, Any] | None:
        clock.now = datetime.datetime.now(datetime.UTC)
        reconciler.reconcile(tenant_name)
        tenant = kube.get(TENANT, tenant_name)
        reported = tenant and condition(tenant, "DatabaseReady")["reason"] == "NotEnabled"
        return tenant if reported else None

    tenant = wait_for(disabled, timeout=60, interval=0.5, what="DatabaseReady NotEnabled")
    assert condition(tenant, "DatabaseReady")["status"] == "True"
    assert "database" not in tenant["status"]
    deployment = kube.get(DEPLOYMENT, "cleoai", namespace=ns)
    assert deployment is not None
    env_from = deployment["spec"]["template"]["spec"]["containers"][0].get("envFrom") or []
    assert {"secretRef": {"name": "cleo-database"}} not in env_from
    with psycopg.connect(rotated["DATABASE_URL"], connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)

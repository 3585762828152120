"""Deleting a tenant: ``Delete`` drops its database and role (after the backup hook agrees),
``Retain`` keeps them working, and a site that is down holds the deletion without hanging."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cleo_operator.api.tenant import CleoTenantSpec, parse_tenant_spec
from cleo_operator.data.tenant_db import tenant_database_name, tenant_role_name
from cleo_operator.kube.client import KubeClient
from cleo_operator.reconcile.database import TenantDatabases
from tests.harness.cluster_fixtures import wait_for
from tests.harness.marks import RECONCILERS_ALONE
from tests.harness.postgres import PostgresServer, free_loopback_port
from tests.integration.tenant_database_support import (
    Tenant,
    build_databases,
    can_log_in,
    connect_with_secret,
    drop_tenant_objects,
    namespace,
    password_in,
    reconcile,
    secret_of,
    secret_values,
    site_entry,
    superuser_secret,
    timed,
    unique,
)

pytestmark = RECONCILERS_ALONE

WAIT = 1.5


class BackupGate:
    """Stands in for the backup code: holds the drop until told the last backup is done."""

    def __init__(self) -> None:
        self.open = False
        self.asked: list[str] = []

    def __call__(self, tenant: str, spec: CleoTenantSpec) -> str | None:
        self.asked.append(tenant)
        return None if self.open else "waiting for the last backup of the tenant's database"


@pytest.fixture(scope="module")
def operator_ns(kube: KubeClient, crds_installed: None) -> Iterator[str]:
    del crds_installed
    with namespace(kube, unique("tdb-operator")) as name:
        yield name


@pytest.fixture(scope="module")
def gate() -> BackupGate:
    return BackupGate()


@pytest.fixture(scope="module")
def databases(
    kube: KubeClient, postgres_server: PostgresServer, operator_ns: str, gate: BackupGate
) -> Iterator[TenantDatabases]:
    superuser_secret(kube, postgres_server, namespace=operator_ns)
    sites = {
        "main": site_entry(
            host=postgres_server.host,
            port=postgres_server.port,
            secret_namespace=operator_ns,
            secret_name="pg-admin",
        ),
        "down": site_entry(
            host="127.0.0.1",
            port=free_loopback_port(),
            secret_namespace=operator_ns,
            secret_name="pg-admin",
        ),
    }
    with contextlib.closing(
        build_databases(kube, sites, before_drop=gate, wait_seconds=WAIT)
    ) as service:
        yield service


@pytest.fixture
def placed(kube: KubeClient, postgres_server: PostgresServer) -> Iterator[tuple[Tenant, str]]:
    """A tenant with a database on the healthy site, and a namespace for its Secret."""
    made = Tenant(kube, unique("t"), {"database": {"enabled": True, "site": "main"}})
    with namespace(kube) as ns:
        yield made, ns
    made.delete()
    drop_tenant_objects(postgres_server, made.name)


@pytest.fixture
def ns(kube: KubeClient) -> Iterator[str]:
    with namespace(kube) as name:
        yield name


def exists(server: PostgresServer, tenant: str) -> tuple[bool, bool]:
    """Whether the tenant's database and its role exist on the server."""
    database = server.execute(
        "SELECT 1 FROM pg_database WHERE datname = %s", (tenant_database_name(tenant),)
    )
    role = server.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (tenant_role_name(tenant),))
    return bool(database), bool(role)


def with_policy(tenant: Tenant, policy: str) -> CleoTenantSpec:
    return parse_tenant_spec({**tenant.raw_spec, "deletionPolicy": policy})


def finalize(databases: TenantDatabases, tenant: Tenant, ns: str, policy: str) -> Any:
    return databases.finalize(
        tenant=tenant.name, uid=tenant.uid, spec=with_policy(tenant, policy), namespace=ns
    )


def settled(databases: TenantDatabases, tenant: Tenant, ns: str) -> None:
    """Provision the tenant (a first provisioning may outlast one reconcile's wait)."""
    deadline = time.monotonic() + 60
    while True:
        outcome = reconcile(databases, tenant, ns)
        if not outcome.in_progress:
            break
        assert time.monotonic() < deadline, "provisioning did not finish"
        time.sleep(0.2)
    assert outcome.condition is not None
    assert outcome.condition.status == "True"


def finalized(databases: TenantDatabases, tenant: Tenant, ns: str, policy: str) -> Any:
    """Finalize as the handler does: again after ``retry_after`` until done (or stuck)."""
    deadline = time.monotonic() + 60
    while True:
        outcome = finalize(databases, tenant, ns, policy)
        if outcome.done or not outcome.in_progress:
            return outcome
        assert time.monotonic() < deadline, "finalize never finished"
        time.sleep(0.2)


def test_delete_drops_the_database_and_role_once_the_backup_hook_agrees(
    kube: KubeClient,
    databases: TenantDatabases,
    postgres_server: PostgresServer,
    gate: BackupGate,
    placed: tuple[Tenant, str],
) -> None:
    tenant, ns = placed
    settled(databases, tenant, ns)
    assert exists(postgres_server, tenant.name) == (True, True)

    gate.open = False
    held = finalize(databases, tenant, ns, "Delete")
    assert not held.done
    assert "last backup" in held.message
    assert held.retry_after is not None
    assert tenant.name in gate.asked
    assert exists(postgres_server, tenant.name) == (True, True)
    # While deletion is under way, a reconcile provisions nothing again.
    during = reconcile(databases, tenant, ns)
    assert during.condition is not None
    assert during.condition.reason == "Deleting"

    gate.open = True
    dropped = finalized(databases, tenant, ns, "Delete")
    assert dropped.done, dropped.message
    assert tenant_database_name(tenant.name) in dropped.message
    assert exists(postgres_server, tenant.name) == (False, False)
    assert secret_of(kube, ns) is None

    # Finalizing again (the handler may retry) finds nothing to do and is done.
    again = finalized(databases, tenant, ns, "Delete")
    assert again.done


def test_retain_keeps_the_database_the_role_and_working_credentials(
    kube: KubeClient,
    databases: TenantDatabases,
    postgres_server: PostgresServer,
    gate: BackupGate,
    placed: tuple[Tenant, str],
) -> None:
    tenant, ns = placed
    gate.open = True
    settled(databases, tenant, ns)
    password = password_in(kube, ns)
    # A control: another child of the tenant, which the garbage collector will remove.
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "control", "namespace": ns, "ownerReferences": [tenant.owner]},
        }
    )

    kept = finalized(databases, tenant, ns, "Retain")
    assert kept.done
    assert "Retain" in kept.message
    tenant.delete()
    wait_for(
        lambda: secret_of(kube, ns, "control") is None,
        timeout=120,
        what="the garbage collector to remove the tenant's other children",
    )
    # The credentials were cut loose from the tenant: they stay, and they work.
    assert exists(postgres_server, tenant.name) == (True, True)
    secret = secret_of(kube, ns)
    assert secret is not None
    assert secret["metadata"].get("ownerReferences") in (None, [])
    assert secret["metadata"]["labels"]["cleoai.io/orphaned"] == "true"
    values = secret_values(secret)
    assert values["PGPASSWORD"] == password
    with connect_with_secret(values) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert can_log_in(postgres_server, tenant=tenant.name, password=password)

    # A new tenant of the same name adopts the retained database and its credentials.
    successor = Tenant(kube, tenant.name, tenant.raw_spec)
    adopted = reconcile(databases, successor, ns)
    assert adopted.condition is not None
    assert adopted.condition.status == "True"
    secret = secret_of(kube, ns)
    assert secret is not None
    assert [o["uid"] for o in secret["metadata"]["ownerReferences"]] == [successor.uid]
    assert "cleoai.io/orphaned" not in secret["metadata"]["labels"]
    assert secret_values(secret)["PGPASSWORD"] == password  # no needless rotation


def test_delete_on_a_site_that_is_down_holds_the_deletion_without_hanging(
    kube: KubeClient, databases: TenantDatabases, gate: BackupGate, ns: str
) -> None:
    gate.open = True
    tenant = Tenant(kube, unique("t"), {"database": {"enabled": True, "site": "down"}})
    try:
        outcome, took = timed(lambda: finalized(databases, tenant, ns, "Delete"))
        assert not outcome.done
        assert "'down'" in outcome.message
        assert outcome.retry_after is not None
        assert took < WAIT + 1.0
    finally:
        tenant.delete()


def test_a_tenant_without_a_database_is_finalized_at_once(
    kube: KubeClient, databases: TenantDatabases, gate: BackupGate, ns: str
) -> None:
    gate.open = False  # would hold a drop: none must be attempted
    tenant = Tenant(kube, unique("t"), {"database": {"enabled": False, "site": "down"}})
    try:
        outcome = finalize(databases, tenant, ns, "Delete")
        assert outcome.done
        assert tenant.name not in gate.asked
    finally:
        tenant.delete()

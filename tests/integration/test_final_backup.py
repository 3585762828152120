"""The last backup before a tenant's database is dropped, on the local control plane and a
real PostgreSQL server.

`TenantDatabases` gets `FinalBackup` as its ``before_drop`` hook, exactly as the operator
wires it. A CleoTenant held by a test finalizer is deleted, so it has a real
``deletionTimestamp``; the database part's finalize is then called as the tenant finalizer
calls it. The final CleoBackup's Job is made by the real `BackupReconciler`, and its pod's
command runs here as a local process with what the pod would get
(`backup_cluster_support.run_job_pod`): the tenant's credentials Secret, the keyring, the
volume and the pod's own ServiceAccount token.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from cleo_operator.api.tenant import CleoTenantSpec
from cleo_operator.data.tenant_db import tenant_database_name
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import BACKUP, JOB
from cleo_operator.reconcile.backup import BackupReconciler, BackupSettings
from cleo_operator.reconcile.database import FinalizeOutcome, TenantDatabases
from cleo_operator.reconcile.final_backup import (
    FINAL_BACKUP_LABEL,
    FINAL_BACKUP_NAME,
    FinalBackup,
)
from cleo_operator.render.backup import BackupPodSettings
from e2e.cluster import LocalCluster
from tests.harness.marks import RECONCILERS_ALONE
from tests.harness.postgres import PostgresServer
from tests.integration.backup_cluster_support import (
    API_SERVER,
    PV,
    RUNNER_IMAGE,
    BackupScene,
    LocalRun,
    seed_backup_tenant,
)
from tests.integration.tenant_database_support import (
    SECRET,
    TENANT,
    Tenant,
    can_log_in,
    connect_with_secret,
    databases_fixture,
    drop_tenant_objects,
    namespace,
    secret_of,
    secret_values,
    unique,
)

pytestmark = RECONCILERS_ALONE

ADMIN_SECRET = "pg-admin-final"
HOLD = "cleoai.io/test-hold"
WRONG_PASSWORD = "wrong-password-0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f"
DESTINATION = {"type": "pvc", "pvc": {"claimName": "backups", "path": "cleo"}}


# As in handlers/registry.py: the hook is the final backup.
databases = databases_fixture("fb-operator", admin=ADMIN_SECRET, before_drop_for=FinalBackup)


@dataclass
class Setup(BackupScene):
    """A Delete tenant with a real database, its Secrets and volume, and a backup reconciler."""

    server: PostgresServer

    @property
    def spec(self) -> CleoTenantSpec:
        return self.tenant.spec

    def get_backup(self, name: str) -> dict[str, Any] | None:
        return self.kube.get(BACKUP, name, namespace=self.namespace)

    def begin_deletion(self) -> datetime.datetime:
        """Delete the CleoTenant; the test's finalizer keeps it, with a deletionTimestamp."""
        self.tenant.delete()
        obj = self.kube.get(TENANT, self.tenant.name)
        assert obj is not None
        stamp = obj["metadata"]["deletionTimestamp"]
        return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))

    def finalize(self) -> FinalizeOutcome:
        return self.databases.finalize(
            tenant=self.tenant.name, uid=self.tenant.uid, spec=self.spec, namespace=self.namespace
        )

    def database_exists(self) -> bool:
        rows = self.server.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s",
            [tenant_database_name(self.tenant.name)],
        )
        return bool(rows)

    def run_final_backup(self) -> LocalRun:
        """The backup reconciler makes the final backup's Job; its pod's command runs here."""
        self.reconciler.reconcile(self.namespace, FINAL_BACKUP_NAME)
        job = self.kube.get(JOB, f"cleo-backup-{FINAL_BACKUP_NAME}", namespace=self.namespace)
        assert job is not None, "the backup reconciler made no Job for the final backup"
        return self.run(job, workdir=unique("run"))


@pytest.fixture
def setup(
    cluster: LocalCluster,
    kube: KubeClient,
    databases: TenantDatabases,
    postgres_server: PostgresServer,
    tmp_path: Path,
) -> Iterator[Setup]:
    # Paused: an operator process running in this session must leave the tenant alone.
    tenant = Tenant(
        kube,
        unique("fb"),
        {
            "paused": True,
            "deletionPolicy": "Delete",
            "database": {"enabled": True, "site": "main"},
        },
    )
    # Held by a finalizer of the test's own, so deleting it leaves it with a deletionTimestamp.
    kube.patch_merge(TENANT, tenant.name, {"metadata": {"finalizers": [HOLD]}})
    volumes = tmp_path / "volumes"
    reconciler = BackupReconciler(
        kube,
        settings=BackupSettings(
            pod=BackupPodSettings(image=RUNNER_IMAGE, api_server_cidrs=API_SERVER),
            volumes_dir=volumes,
        ),
    )
    volume = ""
    try:
        with namespace(kube, f"cleo-{tenant.name}") as ns:
            volume = seed_backup_tenant(kube, databases, tenant, ns)
            yield Setup(
                kube=kube,
                cluster=cluster,
                databases=databases,
                server=postgres_server,
                tenant=tenant,
                namespace=ns,
                volumes=volumes,
                work=tmp_path / "runs",
                reconciler=reconciler,
            )
    finally:
        reconciler.close()
        if volume:
            kube.delete(PV, volume)
        if kube.get(TENANT, tenant.name) is not None:
            kube.patch_merge(TENANT, tenant.name, {"metadata": {"finalizers": None}})
        tenant.delete()
        drop_tenant_objects(postgres_server, tenant.name)


def test_a_delete_tenant_with_backups_gets_a_final_backup_before_its_database_is_dropped(
    setup: Setup,
) -> None:
    ns = setup.namespace
    setup.backup(
        "nightly",
        {"schedule": "0 3 * * *", "destination": DESTINATION, "retention": {"keepLast": 1}},
    )
    deleting = setup.begin_deletion()
    # Written after the deletion began: only a backup taken after it holds this row.
    with connect_with_secret(secret_values(secret_of(setup.kube, ns))) as conn:
        conn.execute("INSERT INTO notes VALUES (301, 'written while the tenant was deleted')")

    # -- the drop waits; the final backup is made once ---------------------------------
    first = setup.finalize()
    assert not first.done
    assert f"waiting for the final backup CleoBackup {ns}/{FINAL_BACKUP_NAME}" in first.message
    assert setup.database_exists()
    final = setup.get_backup(FINAL_BACKUP_NAME)
    assert final is not None
    assert final["spec"]["tenant"] == setup.tenant.name
    assert final["spec"]["destination"] == DESTINATION
    assert "schedule" not in final["spec"]
    assert "retention" not in final["spec"]  # keep everything: nothing is pruned
    labels = final["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "cleo-operator"
    assert labels["cleoai.io/tenant"] == setup.tenant.name
    assert labels[FINAL_BACKUP_LABEL] == "true"
    # Not owned by the tenant: a foreground deletion of the tenant must not take it.
    assert not final["metadata"].get("ownerReferences")

    again = setup.finalize()
    assert not again.done
    # Once made, the message says where its runner is.
    assert f"kubectl get jobs,pods -n {ns} -l cleoai.io/backup={FINAL_BACKUP_NAME}" in (
        again.message
    )
    assert setup.database_exists()
    unchanged = setup.get_backup(FINAL_BACKUP_NAME)
    assert unchanged is not None
    assert unchanged["metadata"]["resourceVersion"] == final["metadata"]["resourceVersion"]
    assert [b["metadata"]["name"] for b in setup.kube.list(BACKUP, namespace=ns)] == [
        FINAL_BACKUP_NAME,
        "nightly",
    ]
    # The runner pod needs the credentials Secret: it stays until the drop.
    assert secret_of(setup.kube, ns) is not None

    # -- the Job's pod runs and succeeds: the drop proceeds ------------------------------
    run = setup.run_final_backup()
    assert run.returncode == 0, run.stderr
    assert run.report is not None
    assert run.report["outcome"] == "Succeeded"
    backup_id = run.report["backup"]["backupId"]
    recorded = setup.get_backup(FINAL_BACKUP_NAME)
    assert recorded is not None
    newest = recorded["status"]["lastSuccessfulBackup"]
    assert newest["backupId"] == backup_id
    assert datetime.datetime.fromisoformat(newest["time"].replace("Z", "+00:00")) >= deleting

    dropped = setup.finalize()
    assert dropped.done, dropped.message
    assert "dropped database" in dropped.message
    assert not setup.database_exists()
    assert secret_of(setup.kube, ns) is None

    # -- the archive restores with the tenant's data, the late row included ------------
    target = f"{tenant_database_name(setup.tenant.name)}_restored"
    setup.server.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target)))
    try:
        restored = setup.restore(
            setup.server, folder="backups/cleo", backup_id=backup_id, target=target
        )
        assert restored.returncode == 0, restored.stderr
        rows = setup.server.execute("SELECT count(*), max(id) FROM notes", dbname=target)
        assert rows[0] == (301, 301)
    finally:
        setup.server.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target))
        )


def test_a_tenant_without_backups_is_dropped_at_once(setup: Setup) -> None:
    setup.begin_deletion()
    outcome = setup.finalize()
    assert outcome.done, outcome.message
    assert not setup.database_exists()
    assert setup.get_backup(FINAL_BACKUP_NAME) is None
    assert setup.kube.list(BACKUP, namespace=setup.namespace) == []


def test_a_failed_final_backup_keeps_the_database_until_a_person_removes_the_backups(
    setup: Setup,
) -> None:
    ns = setup.namespace
    setup.backup("before-upgrade", {"destination": DESTINATION})
    password = secret_values(secret_of(setup.kube, ns))["PGPASSWORD"]
    setup.begin_deletion()
    assert not setup.finalize().done

    # The runner gets a login the role does not have: the final backup fails.
    setup.kube.patch_merge(
        SECRET,
        "cleo-database",
        {"data": {"PGPASSWORD": base64.b64encode(WRONG_PASSWORD.encode()).decode()}},
        namespace=ns,
    )
    run = setup.run_final_backup()
    assert run.returncode == 1, run.stderr
    assert run.report is not None
    assert run.report["reason"] == "DatabaseUnavailable"

    for _ in range(2):
        waiting = setup.finalize()
        assert not waiting.done
        assert "failed (DatabaseUnavailable" in waiting.message
        assert f"delete CleoBackup {ns}/{FINAL_BACKUP_NAME} to try again" in waiting.message
        assert WRONG_PASSWORD not in waiting.message
        assert password not in waiting.message
    assert setup.database_exists()
    assert can_log_in(setup.server, tenant=setup.tenant.name, password=password)

    # A person decides to go without it: the tenant's CleoBackups go, the drop proceeds.
    for name in ("before-upgrade", FINAL_BACKUP_NAME):
        setup.kube.delete(BACKUP, name, namespace=ns)
    dropped = setup.finalize()
    assert dropped.done, dropped.message
    assert not setup.database_exists()

"""``backupFirst`` on the local control plane, with a real backup run before the migration.

The tenant reconciler with the migrations part, and the backup reconciler, run in this
process against the real API server and controllers; the tenant's database is made by the
real `TenantDatabases` on the session's PostgreSQL server. KWOK is the kubelet and runs no
container: its default stage ends the migration Job's pod with exit 0 (the migration
"succeeds"), and the one-off backup's Job pod is played by a local ``cleo-operator backup
run`` process given exactly what the pod would get (`backup_cluster_support.run_job_pod`),
so the archive on the volume, the run on the one-off's status and its verification are
real.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import BACKUP, JOB, SECRET, TENANT
from cleo_operator.reconcile.database import TenantDatabases
from e2e.cluster import LocalCluster
from tests.harness.cluster_fixtures import wait_for
from tests.harness.marks import RECONCILERS_ALONE
from tests.harness.postgres import PostgresServer
from tests.integration.backup_cluster_support import (
    PV,
    BackupScene,
    local_backup_reconciler,
    seed_backup_tenant,
)
from tests.integration.migrations_support import Tenant as MigratingTenant
from tests.integration.migrations_support import tenant_spec
from tests.integration.tenant_database_support import (
    Tenant,
    databases_fixture,
    drop_tenant_objects,
    unique,
)

pytestmark = [*RECONCILERS_ALONE, pytest.mark.usefixtures("crds_installed")]

OLD = "cleo-test.invalid/cleoai:4.0"
NEW = "cleo-test.invalid/cleoai:4.1"
NEXT = "cleo-test.invalid/cleoai:4.2"
WRONG_PASSWORD = "wrong-password-5e1d2c3b4a59687766554433221100ff"

databases = databases_fixture("mig-bk", admin="pg-admin-mig")


def spec(image: str, **migrations: Any) -> dict[str, Any]:
    return {**tenant_spec(image, **migrations), "database": {"enabled": True, "site": "main"}}


@dataclass
class Scene:
    tenant: MigratingTenant
    backups: BackupScene

    @property
    def namespace(self) -> str:
        return self.tenant.namespace

    def change(self, image: str, **migrations: Any) -> None:
        """A platform admin changes the tenant's image (and its migrations)."""
        self.tenant.kube.patch_merge(TENANT, self.tenant.name, {"spec": spec(image, **migrations)})

    def one_off(self) -> str:
        """The name of the one-off the migration in flight waits for."""

        def taken() -> str | None:
            self.tenant.reconcile()
            found = (self.tenant.migrations().get("attempt") or {}).get("backups") or []
            return str(found[0]).split("/")[0] if found else None

        name: str = wait_for(taken, timeout=30, interval=0.3, what="the one-off backup")
        return name

    def run_one_off(self, name: str) -> Any:
        """Make the one-off's Job and run its pod here; the run."""
        self.backups.reconciler.reconcile(self.namespace, name)
        job = self.tenant.kube.get(JOB, f"cleo-run-{name}", namespace=self.namespace)
        assert job is not None
        run = self.backups.run(job)

        def ended() -> bool:
            conditions = (
                self.tenant.kube.get(JOB, f"cleo-run-{name}", namespace=self.namespace) or {}
            ).get("status", {}).get("conditions") or []
            return any(c.get("type") in ("Complete", "Failed") for c in conditions)

        wait_for(ended, timeout=30, interval=0.3, what="the one-off's Job to end")
        self.backups.reconciler.reconcile(self.namespace, name)
        return run

    def backup_status(self, name: str) -> dict[str, Any]:
        obj = self.tenant.kube.get(BACKUP, name, namespace=self.namespace)
        assert obj is not None
        return dict(obj.get("status") or {})


@pytest.fixture
def scene(
    cluster: LocalCluster,
    kube: KubeClient,
    databases: TenantDatabases,
    postgres_server: PostgresServer,
    tmp_path: Path,
) -> Iterator[Scene]:
    owner = Tenant(kube, unique("mbk"), spec(OLD))
    tenant = MigratingTenant(cluster, kube, owner.name)
    volumes = tmp_path / "volumes"
    reconciler = local_backup_reconciler(kube, databases, volumes=volumes)
    try:
        ns = tenant.namespace
        tenant.reconcile()  # the namespace, made for the tenant as the operator makes it
        seed_backup_tenant(kube, databases, owner, ns)
        backups = BackupScene(
            kube=kube,
            cluster=cluster,
            databases=databases,
            tenant=owner,
            namespace=ns,
            volumes=volumes,
            work=tmp_path / "runs",
            reconciler=reconciler,
        )
        backups.backup(
            "nightly",
            {
                # Not suspended (a suspended source gives no one-off), not due here.
                "schedule": "@yearly",
                "destination": {"type": "pvc", "pvc": {"claimName": "backups"}},
                "verification": {"enabled": True},
            },
        )
        reconciler.reconcile(ns, "nightly")
        yield Scene(tenant=tenant, backups=backups)
    finally:
        reconciler.close()
        kube.delete(PV, f"{tenant.namespace}-backups")
        tenant.delete()
        owner.delete()
        drop_tenant_objects(postgres_server, owner.name)


def test_backup_first_runs_a_real_backup_then_the_migration_then_the_roll(
    scene: Scene,
) -> None:
    tenant, ns = scene.tenant, scene.namespace
    tenant.until(lambda: tenant.image() == OLD, "the first migration, then the Deployment")
    assert len(tenant.jobs()) == 1

    # -- an image change with backupFirst: a one-off of the scheduled backup first -------
    scene.change(NEW, backupFirst=True)
    one_off = scene.one_off()
    for _ in range(2):
        tenant.reconcile()
    # The previous migration's Job went before the backup; none runs for the new image.
    assert tenant.jobs() == []
    assert tenant.migrations()["attempt"]["phase"] == "BackingUp"
    assert tenant.image() == OLD

    run = scene.run_one_off(one_off)
    assert run.returncode == 0, run.stderr
    assert run.report is not None
    backup_id = run.report["backup"]["backupId"]
    assert (scene.backups.volumes / ns / "backups" / f"{backup_id}.archive").is_file()
    (entry,) = scene.backup_status(one_off)["history"]
    assert (entry["succeeded"], entry["backupId"]) == (True, backup_id)
    # The source's verification applies: the archive restores, with its 300 rows.
    assert scene.backups.reconciler.wait_for_verifications(timeout=120)
    scene.backups.reconciler.reconcile(ns, one_off)
    assert scene.backup_status(one_off)["lastVerifiedBackup"]["backupId"] == backup_id

    # -- only then the migration Job, and after it the roll -----------------------------
    tenant.until(lambda: tenant.image() == NEW, "the migration after the backup, then the roll")
    assert len(tenant.jobs()) == 1  # the new image's migration (the first one's Job went)
    assert tenant.condition("MigrationsSucceeded")["status"] == "True"
    assert tenant.migrations()["attempt"]["backups"][0].startswith(f"{one_off}/")

    # -- a one-off that fails: no migration, the old image serves on ---------------------
    scene.backups.kube.patch_merge(
        SECRET,
        "cleo-database",
        {"data": {"PGPASSWORD": base64.b64encode(WRONG_PASSWORD.encode()).decode()}},
        namespace=ns,
    )
    scene.change(NEXT, backupFirst=True)
    failing = scene.one_off()
    run = scene.run_one_off(failing)
    assert run.returncode == 1, run.stderr
    assert run.report is not None
    assert run.report["reason"] == "DatabaseUnavailable"
    tenant.until(
        lambda: tenant.condition("MigrationsSucceeded").get("reason") == "BackupFailed",
        "the failed backup on the tenant's status",
    )
    failed = tenant.condition("MigrationsSucceeded")
    assert failed["status"] == "False"
    assert failing in failed["message"]
    assert WRONG_PASSWORD not in str(tenant.status())
    for _ in range(2):
        tenant.reconcile()
    assert tenant.jobs() == []  # no migration for NEXT
    assert tenant.image() == NEW

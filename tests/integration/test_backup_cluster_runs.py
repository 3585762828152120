"""Backup runs end to end on the local control plane and a real PostgreSQL server.

The Jobs are made from the CronJob's template at once, as `kubectl create job
--from=cronjob/...` makes them (the template's labels and spec, the CronJob as their
controller), which is all the reconciler reads of a Job: waiting for the CronJob
controller's minute (up to 60 s a run) would prove nothing more of the code under test;
e2e/test_control_plane.py proves that the controller runs CronJobs on this control plane.
Each Job's container command then runs here as a local process with exactly what its pod
would get (`backup_cluster_support.run_job_pod`): the database login from the tenant's
Secret, the keyring Secret as a folder, the volume as a folder, and the pod's own
ServiceAccount token, so the status it writes proves the rendered Role is enough. The
tenant's database and its Secret are made by the real `TenantDatabases`, and the
reconciler verifies with the site admin's login from its Secret, as in the operator.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from cleo_operator.api.objects import KubeObject
from cleo_operator.data.tenant_db import tenant_database_name
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import BACKUP, CRON_JOB, JOB
from cleo_operator.reconcile.backup import (
    RECORDED_ANNOTATION,
    BackupReconciler,
)
from cleo_operator.reconcile.database import TenantDatabases
from cleo_operator.render.backup import BACKUP_LABEL
from e2e.cluster import LocalCluster
from tests.harness.cluster_fixtures import wait_for
from tests.harness.marks import RECONCILERS_ALONE
from tests.harness.postgres import PostgresServer
from tests.harness.specs import backup_manifest
from tests.integration.backup_cluster_support import (
    PV,
    BackupScene,
    local_backup_reconciler,
    seed_backup_tenant,
)
from tests.integration.tenant_database_support import (
    SECRET,
    Tenant,
    databases_fixture,
    drop_tenant_objects,
    namespace,
    reconcile,
    unique,
)
from tests.security.tenant_writable_support import ATTACKER, attacker_client, bind_tenant_admin

pytestmark = RECONCILERS_ALONE

ADMIN_SECRET = "pg-admin-main"
WRONG_PASSWORD = "wrong-password-9f1c2b7e5d4a3c2b1a0f9e8d7c6b5a4f"


databases = databases_fixture("bk-operator", admin=ADMIN_SECRET)


class Setup(BackupScene):
    """A tenant with a real database, its Secrets and volume, and a backup reconciler."""

    def status(self, name: str) -> dict[str, Any]:
        obj = self.kube.get(BACKUP, name, namespace=self.namespace)
        assert obj is not None
        status: dict[str, Any] = obj.get("status") or {}
        return status

    def condition(self, name: str, type_: str) -> tuple[str, str, str]:
        for c in self.status(name).get("conditions") or []:
            if c["type"] == type_:
                return c["status"], c["reason"], c["message"]
        raise AssertionError(f"no {type_} condition: {self.status(name)}")

    def jobs(self, name: str) -> list[KubeObject]:
        return self.kube.list(
            JOB, namespace=self.namespace, label_selector=f"{BACKUP_LABEL}={name}"
        )

    def trigger_job(self, name: str, *, suffix: str) -> KubeObject:
        """A Job made now from the CronJob's template, as `kubectl create job --from=cronjob`
        makes it: the template's labels and spec, and the CronJob as its controller."""
        cron = self.kube.get(CRON_JOB, f"cleo-backup-{name}", namespace=self.namespace)
        assert cron is not None
        template = cron["spec"]["jobTemplate"]
        job: KubeObject = self.kube.create(
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {
                    "name": f"cleo-backup-{name}-{suffix}",
                    "namespace": self.namespace,
                    "labels": dict(template["metadata"].get("labels") or {}),
                    "annotations": {"cronjob.kubernetes.io/instantiate": "manual"},
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "CronJob",
                            "name": cron["metadata"]["name"],
                            "uid": cron["metadata"]["uid"],
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": template["spec"],
            }
        )
        return job

    def wait_until_no_job_runs(self, name: str) -> None:
        def idle() -> bool:
            return all(
                any(
                    c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                    for c in (j.get("status") or {}).get("conditions") or []
                )
                for j in self.jobs(name)
            )

        wait_for(idle, timeout=60, what="the backup's Jobs to finish")

    def run_one_off(self, name: str) -> str:
        """Run the one-off Job of CleoBackup `name` here; the id of the backup it made."""
        # cleo-run-<name> for a one-off made with spec.from, else cleo-backup-<name>.
        job = self.kube.get(JOB, f"cleo-run-{name}", namespace=self.namespace) or self.kube.get(
            JOB, f"cleo-backup-{name}", namespace=self.namespace
        )
        assert job is not None
        run = self.run(job)
        assert run.returncode == 0, run.stderr
        assert run.report is not None
        backup_id: str = run.report["backup"]["backupId"]
        return backup_id


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
        kube, unique("bk"), {"paused": True, "database": {"enabled": True, "site": "main"}}
    )
    volumes = tmp_path / "volumes"
    reconciler = local_backup_reconciler(kube, databases, volumes=volumes)
    try:
        with namespace(kube, f"cleo-{tenant.name}") as ns:
            seed_backup_tenant(kube, databases, tenant, ns)
            yield Setup(
                kube=kube,
                cluster=cluster,
                databases=databases,
                tenant=tenant,
                namespace=ns,
                volumes=volumes,
                work=tmp_path / "runs",
                reconciler=reconciler,
            )
    finally:
        reconciler.close()
        kube.delete(PV, f"cleo-{tenant.name}-backups")
        tenant.delete()
        drop_tenant_objects(postgres_server, tenant.name)


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scratch_databases(server: PostgresServer) -> list[str]:
    rows = server.execute("SELECT datname FROM pg_database WHERE datname LIKE 'cleo_verify_%'")
    return [str(r[0]) for r in rows]


def test_a_failed_run_is_recorded_the_next_one_succeeds_and_is_verified(
    setup: Setup, postgres_server: PostgresServer
) -> None:
    tenant, ns = setup.tenant.name, setup.namespace
    failures_before = counter(
        "cleo_operator_backup_failures_total", tenant=tenant, reason="DatabaseUnavailable"
    )
    successes_before = counter("cleo_operator_backups_total", tenant=tenant)
    setup.backup(
        "minutely",
        {
            "schedule": "* * * * *",
            "destination": {"type": "pvc", "pvc": {"claimName": "backups", "path": "cleo"}},
            "retention": {"keepLast": 3},
            "verification": {"enabled": True},
        },
    )
    first = setup.reconciler.reconcile(ns, "minutely")
    assert first.phase == "Scheduled"

    # -- a run with a wrong password fails, and says so --------------------------------
    setup.kube.patch_merge(
        SECRET,
        "cleo-database",
        {"data": {"PGPASSWORD": base64.b64encode(WRONG_PASSWORD.encode()).decode()}},
        namespace=ns,
    )
    job1 = setup.trigger_job("minutely", suffix="first")
    failed = setup.run(job1)
    assert failed.returncode == 1, failed.stderr
    assert failed.report is not None
    assert (failed.report["outcome"], failed.report["reason"]) == ("Failed", "DatabaseUnavailable")
    assert failed.env["PGPASSWORD"] == WRONG_PASSWORD  # it really ran with the Secret's login
    assert WRONG_PASSWORD not in failed.stderr + failed.stdout + str(failed.report)
    status = setup.status("minutely")
    (run,) = status["history"]
    assert (run["job"], run["succeeded"], run["reason"]) == (
        job1["metadata"]["name"],
        False,
        "DatabaseUnavailable",
    )
    assert "lastSuccessfulBackup" not in status
    assert WRONG_PASSWORD not in str(status)

    setup.reconciler.reconcile(ns, "minutely")
    assert setup.condition("minutely", "LastBackupSucceeded")[:2] == (
        "False",
        "DatabaseUnavailable",
    )
    assert setup.condition("minutely", "Ready")[:2] == ("False", "LastBackupFailed")
    assert (
        counter("cleo_operator_backup_failures_total", tenant=tenant, reason="DatabaseUnavailable")
        == failures_before + 1
    )

    # -- the tenant's Secret heals (a hand-edited password is a rotation) ----------------
    healed = reconcile(setup.databases, setup.tenant, ns)
    assert healed.ready, healed.condition

    # -- the next run succeeds ----------------------------------------------------------
    job2 = setup.trigger_job("minutely", suffix="next")
    succeeded = setup.run(job2)
    assert succeeded.returncode == 0, succeeded.stderr
    assert succeeded.report is not None
    assert succeeded.report["outcome"] == "Succeeded"
    backup_id = succeeded.report["backup"]["backupId"]
    folder = setup.volumes / ns / "backups" / "cleo"
    assert (folder / f"{backup_id}.archive").is_file()
    assert (folder / f"{backup_id}.manifest.json").is_file()

    status = setup.status("minutely")
    assert [(r["job"], r["succeeded"]) for r in status["history"]] == [
        (job2["metadata"]["name"], True),
        (job1["metadata"]["name"], False),
    ]
    assert status["lastSuccessfulBackup"]["backupId"] == backup_id
    assert status["lastSuccessfulBackup"]["sequence"] == 1
    assert status["lastBackup"]["backupId"] == backup_id
    assert status["successfulBackups"] == 1

    # -- the operator verifies it with the site admin's login ----------------------------
    setup.kube.patch_merge(BACKUP, "minutely", {"spec": {"suspend": True}}, namespace=ns)
    started = setup.reconciler.reconcile(ns, "minutely")
    assert started.verification_started == backup_id
    assert setup.condition("minutely", "Verified")[1] == "Verifying"
    assert setup.reconciler.wait_for_verifications(timeout=180)
    setup.wait_until_no_job_runs("minutely")
    done = setup.reconciler.reconcile(ns, "minutely")
    status = setup.status("minutely")
    assert status["lastVerification"]["backupId"] == backup_id
    assert status["lastVerification"]["passed"] is True
    assert status["lastVerifiedBackup"]["backupId"] == backup_id
    verified = setup.condition("minutely", "Verified")
    assert verified[:2] == ("True", "Verified")
    assert "300 rows" in verified[2]
    assert setup.condition("minutely", "LastBackupSucceeded")[0] == "True"
    assert setup.condition("minutely", "BackupFresh")[:2] == ("True", "Fresh")
    ready = setup.condition("minutely", "Ready")
    assert ready[:2] == ("True", "BackupAvailable")
    assert done.phase == "Suspended"
    assert done.ready
    assert scratch_databases(postgres_server) == []
    assert counter("cleo_operator_backups_total", tenant=tenant) == successes_before + 1
    cron = setup.kube.get(CRON_JOB, "cleo-backup-minutely", namespace=ns)
    assert cron is not None
    assert cron["spec"]["suspend"] is True

    # Every Job of the backup (KWOK completes their pods without running them; the CronJob
    # controller may have added one at a minute) is marked as seen; those that left no
    # report add nothing to the history.
    setup.reconciler.reconcile(ns, "minutely")
    for job in setup.jobs("minutely"):
        assert job["metadata"]["annotations"][RECORDED_ANNOTATION] == "true"
    assert len(setup.status("minutely")["history"]) == 2

    # Nothing new: nothing written.
    again = setup.reconciler.reconcile(ns, "minutely")
    assert (again.applied, again.status_written, again.runs_recorded) == ([], False, 0)
    assert again.verification_started is None


def test_a_one_off_backup_runs_once_and_restores(
    setup: Setup, postgres_server: PostgresServer
) -> None:
    ns = setup.namespace
    setup.backup(
        "before-upgrade",
        {"destination": {"type": "pvc", "pvc": {"claimName": "backups"}}},
    )
    first = setup.reconciler.reconcile(ns, "before-upgrade")
    assert [ref["kind"] for ref in first.applied][-1] == "Job"
    backup_id = setup.run_one_off("before-upgrade")

    setup.wait_until_no_job_runs("before-upgrade")
    done = setup.reconciler.reconcile(ns, "before-upgrade")
    assert done.phase == "Succeeded"
    assert done.ready
    assert setup.condition("before-upgrade", "BackupFresh")[:2] == ("True", "OneOff")
    assert setup.status("before-upgrade")["lastSuccessfulBackup"]["backupId"] == backup_id
    assert "cronJobName" not in setup.status("before-upgrade")

    # The Job is made once: a spec change does not touch it (its template is immutable).
    setup.kube.patch_merge(
        BACKUP,
        "before-upgrade",
        {"spec": {"resources": {"requests": {"cpu": "50m"}}}},
        namespace=ns,
    )
    changed = setup.reconciler.reconcile(ns, "before-upgrade")
    assert "Job" not in [ref["kind"] for ref in changed.applied]
    assert changed.ready

    # And the archive restores with the CLI, into a new database.
    target = f"{tenant_database_name(setup.tenant.name)}_restored"
    postgres_server.execute(f'CREATE DATABASE "{target}"')
    try:
        restored = setup.restore(
            postgres_server, folder="backups", backup_id=backup_id, target=target
        )
        assert restored.returncode == 0, restored.stderr
        rows = postgres_server.execute("SELECT count(*) FROM notes", dbname=target)
        assert rows[0][0] == 300
    finally:
        postgres_server.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')


def test_a_one_off_from_a_backup_runs_there_is_verified_and_goes_after_its_time(
    setup: Setup,
) -> None:
    ns = setup.namespace
    setup.backup(
        "nightly",
        {
            # Not suspended (a suspended source runs no one-off), and not due in this test.
            "schedule": "@yearly",
            "destination": {"type": "pvc", "pvc": {"claimName": "backups", "path": "cleo"}},
            "retention": {"keepLast": 5},
            "verification": {"enabled": True},
        },
    )
    setup.reconciler.reconcile(ns, "nightly")
    # A tenant admin (a spec.admins user, with its own token) asks: the tenant and the
    # CleoBackup to run now, all the admission policy lets it write (bound as the operator
    # binds spec.admins while it sees that policy in place).
    bind_tenant_admin(
        setup.kube, tenant=setup.tenant.name, namespace=ns, user=ATTACKER, backup_requests=True
    )
    attacker_client(setup.cluster, setup.kube).create(
        backup_manifest("now-1", ns, {"tenant": setup.tenant.name, "from": "nightly"})
    )
    setup.reconciler.reconcile(ns, "now-1")
    # The runner runs as the source's ServiceAccount (the identity a cloud trusts), checks
    # the source again with that token (the one-off's Role may read both, and write the
    # one-off's status only) and writes into the source's folder.
    job = setup.kube.get(JOB, "cleo-run-now-1", namespace=ns)
    assert job is not None
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "cleo-backup-nightly"
    backup_id = setup.run_one_off("now-1")
    assert (setup.volumes / ns / "backups" / "cleo" / f"{backup_id}.archive").is_file()
    (entry,) = setup.status("now-1")["history"]
    assert (entry["job"], entry["succeeded"], entry["backupId"]) == (
        "cleo-run-now-1",
        True,
        backup_id,
    )

    # The source's verification applies.
    setup.wait_until_no_job_runs("now-1")
    started = setup.reconciler.reconcile(ns, "now-1")
    assert started.verification_started == backup_id
    assert setup.reconciler.wait_for_verifications(timeout=180)
    done = setup.reconciler.reconcile(ns, "now-1")
    assert (done.phase, done.ready) == ("Succeeded", True)
    assert setup.condition("now-1", "Verified")[:2] == ("True", "Verified")
    assert setup.status("now-1")["lastVerifiedBackup"]["backupId"] == backup_id
    # Nothing new: nothing written, and it asks to be looked at again when its time is up.
    again = setup.reconciler.reconcile(ns, "now-1")
    assert (again.applied, again.status_written, again.runs_recorded) == ([], False, 0)
    assert again.requeue_after is not None
    assert 0 < again.requeue_after <= setup.reconciler.settings.one_off_ttl_seconds

    # A day after its run, the one-off goes; its archive and its source stay.
    later = BackupReconciler(
        setup.kube,
        settings=setup.reconciler.settings,
        now=lambda: datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1, hours=1),
    )
    try:
        gone = later.reconcile(ns, "now-1")
    finally:
        later.close()
    assert [ref["kind"] for ref in gone.deleted] == ["CleoBackup"]
    assert setup.kube.get(BACKUP, "now-1", namespace=ns) is None
    assert setup.kube.get(BACKUP, "nightly", namespace=ns) is not None
    assert (setup.volumes / ns / "backups" / "cleo" / f"{backup_id}.archive").is_file()

"""The migrations part's decisions, through the real tenant reconciler on FakeKube.

FakeKube fakes the API server only (tests/harness/fake_kube.py); it has no controllers,
so where the Job controller, the kubelet or the deployment controller would act, the test
does their part by hand and says so. The control-plane tests
(tests/integration/test_migrations_cluster.py) are the proof against a real API server.
"""

from __future__ import annotations

from typing import Any

import pytest

from cleo_operator.api.tenant import parse_tenant_spec
from cleo_operator.kube.kinds import BACKUP, DEPLOYMENT, HPA, JOB, POD, SECRET, TENANT
from cleo_operator.reconcile.migrations import (
    RETRY_ANNOTATION,
    MigrationsPart,
    retry_request_pending,
)
from cleo_operator.reconcile.tenant import TenantReconciler
from cleo_operator.render.meta import tenant_owner
from cleo_operator.render.migrations import render_migration_job
from tests.harness.fake_kube import FakeKube
from tests.unit.reconcile.test_tenant_decisions import (
    NOW,
    add_tenant,
    conditions,
    run_deployment_controller,
    status_of,
)

NS = "cleo-acme"
OLD = "registry.example.com/cleoai:1.0.0"
NEW = "registry.example.com/cleoai:2.0.0"
NEWER = "registry.example.com/cleoai:3.0.0"


def tenant_spec(image: str = OLD, **migrations: Any) -> dict[str, Any]:
    return {
        "workload": {
            "image": image,
            "replicas": 2,
            "migrations": {"command": ["alembic", "upgrade", "head"], **migrations},
        },
        "autoscaling": {"enabled": False},
        "database": {"enabled": True},
    }


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube(now=lambda: NOW)


@pytest.fixture
def tenants(kube: FakeKube) -> TenantReconciler:
    return TenantReconciler(
        kube, parts=[MigrationsPart(kube)], operator_namespace="cleo-system", now=lambda: NOW
    )


def start(kube: FakeKube, tenants: TenantReconciler, spec: dict[str, Any]) -> None:
    add_tenant(kube, "acme", spec)
    tenants.reconcile("acme")  # the namespace
    # The database part's Secret (that part is not under test here).
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "cleo-database", "namespace": NS},
            "data": {},
        }
    )


def jobs(kube: FakeKube) -> list[dict[str, Any]]:
    return kube.objects(JOB, namespace=NS)


def image_of(kube: FakeKube) -> str | None:
    dep = kube.get(DEPLOYMENT, "cleoai", namespace=NS)
    if dep is None:
        return None
    return str(dep["spec"]["template"]["spec"]["containers"][0]["image"])


def finish(kube: FakeKube, job: dict[str, Any], *, ok: bool, message: str) -> None:
    """What the Job controller and the kubelet do (the fake has neither): a pod of the Job
    that ended, and the Job's Complete or Failed condition."""
    labels = job["spec"]["template"]["metadata"]["labels"]
    pod_name = f"{job['metadata']['name']}-{job['metadata']['uid'][:5]}"
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "namespace": NS,
                "labels": labels,
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": job["metadata"]["name"],
                        "uid": job["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": {"containers": [{"name": "migrate", "image": "x"}]},
        }
    )
    kube.patch_merge(
        POD,
        pod_name,
        {
            "status": {
                "phase": "Succeeded" if ok else "Failed",
                "startTime": "2026-01-01T12:00:00Z",
                "containerStatuses": [
                    {
                        "name": "migrate",
                        "state": {"terminated": {"exitCode": 0 if ok else 1, "message": message}},
                    }
                ],
            }
        },
        namespace=NS,
        subresource="status",
    )
    condition = (
        {"type": "Complete", "status": "True"}
        if ok
        else {
            "type": "Failed",
            "status": "True",
            "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit",
        }
    )
    kube.patch_merge(
        JOB,
        job["metadata"]["name"],
        {"status": {"conditions": [condition]}},
        namespace=NS,
        subresource="status",
    )


def set_spec(kube: FakeKube, spec: dict[str, Any]) -> None:
    kube.patch_merge(TENANT, "acme", {"spec": spec})


def migrated(kube: FakeKube, tenants: TenantReconciler, spec: dict[str, Any]) -> None:
    """A tenant whose first migration succeeded and whose pods serve."""
    start(kube, tenants, spec)
    tenants.reconcile("acme")
    (job,) = jobs(kube)
    finish(kube, job, ok=True, message="revision=base")
    tenants.reconcile("acme")
    run_deployment_controller(kube, NS)
    tenants.reconcile("acme")


def running(kube: FakeKube, tenants: TenantReconciler, image: str = NEW) -> dict[str, Any]:
    """A migrated tenant whose spec moved to `image`: the Job of its migration."""
    migrated(kube, tenants, tenant_spec())
    set_spec(kube, tenant_spec(image))
    tenants.reconcile("acme")
    (job,) = jobs(kube)
    return job


def test_no_autoscaler_before_the_first_migration(
    kube: FakeKube, tenants: TenantReconciler
) -> None:
    spec = tenant_spec()
    spec["autoscaling"] = {"enabled": True, "minReplicas": 1, "maxReplicas": 3}
    start(kube, tenants, spec)
    tenants.reconcile("acme")
    (job,) = jobs(kube)
    # An HPA without its Deployment could only say it cannot find its target.
    assert kube.get(HPA, "cleoai", namespace=NS) is None
    cond = conditions(kube, "acme")
    assert (cond["Autoscaling"]["status"], cond["Autoscaling"]["reason"]) == (
        "Unknown",
        "WaitingForMigrations",
    )

    finish(kube, job, ok=True, message="revision=1\n")
    tenants.reconcile("acme")
    assert image_of(kube) == OLD
    assert kube.get(HPA, "cleoai", namespace=NS) is not None
    assert conditions(kube, "acme")["Autoscaling"]["reason"] != "WaitingForMigrations"


def test_a_new_tenant_gets_no_deployment_before_its_first_migration(
    kube: FakeKube, tenants: TenantReconciler
) -> None:
    start(kube, tenants, tenant_spec())
    result = tenants.reconcile("acme")
    (job,) = jobs(kube)
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == OLD
    assert image_of(kube) is None
    # Its status is written at once (the Job's uid must be on it), new tenant or not.
    assert result.status_written
    migrations = status_of(kube, "acme")["migrations"]
    assert migrations["attempt"]["jobUid"] == job["metadata"]["uid"]
    cond = conditions(kube, "acme")
    assert cond["WorkloadAvailable"]["reason"] == "WaitingForMigrations"
    assert cond["Ready"]["status"] == "False"
    assert cond["MigrationsSucceeded"]["status"] == "Unknown"

    finish(kube, job, ok=True, message="INFO done\nrevision=1a2b3c\n")
    tenants.reconcile("acme")
    assert image_of(kube) == OLD
    migrations = status_of(kube, "acme")["migrations"]
    assert migrations["revision"] == "1a2b3c"
    assert migrations["image"] == OLD
    assert conditions(kube, "acme")["MigrationsSucceeded"]["status"] == "True"
    # The succeeded Job goes once its success is on status.
    tenants.reconcile("acme")
    assert jobs(kube) == []


def test_a_new_image_rolls_only_after_its_migration_succeeded(
    kube: FakeKube, tenants: TenantReconciler
) -> None:
    job = running(kube, tenants)
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == NEW
    assert image_of(kube) == OLD
    finish(kube, job, ok=True, message="revision=two")
    tenants.reconcile("acme")
    assert image_of(kube) == NEW
    assert status_of(kube, "acme")["migrations"]["revision"] == "two"


def test_a_failed_migration_keeps_the_old_pods_and_says_why(
    kube: FakeKube, tenants: TenantReconciler
) -> None:
    job = running(kube, tenants)
    finish(
        kube,
        job,
        ok=False,
        message="connecting as postgresql://acme:pa55word@db/acme\nERROR: column x exists\n",
    )
    tenants.reconcile("acme")
    assert image_of(kube) == OLD
    cond = conditions(kube, "acme")
    failed = cond["MigrationsSucceeded"]
    assert failed["status"] == "False"
    assert failed["reason"] == "BackoffLimitExceeded"
    assert "column x exists" in failed["message"]
    assert "pa55word" not in str(status_of(kube, "acme"))
    assert f"keeps image {OLD}" in failed["message"]
    # The old pods serve: Ready stays True (see reconcile.migrations on the conventions).
    assert cond["Ready"]["status"] == "True"
    assert status_of(kube, "acme")["phase"] == "Degraded"  # but not the spec's image
    # Not retried by itself: the failed Job stays for inspection, no new one.
    tenants.reconcile("acme")
    assert [j["metadata"]["uid"] for j in jobs(kube)] == [job["metadata"]["uid"]]

    # A retry on request: the failed Job goes first, then a new one runs.
    kube.patch_merge(TENANT, "acme", {"metadata": {"annotations": {RETRY_ANNOTATION: "1"}}})
    tenants.reconcile("acme")
    assert jobs(kube) == []  # the fake has no garbage collector: gone at once
    tenants.reconcile("acme")
    (again,) = jobs(kube)
    assert again["metadata"]["uid"] != job["metadata"]["uid"]
    assert status_of(kube, "acme")["migrations"]["retryRequest"] == "1"
    finish(kube, again, ok=True, message="revision=three")
    tenants.reconcile("acme")
    assert image_of(kube) == NEW


def test_a_newer_spec_waits_for_the_migration_in_flight(
    kube: FakeKube, tenants: TenantReconciler
) -> None:
    in_flight = running(kube, tenants)
    set_spec(kube, tenant_spec(NEWER))
    tenants.reconcile("acme")
    assert [j["metadata"]["uid"] for j in jobs(kube)] == [in_flight["metadata"]["uid"]]
    assert "one migration at a time" in conditions(kube, "acme")["MigrationsSucceeded"]["message"]
    finish(kube, in_flight, ok=True, message="revision=two")
    tenants.reconcile("acme")
    # What ran is migrated: the pods may run it while the next migration waits its turn.
    assert image_of(kube) == NEW
    tenants.reconcile("acme")  # the finished Job goes
    tenants.reconcile("acme")
    (newer,) = jobs(kube)
    assert newer["spec"]["template"]["spec"]["containers"][0]["image"] == NEWER
    assert image_of(kube) == NEW


@pytest.mark.security
def test_a_job_planted_at_the_next_name_is_never_taken_for_the_migration(
    kube: FakeKube, tenants: TenantReconciler
) -> None:
    migrated(kube, tenants, tenant_spec())
    set_spec(kube, tenant_spec(NEW))
    tenant = kube.get(TENANT, "acme")
    assert tenant is not None
    body = render_migration_job(
        tenant="acme",
        namespace=NS,
        owner=tenant_owner(name="acme", uid=tenant["metadata"]["uid"]),
        spec=parse_tenant_spec(tenant_spec(NEW)),
        database_secret="cleo-database",
        nonce="0" * 32,  # a guess: the attempt's is random
    )
    planted = kube.create(body)  # everything a copy of the operator's, but made by someone else
    finish(kube, planted, ok=True, message="revision=forged")
    tenants.reconcile("acme")
    assert image_of(kube) == OLD
    assert kube.get(JOB, planted["metadata"]["name"], namespace=NS) is None
    tenants.reconcile("acme")
    (ours,) = jobs(kube)
    assert ours["metadata"]["uid"] != planted["metadata"]["uid"]
    assert status_of(kube, "acme")["migrations"]["revision"] == "base"
    assert image_of(kube) == OLD


def test_a_job_deleted_mid_run_fails_the_attempt_and_never_rolls(
    kube: FakeKube, tenants: TenantReconciler
) -> None:
    job = running(kube, tenants)
    kube.delete(JOB, job["metadata"]["name"], namespace=NS)
    tenants.reconcile("acme")
    assert image_of(kube) == OLD
    assert conditions(kube, "acme")["MigrationsSucceeded"]["reason"] == "JobLost"
    tenants.reconcile("acme")
    assert jobs(kube) == []


def test_a_steady_tenant_writes_nothing(kube: FakeKube, tenants: TenantReconciler) -> None:
    migrated(kube, tenants, tenant_spec())
    tenants.reconcile("acme")  # the finished Job goes
    kube.writes.clear()
    tenants.reconcile("acme")
    assert kube.writes == []


def test_backup_first_without_a_scheduled_backup_does_not_migrate(
    kube: FakeKube, tenants: TenantReconciler
) -> None:
    migrated(kube, tenants, tenant_spec())
    set_spec(kube, tenant_spec(NEW, backupFirst=True))
    tenants.reconcile("acme")
    # The first migration's Job went; none was made for the new image.
    assert jobs(kube) == []
    failed = conditions(kube, "acme")["MigrationsSucceeded"]
    assert failed["reason"] == "NoBackupSource"
    assert "no scheduled CleoBackup" in failed["message"]
    assert image_of(kube) == OLD


def backing_up(kube: FakeKube, tenants: TenantReconciler, **source: Any) -> dict[str, Any]:
    """A migrated tenant with a scheduled CleoBackup, moved to NEW with backupFirst: the
    one-off the migration took."""
    migrated(kube, tenants, tenant_spec())
    tenants.reconcile("acme")  # the first Job goes
    kube.create(
        {
            "apiVersion": "cleoai.io/v1alpha1",
            "kind": "CleoBackup",
            "metadata": {"name": "nightly", "namespace": NS},
            "spec": {
                "tenant": "acme",
                "schedule": "0 3 * * *",
                "destination": {"type": "pvc", "pvc": {"claimName": "backups"}},
                **source,
            },
        }
    )
    set_spec(kube, tenant_spec(NEW, backupFirst=True))
    tenants.reconcile("acme")
    one_offs = [b for b in kube.objects(BACKUP, namespace=NS) if b["spec"].get("from")]
    assert len(one_offs) <= 1
    return one_offs[0] if one_offs else {}


def report(kube: FakeKube, one_off: dict[str, Any], *, succeeded: bool) -> None:
    """What the backup runner reports when its run ends (not under test here)."""
    kube.patch_merge(
        BACKUP,
        one_off["metadata"]["name"],
        {"status": {"lastBackup": {"time": "2026-01-01T12:00:00Z", "succeeded": succeeded}}},
        namespace=NS,
        subresource="status",
    )


def test_backup_first_takes_a_platform_one_off_and_waits_for_it(
    kube: FakeKube, tenants: TenantReconciler
) -> None:
    one_off = backing_up(kube, tenants)
    assert one_off["spec"] == {"tenant": "acme", "from": "nightly"}
    assert one_off["metadata"]["labels"]["cleoai.io/requested-by"] == "platform"
    assert jobs(kube) == []
    assert conditions(kube, "acme")["MigrationsSucceeded"]["reason"] == "BackingUp"
    tenants.reconcile("acme")
    assert jobs(kube) == []
    report(kube, one_off, succeeded=True)
    tenants.reconcile("acme")
    (job,) = jobs(kube)
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == NEW
    assert image_of(kube) == OLD


def test_a_failed_backup_first_means_no_migration(
    kube: FakeKube, tenants: TenantReconciler
) -> None:
    one_off = backing_up(kube, tenants)
    report(kube, one_off, succeeded=False)
    tenants.reconcile("acme")
    tenants.reconcile("acme")
    assert jobs(kube) == []
    failed = conditions(kube, "acme")["MigrationsSucceeded"]
    assert failed["reason"] == "BackupFailed"
    assert one_off["metadata"]["name"] in failed["message"]
    assert image_of(kube) == OLD


def test_a_suspended_backup_gives_no_one_off_and_no_migration(
    kube: FakeKube, tenants: TenantReconciler
) -> None:
    assert backing_up(kube, tenants, suspend=True) == {}
    assert jobs(kube) == []
    failed = conditions(kube, "acme")["MigrationsSucceeded"]
    assert failed["reason"] == "NoBackupSource"
    assert "nightly: SourceSuspended" in failed["message"]


def test_switching_migrations_off_removes_the_jobs_and_rolls(
    kube: FakeKube, tenants: TenantReconciler
) -> None:
    running(kube, tenants)
    spec = tenant_spec(NEW)
    spec["workload"]["migrations"] = None
    set_spec(kube, spec)
    tenants.reconcile("acme")
    assert jobs(kube) == []
    assert image_of(kube) == NEW
    assert "migrations" not in status_of(kube, "acme")
    assert "MigrationsSucceeded" not in conditions(kube, "acme")
    assert kube.get(SECRET, "cleo-database", namespace=NS) is not None


def test_a_new_retry_value_wakes_the_tenant_and_a_handled_one_does_not() -> None:
    status = {"retryRequest": "7"}
    assert retry_request_pending({RETRY_ANNOTATION: "8"}, status)
    assert not retry_request_pending({RETRY_ANNOTATION: "7"}, status)
    assert not retry_request_pending({}, status)
    assert retry_request_pending({RETRY_ANNOTATION: "1"}, None)
    # A status someone mangled reads as empty: the request is pending, never lost.
    assert retry_request_pending({RETRY_ANNOTATION: "7"}, {"retryRequest": ["7"]})

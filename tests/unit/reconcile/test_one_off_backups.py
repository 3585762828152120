"""A tenant's one-offs (spec.from) as the reconciler handles them: the names of their runner
objects, the owner of a Job it reuses, runner objects left by a DELETE that orphaned them,
expiry, what is reported once the source goes, and the final backup's count of the tenant's
backups. Against the in-memory API server (tests/harness/fake_kube.py); the control-plane
proof is tests/security/test_tenant_one_off_backups.py.
"""

from __future__ import annotations

import base64
import datetime
from typing import Any

import pytest

from cleo_operator.api.objects import KubeObject
from cleo_operator.api.tenant import parse_tenant_spec
from cleo_operator.kube.kinds import BACKUP, JOB, ROLE, SERVICE_ACCOUNT, TENANT
from cleo_operator.reconcile.backup import BackupReconciler, BackupSettings
from cleo_operator.reconcile.backup_orphans import stale_runner_objects
from cleo_operator.reconcile.final_backup import FinalBackup
from cleo_operator.render.backup import BackupPodSettings, backup_labels
from tests.harness.fake_kube import FakeKube
from tests.harness.specs import backup_manifest, tenant_manifest

pytestmark = pytest.mark.security

TENANT_NAME = "acme"
NS = "cleo-acme"
PVC = {"type": "pvc", "pvc": {"claimName": "backups"}}
NIGHTLY = {"tenant": TENANT_NAME, "schedule": "*/5 * * * *", "destination": PVC}
T0 = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=datetime.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime.datetime:
        return self.now


def scene(clock: Clock | None = None, **settings: Any) -> tuple[FakeKube, BackupReconciler]:
    """A tenant with what a runner needs, the platform's CleoBackup `nightly`, reconciled."""
    clock = clock or Clock()
    kube = FakeKube(now=clock, namespaces=("kube-system", NS))
    spec = {"namespace": NS, "database": {"enabled": True, "site": "main"}}
    kube.create(tenant_manifest(TENANT_NAME, spec))
    login = dict.fromkeys(("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGSSLMODE"))
    data = {k: base64.b64encode(b"x").decode() for k in login}
    for name, secret_data in (("cleo-database", data), ("cleo-keyring", {"keyring.json": "e30="})):
        kube.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": NS},
                "data": secret_data,
            }
        )
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "backups", "namespace": NS},
            "spec": {"accessModes": ["ReadWriteOnce"]},
        }
    )
    kube.create(backup_manifest("nightly", NS, NIGHTLY))
    reconciler = BackupReconciler(
        kube,
        settings=BackupSettings(
            pod=BackupPodSettings(
                image="registry.example/cleo:1", api_server_cidrs=("10.0.0.1/32",)
            ),
            **settings,
        ),
        now=clock,
    )
    reconciler.reconcile(NS, "nightly")
    return kube, reconciler


def ask(kube: FakeKube, name: str, **extra: Any) -> KubeObject:
    return kube.create(
        backup_manifest(name, NS, {"tenant": TENANT_NAME, "from": "nightly", **extra})
    )


def names(kube: FakeKube, kind: Any) -> set[str]:
    return {o["metadata"]["name"] for o in kube.objects(kind, namespace=NS)}


def finish(kube: FakeKube, job: str) -> None:
    """What the Job controller leaves of a run that succeeded: a complete Job."""
    kube.patch_merge(
        JOB,
        job,
        {"status": {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}},
        namespace=NS,
        subresource="status",
    )


def test_a_one_off_named_after_a_scheduled_run_never_takes_that_runs_job_name() -> None:
    kube, reconciler = scene()
    # The CronJob controller names nightly's runs cleo-backup-nightly-<unix minutes>.
    asked = "nightly-" + str(int(T0.timestamp()) // 60 + 5)
    ask(kube, asked)
    reconciler.reconcile(NS, asked)
    assert f"cleo-run-{asked}" in names(kube, JOB)
    assert f"cleo-backup-{asked}" not in names(kube, JOB) | names(kube, ROLE)
    # Its pods run as nightly's ServiceAccount; it gets none of its own.
    (job,) = [j for j in kube.objects(JOB, namespace=NS) if j["metadata"]["name"].endswith(asked)]
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "cleo-backup-nightly"
    assert names(kube, SERVICE_ACCOUNT) == {"cleo-backup-nightly"}


def test_a_job_of_that_name_owned_by_another_cleobackup_is_not_reused() -> None:
    kube, reconciler = scene()
    # A namesake was deleted with its dependents orphaned; then the tenant asks again.
    stale = kube.create(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": "cleo-run-now-1",
                "namespace": NS,
                "labels": backup_labels(name="now-1", tenant=TENANT_NAME),
                "ownerReferences": [
                    {
                        "apiVersion": "cleoai.io/v1alpha1",
                        "kind": "CleoBackup",
                        "name": "now-1",
                        "uid": "00000000-0000-4000-8000-000000000000",
                        "controller": True,
                    }
                ],
            },
            "spec": {"template": {"spec": {"containers": []}}},
        }
    )
    mine = ask(kube, "now-1")
    reconciler.settings = BackupSettings(
        pod=reconciler.settings.pod, orphan_sweep_seconds=10**9
    )  # not the sweep: the Job lookup itself
    reconciler._swept[NS] = T0
    result = reconciler.reconcile(NS, "now-1")
    assert ("Job", "cleo-run-now-1") in {(r["kind"], r["name"]) for r in result.deleted}
    reconciler.reconcile(NS, "now-1")
    job = kube.get(JOB, "cleo-run-now-1", namespace=NS)
    assert job is not None
    assert job["metadata"]["uid"] != stale["metadata"]["uid"]
    assert job["metadata"]["ownerReferences"][0]["uid"] == mine["metadata"]["uid"]


def test_runner_objects_a_delete_orphaned_are_swept_and_a_no_op_writes_nothing() -> None:
    clock = Clock()
    kube, reconciler = scene(clock, orphan_sweep_seconds=60)
    ask(kube, "now-1")
    reconciler.reconcile(NS, "now-1")
    assert "cleo-run-now-1" in names(kube, JOB)
    # DELETE with propagationPolicy Orphan: the garbage collector drops the owner references.
    for kind in (JOB, ROLE):
        kube.patch_merge(
            kind, "cleo-run-now-1", {"metadata": {"ownerReferences": None}}, namespace=NS
        )
    kube.delete(BACKUP, "now-1", namespace=NS)
    reconciler.reconcile(NS, "nightly")  # within the sweep's interval: not yet
    assert "cleo-run-now-1" in names(kube, JOB)
    clock.now += datetime.timedelta(minutes=2)
    result = reconciler.reconcile(NS, "nightly")
    assert {("Job", "cleo-run-now-1"), ("Role", "cleo-run-now-1")} <= {
        (r["kind"], r["name"]) for r in result.deleted
    }
    assert "cleo-run-now-1" not in names(kube, JOB) | names(kube, ROLE)
    # nightly's own objects stay, and a sweep that finds nothing writes nothing.
    assert "cleo-backup-nightly" in names(kube, ROLE)
    clock.now += datetime.timedelta(minutes=2)
    kube.writes.clear()
    reconciler.reconcile(NS, "nightly")
    assert kube.writes == []


def test_a_one_off_whose_pod_never_starts_still_goes_at_its_max_age() -> None:
    clock = Clock()
    kube, reconciler = scene(clock, one_off_max_age_seconds=3600)
    created = ask(kube, "stuck")
    reconciler.reconcile(NS, "stuck")
    assert "cleo-run-stuck" in names(kube, JOB)  # active: it never ends
    clock.now += datetime.timedelta(minutes=30)
    result = reconciler.reconcile(NS, "stuck")
    assert kube.get(BACKUP, "stuck", namespace=NS) is not None
    assert result.requeue_after is not None
    assert result.requeue_after <= 30 * 60
    clock.now += datetime.timedelta(minutes=31)
    deletes: list[Any] = []
    original = kube.delete

    def recording(*args: Any, **kwargs: Any) -> bool:
        deletes.append(kwargs.get("preconditions"))
        return original(*args, **kwargs)

    kube.delete = recording  # type: ignore[method-assign]
    reconciler.reconcile(NS, "stuck")
    assert kube.get(BACKUP, "stuck", namespace=NS) is None
    assert {"uid": created["metadata"]["uid"]}.items() <= deletes[0].items()
    assert "resourceVersion" in deletes[0]


def test_a_finished_one_off_keeps_its_status_when_its_source_goes() -> None:
    kube, reconciler = scene()
    ask(kube, "now-1")
    reconciler.reconcile(NS, "now-1")
    run = {
        "backupId": "20300101T120000Z-abc",
        "time": "2030-01-01T12:00:00Z",
        "succeeded": True,
        "durationSeconds": 3.0,
    }
    kube.patch_merge(
        BACKUP,
        "now-1",
        {
            "status": {
                "lastBackup": run,
                "lastSuccessfulBackup": run,
                "history": [
                    {
                        "job": "cleo-run-now-1",
                        "startTime": "2030-01-01T12:00:00Z",
                        "endTime": "2030-01-01T12:00:03Z",
                        "succeeded": True,
                        "backupId": run["backupId"],
                    }
                ],
            }
        },
        namespace=NS,
        subresource="status",
    )
    finish(kube, "cleo-run-now-1")
    reconciler.reconcile(NS, "now-1")
    before = kube.get(BACKUP, "now-1", namespace=NS)
    assert before is not None
    assert before["status"]["phase"] == "Succeeded"
    kube.delete(BACKUP, "nightly", namespace=NS)
    reconciler.reconcile(NS, "now-1")
    after = kube.get(BACKUP, "now-1", namespace=NS)
    assert after is not None
    assert after["status"]["phase"] == "Succeeded"
    ready = next(c for c in after["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] != "SourceNotFound", ready
    assert after["status"]["lastSuccessfulBackup"]["backupId"] == run["backupId"]


def test_a_tenants_one_off_never_holds_the_database_drop() -> None:
    kube = FakeKube(namespaces=("kube-system", NS))
    spec = {
        "namespace": NS,
        "database": {"enabled": True, "site": "main"},
        "deletionPolicy": "Delete",
    }
    body = tenant_manifest(TENANT_NAME, spec)
    body["metadata"]["finalizers"] = ["cleoai.io/finalizer"]
    kube.create(body)
    kube.delete(TENANT, TENANT_NAME)  # held by its finalizer: deletionTimestamp set
    # Only a one-off the tenant asked for, naming nothing: no backup of the platform's.
    kube.create(backup_manifest("mine", NS, {"tenant": TENANT_NAME, "from": "nope"}))
    assert FinalBackup(kube)(TENANT_NAME, parse_tenant_spec(spec)) is None
    assert kube.get(BACKUP, "cleo-final-backup", namespace=NS) is None
    # With a backup of the platform's, the final backup is made (and awaited).
    kube.create(backup_manifest("nightly", NS, NIGHTLY))
    waiting = FinalBackup(kube)(TENANT_NAME, parse_tenant_spec(spec))
    assert waiting is not None
    assert "cleo-final-backup" in waiting


def _runner(name: str, *owners: dict[str, Any], managed: bool = True) -> KubeObject:
    labels = backup_labels(name=name, tenant=TENANT_NAME)
    if not managed:
        labels.pop("app.kubernetes.io/managed-by")
    meta: dict[str, Any] = {"name": f"cleo-run-{name}", "labels": labels}
    if owners:
        meta["ownerReferences"] = list(owners)
    return {"metadata": meta}


def test_only_runner_objects_no_live_cleobackup_owns_are_stale() -> None:
    def backup_owner(uid: str) -> dict[str, Any]:
        return {"kind": "CleoBackup", "name": "x", "uid": uid}

    live = {"a": "uid-a", "b": "uid-b"}
    kept = [
        _runner("a", backup_owner("uid-a")),  # its live CleoBackup's
        _runner("gone", {"kind": "CronJob", "name": "cleo-backup-gone", "uid": "c"}),
        _runner("gone", managed=False),  # not the operator's: not ours to delete
    ]
    stale = [
        _runner("b", backup_owner("uid-old")),  # a namesake's
        _runner("gone", backup_owner("uid-gone")),  # its CleoBackup went
        _runner("a"),  # orphaned: no owner at all
    ]
    assert stale_runner_objects([*kept, *stale], live) == stale


def _ran(kube: FakeKube, name: str, *, verification: dict[str, Any] | None = None) -> None:
    """What a run of one-off `name` leaves in its status (and its Job, complete)."""
    run = {"backupId": f"20300101T120000Z-{name}", "time": "2030-01-01T12:00:00Z"}
    status: dict[str, Any] = {
        "lastBackup": {**run, "succeeded": True},
        "lastSuccessfulBackup": {**run, "succeeded": True},
        "history": [
            {
                "job": f"cleo-run-{name}",
                "startTime": "2030-01-01T12:00:00Z",
                "endTime": "2030-01-01T12:00:03Z",
                "succeeded": True,
                "backupId": run["backupId"],
            }
        ],
    }
    if verification is not None:
        status["lastVerification"] = verification
    kube.patch_merge(BACKUP, name, {"status": status}, namespace=NS, subresource="status")
    finish(kube, f"cleo-run-{name}")


def _condition(kube: FakeKube, name: str, type_: str) -> dict[str, Any]:
    obj = kube.get(BACKUP, name, namespace=NS)
    assert obj is not None
    return dict(next(c for c in obj["status"]["conditions"] if c["type"] == type_))


def test_a_one_offs_failed_verification_stays_reported_when_its_source_is_suspended() -> None:
    kube, reconciler = scene()
    ask(kube, "now-1")
    reconciler.reconcile(NS, "now-1")
    failed = {
        "backupId": "20300101T120000Z-now-1",
        "time": "2030-01-01T12:05:00Z",
        "passed": False,
        "reason": "VerificationFailed",
        "message": "table t differs",
    }
    _ran(kube, "now-1", verification=failed)
    kube.patch_merge(BACKUP, "nightly", {"spec": {"suspend": True}}, namespace=NS)
    reconciler.reconcile(NS, "now-1")
    assert _condition(kube, "now-1", "Verified")["status"] == "False"
    assert _condition(kube, "now-1", "Ready")["status"] == "False"


def test_a_finished_one_off_never_runs_again_without_its_job() -> None:
    kube, reconciler = scene()
    ask(kube, "now-1")
    reconciler.reconcile(NS, "now-1")
    _ran(kube, "now-1")
    kube.delete(JOB, "cleo-run-now-1", namespace=NS)
    reconciler.reconcile(NS, "now-1")
    assert "cleo-run-now-1" not in names(kube, JOB)


def test_a_one_off_of_a_suspended_source_waits_pending_not_invalid() -> None:
    kube, reconciler = scene()
    kube.patch_merge(BACKUP, "nightly", {"spec": {"suspend": True}}, namespace=NS)
    ask(kube, "now-1")
    reconciler.reconcile(NS, "now-1")
    obj = kube.get(BACKUP, "now-1", namespace=NS)
    assert obj is not None
    assert obj["status"]["phase"] == "Pending"
    assert _condition(kube, "now-1", "Ready")["reason"] == "SourceSuspended"
    assert "cleo-run-now-1" not in names(kube, JOB)

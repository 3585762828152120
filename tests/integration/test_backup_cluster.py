"""CleoBackups on a real API server: the CronJob and the runner's rights as the cluster has
them, a reconcile that writes nothing when nothing changed, every problem as a condition
that names it, and a Job whose pod died without reporting recorded all the same.

The runs themselves (with a real PostgreSQL, the CronJob controller's Jobs run as local
processes) are in test_backup_cluster_runs.py.
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from prometheus_client import REGISTRY

from cleo_operator.api.objects import KubeObject
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import (
    BACKUP,
    CRON_JOB,
    JOB,
    NAMESPACE,
    POD,
    ROLE,
    SECRET,
    SERVICE_ACCOUNT,
    TENANT,
)
from cleo_operator.reconcile.backup import (
    RECORDED_ANNOTATION,
    BackupReconciler,
    BackupReconcileResult,
    BackupSettings,
)
from cleo_operator.render.backup import VOLUME_MOUNT, BackupPodSettings
from e2e.cluster import LocalCluster
from tests.harness.cluster_fixtures import wait_for
from tests.harness.specs import backup_manifest, tenant_manifest
from tests.integration.backup_cluster_support import API_SERVER, RUNNER_IMAGE, write_keyring

# These tests run the reconcilers in processes of their own: no operator may race them.
pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("without_session_operator")]

ADMIN = "cleo-test-admin"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass
class Site:
    """A tenant with the Secrets and volume a backup needs (no database server here)."""

    kube: KubeClient
    tenant: str
    namespace: str

    def backup(self, name: str, spec: dict[str, Any]) -> KubeObject:
        return self.kube.create(
            backup_manifest(name, self.namespace, {"tenant": self.tenant, **spec})
        )

    def status(self, name: str) -> dict[str, Any]:
        obj = self.kube.get(BACKUP, name, namespace=self.namespace)
        assert obj is not None
        status: dict[str, Any] = obj.get("status") or {}
        return status

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        for condition in self.status(name).get("conditions") or []:
            if condition["type"] == type_:
                found: dict[str, Any] = condition
                return found
        raise AssertionError(f"no {type_} condition on {name}: {self.status(name)}")


def make_tenant(kube: KubeClient, tenant: str, *, database: bool = True) -> str:
    namespace = f"cleo-{tenant}"
    # Paused: an operator process running in this session must leave it alone.
    kube.create(
        tenant_manifest(tenant, {"paused": True, "database": {"enabled": database, "site": "main"}})
    )
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    return namespace


def provide_secrets(kube: KubeClient, namespace: str) -> None:
    values = {
        "PGHOST": "db.example",
        "PGPORT": "5432",
        "PGDATABASE": "cleo_x",
        "PGUSER": "cleo_x",
        "PGPASSWORD": "not-a-real-password-0123456789abcdef",
        "PGSSLMODE": "disable",
    }
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "cleo-database", "namespace": namespace},
            "data": {k: b64(v) for k, v in values.items()},
        }
    )
    write_keyring(kube, namespace)


def provide_claim(kube: KubeClient, namespace: str, name: str = "backups") -> None:
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
    )


def backup_reconciler(kube: KubeClient, **settings: Any) -> BackupReconciler:
    """A reconciler whose runners use the test image and reach the local API server."""
    pod = BackupPodSettings(image=RUNNER_IMAGE, api_server_cidrs=API_SERVER)
    return BackupReconciler(kube, settings=BackupSettings(pod=pod, **settings))


@pytest.fixture
def reconciler(kube: KubeClient, crds_installed: None) -> Iterator[BackupReconciler]:
    del crds_installed
    service = backup_reconciler(kube, retry_seconds=1.0)
    yield service
    service.close()


@pytest.fixture
def site(kube: KubeClient, crds_installed: None, request: pytest.FixtureRequest) -> Iterator[Site]:
    del crds_installed
    del request
    tenant = f"bk-{secrets.token_hex(4)}"
    namespace = make_tenant(kube, tenant)
    provide_secrets(kube, namespace)
    provide_claim(kube, namespace)
    yield Site(kube=kube, tenant=tenant, namespace=namespace)
    kube.delete(TENANT, tenant)
    kube.delete(NAMESPACE, namespace)


PVC_DESTINATION = {"type": "pvc", "pvc": {"claimName": "backups", "path": "cleo"}}


def writes_in(cluster: LocalCluster, namespace: str, offset: int) -> list[str]:
    return [
        f"{e['verb']} {e['objectRef'].get('resource')}/{e['objectRef'].get('name')}"
        for e in cluster.audit_events(user=ADMIN, offset=offset)
        if (e.get("objectRef") or {}).get("namespace") == namespace
    ]


# --- the CronJob and the runner's rights -----------------------------------------------------


def test_the_cron_job_has_the_spec_the_backup_asks_for(
    cluster: LocalCluster, kube: KubeClient, site: Site, reconciler: BackupReconciler
) -> None:
    backup = site.backup(
        "nightly",
        {
            "schedule": "0 3 * * *",
            "timeZone": "Europe/Berlin",
            "destination": PVC_DESTINATION,
            "concurrencyPolicy": "Forbid",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
            "historyLimit": 2,
        },
    )
    result = reconciler.reconcile(site.namespace, "nightly")
    assert sorted(ref["kind"] for ref in result.applied) == [
        "CronJob",
        "NetworkPolicy",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ]
    cron = kube.get(CRON_JOB, "cleo-backup-nightly", namespace=site.namespace)
    assert cron is not None
    spec = cron["spec"]
    assert (spec["schedule"], spec["timeZone"], spec["suspend"], spec["concurrencyPolicy"]) == (
        "0 3 * * *",
        "Europe/Berlin",
        False,
        "Forbid",
    )
    assert (spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"]) == (2, 2)
    assert cron["metadata"]["ownerReferences"][0]["uid"] == backup["metadata"]["uid"]
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == RUNNER_IMAGE
    assert container["command"][:5] == [
        "cleo-operator",
        "backup",
        "run",
        "--backup",
        f"{site.namespace}/nightly",
    ]
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    assert pod["serviceAccountName"] == "cleo-backup-nightly"
    assert {v["name"]: v for v in pod["volumes"]}["destination"]["persistentVolumeClaim"] == {
        "claimName": "backups"
    }

    status = site.status("nightly")
    assert status["phase"] == "Scheduled"
    assert status["cronJobName"] == "cleo-backup-nightly"
    ready = site.condition("nightly", "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NoBackupYet")
    assert "next scheduled run is due at" in ready["message"]
    assert site.condition("nightly", "LastBackupSucceeded")["status"] == "Unknown"
    assert site.condition("nightly", "BackupFresh")["status"] == "Unknown"
    assert site.condition("nightly", "Verified")["reason"] == "VerificationDisabled"

    # A reconcile that finds nothing new writes nothing at all.
    offset = cluster.audit_offset()
    again = reconciler.reconcile(site.namespace, "nightly")
    assert (again.applied, again.status_written) == ([], False)
    assert writes_in(cluster, site.namespace, offset) == []

    # A spec change reaches the CronJob.
    kube.patch_merge(
        BACKUP,
        "nightly",
        {"spec": {"concurrencyPolicy": "Replace", "suspend": True}},
        namespace=site.namespace,
    )
    changed = reconciler.reconcile(site.namespace, "nightly")
    assert [ref["kind"] for ref in changed.applied] == ["CronJob"]
    cron = kube.get(CRON_JOB, "cleo-backup-nightly", namespace=site.namespace)
    assert cron is not None
    assert (cron["spec"]["concurrencyPolicy"], cron["spec"]["suspend"]) == ("Replace", True)
    assert site.status("nightly")["phase"] == "Suspended"


def test_the_runner_may_read_its_own_backup_and_write_its_status_and_nothing_else(
    cluster: LocalCluster, site: Site, reconciler: BackupReconciler
) -> None:
    site.backup("nightly", {"schedule": "@daily", "destination": PVC_DESTINATION})
    site.backup("other", {"schedule": "@daily", "destination": PVC_DESTINATION})
    reconciler.reconcile(site.namespace, "nightly")
    account = f"system:serviceaccount:{site.namespace}:cleo-backup-nightly"

    def can(verb: str, what: str, *extra: str, namespace: str = site.namespace) -> bool:
        result = cluster.kubectl(
            "auth", "can-i", verb, what, *extra, "-n", namespace, f"--as={account}", check=False
        )
        return result.stdout.strip() == "yes"

    assert can("get", "cleobackups.cleoai.io/nightly")
    assert can("patch", "cleobackups.cleoai.io/nightly", "--subresource=status")
    assert not can("patch", "cleobackups.cleoai.io/nightly")  # its spec is not its to change
    assert not can("patch", "cleobackups.cleoai.io/other", "--subresource=status")
    assert not can("get", "cleobackups.cleoai.io/other")
    assert not can("list", "cleobackups.cleoai.io")
    # Its Secrets reach it through the kubelet; through the API it reads none.
    assert not can("get", "secrets/cleo-database")
    assert not can("get", "secrets/cleo-keyring")
    assert not can("create", "pods")
    assert not can("get", "cleobackups.cleoai.io/nightly", namespace="default")


def client_for(config: Path) -> KubeClient:
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(config_file=str(config), client_configuration=configuration)
    return KubeClient(k8s.ApiClient(configuration))


def test_the_runner_identity_can_patch_its_status_but_not_its_spec(
    cluster: LocalCluster, site: Site, reconciler: BackupReconciler
) -> None:
    site.backup("nightly", {"schedule": "@daily", "destination": PVC_DESTINATION})
    reconciler.reconcile(site.namespace, "nightly")
    token = cluster.kubectl(
        "create", "token", "cleo-backup-nightly", "-n", site.namespace
    ).stdout.strip()
    runner = client_for(cluster.kubeconfig_for(f"runner-{site.namespace}", token))
    # What the runner does: read its CleoBackup, merge-patch its status.
    assert runner.get(BACKUP, "nightly", namespace=site.namespace) is not None
    runner.patch_merge(
        BACKUP,
        "nightly",
        {"status": {"successfulBackups": 0}},
        namespace=site.namespace,
        subresource="status",
    )
    assert site.status("nightly")["successfulBackups"] == 0
    refused = [
        lambda: runner.patch_merge(
            BACKUP, "nightly", {"spec": {"suspend": True}}, namespace=site.namespace
        ),
        lambda: runner.get(SECRET, "cleo-database", namespace=site.namespace),
        lambda: runner.list(BACKUP, namespace=site.namespace),
    ]
    for attempt in refused:
        with pytest.raises(KubeError) as caught:
            attempt()
        assert caught.value.status == 403


def test_switching_between_schedule_and_one_off_replaces_the_runner(
    kube: KubeClient, site: Site, reconciler: BackupReconciler
) -> None:
    site.backup("switch", {"schedule": "@daily", "destination": PVC_DESTINATION})
    reconciler.reconcile(site.namespace, "switch")
    assert kube.get(CRON_JOB, "cleo-backup-switch", namespace=site.namespace) is not None
    kube.request(
        "PATCH",
        BACKUP.path(namespace=site.namespace, name="switch"),
        body=[{"op": "remove", "path": "/spec/schedule"}],
        content_type="application/json-patch+json",
    )
    result = reconciler.reconcile(site.namespace, "switch")
    assert [ref["kind"] for ref in result.deleted] == ["CronJob"]
    assert kube.get(JOB, "cleo-backup-switch", namespace=site.namespace) is not None
    assert "cronJobName" not in site.status("switch")


# --- one-offs asked for with spec.from --------------------------------------------------------


def test_a_one_off_from_a_backup_runs_its_destination_once_and_resyncs_quietly(
    cluster: LocalCluster, kube: KubeClient, site: Site, reconciler: BackupReconciler
) -> None:
    site.backup(
        "nightly",
        {"schedule": "@daily", "destination": PVC_DESTINATION, "retention": {"keepDaily": 7}},
    )
    # Its ServiceAccount, which the one-off's runner runs as.
    reconciler.reconcile(site.namespace, "nightly")
    site.backup("now-1", {"from": "nightly"})
    result = reconciler.reconcile(site.namespace, "now-1")
    assert [ref["kind"] for ref in result.applied][-1] == "Job"
    job = kube.get(JOB, "cleo-run-now-1", namespace=site.namespace)
    assert job is not None
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # The source's destination, nothing the one-off could have named.
    assert container["command"][4:7] == [
        f"{site.namespace}/now-1",
        "--destination",
        f"{VOLUME_MOUNT}/cleo",
    ]
    assert {v["name"]: v for v in pod["volumes"]}["destination"]["persistentVolumeClaim"] == {
        "claimName": "backups"
    }
    assert pod["serviceAccountName"] == "cleo-backup-nightly"
    role = kube.get(ROLE, "cleo-run-now-1", namespace=site.namespace)
    assert role is not None
    assert role["rules"][0]["resourceNames"] == ["now-1", "nightly"]
    for kind in (CRON_JOB, JOB, SERVICE_ACCOUNT, ROLE):
        assert kube.get(kind, "cleo-backup-now-1", namespace=site.namespace) is None
    assert site.condition("now-1", "Ready")["reason"] == "NoBackupYet"

    offset = cluster.audit_offset()
    again = reconciler.reconcile(site.namespace, "now-1")
    assert (again.applied, again.deleted, again.status_written) == ([], [], False)
    assert writes_in(cluster, site.namespace, offset) == []


@pytest.mark.parametrize(
    "case",
    [
        (None, "SourceNotFound", "/nightly does not exist"),
        ({"tenant": "bk-other", "destination": PVC_DESTINATION}, "SourceMismatch", "bk-other"),
        ({"from": "weekly"}, "SourceIsOneOff", "itself a one-off"),
    ],
    ids=["absent", "another-tenant", "chained"],
)
def test_a_one_off_whose_source_it_may_not_run_gets_no_runner(
    kube: KubeClient,
    site: Site,
    reconciler: BackupReconciler,
    case: tuple[dict[str, Any] | None, str, str],
) -> None:
    source, reason, words = case
    if source is not None:
        site.backup("nightly", source)
    site.backup("now-1", {"from": "nightly"})
    result = reconciler.reconcile(site.namespace, "now-1")
    ready = site.condition("now-1", "Ready")
    assert (ready["status"], ready["reason"]) == ("False", reason)
    assert words in ready["message"]
    assert (result.applied, result.ready) == ([], False)
    assert result.requeue_after is not None
    for kind in (SERVICE_ACCOUNT, ROLE, JOB):
        for prefix in ("cleo-backup-", "cleo-run-"):
            assert kube.get(kind, f"{prefix}now-1", namespace=site.namespace) is None


def test_a_one_off_from_a_backup_is_removed_once_its_time_is_up(
    kube: KubeClient, site: Site, crds_installed: None
) -> None:
    del crds_installed
    quick = backup_reconciler(kube, one_off_ttl_seconds=2.0)
    try:
        # It never ran (its source is gone): its time counts from its creation. (After a
        # run, from the run's end: test_backup_cluster_runs.py.)
        site.backup("plain", {"destination": PVC_DESTINATION})
        site.backup("now-1", {"from": "nightly"})
        first = quick.reconcile(site.namespace, "now-1")
        assert site.condition("now-1", "Ready")["reason"] == "SourceNotFound"
        assert first.requeue_after is not None
        assert first.requeue_after <= 2.0

        def removed() -> bool:
            quick.reconcile(site.namespace, "now-1")
            return kube.get(BACKUP, "now-1", namespace=site.namespace) is None

        wait_for(removed, timeout=20, interval=0.5, what="the one-off to be removed")
        # Only one-offs made with spec.from go: a plain one-off is the platform's own.
        quick.reconcile(site.namespace, "plain")
        assert kube.get(BACKUP, "plain", namespace=site.namespace) is not None
    finally:
        quick.close()


# --- problems are conditions -------------------------------------------------------------------


def test_a_schedule_that_passes_the_crd_but_is_invalid_is_a_condition(
    kube: KubeClient, site: Site, reconciler: BackupReconciler
) -> None:
    # Five fields pass the CRD's pattern; minute 61 does not exist.
    site.backup("bad", {"schedule": "61 * * * *", "destination": PVC_DESTINATION})
    result = reconciler.reconcile(site.namespace, "bad")
    assert result.phase == "Invalid"
    assert result.applied == []
    ready = site.condition("bad", "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.schedule" in ready["message"]
    assert "minute field: 61 is above the maximum 59" in ready["message"]
    assert kube.get(CRON_JOB, "cleo-backup-bad", namespace=site.namespace) is None


def test_a_time_zone_the_api_server_refuses_is_a_condition_naming_it(
    site: Site, reconciler: BackupReconciler
) -> None:
    site.backup(
        "martian",
        {"schedule": "@daily", "timeZone": "Mars/Olympus_Mons", "destination": PVC_DESTINATION},
    )
    result = reconciler.reconcile(site.namespace, "martian")
    ready = site.condition("martian", "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ApplyFailed")
    assert "spec.timeZone" in ready["message"]
    assert result.phase == "Failed"


def test_a_missing_volume_claim_is_named_and_heals_once_created(
    kube: KubeClient, site: Site, reconciler: BackupReconciler
) -> None:
    site.backup(
        "elsewhere",
        {"destination": {"type": "pvc", "pvc": {"claimName": "not-yet"}}},
    )
    result = reconciler.reconcile(site.namespace, "elsewhere")
    ready = site.condition("elsewhere", "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "VolumeClaimMissing")
    assert f"{site.namespace}/not-yet" in ready["message"]
    assert result.phase == "Pending"
    assert result.requeue_after is not None
    # A one-off Job waits for what it needs.
    assert kube.get(JOB, "cleo-backup-elsewhere", namespace=site.namespace) is None
    provide_claim(kube, site.namespace, "not-yet")
    reconciler.reconcile(site.namespace, "elsewhere")
    assert kube.get(JOB, "cleo-backup-elsewhere", namespace=site.namespace) is not None
    assert site.condition("elsewhere", "Ready")["reason"] == "NoBackupYet"


TENANT_PROBLEMS = ("TenantNotFound", "NoDatabase", "WrongNamespace")


@pytest.mark.parametrize(
    "case",
    [
        ("no-tenant", "TenantNotFound", "CleoTenant bk-missing does not exist"),
        ("no-database", "NoDatabase", "spec.database.enabled is not true"),
        ("wrong-namespace", "WrongNamespace", "must be in the tenant's namespace"),
        ("no-keyring", "KeyringMissing", "cleo-keyring does not exist"),
        ("no-s3-secret", "S3CredentialsMissing", "backup-s3 does not exist"),
    ],
)
def test_what_the_runner_would_lack_is_a_condition(
    kube: KubeClient,
    site: Site,
    reconciler: BackupReconciler,
    case: tuple[str, str, str],
) -> None:
    setup, reason, words = case
    namespace, tenant = site.namespace, site.tenant
    destination: dict[str, Any] = PVC_DESTINATION
    cleanup: list[tuple[Any, str, str | None]] = []
    if setup == "no-tenant":
        tenant = "bk-missing"
    elif setup == "no-database":
        tenant = f"{site.tenant}-nodb"
        kube.create(tenant_manifest(tenant, {"paused": True, "namespace": namespace}))
        cleanup.append((TENANT, tenant, None))
    elif setup == "wrong-namespace":
        namespace = f"{site.namespace}-x"
        kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        cleanup.append((NAMESPACE, namespace, None))
    elif setup == "no-keyring":
        kube.delete(SECRET, "cleo-keyring", namespace=namespace)
    elif setup == "no-s3-secret":
        destination = {
            "type": "s3",
            "s3": {"bucket": "cleo-backups", "credentialsSecret": "backup-s3"},
        }
    kube.create(
        backup_manifest(
            "case", namespace, {"tenant": tenant, "schedule": "@daily", "destination": destination}
        )
    )
    try:
        result = reconciler.reconcile(namespace, "case")
        backup = kube.get(BACKUP, "case", namespace=namespace)
        assert backup is not None
        ready = next(c for c in backup["status"]["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"]) == ("False", reason)
        assert words in ready["message"]
        assert result.phase == "Pending"
        assert not result.ready
        assert result.requeue_after is not None  # nothing else would wake it
        if reason in TENANT_PROBLEMS:
            # Only a CleoBackup of the tenant it names, in its namespace, gets a runner.
            assert result.applied == []
            for kind in (SERVICE_ACCOUNT, ROLE, CRON_JOB):
                assert kube.get(kind, "cleo-backup-case", namespace=namespace) is None
    finally:
        for kind, name, ns in cleanup:
            kube.delete(kind, name, namespace=ns)


@pytest.mark.security
def test_a_backup_naming_another_tenant_moves_none_of_its_metrics(
    kube: KubeClient, site: Site, reconciler: BackupReconciler
) -> None:
    # A CleoBackup in another namespace that names this tenant, with a status claiming a
    # fresh backup (its runner, or whoever may write its status there, wrote it).
    elsewhere = f"{site.namespace}-y"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": elsewhere}})
    try:
        kube.create(
            backup_manifest(
                "forged",
                elsewhere,
                {"tenant": site.tenant, "schedule": "@daily", "destination": PVC_DESTINATION},
            )
        )
        claimed = {
            "time": "2030-01-01T00:00:00Z",
            "succeeded": True,
            "backupId": "20300101T000000Z-forged",
            "durationSeconds": 1.0,
        }
        kube.patch_merge(
            BACKUP,
            "forged",
            {"status": {"lastSuccessfulBackup": claimed, "lastBackup": claimed}},
            namespace=elsewhere,
            subresource="status",
        )
        gauge = "cleo_operator_backup_last_success_timestamp_seconds"
        before = REGISTRY.get_sample_value(gauge, {"tenant": site.tenant})
        result = reconciler.reconcile(elsewhere, "forged")
        assert site_condition(kube, elsewhere, "forged")["reason"] == "WrongNamespace"
        assert result.applied == []
        assert REGISTRY.get_sample_value(gauge, {"tenant": site.tenant}) == before
    finally:
        kube.delete(NAMESPACE, elsewhere)


def site_condition(kube: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    backup = kube.get(BACKUP, name, namespace=namespace)
    assert backup is not None
    found: dict[str, Any] = next(c for c in backup["status"]["conditions"] if c["type"] == "Ready")
    return found


# --- a pod that died without reporting ---------------------------------------------------------


def test_a_job_whose_pod_never_reported_is_recorded_as_a_failed_run(
    kube: KubeClient, site: Site, reconciler: BackupReconciler
) -> None:
    site.backup("nightly", {"schedule": "@daily", "destination": PVC_DESTINATION})
    reconciler.reconcile(site.namespace, "nightly")
    cron = kube.get(CRON_JOB, "cleo-backup-nightly", namespace=site.namespace)
    assert cron is not None
    template = cron["spec"]["jobTemplate"]
    pod_template = template["spec"]["template"]
    # A pod that can never be scheduled, and a deadline: the Job fails, nothing reports.
    pod_template["spec"]["nodeSelector"] = {"cleoai.io/no-such-node": "true"}
    kube.create(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": "cleo-backup-nightly-29000001",
                "namespace": site.namespace,
                "labels": template["metadata"]["labels"],
            },
            "spec": {"backoffLimit": 0, "activeDeadlineSeconds": 2, "template": pod_template},
        }
    )

    def failed() -> bool:
        job = kube.get(JOB, "cleo-backup-nightly-29000001", namespace=site.namespace)
        conditions = ((job or {}).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Failed" and c["status"] == "True" for c in conditions)

    wait_for(failed, timeout=60, what="the Job to fail on its deadline")
    result = reconciler.reconcile(site.namespace, "nightly")
    assert result.runs_recorded == 1
    status = site.status("nightly")
    (run,) = status["history"]
    assert run["job"] == "cleo-backup-nightly-29000001"
    assert run["succeeded"] is False
    assert run["reason"] == "DeadlineExceeded"
    assert "ended without a report" in run["message"]
    job = kube.get(JOB, "cleo-backup-nightly-29000001", namespace=site.namespace)
    assert job is not None
    assert job["metadata"]["annotations"][RECORDED_ANNOTATION] == "true"
    last = site.condition("nightly", "LastBackupSucceeded")
    assert (last["status"], last["reason"]) == ("False", "DeadlineExceeded")
    ready = site.condition("nightly", "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "LastBackupFailed")
    assert result.phase == "Failed"
    # Seen once, recorded once.
    again = reconciler.reconcile(site.namespace, "nightly")
    assert again.runs_recorded == 0
    assert len(site.status("nightly")["history"]) == 1


def test_deleting_the_backup_deletes_its_runner_but_never_touches_others(
    kube: KubeClient, site: Site, reconciler: BackupReconciler
) -> None:
    site.backup("gone", {"schedule": "@daily", "destination": PVC_DESTINATION})
    site.backup("kept", {"schedule": "@daily", "destination": PVC_DESTINATION})
    reconciler.reconcile(site.namespace, "gone")
    reconciler.reconcile(site.namespace, "kept")
    kube.delete(BACKUP, "gone", namespace=site.namespace, propagation="Foreground")
    children = [CRON_JOB, ROLE, SERVICE_ACCOUNT]

    def all_gone() -> bool:
        return kube.get(BACKUP, "gone", namespace=site.namespace) is None and all(
            kube.get(kind, "cleo-backup-gone", namespace=site.namespace) is None
            for kind in children
        )

    wait_for(all_gone, timeout=60, what="the garbage collector to delete the runner")
    for kind in children:
        assert kube.get(kind, "cleo-backup-kept", namespace=site.namespace) is not None
    # A reconcile of a deleted backup does nothing (and brings nothing back).
    result: BackupReconcileResult = reconciler.reconcile(site.namespace, "gone")
    assert result.applied == []
    assert kube.get(CRON_JOB, "cleo-backup-gone", namespace=site.namespace) is None


# --- objects and pods that are not the operator's -------------------------------------------


def _forged_pod(name: str, namespace: str, labels: dict[str, str]) -> KubeObject:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"cleoai.io/no-such-node": "true"},
            "containers": [{"name": "backup", "image": "registry.example/poser:1"}],
        },
    }


@pytest.mark.security
def test_a_pod_posing_as_the_runner_is_not_recorded(
    kube: KubeClient, site: Site, reconciler: BackupReconciler
) -> None:
    """A tenant admin's pods labelled with the Job's `job-name`, each ending with a forged
    success report: neither becomes the run. One lacks the runner's label (which the
    admission policy keeps to the Job controller, tests/security/
    test_tenant_writable_admission.py::test_a_pod_with_the_runners_labels_is_refused) but
    names the Job as its controller; the other has the runner's labels (possible here, the
    policy is not installed) but the Job is not its controller. No kubelet runs here: the
    termination state is written on the pods' status as the kubelet would."""
    site.backup("nightly", {"schedule": "@daily", "destination": PVC_DESTINATION})
    reconciler.reconcile(site.namespace, "nightly")
    cron = kube.get(CRON_JOB, "cleo-backup-nightly", namespace=site.namespace)
    assert cron is not None
    template = cron["spec"]["jobTemplate"]
    pod_template = template["spec"]["template"]
    pod_template["spec"]["nodeSelector"] = {"cleoai.io/no-such-node": "true"}
    job_name = "cleo-backup-nightly-29000002"
    job = kube.create(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": job_name,
                "namespace": site.namespace,
                "labels": template["metadata"]["labels"],
            },
            "spec": {"backoffLimit": 0, "activeDeadlineSeconds": 2, "template": pod_template},
        }
    )

    def failed() -> bool:
        live = kube.get(JOB, job_name, namespace=site.namespace)
        conditions = ((live or {}).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Failed" and c["status"] == "True" for c in conditions)

    wait_for(failed, timeout=60, what="the Job to fail on its deadline")
    forged_owner = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": job_name,
        "uid": job["metadata"]["uid"],
        "controller": True,
    }
    report = json.dumps(
        {
            "outcome": "Succeeded",
            "reason": "Succeeded",
            "message": "forged: all is well",
            "tenant": site.tenant,
        }
    )
    job_label = {"batch.kubernetes.io/job-name": job_name}
    posers = {
        "poser-owner": (job_label, [forged_owner]),
        "poser-labels": ({**job_label, **pod_template["metadata"]["labels"]}, []),
    }
    for name, (labels, owners) in posers.items():
        pod = _forged_pod(name, site.namespace, labels)
        pod["metadata"]["ownerReferences"] = owners
        kube.create(pod)
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        kube.patch_merge(
            POD,
            name,
            {
                "status": {
                    "phase": "Succeeded",
                    "startTime": "2099-01-01T00:00:00Z",  # the newest: looked at first
                    "containerStatuses": [
                        {
                            "name": "backup",
                            "image": "registry.example/poser:1",
                            "imageID": "",
                            "ready": False,
                            "restartCount": 0,
                            "state": {
                                "terminated": {
                                    "exitCode": 0,
                                    "reason": "Completed",
                                    "message": report,
                                    "startedAt": now,
                                    "finishedAt": now,
                                }
                            },
                        }
                    ],
                }
            },
            namespace=site.namespace,
            subresource="status",
        )

    result = reconciler.reconcile(site.namespace, "nightly")

    assert result.runs_recorded == 1
    (run,) = site.status("nightly")["history"]
    assert run["job"] == job_name
    assert run["succeeded"] is False
    assert "forged" not in run["message"]
    assert "ended without a report" in run["message"]
    assert "lastSuccessfulBackup" not in site.status("nightly")
    last = site.condition("nightly", "LastBackupSucceeded")
    assert last["status"] == "False"


@pytest.mark.security
def test_a_runner_cron_job_made_by_someone_else_is_replaced_not_taken_over(
    kube: KubeClient, site: Site, reconciler: BackupReconciler
) -> None:
    """A CronJob squatting `cleo-backup-<name>` before the operator's (possible where the
    admission policy is not installed): a server-side apply over it would keep the
    squatter's extra container and env (another field manager's fields). The operator
    deletes it and makes its own."""
    squatter = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "cleo-backup-nightly", "namespace": site.namespace},
        "spec": {
            "schedule": "* * * * *",
            "suspend": True,
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [
                                {
                                    "name": "miner",
                                    "image": "registry.example/miner:1",
                                    "env": [{"name": "STEAL", "value": "yes"}],
                                }
                            ],
                        }
                    }
                }
            },
        },
    }
    planted = kube.create(squatter)
    site.backup("nightly", {"schedule": "@daily", "destination": PVC_DESTINATION})

    result = reconciler.reconcile(site.namespace, "nightly")

    cron = kube.get(CRON_JOB, "cleo-backup-nightly", namespace=site.namespace)
    assert cron is not None
    assert cron["metadata"]["uid"] != planted["metadata"]["uid"]
    assert cron["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "cleo-operator"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["backup"]
    assert "miner" not in json.dumps(cron)
    assert "STEAL" not in json.dumps(cron)
    assert {"kind": "CronJob", "name": "cleo-backup-nightly"}.items() <= next(
        ref for ref in result.deleted if ref["kind"] == "CronJob"
    ).items()
    # The operator's own object is applied over, never deleted: the next reconcile is a no-op.
    again = reconciler.reconcile(site.namespace, "nightly")
    assert (again.applied, again.deleted) == ([], [])

"""A registry Secret that cannot be copied never holds a backup back, on the in-memory API
server: the runner is made all the same (the kubelet pulls without a missing pull secret,
with the nodes' credentials), and the problem is a condition of its own.

Before, a missing source was the backup's blocking problem: no one-off Job was ever made,
and a tenant deletion with policy Delete waited forever for its final backup. The real API
server's side of the copies is in tests/integration/test_backup_pull_secrets.py.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Iterator
from typing import Any

import pytest

from cleo_operator.api.tenant import parse_tenant_spec
from cleo_operator.kube.kinds import BACKUP, JOB, SECRET, TENANT
from cleo_operator.reconcile.backup import BackupReconciler, BackupSettings
from cleo_operator.reconcile.final_backup import FINAL_BACKUP_NAME, FinalBackup
from cleo_operator.render.backup import DATABASE_ENV, BackupPodSettings
from tests.harness.fake_kube import FakeKube
from tests.harness.specs import backup_manifest, secret_manifest, tenant_manifest

NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
OPERATOR = "cleo-system"
NAMESPACE = "cleo-acme"
PVC = {"type": "pvc", "pvc": {"claimName": "backups"}}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def kube() -> FakeKube:
    """A tenant ready for backups: database Secret, keyring, claim; no registry Secret."""
    fake = FakeKube(now=lambda: NOW, namespaces=(OPERATOR, NAMESPACE))
    fake.create(
        tenant_manifest(
            "acme", {"deletionPolicy": "Delete", "database": {"enabled": True, "site": "main"}}
        )
    )
    fake.create(
        secret_manifest("cleo-database", NAMESPACE, {key: b64("x") for key in DATABASE_ENV})
    )
    fake.create(secret_manifest("cleo-keyring", NAMESPACE, {"keyring": b64("x")}))
    fake.create(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "backups", "namespace": NAMESPACE},
            "spec": {"accessModes": ["ReadWriteOnce"]},
        }
    )
    fake.writes.clear()
    return fake


SETTINGS = BackupSettings(
    pod=BackupPodSettings(image="registry.example/cleo:1", api_server_cidrs=("10.0.0.1/32",)),
    pull_secret_sources=("absent",),
)
"""A runner's settings that name a registry Secret the operator's namespace lacks."""


@pytest.fixture
def reconciler(kube: FakeKube) -> Iterator[BackupReconciler]:
    service = BackupReconciler(
        kube, settings=SETTINGS, now=lambda: NOW, operator_namespace=OPERATOR
    )
    yield service
    service.close()


def conditions(kube: FakeKube, name: str) -> dict[str, dict[str, Any]]:
    obj = kube.get(BACKUP, name, namespace=NAMESPACE)
    assert obj is not None
    return {c["type"]: c for c in obj["status"]["conditions"]}


def job_pull_secrets(kube: FakeKube, name: str) -> list[str]:
    job = kube.get(JOB, f"cleo-backup-{name}", namespace=NAMESPACE)
    assert job is not None, f"no Job for CleoBackup {name}"
    return [ref["name"] for ref in job["spec"]["template"]["spec"].get("imagePullSecrets") or []]


def test_a_missing_pull_source_does_not_stop_a_one_off_backup(
    kube: FakeKube, reconciler: BackupReconciler
) -> None:
    kube.create(backup_manifest("now", NAMESPACE, {"tenant": "acme", "destination": PVC}))
    result = reconciler.reconcile(NAMESPACE, "now")
    assert job_pull_secrets(kube, "now") == ["cleo-pull-absent"]
    assert result.phase == "Running"  # the Job is made, not held back
    cond = conditions(kube, "now")
    pulls = cond["PullSecretsCopied"]
    assert (pulls["status"], pulls["reason"]) == ("False", "ImagePullSecretMissing")
    assert f"Secret {OPERATOR}/absent" in pulls["message"]
    assert "the kubelet pulls without it" in pulls["message"]
    assert cond["Ready"]["reason"] == "NoBackupYet"
    assert kube.get(SECRET, "cleo-pull-absent", namespace=NAMESPACE) is None
    # Checked again soon (the source is not watched); the Job is not made twice.
    assert result.requeue_after == reconciler.settings.prerequisite_requeue_seconds
    kube.writes.clear()
    reconciler.reconcile(NAMESPACE, "now")
    assert kube.writes == []


def test_a_missing_pull_source_does_not_stop_the_final_backup_of_a_deletion(
    kube: FakeKube, reconciler: BackupReconciler
) -> None:
    kube.create(
        backup_manifest(
            "nightly", NAMESPACE, {"tenant": "acme", "schedule": "0 3 * * *", "destination": PVC}
        )
    )
    reconciler.reconcile(NAMESPACE, "nightly")
    # `kubectl delete` of the tenant, which holds Kopf's finalizer.
    kube.patch_merge(TENANT, "acme", {"metadata": {"finalizers": ["kopf.zalando.org/test"]}})
    kube.delete(TENANT, "acme")
    tenant = kube.get(TENANT, "acme")
    assert tenant is not None
    waiting = FinalBackup(kube)("acme", parse_tenant_spec(tenant["spec"]))
    assert waiting is not None
    assert FINAL_BACKUP_NAME in waiting
    reconciler.reconcile(NAMESPACE, FINAL_BACKUP_NAME)
    assert job_pull_secrets(kube, FINAL_BACKUP_NAME) == ["cleo-pull-absent"]
    assert conditions(kube, FINAL_BACKUP_NAME)["PullSecretsCopied"]["status"] == "False"

"""A tenant whose stored spec no longer parses (an upgrade typed what an older release stored
raw) deletes nothing of its backups: the registry copies the CronJob's pods name stay, and
only a tenant that is gone takes them with it. A target written as a bare number, which the
older release stored and the HPA takes, still parses and renders.

FakeKube stands in for the API server (it stores specs an older CRD took, as etcd does);
the reconcilers are the real ones.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from cleo_operator.kube.kinds import BACKUP, CRON_JOB, SECRET, TENANT
from cleo_operator.reconcile.backup import BackupReconciler, BackupSettings
from cleo_operator.render.backup import BackupPodSettings
from tests.harness.fake_kube import FakeKube
from tests.harness.specs import backup_manifest, secret_manifest
from tests.unit.reconcile.test_backup_pull_problem import NAMESPACE, NOW, OPERATOR, PVC, kube

__all__ = ["kube"]  # the fixture, shared

COPY = "cleo-pull-regcred"
CONFIG = base64.b64encode(b'{"auths": {"registry.example": {}}}').decode()
BASE = {"deletionPolicy": "Delete", "database": {"enabled": True, "site": "main"}}
"""The spec of the tenant of test_backup_pull_problem."""


def scaling(target: dict[str, Any]) -> dict[str, Any]:
    metric = {"type": "Pods", "pods": {"metric": {"name": "rps"}, "target": target}}
    return {
        **BASE,
        "workload": {"image": "registry.example.com/cleoai:2.0.0"},
        "autoscaling": {"metrics": [metric]},
    }


@pytest.fixture
def world(kube: FakeKube) -> FakeKube:
    """The tenant ready for backups of test_backup_pull_problem, with a registry Secret to
    copy, and a scheduled CleoBackup (whose CronJob names the copy)."""
    pull = {".dockerconfigjson": CONFIG}
    kube.create(secret_manifest("regcred", OPERATOR, pull, type_="kubernetes.io/dockerconfigjson"))
    nightly = {"tenant": "acme", "schedule": "0 3 * * *", "destination": PVC}
    kube.create(backup_manifest("nightly", NAMESPACE, nightly))
    return kube


@pytest.fixture
def reconciler(world: FakeKube) -> Iterator[BackupReconciler]:
    settings = BackupSettings(
        pod=BackupPodSettings(image="registry.example/cleo:1", api_server_cidrs=("10.0.0.1/32",)),
        pull_secret_sources=("regcred",),
    )
    service = BackupReconciler(
        world, settings=settings, now=lambda: NOW, operator_namespace=OPERATOR
    )
    yield service
    service.close()


def ready(kube: FakeKube) -> dict[str, Any]:
    obj = kube.get(BACKUP, "nightly", namespace=NAMESPACE)
    assert obj is not None
    return {c["type"]: c for c in obj["status"]["conditions"]}["Ready"]


def cron_pull_secrets(kube: FakeKube) -> list[str]:
    cron = kube.get(CRON_JOB, "cleo-backup-nightly", namespace=NAMESPACE)
    assert cron is not None
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return [ref["name"] for ref in pod.get("imagePullSecrets") or []]


# What the previous release stored raw and this one refuses (see docs/install.md).
NOW_REFUSED = [
    scaling({"type": "Value", "value": "5"}),  # a Pods target of type Value
    scaling({"type": "AverageValue", "averageValue": "1", "value": "2"}),
    {**BASE, "autoscaling": {"behavior": {"scaleUp": {"policies": []}}}},
]


@pytest.mark.security
@pytest.mark.parametrize("stored", NOW_REFUSED, ids=["pods-value", "two-targets", "no-policy"])
def test_an_invalid_tenant_keeps_the_registry_copies_its_cron_job_names(
    kube: FakeKube, reconciler: BackupReconciler, stored: dict[str, Any]
) -> None:
    reconciler.reconcile(NAMESPACE, "nightly")
    assert kube.get(SECRET, COPY, namespace=NAMESPACE) is not None
    assert cron_pull_secrets(kube) == [COPY]

    kube.patch_merge(TENANT, "acme", {"spec": stored})
    kube.writes.clear()
    reconciler.reconcile(NAMESPACE, "nightly")
    assert ready(kube)["reason"] == "TenantInvalid"
    assert kube.get(SECRET, COPY, namespace=NAMESPACE) is not None
    assert cron_pull_secrets(kube) == [COPY]
    assert not [w for w in kube.writes if w.method == "delete"], kube.writes


@pytest.mark.security
def test_a_tenant_that_is_gone_takes_its_copies_with_it(
    kube: FakeKube, reconciler: BackupReconciler
) -> None:
    reconciler.reconcile(NAMESPACE, "nightly")
    assert kube.get(SECRET, COPY, namespace=NAMESPACE) is not None
    kube.delete(TENANT, "acme")
    reconciler.reconcile(NAMESPACE, "nightly")
    assert ready(kube)["reason"] == "TenantNotFound"
    assert kube.get(SECRET, COPY, namespace=NAMESPACE) is None


def test_a_stored_float_target_still_reconciles_and_keeps_pull_secrets(
    kube: FakeKube, reconciler: BackupReconciler
) -> None:
    reconciler.reconcile(NAMESPACE, "nightly")
    kube.patch_merge(
        TENANT, "acme", {"spec": scaling({"type": "AverageValue", "averageValue": 0.5})}
    )
    reconciler.reconcile(NAMESPACE, "nightly")
    assert ready(kube)["reason"] != "TenantInvalid"
    assert kube.get(SECRET, COPY, namespace=NAMESPACE) is not None
    assert cron_pull_secrets(kube) == [COPY]

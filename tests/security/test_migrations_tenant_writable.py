"""A tenant admin cannot make the operator roll an unmigrated image, nor record a false
schema revision.

Everything in a tenant namespace is the tenant admins' to write but what the admission
policy keeps to the operator, so the attacks here are made without the policy (as the
cluster admin, who can do all that a tenant admin could without it): what holds is the
operator's own rule, ownership by uid, never by name or label. The tenant reconciler with
the migrations part runs in this process against the real API server and Job controller;
KWOK is the kubelet (a boundary we cannot run here), ending Job pods as
e2e/kwok/test-stages.yaml says.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from cleo_operator.api.tenant import parse_tenant_spec
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import DEPLOYMENT, JOB, POD, TENANT
from cleo_operator.reconcile.migrations import MigrationsPart
from cleo_operator.reconcile.tenant import TenantReconciler
from cleo_operator.render.migrations import migration_job_name, migration_key
from e2e.cluster import LocalCluster
from tests.harness.cluster_fixtures import wait_for
from tests.harness.specs import apply_tenant

pytestmark = [
    pytest.mark.security,
    pytest.mark.cluster,
    pytest.mark.usefixtures("crds_installed", "without_session_operator"),
]

FIRST = "cleo-test.invalid/cleoai:1.0"
HANGS = "cleo-test.invalid/cleoai:migration-hangs"
REPORTS = "cleo-test.invalid/cleoai:migration-reports"
"""KWOK ends a Job pod of this image with exit 0 and ``revision=5e6f7a8b9c0d``."""


def tenant_spec(image: str) -> dict[str, Any]:
    return {
        "workload": {
            "image": image,
            "replicas": 1,
            "migrations": {"command": ["alembic", "upgrade", "head"], "timeout": "1h"},
        },
        "autoscaling": {"enabled": False},
        "database": {"enabled": True},
    }


@pytest.fixture
def name(cluster: LocalCluster) -> Iterator[str]:
    made = f"migsec{uuid.uuid4().hex[:6]}"
    yield made
    cluster.kubectl("delete", "cleotenant", made, "--wait=false", check=False)
    cluster.kubectl("delete", "namespace", f"cleo-{made}", "--wait=false", check=False)


def test_planted_jobs_pods_and_deletions_never_roll_an_unmigrated_image(
    cluster: LocalCluster, kube: KubeClient, name: str
) -> None:
    ns = f"cleo-{name}"
    reconciler = TenantReconciler(
        kube, parts=[MigrationsPart(kube)], operator_namespace="cleo-system"
    )

    def until(check: Any, what: str) -> Any:
        def step() -> Any:
            reconciler.reconcile(name)
            return check()

        return wait_for(step, timeout=45, interval=0.3, what=what)

    def migrations() -> dict[str, Any]:
        tenant = kube.get(TENANT, name)
        assert tenant is not None
        return dict((tenant.get("status") or {}).get("migrations") or {})

    def condition() -> dict[str, Any]:
        tenant = kube.get(TENANT, name)
        assert tenant is not None
        found = [
            c
            for c in (tenant.get("status") or {}).get("conditions") or []
            if c["type"] == "MigrationsSucceeded"
        ]
        return found[0] if found else {}

    def image() -> str | None:
        dep = kube.get(DEPLOYMENT, "cleoai", namespace=ns)
        return None if dep is None else dep["spec"]["template"]["spec"]["containers"][0]["image"]

    apply_tenant(cluster, name, tenant_spec(FIRST))
    reconciler.reconcile(name)
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "cleo-database", "namespace": ns},
            "stringData": {"DATABASE_URL": "postgresql://cleo@db.invalid/cleo"},
        }
    )
    until(lambda: image() == FIRST, "the first migration")
    assert migrations().get("revision") is None  # the default stage reports none

    # 1. A Job planted at the name of the next migration, complete, with a report.
    spec = parse_tenant_spec(tenant_spec(HANGS))
    assert spec.workload is not None
    next_name = migration_job_name(migration_key(spec.workload))
    planted = kube.create(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": next_name, "namespace": ns},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "automountServiceAccountToken": False,
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 1000,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [
                            {
                                "name": "migrate",
                                "image": REPORTS,
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                            }
                        ],
                    }
                },
            },
        }
    )
    wait_for(
        lambda: (kube.get(JOB, next_name, namespace=ns) or {}).get("status", {}).get("succeeded"),
        timeout=30,
        what="the planted Job to complete",
    )
    apply_tenant(cluster, name, tenant_spec(HANGS))
    until(
        lambda: (
            migrations().get("attempt", {}).get("phase") == "Running"
            and migrations()["attempt"]["jobUid"] != planted["metadata"]["uid"]
        ),
        "the operator's own Job at that name, the planted one gone",
    )
    assert image() == FIRST
    assert migrations().get("revision") is None
    own = kube.get(JOB, next_name, namespace=ns)
    assert own is not None
    assert own["metadata"]["uid"] == migrations()["attempt"]["jobUid"]

    # 2. A pod that names the running Job as its controller and reports a revision.
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "forged-report",
                "namespace": ns,
                "labels": {
                    "batch.kubernetes.io/controller-uid": own["metadata"]["uid"],
                    "batch.kubernetes.io/job-name": next_name,
                },
                # What the Job controller counts a finished pod by.
                "finalizers": ["batch.kubernetes.io/job-tracking"],
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": next_name,
                        "uid": own["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 1000,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": "migrate",
                        "image": REPORTS,
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
            },
        }
    )
    wait_for(
        lambda: (
            (kube.get(POD, "forged-report", namespace=ns) or {}).get("status", {}).get("phase")
            == "Succeeded"
        ),
        timeout=30,
        what="the forged pod to end with exit 0 and its report",
    )
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        reconciler.reconcile(name)
        time.sleep(0.3)
    job = kube.get(JOB, next_name, namespace=ns)
    # The finalizer would keep the forged pod (and the namespace) for good.
    if kube.get(POD, "forged-report", namespace=ns) is not None:
        kube.patch_merge(POD, "forged-report", {"metadata": {"finalizers": None}}, namespace=ns)
    # With the Job's generated selector (its uid label), the Job controller adopts such a
    # pod and completes the Job; the operator's own selector is what stops it.
    assert image() == FIRST, "an unmigrated image rolled"
    assert migrations().get("revision") is None
    assert migrations()["attempt"]["phase"] == "Running"
    assert job is not None
    assert not (job.get("status") or {}).get("succeeded"), "the Job controller took the pod"

    # 3. The running Job deleted: the outcome is unknown, so nothing rolls or reruns.
    kube.delete(JOB, next_name, namespace=ns, propagation="Foreground")
    until(lambda: condition().get("reason") == "JobLost", "JobLost on status")
    for _ in range(3):
        reconciler.reconcile(name)
    assert image() == FIRST
    # No new run: what is left at most is the deleted Job, its foreground deletion finishing.
    left = [
        j["metadata"]["uid"]
        for j in kube.list(JOB, namespace=ns)
        if j["metadata"]["name"].startswith("cleo-migrate-")
    ]
    assert set(left) <= {own["metadata"]["uid"]}
    assert migrations()["attempt"]["jobUid"] == own["metadata"]["uid"]
    assert migrations().get("revision") is None

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

import pytest

from cleo_operator.api.tenant import parse_tenant_spec
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import JOB, POD
from cleo_operator.render.migrations import migration_job_name, migration_key
from tests.harness.cluster_fixtures import wait_for
from tests.integration.migrations_support import (
    Tenant,
    restricted_pod,
    start,
    tenant_fixture,
    tenant_spec,
)

pytestmark = [
    pytest.mark.security,
    pytest.mark.cluster,
    pytest.mark.usefixtures("crds_installed", "without_session_operator"),
]

FIRST = "cleo-test.invalid/cleoai:1.0"
HANGS = "cleo-test.invalid/cleoai:migration-hangs"
REPORTS = "cleo-test.invalid/cleoai:migration-reports"
"""KWOK ends a Job pod of this image with exit 0 and ``revision=5e6f7a8b9c0d``."""


tenant = tenant_fixture("migsec")


def test_planted_jobs_pods_and_deletions_never_roll_an_unmigrated_image(
    kube: KubeClient, tenant: Tenant
) -> None:
    ns = tenant.namespace
    start(tenant, tenant_spec(FIRST, timeout="1h"))
    tenant.until(lambda: tenant.image() == FIRST, "the first migration")
    assert tenant.migrations().get("revision") is None  # the default stage reports none

    # 1. A Job planted at the name of the next migration, complete, with a report.
    spec = parse_tenant_spec(tenant_spec(HANGS, timeout="1h"))
    assert spec.workload is not None
    next_name = migration_job_name(migration_key(spec.workload))
    planted = kube.create(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": next_name, "namespace": ns},
            "spec": {"backoffLimit": 0, "template": {"spec": restricted_pod(REPORTS)}},
        }
    )
    wait_for(
        lambda: (kube.get(JOB, next_name, namespace=ns) or {}).get("status", {}).get("succeeded"),
        timeout=30,
        what="the planted Job to complete",
    )
    tenant.apply(tenant_spec(HANGS, timeout="1h"))
    tenant.until(
        lambda: (
            tenant.migrations().get("attempt", {}).get("phase") == "Running"
            and tenant.migrations()["attempt"]["jobUid"] != planted["metadata"]["uid"]
        ),
        "the operator's own Job at that name, the planted one gone",
    )
    assert tenant.image() == FIRST
    assert tenant.migrations().get("revision") is None
    own = kube.get(JOB, next_name, namespace=ns)
    assert own is not None
    assert own["metadata"]["uid"] == tenant.migrations()["attempt"]["jobUid"]

    # 2. A pod that names the running Job as its controller, wears the labels the Job
    # controller gives its pods (and the finalizer it counts finished pods by), and ends
    # with 0 and a report.
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
            "spec": restricted_pod(REPORTS),
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
        tenant.reconcile()
        time.sleep(0.3)
    job = kube.get(JOB, next_name, namespace=ns)
    # The finalizer would keep the forged pod (and the namespace) for good.
    if kube.get(POD, "forged-report", namespace=ns) is not None:
        kube.patch_merge(POD, "forged-report", {"metadata": {"finalizers": None}}, namespace=ns)
    # With the Job's generated selector (its uid label), the Job controller adopts such a
    # pod and completes the Job; the operator's own selector is what stops it.
    assert tenant.image() == FIRST, "an unmigrated image rolled"
    assert tenant.migrations().get("revision") is None
    assert tenant.migrations()["attempt"]["phase"] == "Running"
    assert job is not None
    assert not (job.get("status") or {}).get("succeeded"), "the Job controller took the pod"

    # 3. The running Job deleted: the outcome is unknown, so nothing rolls or reruns.
    kube.delete(JOB, next_name, namespace=ns, propagation="Foreground")
    tenant.until(
        lambda: tenant.condition("MigrationsSucceeded").get("reason") == "JobLost",
        "JobLost on status",
    )
    for _ in range(3):
        tenant.reconcile()
    assert tenant.image() == FIRST
    # No new run: what is left at most is the deleted Job, its foreground deletion finishing.
    left = {j["metadata"]["uid"] for j in tenant.jobs()}
    assert left <= {own["metadata"]["uid"]}
    assert tenant.migrations()["attempt"]["jobUid"] == own["metadata"]["uid"]
    assert tenant.migrations().get("revision") is None

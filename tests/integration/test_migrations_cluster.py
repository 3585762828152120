"""Migrations gate the rollout, on the local control plane.

The tenant reconciler with the migrations part runs in this process against the real API
server, Job controller, deployment controller, scheduler and garbage collector (the
session's operator, if any, is paused). KWOK is the kubelet: a boundary no test here can
run for real. Its default stage ends Job pods with exit 0; the test-only stages of
e2e/kwok/test-stages.yaml end those of a few test images as a real kubelet reports a
failed migration (exit 1, the end of its log as termination message), a successful one
that reports its revision, or one that runs until its deadline. The database part is not
under test: its credentials Secret is made by hand.
"""

from __future__ import annotations

import pytest

from cleo_operator.kube.kinds import TENANT
from cleo_operator.reconcile.migrations import RETRY_ANNOTATION
from tests.integration.migrations_support import Tenant, start, tenant_fixture, tenant_spec

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.usefixtures("crds_installed", "without_session_operator"),
]

REPORTS = "cleo-test.invalid/cleoai:migration-reports"
FAILS = "cleo-test.invalid/cleoai:migration-fails"
HANGS = "cleo-test.invalid/cleoai:migration-hangs"
PLAIN = "cleo-test.invalid/cleoai:4.0"


tenant = tenant_fixture("mig")


def test_a_failing_migration_never_takes_the_tenant_down(tenant: Tenant) -> None:
    start(tenant, tenant_spec(REPORTS))
    # The first migration: no Deployment before it succeeded, then the image it migrated.
    tenant.reconcile()
    assert tenant.image() is None
    assert tenant.condition("WorkloadAvailable").get("reason") == "WaitingForMigrations"
    tenant.until(lambda: tenant.image() == REPORTS, "the first migration, then the Deployment")
    assert tenant.migrations()["revision"] == "5e6f7a8b9c0d"
    assert tenant.condition("MigrationsSucceeded")["status"] == "True"
    # KWOK reports no imageID: the Deployment runs the tag, and the condition says so.
    assert (
        "pinned to the tag (digest not reported)"
        in (tenant.condition("MigrationsSucceeded")["message"])
    )
    tenant.until(lambda: tenant.condition("Ready").get("status") == "True", "Ready")

    # A new image whose migration fails: the old pods serve on, and status says why.
    tenant.apply(tenant_spec(FAILS))
    failed = tenant.until(
        lambda: (
            tenant.condition("MigrationsSucceeded").get("status") == "False"
            and tenant.condition("MigrationsSucceeded")
        ),
        "the failed migration on status",
    )
    assert failed["reason"] == "BackoffLimitExceeded"
    assert "already exists" in failed["message"]
    assert "hunter2-test-pw" not in str(tenant.status())
    assert tenant.image() == REPORTS
    assert tenant.condition("Ready")["status"] == "True"
    (first,) = tenant.jobs()  # kept for inspection, and not run again by itself
    # The API server keeps it: a replacement pod only once the previous one failed.
    assert first["spec"]["podReplacementPolicy"] == "Failed"
    for _ in range(3):
        tenant.reconcile()
    assert [j["metadata"]["uid"] for j in tenant.jobs()] == [first["metadata"]["uid"]]

    # A retry on request runs it again, in a new Job once the old one and its pods are gone.
    tenant.cluster.kubectl(
        "annotate", "cleotenant", tenant.name, f"{RETRY_ANNOTATION}=once", "--overwrite"
    )
    tenant.until(
        lambda: (
            tenant.migrations().get("retryRequest") == "once"
            and tenant.migrations()["attempt"]["jobUid"] != first["metadata"]["uid"]
            and tenant.condition("MigrationsSucceeded").get("status") == "False"
        ),
        "the retried migration to fail again",
    )
    assert tenant.image() == REPORTS


def test_a_newer_spec_waits_for_the_migration_in_flight(tenant: Tenant) -> None:
    start(tenant, tenant_spec(REPORTS))
    tenant.until(lambda: tenant.image() == REPORTS, "the first migration")
    tenant.apply(tenant_spec(HANGS, timeout="3s"))
    tenant.until(
        lambda: (tenant.migrations().get("attempt") or {}).get("phase") == "Running",
        "the hanging migration to run",
    )
    hanging = tenant.migrations()["attempt"]["jobUid"]
    tenant.apply(tenant_spec(PLAIN, timeout="3s"))

    seen: set[str] = set()

    def one_at_a_time() -> bool:
        active = [j for j in tenant.jobs() if not (j.get("status") or {}).get("conditions")]
        assert len(active) <= 1, "two migrations ran at once"
        seen.update(j["metadata"]["uid"] for j in tenant.jobs())
        if len(seen) == 1:
            message = tenant.condition("MigrationsSucceeded").get("message", "")
            assert "one migration at a time" in message or tenant.image() == REPORTS
        return tenant.image() == PLAIN

    tenant.until(one_at_a_time, "the newer image to roll after the hanging migration ended")
    assert hanging in seen
    assert len(seen) == 2
    assert tenant.migrations()["attempt"]["key"] == tenant.migrations()["key"]


@pytest.mark.security
def test_an_older_operators_running_migration_job_is_never_killed(tenant: Tenant) -> None:
    # Red team 3, finding 7: an operator before nonces recorded `Creating`, made the Job and
    # was replaced (an upgrade) before it recorded the Job's uid. Its Job runs on to its
    # end, and that end is the attempt's outcome.
    start(tenant, tenant_spec(REPORTS))
    tenant.until(lambda: tenant.image() == REPORTS, "the first migration")
    tenant.apply(tenant_spec(HANGS, timeout="20s"))
    tenant.until(
        lambda: (tenant.migrations().get("attempt") or {}).get("phase") == "Running",
        "the hanging migration to run",
    )
    job_uid = tenant.migrations()["attempt"]["jobUid"]
    tenant.kube.patch_merge(
        TENANT,
        tenant.name,
        {
            "status": {
                "migrations": {"attempt": {"phase": "Creating", "jobUid": None, "nonce": None}}
            }
        },
        subresource="status",
    )
    for _ in range(3):
        tenant.reconcile()
        (job,) = tenant.jobs()
        assert job["metadata"]["uid"] == job_uid
        assert not job["metadata"].get("deletionTimestamp")
    assert tenant.migrations()["attempt"]["phase"] == "Creating"
    assert "earlier operator version" in tenant.condition("MigrationsSucceeded")["message"]
    failed = tenant.until(
        lambda: (
            tenant.condition("MigrationsSucceeded").get("status") == "False"
            and tenant.condition("MigrationsSucceeded")
        ),
        "the older operator's migration to reach its deadline, recorded",
        timeout=90,
    )
    assert failed["reason"] == "DeadlineExceeded"
    assert tenant.migrations()["attempt"]["jobUid"] == job_uid
    assert tenant.image() == REPORTS

"""The migrations part against the red team's third round (issue 18, findings 6, 7, 9, 11
and 12): a refused Job retried with the backups it already has, an older operator's Job
never killed, the digest recorded while the Job runs (and a tag pin said as such), times
written under another clock, one-off names from the nonce.

FakeKube fakes the API server only (tests/harness/fake_kube.py); the Job controller, the
kubelet and the backup runner are played by hand, as in
tests/unit/reconcile/test_migrations_part.py.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

import pytest

from cleo_operator.api.migrations import MigrationAttempt
from cleo_operator.core.times import rfc3339
from cleo_operator.kube.kinds import BACKUP, JOB, POD, TENANT
from cleo_operator.reconcile.migration_backups import one_off_name
from cleo_operator.reconcile.migration_state import (
    backups_late,
    clamped_retry_at,
    new_nonce,
    reusable_backups,
)
from cleo_operator.reconcile.migrations import RETRY_ANNOTATION, MigrationsPart
from cleo_operator.reconcile.tenant import TenantReconciler
from cleo_operator.render.migrations import NONCE_ANNOTATION
from tests.harness.fake_kube import FakeKube
from tests.unit.reconcile.test_migrations_hardening import (
    DIGEST,
    Clock,
    add_schedule,
    attempt_of,
    migrating,
    one_offs,
    settled,
    unrecorded_job,
)
from tests.unit.reconcile.test_migrations_part import (
    NEW,
    NS,
    OLD,
    finish,
    image_of,
    jobs,
    report,
    set_spec,
    tenant_spec,
)
from tests.unit.reconcile.test_migrations_red_team_2 import refused_job, write_attempt
from tests.unit.reconcile.test_tenant_decisions import conditions, status_of

pytestmark = pytest.mark.security

PINNED = f"registry.example.com/cleoai@{DIGEST}"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def kube(clock: Clock) -> FakeKube:
    return FakeKube(now=clock)


@pytest.fixture
def tenants(kube: FakeKube, clock: Clock) -> TenantReconciler:
    return TenantReconciler(
        kube, parts=[MigrationsPart(kube)], operator_namespace="cleo-system", now=clock
    )


def creates(kube: FakeKube, kind: str) -> list[Any]:
    return [w for w in kube.writes if w.kind == kind and w.method == "create"]


def deletes(kube: FakeKube, kind: str) -> list[Any]:
    return [w for w in kube.writes if w.kind == kind and w.method == "delete"]


def backed_up_and_refused(kube: FakeKube, tenants: TenantReconciler) -> dict[str, Any]:
    """A settled tenant moved to NEW with backupFirst, whose one-off succeeded and whose
    migration Job the API server refuses (a policy on the image, say): the attempt."""
    settled(kube, tenants)
    add_schedule(kube, "nightly")
    set_spec(kube, tenant_spec(NEW, backupFirst=True))
    refused_job(kube)
    tenants.reconcile("acme")
    (one_off,) = one_offs(kube)
    report(kube, one_off, succeeded=True)
    tenants.reconcile("acme")
    attempt = attempt_of(kube)
    assert (attempt["phase"], attempt["reason"]) == ("Failed", "JobRefused")
    assert attempt["backups"] == [f"{one_off['metadata']['name']}/{one_off['metadata']['uid']}"]
    return attempt


# -- 6. a refused Job is retried with the backups it has ---------------------------------


def test_a_job_refused_after_its_backups_is_retried_without_new_backups(
    kube: FakeKube, tenants: TenantReconciler, clock: Clock
) -> None:
    first = backed_up_and_refused(kube, tenants)
    nonces = {first["nonce"]}
    for _ in range(4):
        clock.advance(600)  # past the back-off
        kube.writes.clear()
        tenants.reconcile("acme")
        assert len(creates(kube, "Job")) == 1  # the Job is tried again...
        assert creates(kube, "CleoBackup") == []  # ...and no backup taken again
        attempt = attempt_of(kube)
        assert (attempt["phase"], attempt["reason"]) == ("Failed", "JobRefused")
        assert attempt["backups"] == first["backups"]
        assert attempt["nonce"] not in nonces  # each try is an attempt of its own
        nonces.add(attempt["nonce"])
    assert len(one_offs(kube)) == 1
    kube._refusals.clear()  # the policy now admits the Job
    clock.advance(600)
    tenants.reconcile("acme")
    (job,) = jobs(kube)
    attempt = attempt_of(kube)
    assert (attempt["phase"], attempt["backups"]) == ("Running", first["backups"])
    assert job["metadata"]["annotations"][NONCE_ANNOTATION] == attempt["nonce"]
    finish(kube, job, ok=True, message="revision=2")
    tenants.reconcile("acme")
    assert image_of(kube) == NEW


def test_backups_more_than_an_hour_old_or_gone_are_taken_again(
    kube: FakeKube, tenants: TenantReconciler, clock: Clock
) -> None:
    backed_up_and_refused(kube, tenants)
    clock.advance(3601)
    tenants.reconcile("acme")
    attempt = attempt_of(kube)
    assert attempt["phase"] == "BackingUp"
    assert len(one_offs(kube)) == 2
    # Refused again after the new one-off succeeded; then that one-off is removed (its cap,
    # its time): the retry takes a new one rather than a backup that is not there.
    newest = kube.get(BACKUP, attempt["backups"][0].split("/")[0], namespace=NS)
    assert newest is not None
    report(kube, newest, succeeded=True)
    tenants.reconcile("acme")
    assert attempt_of(kube)["reason"] == "JobRefused"
    kube.delete(BACKUP, newest["metadata"]["name"], namespace=NS)
    clock.advance(600)
    tenants.reconcile("acme")
    assert attempt_of(kube)["phase"] == "BackingUp"
    assert len(one_offs(kube)) == 2  # the first, and a new one


def test_only_the_made_backups_of_a_refused_job_of_this_key_are_reused() -> None:
    now = datetime.datetime(2026, 1, 1, 12, tzinfo=datetime.UTC)
    made = ["cleo-migrate-abababab-c0ffee-0/uid-0"]
    refused = MigrationAttempt(
        key="k",
        image=NEW,
        phase="Failed",
        reason="JobRefused",
        retry_at=rfc3339(now),
        started=rfc3339(now - datetime.timedelta(minutes=30)),
        backups=made,
    )
    assert reusable_backups(refused, "k", now) == made
    assert reusable_backups(refused, "other", now) is None  # the spec moved on
    for change in (
        {"reason": "BackupRefused"},  # the backups were not all made
        {"backups": [*made, "cleo-migrate-abababab-c0ffee-1/"]},  # one only named
        {"backups": []},
        {"started": rfc3339(now - datetime.timedelta(hours=2))},  # too old
        {"started": None},
    ):
        assert reusable_backups(refused.model_copy(update=change), "k", now) is None, change


def test_a_plausible_retry_at_is_kept_and_a_far_one_clamped() -> None:
    now = datetime.datetime(2026, 1, 1, 12, tzinfo=datetime.UTC)
    soon = rfc3339(now + datetime.timedelta(seconds=600))
    assert clamped_retry_at(soon, now) == soon
    assert clamped_retry_at(rfc3339(now - datetime.timedelta(days=1)), now) is not None
    assert clamped_retry_at(rfc3339(now + datetime.timedelta(days=1)), now) == soon
    assert clamped_retry_at(None, now) is None
    assert clamped_retry_at("garbage", now) == "garbage"  # unreadable: due at once


# -- 7. an older operator's Job is never killed --------------------------------------------


def test_a_running_job_of_an_attempt_without_a_nonce_is_waited_for_not_killed(
    kube: FakeKube, tenants: TenantReconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = unrecorded_job(kube, tenants, monkeypatch)
    old = {k: v for k, v in attempt_of(kube).items() if k != "nonce"}
    write_attempt(kube, old)  # as an operator before nonces recorded it, then was replaced
    kube.writes.clear()
    for _ in range(3):
        tenants.reconcile("acme")
    assert deletes(kube, "Job") == []
    (still,) = jobs(kube)
    assert still["metadata"]["uid"] == job["metadata"]["uid"]
    assert attempt_of(kube)["phase"] == "Creating"
    cond = conditions(kube, "acme")["MigrationsSucceeded"]
    assert (cond["status"], cond["reason"]) == ("Unknown", "Running")
    assert "earlier operator version" in cond["message"]
    assert image_of(kube) == OLD
    finish(kube, still, ok=True, message="revision=2")
    tenants.reconcile("acme")  # ended: its outcome is the attempt's
    migrations = status_of(kube, "acme")["migrations"]
    assert (migrations["attempt"]["phase"], migrations["revision"]) == ("Succeeded", "2")
    assert migrations["attempt"]["jobUid"] == job["metadata"]["uid"]
    assert image_of(kube) == NEW


def test_a_failed_job_of_an_attempt_without_a_nonce_is_recorded_as_failed(
    kube: FakeKube, tenants: TenantReconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = unrecorded_job(kube, tenants, monkeypatch)
    write_attempt(kube, {k: v for k, v in attempt_of(kube).items() if k != "nonce"})
    finish(kube, job, ok=False, message="relation missing")
    tenants.reconcile("acme")
    cond = conditions(kube, "acme")["MigrationsSucceeded"]
    assert (cond["status"], cond["reason"]) == ("False", "BackoffLimitExceeded")
    assert "relation missing" in cond["message"]
    assert image_of(kube) == OLD


def test_a_job_not_the_operators_at_the_name_of_an_attempt_without_a_nonce_goes(
    kube: FakeKube, tenants: TenantReconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = unrecorded_job(kube, tenants, monkeypatch)
    write_attempt(kube, {k: v for k, v in attempt_of(kube).items() if k != "nonce"})
    kube.delete(JOB, job["metadata"]["name"], namespace=NS)
    planted = {k: v for k, v in job.items() if k != "status"}
    planted["metadata"] = {
        k: v for k, v in job["metadata"].items() if k in ("name", "namespace", "labels")
    }
    planted["metadata"]["annotations"] = dict(job["metadata"]["annotations"])
    planted = kube.create(planted)  # no owner reference: not the operator's
    tenants.reconcile("acme")
    assert kube.get(JOB, job["metadata"]["name"], namespace=NS) is None
    assert attempt_of(kube).get("jobUid") != planted["metadata"]["uid"]


# -- 9. the digest, and what the condition says without one ------------------------------


def run_pod(kube: FakeKube, job: dict[str, Any], *, image_id: str) -> str:
    """What the Job controller and the kubelet do: a running pod of the Job whose migrate
    container the kubelet reports with `image_id`."""
    labels = job["spec"]["template"]["metadata"]["labels"]
    name = f"{job['metadata']['name']}-run"
    owner = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": job["metadata"]["name"],
        "uid": job["metadata"]["uid"],
        "controller": True,
    }
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": NS,
                "labels": labels,
                "ownerReferences": [owner],
            },
            "spec": {"containers": [{"name": "migrate", "image": NEW}]},
        }
    )
    status = {
        "phase": "Running",
        "startTime": "2026-01-01T12:00:00Z",
        "containerStatuses": [
            {
                "name": "migrate",
                "imageID": image_id,
                "state": {"running": {"startedAt": "2026-01-01T12:00:01Z"}},
            }
        ],
    }
    kube.patch_merge(POD, name, {"status": status}, namespace=NS, subresource="status")
    return name


def complete(kube: FakeKube, job: dict[str, Any]) -> None:
    kube.patch_merge(
        JOB,
        job["metadata"]["name"],
        {"status": {"conditions": [{"type": "Complete", "status": "True"}]}},
        namespace=NS,
        subresource="status",
    )


def test_the_digest_is_recorded_while_the_job_runs_and_survives_a_deleted_pod(
    kube: FakeKube, tenants: TenantReconciler
) -> None:
    job = migrating(kube, tenants)
    pod = run_pod(kube, job, image_id=f"registry.example.com/cleoai@{DIGEST}")
    tenants.reconcile("acme")
    assert attempt_of(kube)["digest"] == PINNED
    kube.writes.clear()
    tenants.reconcile("acme")  # recorded once: nothing more is written, nor read
    assert kube.writes == []
    kube.delete(POD, pod, namespace=NS)  # a tenant admin may delete pods
    complete(kube, job)
    tenants.reconcile("acme")
    assert status_of(kube, "acme")["migrations"]["image"] == PINNED
    assert image_of(kube) == PINNED
    cond = conditions(kube, "acme")["MigrationsSucceeded"]
    assert cond["reason"] == "Migrated"
    assert "pinned to the tag" not in cond["message"]


def test_a_digest_of_another_repository_is_never_recorded(
    kube: FakeKube, tenants: TenantReconciler
) -> None:
    job = migrating(kube, tenants)
    run_pod(kube, job, image_id=f"evil.example.com/cleoai@{DIGEST}")
    tenants.reconcile("acme")
    assert "digest" not in attempt_of(kube)


def test_without_a_digest_the_condition_says_the_deployment_is_pinned_to_the_tag(
    kube: FakeKube, tenants: TenantReconciler
) -> None:
    job = migrating(kube, tenants)
    finish(kube, job, ok=True, message="revision=2")  # the kubelet reported no imageID
    tenants.reconcile("acme")
    assert image_of(kube) == NEW
    cond = conditions(kube, "acme")["MigrationsSucceeded"]
    assert (cond["status"], cond["reason"]) == ("True", "Migrated")
    assert "pinned to the tag (digest not reported)" in cond["message"]


# -- 11. times written under another clock ---------------------------------------------------


def test_a_retry_at_written_under_a_clock_far_ahead_is_clamped_to_the_longest_backoff(
    kube: FakeKube, tenants: TenantReconciler, clock: Clock
) -> None:
    settled(kube, tenants)
    set_spec(kube, tenant_spec(NEW))
    refused_job(kube)
    tenants.reconcile("acme")
    attempt = attempt_of(kube)
    attempt["retryAt"] = rfc3339(clock.now + datetime.timedelta(hours=5))
    write_attempt(kube, attempt)  # by a leader whose clock was 5 h ahead
    result = tenants.reconcile("acme")
    latest = clock.now + datetime.timedelta(seconds=600)
    assert attempt_of(kube)["retryAt"] == rfc3339(latest)  # written back, on this clock
    assert result.requeue_after is not None
    assert result.requeue_after <= 600
    kube.writes.clear()
    tenants.reconcile("acme")  # clamped once: a steady round writes nothing
    assert kube.writes == []
    kube._refusals.clear()
    clock.advance(600)
    tenants.reconcile("acme")
    assert len(jobs(kube)) == 1
    assert attempt_of(kube)["phase"] == "Running"


def test_a_start_recorded_under_a_clock_far_behind_does_not_fail_the_backups_at_once(
    kube: FakeKube, tenants: TenantReconciler, clock: Clock
) -> None:
    settled(kube, tenants)
    add_schedule(kube, "nightly")
    set_spec(kube, tenant_spec(NEW, backupFirst=True))
    tenants.reconcile("acme")
    attempt = attempt_of(kube)
    assert attempt["phase"] == "BackingUp"
    attempt["started"] = rfc3339(clock.now - datetime.timedelta(hours=7))
    write_attempt(kube, attempt)  # by a leader whose clock was 7 h behind
    clock.advance(60)
    tenants.reconcile("acme")
    cond = conditions(kube, "acme")["MigrationsSucceeded"]
    assert (cond["status"], cond["reason"]) == ("Unknown", "BackingUp")
    clock.advance(6 * 3600)  # the one-offs' own age (the API server's clock) decides
    tenants.reconcile("acme")
    cond = conditions(kube, "acme")["MigrationsSucceeded"]
    assert (cond["status"], cond["reason"]) == ("False", "BackupDeadlineExceeded")


def test_backups_late_trusts_no_negative_age() -> None:
    now = datetime.datetime(2026, 1, 1, 12, tzinfo=datetime.UTC)
    hour = datetime.timedelta(hours=1)
    assert not backups_late(rfc3339(now + 5 * hour), None, now, 3600)  # a start ahead
    assert not backups_late(rfc3339(now - 2 * hour), now - 0.5 * hour, now, 3600)
    assert backups_late(rfc3339(now - 2 * hour), now - 1.5 * hour, now, 3600)
    assert not backups_late(None, None, now, 3600)


# -- 12. one-off names from the nonce -----------------------------------------------------


def test_a_retry_a_whole_day_later_meets_no_one_off_of_the_day_before(
    kube: FakeKube, tenants: TenantReconciler, clock: Clock
) -> None:
    settled(kube, tenants)
    add_schedule(kube, "nightly")
    set_spec(kube, tenant_spec(NEW, backupFirst=True))
    tenants.reconcile("acme")
    (first,) = one_offs(kube)
    report(kube, first, succeeded=False)
    tenants.reconcile("acme")
    assert attempt_of(kube)["reason"] == "BackupFailed"
    clock.advance(24 * 3600)  # the same time of day; the one-off is still kept
    kube.patch_merge(TENANT, "acme", {"metadata": {"annotations": {RETRY_ANNOTATION: "1"}}})
    tenants.reconcile("acme")
    attempt = attempt_of(kube)
    assert attempt["phase"] == "BackingUp", attempt.get("message")
    assert len(one_offs(kube)) == 2


def test_one_off_names_are_valid_labels_from_the_nonce() -> None:
    key = "ab" * 32
    nonce = new_nonce()
    name = one_off_name(key, 15, nonce=nonce)
    assert name == f"cleo-migrate-abababab-{nonce[:6]}-15"
    assert len(name) <= 63
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)
    with pytest.raises(ValueError, match="hex nonce"):
        one_off_name(key, 0, nonce="XY..-_zz")
    with pytest.raises(ValueError, match="hex nonce"):
        one_off_name(key, 0, nonce="")

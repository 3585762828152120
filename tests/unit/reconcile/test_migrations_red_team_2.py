"""The migrations part against the red team's second round (issue 18, item 1): adoption by
nonce, the digest pin, Jobs by controller uid, the backup deadline, refusals retried with
back-off, redaction of every window of a secret.

FakeKube fakes the API server only (tests/harness/fake_kube.py); the Job controller and the
kubelet are played by hand, as in tests/unit/reconcile/test_migrations_part.py. What needs
the real API server (the admission policy) is in tests/security.
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import urllib.parse
from typing import Any

import hypothesis
import pytest
from hypothesis import strategies as st

from cleo_operator.core.redaction import REDACTED
from cleo_operator.kube.kinds import BACKUP, JOB, SECRET, TENANT
from cleo_operator.reconcile.migration_outcome import redact_windows, secret_values
from cleo_operator.reconcile.migrations import MigrationsPart
from cleo_operator.reconcile.tenant import TenantReconciler
from cleo_operator.render.migrations import NONCE_ANNOTATION
from tests.harness.fake_kube import FakeKube
from tests.unit.reconcile.test_migrations_hardening import (
    Clock,
    add_schedule,
    attempt_of,
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
    set_spec,
    tenant_spec,
)
from tests.unit.reconcile.test_tenant_decisions import conditions, status_of

pytestmark = pytest.mark.security


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server_clock(clock: Clock) -> Clock:
    """The API server's clock: the operator's by default; a test may set it apart."""
    return Clock()


@pytest.fixture
def kube(server_clock: Clock) -> FakeKube:
    return FakeKube(now=server_clock)


@pytest.fixture
def tenants(kube: FakeKube, clock: Clock) -> TenantReconciler:
    return TenantReconciler(
        kube, parts=[MigrationsPart(kube)], operator_namespace="cleo-system", now=clock
    )


def write_attempt(kube: FakeKube, attempt: dict[str, Any] | None) -> None:
    """Status as an operator wrote it (an older version, or a crash half-way); a merge
    patch, so the fields left out of `attempt` are removed (null)."""
    current = dict(status_of(kube, "acme")["migrations"])
    before = dict(current.get("attempt") or {})
    current["attempt"] = None if attempt is None else {**dict.fromkeys(before), **attempt}
    kube.patch_merge(TENANT, "acme", {"status": {"migrations": current}}, subresource="status")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# -- 1. adoption by nonce, not by clock ----------------------------------------------------


def test_a_job_made_while_the_servers_clock_lags_is_adopted(
    kube: FakeKube,
    tenants: TenantReconciler,
    server_clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The API server's clock is 5 s behind the operator's: the Job's creationTimestamp is
    # before the attempt's start. A clock comparison orphaned (and killed) it.
    server_clock.advance(-5)
    job = unrecorded_job(kube, tenants, monkeypatch)
    kube.writes.clear()
    tenants.reconcile("acme")
    assert not [w for w in kube.writes if w.kind == "Job" and w.method == "delete"]
    attempt = attempt_of(kube)
    assert (attempt["phase"], attempt["jobUid"]) == ("Running", job["metadata"]["uid"])


def test_a_stale_job_of_the_same_key_is_not_adopted_whatever_its_timestamp(
    kube: FakeKube, tenants: TenantReconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Job of an earlier attempt of this key (the operator's labels, key and owner, made
    # after the record by the clocks) but not this attempt's nonce: not adopted.
    job = unrecorded_job(kube, tenants, monkeypatch)
    assert job["metadata"]["annotations"][NONCE_ANNOTATION] == attempt_of(kube)["nonce"]
    kube.patch_merge(
        JOB,
        job["metadata"]["name"],
        {"metadata": {"annotations": {NONCE_ANNOTATION: "0" * 32}}},
        namespace=NS,
    )
    tenants.reconcile("acme")
    assert kube.get(JOB, job["metadata"]["name"], namespace=NS) is None
    assert attempt_of(kube).get("jobUid") is None
    tenants.reconcile("acme")  # the name is free: the attempt's own Job is made
    (made,) = jobs(kube)
    assert made["metadata"]["uid"] != job["metadata"]["uid"]
    assert attempt_of(kube)["jobUid"] == made["metadata"]["uid"]


def test_a_backing_up_attempt_recorded_without_a_nonce_starts_again(
    kube: FakeKube, tenants: TenantReconciler, clock: Clock
) -> None:
    settled(kube, tenants)
    add_schedule(kube, "nightly")
    set_spec(kube, tenant_spec(NEW, backupFirst=True))
    tenants.reconcile("acme")
    (first,) = one_offs(kube)
    old = attempt_of(kube)
    del old["nonce"]
    old["backups"] = [f"{first['metadata']['name']}/"]  # named, made, not recorded
    write_attempt(kube, old)
    clock.advance(7)
    tenants.reconcile("acme")
    attempt = attempt_of(kube)
    assert attempt["phase"] == "BackingUp"
    assert attempt["nonce"]
    names = [b.split("/")[0] for b in attempt["backups"]]
    assert first["metadata"]["name"] not in names  # a new one-off, under a new name
    assert all(not b.endswith("/") for b in attempt["backups"])


def test_a_one_off_at_the_recorded_name_without_the_nonce_is_not_taken(
    kube: FakeKube, tenants: TenantReconciler
) -> None:
    settled(kube, tenants)
    add_schedule(kube, "nightly")
    set_spec(kube, tenant_spec(NEW, backupFirst=True))
    tenants.reconcile("acme")
    (first,) = one_offs(kube)
    attempt = attempt_of(kube)
    # The operator's labels, made after the record: only the nonce tells it apart.
    kube.patch_merge(
        BACKUP,
        first["metadata"]["name"],
        {"metadata": {"annotations": {NONCE_ANNOTATION: "f" * 32}}},
        namespace=NS,
    )
    attempt["backups"] = [f"{first['metadata']['name']}/"]
    write_attempt(kube, attempt)
    tenants.reconcile("acme")
    cond = conditions(kube, "acme")["MigrationsSucceeded"]
    assert (cond["status"], cond["reason"]) == ("False", "BackupFailed")
    assert jobs(kube) == []
    assert image_of(kube) == OLD


def test_the_attempts_nonce_is_on_its_one_offs(kube: FakeKube, tenants: TenantReconciler) -> None:
    settled(kube, tenants)
    add_schedule(kube, "nightly")
    set_spec(kube, tenant_spec(NEW, backupFirst=True))
    tenants.reconcile("acme")
    (one_off,) = one_offs(kube)
    nonce = attempt_of(kube)["nonce"]
    assert len(nonce) == 32
    assert one_off["metadata"]["annotations"][NONCE_ANNOTATION] == nonce


# -- 4. refusals retried with back-off ----------------------------------------------------


def refused_job(kube: FakeKube) -> None:
    kube.refuse(
        "create", JOB, status=403, reason="Forbidden", message="exceeded quota: count/jobs.batch"
    )


def test_a_refused_job_is_retried_with_a_growing_backoff_kept_on_status(
    kube: FakeKube, tenants: TenantReconciler, clock: Clock
) -> None:
    settled(kube, tenants)
    set_spec(kube, tenant_spec(NEW))
    refused_job(kube)
    waits = []
    for _ in range(7):
        result = tenants.reconcile("acme")
        attempt = attempt_of(kube)
        assert (attempt["phase"], attempt["reason"]) == ("Failed", "JobRefused")
        cond = conditions(kube, "acme")["MigrationsSucceeded"]
        assert f"Retried automatically at {attempt['retryAt']}" in cond["message"]
        due = datetime.datetime.fromisoformat(attempt["retryAt"])
        waits.append((due - clock.now).total_seconds())
        assert result.requeue_after == pytest.approx(waits[-1])
        clock.advance(waits[-1] - 1)
        kube.writes.clear()
        tenants.reconcile("acme")  # not yet: nothing tried
        assert not [w for w in kube.writes if w.kind == "Job" and w.method == "create"]
        clock.advance(1)
    assert waits == [30, 60, 120, 240, 480, 600, 600]
    # A restarted operator (a new part, the same status) keeps the back-off.
    restarted = TenantReconciler(
        kube, parts=[MigrationsPart(kube)], operator_namespace="cleo-system", now=clock
    )
    kube._refusals.clear()  # the tenant admin freed the quota
    restarted.reconcile("acme")
    (job,) = jobs(kube)
    assert attempt_of(kube)["phase"] == "Running"
    finish(kube, job, ok=True, message="revision=2")
    restarted.reconcile("acme")
    assert image_of(kube) == NEW


def test_a_refused_one_off_backup_is_retried_after_its_backoff(
    kube: FakeKube, tenants: TenantReconciler, clock: Clock
) -> None:
    settled(kube, tenants)
    add_schedule(kube, "nightly")
    set_spec(kube, tenant_spec(NEW, backupFirst=True))
    kube.refuse("create", BACKUP, status=403, reason="Forbidden", message="exceeded quota")
    tenants.reconcile("acme")
    attempt = attempt_of(kube)
    assert (attempt["reason"], attempt["refusals"]) == ("BackupRefused", 1)
    kube._refusals.clear()
    clock.advance(30)
    tenants.reconcile("acme")
    assert attempt_of(kube)["phase"] == "BackingUp"
    assert len(one_offs(kube)) == 1


def test_a_failed_migration_is_still_not_retried_automatically(
    kube: FakeKube, tenants: TenantReconciler, clock: Clock
) -> None:
    settled(kube, tenants)
    set_spec(kube, tenant_spec(NEW))
    tenants.reconcile("acme")
    (job,) = jobs(kube)
    finish(kube, job, ok=False, message="boom")
    tenants.reconcile("acme")
    assert attempt_of(kube).get("retryAt") is None
    clock.advance(3600)
    kube.writes.clear()
    tenants.reconcile("acme")
    assert not [w for w in kube.writes if w.kind == "Job" and w.method == "create"]
    cond = conditions(kube, "acme")["MigrationsSucceeded"]
    assert cond["reason"] == "BackoffLimitExceeded"
    assert "Retried automatically" not in cond["message"]


# -- 5. redaction of every window of a secret --------------------------------------------


def windows(secret: str, width: int = 8) -> list[str]:
    return [secret[i : i + width] for i in range(len(secret) - width + 1)]


def test_no_eight_characters_of_any_secret_of_the_job_reach_status(
    kube: FakeKube, tenants: TenantReconciler
) -> None:
    password = secrets.token_urlsafe(32)  # the form the operator makes: 43 characters
    pooler = secrets.token_urlsafe(32)
    url = f"postgresql://acme:{urllib.parse.quote(password, safe='')}@db.example:5432/acme"
    settled(kube, tenants)
    kube.patch_merge(
        SECRET,
        "cleo-database",
        {"data": {"PGPASSWORD": b64(password), "DATABASE_URL": b64(url), "PGHOST": b64("db")}},
        namespace=NS,
    )
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "cleo-pooler", "namespace": NS},
            "data": {"CLIENT_PASSWORD": b64(pooler)},
        }
    )
    set_spec(kube, tenant_spec(NEW))
    tenants.reconcile("acme")
    (job,) = jobs(kube)
    log = "\n".join(
        [
            f"half of it: {password[:22]}",
            f"the other half: {password[21:]}!",
            f"a middle: x{password[10:19]}y",
            f"the pooler's: {pooler[5:30]}",
            f"reversed case: {password.swapcase()[:3]}",  # fewer than 8 of it: kept
            "sqlalchemy.exc.OperationalError: relation missing",
        ]
    )
    finish(kube, job, ok=False, message=log)
    tenants.reconcile("acme")
    text = json.dumps(kube.get(TENANT, "acme"))
    leaked = [w for secret in (password, pooler) for w in windows(secret) if w in text]
    assert leaked == []
    message = conditions(kube, "acme")["MigrationsSucceeded"]["message"]
    assert "relation missing" in message
    assert "half of it: <redacted>" in message


def test_the_poolers_configuration_and_certificate_blank_no_log_line(
    kube: FakeKube, tenants: TenantReconciler
) -> None:
    # Only the pooler's client credential is a secret; its pgbouncer.ini and certificate
    # are not, and their words ("transaction", "CERTIFICATE") must not blank the log.
    settled(kube, tenants)
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "cleo-pooler", "namespace": NS},
            "data": {
                "CLIENT_PASSWORD": b64(secrets.token_urlsafe(32)),
                "pgbouncer.ini": b64("[pgbouncer]\npool_mode = transaction\n"),
                "tls.crt": b64("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"),
            },
        }
    )
    set_spec(kube, tenant_spec(NEW))
    tenants.reconcile("acme")
    (job,) = jobs(kube)
    finish(kube, job, ok=False, message="pool_mode = transaction broke the CERTIFICATE check")
    tenants.reconcile("acme")
    message = conditions(kube, "acme")["MigrationsSucceeded"]["message"]
    assert "pool_mode = transaction broke the CERTIFICATE check" in message


def test_redact_windows_keeps_what_is_not_a_secret() -> None:
    secret = "Zq8-Uv2_Kp4Lm9Xw"
    text = f"host db.example, user acme, {secret[3:12]} and {secret} end"
    out = redact_windows(text, [secret])
    assert out == "host db.example, user acme, <redacted> and <redacted> end"
    assert redact_windows("short Zq8-Uv2 stays", [secret]) == "short Zq8-Uv2 stays"


def _covered_by_search(text: str, secrets: list[str], width: int = 8) -> list[bool]:
    """The positions of `text` inside a window of a secret, found the plain way (each
    window searched for in the text): the reference `redact_windows` must agree with."""
    covered = [False] * len(text)
    for secret in secrets:
        for i in range(len(secret) - width + 1):
            at = text.find(secret[i : i + width])
            while at != -1:
                covered[at : at + width] = [True] * width
                at = text.find(secret[i : i + width], at + 1)
    return covered


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    secrets_=st.lists(st.text(alphabet="ab-_Zq", min_size=0, max_size=20), max_size=4),
    text=st.text(alphabet="ab-_Zq x", max_size=60),
)
def test_redact_windows_agrees_with_searching_every_window(secrets_: list[str], text: str) -> None:
    # Linear in text and secrets (a tenant admin may fill the Secret with 1 MiB of values),
    # and the same result as searching the text for each window of each secret.
    covered = _covered_by_search(text, secrets_)
    expected = "".join(
        REDACTED if c and (i == 0 or not covered[i - 1]) else ("" if c else ch)
        for i, (ch, c) in enumerate(zip(text, covered, strict=True))
    )
    assert redact_windows(text, secrets_) == expected


def test_secret_values_are_the_secret_ones_of_a_real_secret() -> None:
    password = secrets.token_urlsafe(32)
    secret = {
        "data": {
            "PGHOST": b64("db.example"),
            "PGUSER": b64("acme"),
            "PGPASSWORD": b64(password),
            "DATABASE_URL": b64(f"postgresql://acme:{password}@db.example/acme"),
            "EXTRA": b64("hand-added-token"),
        }
    }
    assert secret_values(secret, None) == [password, "hand-added-token"]


# -- 3. Jobs by controller uid; a deadline for the backups ---------------------------------


def test_a_labelled_job_the_tenant_does_not_control_is_not_taken_for_a_migration_job(
    kube: FakeKube, tenants: TenantReconciler
) -> None:
    # A Job with the migration's labels whose controller is something else (as a CronJob's
    # Job would be, had a template carried the labels past the policy): not the part's.
    settled(kube, tenants)
    labels = {
        "app.kubernetes.io/managed-by": "cleo-operator",
        "app.kubernetes.io/component": "migration",
        "cleoai.io/tenant": "acme",
        "cleoai.io/migration": "0123456789",
    }
    foreign = kube.create(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": "nightly-29000000",
                "namespace": NS,
                "labels": labels,
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "CronJob",
                        "name": "nightly",
                        "uid": "cronjob-uid",
                        "controller": True,
                    }
                ],
            },
            "spec": {"template": {"metadata": {"labels": labels}, "spec": {"containers": []}}},
        }
    )
    set_spec(kube, tenant_spec(NEW))
    kube.writes.clear()
    tenants.reconcile("acme")
    assert not [w for w in kube.writes if w.kind == "Job" and w.method == "delete"]
    assert kube.get(JOB, "nightly-29000000", namespace=NS) == foreign
    assert attempt_of(kube)["phase"] == "Running"  # not held back by it either


def test_backups_that_never_end_fail_the_attempt_at_their_deadline(
    kube: FakeKube, tenants: TenantReconciler, clock: Clock
) -> None:
    settled(kube, tenants)
    add_schedule(kube, "nightly")
    set_spec(kube, tenant_spec(NEW, backupFirst=True))
    tenants.reconcile("acme")
    assert attempt_of(kube)["phase"] == "BackingUp"
    clock.advance(6 * 3600)
    tenants.reconcile("acme")  # at the deadline: still waiting
    cond = conditions(kube, "acme")["MigrationsSucceeded"]
    assert (cond["status"], cond["reason"]) == ("Unknown", "BackingUp")
    clock.advance(1)
    tenants.reconcile("acme")
    cond = conditions(kube, "acme")["MigrationsSucceeded"]
    assert (cond["status"], cond["reason"]) == ("False", "BackupDeadlineExceeded")
    assert "did not succeed within 6:00:00" in cond["message"]
    assert jobs(kube) == []
    assert image_of(kube) == OLD
    clock.advance(3600)
    tenants.reconcile("acme")  # not retried by itself
    assert jobs(kube) == []


def test_refusals_for_ever_never_overflow_what_status_holds(
    kube: FakeKube, tenants: TenantReconciler, clock: Clock
) -> None:
    settled(kube, tenants)
    set_spec(kube, tenant_spec(NEW))
    refused_job(kube)
    tenants.reconcile("acme")
    attempt = attempt_of(kube)
    attempt["refusals"] = 1000  # a week and more of a full quota
    write_attempt(kube, attempt)
    clock.advance(600)
    tenants.reconcile("acme")  # no validation error
    attempt = attempt_of(kube)
    assert (attempt["reason"], attempt["refusals"]) == ("JobRefused", 1000)

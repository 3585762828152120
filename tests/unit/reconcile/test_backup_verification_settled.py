"""A verification that only the CleoBackup or its Secret can unblock is not retried each minute.

The verifier runs against the in-memory API server (`FakeKube`); the verifications stop
before any site or store is reached (the credentials are refused first), so no database
is needed.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
from typing import Any

import pytest

from cleo_operator.api.backup import BackupRecord, CleoBackupStatus, parse_backup_spec
from cleo_operator.api.tenant import parse_tenant_spec
from cleo_operator.kube.kinds import SECRET
from cleo_operator.reconcile.backup_settings import BackupSettings
from cleo_operator.reconcile.backup_verification import BackupVerifier, VerificationStep
from tests.harness.fake_kube import FakeKube
from tests.harness.specs import tenant_spec
from tests.unit.render.test_backup_identity import ROLE, gcs, s3

NS = "cleo-acme"
KEY = ("cleo-acme", "nightly")
NOW = datetime.datetime(2026, 12, 3, 12, 0, tzinfo=datetime.UTC)


def verified(raw: dict[str, Any]) -> dict[str, Any]:
    return {**raw, "verification": {"enabled": True}}


def status(backup_id: str = "b-0001") -> CleoBackupStatus:
    record = BackupRecord(time="2026-12-03T11:00:00Z", succeeded=True, backup_id=backup_id)
    return CleoBackupStatus(last_successful_backup=record)


def gcs_secret(key: dict[str, Any]) -> dict[str, Any]:
    text = base64.b64encode(json.dumps(key).encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "gcs-key", "namespace": NS},
        "data": {"service-account.json": text},
    }


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime.datetime:
        return self.now


def reconcile_step(verifier: BackupVerifier, raw: dict[str, Any], clock: Clock) -> VerificationStep:
    """One reconcile's verification step for the CleoBackup `raw`."""
    return verifier.step(
        key=KEY,
        spec=parse_backup_spec(raw),
        tenant_spec=parse_tenant_spec(tenant_spec()),
        current=status(),
        now=clock.now,
    )


def run(verifier: BackupVerifier, raw: dict[str, Any], clock: Clock) -> VerificationStep:
    """One reconcile's step, then the next one's once the started verification ended."""
    step = reconcile_step(verifier, raw, clock)
    if step.started is not None:
        assert verifier.wait(10)
        step = reconcile_step(verifier, raw, clock)
    return step


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def kube() -> FakeKube:
    kube = FakeKube()
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    return kube


@pytest.fixture
def verifier(kube: FakeKube, clock: Clock) -> Any:
    verifier = BackupVerifier(
        kube, settings=BackupSettings(), pools=None, credentials=None, now=clock
    )
    yield verifier
    verifier.close()


def test_identity_not_shared_stands_until_the_spec_changes(
    verifier: BackupVerifier, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    raw = verified(s3(workloadIdentity={"roleArn": ROLE}, egress=["52.94.0.0/16"]))
    with caplog.at_level(logging.WARNING):
        first = run(verifier, raw, clock)
        assert first.verified.reason == "IdentityNotShared"
        for _ in range(3):
            clock.now += datetime.timedelta(hours=1)
            again = reconcile_step(verifier, raw, clock)
            assert again.started is None
            assert again.requeue_after is None
            assert again.verified.reason == "IdentityNotShared"
    assert len([r for r in caplog.records if "cannot run" in r.getMessage()]) == 1

    changed = verified(s3(credentialsSecret="backup-s3"))
    step = reconcile_step(verifier, changed, clock)
    assert step.started == "b-0001"
    assert verifier.wait(10)


def test_an_invalid_secret_stands_until_the_secret_changes(
    verifier: BackupVerifier, kube: FakeKube, clock: Clock
) -> None:
    raw = verified(gcs(credentialsSecret="gcs-key"))
    kube.apply(gcs_secret({"type": "service_account", "gcs_base_url": "http://10.0.0.1"}))
    first = run(verifier, raw, clock)
    assert first.verified.reason == "CredentialsInvalid"
    assert "gcs_base_url" in first.verified.message
    clock.now += datetime.timedelta(days=1)
    still = reconcile_step(verifier, raw, clock)
    assert still.started is None
    assert still.verified.reason == "CredentialsInvalid"

    kube.apply(gcs_secret({"type": "service_account", "client_email": "x"}))
    retried = reconcile_step(verifier, raw, clock)
    assert retried.started == "b-0001"
    assert verifier.wait(10)
    kube.delete(SECRET, "gcs-key", namespace=NS)


def test_a_passing_reason_is_still_retried_after_the_delay(
    verifier: BackupVerifier, kube: FakeKube, clock: Clock
) -> None:
    # A complete Secret: verification gets past the store to the keyring, which is
    # missing; that is not settled by the Secret, so it is retried after retry_seconds.
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "backup-s3", "namespace": NS},
            "data": {
                "AWS_ACCESS_KEY_ID": base64.b64encode(b"AK").decode(),
                "AWS_SECRET_ACCESS_KEY": base64.b64encode(b"s").decode(),
            },
        }
    )
    raw = verified(s3(credentialsSecret="backup-s3"))
    first = run(verifier, raw, clock)
    assert first.verified.reason == "KeyringMissing"
    assert first.requeue_after is not None
    clock.now += datetime.timedelta(minutes=2)
    later = reconcile_step(verifier, raw, clock)
    assert later.started == "b-0001"
    assert verifier.wait(10)

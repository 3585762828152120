"""One-offs made with spec.from: which CleoBackup they may run, what they run, when they go."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from cleo_operator.api.backup import CleoBackupStatus, parse_backup_spec
from cleo_operator.api.objects import KubeObject
from cleo_operator.reconcile.backup_source import (
    SourceError,
    effective_spec,
    one_off_expiry,
    resolve,
    source_spec,
)
from tests.harness.specs import backup_manifest

NAMESPACE = "cleo-acme"
S3 = {
    "type": "s3",
    "s3": {
        "endpoint": "https://10.0.0.5:9000",
        "bucket": "platform-backups",
        "prefix": "acme",
        "credentialsSecret": "platform-s3",
        "egress": ["10.0.0.5/32"],
    },
}
NIGHTLY: dict[str, Any] = {
    "tenant": "acme",
    "schedule": "0 3 * * *",
    "timeZone": "Europe/Berlin",
    "destination": S3,
    "retention": {"keepDaily": 7},
    "verification": {"enabled": True, "everyNth": 2},
    "resources": {"limits": {"memory": "1Gi"}},
}
ONE_OFF = parse_backup_spec({"tenant": "acme", "from": "nightly"})
T0 = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=datetime.UTC)


def source(spec: dict[str, Any], name: str = "nightly") -> KubeObject:
    obj: KubeObject = backup_manifest(name, NAMESPACE, spec)
    return obj


def deleting(obj: KubeObject) -> KubeObject:
    """`obj` as the API server shows it once its deletion began (a finalizer holds it)."""
    obj["metadata"]["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    return obj


def test_a_one_off_runs_with_the_sources_destination_retention_and_verification() -> None:
    spec = resolve(ONE_OFF, source(NIGHTLY), namespace=NAMESPACE)
    assert spec.to_api() == {
        "tenant": "acme",
        "destination": S3,
        "retention": {"keepDaily": 7},
        "verification": {"enabled": True, "everyNth": 2},
        "resources": {"limits": {"memory": "1Gi"}},
        "suspend": False,
        "concurrencyPolicy": "Forbid",
        "historyLimit": 10,
    }
    # Once, now: never the source's schedule (nor its time zone, which needs one).
    assert (spec.schedule, spec.time_zone, spec.from_backup) == (None, None, None)


def test_resources_a_platform_admin_set_on_the_one_off_win() -> None:
    one_off = parse_backup_spec(
        {"tenant": "acme", "from": "nightly", "resources": {"limits": {"memory": "2Gi"}}}
    )
    checked = source_spec(one_off, source(NIGHTLY), namespace=NAMESPACE)
    assert checked.time_zone == "Europe/Berlin"
    spec = effective_spec(one_off, checked)
    assert spec.resources is not None
    assert spec.resources.limits is not None
    assert spec.resources.limits.memory == "2Gi"


def test_a_spec_without_from_is_its_own_effective_spec() -> None:
    spec = parse_backup_spec(NIGHTLY)
    assert resolve(spec, None, namespace=NAMESPACE) is spec


@pytest.mark.parametrize(
    ("found", "reason", "words"),
    [
        (None, "SourceNotFound", f"spec.from: CleoBackup {NAMESPACE}/nightly does not exist"),
        (
            source({**NIGHTLY, "tenant": "globex"}),
            "SourceMismatch",
            "backs up tenant globex, not acme (spec.tenant)",
        ),
        (
            source({"tenant": "acme", "from": "weekly"}),
            "SourceIsOneOff",
            "itself a one-off made with spec.from; name the CleoBackup it runs (weekly)",
        ),
        (source({"tenant": "acme"}), "SourceInvalid", "has an invalid spec"),
        (source({**NIGHTLY, "suspend": True}), "SourceSuspended", "is suspended"),
        (deleting(source(NIGHTLY)), "SourceDeleting", "is being deleted"),
    ],
    ids=["absent", "another-tenant", "chained", "invalid", "suspended", "deleting"],
)
def test_a_source_it_may_not_run_is_refused_with_a_reason(
    found: KubeObject | None, reason: str, words: str
) -> None:
    with pytest.raises(SourceError) as caught:
        resolve(ONE_OFF, found, namespace=NAMESPACE)
    assert caught.value.reason == reason
    assert words in caught.value.message


def test_nothing_of_another_tenants_source_leaks_into_the_refusal() -> None:
    with pytest.raises(SourceError) as caught:
        resolve(ONE_OFF, source({**NIGHTLY, "tenant": "globex"}), namespace=NAMESPACE)
    for secret in ("platform-backups", "platform-s3", "10.0.0.5"):
        assert secret not in caught.value.message


def status(*ends: datetime.datetime | None) -> CleoBackupStatus:
    return CleoBackupStatus.model_validate(
        {
            "history": [
                {
                    "startTime": "2030-01-01T00:00:00Z",
                    **({"endTime": f"{e:%Y-%m-%dT%H:%M:%SZ}"} if e else {}),
                }
                for e in ends
            ]
        }
    )


def test_a_one_off_goes_a_ttl_after_its_newest_run_ended() -> None:
    ended = T0 + datetime.timedelta(minutes=5)
    expiry = one_off_expiry(
        created=T0,
        status=status(T0 + datetime.timedelta(minutes=1), ended),
        active=False,
        ttl_seconds=3600,
    )
    assert expiry == ended + datetime.timedelta(hours=1)


def test_a_one_off_that_never_ran_goes_a_ttl_after_its_creation() -> None:
    expiry = one_off_expiry(created=T0, status=status(None), active=False, ttl_seconds=60)
    assert expiry == T0 + datetime.timedelta(seconds=60)


def test_a_one_off_whose_job_runs_stays() -> None:
    assert one_off_expiry(created=T0, status=status(T0), active=True, ttl_seconds=1) is None
    assert one_off_expiry(created=None, status=status(), active=False, ttl_seconds=1) is None


def test_a_one_off_goes_at_its_max_age_whatever_its_job_does() -> None:
    # A tenant keeps the runner pod from starting (or ending): the Job stays active.
    cap = T0 + datetime.timedelta(hours=48)
    kept = one_off_expiry(
        created=T0, status=status(), active=True, ttl_seconds=60, max_age_seconds=48 * 3600
    )
    assert kept == cap
    # A run that ended late: the TTL would run past the cap, the cap wins.
    late = one_off_expiry(
        created=T0,
        status=status(T0 + datetime.timedelta(hours=47)),
        active=False,
        ttl_seconds=24 * 3600,
        max_age_seconds=48 * 3600,
    )
    assert late == cap
    # Otherwise the TTL after the run decides, as before.
    early = one_off_expiry(
        created=T0,
        status=status(T0 + datetime.timedelta(hours=1)),
        active=False,
        ttl_seconds=3600,
        max_age_seconds=48 * 3600,
    )
    assert early == T0 + datetime.timedelta(hours=2)

"""A CleoBackup's conditions and phase: what people and alerts read, decided without a cluster."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from cleo_operator.api.backup import (
    BackupRecord,
    BackupRun,
    BackupVerification,
    CleoBackupSpec,
    CleoBackupStatus,
    parse_backup_spec,
)
from cleo_operator.reconcile.backup_conditions import (
    duration_text,
    freshness,
    last_backup_observation,
    next_run_text,
    phase,
    ready,
    time_zone,
    verification_due,
    verifying_observation,
)
from cleo_operator.reconcile.status import Observation

UTC = datetime.UTC
NOW = datetime.datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)
DAILY: dict[str, Any] = {
    "tenant": "acme",
    "schedule": "0 3 * * *",
    "destination": {"type": "pvc", "pvc": {"claimName": "backups"}},
}
ONE_OFF: dict[str, Any] = {
    "tenant": "acme",
    "destination": {"type": "pvc", "pvc": {"claimName": "backups"}},
}


def spec(raw: dict[str, Any] = DAILY, **changes: Any) -> CleoBackupSpec:
    return parse_backup_spec({**raw, **changes})


def record(
    started: datetime.datetime, backup_id: str = "b1", sequence: int | None = 1
) -> BackupRecord:
    return BackupRecord(
        time=started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        succeeded=True,
        backup_id=backup_id,
        size_bytes=1234,
        sequence=sequence,
    )


def status_with(newest: BackupRecord | None = None, **fields: Any) -> CleoBackupStatus:
    return CleoBackupStatus(last_successful_backup=newest, **fields)


def verification(backup_id: str, *, passed: bool, sequence: int | None) -> BackupVerification:
    return BackupVerification(
        backup_id=backup_id,
        time="2026-03-10T04:00:00Z",
        passed=passed,
        reason="Verified" if passed else "ContentMismatch",
        message="every table matched" if passed else "table orders: 3 rows, expected 4",
        sequence=sequence,
    )


# --- BackupFresh ------------------------------------------------------------------------------


def test_a_backup_within_twice_the_interval_is_fresh_until_a_stated_time() -> None:
    made = NOW - datetime.timedelta(hours=9)  # 03:00 today
    observed, stale_in = freshness(spec(), status_with(record(made)), UTC, "", NOW)
    assert observed.status == "True"
    assert observed.reason == "Fresh"
    # Stale two intervals (two days) after it started; the message names that moment.
    assert "2026-03-12T03:00:00Z" in observed.message
    assert "1d" in observed.message
    assert stale_in == pytest.approx((made + datetime.timedelta(days=2) - NOW).total_seconds() + 1)


def test_a_backup_older_than_twice_the_interval_is_stale() -> None:
    made = NOW - datetime.timedelta(days=2, seconds=1)
    observed, stale_in = freshness(spec(), status_with(record(made)), UTC, "", NOW)
    assert observed.status == "False"
    assert observed.reason == "Stale"
    assert "stale since" in observed.message
    assert "spec.suspend" not in observed.message
    assert stale_in is None  # nothing changes by waiting


def test_staleness_is_reached_exactly_at_twice_the_interval() -> None:
    made = NOW - datetime.timedelta(days=2)
    observed, _ = freshness(spec(), status_with(record(made)), UTC, "", NOW)
    assert observed.status == "False"


def test_a_suspended_schedule_says_so_when_the_backup_goes_stale() -> None:
    made = NOW - datetime.timedelta(days=3)
    observed, _ = freshness(spec(suspend=True), status_with(record(made)), UTC, "", NOW)
    assert observed.status == "False"
    assert "(spec.suspend is true)" in observed.message


def test_freshness_is_unknown_before_the_first_success_and_true_for_a_one_off() -> None:
    observed, stale_in = freshness(spec(), status_with(), UTC, "", NOW)
    assert (observed.status, observed.reason, stale_in) == ("Unknown", "NoBackupYet", None)
    made = NOW - datetime.timedelta(days=30)
    observed, stale_in = freshness(spec(ONE_OFF), status_with(record(made)), UTC, "", NOW)
    # A one-off backup has no schedule to fall behind: never stale.
    assert (observed.status, observed.reason, stale_in) == ("True", "OneOff", None)


def test_the_time_zone_note_ends_the_freshness_message() -> None:
    made = NOW - datetime.timedelta(hours=1)
    note = " (time zone Mars/Olympus is unknown to the operator: UTC)"
    observed, _ = freshness(spec(), status_with(record(made)), UTC, note, NOW)
    assert observed.message.endswith(note)


def test_an_unknown_time_zone_falls_back_to_utc_with_a_note() -> None:
    assert time_zone(spec()) == (UTC, "")
    berlin, note = time_zone(spec(timeZone="Europe/Berlin"))
    assert (str(berlin), note) == ("Europe/Berlin", "")
    # The API server judges the CronJob's zone; one this operator lacks only shapes messages.
    unknown = spec().model_copy(update={"time_zone": "Mars/Olympus"})
    assert time_zone(unknown) == (
        UTC,
        " (time zone Mars/Olympus is unknown to the operator: UTC)",
    )


def test_durations_read_in_days_hours_and_minutes() -> None:
    assert duration_text(datetime.timedelta(days=1)) == "1d"
    assert duration_text(datetime.timedelta(days=3, hours=2, minutes=5)) == "3d2h5m"
    assert duration_text(datetime.timedelta(minutes=90)) == "1h30m"
    assert duration_text(datetime.timedelta(seconds=42)) == "42s"


# --- LastBackupSucceeded ----------------------------------------------------------------------


def test_the_newest_run_by_start_time_decides_last_backup_succeeded() -> None:
    assert last_backup_observation(CleoBackupStatus()).status == "Unknown"
    runs = [
        BackupRun(start_time="2026-03-09T03:00:00Z", succeeded=True, backup_id="old", job="j1"),
        BackupRun(
            start_time="2026-03-10T03:00:00Z",
            succeeded=False,
            reason="DumpFailed",
            message="pg_dump exited 1",
            job="j2",
        ),
    ]
    failed = last_backup_observation(CleoBackupStatus(history=runs))
    assert (failed.status, failed.reason) == ("False", "DumpFailed")
    assert "Job j2" in failed.message
    assert "pg_dump exited 1" in failed.message
    succeeded = last_backup_observation(CleoBackupStatus(history=list(reversed(runs[:1]))))
    assert (succeeded.status, succeeded.reason) == ("True", "BackupSucceeded")
    assert "backup old" in succeeded.message


# --- Ready ------------------------------------------------------------------------------------

TRUE = Observation("True", "Fine", "fine")
UNKNOWN = Observation("Unknown", "NotVerifiedYet", "no backup has been verified yet")


def ready_of(
    current: CleoBackupStatus,
    *,
    raw: dict[str, Any] = DAILY,
    problem: Observation | None = None,
    failures: list[str] | None = None,
    last: Observation = TRUE,
    fresh: Observation = TRUE,
    verified: Observation = UNKNOWN,
) -> Observation:
    return ready(
        spec=spec(raw),
        current=current,
        problem=problem,
        failures=failures or [],
        last=last,
        freshness=fresh,
        verified=verified,
        tz=UTC,
        now=NOW,
    )


def test_ready_when_a_fresh_backup_exists_and_verification_did_not_fail() -> None:
    current = status_with(record(NOW - datetime.timedelta(hours=9)))
    observed = ready_of(current)
    assert (observed.status, observed.reason) == ("True", "BackupAvailable")
    assert observed.message == "backup b1 of 2026-03-10T03:00:00Z is available, 1234 bytes"


def test_what_blocks_ready_comes_first_in_a_fixed_order() -> None:
    current = status_with(record(NOW - datetime.timedelta(hours=9)))
    problem = Observation("False", "KeyringMissing", "the keyring Secret does not exist")
    stale = Observation("False", "Stale", "too old")
    broken = Observation("False", "ContentMismatch", "rows differ")
    failed = Observation("False", "DumpFailed", "pg_dump exited 1")
    # A missing prerequisite names itself, before anything else.
    assert ready_of(current, problem=problem, failures=["Role x: forbidden"]) == problem
    applied = ready_of(current, failures=["Role x: forbidden"], last=failed)
    assert (applied.reason, applied.message) == (
        "ApplyFailed",
        "could not apply: Role x: forbidden",
    )
    assert ready_of(current, last=failed, fresh=stale).reason == "LastBackupFailed"
    assert ready_of(current, fresh=stale, verified=broken).reason == "BackupStale"
    assert ready_of(current, verified=broken) == Observation(
        "False", "VerificationFailed", "rows differ"
    )


def test_not_ready_without_a_backup_says_when_the_next_run_is() -> None:
    observed = ready_of(status_with())
    assert (observed.status, observed.reason) == ("False", "NoBackupYet")
    assert observed.message.endswith("the next scheduled run is due at 2026-03-11T03:00:00Z")
    one_off = ready_of(status_with(), raw=ONE_OFF)
    assert one_off.message.endswith("the one-off backup has not finished yet")
    suspended = ready_of(status_with(), raw={**DAILY, "suspend": True})
    assert suspended.message.endswith("the schedule is suspended (spec.suspend)")


# --- next run ---------------------------------------------------------------------------------


def test_the_next_run_follows_the_schedule_in_its_time_zone() -> None:
    assert next_run_text(spec(), UTC, NOW) == (
        "the next scheduled run is due at 2026-03-11T03:00:00Z"
    )
    berlin, _ = time_zone(spec(timeZone="Europe/Berlin"))
    # 03:00 in Berlin (UTC+1 in March before the change) is 02:00 UTC.
    assert next_run_text(spec(timeZone="Europe/Berlin"), berlin, NOW) == (
        "the next scheduled run is due at 2026-03-11T02:00:00Z"
    )
    assert next_run_text(spec(suspend=True), UTC, NOW) == (
        "the schedule is suspended (spec.suspend)"
    )


# --- phase ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "flags", "expected"),
    [
        (DAILY, {"active": True, "blocked": True, "failed": True}, "Running"),
        ({**DAILY, "suspend": True}, {"blocked": True}, "Suspended"),
        (DAILY, {"blocked": True, "failed": True}, "Pending"),
        (DAILY, {"failed": True, "succeeded": True}, "Failed"),
        (DAILY, {"succeeded": True}, "Succeeded"),
        (DAILY, {}, "Scheduled"),
        (ONE_OFF, {}, "Pending"),
        (ONE_OFF, {"succeeded": True}, "Succeeded"),
    ],
)
def test_the_phase_puts_a_running_job_first_then_suspension_blocking_and_outcome(
    raw: dict[str, Any], flags: dict[str, bool], expected: str
) -> None:
    args = {"active": False, "blocked": False, "failed": False, "succeeded": False, **flags}
    assert phase(spec=spec(raw), **args) == expected


# --- verification due -------------------------------------------------------------------------


def verifying_spec(every_nth: int = 3, *, enabled: bool = True) -> CleoBackupSpec:
    return spec(verification={"enabled": enabled, "everyNth": every_nth})


def test_the_first_backup_is_always_verified_then_every_nth() -> None:
    newest = record(NOW, "b4", sequence=4)
    assert verification_due(verifying_spec(), newest, None)
    assert not verification_due(
        verifying_spec(), newest, verification("b2", passed=True, sequence=2)
    )
    assert verification_due(verifying_spec(), newest, verification("b1", passed=True, sequence=1))
    assert verification_due(verifying_spec(1), newest, verification("b3", passed=True, sequence=3))


def test_a_verified_backup_is_not_verified_again_and_nothing_is_due_when_off() -> None:
    newest = record(NOW, "b4", sequence=4)
    latest = verification("b4", passed=False, sequence=4)
    assert not verification_due(verifying_spec(1), newest, latest)
    assert not verification_due(verifying_spec(enabled=False), newest, None)
    assert not verification_due(spec(), newest, None)


def test_without_sequence_numbers_any_new_backup_is_due() -> None:
    newest = record(NOW, "b4", sequence=None)
    assert verification_due(verifying_spec(), newest, verification("b3", passed=True, sequence=3))


def test_while_verifying_the_previous_verdict_stands() -> None:
    first = verifying_observation("b1", None)
    assert (first.status, first.reason) == ("Unknown", "Verifying")
    assert "verifying backup b1" in first.message
    after_failure = verifying_observation("b4", verification("b1", passed=False, sequence=1))
    assert after_failure.status == "False"
    assert "the previous verification: table orders" in after_failure.message
    after_pass = verifying_observation("b4", verification("b1", passed=True, sequence=1))
    assert after_pass.status == "True"

"""A CleoBackup's run history: entries from reports, newest first, counted, never twice."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from cleo_operator.api.backup import CleoBackupStatus
from cleo_operator.backup.report import RunReport, report_from_message
from cleo_operator.kube.kinds import BACKUP
from cleo_operator.reconcile.backup_jobs import controlled_by
from cleo_operator.reconcile.backup_status import (
    entry_from_report,
    failed_entry,
    read_status,
    record_run,
    status_with_run,
)
from cleo_operator.render.meta import managed_by_operator
from tests.harness.fake_kube import FakeKube

T0 = datetime(2026, 3, 1, 3, 0, 0, 250000, tzinfo=UTC)


def succeeded(start: datetime, backup_id: str) -> RunReport:
    return {
        "outcome": "Succeeded",
        "reason": "BackupSucceeded",
        "message": f"backup {backup_id}: 1234 bytes, 3 tables, 1.5s",
        "tenant": "acme",
        "backup": {
            "backupId": backup_id,
            "tenant": "acme",
            "database": "cleo_acme",
            "storage": "backup directory /var/lib/cleo/backup",
            "archive": f"{backup_id}.archive",
            "manifest": f"{backup_id}.manifest.json",
            "startTime": start.isoformat().replace("+00:00", "Z"),
            "endTime": (start + timedelta(seconds=1.5)).isoformat().replace("+00:00", "Z"),
            "durationSeconds": 1.5,
            "archiveSize": 1234,
            "dumpSize": 1000,
            "archiveSha256": "a" * 64,
            "dumpSha256": "b" * 64,
            "keyId": "dk-1",
            "tables": 3,
            "rows": 10,
            "serverVersion": "15.6",
        },
    }


def failed(reason: str = "DatabaseUnavailable") -> RunReport:
    return {
        "outcome": "Failed",
        "reason": reason,
        "message": "cannot connect to database 'cleo_acme' on db:5432 as 'cleo_acme'",
        "tenant": "acme",
    }


def apply(status: dict[str, Any], report: RunReport, start: datetime, **kw: Any) -> dict[str, Any]:
    entry = entry_from_report(
        report, job=kw.get("job", f"job-{start:%H%M}"), started=start, ended=start
    )
    fields = status_with_run(status, entry, history_limit=kw.get("limit", 10))
    assert fields is not None
    return {**status, **fields}


def test_a_successful_run_becomes_history_last_backup_and_the_first_sequence() -> None:
    status = apply({}, succeeded(T0, "20260301T030000Z-00000001"), T0)
    parsed = CleoBackupStatus.model_validate(status)
    (run,) = parsed.history
    assert run.succeeded is True
    assert run.reason == "BackupSucceeded"
    assert run.backup_id == "20260301T030000Z-00000001"
    assert run.start_time == "2026-03-01T03:00:00Z"  # whole seconds, as Kubernetes writes
    assert run.archive == (
        "backup directory /var/lib/cleo/backup: 20260301T030000Z-00000001.archive"
    )
    assert run.job == "job-0300"
    assert parsed.successful_backups == 1
    assert parsed.last_backup is not None
    assert parsed.last_successful_backup is not None
    assert parsed.last_backup.size_bytes == 1234
    assert parsed.last_successful_backup.dump_size_bytes == 1000
    assert parsed.last_successful_backup.duration_seconds == 1.5
    assert parsed.last_successful_backup.sequence == 1


def test_a_failed_run_is_recorded_and_keeps_the_last_success() -> None:
    status = apply({}, succeeded(T0, "20260301T030000Z-00000001"), T0)
    later = T0 + timedelta(days=1)
    status = apply(status, failed(), later)
    parsed = CleoBackupStatus.model_validate(status)
    assert [r.succeeded for r in parsed.history] == [False, True]  # newest first
    assert parsed.history[0].reason == "DatabaseUnavailable"
    assert parsed.history[0].backup_id is None
    assert parsed.last_backup is not None
    assert parsed.last_backup.succeeded is False
    assert parsed.last_backup.archive is None
    assert parsed.last_successful_backup is not None
    assert parsed.last_successful_backup.backup_id == "20260301T030000Z-00000001"
    assert parsed.successful_backups == 1
    # ...and the next run succeeds: the failure stopped nothing.
    status = apply(status, succeeded(later + timedelta(days=1), "20260303T030000Z-00000002"), later)
    parsed = CleoBackupStatus.model_validate(status)
    assert parsed.successful_backups == 2
    assert parsed.last_successful_backup is not None
    assert parsed.last_successful_backup.sequence == 2


def test_history_is_cut_to_the_limit_newest_first() -> None:
    status: dict[str, Any] = {}
    for day in range(6):
        start = T0 + timedelta(days=day)
        status = apply(status, succeeded(start, f"2026030{day + 1}T030000Z-0000000{day}"), start)
    parsed = CleoBackupStatus.model_validate(status)
    assert len(parsed.history) == 6
    status = apply(status, failed(), T0 + timedelta(days=7), limit=3)
    parsed = CleoBackupStatus.model_validate(status)
    assert [r.start_time[:10] for r in parsed.history] == ["2026-03-08", "2026-03-06", "2026-03-05"]


def test_the_same_run_is_never_recorded_twice() -> None:
    report = succeeded(T0, "20260301T030000Z-00000001")
    status = apply({}, report, T0, job="nightly-1")
    entry = entry_from_report(report, job="nightly-1", started=T0, ended=T0)
    assert status_with_run(status, entry, history_limit=10) is None
    # Another Job's run at the same second is another run.
    other = entry_from_report(report, job="nightly-2", started=T0, ended=T0)
    assert status_with_run(status, other, history_limit=10) is not None


def test_a_late_report_of_an_older_run_does_not_hide_the_newer_one() -> None:
    newer = T0 + timedelta(hours=1)
    status = apply({}, succeeded(newer, "20260301T040000Z-00000002"), newer)
    status = apply(status, succeeded(T0, "20260301T030000Z-00000001"), T0)
    parsed = CleoBackupStatus.model_validate(status)
    assert [r.backup_id for r in parsed.history] == [
        "20260301T040000Z-00000002",
        "20260301T030000Z-00000001",
    ]
    assert parsed.last_backup is not None
    assert parsed.last_successful_backup is not None
    assert parsed.last_backup.backup_id == "20260301T040000Z-00000002"
    assert parsed.last_successful_backup.backup_id == "20260301T040000Z-00000002"
    assert parsed.successful_backups == 2


def test_a_run_without_a_report_is_a_failure_with_its_reason() -> None:
    entry = failed_entry(
        reason="BackoffLimitExceeded",
        message="the backup pod of Job nightly-1 ended without a report",
        job="nightly-1",
        started=T0,
        ended=T0 + timedelta(seconds=30),
    )
    fields = status_with_run({}, entry, history_limit=10)
    assert fields is not None
    parsed = CleoBackupStatus.model_validate(fields)
    assert parsed.history[0].reason == "BackoffLimitExceeded"
    assert parsed.history[0].succeeded is False
    assert parsed.last_backup is not None
    assert parsed.last_backup.duration_seconds == 30.0
    assert parsed.successful_backups is None


def test_long_messages_are_cut_to_what_status_allows() -> None:
    report = failed()
    report["message"] = "x" * 5000
    entry = entry_from_report(report, job="j", started=T0, ended=T0)
    assert entry.run.message is not None
    assert len(entry.run.message) == 1024


def test_a_history_entry_broken_by_hand_is_dropped_not_fatal() -> None:
    status = apply({}, succeeded(T0, "20260301T030000Z-00000001"), T0)
    status["history"].append({"startTime": "yesterday", "succeeded": "maybe"})
    parsed = read_status(status)
    assert len(parsed.history) == 1
    assert parsed.successful_backups == 1
    status["lastBackup"] = {"time": 5}
    assert read_status(status).last_backup is None


# --- reports in termination messages --------------------------------------------------------


def test_a_report_is_read_back_from_a_termination_message() -> None:
    report = succeeded(T0, "20260301T030000Z-00000001")
    text = json.dumps(report, separators=(",", ":"), sort_keys=True)
    assert report_from_message(text) == report
    assert report_from_message(json.dumps(failed())) == failed()


def test_anything_else_in_a_termination_message_is_not_a_report() -> None:
    assert report_from_message("Traceback (most recent call last): ...") is None
    assert report_from_message("[1, 2]") is None
    assert report_from_message(json.dumps({"outcome": "Maybe", "reason": "x"})) is None
    broken = succeeded(T0, "20260301T030000Z-00000001")
    broken["backup"]["archiveSize"] = "large"  # type: ignore[typeddict-item]
    assert report_from_message(json.dumps(broken)) is None


def test_only_the_jobs_controlled_pods_are_its_own() -> None:
    job = {"metadata": {"name": "cleo-backup-n-1", "uid": "job-uid"}}

    def pod(*refs: dict[str, object]) -> dict[str, object]:
        return {"metadata": {"name": "p", "ownerReferences": list(refs)}}

    assert controlled_by(pod({"uid": "job-uid", "controller": True}), job)
    assert not controlled_by(pod({"uid": "job-uid"}), job)  # an owner, not the controller
    assert not controlled_by(pod({"uid": "other", "controller": True}), job)
    assert not controlled_by(pod(), job)
    assert not controlled_by({"metadata": {}}, job)
    assert not controlled_by(pod({"controller": True}), {"metadata": {"name": "j"}})


def test_an_object_is_ours_by_the_managed_by_label_only() -> None:
    assert managed_by_operator(
        {"metadata": {"labels": {"app.kubernetes.io/managed-by": "cleo-operator"}}}
    )
    assert not managed_by_operator(
        {"metadata": {"labels": {"app.kubernetes.io/managed-by": "helm"}}}
    )
    assert not managed_by_operator({"metadata": {"labels": {"cleoai.io/backup": "n"}}})
    assert not managed_by_operator({"metadata": {}})


def test_record_run_through_the_status_writer_keeps_what_the_run_does_not_move() -> None:
    # The in-memory API server (a fake of that boundary; the cluster tests in
    # tests/integration/test_status_writer.py prove the writer on the real one).
    kube = FakeKube()
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "cleo-acme"}})
    kube.create(
        {
            "apiVersion": "cleoai.io/v1alpha1",
            "kind": "CleoBackup",
            "metadata": {"name": "nightly", "namespace": "cleo-acme"},
            "spec": {"tenant": "acme"},
            "status": {},
        }
    )

    def record(report: RunReport, start: datetime) -> dict[str, Any]:
        entry = entry_from_report(report, job=f"job-{start:%H%M}", started=start, ended=start)
        outcome = record_run(kube, namespace="cleo-acme", name="nightly", entry=entry)
        assert outcome == "recorded"
        backup = kube.get(BACKUP, "nightly", namespace="cleo-acme")
        assert backup is not None
        return dict(backup["status"])

    first = record(succeeded(T0, "20260301T030000Z-00000001"), T0)
    assert first["successfulBackups"] == 1
    # A failed run moves lastBackup, and leaves the last success and its sequence alone.
    later = record(failed(), T0 + timedelta(days=1))
    assert later["lastSuccessfulBackup"] == first["lastSuccessfulBackup"]
    assert later["successfulBackups"] == 1
    assert later["lastBackup"]["succeeded"] is False
    # A late report of an older run lands in the history and hides nothing newer.
    late = record(failed("DumpFailed"), T0 - timedelta(days=1))
    assert late["lastBackup"] == later["lastBackup"]
    assert late["lastSuccessfulBackup"] == first["lastSuccessfulBackup"]
    assert len(late["history"]) == 3


def test_a_report_time_without_a_zone_falls_back_to_the_runs_own_clock() -> None:
    report = succeeded(T0, "20260301T030000Z-00000001")
    assert "backup" in report
    report["backup"]["startTime"] = "2026-03-01T03:00:00"  # no zone: not RFC 3339
    report["backup"]["endTime"] = "yesterday"
    ended = T0 + timedelta(minutes=2)
    entry = entry_from_report(report, job="nightly-1", started=T0, ended=ended)
    assert entry.run.start_time == "2026-03-01T03:00:00Z"
    assert entry.run.end_time == "2026-03-01T03:02:00Z"

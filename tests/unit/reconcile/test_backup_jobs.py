"""A run whose pod did not record it, rebuilt from its Job and pods: only the Job's own pods."""

from __future__ import annotations

import datetime
import json
from typing import Any

from cleo_operator.reconcile.backup_jobs import (
    job_failure,
    job_state,
    latest_condition_time,
    run_entry_for_job,
)

NOW = datetime.datetime(2026, 3, 1, 4, 0, 0, tzinfo=datetime.UTC)
REPORT = {
    "outcome": "Failed",
    "reason": "DumpFailed",
    "message": "pg_dump exited 1",
    "tenant": "acme",
}


def job(*conditions: dict[str, Any], **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "cleo-backup-n-1", "namespace": "cleo-acme", "uid": "job-uid"},
        "status": {"conditions": list(conditions), **status},
    }


FAILED = {
    "type": "Failed",
    "status": "True",
    "reason": "BackoffLimitExceeded",
    "message": "Job has reached the specified backoff limit",
    "lastTransitionTime": "2026-03-01T03:05:00Z",
}
COMPLETE = {"type": "Complete", "status": "True", "lastTransitionTime": "2026-03-01T03:02:00Z"}


def pod(
    *, controller: str = "job-uid", started: str = "2026-03-01T03:00:05Z", **terminated: Any
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "cleo-backup-n-1-abcde",
            "ownerReferences": [{"uid": controller, "controller": True}],
        },
        "status": {
            "startTime": started,
            "containerStatuses": [{"state": {"terminated": terminated}}] if terminated else [],
        },
    }


def test_a_jobs_state_is_read_from_its_true_conditions() -> None:
    assert job_state(job()) == "active"
    assert job_state(job({**FAILED, "status": "False"})) == "active"
    assert job_state(job(FAILED)) == "failed"
    assert job_state(job(COMPLETE)) == "succeeded"
    assert job_failure(job(FAILED)) == (
        "BackoffLimitExceeded",
        "Job has reached the specified backoff limit",
    )
    assert job_failure(job()) == ("JobFailed", "the Job failed")
    assert latest_condition_time(job(FAILED, COMPLETE)) == datetime.datetime(
        2026, 3, 1, 3, 5, tzinfo=datetime.UTC
    )
    assert latest_condition_time(job()) is None


def test_the_report_in_the_termination_message_of_the_jobs_pod_is_the_run() -> None:
    finished = pod(
        message=json.dumps(REPORT), reason="Error", exitCode=1, finishedAt="2026-03-01T03:01:00Z"
    )
    entry = run_entry_for_job(job(FAILED), [finished], state="failed", now=NOW)
    assert entry is not None
    assert entry.run.reason == "DumpFailed"
    assert entry.run.message == "pg_dump exited 1"
    assert entry.run.job == "cleo-backup-n-1"
    assert (entry.run.start_time, entry.run.end_time) == (
        "2026-03-01T03:00:05Z",
        "2026-03-01T03:01:00Z",
    )


def test_a_pod_the_job_does_not_control_is_not_believed() -> None:
    forged = pod(
        controller="someone-else",
        message=json.dumps({**REPORT, "outcome": "Succeeded", "reason": "BackupSucceeded"}),
    )
    entry = run_entry_for_job(
        job(FAILED, startTime="2026-03-01T03:00:00Z"), [forged], state="failed", now=NOW
    )
    assert entry is not None
    assert entry.run.succeeded is False
    assert entry.run.reason == "BackoffLimitExceeded"
    assert "ended without a report" in (entry.run.message or "")
    # Without a completion time the Job's newest condition says when it ended.
    assert (entry.run.start_time, entry.run.end_time) == (
        "2026-03-01T03:00:00Z",
        "2026-03-01T03:05:00Z",
    )


def test_without_a_report_the_containers_end_is_the_detail() -> None:
    died = pod(reason="OOMKilled", exitCode=137, message="Killed")
    entry = run_entry_for_job(job(FAILED), [died], state="failed", now=NOW)
    assert entry is not None
    message = entry.run.message or ""
    assert "its container ended with OOMKilled (exit code 137): Killed" in message
    assert "Job has reached the specified backoff limit" in message
    # No time on the Job at all: the run is placed at the reconcile's own clock.
    assert entry.run.start_time == "2026-03-01T04:00:00Z"


def test_a_succeeded_job_without_a_report_records_nothing() -> None:
    assert run_entry_for_job(job(COMPLETE), [pod()], state="succeeded", now=NOW) is None

"""`backups` and `backup now`, pure parts: summaries, the table, the one-off and its progress."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from pydantic import TypeAdapter

from cleo_operator.api.backup import NAME_MAX_LENGTH, parse_backup_spec
from cleo_operator.api.base import DnsSubdomain
from cleo_operator.cli.common import CommandError
from cleo_operator.cli.plugin.backup_now import (
    choose_source,
    observe,
    one_off_manifest,
    one_off_name,
)
from cleo_operator.cli.plugin.backups import backup_summary, backups_table

NOW = datetime.datetime(2026, 12, 3, 12, 0, tzinfo=datetime.UTC)


def backup(name: str, *, schedule: str | None = "0 3 * * *", **status: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "tenant": "acme",
        "destination": {"type": "pvc", "pvc": {"claimName": "b"}},
    }
    if schedule:
        spec["schedule"] = schedule
    return {
        "apiVersion": "cleoai.io/v1alpha1",
        "kind": "CleoBackup",
        "metadata": {"name": name, "namespace": "cleo-acme"},
        "spec": spec,
        "status": status,
    }


NIGHTLY = backup(
    "nightly",
    phase="Failed",
    conditions=[{"type": "Ready", "status": "False", "reason": "LastBackupFailed"}],
    lastBackup={"time": "2026-12-03T03:00:00Z", "succeeded": False},
    lastSuccessfulBackup={
        "time": "2026-12-02T03:00:00Z",
        "succeeded": True,
        "sizeBytes": 5 * 1024 * 1024,
        "backupId": "20261202T030000Z-abc",
        "archive": "pvc:cleo-acme/b/x",
    },
    lastVerification={
        "time": "2026-12-02T04:00:00Z",
        "passed": True,
        "reason": "Verified",
        "message": "42 tables match",
        "backupId": "20261202T030000Z-abc",
    },
)


def test_a_summary_keeps_stable_keys_and_no_archive_paths_or_messages() -> None:
    summary = backup_summary(NIGHTLY)
    assert summary == {
        "name": "nightly",
        "namespace": "cleo-acme",
        "tenant": "acme",
        "schedule": "0 3 * * *",
        "suspend": False,
        "phase": "Failed",
        "ready": "False",
        "reason": "LastBackupFailed",
        "lastBackup": {"time": "2026-12-03T03:00:00Z", "succeeded": False},
        "lastSuccessfulBackup": {
            "time": "2026-12-02T03:00:00Z",
            "succeeded": True,
            "sizeBytes": 5242880,
            "backupId": "20261202T030000Z-abc",
        },
        "lastVerification": {
            "time": "2026-12-02T04:00:00Z",
            "passed": True,
            "reason": "Verified",
            "backupId": "20261202T030000Z-abc",
        },
    }


def test_the_table_marks_a_failed_newest_backup() -> None:
    fresh = backup(
        "hourly",
        schedule="@hourly",
        phase="Succeeded",
        lastBackup={"time": "2026-12-03T11:00:00Z", "succeeded": True, "sizeBytes": 2048},
    )
    table = backups_table([backup_summary(NIGHTLY), backup_summary(fresh)], now=NOW)
    assert table.rows == [
        ("nightly", "0 3 * * *", "Failed", "9h", "-", "NO", "33h", "passed 32h ago"),
        ("hourly", "@hourly", "Succeeded", "60m", "2.0 KiB", "yes", "-", "-"),
    ]
    assert table.bad == [True, False]


def test_one_off_names_fit_the_api_and_are_valid_names() -> None:
    long_source = "a" * NAME_MAX_LENGTH
    name = one_off_name(long_source, now=NOW, random="x7k")
    assert len(name) == NAME_MAX_LENGTH
    assert name.endswith("-now-120000x7k")
    assert one_off_name("nightly", now=NOW, random="abc") == "nightly-now-120000abc"
    # A cut that would end in '-' is trimmed, so the name stays a DNS subdomain.
    cut = one_off_name("b" * 25 + "-" + "c" * 10, now=NOW, random="abc")
    assert "--now" not in cut
    TypeAdapter(DnsSubdomain).validate_python(cut)


def test_two_one_offs_in_the_same_second_get_two_names() -> None:
    names = {one_off_name("nightly", now=NOW) for _ in range(20)}
    assert len(names) > 1


def test_the_one_off_names_only_its_tenant_and_source() -> None:
    manifest = one_off_manifest(tenant="acme", source=NIGHTLY, now=NOW)
    assert manifest["metadata"]["namespace"] == "cleo-acme"
    assert manifest["metadata"]["name"].startswith("nightly-now-120000")
    assert manifest["spec"] == {"tenant": "acme", "from": "nightly"}


def test_the_source_is_the_only_scheduled_backup_or_the_one_named() -> None:
    one_off = backup("earlier", schedule=None)
    one_off["spec"]["from"] = "nightly"
    weekly = backup("weekly", schedule="@weekly")
    assert choose_source([NIGHTLY, one_off], tenant="acme", namespace="ns", wanted=None) is NIGHTLY
    with pytest.raises(CommandError, match=r"2 scheduled CleoBackups \(nightly, weekly\)"):
        choose_source([NIGHTLY, weekly], tenant="acme", namespace="ns", wanted=None)
    assert (
        choose_source([NIGHTLY, weekly], tenant="acme", namespace="ns", wanted="weekly") is weekly
    )
    with pytest.raises(
        CommandError, match=r"--from earlier: .*\(its scheduled CleoBackups: nightly"
    ):
        choose_source([NIGHTLY, one_off, weekly], tenant="acme", namespace="ns", wanted="earlier")
    with pytest.raises(CommandError, match="no scheduled CleoBackup in namespace ns"):
        choose_source([one_off], tenant="acme", namespace="ns", wanted=None)


@pytest.mark.parametrize(
    ("status", "line", "done", "succeeded"),
    [
        ({}, "Pending", False, False),
        (
            {
                "phase": "Pending",
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "NoBackupYet", "message": "soon"}
                ],
            },
            "Pending, NoBackupYet: soon",
            False,
            False,
        ),
        (
            {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "False", "reason": "NoBackupYet"}],
            },
            "Running, job cleo-run-nightly-now-1",
            False,
            False,
        ),
        (
            # The runner recorded its run before the reconciler moved the phase.
            {
                "phase": "Pending",
                "history": [{"startTime": "t", "job": "j", "succeeded": True, "sizeBytes": 1536}],
            },
            "Succeeded, job j, archive 1.5 KiB",
            True,
            True,
        ),
        (
            {
                "phase": "Succeeded",
                "history": [
                    {"startTime": "t", "job": "j", "succeeded": True, "sizeBytes": 3 * 1024**3}
                ],
            },
            "Succeeded, job j, archive 3.0 GiB",
            True,
            True,
        ),
        (
            {
                "phase": "Failed",
                "history": [
                    {
                        "startTime": "t",
                        "job": "j",
                        "succeeded": False,
                        "reason": "DumpFailed",
                        "message": "pg_dump exited 1",
                    }
                ],
            },
            "Failed, job j, DumpFailed: pg_dump exited 1",
            True,
            False,
        ),
        (
            {
                "phase": "Invalid",
                "conditions": [{"type": "Ready", "status": "False", "reason": "SourceNotFound"}],
            },
            "Invalid, SourceNotFound",
            True,
            False,
        ),
    ],
)
def test_progress_of_a_one_off(
    status: dict[str, Any], line: str, done: bool, succeeded: bool
) -> None:
    progress = observe(
        {"metadata": {"name": "nightly-now-1"}, "spec": {"from": "nightly"}, "status": status}
    )
    assert progress.line() == line
    assert (progress.done, progress.succeeded) == (done, succeeded)


def test_the_sample_backup_is_a_valid_spec() -> None:
    parse_backup_spec(NIGHTLY["spec"])

"""The runner's report: one compact JSON object per run, written by the CronJob's pod and
read back by the operator.

Why a report and not only the status: a pod may fail to write the CleoBackup's status (the
API server away, its Role missing), so it also leaves the report as its termination
message, whose 4 KiB Kubernetes keeps with the finished pod. The operator then records the
run from it (`reconcile.backup`). Writer and reader live here together so that the shape
cannot drift between them: `write_report` cuts a report to fit, `report_from_message`
accepts only what has the shape of a report (a termination message is the pod's to write,
so it is checked, never trusted for more than its shape).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final, Literal, NotRequired, TypedDict, cast

from cleo_operator.backup.errors import StorageError
from cleo_operator.backup.restore import VerificationReport
from cleo_operator.backup.retention import PruneResult
from cleo_operator.backup.runner import BackupReport

__all__ = [
    "REPORT_LIMIT",
    "PruneReport",
    "RunReport",
    "exit_code",
    "prune_report",
    "report_from_message",
    "write_report",
]

REPORT_LIMIT: Final = 4096
"""Bytes of a pod's termination message that Kubernetes keeps."""


class PruneReport(TypedDict):
    """What retention did, for the report."""

    kept: int
    deleted: list[str]
    leftoversDeleted: int
    problems: list[str]
    unfinishedUploads: NotRequired[str]
    """Set when the storage cannot remove a killed run's unfinished upload (object stores)."""


class RunReport(TypedDict):
    """The outcome of one `backup_run`, as JSON (camelCase, as the API writes)."""

    outcome: Literal["Succeeded", "Failed"]
    reason: str
    message: str
    tenant: str
    backup: NotRequired[BackupReport]
    verification: NotRequired[VerificationReport]
    prune: NotRequired[PruneReport]


def prune_report(result: PruneResult) -> PruneReport:
    """What `result` says, as the report's ``prune`` block."""
    report: PruneReport = {
        "kept": len(result.kept),
        "deleted": list(result.deleted),
        "leftoversDeleted": len(result.leftovers_deleted) + result.incomplete_removed,
        "problems": list(result.problems),
    }
    if result.incomplete_note:
        report["unfinishedUploads"] = result.incomplete_note
    return report


def write_report(report: RunReport, path: str | os.PathLike[str]) -> None:
    """Write `report` as compact JSON, cut to fit a termination message (4 KiB)."""
    text = json.dumps(report, separators=(",", ":"), sort_keys=True)
    if len(text.encode("utf-8")) > REPORT_LIMIT:
        # Long lists go first; the outcome, reason and the backup's identity must survive.
        slim = dict(report)
        prune = slim.get("prune")
        if isinstance(prune, dict):
            slim["prune"] = {**prune, "deleted": prune["deleted"][-5:]}
        text = json.dumps(slim, separators=(",", ":"), sort_keys=True)
        if len(text.encode("utf-8")) > REPORT_LIMIT:
            slim["message"] = str(slim["message"])[:512]
            slim.pop("prune", None)
            text = json.dumps(slim, separators=(",", ":"), sort_keys=True)
    try:
        Path(path).write_text(text + "\n", encoding="utf-8")
    except OSError as error:
        raise StorageError(f"cannot write the report to {path}: {error.strerror}") from None


def exit_code(report: RunReport) -> int:
    """0 for a successful run, 1 for a failed one (the Job's pod then shows Failed)."""
    return 0 if report["outcome"] == "Succeeded" else 1


_REPORT_BACKUP_FIELDS: Final[Mapping[str, type | tuple[type, ...]]] = {
    "backupId": str,
    "storage": str,
    "archive": str,
    "startTime": str,
    "endTime": str,
    "archiveSize": int,
    "dumpSize": int,
    "durationSeconds": (int, float),
}


def report_from_message(message: str) -> RunReport | None:
    """The runner's report from a pod's termination message; None if it is something else."""
    try:
        data = json.loads(message)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("outcome") not in ("Succeeded", "Failed"):
        return None
    if not all(isinstance(data.get(key), str) for key in ("reason", "message", "tenant")):
        return None
    backup = data.get("backup")
    if backup is not None and not (
        isinstance(backup, dict)
        and all(isinstance(backup.get(k), t) for k, t in _REPORT_BACKUP_FIELDS.items())
    ):
        return None
    return cast(RunReport, data)

"""A CleoBackup's run history on its status: entries from runs, written without losing one.

Two writers share a CleoBackup's status, each with its own keys:

- **the runs** (`RUN_KEYS`): the runner pod writes ``history``, ``lastBackup``,
  ``lastSuccessfulBackup`` and ``successfulBackups`` when it finishes (`record_run`), and
  the reconciler writes the same keys for a run whose pod died without reporting;
- **the reconciler** (`RECONCILER_KEYS`): conditions, phase, verification, the CronJob's
  name. Its merge patches never touch the run keys, so the two never overwrite each other.

Runs may finish at the same moment (``concurrencyPolicy: Allow``, or the reconciler's
fallback racing a slow pod), and ``history`` is a list that each writer extends. So a run
is recorded through the status writer (`kube.status.update_status`): a writer whose read
is stale gets 409 Conflict and adds its entry again to a fresh read, instead of dropping
the other's entry. A run already in the history (same Job and start time) is
never added twice, which makes `record_run` safe to retry and to call from both sides.

A failed run never stops later ones: it is an entry like any other, and the CronJob goes
on running on schedule.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import pydantic

from cleo_operator.api.backup import (
    BackupRecord,
    BackupRun,
    CleoBackupStatus,
)
from cleo_operator.api.base import rfc3339
from cleo_operator.api.objects import KubeObject
from cleo_operator.backup.report import RunReport
from cleo_operator.core.redaction import clip
from cleo_operator.core.times import read_rfc3339
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import BACKUP
from cleo_operator.kube.status import STATUS_WRITE_ATTEMPTS, owned_status, update_status

__all__ = [
    "RECONCILER_KEYS",
    "RUN_KEYS",
    "RecordOutcome",
    "RunEntry",
    "entry_from_report",
    "failed_entry",
    "read_status",
    "record_run",
    "status_with_run",
]

log = logging.getLogger(__name__)


RUN_KEYS: Final = frozenset({"history", "lastBackup", "lastSuccessfulBackup", "successfulBackups"})
"""Status keys written for runs (by the runner pod, or the reconciler's fallback)."""
RECONCILER_KEYS: Final = frozenset(
    {
        "observedGeneration",
        "phase",
        "conditions",
        "lastVerification",
        "lastVerifiedBackup",
        "cronJobName",
    }
)
"""Status keys the BackupReconciler writes."""

DEFAULT_HISTORY_LIMIT: Final = 10

RecordOutcome = Literal["recorded", "already-recorded", "gone"]


@dataclass(frozen=True)
class RunEntry:
    """One run, as it goes into status: its history entry and its record."""

    run: BackupRun
    """The ``history`` entry."""
    record: BackupRecord
    """``lastBackup`` (and ``lastSuccessfulBackup`` when it succeeded, with a sequence)."""


def entry_from_report(
    report: RunReport, *, job: str | None, started: datetime, ended: datetime
) -> RunEntry:
    """The status entry of a `backup_run` report (`started`/`ended`: the run's own clock)."""
    succeeded = report["outcome"] == "Succeeded"
    backup = report.get("backup")
    start_time = backup["startTime"] if backup else rfc3339(started)
    end_time = backup["endTime"] if backup else rfc3339(ended)
    # Status timestamps are whole seconds, as Kubernetes writes them.
    start_time, end_time = _seconds(start_time, started), _seconds(end_time, ended)
    archive = f"{backup['storage']}: {backup['archive']}"[:1024] if backup else None
    run = BackupRun(
        start_time=start_time,
        end_time=end_time,
        succeeded=succeeded,
        reason=report["reason"][:128],
        backup_id=backup["backupId"] if backup else None,
        archive=archive,
        size_bytes=backup["archiveSize"] if backup else None,
        job=job,
        message=clip(report["message"]),
    )
    duration = backup["durationSeconds"] if backup else max(0.0, (ended - started).total_seconds())
    record = BackupRecord(
        time=start_time,
        succeeded=succeeded,
        archive=archive if succeeded else None,
        backup_id=backup["backupId"] if backup and succeeded else None,
        size_bytes=backup["archiveSize"] if backup and succeeded else None,
        dump_size_bytes=backup["dumpSize"] if backup and succeeded else None,
        duration_seconds=round(duration, 3),
    )
    return RunEntry(run=run, record=record)


def failed_entry(
    *, reason: str, message: str, job: str | None, started: datetime, ended: datetime
) -> RunEntry:
    """The status entry of a run that produced no report (it could not start, or died)."""
    start_time, end_time = rfc3339(started), rfc3339(ended)
    run = BackupRun(
        start_time=start_time,
        end_time=end_time,
        succeeded=False,
        reason=reason[:128],
        job=job,
        message=clip(message),
    )
    record = BackupRecord(
        time=start_time,
        succeeded=False,
        duration_seconds=round(max(0.0, (ended - started).total_seconds()), 3),
    )
    return RunEntry(run=run, record=record)


def _seconds(timestamp: str, fallback: datetime) -> str:
    """An RFC 3339 time cut to whole seconds, in UTC (``...Z``); `fallback` (the run's own
    clock) when the report's time is malformed or has no zone."""
    moment = read_rfc3339(timestamp)
    return rfc3339(moment if moment is not None else fallback.astimezone(UTC))


def _time(timestamp: str | None) -> datetime:
    return read_rfc3339(timestamp) or datetime.min.replace(tzinfo=UTC)


def read_status(raw: Mapping[str, Any] | None) -> CleoBackupStatus:
    """The status as the model reads it; entries someone broke by hand are dropped."""
    data = dict(raw or {})
    try:
        return CleoBackupStatus.model_validate(data)
    except pydantic.ValidationError:
        pass
    # Field by field, so one malformed key (edited by hand) costs only itself.
    kept: dict[str, Any] = {}
    for key, value in data.items():
        try:
            CleoBackupStatus.model_validate({key: value})
        except pydantic.ValidationError:
            if key == "history" and isinstance(value, list):
                kept[key] = [item for item in value if _valid_run(item)]
            continue
        kept[key] = value
    return CleoBackupStatus.model_validate(kept)


def _valid_run(item: object) -> bool:
    try:
        BackupRun.model_validate(item)
    except pydantic.ValidationError:
        return False
    return True


def _dump(model: pydantic.BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def status_with_run(
    raw_status: Mapping[str, Any] | None, entry: RunEntry, *, history_limit: int
) -> dict[str, Any] | None:
    """The new values of `RUN_KEYS` once `entry` is recorded; None if it already is.

    History is newest first and cut to `history_limit`. ``lastBackup`` and
    ``lastSuccessfulBackup`` move only forward in time, so a late report of an older run
    (a slow pod, the fallback) lands in the history without hiding a newer run.
    """
    status = read_status(raw_status)
    run = entry.run
    for known in status.history:
        if known.job == run.job and known.start_time == run.start_time:
            return None
        if run.job is None and run.backup_id is not None and known.backup_id == run.backup_id:
            return None
    history = sorted([run, *status.history], key=lambda r: _time(r.start_time), reverse=True)
    fields: dict[str, Any] = {
        "history": [_dump(r) for r in history[: max(1, history_limit)]],
    }
    if status.last_backup is None or _time(entry.record.time) >= _time(status.last_backup.time):
        fields["lastBackup"] = _dump(entry.record)
    if run.succeeded:
        sequence = (status.successful_backups or 0) + 1
        fields["successfulBackups"] = sequence
        newest = status.last_successful_backup
        if newest is None or _time(entry.record.time) >= _time(newest.time):
            fields["lastSuccessfulBackup"] = _dump(
                entry.record.model_copy(update={"sequence": sequence})
            )
    return fields


def _history_limit(spec: Mapping[str, Any] | None) -> int:
    value = (spec or {}).get("historyLimit", DEFAULT_HISTORY_LIMIT)
    if isinstance(value, bool) or not isinstance(value, int):
        return DEFAULT_HISTORY_LIMIT
    return min(100, max(1, value))


def record_run(
    kube: KubeClient,
    *,
    namespace: str,
    name: str,
    entry: RunEntry,
    attempts: int = STATUS_WRITE_ATTEMPTS,
) -> RecordOutcome:
    """Add `entry` to CleoBackup `namespace/name`'s status; safe to call again.

    Written by `kube.status.update_status`: a conflict (someone wrote in between) reads
    again and adds the entry to what is there now. Raises `KubeError` for anything else
    (Forbidden: the runner's Role; the API server down), and after `attempts` conflicts.
    """

    def with_run(backup: KubeObject) -> dict[str, Any] | None:
        fields = status_with_run(
            backup.get("status"), entry, history_limit=_history_limit(backup.get("spec"))
        )
        # The writer owns every run key and removes what the mutation leaves out: keep
        # the ones this run does not move (a failed run keeps lastSuccessfulBackup).
        return None if fields is None else {**owned_status(backup, RUN_KEYS), **fields}

    try:
        written = update_status(
            kube,
            BACKUP,
            name,
            with_run,
            owned_keys=RUN_KEYS,
            namespace=namespace,
            attempts=attempts,
        )
    except KubeError as exc:
        if exc.not_found:
            return "gone"
        raise
    if written is None:
        return "already-recorded"
    log.info(
        "CleoBackup %s/%s: recorded run %s (%s)",
        namespace,
        name,
        entry.run.job or entry.run.start_time,
        entry.run.reason,
    )
    return "recorded"

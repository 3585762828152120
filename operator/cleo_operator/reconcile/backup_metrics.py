"""What a CleoBackup's runs add to the backup metrics, once per run in this process.

The counters count this process's observations of runs (a run recorded before a restart is
not counted again), while the gauges always say what the status says of the newest
successful backup. Only a CleoBackup of the tenant it names, in that tenant's namespace, is
observed (`reconcile.backup`): another tenant's CleoBackup never moves these.
"""

from __future__ import annotations

import threading

from cleo_operator.api.backup import BackupRecord, CleoBackupStatus
from cleo_operator.backup import metrics
from cleo_operator.core.times import read_rfc3339

__all__ = ["RunsSeen"]


class RunsSeen:
    """The runs (job, start) of each CleoBackup this process has observed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], set[tuple[str | None, str]]] = {}

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._seen.pop(key, None)

    def observe(self, key: tuple[str, str], tenant: str, current: CleoBackupStatus) -> None:
        """Record the runs of `current` this process has not seen yet."""
        runs = {(run.job, run.start_time) for run in current.history}
        with self._lock:
            seen = self._seen.get(key)
            self._seen[key] = runs if seen is None else seen | runs
        newest = current.last_successful_backup
        if seen is None:
            # Counters count this process's observations: old runs are not counted again
            # after a restart, but the gauges say what the status says.
            if newest is not None:
                _set_gauges(tenant, newest)
            return
        for run in sorted(current.history, key=lambda r: r.start_time):
            if (run.job, run.start_time) in seen:
                continue
            if not run.succeeded:
                metrics.observe_backup_failure(tenant=tenant, reason=run.reason or "BackupFailed")
            elif newest is not None and newest.backup_id == run.backup_id:
                metrics.observe_backup(
                    tenant=tenant,
                    finished_at=_finished_at(newest),
                    duration_seconds=newest.duration_seconds or 0.0,
                    archive_size=newest.size_bytes or 0,
                    plaintext_size=newest.dump_size_bytes or 0,
                )
            else:  # an older run reported late: counted; the gauges stay with the newest
                metrics.BACKUPS.labels(tenant=tenant).inc()


def _finished_at(record: BackupRecord) -> float:
    start = read_rfc3339(record.time)
    return (start.timestamp() if start else 0.0) + (record.duration_seconds or 0.0)


def _set_gauges(tenant: str, record: BackupRecord) -> None:
    metrics.LAST_SUCCESS.labels(tenant=tenant).set(_finished_at(record))
    if record.duration_seconds is not None:
        metrics.LAST_DURATION.labels(tenant=tenant).set(record.duration_seconds)
    if record.size_bytes is not None:
        metrics.LAST_SIZE.labels(tenant=tenant, archive_kind="archive").set(record.size_bytes)
    if record.dump_size_bytes is not None:
        metrics.LAST_SIZE.labels(tenant=tenant, archive_kind="dump").set(record.dump_size_bytes)

"""Prometheus metrics of backups, restores, verifications and pruning, per tenant.

Why per tenant, and why these: the alerts a platform team writes are "tenant X has had no
successful backup for 26 hours" (`time() - cleo_operator_backup_last_success_timestamp_seconds
> 26*3600`), "backups of X keep failing" (`increase(..._backup_failures_total[1d]) > 0`),
"the newest archive of X does not restore" (`..._backup_last_verification_passed == 0`), and
"archives of X suddenly shrank" (the size gauge). Labels are tenant names and machine
reasons only, never secret material, never free text.

The runner, restore, verification and prune functions record into the process they run
in. When they run in a CronJob's pod, that process ends with the run; the operator reads
the pod's report and records it with the same `observe_*` functions, so dashboards see
scheduled backups too (see `docs/backups.md`).
"""

from __future__ import annotations

from typing import Final, Literal

from prometheus_client import Counter, Gauge

__all__ = [
    "BACKUPS",
    "BACKUP_FAILURES",
    "LAST_DURATION",
    "LAST_SIZE",
    "LAST_SUCCESS",
    "LAST_VERIFICATION",
    "LAST_VERIFICATION_PASSED",
    "PRUNED",
    "RESTORES",
    "VERIFICATIONS",
    "observe_backup",
    "observe_backup_failure",
    "observe_prune",
    "observe_restore",
    "observe_verification",
]

_PREFIX: Final = "cleo_operator_backup"

BACKUPS = Counter(
    f"{_PREFIX}s_total",
    "Backups that produced an archive and its manifest, by tenant.",
    ["tenant"],
)
BACKUP_FAILURES = Counter(
    f"{_PREFIX}_failures_total",
    "Backups that failed, by tenant and machine reason (DumpFailed, StorageFull, ...).",
    ["tenant", "reason"],
)
LAST_SUCCESS = Gauge(
    f"{_PREFIX}_last_success_timestamp_seconds",
    "Unix time at which the newest successful backup of the tenant finished.",
    ["tenant"],
)
LAST_DURATION = Gauge(
    f"{_PREFIX}_last_duration_seconds",
    "Wall time of the newest successful backup of the tenant.",
    ["tenant"],
)
LAST_SIZE = Gauge(
    f"{_PREFIX}_last_size_bytes",
    "Size of the newest archive of the tenant (archive_kind: archive, encrypted; dump, plaintext).",
    ["tenant", "archive_kind"],
)
VERIFICATIONS = Counter(
    f"{_PREFIX}_verifications_total",
    "Verifications (restore into a scratch database and compare), by tenant and result.",
    ["tenant", "result"],
)
LAST_VERIFICATION = Gauge(
    f"{_PREFIX}_last_verification_timestamp_seconds",
    "Unix time of the newest verification of the tenant's backups.",
    ["tenant"],
)
LAST_VERIFICATION_PASSED = Gauge(
    f"{_PREFIX}_last_verification_passed",
    "1 when the newest verification of the tenant's backups passed, 0 when it failed.",
    ["tenant"],
)
RESTORES = Counter(
    f"{_PREFIX}_restores_total",
    "Restores of archives, by tenant and result (ok, or the machine reason).",
    ["tenant", "result"],
)
PRUNED = Counter(
    f"{_PREFIX}_pruned_total",
    "Backups deleted by retention, by tenant.",
    ["tenant"],
)


def observe_backup(
    *,
    tenant: str,
    finished_at: float,
    duration_seconds: float,
    archive_size: int,
    plaintext_size: int,
) -> None:
    """Record a successful backup (`finished_at`: Unix time)."""
    BACKUPS.labels(tenant=tenant).inc()
    LAST_SUCCESS.labels(tenant=tenant).set(finished_at)
    LAST_DURATION.labels(tenant=tenant).set(duration_seconds)
    LAST_SIZE.labels(tenant=tenant, archive_kind="archive").set(archive_size)
    LAST_SIZE.labels(tenant=tenant, archive_kind="dump").set(plaintext_size)


def observe_backup_failure(*, tenant: str, reason: str) -> None:
    """Record a failed backup with its machine reason."""
    BACKUP_FAILURES.labels(tenant=tenant, reason=reason).inc()


def observe_verification(*, tenant: str, finished_at: float, passed: bool) -> None:
    """Record a verification's verdict (`finished_at`: Unix time)."""
    result: Literal["passed", "failed"] = "passed" if passed else "failed"
    VERIFICATIONS.labels(tenant=tenant, result=result).inc()
    LAST_VERIFICATION.labels(tenant=tenant).set(finished_at)
    LAST_VERIFICATION_PASSED.labels(tenant=tenant).set(1 if passed else 0)


def observe_restore(*, tenant: str, result: str) -> None:
    """Record a restore: `ok` or the machine reason of its failure."""
    RESTORES.labels(tenant=tenant, result=result).inc()


def observe_prune(*, tenant: str, deleted: int) -> None:
    """Record how many backups retention deleted."""
    PRUNED.labels(tenant=tenant).inc(deleted)

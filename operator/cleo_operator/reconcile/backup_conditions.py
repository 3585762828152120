"""The CleoBackup's conditions and phase, decided from its spec, status and the time.

Why apart from the reconciler: what a condition says is a contract with people and
tools (``kubectl wait --for=condition=Ready``, alerts on ``BackupFresh``), and it changes
for different reasons than how the cluster is read. These functions are pure: the
reconciler gathers what they need and writes what they return.

``LastBackupSucceeded`` is the newest run's outcome (Unknown before the first).
``BackupFresh`` is False when the newest successful backup is older than twice the
schedule's interval (the longest gap between two runs, `api.cron`), Unknown before the
first. ``Verified`` is the newest verification's verdict (Unknown while none ran, or while
verification is off). ``Ready`` is True only when the tenant *has* a usable backup: the
runner is in place, the newest run succeeded, the newest backup is fresh and, when
verification is on, not proven broken. Messages hold absolute times only, so a reconcile
that finds nothing new writes nothing.
"""

from __future__ import annotations

import datetime
import zoneinfo

from cleo_operator.api.backup import (
    BackupPhase,
    BackupRecord,
    BackupVerification,
    CleoBackupSpec,
    CleoBackupStatus,
)
from cleo_operator.api.base import ConditionStatus, rfc3339
from cleo_operator.api.cron import CronError, parse_cron
from cleo_operator.core.times import read_rfc3339
from cleo_operator.reconcile.status import Observation, clip

__all__ = [
    "duration_text",
    "freshness",
    "last_backup_observation",
    "next_run_text",
    "phase",
    "ready",
    "time_zone",
    "verification_due",
    "verifying_observation",
]


def time_zone(spec: CleoBackupSpec) -> tuple[datetime.tzinfo, str]:
    """The schedule's time zone, and a note for messages when the operator lacks it."""
    if spec.time_zone is None:
        return datetime.UTC, ""
    try:
        return zoneinfo.ZoneInfo(spec.time_zone), ""
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        # The API server judges the CronJob's time zone; here it only shapes messages.
        return datetime.UTC, f" (time zone {spec.time_zone} is unknown to the operator: UTC)"


def verifying_observation(backup_id: str, latest: BackupVerification | None) -> Observation:
    """While a verification runs, the previous verdict stands (Unknown before the first)."""
    status: ConditionStatus = (
        "Unknown" if latest is None else ("True" if latest.passed else "False")
    )
    previous = f"; the previous verification: {latest.message}" if latest else ""
    return Observation(
        status,
        "Verifying",
        clip(f"verifying backup {backup_id} (restoring it into a scratch database){previous}"),
    )


def verification_due(
    spec: CleoBackupSpec, candidate: BackupRecord, latest: BackupVerification | None
) -> bool:
    """Whether `candidate` (the newest successful backup) is to be verified now."""
    if spec.verification is None or not spec.verification.enabled:
        return False
    if latest is None:
        return True  # the first backup is always verified
    if latest.backup_id == candidate.backup_id:
        return False
    if candidate.sequence is None or latest.sequence is None:
        return True
    return candidate.sequence - latest.sequence >= spec.verification.every_nth


def last_backup_observation(current: CleoBackupStatus) -> Observation:
    """LastBackupSucceeded: the outcome of the newest run by start time."""
    if not current.history:
        return Observation("Unknown", "NoBackupYet", "no backup has run yet")
    newest = max(current.history, key=lambda r: r.start_time)
    when = f"the run started {newest.start_time}" + (f" (Job {newest.job})" if newest.job else "")
    if newest.succeeded:
        made = f"backup {newest.backup_id}" if newest.backup_id else "a backup"
        return Observation("True", newest.reason or "BackupSucceeded", clip(f"{when} made {made}"))
    return Observation(
        "False",
        newest.reason or "BackupFailed",
        clip(f"{when} failed: {newest.message or 'no details'}"),
    )


def freshness(
    spec: CleoBackupSpec,
    current: CleoBackupStatus,
    tz: datetime.tzinfo,
    tz_note: str,
    now: datetime.datetime,
) -> tuple[Observation, float | None]:
    """BackupFresh, and in how many seconds it turns False (to be called again then)."""
    newest = current.last_successful_backup
    if newest is None:
        return Observation("Unknown", "NoBackupYet", "no backup has succeeded yet"), None
    if spec.schedule is None:
        return (
            Observation(
                "True", "OneOff", f"one-off backup {newest.backup_id} started {newest.time}"
            ),
            None,
        )
    try:
        interval = parse_cron(spec.schedule).interval(start=now.astimezone(tz).date())
    except CronError:  # refused by parse_backup_spec already
        interval = None
    made = read_rfc3339(newest.time)
    if interval is None or made is None:
        return Observation("Unknown", "NoInterval", "the schedule has no regular interval"), None
    stale_at = made + 2 * interval
    if now >= stale_at:
        return (
            Observation(
                "False",
                "Stale",
                clip(
                    f"the newest backup started {newest.time}, more than twice the schedule's "
                    f"interval ({duration_text(interval)}) ago; stale since {rfc3339(stale_at)}"
                    + (" (spec.suspend is true)" if spec.suspend else "")
                    + tz_note
                ),
            ),
            None,
        )
    return (
        Observation(
            "True",
            "Fresh",
            f"the newest backup started {newest.time}; it is stale from {rfc3339(stale_at)} "
            f"(twice the schedule's interval, {duration_text(interval)}){tz_note}",
        ),
        (stale_at - now).total_seconds() + 1.0,
    )


def duration_text(delta: datetime.timedelta) -> str:
    """``1d2h30m``: whole minutes and up; seconds only for what is shorter."""
    seconds = int(delta.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    text = (
        (f"{days}d" if days else "")
        + (f"{hours}h" if hours else "")
        + (f"{minutes}m" if minutes else "")
    )
    return text or f"{seconds}s"


def ready(
    *,
    spec: CleoBackupSpec,
    current: CleoBackupStatus,
    problem: Observation | None,
    failures: list[str],
    last: Observation,
    freshness: Observation,
    verified: Observation,
    tz: datetime.tzinfo,
    now: datetime.datetime,
) -> Observation:
    """True only when the tenant has a usable, fresh backup and backups work."""
    if problem is not None:
        return problem
    if failures:
        return Observation("False", "ApplyFailed", clip("could not apply: " + "; ".join(failures)))
    if last.status == "False":
        return Observation("False", "LastBackupFailed", last.message)
    newest = current.last_successful_backup
    if newest is None:
        if spec.schedule is None:
            waiting = "the one-off backup has not finished yet"
        else:
            waiting = next_run_text(spec, tz, now)
        return Observation("False", "NoBackupYet", f"the tenant has no backup yet: {waiting}")
    if freshness.status == "False":
        return Observation("False", "BackupStale", freshness.message)
    if verified.status == "False":
        return Observation("False", "VerificationFailed", verified.message)
    size = f", {newest.size_bytes} bytes" if newest.size_bytes is not None else ""
    return Observation(
        "True", "BackupAvailable", f"backup {newest.backup_id} of {newest.time} is available{size}"
    )


def next_run_text(spec: CleoBackupSpec, tz: datetime.tzinfo, now: datetime.datetime) -> str:
    """When the schedule runs next after `now`, for a message."""
    if spec.suspend:
        return "the schedule is suspended (spec.suspend)"
    try:
        upcoming = parse_cron(spec.schedule or "").next_after(now, tz=tz)
    except CronError:
        upcoming = None
    if upcoming is None:
        return "the schedule has no next run"
    return f"the next scheduled run is due at {rfc3339(upcoming)}"


def phase(
    *, spec: CleoBackupSpec, active: bool, blocked: bool, failed: bool, succeeded: bool
) -> BackupPhase:
    """The phase: a run in progress first, then suspension, what blocks, the last outcome."""
    if active:
        return "Running"
    if spec.schedule is not None and spec.suspend:
        return "Suspended"
    if blocked:
        return "Pending"
    if failed:
        return "Failed"
    if succeeded:
        return "Succeeded"
    return "Pending" if spec.schedule is None else "Scheduled"

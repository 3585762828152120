"""`kubectl cleo backups TENANT`: the tenant's CleoBackups and how each is doing.

For each: the schedule (or one-off, and which scheduled backup it was taken from), the
phase, the newest attempt (when, its archive's size, whether it succeeded), the newest
archive made, and the newest verification. What a platform team asks every morning, one
line per CleoBackup; `-o json` carries the same in stable keys for scripts.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from cleo_operator.cli.plugin.output import Display, Table, age, human_size
from cleo_operator.cli.plugin.session import Session
from cleo_operator.cli.plugin.tenant import find_tenant, tenant_backups
from cleo_operator.cli.plugin.tree import conditions_of

__all__ = ["HELP", "backup_summary", "backups_table", "cmd_backups"]

HELP = "the tenant's CleoBackups: schedule, phase, newest backup and verification"


def _record(record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not record:
        return None
    keep = ("time", "succeeded", "sizeBytes", "backupId", "sequence", "durationSeconds")
    return {key: record[key] for key in keep if record.get(key) is not None}


def backup_summary(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The machine-readable summary of one CleoBackup (stable keys, RFC 3339 times, bytes)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    ready = conditions_of(obj).get("Ready") or {}
    verification = status.get("lastVerification") or None
    summary: dict[str, Any] = {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "tenant": spec.get("tenant"),
        "schedule": spec.get("schedule"),
        "suspend": bool(spec.get("suspend", False)),
        "phase": status.get("phase"),
        "ready": ready.get("status"),
        "reason": ready.get("reason"),
        "lastBackup": _record(status.get("lastBackup")),
        "lastSuccessfulBackup": _record(status.get("lastSuccessfulBackup")),
        "lastVerification": (
            {
                key: verification[key]
                for key in ("time", "passed", "reason", "backupId")
                if verification.get(key) is not None
            }
            if verification
            else None
        ),
    }
    if spec.get("from"):
        summary["from"] = spec["from"]
    return {key: value for key, value in summary.items() if value is not None}


BACKUP_COLUMNS = (
    "name",
    "schedule",
    "phase",
    "last backup",
    "size",
    "ok",
    "last successful",
    "verified",
)


def _verified(summary: Mapping[str, Any], now: datetime.datetime) -> str | None:
    verification = summary.get("lastVerification")
    if not verification:
        return None
    word = "passed" if verification.get("passed") else f"FAILED ({verification.get('reason')})"
    return f"{word} {age(verification.get('time'), now=now)} ago"


def backups_table(summaries: Sequence[Mapping[str, Any]], *, now: datetime.datetime) -> Table:
    """One row per CleoBackup; a failed newest attempt or verification stands out."""
    table = Table(columns=BACKUP_COLUMNS)
    for summary in summaries:
        last = summary.get("lastBackup") or {}
        good = summary.get("lastSuccessfulBackup") or {}
        verification = summary.get("lastVerification") or {}
        schedule = summary.get("schedule") or (
            f"one-off (from {summary['from']})" if summary.get("from") else "one-off"
        )
        if summary.get("suspend"):
            schedule += " (suspended)"
        succeeded = last.get("succeeded")
        table.add(
            summary.get("name"),
            schedule,
            summary.get("phase"),
            age(last.get("time"), now=now),
            human_size(last.get("sizeBytes")),
            None if succeeded is None else ("yes" if succeeded else "NO"),
            age(good.get("time"), now=now),
            _verified(summary, now),
            bad=succeeded is False
            or verification.get("passed") is False
            or summary.get("phase") in ("Failed", "Invalid"),
        )
    return table


def cmd_backups(args: argparse.Namespace) -> int:
    session: Session = args.connect()
    display: Display = args.display
    place = find_tenant(session, args.tenant, namespace=args.namespace)
    summaries = [backup_summary(obj) for obj in tenant_backups(session, place)]
    if not summaries and display.format == "table":
        # As kubectl says "No resources found": on stderr, and not a failure.
        sys.stderr.write(f"tenant {place.name} has no CleoBackup in namespace {place.namespace}\n")
        return 0
    now = datetime.datetime.now(datetime.UTC)
    display.show({"tenant": place.name, "backups": summaries}, backups_table(summaries, now=now))
    return 0

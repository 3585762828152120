"""The line of ``from`` one-offs in a namespace, read from the cluster, and making room.

`reconcile.backup_source` decides (purely) whose turn it is and which one-offs are too many;
this module reads what it decides from (the namespace's CleoBackups and their Jobs) and
deletes. It serves two callers:

- the CleoBackup reconcile of a one-off (`BackupReconciler`): before it starts a runner it
  asks for the one-off's turn, and it removes the source's excess one-offs;
- the final backup (`reconcile.final_backup`): a tenant whose admins filled the namespace's
  CleoBackup quota with one-offs must not keep its deletion waiting. Before the final
  backup is created, the namespace's one-offs that have not started are deleted; if the
  API server still refuses it for the quota (403 "exceeded quota"), the finished ones go
  too and the creation is tried again. A running one-off is never deleted here: its Job
  would run on without its CleoBackup.

Deleting a one-off removes its Job and runner identity (owner references); its archive
stays. Each removal is logged and, for the line's excess, posted as an Event on the one-off
so that the tenant admin who asked sees why it went.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cleo_operator.api.objects import KubeObject
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.events import post_event
from cleo_operator.kube.kinds import BACKUP, JOB
from cleo_operator.reconcile.backup_jobs import job_state
from cleo_operator.reconcile.backup_source import PLATFORM_LABEL, OneOff, OneOffPhase, excess
from cleo_operator.render.backup import BACKUP_LABEL, backup_object_name

__all__ = ["Line", "is_quota_refusal", "make_room", "read_line", "remove_excess"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Line:
    """The one-offs of one source, and whether the source's own Job runs."""

    one_offs: list[OneOff]
    objects: dict[str, KubeObject]
    """The one-offs' CleoBackups by name (for Events and deletion preconditions)."""
    source_running: bool


def _source_of(backup: Mapping[str, Any]) -> str | None:
    value = (backup.get("spec") or {}).get("from")
    return str(value) if value else None


def _phase(backup: Mapping[str, Any], jobs: Mapping[str, KubeObject]) -> OneOffPhase:
    job = jobs.get(backup_object_name(str(backup["metadata"]["name"]), source=_source_of(backup)))
    if job is not None:
        return "running" if job_state(job) == "active" else "finished"
    return "finished" if (backup.get("status") or {}).get("history") else "unstarted"


def _jobs(kube: KubeClient, namespace: str) -> dict[str, KubeObject]:
    return {
        str(job["metadata"]["name"]): job
        for job in kube.list(JOB, namespace=namespace, label_selector=BACKUP_LABEL)
    }


def _one_offs(kube: KubeClient, namespace: str) -> tuple[list[KubeObject], dict[str, KubeObject]]:
    """The namespace's live ``from`` one-offs, and its backup Jobs by name."""
    backups = [
        b
        for b in kube.list(BACKUP, namespace=namespace)
        if _source_of(b) is not None and not b["metadata"].get("deletionTimestamp")
    ]
    return backups, _jobs(kube, namespace)


def read_line(kube: KubeClient, namespace: str, source: str) -> Line:
    """The line of one-offs of CleoBackup `namespace/source`."""
    backups, jobs = _one_offs(kube, namespace)
    mine = [b for b in backups if _source_of(b) == source]
    source_running = any(
        job_state(job) == "active"
        for job in jobs.values()
        if (job["metadata"].get("labels") or {}).get(BACKUP_LABEL) == source
    )
    return Line(
        one_offs=[
            OneOff(
                name=str(b["metadata"]["name"]),
                created=str(b["metadata"].get("creationTimestamp") or ""),
                phase=_phase(b, jobs),
                platform=(b["metadata"].get("labels") or {}).get(PLATFORM_LABEL) == "platform",
            )
            for b in mine
        ],
        objects={str(b["metadata"]["name"]): b for b in mine},
        source_running=source_running,
    )


def _delete(kube: KubeClient, backup: KubeObject) -> bool:
    meta = backup["metadata"]
    try:
        # Only that very object: a one-off of the same name made since is not this one.
        return kube.delete(
            BACKUP,
            str(meta["name"]),
            namespace=str(meta["namespace"]),
            preconditions={"uid": str(meta["uid"])},
        )
    except KubeError as exc:
        if exc.status == 409:
            return False
        raise


def remove_excess(kube: KubeClient, line: Line) -> list[str]:
    """Delete the line's excess one-offs (`backup_source.excess`), each with an Event."""
    removed: list[str] = []
    for name, why in excess(line.one_offs):
        backup = line.objects[name]
        if _delete(kube, backup):
            removed.append(name)
            log.info("CleoBackup %s/%s: %s", backup["metadata"]["namespace"], name, why)
            post_event(kube, backup, reason="OneOffRemoved", message=why, type="Warning")
    return removed


def make_room(kube: KubeClient, namespace: str, *, finished: bool) -> list[str]:
    """Delete the namespace's one-offs that have not started (and the finished ones, if
    `finished`); never a running one. The names deleted."""
    backups, jobs = _one_offs(kube, namespace)
    doomed = {"unstarted", "finished"} if finished else {"unstarted"}
    removed: list[str] = []
    for backup in backups:
        if _phase(backup, jobs) in doomed and _delete(kube, backup):
            removed.append(str(backup["metadata"]["name"]))
    if removed:
        log.info(
            "namespace %s: removed one-offs %s to make room for the final backup",
            namespace,
            ", ".join(sorted(removed)),
        )
    return removed


def is_quota_refusal(exc: KubeError) -> bool:
    """Whether the API server refused a creation because a ResourceQuota is full."""
    return exc.status == 403 and "exceeded quota" in exc.message

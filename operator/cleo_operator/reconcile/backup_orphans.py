"""Runner objects that outlived their CleoBackup, and the Jobs a CleoBackup may call its own.

Why this exists: a DELETE of a CleoBackup with ``propagationPolicy: Orphan`` (or
``orphanDependents``) leaves its runner objects behind without an owner: a Job that keeps
running past the one-off's TTL, and a Role that would grant its rights to the next
CleoBackup of the same name. The admission policy refuses such deletes to tenants; what a
platform admin (or an older policy) let through is swept here. An object carrying the
operator's ``cleoai.io/backup=<name>`` label is stale when no CleoBackup ``<name>`` owns it
any more: it has no owner at all, or its CleoBackup owner's uid is not the live one's.
Objects owned by something else (a scheduled run's Job, owned by its CronJob) are left to
the garbage collector once their owner goes.

Before a delete the CleoBackup is read again (one made after the sweep listed them owns
objects the sweep did not know of), and deletes carry the object's uid as a precondition,
so that an object the operator made anew meanwhile is never taken for the stale one. A
sweep only reads when nothing is stale.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from cleo_operator.api.objects import KubeObject, ObjectRef, object_ref
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import (
    BACKUP,
    CRON_JOB,
    JOB,
    NETWORK_POLICY,
    ROLE,
    ROLE_BINDING,
    SERVICE_ACCOUNT,
)
from cleo_operator.render.backup import BACKUP_LABEL
from cleo_operator.render.meta import labels_of, managed_by_operator

__all__ = ["RUNNER_KINDS", "foreign_to", "stale_runner_objects", "sweep_orphans"]

RUNNER_KINDS: Final = (JOB, CRON_JOB, ROLE_BINDING, ROLE, NETWORK_POLICY, SERVICE_ACCOUNT)
"""What the operator makes for a CleoBackup, the runner first (it stops the run)."""


def _backup_owners(obj: KubeObject) -> list[Mapping[str, object]]:
    owners = obj["metadata"].get("ownerReferences") or []
    return [o for o in owners if o.get("kind") == BACKUP.kind]


def foreign_to(obj: KubeObject, uid: str) -> bool:
    """Whether `obj` (a runner object labelled with a CleoBackup's name) is not that
    CleoBackup's: one the operator made that has no owner any more (its CleoBackup was
    deleted with its dependents orphaned), or one with a CleoBackup owner of another uid."""
    owners = obj["metadata"].get("ownerReferences") or []
    if not owners:
        return managed_by_operator(obj)
    return any(o.get("uid") != uid for o in _backup_owners(obj))


def stale_runner_objects(objects: list[KubeObject], live: Mapping[str, str]) -> list[KubeObject]:
    """Of the operator's runner objects, those no live CleoBackup owns (`live`: name to uid
    of the namespace's CleoBackups)."""
    stale = []
    for obj in objects:
        name = labels_of(obj).get(BACKUP_LABEL)
        if not name or not managed_by_operator(obj):
            continue
        owners = obj["metadata"].get("ownerReferences") or []
        if owners and not _backup_owners(obj):
            continue  # owned by its CronJob: it goes with it
        uid = live.get(name)
        if uid is None or foreign_to(obj, uid):
            stale.append(obj)
    return stale


def sweep_orphans(kube: KubeClient, namespace: str) -> list[ObjectRef]:
    """Delete the runner objects of `namespace` that no live CleoBackup owns; what went."""
    live = {
        str(b["metadata"]["name"]): str(b["metadata"]["uid"])
        for b in kube.list(BACKUP, namespace=namespace)
        if not b["metadata"].get("deletionTimestamp")
    }
    deleted: list[ObjectRef] = []
    for kind in RUNNER_KINDS:
        found = kube.list(kind, namespace=namespace, label_selector=BACKUP_LABEL)
        for obj in stale_runner_objects(found, live):
            meta = obj["metadata"]
            # A CleoBackup made after the list above (its objects too) is not stale: ask again.
            owner = kube.get(BACKUP, labels_of(obj)[BACKUP_LABEL], namespace=namespace)
            if owner is not None and not foreign_to(obj, str(owner["metadata"]["uid"])):
                continue
            try:
                gone = kube.delete(
                    kind,
                    str(meta["name"]),
                    namespace=namespace,
                    preconditions={"uid": str(meta["uid"])},
                )
            except KubeError as exc:
                if exc.conflict:  # made anew meanwhile: not the stale one
                    continue
                raise
            if gone:
                deleted.append(
                    object_ref({**obj, "apiVersion": kind.api_version, "kind": kind.kind})
                )
    return deleted

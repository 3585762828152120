"""A last backup before a tenant's database is dropped (``deletionPolicy: Delete``).

`TenantDatabases` asks its ``before_drop`` hook before it drops a tenant's database and
role; `FinalBackup` is that hook. Why it works the way it does:

**Only tenants that have backups get a final one.** A tenant whose namespace holds no
CleoBackup of its own never asked for backups, and its database is dropped at once. One
that does gets a one-off CleoBackup, ``cleo-final-backup`` (``cleo-`` names are the
operator's), that copies the destination and pod resources of the tenant's newest
CleoBackup, so the archive lands where the owner already looks for backups. It has no
retention rules (keep everything: it never prunes anything, its own archive included) and
no verification (the drop must not wait for a restore; the archive restores with
``cleo-operator restore`` like any other).

**What counts is a backup taken after the deletion began.** The drop goes ahead once any
CleoBackup of the tenant (normally the final one) reports a ``lastSuccessfulBackup`` that
started at or after the tenant's ``deletionTimestamp``. Both times are whole seconds; a
backup that started in the very second the deletion began counts. A backup made earlier
misses whatever the application wrote since, so it never counts.

**Never drop without it.** A final backup that failed keeps the database, and the message
(on the tenant's finalizer logs) says why and what to do: fix the cause and delete
``cleo-final-backup`` to try again (it is made anew), or delete the tenant's CleoBackups to
drop the database without a final backup. That is the only way to skip it, and it is a
person's decision, written down in the audit log of the API server.

**Tenant one-offs cannot keep it out.** The namespace's quota of CleoBackups counts the
one-offs tenant admins ask for (``spec.from``) too. Before the final backup is created, the
one-offs that have not started are deleted; on a quota refusal the finished ones go as well
and the creation is tried again (`reconcile.one_offs.make_room`). Their archives stay.

**It is created, not applied.** A one-off CleoBackup runs once; its spec must not follow
later changes of the backup it was copied from. A POST that meets 409 AlreadyExists means
an earlier call (or another worker) made it: it is read back on the next call. The object
has no owner reference to the CleoTenant, so a foreground deletion of the tenant does not
let the garbage collector take it; the namespace's deletion, which comes after the parts
of the tenant are done, removes it.

**What the runner needs must outlive the wait.** The runner pod reads the tenant's
credentials Secret (``cleo-database``) and keyring Secret; `TenantDatabases` deletes the
credentials Secret only after the drop, and the keyring stays with the namespace.

The hook reads the CleoTenant, lists the CleoBackups of its namespace and, once, creates
one object: a few API requests in the reconcile's worker thread, never a wait.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from typing import Any, Final

import pydantic

from cleo_operator.api.backup import (
    CleoBackupSpec,
    CleoBackupStatus,
    parse_backup_spec,
)
from cleo_operator.api.base import rfc3339
from cleo_operator.api.errors import SpecError
from cleo_operator.api.objects import KubeObject
from cleo_operator.api.tenant import CleoTenantSpec
from cleo_operator.core.times import read_rfc3339
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import BACKUP, TENANT
from cleo_operator.reconcile import one_offs
from cleo_operator.render.backup import BACKUP_LABEL
from cleo_operator.render.meta import (
    API_VERSION,
    TENANT_LABEL,
    labels_of,
    managed_by_operator,
    tenant_labels,
)
from cleo_operator.render.tenant import tenant_namespace

__all__ = [
    "FINAL_BACKUP_LABEL",
    "FINAL_BACKUP_NAME",
    "FinalBackup",
    "FinalBackupSettings",
]

log = logging.getLogger(__name__)


FINAL_BACKUP_NAME: Final = "cleo-final-backup"
"""Name of the final CleoBackup in the tenant's namespace (``cleo-`` is the operator's)."""
FINAL_BACKUP_LABEL: Final = "cleoai.io/final-backup"
"""Set to ``"true"`` on the final CleoBackup: it is not one of the tenant's own."""
DELETION_ANNOTATION: Final = "cleoai.io/final-backup-for-deletion"
"""On the final CleoBackup: the tenant's ``deletionTimestamp`` it was made for."""
COMPONENT: Final = "final-backup"


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinalBackupSettings:
    """How the final backup is made; defaults suit production."""

    name: str = FINAL_BACKUP_NAME
    """Name of the final CleoBackup (at most 40 characters, see ``api.backup``)."""
    history_limit: int = 10
    """``spec.historyLimit`` of the final CleoBackup: runs kept in its status."""


def _is_final(obj: KubeObject, *, tenant: str) -> bool:
    """Whether `obj` is a final CleoBackup the operator made for `tenant`."""
    labels = labels_of(obj)
    return (
        labels.get(FINAL_BACKUP_LABEL) == "true"
        and managed_by_operator(obj)
        and labels.get(TENANT_LABEL) == tenant
    )


def _status(obj: KubeObject) -> CleoBackupStatus:
    try:
        return CleoBackupStatus.model_validate(obj.get("status") or {})
    except pydantic.ValidationError:
        # Written by the runner and the reconciler only; an unreadable one has no backup.
        return CleoBackupStatus()


def _succeeded_since(obj: KubeObject, since: datetime.datetime) -> str | None:
    """The id (or time) of a successful backup of `obj` started at or after `since`."""
    newest = _status(obj).last_successful_backup
    if newest is None:
        return None
    started = read_rfc3339(newest.time)
    if started is None or started < since:
        return None
    return newest.backup_id or newest.time


def _ref(namespace: str, name: str) -> str:
    return f"CleoBackup {namespace}/{name}"


class FinalBackup:
    """The ``before_drop`` hook of `TenantDatabases`: a last backup before a ``Delete``.

    ``TenantDatabases.from_environment(kube, before_drop=FinalBackup(kube))``. Each call
    returns None when the database may be dropped, or what the drop waits for.
    Thread-safe: it keeps no state between calls (the cluster holds it all).
    """

    def __init__(self, kube: KubeClient, *, settings: FinalBackupSettings | None = None) -> None:
        self.kube = kube
        self.settings = settings or FinalBackupSettings()

    def __call__(self, tenant: str, spec: CleoTenantSpec) -> str | None:
        """None: drop now; otherwise a message for people saying what the drop waits for."""
        if spec.deletion_policy != "Delete" or not spec.database.enabled:
            return None  # nothing is dropped, so nothing to back up first
        namespace = tenant_namespace(name=tenant, spec=spec)
        name = self.settings.name
        obj = self.kube.get(TENANT, tenant)
        deleting = read_rfc3339(((obj or {}).get("metadata") or {}).get("deletionTimestamp"))
        if deleting is None:
            # Only a deletion drops a database; without its time nothing can be judged.
            return (
                f"CleoTenant {tenant} is not being deleted (no deletionTimestamp); the "
                "final backup is made only during a deletion"
            )

        backups = [
            b
            for b in self.kube.list(BACKUP, namespace=namespace)
            if (b.get("spec") or {}).get("tenant") == tenant
            and not b["metadata"].get("deletionTimestamp")
        ]
        for backup in backups:
            made = _succeeded_since(backup, deleting)
            if made is not None:
                log.info(
                    "tenant %s: backup %s of %s was taken after the deletion began; the "
                    "database may be dropped",
                    tenant,
                    made,
                    _ref(namespace, backup["metadata"]["name"]),
                )
                return None

        # A one-off made with spec.from is a tenant's request, not a backup set up for the
        # tenant: counting it would let a `{tenant, from: nope}` hold the drop forever.
        own = [
            b
            for b in backups
            if not _is_final(b, tenant=tenant) and not (b.get("spec") or {}).get("from")
        ]
        if not own:
            # No CleoBackup of its own: the tenant never asked for backups (or a person
            # removed them to skip the final backup).
            return None

        final = self.kube.get(BACKUP, name, namespace=namespace)
        if final is None:
            return self._create(tenant, namespace, own, deleting)
        if not _is_final(final, tenant=tenant):
            return (
                f"{_ref(namespace, name)} exists but is not the operator's final backup of "
                f"tenant {tenant}; rename or delete it so that the final backup can be made "
                "(the database is kept until then)"
            )
        created = read_rfc3339(final["metadata"].get("creationTimestamp"))
        if created is not None and created < deleting:
            # Left from before this deletion began (a namespace kept and reused): its one
            # run cannot be the backup this deletion needs. Made anew on the next call.
            self.kube.delete(BACKUP, name, namespace=namespace)
            return (
                f"replacing {_ref(namespace, name)}, made before the deletion began, with a "
                "new final backup"
            )
        return self._waiting(final, namespace, deleting)

    def _create(
        self,
        tenant: str,
        namespace: str,
        own: list[KubeObject],
        deleting: datetime.datetime,
    ) -> str:
        """Create the final CleoBackup from the newest usable one; what the drop waits for."""
        name = self.settings.name
        source = _newest_valid(own)
        if source is None:
            names = ", ".join(sorted(b["metadata"]["name"] for b in own))
            return (
                f"cannot make the final backup: no CleoBackup of tenant {tenant} in "
                f"{namespace} has a valid spec to copy the destination from ({names}); fix "
                "one, or delete them all to drop the database without a final backup"
            )
        source_name, source_spec = source
        body = self._render(tenant, namespace, source_spec, deleting)
        try:
            self._create_with_room(namespace, body)
        except KubeError as exc:
            if not exc.conflict:
                return (
                    f"cannot create the final backup {_ref(namespace, name)}: {exc.status} "
                    f"{exc.reason}: {exc.message[:300]}. The database is kept; is the "
                    "namespace still active, and may the operator create CleoBackups there?"
                )
            # Made by an earlier call or another worker: it is read back next time.
        else:
            log.info(
                "tenant %s: created the final backup %s (destination of %s) before dropping "
                "its database",
                tenant,
                _ref(namespace, name),
                source_name,
            )
        return f"waiting for the final backup {_ref(namespace, name)} (just created)"

    def _create_with_room(self, namespace: str, body: dict[str, Any]) -> None:
        """Create `body`; tenant one-offs must not keep the quota from it (`reconcile.one_offs`):
        those that have not started go first, and the finished ones on a quota refusal."""
        one_offs.make_room(self.kube, namespace, finished=False)
        try:
            self.kube.create(body)
        except KubeError as exc:
            if not one_offs.is_quota_refusal(exc):
                raise
            if not one_offs.make_room(self.kube, namespace, finished=True):
                raise
            self.kube.create(body)

    def _render(
        self,
        tenant: str,
        namespace: str,
        source: CleoBackupSpec,
        deleting: datetime.datetime,
    ) -> dict[str, Any]:
        spec = CleoBackupSpec(
            tenant=tenant,
            destination=source.destination,
            resources=source.resources,
            # No retention (keep all): nothing is pruned, not even by this run.
            retention=None,
            verification=None,
            history_limit=self.settings.history_limit,
        )
        labels = {**tenant_labels(tenant, component=COMPONENT), FINAL_BACKUP_LABEL: "true"}
        return {
            "apiVersion": API_VERSION,
            "kind": BACKUP.kind,
            "metadata": {
                "name": self.settings.name,
                "namespace": namespace,
                "labels": dict(sorted(labels.items())),
                "annotations": {DELETION_ANNOTATION: rfc3339(deleting)},
            },
            "spec": spec.to_api(),
        }

    def _waiting(self, final: KubeObject, namespace: str, deleting: datetime.datetime) -> str:
        """What the drop waits for while the final backup has not succeeded."""
        where = _ref(namespace, self.settings.name)
        status = _status(final)
        newest = status.last_backup
        started = read_rfc3339(newest.time) if newest is not None else None
        if newest is not None and newest.succeeded is False and started and started >= deleting:
            run = next((r for r in status.history if r.start_time == newest.time), None)
            why = (
                f"{run.reason or 'BackupFailed'}: {run.message or 'no details'}"
                if run is not None
                else "no details"
            )
            return (
                f"waiting for the final backup {where}, which failed ({why[:400]}); the "
                f"database is kept. Fix the cause and delete {where} to try again (it is "
                "made anew), or delete the tenant's CleoBackups to drop the database "
                "without a final backup"
            )
        ready = next((c for c in status.conditions if c.type == "Ready"), None)
        if ready is not None and ready.status == "False" and ready.reason != "NoBackupYet":
            return (
                f"waiting for the final backup {where}, which cannot run yet "
                f"({ready.reason}: {ready.message[:400]})"
            )
        phase = f" ({status.phase})" if status.phase else ""
        # A runner pod that cannot start (an unbound claim, an image it cannot pull) leaves
        # the backup Running without a word on it: say where to look.
        return (
            f"waiting for the final backup {where}{phase}; its runner: kubectl get "
            f"jobs,pods -n {namespace} -l {BACKUP_LABEL}={self.settings.name}"
        )


def _newest_valid(backups: list[KubeObject]) -> tuple[str, CleoBackupSpec] | None:
    """The newest CleoBackup (by creation) whose spec is valid and has a destination."""
    ordered = sorted(
        backups,
        key=lambda b: (str(b["metadata"].get("creationTimestamp") or ""), b["metadata"]["name"]),
        reverse=True,
    )
    for backup in ordered:
        try:
            spec = parse_backup_spec(backup.get("spec") or {})
        except SpecError:
            continue
        # A one-off made with spec.from has no destination of its own: its source is a
        # CleoBackup of the same tenant, which this loop reaches too.
        if spec.destination is not None:
            return backup["metadata"]["name"], spec
    return None

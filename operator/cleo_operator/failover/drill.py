"""Drills: rehearse a recovery without touching production.

A drill answers "if we had to recover now, how long would it take and what would we
lose?" with measurements instead of hopes:

- the standby is checked as a failover would check it (healthy, a standby of the
  tenant's primary, how far behind: the RPO a failover would have now);
- the tenant's role logs in to the standby and reads: the credentials a failover would
  hand to the workload work there;
- the latest *verified* backup (an authentic manifest with an authentic verification
  record, checked with the tenant keyring) is restored into a scratch database and every
  table is compared with the backup's manifest (the backup layer's ``verify_backup``),
  timed: the RTO of the other way back, from backups, when the standby is lost too. The
  restore and the reads run as a throwaway unprivileged login, never as the admin: a
  dump is the tenant's code.

Nothing of production changes: no fence, no promotion, no Secret or Deployment write; the
scratch database is created and dropped by the backup layer on the drill's site, and the
verification is not recorded beside the backup (``record=False``), so a drill does not
change what retention keeps.

Where the scratch database goes: a streaming standby is read-only (it cannot create a
database), so drills restore into the site named by the operator's drill setting (a
writable server near the standby); when none is set, into the target site if it takes
writes. Backups come from a :class:`BackupSource`; :class:`ClusterBackupSource` reads the
tenant's CleoBackups (object stores, read with their credentials Secret; a
PersistentVolumeClaim is only readable from a pod that mounts it) and the tenant keyring
Secret.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
from typing import Protocol

from cleo_operator.api.backup import parse_backup_spec
from cleo_operator.api.errors import SpecError
from cleo_operator.backup.catalog import list_backups
from cleo_operator.backup.connection import ConnectionInfo
from cleo_operator.backup.errors import BackupError
from cleo_operator.backup.object_stores import CredentialsUnavailable, operator_storage
from cleo_operator.backup.restore import VerificationResult, verify_backup
from cleo_operator.backup.storage import Storage
from cleo_operator.crypto import InvalidKeyMaterial, Keyring, KeyWrapper
from cleo_operator.failover.errors import FailoverError
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.keys import TENANT_KEYRING_SECRET, read_secret
from cleo_operator.kube.kinds import BACKUP, SECRET

__all__ = [
    "BackupSource",
    "ClusterBackupSource",
    "DrillBackup",
    "restore_drill",
]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DrillBackup:
    """The backup a drill restores."""

    storage: Storage
    """Where it is."""
    backup_id: str
    """Which one."""
    keyring: KeyWrapper
    """The tenant keyring that opens it."""
    taken: datetime.datetime
    """When the backup started (its data is from then)."""


class BackupSource(Protocol):
    """Finds the latest verified backup of a tenant."""

    def latest_verified(self, *, tenant: str, namespace: str) -> DrillBackup:
        """The newest backup whose verification passed; :class:`FailoverError` if none."""
        ...


class ClusterBackupSource:
    """Backups as the tenant's CleoBackups declare them, the keyring from its Secret."""

    def __init__(self, kube: KubeClient) -> None:
        self._kube = kube

    def latest_verified(self, *, tenant: str, namespace: str) -> DrillBackup:
        storages, unreadable, refused = self._storages(tenant=tenant, namespace=namespace)
        if not storages and refused:
            # Only credentials problems stand between the drill and the backups: say which.
            raise FailoverError(
                f"no backups of tenant {tenant!r} the operator can read: {'; '.join(refused)}",
                reason="BackupCredentialsMissing",
            )
        if not storages:
            hint = (
                f" Backups of CleoBackup(s) {', '.join(unreadable)} go to a "
                "PersistentVolumeClaim, which only a pod that mounts it can read, or to an "
                "object store through the runner's own identity; give the tenant a "
                "CleoBackup with an object store destination and a credentialsSecret for "
                "drills."
                if unreadable
                else f" Create a CleoBackup for tenant {tenant!r} in namespace {namespace}."
            )
            raise FailoverError(
                f"no backups of tenant {tenant!r} the operator can read.{hint}",
                reason="NoBackup",
            )
        keyring = self._keyring(namespace)
        best: DrillBackup | None = None
        # A CleoBackup whose Secret is incomplete does not hide another one's backups.
        problems: list[str] = list(refused)
        for storage in storages:
            try:
                # With the keyring: a forged manifest or verification record is not trusted.
                catalog = list_backups(storage, tenant=tenant, keyring=keyring)
            except BackupError as error:
                problems.append(error.message)
                continue
            for stored in catalog.backups:
                if stored.verified and (best is None or stored.time > best.taken):
                    best = DrillBackup(
                        storage=storage,
                        backup_id=stored.backup_id,
                        keyring=keyring,
                        taken=stored.time,
                    )
        if best is None:
            detail = f" ({'; '.join(problems)})" if problems else ""
            raise FailoverError(
                f"tenant {tenant!r} has no verified backup{detail}: turn on "
                "spec.verification of its CleoBackup, or verify one with "
                "`cleo-operator backup verify`.",
                reason="NoVerifiedBackup",
            )
        return best

    def _storages(
        self, *, tenant: str, namespace: str
    ) -> tuple[list[Storage], list[str], list[str]]:
        """The storages the operator can read; the CleoBackups it cannot by design (a
        volume, the runner's own identity); the problems of those it could with a Secret."""
        storages: list[Storage] = []
        unreadable: list[str] = []
        refused: list[str] = []
        for obj in self._kube.list(BACKUP, namespace=namespace):
            try:
                spec = parse_backup_spec(obj.get("spec"))
            except SpecError:
                continue
            # A one-off made with spec.from writes where the CleoBackup it runs writes.
            if spec.tenant != tenant or spec.destination is None:
                continue
            store = spec.destination.object_store
            if store is None:
                unreadable.append(str(obj["metadata"]["name"]))
                continue
            secret = (
                self._kube.get(SECRET, store.credentials_secret, namespace=namespace)
                if store.credentials_secret
                else None
            )
            try:
                storages.append(operator_storage(spec, secret, environ=os.environ))
            except CredentialsUnavailable as error:
                if error.reason == "IdentityNotShared":  # the runner's identity, not ours
                    unreadable.append(str(obj["metadata"]["name"]))
                    continue
                refused.append(f"CleoBackup {obj['metadata']['name']}: {error}")
        return storages, unreadable, refused

    def _keyring(self, namespace: str) -> Keyring:
        stored = read_secret(self._kube, namespace=namespace, name=TENANT_KEYRING_SECRET)
        if stored is None:
            raise FailoverError(
                f"the tenant keyring Secret {namespace}/{TENANT_KEYRING_SECRET} does not "
                "exist; backups cannot be opened without it",
                reason="KeyringMissing",
            )
        try:
            return Keyring.from_secret_data(stored.data)
        except InvalidKeyMaterial as error:
            raise FailoverError(
                f"the tenant keyring Secret {namespace}/{TENANT_KEYRING_SECRET} cannot be "
                f"read: {error}",
                reason="KeyringInvalid",
            ) from None


def restore_drill(
    backup: DrillBackup,
    *,
    admin: ConnectionInfo,
    tenant: str,
    pg_restore: str | os.PathLike[str] = "pg_restore",
    work_dir: str | os.PathLike[str] | None = None,
) -> VerificationResult:
    """Restore ``backup`` into a scratch database of ``admin``'s server, compare, drop it.

    ``admin`` needs CREATEDB and CREATEROLE there; it only creates and drops the scratch
    database and the unprivileged login that restores and reads it. Raises only when the
    restore cannot run at all (the server is down: ``SourceUnavailable``); an archive that
    does not restore is a failed result.
    """
    return verify_backup(
        storage=backup.storage,
        backup_id=backup.backup_id,
        keyring=backup.keyring,
        admin=admin,
        tenant=tenant,
        pg_restore=pg_restore,
        work_dir=work_dir,
        record=False,
    )

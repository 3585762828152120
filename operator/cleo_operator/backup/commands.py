"""What `cleo-operator backup ...` and `cleo-operator restore ...` do, as plain functions.

Why no argument parsing here: the command line (`cleo_operator.cli`) owns it; these
functions take keyword arguments and return results, so they are called the same way from
the CLI, from the CronJob's pod, and from tests.

The CronJob's pod runs `backup_run`: back up, then (when asked) verify and prune, and
return one report (`backup.report`), which the pod writes to its termination message. A
`BackupError` becomes a report with `outcome: Failed` and its reason; anything else is a
bug and propagates.

Inputs come the way Kubernetes hands them to a pod: the tenant's keyring is its Secret
mounted as a directory (`load_keyring_dir`), the database login is libpq's environment
(`ConnectionInfo.from_environment`), the destination is a path on the mounted volume.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Final, TypedDict
from urllib.parse import urlsplit

from cleo_operator.backup.catalog import list_backups
from cleo_operator.backup.connection import ConnectionInfo
from cleo_operator.backup.errors import BackupError
from cleo_operator.backup.manifest import MadeBy
from cleo_operator.backup.object_stores import object_storage_from_url
from cleo_operator.backup.report import RunReport, prune_report
from cleo_operator.backup.restore import verify_backup
from cleo_operator.backup.retention import RetentionPolicy, prune
from cleo_operator.backup.runner import run_backup
from cleo_operator.backup.storage import LocalStorage, Storage
from cleo_operator.core.times import rfc3339_precise
from cleo_operator.crypto import InvalidKeyMaterial, Keyring, KeyWrapper

__all__ = [
    "ArchiveListing",
    "backup_list",
    "backup_prune",
    "backup_run",
    "backup_verify",
    "load_keyring_dir",
    "storage_from_destination",
]

logger = logging.getLogger(__name__)

_MAX_KEY_FILE: Final = 1 << 20


class ArchiveListing(TypedDict):
    """One backup as `backup list` shows it."""

    backupId: str
    tenant: str
    database: str
    startTime: str
    archiveSize: int
    tables: int
    rows: int
    verified: bool | None


def load_keyring_dir(path: str | os.PathLike[str]) -> Keyring:
    """The tenant keyring from its Secret mounted as a directory (`keyring.json`, `vN.key`).

    Hidden entries (the `..data` links of Kubernetes volumes) are skipped. Raises
    InvalidKeyMaterial naming the file at fault; never makes a new keyring.
    """
    folder = Path(path)
    data: dict[str, bytes] = {}
    try:
        entries = sorted(folder.iterdir())
    except OSError as error:
        raise InvalidKeyMaterial(
            f"cannot read the tenant keyring directory {folder}: {error.strerror}; mount the "
            "tenant's keyring Secret there"
        ) from None
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_file():
            continue
        if entry.stat().st_size > _MAX_KEY_FILE:
            raise InvalidKeyMaterial(f"{entry} is too large to be part of a keyring")
        data[entry.name] = entry.read_bytes()
    return Keyring.from_secret_data(data)


def storage_from_destination(
    destination: str,
    *,
    environ: Mapping[str, str] | None = None,
    volume_mount: str | os.PathLike[str] | None = None,
) -> Storage:
    """A storage for `destination`.

    - a directory path (or `file://` URL) on a mounted volume: `LocalStorage`; with
      `volume_mount` (the runner pod's mount of the claim, which tenant admins can write
      through pods of their own) the path must be under it, and no directory below the
      mount is followed if it is a symbolic link;
    - `s3://BUCKET/PREFIX?region=REGION&endpoint=URL`, `gs://BUCKET/PREFIX?endpoint=URL`,
      `azure://ACCOUNT/CONTAINER/PREFIX?endpoint=URL`: an `ObjectStoreStorage`, with the
      credentials (or identity) that `backup.object_stores` reads from `environ` (default:
      this process's environment); `endpoint` for emulators, compatible stores and
      sovereign clouds.
    """
    parts = urlsplit(destination)
    if parts.scheme in ("", "file"):
        path = parts.path if parts.scheme else destination
        if not path:
            raise ValueError("the backup destination is empty: give a directory path")
        return LocalStorage(path, base=volume_mount)
    store = object_storage_from_url(destination, environ=os.environ if environ is None else environ)
    if store is not None:
        return store
    raise ValueError(
        f"backup destination {destination!r}: the scheme {parts.scheme!r} is not supported; "
        "use a directory path on the mounted volume, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or "
        "azure://ACCOUNT/CONTAINER/PREFIX"
    )


def backup_run(
    *,
    tenant: str,
    source: ConnectionInfo,
    storage: Storage,
    keyring: KeyWrapper,
    retention: RetentionPolicy | None = None,
    verify_admin: ConnectionInfo | None = None,
    pg_dump: str | os.PathLike[str] = "pg_dump",
    pg_restore: str | os.PathLike[str] = "pg_restore",
    work_dir: str | os.PathLike[str] | None = None,
    checksums: bool = True,
    now: datetime | None = None,
    made_by: MadeBy | None = None,
) -> RunReport:
    """Back up `tenant`, then verify (with `verify_admin`) and prune (with `retention`).

    `made_by` is recorded in the manifest; a one-off's run (`MadeBy.one_off`) never prunes,
    whatever `retention` says (see `cleo_operator.backup.retention`).

    Pruning runs only after a successful backup, so a failing backup never costs an old
    one. A failed verification makes the run `Failed` (reason `VerificationFailed`): the
    archive exists but is not proven to restore.
    """
    try:
        result = run_backup(
            source=source,
            tenant=tenant,
            storage=storage,
            keyring=keyring,
            now=now,
            pg_dump=pg_dump,
            checksums=checksums,
            made_by=made_by,
        )
    except BackupError as error:
        return {
            "outcome": "Failed",
            "reason": error.reason,
            "message": error.message,
            "tenant": tenant,
        }
    report: RunReport = {
        "outcome": "Succeeded",
        "reason": "BackupSucceeded",
        "message": (
            f"backup {result.backup_id}: {result.archive_size} bytes, "
            f"{len(result.manifest.tables)} tables, {result.duration_seconds:.1f}s"
        ),
        "tenant": tenant,
        "backup": result.to_report(),
    }
    if verify_admin is not None:
        verdict = verify_backup(
            storage=storage,
            backup_id=result.backup_id,
            keyring=keyring,
            admin=verify_admin,
            tenant=tenant,
            pg_restore=pg_restore,
            work_dir=work_dir,
        )
        report["verification"] = verdict.to_report()
        if not verdict.passed:
            report["outcome"] = "Failed"
            report["reason"] = "VerificationFailed"
            report["message"] = verdict.message
    one_off = made_by is not None and made_by.one_off
    if retention is not None and not retention.keeps_everything and not one_off:
        report["prune"] = prune_report(
            prune(storage, tenant=tenant, policy=retention, keyring=keyring, now=now)
        )
    return report


backup_verify = verify_backup
"""`cleo-operator backup verify`: restore into a scratch database and compare."""

backup_prune = prune
"""`cleo-operator backup prune`: apply retention to the tenant's authentic backups."""


def backup_list(
    *, storage: Storage, tenant: str | None = None, keyring: KeyWrapper | None = None
) -> list[ArchiveListing]:
    """`cleo-operator backup list`: the complete backups, oldest first.

    With the tenant `keyring`, only authentic backups are listed and `verified` is known;
    without it, `verified` is None (a record cannot be trusted without the keyring).
    """
    catalog = list_backups(storage, tenant=tenant, keyring=keyring)
    for problem in catalog.problems:
        logger.warning("%s", problem)
    return [
        {
            "backupId": b.backup_id,
            "tenant": b.manifest.tenant,
            "database": b.manifest.database,
            "startTime": rfc3339_precise(b.time),
            "archiveSize": b.archive.size,
            "tables": len(b.manifest.tables),
            "rows": b.manifest.total_rows,
            "verified": b.verified if keyring is not None else None,
        }
        for b in catalog.backups
    ]

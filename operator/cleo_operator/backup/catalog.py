"""Which objects of a storage make up which backups.

Names: a backup with id `ID` is the archive `ID.archive` and the manifest
`ID.manifest.json`; a verification of it writes `ID.verification.json`. A backup *exists*
exactly when its manifest and its archive are both there: the runner writes the archive
first and the manifest last, and pruning deletes the manifest first and the archive after,
so a crash at any point leaves at most an orphan archive (or verification record) that is
not a backup and that a later prune removes, never a manifest that points to nothing.

Several CleoBackups may share one storage (a volume, a bucket prefix); every function here
that acts on backups filters by tenant, so one tenant's retention never touches another's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from cleo_operator.backup.errors import ArchiveNotFound, BackupError, ManifestInvalid
from cleo_operator.backup.manifest import (
    BACKUP_ID_PATTERN,
    MAX_MANIFEST_BYTES,
    Manifest,
    check_backup_id,
    format_time,
    parse_time,
)
from cleo_operator.backup.storage import ObjectInfo, Storage

__all__ = [
    "ARCHIVE_SUFFIX",
    "MANIFEST_SUFFIX",
    "VERIFICATION_SUFFIX",
    "Catalog",
    "StoredBackup",
    "VerificationRecord",
    "archive_name",
    "list_backups",
    "manifest_name",
    "read_manifest",
    "verification_name",
    "write_verification",
]

ARCHIVE_SUFFIX: Final = ".archive"
MANIFEST_SUFFIX: Final = ".manifest.json"
VERIFICATION_SUFFIX: Final = ".verification.json"
VERIFICATION_FORMAT: Final = "cleo-operator/backup-verification/v1"
_MAX_VERIFICATION_BYTES: Final = 1 << 20


def archive_name(backup_id: str) -> str:
    """Object name of a backup's encrypted archive."""
    return check_backup_id(backup_id) + ARCHIVE_SUFFIX


def manifest_name(backup_id: str) -> str:
    """Object name of a backup's manifest."""
    return check_backup_id(backup_id) + MANIFEST_SUFFIX


def verification_name(backup_id: str) -> str:
    """Object name of the record of a backup's latest verification."""
    return check_backup_id(backup_id) + VERIFICATION_SUFFIX


def _split(name: str) -> tuple[str, str] | None:
    """(backup id, suffix) of an object name of the catalog, or None for a foreign object."""
    for suffix in (ARCHIVE_SUFFIX, MANIFEST_SUFFIX, VERIFICATION_SUFFIX):
        if name.endswith(suffix):
            backup_id = name[: -len(suffix)]
            if BACKUP_ID_PATTERN.fullmatch(backup_id):
                return backup_id, suffix
    return None


@dataclass(frozen=True)
class VerificationRecord:
    """The outcome of the latest verification of a backup, as stored beside it."""

    backup_id: str
    """The backup verified."""
    time: datetime
    """When the verification finished."""
    passed: bool
    """Whether the archive restored and every table matched the manifest."""
    tables_checked: int
    """How many tables were compared."""
    message: str
    """What was found, for people."""

    def to_json(self) -> bytes:
        document = {
            "format": VERIFICATION_FORMAT,
            "backupId": self.backup_id,
            "time": format_time(self.time),
            "passed": self.passed,
            "tablesChecked": self.tables_checked,
            "message": self.message,
        }
        return json.dumps(document, indent=2, sort_keys=True).encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, data: bytes, *, source: str) -> VerificationRecord:
        try:
            document = json.loads(data.decode("utf-8"))
            if not isinstance(document, dict) or document.get("format") != VERIFICATION_FORMAT:
                raise ValueError
            passed = document["passed"]
            tables = document["tablesChecked"]
            if not isinstance(passed, bool) or not isinstance(tables, int):
                raise ValueError
            return cls(
                backup_id=check_backup_id(document["backupId"]),
                time=parse_time(document["time"]),
                passed=passed,
                tables_checked=tables,
                message=str(document["message"]),
            )
        except (UnicodeDecodeError, ValueError, KeyError, TypeError):
            raise ManifestInvalid(
                f"{source}: not a verification record of format {VERIFICATION_FORMAT!r}"
            ) from None


@dataclass(frozen=True)
class StoredBackup:
    """A complete backup: a manifest whose archive is present."""

    manifest: Manifest
    """Its manifest (checked for form; its authenticity is checked when it is opened)."""
    archive: ObjectInfo
    """The archive object."""
    verification: VerificationRecord | None = None
    """Its latest verification, if any."""

    @property
    def backup_id(self) -> str:
        return self.manifest.backup_id

    @property
    def time(self) -> datetime:
        """When the backup started: what retention sorts and buckets by."""
        return self.manifest.start_time

    @property
    def verified(self) -> bool:
        """Whether its latest verification passed."""
        return self.verification is not None and self.verification.passed


@dataclass(frozen=True)
class Catalog:
    """What a storage holds: complete backups, leftovers, and what could not be read."""

    backups: list[StoredBackup] = field(default_factory=list)
    """Complete backups, oldest first."""
    orphans: list[ObjectInfo] = field(default_factory=list)
    """Objects of the catalog that belong to no complete backup (safe to delete)."""
    problems: list[str] = field(default_factory=list)
    """Objects that could not be read or parsed, with the reason; never deleted."""


def list_backups(storage: Storage, *, tenant: str | None = None) -> Catalog:
    """Read the catalog of `storage`; with `tenant`, only that tenant's backups.

    Orphans are only reported when their tenant cannot be known (archives and records
    without a manifest carry no tenant), so a caller filtering by tenant must apply a
    grace period before deleting them (the runner writes the manifest a moment after the
    archive).
    """
    groups: dict[str, dict[str, ObjectInfo]] = {}
    for info in storage.list():
        parts = _split(info.name)
        if parts is not None:
            groups.setdefault(parts[0], {})[parts[1]] = info
    catalog = Catalog()
    for backup_id in sorted(groups):
        objects = groups[backup_id]
        manifest_info = objects.get(MANIFEST_SUFFIX)
        if manifest_info is None:
            catalog.orphans.extend(objects.values())
            continue
        try:
            manifest = _load_manifest(storage, manifest_info.name)
        except BackupError as error:
            catalog.problems.append(error.message)
            continue
        if tenant is not None and manifest.tenant != tenant:
            continue
        archive = objects.get(ARCHIVE_SUFFIX)
        if archive is None or manifest.archive != archive.name:
            catalog.problems.append(
                f"{manifest_info.name}: its archive {manifest.archive} is missing from "
                f"{storage.description}; this backup cannot be restored"
            )
            continue
        verification = None
        record_info = objects.get(VERIFICATION_SUFFIX)
        if record_info is not None:
            try:
                verification = VerificationRecord.from_json(
                    storage.read_bytes(record_info.name, limit=_MAX_VERIFICATION_BYTES),
                    source=f"{storage.description}: {record_info.name}",
                )
            except BackupError as error:
                catalog.problems.append(error.message)
        catalog.backups.append(
            StoredBackup(manifest=manifest, archive=archive, verification=verification)
        )
    catalog.backups.sort(key=lambda b: (b.time, b.backup_id))
    return catalog


def _load_manifest(storage: Storage, name: str) -> Manifest:
    data = storage.read_bytes(name, limit=MAX_MANIFEST_BYTES)
    return Manifest.from_json(data, source=f"{storage.description}: {name}")


def read_manifest(storage: Storage, backup_id: str) -> Manifest:
    """The manifest of backup `backup_id`; ArchiveNotFound if there is no such backup."""
    name = manifest_name(backup_id)
    if storage.stat(name) is None:
        raise ArchiveNotFound(
            f"{storage.description} has no backup {backup_id} (no {name}); list the backups "
            "to see which exist"
        )
    manifest = _load_manifest(storage, name)
    if manifest.backup_id != backup_id or manifest.archive != archive_name(backup_id):
        raise ManifestInvalid(
            f"{storage.description}: {name} describes backup {manifest.backup_id} "
            f"({manifest.archive}), not {backup_id}: it was renamed or copied over"
        )
    return manifest


def write_verification(storage: Storage, record: VerificationRecord) -> None:
    """Store `record` beside its backup, replacing an earlier record."""
    name = verification_name(record.backup_id)
    # Records are replaced, unlike archives: delete, then write (a crash between the two
    # only loses the record, which makes the backup count as unverified: the safe side).
    storage.delete(name)
    storage.put_bytes(name, record.to_json())

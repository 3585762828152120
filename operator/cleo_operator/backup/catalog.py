"""Which objects of a storage make up which backups.

Names: a backup with id `ID` is the archive `ID.archive` and the manifest
`ID.manifest.json`; a verification of it writes `ID.verification.json`. A backup *exists*
exactly when its manifest and its archive are both there: the runner writes the archive
first and the manifest last, and pruning deletes the manifest first and the archive after,
so a crash at any point leaves at most an orphan archive (or verification record) that is
not a backup and that a later prune removes, never a manifest that points to nothing.

Several CleoBackups may share one storage (a volume, a bucket prefix); every function here
that acts on backups filters by tenant, so one tenant's retention never touches another's.

Why the catalog authenticates, given a keyring: whoever may write the storage (a tenant
sharing the bucket, anyone with its credentials) may write manifests and verification
records, and what they say decides which backups retention keeps and deletes and which
one a drill restores. A manifest is authentic when its data key unwraps under its own
digest (`open_archive_key`); a verification record is authentic when its `seal` opens: an
envelope made with the tenant keyring whose associated data binds the tenant, the backup,
the manifest's digest and the SHA-256 of the record's content, so that no field can be
changed, nor the record moved to another backup, without the keyring. Given a keyring,
`list_backups` lists only authentic backups and counts only authentic records; the rest
is reported (`unauthenticated`, `problems`), never deleted by retention. Records written
before records were sealed (format v1) are unauthenticated: treated as absent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from cleo_operator.backup.errors import (
    ArchiveNotFound,
    BackupError,
    KeyUnavailable,
    ManifestInvalid,
)
from cleo_operator.backup.manifest import (
    BACKUP_ID_PATTERN,
    MAX_MANIFEST_BYTES,
    Manifest,
    check_backup_id,
)
from cleo_operator.backup.storage import ObjectInfo, Storage
from cleo_operator.core.times import parse_rfc3339, rfc3339_precise
from cleo_operator.crypto import (
    CryptoError,
    KeyWrapper,
    MalformedEnvelope,
    StreamKey,
    Tampered,
    UnknownKeyVersion,
    WrongContext,
    open_stream_key,
)

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
    "open_archive_key",
    "read_manifest",
    "verification_name",
    "write_verification",
]

ARCHIVE_SUFFIX: Final = ".archive"
MANIFEST_SUFFIX: Final = ".manifest.json"
VERIFICATION_SUFFIX: Final = ".verification.json"
VERIFICATION_FORMAT: Final = "cleo-operator/backup-verification/v2"
_OLD_VERIFICATION_FORMATS: Final = frozenset({"cleo-operator/backup-verification/v1"})
_VERIFICATION_PURPOSE: Final = "backup-verification"
_RECORD_FIELDS: Final = frozenset(
    {
        "format",
        "backupId",
        "tenant",
        "manifest",
        "time",
        "passed",
        "tablesChecked",
        "message",
        "seal",
    }
)
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


def open_archive_key(manifest: Manifest, keyring: KeyWrapper, *, source: str) -> StreamKey:
    """Unwrap the archive's data key; this is what proves the manifest authentic."""
    try:
        key = open_stream_key(keyring, manifest.wrapped_key, context=manifest.key_context())
    except WrongContext as error:
        if "manifest" in error.mismatched:
            raise ManifestInvalid(
                f"{source}: the manifest was altered after the backup was made (its content "
                "no longer matches what the data key was wrapped for); do not trust this "
                "backup, use another one"
            ) from None
        raise ManifestInvalid(
            f"{source}: the manifest's wrapped key was made for another backup or tenant "
            f"(differs in: {', '.join(error.mismatched)}); the manifest was copied or edited"
        ) from None
    except UnknownKeyVersion as error:
        raise KeyUnavailable(
            f"{source}: the backup's data key was wrapped with tenant key {error.key_id}, which "
            "the keyring given does not hold; restore the tenant keyring from its KEK-wrapped "
            "copy, or pass the keyring of the tenant that made the backup"
        ) from None
    except (Tampered, MalformedEnvelope) as error:
        raise ManifestInvalid(
            f"{source}: the manifest's wrapped data key does not open ({error.reason}): it was "
            "altered, or the keyring is not the tenant's"
        ) from None
    if key.key_id != manifest.key_id:
        raise ManifestInvalid(
            f"{source}: the manifest names data key {manifest.key_id} but its wrapped key is "
            f"{key.key_id}"
        )
    return key


@dataclass(frozen=True)
class VerificationRecord:
    """The outcome of the latest verification of a backup, as stored beside it.

    Stored with a `seal` (see the module docstring); `from_json` checks the form only,
    `authentic` the seal.
    """

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
    tenant: str = ""
    """The backup's tenant (bound into the seal)."""
    manifest_digest: str = ""
    """The digest of the manifest verified (bound into the seal)."""
    seal: str = field(default="", repr=False)
    """The tenant keyring's envelope over the record; empty until `sealed`."""

    def _content(self) -> dict[str, Any]:
        return {
            "format": VERIFICATION_FORMAT,
            "backupId": self.backup_id,
            "tenant": self.tenant,
            "manifest": self.manifest_digest,
            "time": rfc3339_precise(self.time),
            "passed": self.passed,
            "tablesChecked": self.tables_checked,
            "message": self.message,
        }

    def _seal_context(self) -> dict[str, str]:
        canonical = json.dumps(
            self._content(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")
        return {
            "tenant": self.tenant,
            "backup": self.backup_id,
            "purpose": _VERIFICATION_PURPOSE,
            "manifest": self.manifest_digest,
            "record": "sha256:" + hashlib.sha256(canonical).hexdigest(),
        }

    def sealed(self, manifest: Manifest, keyring: KeyWrapper) -> VerificationRecord:
        """This record bound to `manifest` and sealed with the tenant `keyring`."""
        bound = dataclasses.replace(
            self, tenant=manifest.tenant, manifest_digest=manifest.digest(), seal=""
        )
        # The envelope's associated data (the context) is what is authenticated; what it
        # encrypts is a random filler.
        seal = keyring.wrap(secrets.token_bytes(32), context=bound._seal_context())
        return dataclasses.replace(bound, seal=seal)

    def authentic(self, manifest: Manifest, keyring: KeyWrapper) -> bool:
        """Whether the seal opens with `keyring` for exactly this record and `manifest`."""
        if not self.seal or self.tenant != manifest.tenant:
            return False
        if self.backup_id != manifest.backup_id or self.manifest_digest != manifest.digest():
            return False
        try:
            keyring.unwrap(self.seal, context=self._seal_context())
        except (CryptoError, ValueError, TypeError):
            return False
        return True

    def to_json(self) -> bytes:
        document = {**self._content(), "seal": self.seal}
        return json.dumps(document, indent=2, sort_keys=True).encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, data: bytes, *, source: str) -> VerificationRecord:
        try:
            document = json.loads(data.decode("utf-8"))
            if isinstance(document, dict) and document.get("format") in _OLD_VERIFICATION_FORMATS:
                raise ManifestInvalid(
                    f"{source}: a verification record of format {document.get('format')!r}, "
                    "written before records were sealed; it is not trusted (treated as "
                    "absent): verify the backup again"
                )
            if not isinstance(document, dict) or document.get("format") != VERIFICATION_FORMAT:
                raise ValueError
            passed = document["passed"]
            tables = document["tablesChecked"]
            if not isinstance(passed, bool) or not isinstance(tables, int):
                raise ValueError
            for key in ("tenant", "manifest", "seal", "message"):
                if not isinstance(document[key], str):
                    raise ValueError
            if set(document) != _RECORD_FIELDS:
                raise ValueError
            return cls(
                backup_id=check_backup_id(document["backupId"]),
                time=parse_rfc3339(document["time"]),
                passed=passed,
                tables_checked=tables,
                message=document["message"],
                tenant=document["tenant"],
                manifest_digest=document["manifest"],
                seal=document["seal"],
            )
        except (UnicodeDecodeError, ValueError, KeyError, TypeError):
            raise ManifestInvalid(
                f"{source}: not a verification record of format {VERIFICATION_FORMAT!r}"
            ) from None


@dataclass(frozen=True)
class StoredBackup:
    """A complete backup: a manifest whose archive is present."""

    manifest: Manifest
    """Its manifest: authentic when `authenticated`, else checked for form only."""
    archive: ObjectInfo
    """The archive object."""
    verification: VerificationRecord | None = None
    """Its latest verification, if any; only an authentic record (see `list_backups`)."""
    authenticated: bool = False
    """Whether the manifest was authenticated with the tenant keyring."""

    @property
    def backup_id(self) -> str:
        return self.manifest.backup_id

    @property
    def time(self) -> datetime:
        """When the backup started: what retention sorts and buckets by."""
        return self.manifest.start_time

    @property
    def verified(self) -> bool:
        """Whether its latest (authentic) verification passed."""
        return self.verification is not None and self.verification.passed


@dataclass(frozen=True)
class Catalog:
    """What a storage holds: complete backups, leftovers, and what could not be read."""

    backups: list[StoredBackup] = field(default_factory=list)
    """Complete backups, oldest first (with a keyring: only authentic ones)."""
    orphans: list[ObjectInfo] = field(default_factory=list)
    """Objects of the catalog that belong to no complete backup (safe to delete)."""
    problems: list[str] = field(default_factory=list)
    """Objects that could not be read, parsed or authenticated, with the reason; never
    deleted."""
    unauthenticated: list[str] = field(default_factory=list)
    """Ids of backups whose manifest claims the tenant but does not authenticate with its
    keyring (forged, altered, or made with a key the keyring lacks); never deleted."""


def list_backups(
    storage: Storage, *, tenant: str | None = None, keyring: KeyWrapper | None = None
) -> Catalog:
    """Read the catalog of `storage`; with `tenant`, only that tenant's backups.

    With `keyring` (the tenant's), manifests and verification records are authenticated:
    a backup whose manifest does not authenticate is left out of `backups` and listed in
    `unauthenticated`; a record that does not authenticate is treated as absent; both are
    reported in `problems`. Without it, every record is treated as absent (nothing can be
    trusted to be verified) and manifests are checked for form only.

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
        source = f"{storage.description}: {manifest_info.name}"
        try:
            manifest = _load_manifest(storage, manifest_info.name)
        except BackupError as error:
            catalog.problems.append(error.message)
            continue
        if tenant is not None and manifest.tenant != tenant:
            continue
        if manifest.backup_id != backup_id:
            catalog.problems.append(
                f"{source} describes backup {manifest.backup_id}: it was renamed or copied over"
            )
            catalog.unauthenticated.append(backup_id)
            continue
        if keyring is not None:
            try:
                open_archive_key(manifest, keyring, source=source)
            except BackupError as error:
                catalog.problems.append(
                    f"{error.message} (not counted as a backup, and never deleted by retention)"
                )
                catalog.unauthenticated.append(backup_id)
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
        if record_info is not None and keyring is not None:
            record_source = f"{storage.description}: {record_info.name}"
            try:
                record = VerificationRecord.from_json(
                    storage.read_bytes(record_info.name, limit=_MAX_VERIFICATION_BYTES),
                    source=record_source,
                )
            except BackupError as error:
                catalog.problems.append(error.message)
            else:
                if record.authentic(manifest, keyring):
                    verification = record
                else:
                    catalog.problems.append(
                        f"{record_source}: its seal does not open with the tenant keyring for "
                        "this backup (forged, altered or copied from another backup); it is "
                        "treated as absent"
                    )
        catalog.backups.append(
            StoredBackup(
                manifest=manifest,
                archive=archive,
                verification=verification,
                authenticated=keyring is not None,
            )
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


def write_verification(
    storage: Storage, record: VerificationRecord, *, manifest: Manifest, keyring: KeyWrapper
) -> None:
    """Seal `record` for `manifest` with the tenant `keyring` and store it beside its backup,
    replacing an earlier record."""
    if record.backup_id != manifest.backup_id:
        raise ValueError(f"record of {record.backup_id} for manifest of {manifest.backup_id}")
    name = verification_name(record.backup_id)
    data = record.sealed(manifest, keyring).to_json()
    # Records are replaced, unlike archives: delete, then write (a crash between the two
    # only loses the record, which makes the backup count as unverified: the safe side).
    storage.delete(name)
    storage.put_bytes(name, data)

"""The errors of the backup layer, each with a machine `reason` and a message for people.

Why a hierarchy of our own: the CleoBackup reconciler (and the CronJob's pod, through its
report) turns these into conditions and history entries, so every failure needs a stable
CamelCase `reason` and a message that says what was wrong, where (the archive, the table,
the storage) and what to do. `retryable` tells the caller whether running the same thing
again later, unchanged, may succeed (a site that was down) or not (a tampered archive).

Messages never carry secret material: no passwords, no keys, no wrapped keys, no table
contents. pg_dump's and pg_restore's own messages are passed through `redact` first.
"""

from __future__ import annotations

from cleo_operator.core.errors import CleoError
from cleo_operator.core.redaction import redact

__all__ = [
    "ArchiveCorrupt",
    "ArchiveNotFound",
    "BackupError",
    "DumpFailed",
    "KeyUnavailable",
    "ManifestInvalid",
    "RestoreFailed",
    "SourceUnavailable",
    "StorageError",
    "StorageFull",
    "TargetNotEmpty",
    "WrongTenant",
    "redact",
]


class BackupError(CleoError, reason="BackupFailed"):
    """Base of every error the backup layer raises on purpose."""


class StorageError(BackupError):
    """The backup storage could not be read or written (permissions, I/O, the network)."""


class StorageFull(StorageError):
    """The storage ran out of space (or hit a size limit) while an archive was written."""


class ArchiveNotFound(BackupError, retryable=False):
    """No complete backup (an archive with its manifest) has the id asked for."""


class ManifestInvalid(BackupError, retryable=False):
    """A manifest is not valid JSON of a known format, or it was altered."""


class ArchiveCorrupt(BackupError, retryable=False):
    """An archive failed its integrity checks: altered, truncated, or not its manifest's."""


class KeyUnavailable(BackupError, retryable=False):
    """The tenant keyring lacks the key version that wrapped the backup's data key."""


class WrongTenant(BackupError, retryable=False):
    """The backup belongs to another tenant than the one the caller restores for."""


class SourceUnavailable(BackupError, reason="DatabaseUnavailable"):
    """The database to back up (or the restore target) could not be reached or logged into."""


class DumpFailed(BackupError):
    """pg_dump (or reading the snapshot's table statistics) failed; the message says why."""


class TargetNotEmpty(BackupError, retryable=False):
    """The restore target already holds tables; restoring would mix two databases."""


class RestoreFailed(BackupError):
    """pg_restore failed; with a single transaction the target was left as it was."""

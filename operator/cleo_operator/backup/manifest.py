"""The backup manifest: what an archive holds, how to check it, and the key that opens it.

Why a manifest next to each archive instead of metadata inside it: the archive is one
encrypted stream that is written before its sizes and digests are known; the manifest is
written (atomically) only after the archive is complete, so *an archive without a manifest
is never a backup* (a crash half-way leaves no manifest), and listing backups is reading
small JSON files instead of opening large archives.

Why the manifest is authenticated: it carries the values restores and verifications trust
(digests, sizes, the per-table row counts and checksums). The archive's data key is wrapped
by the tenant keyring under a context that includes the SHA-256 of the manifest's canonical
content (everything but the wrapped key itself), so editing any field of the manifest makes
the key fail to unwrap, and the manifest is refused before anything else is believed.

Why the manifest says who made the archive (``madeBy``): retention must tell the archives a
scheduled CleoBackup made from those of one-offs a tenant admin asked for (``spec.from``),
so that one-offs can never push a scheduled archive out of a keep rule
(`cleo_operator.backup.retention`). It is part of the authenticated content like every other
field: whoever may write the storage cannot turn a scheduled archive into a one-off (or the
reverse) without the keyring. Manifests without it (made by the command line, or before the
field existed) are the platform's own archives.

Format (JSON, camelCase, `format` = `cleo-operator/backup-manifest/v1`); times are RFC 3339
UTC; table names are qualified and quoted as PostgreSQL's `format('%I.%I')` writes them.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from cleo_operator.backup.errors import ManifestInvalid
from cleo_operator.core.times import parse_rfc3339, rfc3339_precise

__all__ = [
    "BACKUP_ID_PATTERN",
    "CHECKSUM_ALGORITHM",
    "MANIFEST_FORMAT",
    "MadeBy",
    "Manifest",
    "TableStats",
    "archive_key_context",
    "check_backup_id",
    "new_backup_id",
]

MANIFEST_FORMAT: Final = "cleo-operator/backup-manifest/v1"
ENCRYPTION_ALGORITHM: Final = "cleo-stream-v1/aes-256-gcm"
"""The archive's encryption: the STREAM construction of `cleo_operator.crypto.stream`."""
DUMP_FORMAT: Final = "pg_dump-custom"
CHECKSUM_ALGORITHM: Final = "md5-sum128-v1"
"""Per-table checksum: see `cleo_operator.backup.contents`."""
MAX_MANIFEST_BYTES: Final = 64 << 20
"""A manifest larger than this is refused unread (it lists tables, not data)."""

BACKUP_ID_PATTERN: Final = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}")
"""`<UTC start, basic ISO 8601>-<8 random hex digits>`: sorts by time, unique, file-safe."""
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_KEY_CONTEXT_PURPOSE: Final = "backup-archive"


def new_backup_id(start: datetime) -> str:
    """A fresh backup id for a backup that starts at `start` (a timezone-aware time)."""
    if start.tzinfo is None:
        raise ValueError("the backup start time must be timezone-aware (datetime.now(UTC))")
    return start.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(4)


def check_backup_id(backup_id: str) -> str:
    """Return `backup_id` if it is well-formed, else raise ValueError saying what one is."""
    if not isinstance(backup_id, str) or BACKUP_ID_PATTERN.fullmatch(backup_id) is None:
        raise ValueError(
            f"{backup_id!r} is not a backup id: ids look like 20260301T120000Z-1a2b3c4d "
            "(the UTC start time and 8 hex digits); list the backups to find one"
        )
    return backup_id


def archive_key_context(*, tenant: str, backup_id: str, manifest_digest: str) -> dict[str, str]:
    """The context the archive's data key is wrapped under (see the module docstring)."""
    return {
        "tenant": tenant,
        "backup": backup_id,
        "purpose": _KEY_CONTEXT_PURPOSE,
        "manifest": manifest_digest,
    }


@dataclass(frozen=True)
class TableStats:
    """What one table held in the backup's snapshot."""

    rows: int
    """Number of rows."""
    checksum: str | None = None
    """Order-independent checksum of the rows (`CHECKSUM_ALGORITHM`), or None if not taken."""


@dataclass(frozen=True, kw_only=True)
class MadeBy:
    """Which CleoBackup made an archive (the manifest's ``madeBy``)."""

    cleo_backup: str
    """``namespace/name`` of the CleoBackup whose run made it."""
    one_off: bool = False
    """True for a one-off asked for with ``spec.from``: retention's keep rules do not count
    it, and its run prunes nothing."""


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """Everything known about one archive; see the module docstring for the format."""

    backup_id: str
    """The backup's id; the archive and manifest object names derive from it."""
    tenant: str
    """The tenant the database belongs to."""
    database: str
    """The database that was dumped."""
    archive: str
    """Object name of the encrypted archive in the same storage."""
    start_time: datetime
    """When the backup started (the snapshot is from just after it)."""
    end_time: datetime
    """When the archive was complete."""
    plaintext_size: int
    """Bytes of pg_dump output (the custom-format dump)."""
    archive_size: int
    """Bytes of the encrypted archive."""
    plaintext_sha256: str
    """Hex SHA-256 of the dump."""
    archive_sha256: str
    """Hex SHA-256 of the encrypted archive."""
    key_id: str
    """The data key's id, as the archive's stream header records it."""
    wrapped_key: str = field(repr=False)
    """The data key wrapped by the tenant keyring (under `archive_key_context`)."""
    chunk_size: int
    """Plaintext bytes per encrypted chunk."""
    server_version: str
    """PostgreSQL server version of the source (`server_version`)."""
    server_version_num: int
    """The same as a number (`server_version_num`), for compatibility checks."""
    pg_dump_version: str
    """`pg_dump --version` of the dumping tool; pg_restore must be at least as new."""
    checksum_algorithm: str | None
    """How `TableStats.checksum` was computed; None when only rows were counted."""
    tables: Mapping[str, TableStats]
    """Per qualified table name, its rows and checksum in the backup's snapshot."""
    made_by: MadeBy | None = None
    """The CleoBackup whose run made it; None when made outside a cluster (the CLI)."""

    @property
    def one_off(self) -> bool:
        """Whether a one-off (``spec.from``) made it (see the module docstring)."""
        return self.made_by is not None and self.made_by.one_off

    @property
    def duration_seconds(self) -> float:
        """Wall time of the backup."""
        return (self.end_time - self.start_time).total_seconds()

    @property
    def total_rows(self) -> int:
        """Rows of all tables."""
        return sum(t.rows for t in self.tables.values())

    def key_context(self) -> dict[str, str]:
        """The context the data key is wrapped under; binds tenant, id and this manifest."""
        return archive_key_context(
            tenant=self.tenant, backup_id=self.backup_id, manifest_digest=self.digest()
        )

    def digest(self) -> str:
        """`sha256:<hex>` of the canonical manifest without the wrapped key."""
        return _digest(self._document(include_wrapped_key=False))

    def to_json(self) -> bytes:
        """The manifest as stored: indented JSON, keys sorted, UTF-8, a final newline."""
        text = json.dumps(
            self._document(include_wrapped_key=True), indent=2, sort_keys=True, ensure_ascii=False
        )
        return text.encode("utf-8") + b"\n"

    def _document(self, *, include_wrapped_key: bool) -> dict[str, Any]:
        encryption: dict[str, Any] = {
            "algorithm": ENCRYPTION_ALGORITHM,
            "keyId": self.key_id,
            "chunkSize": self.chunk_size,
        }
        if include_wrapped_key:
            encryption["wrappedKey"] = self.wrapped_key
        document: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "backupId": self.backup_id,
            "tenant": self.tenant,
            "database": self.database,
            "archive": {
                "name": self.archive,
                "size": self.archive_size,
                "sha256": self.archive_sha256,
            },
            "dump": {
                "format": DUMP_FORMAT,
                "size": self.plaintext_size,
                "sha256": self.plaintext_sha256,
                "pgDumpVersion": self.pg_dump_version,
            },
            "startTime": rfc3339_precise(self.start_time),
            "endTime": rfc3339_precise(self.end_time),
            "encryption": encryption,
            "server": {"version": self.server_version, "versionNum": self.server_version_num},
            "checksumAlgorithm": self.checksum_algorithm,
            "tables": {
                name: {"rows": stats.rows, "checksum": stats.checksum}
                for name, stats in sorted(self.tables.items())
            },
        }
        # Written only when known, so that the digest of a manifest without it is unchanged.
        if self.made_by is not None:
            document["madeBy"] = {
                "cleoBackup": self.made_by.cleo_backup,
                "oneOff": self.made_by.one_off,
            }
        return document

    @classmethod
    def from_json(cls, data: bytes, *, source: str) -> Manifest:
        """Parse a stored manifest; ManifestInvalid names `source` and the field at fault.

        This checks the form only. Its authenticity is checked by unwrapping the data key
        under `key_context()` (see `cleo_operator.backup.restore`).
        """
        if len(data) > MAX_MANIFEST_BYTES:
            raise ManifestInvalid(f"{source}: {len(data)} bytes is too large for a manifest")
        try:
            document = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ManifestInvalid(f"{source}: not UTF-8 JSON: the file is damaged") from None
        return cls.from_document(document, source=source)

    @classmethod
    def from_document(cls, document: object, *, source: str) -> Manifest:
        """Parse a manifest already decoded from JSON (see `from_json`)."""
        reader = _Reader(source)
        doc = reader.mapping(document, "")
        manifest_format = reader.string(doc, "format")
        if manifest_format != MANIFEST_FORMAT:
            raise ManifestInvalid(
                f"{source}: format {manifest_format!r} is not {MANIFEST_FORMAT!r}: the backup "
                "was made by another version of the operator; restore it with that version"
            )
        archive = reader.mapping(doc.get("archive"), "archive")
        dump = reader.mapping(doc.get("dump"), "dump")
        encryption = reader.mapping(doc.get("encryption"), "encryption")
        server = reader.mapping(doc.get("server"), "server")
        algorithm = reader.string(encryption, "algorithm", prefix="encryption")
        if algorithm != ENCRYPTION_ALGORITHM:
            raise ManifestInvalid(
                f"{source}: encryption.algorithm {algorithm!r} is not {ENCRYPTION_ALGORITHM!r}"
            )
        backup_id = reader.string(doc, "backupId")
        try:
            check_backup_id(backup_id)
        except ValueError:
            raise ManifestInvalid(f"{source}: backupId {backup_id!r} is not a backup id") from None
        checksum_algorithm = doc.get("checksumAlgorithm")
        if checksum_algorithm not in (None, CHECKSUM_ALGORITHM):
            raise ManifestInvalid(
                f"{source}: checksumAlgorithm {checksum_algorithm!r} is not known here "
                f"(this operator computes {CHECKSUM_ALGORITHM!r})"
            )
        manifest = cls(
            backup_id=backup_id,
            tenant=reader.string(doc, "tenant"),
            database=reader.string(doc, "database"),
            archive=reader.string(archive, "name", prefix="archive"),
            archive_size=reader.integer(archive, "size", prefix="archive"),
            archive_sha256=reader.sha256(archive, "sha256", prefix="archive"),
            plaintext_size=reader.integer(dump, "size", prefix="dump"),
            plaintext_sha256=reader.sha256(dump, "sha256", prefix="dump"),
            pg_dump_version=reader.string(dump, "pgDumpVersion", prefix="dump"),
            start_time=reader.time(doc, "startTime"),
            end_time=reader.time(doc, "endTime"),
            key_id=reader.string(encryption, "keyId", prefix="encryption"),
            wrapped_key=reader.string(encryption, "wrappedKey", prefix="encryption"),
            chunk_size=reader.integer(encryption, "chunkSize", prefix="encryption"),
            server_version=reader.string(server, "version", prefix="server"),
            server_version_num=reader.integer(server, "versionNum", prefix="server"),
            checksum_algorithm=checksum_algorithm,
            tables=reader.tables(doc.get("tables")),
            made_by=reader.made_by(doc.get("madeBy")),
        )
        # The digest covers what was parsed, and the parse must not have dropped anything:
        # a field added by hand would otherwise be neither authenticated nor noticed.
        expected = manifest._document(include_wrapped_key=True)
        if _canonical(expected) != _canonical(doc):
            raise ManifestInvalid(
                f"{source}: holds fields this operator does not write (or writes differently): "
                "it was edited by hand or made by another version"
            )
        return manifest


def _canonical(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def _digest(document: Mapping[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(_canonical(document)).hexdigest()


class _Reader:
    """Typed access to a decoded manifest; every problem names the field path."""

    def __init__(self, source: str) -> None:
        self._source = source

    def _fail(self, path: str, what: str) -> ManifestInvalid:
        return ManifestInvalid(f"{self._source}: {path or 'the document'} must be {what}")

    def mapping(self, value: object, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self._fail(path, "an object")
        return value

    def string(self, doc: Mapping[str, Any], key: str, *, prefix: str = "") -> str:
        value = doc.get(key)
        if not isinstance(value, str) or not value:
            raise self._fail(_path(prefix, key), "a non-empty string")
        return value

    def integer(self, doc: Mapping[str, Any], key: str, *, prefix: str = "") -> int:
        value = doc.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self._fail(_path(prefix, key), "a non-negative integer")
        return value

    def sha256(self, doc: Mapping[str, Any], key: str, *, prefix: str = "") -> str:
        value = self.string(doc, key, prefix=prefix)
        if _SHA256_HEX.fullmatch(value) is None:
            raise self._fail(_path(prefix, key), "64 lowercase hex digits (a SHA-256)")
        return value

    def time(self, doc: Mapping[str, Any], key: str) -> datetime:
        text = self.string(doc, key)
        try:
            return parse_rfc3339(text)
        except ValueError:
            raise self._fail(key, "an RFC 3339 time with a timezone") from None

    def made_by(self, value: object) -> MadeBy | None:
        if value is None:
            return None
        made_by = self.mapping(value, "madeBy")
        one_off = made_by.get("oneOff")
        if not isinstance(one_off, bool):
            raise self._fail("madeBy.oneOff", "true or false")
        return MadeBy(
            cleo_backup=self.string(made_by, "cleoBackup", prefix="madeBy"), one_off=one_off
        )

    def tables(self, value: object) -> dict[str, TableStats]:
        tables = self.mapping(value, "tables")
        result: dict[str, TableStats] = {}
        for name, entry in tables.items():
            path = f"tables[{name!r}]"
            stats = self.mapping(entry, path)
            rows = stats.get("rows")
            if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
                raise self._fail(f"{path}.rows", "a non-negative integer")
            checksum = stats.get("checksum")
            if checksum is not None and not isinstance(checksum, str):
                raise self._fail(f"{path}.checksum", "a string or null")
            result[name] = TableStats(rows=rows, checksum=checksum)
        return result


def _path(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key

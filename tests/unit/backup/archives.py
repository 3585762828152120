"""Make real encrypted backups (archive + authenticated manifest) from bytes, without pg_dump.

For tests of what happens *around* archives (catalog, retention, manifest checks): the
archive is made with the real `EncryptingWriter` and the manifest is signed the way the
runner signs it (the data key wrapped under the manifest's digest). Tests of the runner
itself use pg_dump on a real server (tests/integration/test_backup_*.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from collections.abc import Mapping
from datetime import datetime, timedelta

from cleo_operator.backup.catalog import archive_name, manifest_name
from cleo_operator.backup.manifest import (
    CHECKSUM_ALGORITHM,
    MadeBy,
    Manifest,
    TableStats,
    new_backup_id,
)
from cleo_operator.backup.storage import Storage
from cleo_operator.crypto import EncryptingWriter, KeyWrapper, new_stream_key

DEFAULT_TABLES: Mapping[str, TableStats] = {
    "public.notes": TableStats(rows=3, checksum="1:2"),
    "public.memories": TableStats(rows=0, checksum="0:0"),
}


def encrypt(payload: bytes, key: bytes, key_id: str, *, chunk_size: int) -> bytes:
    out = io.BytesIO()
    with EncryptingWriter(out, key, key_id=key_id, chunk_size=chunk_size) as writer:
        writer.write(payload)
    return out.getvalue()


def store_backup(
    storage: Storage,
    *,
    keyring: KeyWrapper,
    tenant: str,
    start: datetime,
    payload: bytes = b"PGDMP not really a dump",
    tables: Mapping[str, TableStats] = DEFAULT_TABLES,
    chunk_size: int = 1024,
    with_manifest: bool = True,
    declared_size: int | None = None,
    made_by: MadeBy | None = None,
) -> Manifest:
    """Store one backup and return its manifest (also when `with_manifest` is False).

    `declared_size` signs a manifest that states another dump size than the payload's (an
    authentic manifest that lies, as a compromised runner could write one).
    """
    backup_id = new_backup_id(start)
    key = new_stream_key(keyring, context={"tenant": tenant, "backup": backup_id})
    archive = encrypt(payload, key.key, key.key_id, chunk_size=chunk_size)
    storage.put_bytes(archive_name(backup_id), archive)
    unsigned = Manifest(
        backup_id=backup_id,
        tenant=tenant,
        database=f"cleo_{tenant.replace('-', '_')}",
        archive=archive_name(backup_id),
        start_time=start,
        end_time=start + timedelta(seconds=42),
        plaintext_size=len(payload) if declared_size is None else declared_size,
        archive_size=len(archive),
        plaintext_sha256=hashlib.sha256(payload).hexdigest(),
        archive_sha256=hashlib.sha256(archive).hexdigest(),
        key_id=key.key_id,
        wrapped_key="-",
        chunk_size=chunk_size,
        server_version="15.6",
        server_version_num=150006,
        pg_dump_version="pg_dump (PostgreSQL) 15.6",
        checksum_algorithm=CHECKSUM_ALGORITHM,
        tables=dict(tables),
        made_by=made_by,
    )
    manifest = dataclasses.replace(
        unsigned, wrapped_key=keyring.wrap(key.key, context=unsigned.key_context())
    )
    if with_manifest:
        storage.put_bytes(manifest_name(backup_id), manifest.to_json())
    return manifest

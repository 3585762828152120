"""decrypt_archive writes no more than the manifest declares, authentic archive or not."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cleo_operator.backup.catalog import open_archive_key
from cleo_operator.backup.errors import ArchiveCorrupt
from cleo_operator.backup.restore import decrypt_archive
from cleo_operator.backup.storage import LocalStorage
from cleo_operator.crypto import Keyring
from tests.unit.backup.archives import store_backup

NOW = datetime(2026, 3, 31, 23, 30, tzinfo=UTC)


class CountingSink(io.RawIOBase):
    """Stands in for the work volume: counts what reaches it."""

    def __init__(self) -> None:
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        size = len(memoryview(data))  # type: ignore[arg-type]
        self.written += size
        return size


@pytest.mark.security
def test_an_authentic_archive_that_understates_its_size_stops_at_the_declared_size(
    tmp_path: Path,
) -> None:
    """The free-space check trusts manifest.plaintext_size; a manifest that says 1 KiB for a
    1 MiB dump must not get more than 1 KiB onto the work volume."""
    keyring = Keyring.generate(NOW)
    storage = LocalStorage(tmp_path)
    payload = b"PGDMP" + bytes(1024 * 1024)
    manifest = store_backup(
        storage,
        keyring=keyring,
        tenant="acme",
        start=NOW,
        payload=payload,
        chunk_size=4096,
        declared_size=1024,
    )
    key = open_archive_key(manifest, keyring, source="test")
    sink = CountingSink()

    with pytest.raises(ArchiveCorrupt, match="more than the 1024 bytes its manifest declares"):
        decrypt_archive(storage=storage, manifest=manifest, key=key, out=sink)  # type: ignore[arg-type]

    assert sink.written <= 1024


def test_an_archive_of_exactly_the_declared_size_decrypts(tmp_path: Path) -> None:
    keyring = Keyring.generate(NOW)
    storage = LocalStorage(tmp_path)
    payload = b"PGDMP" + bytes(10_000)
    manifest = store_backup(
        storage, keyring=keyring, tenant="acme", start=NOW, payload=payload, chunk_size=4096
    )
    out = io.BytesIO()
    size = decrypt_archive(
        storage=storage,
        manifest=manifest,
        key=open_archive_key(manifest, keyring, source="test"),
        out=out,
    )
    assert size == len(payload)
    assert out.getvalue() == payload

"""Manifests: their form is checked field by field, and any edit is caught by the key."""

from __future__ import annotations

import dataclasses
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cleo_operator.backup.catalog import read_manifest
from cleo_operator.backup.errors import (
    ArchiveCorrupt,
    ArchiveNotFound,
    KeyUnavailable,
    ManifestInvalid,
)
from cleo_operator.backup.manifest import (
    MadeBy,
    Manifest,
    TableStats,
    check_backup_id,
    new_backup_id,
)
from cleo_operator.backup.restore import compare_tables, decrypt_archive, open_archive_key
from cleo_operator.backup.storage import LocalStorage
from cleo_operator.crypto import Keyring
from tests.unit.backup.archives import store_backup
from tests.unit.crypto.secrets_check import assert_no_secret

START = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.generate(START - timedelta(days=30))


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path)


def test_backup_ids_sort_by_time_and_are_checked() -> None:
    first = new_backup_id(START)
    later = new_backup_id(START + timedelta(seconds=1))
    assert first.startswith("20260301T120000Z-")
    assert first < later
    assert new_backup_id(START) != first  # a random part: two runs in a second differ
    assert check_backup_id(first) == first
    for bad in ("20260301T120000Z", "../x", "20260301T120000Z-XYZ12345", ""):
        with pytest.raises(ValueError, match="is not a backup id"):
            check_backup_id(bad)
    with pytest.raises(ValueError, match="timezone-aware"):
        new_backup_id(datetime(2026, 3, 1))


def test_round_trip(storage: LocalStorage, keyring: Keyring) -> None:
    manifest = store_backup(storage, keyring=keyring, tenant="acme", start=START)
    again = Manifest.from_json(manifest.to_json(), source="test")
    assert again == manifest
    assert again.wrapped_key == manifest.wrapped_key
    assert read_manifest(storage, manifest.backup_id) == manifest
    assert manifest.duration_seconds == 42
    assert manifest.total_rows == 3
    # The wrapped key is long and useless to people: it stays out of reprs.
    assert manifest.wrapped_key not in repr(manifest)


def test_every_field_is_covered_by_the_digest(keyring: Keyring, storage: LocalStorage) -> None:
    manifest = store_backup(storage, keyring=keyring, tenant="acme", start=START)
    changes: dict[str, Any] = {
        "backup_id": new_backup_id(START),
        "tenant": "other",
        "database": "elsewhere",
        "archive": "x.archive",
        "start_time": START - timedelta(hours=1),
        "end_time": START + timedelta(hours=1),
        "plaintext_size": manifest.plaintext_size + 1,
        "archive_size": manifest.archive_size + 1,
        "plaintext_sha256": "0" * 64,
        "archive_sha256": "1" * 64,
        "key_id": "dk-0000000000000000",
        "chunk_size": 4096,
        "server_version": "16.0",
        "server_version_num": 160000,
        "pg_dump_version": "pg_dump (PostgreSQL) 16.0",
        "checksum_algorithm": None,
        "tables": {**manifest.tables, "public.notes": TableStats(rows=4, checksum="1:2")},
        "made_by": MadeBy(cleo_backup="acme/now", one_off=True),
    }
    assert set(changes) | {"wrapped_key"} == {f.name for f in dataclasses.fields(Manifest)}
    for name, value in changes.items():
        edited = dataclasses.replace(manifest, **{name: value})
        assert edited.digest() != manifest.digest(), name
        with pytest.raises(ManifestInvalid, match=r"manifest|wrapped key"):
            open_archive_key(edited, keyring, source="test")
    # The wrapped key itself is not in the digest (it is what the digest is bound to).
    assert dataclasses.replace(manifest, wrapped_key="x").digest() == manifest.digest()
    assert open_archive_key(manifest, keyring, source="test").key_id == manifest.key_id


def test_an_edited_manifest_on_disk_is_refused(storage: LocalStorage, keyring: Keyring) -> None:
    manifest = store_backup(storage, keyring=keyring, tenant="acme", start=START)
    path = storage.root / f"{manifest.backup_id}.manifest.json"
    document = json.loads(path.read_bytes())
    document["tables"]["public.notes"]["rows"] = 300
    path.write_text(json.dumps(document))
    edited = read_manifest(storage, manifest.backup_id)  # still well-formed
    with pytest.raises(ManifestInvalid, match="was altered after the backup was made"):
        open_archive_key(edited, keyring, source="test")


def test_keys_of_another_keyring_or_version(storage: LocalStorage, keyring: Keyring) -> None:
    manifest = store_backup(storage, keyring=keyring, tenant="acme", start=START)
    stranger = Keyring.generate(START)
    with pytest.raises(ManifestInvalid, match="does not open") as caught:
        open_archive_key(manifest, stranger, source="test")
    for key in (*keyring.keys, *stranger.keys):
        assert_no_secret(str(caught.value), key.material)
    # Made after a rotation (with v2), opened with the keyring from before it (v1 only).
    rotated = keyring.rotate(START)
    newer = store_backup(storage, keyring=rotated, tenant="acme", start=START)
    with pytest.raises(KeyUnavailable, match="tenant key v2, which the keyring given does not"):
        open_archive_key(newer, keyring, source="test")
    # The rotated keyring still opens backups made before the rotation.
    assert open_archive_key(manifest, rotated, source="test").key_id == manifest.key_id


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(format="cleo-operator/backup-manifest/v9"), "another version"),
        (lambda d: d["archive"].update(size=-1), r"archive\.size must be a non-negative"),
        (lambda d: d["dump"].update(sha256="ABC"), r"dump\.sha256 must be 64 lowercase hex"),
        (lambda d: d.update(startTime="yesterday"), "startTime must be an RFC 3339 time"),
        (lambda d: d.pop("tenant"), "tenant must be a non-empty string"),
        (lambda d: d["tables"].update(x={"rows": "3"}), r"tables\['x'\]\.rows must be"),
        (lambda d: d.update(comment="hello"), "holds fields this operator does not write"),
        (lambda d: d["encryption"].update(algorithm="rot13"), "encryption.algorithm"),
        (lambda d: d.update(backupId="../../etc"), "is not a backup id"),
        (lambda d: d.update(checksumAlgorithm="crc32"), "not known here"),
    ],
)
def test_malformed_manifests_name_the_field(
    storage: LocalStorage, keyring: Keyring, edit: Any, message: str
) -> None:
    manifest = store_backup(storage, keyring=keyring, tenant="acme", start=START)
    document = json.loads(manifest.to_json())
    edit(document)
    with pytest.raises(ManifestInvalid, match=message):
        Manifest.from_json(json.dumps(document).encode(), source="m.json")


def test_not_json_at_all() -> None:
    with pytest.raises(ManifestInvalid, match=r"m\.json: not UTF-8 JSON"):
        Manifest.from_json(b"\xff{", source="m.json")
    with pytest.raises(ManifestInvalid, match="the document must be an object"):
        Manifest.from_json(b"[]", source="m.json")


def test_a_missing_backup(storage: LocalStorage) -> None:
    with pytest.raises(ArchiveNotFound, match="has no backup 20260301T120000Z-00000000"):
        read_manifest(storage, "20260301T120000Z-00000000")


def test_a_manifest_under_another_name_is_refused(storage: LocalStorage, keyring: Keyring) -> None:
    manifest = store_backup(storage, keyring=keyring, tenant="acme", start=START)
    other = "20260301T120000Z-00000000"
    (storage.root / f"{manifest.backup_id}.manifest.json").rename(
        storage.root / f"{other}.manifest.json"
    )
    with pytest.raises(ManifestInvalid, match="renamed or copied over"):
        read_manifest(storage, other)


def test_decrypt_checks_sizes_and_digests(storage: LocalStorage, keyring: Keyring) -> None:
    payload = bytes(range(256)) * 40
    manifest = store_backup(storage, keyring=keyring, tenant="acme", start=START, payload=payload)
    key = open_archive_key(manifest, keyring, source="test")
    out = io.BytesIO()
    assert decrypt_archive(storage=storage, manifest=manifest, key=key, out=out) == len(payload)
    assert out.getvalue() == payload
    # A manifest whose digests do not match (as if from a different dump) is caught even
    # though every chunk authenticates.
    wrong = dataclasses.replace(manifest, plaintext_sha256="0" * 64)
    with pytest.raises(ArchiveCorrupt, match="dump's SHA-256 differs"):
        decrypt_archive(storage=storage, manifest=wrong, key=key, out=io.BytesIO())


def test_compare_tables() -> None:
    recorded = {
        "public.a": TableStats(rows=2, checksum="1:1"),
        "public.b": TableStats(rows=5, checksum="2:2"),
        "public.c": TableStats(rows=1, checksum=None),
        "public.gone": TableStats(rows=7, checksum="3:3"),
    }
    restored = {
        "public.a": TableStats(rows=2, checksum="1:1"),
        "public.b": TableStats(rows=5, checksum="9:9"),
        "public.c": TableStats(rows=1, checksum="5:5"),  # no recorded checksum: rows only
        "public.new": TableStats(rows=0, checksum="0:0"),
    }
    assert compare_tables(recorded, restored) == [
        "public.b: same row count (5) but different contents",
        "public.gone: in the backup (7 rows), missing after restore",
        "public.new: restored, but not in the backup",
    ]
    assert compare_tables(recorded, dict(recorded)) == []


@pytest.mark.security
def test_made_by_is_authenticated_and_read_back(keyring: Keyring, storage: LocalStorage) -> None:
    # Whoever may write the storage must not turn a scheduled archive into a one-off (which
    # retention's rules do not protect) by editing its manifest.
    scheduled = MadeBy(cleo_backup="cleo-acme/nightly")
    manifest = store_backup(storage, keyring=keyring, tenant="acme", start=START, made_by=scheduled)
    stored = Manifest.from_json(manifest.to_json(), source="test")
    assert (stored.made_by, stored.one_off) == (scheduled, False)
    flipped = manifest.to_json().replace(b'"oneOff": false', b'"oneOff": true')
    forged = Manifest.from_json(flipped, source="test")
    assert forged.one_off
    with pytest.raises(ManifestInvalid, match="altered"):
        open_archive_key(forged, keyring, source="test")
    # Removing the field is an edit too; an older manifest without it is the platform's.
    document = json.loads(manifest.to_json())
    del document["madeBy"]
    stripped = Manifest.from_document(document, source="test")
    with pytest.raises(ManifestInvalid, match="altered"):
        open_archive_key(stripped, keyring, source="test")
    with pytest.raises(ManifestInvalid, match=r"madeBy\.oneOff"):
        Manifest.from_document(
            {**json.loads(flipped), "madeBy": {"cleoBackup": "x", "oneOff": 1}}, source="test"
        )

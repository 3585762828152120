"""Verification records are sealed with the tenant keyring and bound to their backup."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cleo_operator.backup.catalog import VerificationRecord
from cleo_operator.backup.errors import ManifestInvalid
from cleo_operator.backup.storage import LocalStorage
from cleo_operator.crypto import Keyring
from tests.unit.backup.archives import store_backup

NOW = datetime(2026, 3, 31, 23, 30, tzinfo=UTC)


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.generate(NOW - timedelta(days=1))


def record(backup_id: str) -> VerificationRecord:
    return VerificationRecord(
        backup_id=backup_id, time=NOW, passed=True, tables_checked=2, message="ok"
    )


def test_a_sealed_record_round_trips_and_authenticates(tmp_path: Path, keyring: Keyring) -> None:
    manifest = store_backup(LocalStorage(tmp_path), keyring=keyring, tenant="acme", start=NOW)
    sealed = record(manifest.backup_id).sealed(manifest, keyring)
    assert sealed.tenant == "acme"
    assert sealed.manifest_digest == manifest.digest()
    parsed = VerificationRecord.from_json(sealed.to_json(), source="test")
    assert parsed == sealed
    assert parsed.authentic(manifest, keyring)
    # The key version that sealed it is named in the seal (rotation keeps it readable).
    rotated = keyring.rotate(NOW)
    assert parsed.authentic(manifest, rotated)


@pytest.mark.parametrize(
    "change",
    [
        {"passed": False},
        {"tables_checked": 3},
        {"message": "edited"},
        {"time": NOW + timedelta(seconds=1)},
        {"tenant": "globex"},
        {"manifest_digest": "sha256:" + "0" * 64},
    ],
)
def test_any_edited_field_breaks_the_seal(
    tmp_path: Path, keyring: Keyring, change: dict[str, object]
) -> None:
    manifest = store_backup(LocalStorage(tmp_path), keyring=keyring, tenant="acme", start=NOW)
    sealed = record(manifest.backup_id).sealed(manifest, keyring)
    edited = dataclasses.replace(sealed, **change)  # type: ignore[arg-type]
    assert not edited.authentic(manifest, keyring)


def test_a_record_is_bound_to_its_backup_and_keyring(tmp_path: Path, keyring: Keyring) -> None:
    storage = LocalStorage(tmp_path)
    one = store_backup(storage, keyring=keyring, tenant="acme", start=NOW)
    two = store_backup(storage, keyring=keyring, tenant="acme", start=NOW + timedelta(hours=1))
    sealed = record(one.backup_id).sealed(one, keyring)
    moved = dataclasses.replace(sealed, backup_id=two.backup_id)
    assert not moved.authentic(two, keyring)
    assert not sealed.authentic(two, keyring)
    assert not sealed.authentic(one, Keyring.generate(NOW))
    assert not dataclasses.replace(sealed, seal="").authentic(one, keyring)
    assert not dataclasses.replace(sealed, seal="cleo:v1:garbage").authentic(one, keyring)


def test_old_unsealed_records_and_unknown_fields_are_refused(keyring: Keyring) -> None:
    old = {
        "format": "cleo-operator/backup-verification/v1",
        "backupId": "20260301T120000Z-1a2b3c4d",
        "time": "2026-03-01T12:00:00Z",
        "passed": True,
        "tablesChecked": 1,
        "message": "ok",
    }
    with pytest.raises(ManifestInvalid, match="before records were sealed"):
        VerificationRecord.from_json(json.dumps(old).encode(), source="old")
    sealed = record("20260301T120000Z-1a2b3c4d")
    document = json.loads(sealed.to_json())
    document["trusted"] = True
    with pytest.raises(ManifestInvalid, match="not a verification record"):
        VerificationRecord.from_json(json.dumps(document).encode(), source="extra")

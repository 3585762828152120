"""Attacks on retention through the storage: forged manifests and verification records.

The attacker may write the backup storage but does not hold this tenant's keyring: a
tenant sharing the bucket (with its own keyring), anyone with the bucket's credentials, a
pod that mounts the volume. What it writes decides, unless authenticated, which backups
retention keeps and deletes and which backup counts as the newest verified one (which
retention must never prune and which a drill restores). Every forgery must change
nothing: the real backups kept are those the policy keeps, the newest really verified
backup survives, nothing forged counts as a backup or as a verification, and nothing the
keyring cannot authenticate is deleted.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cleo_operator.backup.catalog import (
    VerificationRecord,
    list_backups,
    manifest_name,
    verification_name,
    write_verification,
)
from cleo_operator.backup.manifest import Manifest
from cleo_operator.backup.retention import RetentionPolicy, prune
from cleo_operator.backup.storage import LocalStorage
from cleo_operator.core.times import rfc3339_precise
from cleo_operator.crypto import Keyring
from tests.unit.backup.archives import store_backup

pytestmark = pytest.mark.security

NOW = datetime(2026, 3, 31, 23, 30, tzinfo=UTC)


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.generate(NOW - timedelta(days=90))


@pytest.fixture
def attacker_keyring() -> Keyring:
    """The keyring of the tenant that shares the bucket: real, but not acme's."""
    return Keyring.generate(NOW - timedelta(days=90))


def record(manifest: Manifest, *, passed: bool = True) -> VerificationRecord:
    return VerificationRecord(
        backup_id=manifest.backup_id,
        time=NOW,
        passed=passed,
        tables_checked=2,
        message="verified" if passed else "did not restore",
    )


def unsealed_v1(storage: LocalStorage, manifest: Manifest, _: Keyring, __: Manifest) -> None:
    """What verification wrote before records were sealed, forged by hand."""
    document = {
        "format": "cleo-operator/backup-verification/v1",
        "backupId": manifest.backup_id,
        "time": rfc3339_precise(NOW),
        "passed": True,
        "tablesChecked": 2,
        "message": "verified",
    }
    storage.delete(verification_name(manifest.backup_id))
    storage.put_bytes(verification_name(manifest.backup_id), json.dumps(document).encode())


def sealed_by_another_keyring(
    storage: LocalStorage, manifest: Manifest, attacker: Keyring, _: Manifest
) -> None:
    write_verification(storage, record(manifest), manifest=manifest, keyring=attacker)


def copied_from_the_verified_backup(
    storage: LocalStorage, manifest: Manifest, _: Keyring, verified: Manifest
) -> None:
    """A real, sealed record of another backup, copied to this one's name."""
    data = (storage.root / verification_name(verified.backup_id)).read_bytes()
    storage.delete(verification_name(manifest.backup_id))
    storage.put_bytes(verification_name(manifest.backup_id), data)


def failed_record_edited_to_passed(
    storage: LocalStorage, manifest: Manifest, _: Keyring, __: Manifest
) -> None:
    """The backup's own real record (a failed verification), edited to say passed."""
    path = storage.root / verification_name(manifest.backup_id)
    document = json.loads(path.read_bytes())
    assert document["passed"] is False
    document["passed"] = True
    path.unlink()
    storage.put_bytes(path.name, json.dumps(document).encode())


@pytest.mark.parametrize(
    "forge",
    [
        unsealed_v1,
        sealed_by_another_keyring,
        copied_from_the_verified_backup,
        failed_record_edited_to_passed,
    ],
)
def test_a_forged_verification_record_cannot_make_retention_prune_the_verified_backup(
    tmp_path: Path,
    keyring: Keyring,
    attacker_keyring: Keyring,
    forge: Callable[[LocalStorage, Manifest, Keyring, Manifest], None],
) -> None:
    storage = LocalStorage(tmp_path / "store")
    acme = [
        store_backup(storage, keyring=keyring, tenant="acme", start=NOW - timedelta(days=d))
        for d in range(10, -1, -1)
    ]
    verified, target = acme[3], acme[6]
    write_verification(storage, record(verified), manifest=verified, keyring=keyring)
    write_verification(storage, record(target, passed=False), manifest=target, keyring=keyring)

    forge(storage, target, attacker_keyring, verified)
    catalog = list_backups(storage, tenant="acme", keyring=keyring)
    assert [b.backup_id for b in catalog.backups if b.verified] == [verified.backup_id]
    assert any(verification_name(target.backup_id) in p for p in catalog.problems)

    result = prune(
        storage, tenant="acme", policy=RetentionPolicy(keep_last=2), keyring=keyring, now=NOW
    )

    # The newest *really* verified backup survives; the forged one is an ordinary backup.
    assert list(result.kept) == [verified.backup_id, acme[-2].backup_id, acme[-1].backup_id]
    assert target.backup_id in result.deleted
    assert (storage.root / verified.archive).exists()


def forged_manifest(
    storage: LocalStorage, model: Manifest, *, start: datetime, suffix: str
) -> Manifest:
    """A manifest copied from a real one and edited to a new id and time, with an archive."""
    backup_id = start.strftime("%Y%m%dT%H%M%SZ") + "-" + suffix
    fake = dataclasses.replace(
        model,
        backup_id=backup_id,
        archive=f"{backup_id}.archive",
        start_time=start,
        end_time=start + timedelta(seconds=5),
    )
    storage.put_bytes(fake.archive, (storage.root / model.archive).read_bytes())
    storage.put_bytes(manifest_name(backup_id), fake.to_json())
    return fake


def test_forged_manifests_push_no_real_backup_out_and_are_never_deleted(
    tmp_path: Path, keyring: Keyring, attacker_keyring: Keyring
) -> None:
    storage = LocalStorage(tmp_path / "store")
    real = [
        store_backup(storage, keyring=keyring, tenant="acme", start=NOW - timedelta(days=d))
        for d in range(4, 0, -1)
    ]
    # Two "newer" backups edited from a real manifest, one sealed for acme by another
    # tenant's keyring, and one very old forgery that retention would love to delete.
    newer = [
        forged_manifest(storage, real[-1], start=NOW - timedelta(hours=h), suffix=f"0000000{h}")
        for h in (2, 1)
    ]
    other = store_backup(storage, keyring=attacker_keyring, tenant="acme", start=NOW)
    ancient = forged_manifest(storage, real[0], start=NOW - timedelta(days=400), suffix="deadbeef")
    forged = {m.backup_id for m in (*newer, other, ancient)}
    write_verification(storage, record(newer[-1]), manifest=newer[-1], keyring=attacker_keyring)

    result = prune(
        storage, tenant="acme", policy=RetentionPolicy(keep_last=2), keyring=keyring, now=NOW
    )

    assert list(result.kept) == [real[-2].backup_id, real[-1].backup_id]
    assert set(result.deleted) == {real[0].backup_id, real[1].backup_id}
    assert set(result.unauthenticated) == forged
    for backup_id in forged:
        # Reported, and left alone: never counted, never deleted.
        assert (storage.root / manifest_name(backup_id)).exists()
        assert any(backup_id in p for p in result.problems)


def test_retention_without_trustworthy_records_still_keeps_the_newest_backup(
    tmp_path: Path, keyring: Keyring
) -> None:
    """Every record forged: no backup is verified, and the newest real one stays."""
    storage = LocalStorage(tmp_path / "store")
    acme = [
        store_backup(storage, keyring=keyring, tenant="acme", start=NOW - timedelta(days=d))
        for d in range(3, -1, -1)
    ]
    for manifest in acme:
        unsealed_v1(storage, manifest, keyring, manifest)
    result = prune(
        storage, tenant="acme", policy=RetentionPolicy(keep_last=0), keyring=keyring, now=NOW
    )
    assert result.kept == (acme[-1].backup_id,)

"""The catalog and pruning on a real directory: what is a backup, what goes, in which order."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from cleo_operator.backup.catalog import (
    VerificationRecord,
    list_backups,
    manifest_name,
    write_verification,
)
from cleo_operator.backup.errors import StorageError
from cleo_operator.backup.manifest import MadeBy
from cleo_operator.backup.retention import RetentionPolicy, prune
from cleo_operator.backup.storage import LocalStorage
from cleo_operator.crypto import Keyring
from tests.unit.backup.archives import store_backup

NOW = datetime(2026, 3, 31, 23, 30, tzinfo=UTC)


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.generate(NOW - timedelta(days=90))


def names(root: Path) -> set[str]:
    return set(os.listdir(root))


def age(path: Path, hours: float) -> None:
    moment = (datetime.now(UTC) - timedelta(hours=hours)).timestamp()
    os.utime(path, (moment, moment))


def test_catalog_pairs_archives_with_manifests(tmp_path: Path, keyring: Keyring) -> None:
    storage = LocalStorage(tmp_path)
    a = store_backup(storage, keyring=keyring, tenant="acme", start=NOW - timedelta(hours=2))
    b = store_backup(storage, keyring=keyring, tenant="acme", start=NOW - timedelta(hours=1))
    other = store_backup(storage, keyring=keyring, tenant="globex", start=NOW)
    half = store_backup(
        storage, keyring=keyring, tenant="acme", start=NOW, with_manifest=False
    )  # a backup that crashed before its manifest
    broken = store_backup(storage, keyring=keyring, tenant="acme", start=NOW)
    (tmp_path / broken.archive).unlink()  # someone deleted an archive by hand
    (tmp_path / "README").write_text("not ours")

    catalog = list_backups(storage, tenant="acme")
    assert [x.backup_id for x in catalog.backups] == [a.backup_id, b.backup_id]
    assert [o.name for o in catalog.orphans] == [half.archive]
    assert len(catalog.problems) == 1
    assert f"its archive {broken.archive} is missing" in catalog.problems[0]

    everyone = list_backups(storage)
    assert [x.backup_id for x in everyone.backups] == [a.backup_id, b.backup_id, other.backup_id]

    write_verification(
        storage,
        VerificationRecord(
            backup_id=a.backup_id, time=NOW, passed=True, tables_checked=2, message="ok"
        ),
        manifest=a,
        keyring=keyring,
    )
    # A second verification replaces the first record.
    write_verification(
        storage,
        VerificationRecord(
            backup_id=b.backup_id, time=NOW, passed=False, tables_checked=0, message="bad"
        ),
        manifest=b,
        keyring=keyring,
    )
    verified = {
        x.backup_id: x.verified
        for x in list_backups(storage, tenant="acme", keyring=keyring).backups
    }
    assert verified == {a.backup_id: True, b.backup_id: False}


def test_prune_keeps_the_policy_and_leaves_other_tenants_alone(
    tmp_path: Path, keyring: Keyring
) -> None:
    storage = LocalStorage(tmp_path)
    acme = [
        store_backup(storage, keyring=keyring, tenant="acme", start=NOW - timedelta(days=d))
        for d in range(10, -1, -1)
    ]
    globex = [
        store_backup(storage, keyring=keyring, tenant="globex", start=NOW - timedelta(days=d))
        for d in range(10, -1, -1)
    ]
    write_verification(
        storage,
        VerificationRecord(
            backup_id=acme[0].backup_id, time=NOW, passed=True, tables_checked=2, message="ok"
        ),
        manifest=acme[0],
        keyring=keyring,
    )
    before = REGISTRY.get_sample_value("cleo_operator_backup_pruned_total", {"tenant": "acme"})

    dry = prune(
        storage,
        tenant="acme",
        keyring=keyring,
        policy=RetentionPolicy(keep_daily=3),
        now=NOW,
        dry_run=True,
    )
    assert dry.dry_run
    assert len(dry.deleted) == 7
    assert len(list_backups(storage, tenant="acme").backups) == 11  # nothing deleted

    result = prune(
        storage, tenant="acme", keyring=keyring, policy=RetentionPolicy(keep_daily=3), now=NOW
    )
    # The last 3 days, plus the oldest one: it is the newest verified backup.
    expected = [acme[0].backup_id, *(m.backup_id for m in acme[-3:])]
    assert list(result.kept) == expected
    assert set(result.deleted) == {m.backup_id for m in acme[1:-3]}
    assert result.problems == ()
    left = names(tmp_path)
    for manifest in acme[1:-3]:
        assert manifest.archive not in left
        assert manifest_name(manifest.backup_id) not in left
    assert f"{acme[0].backup_id}.verification.json" in left
    # globex was not touched.
    assert len(list_backups(storage, tenant="globex").backups) == len(globex)
    after = REGISTRY.get_sample_value("cleo_operator_backup_pruned_total", {"tenant": "acme"})
    assert (after or 0) - (before or 0) == 7


@pytest.mark.security
def test_one_offs_in_a_loop_leave_every_scheduled_backup_the_rules_keep(
    tmp_path: Path, keyring: Keyring
) -> None:
    # Real archives with authenticated manifests: ten nightly backups, then a tenant admin
    # asking for 30 one-offs in a row; the scheduled run's prune keeps what keep_last=5 kept.
    storage = LocalStorage(tmp_path)
    nightly = MadeBy(cleo_backup="cleo-acme/nightly")
    scheduled = [
        store_backup(
            storage, keyring=keyring, tenant="acme", start=NOW - timedelta(days=d), made_by=nightly
        )
        for d in range(10, 0, -1)
    ]
    asked = MadeBy(cleo_backup="cleo-acme/now", one_off=True)
    one_offs = [
        store_backup(
            storage, keyring=keyring, tenant="acme", start=NOW - timedelta(minutes=m), made_by=asked
        )
        for m in range(30, 0, -1)
    ]
    result = prune(
        storage, tenant="acme", keyring=keyring, policy=RetentionPolicy(keep_last=5), now=NOW
    )
    assert set(result.kept) == {m.backup_id for m in scheduled[-5:] + one_offs[-3:]}
    assert set(result.deleted) == {m.backup_id for m in scheduled[:5] + one_offs[:-3]}
    survivors = {b.backup_id for b in list_backups(storage, tenant="acme").backups}
    assert {m.backup_id for m in scheduled[-5:]} <= survivors


def test_no_policy_prunes_nothing(tmp_path: Path, keyring: Keyring) -> None:
    storage = LocalStorage(tmp_path)
    for d in range(5):
        store_backup(storage, keyring=keyring, tenant="acme", start=NOW - timedelta(days=d * 40))
    result = prune(storage, tenant="acme", keyring=keyring, policy=RetentionPolicy(), now=NOW)
    assert result.deleted == ()
    assert len(result.kept) == 5


class ArchiveDeleteFails(LocalStorage):
    """A volume that fails to delete archives: a crash between the two deletions."""

    def delete(self, name: str) -> bool:
        if name.endswith(".archive"):
            raise StorageError(f"{self.description}: deleting {name} failed: I/O error")
        return super().delete(name)


def test_a_crash_mid_prune_never_leaves_a_manifest_without_archive(
    tmp_path: Path, keyring: Keyring
) -> None:
    storage = ArchiveDeleteFails(tmp_path)
    old = store_backup(storage, keyring=keyring, tenant="acme", start=NOW - timedelta(days=5))
    new = store_backup(storage, keyring=keyring, tenant="acme", start=NOW)
    result = prune(
        storage, tenant="acme", keyring=keyring, policy=RetentionPolicy(keep_last=1), now=NOW
    )
    assert result.deleted == (old.backup_id,)
    assert "deleting" in result.problems[0]
    # The manifest went first: the old backup is gone as a backup; its archive is a
    # leftover, not a backup with a missing archive.
    catalog = list_backups(storage, tenant="acme")
    assert [b.backup_id for b in catalog.backups] == [new.backup_id]
    assert [o.name for o in catalog.orphans] == [old.archive]
    assert catalog.problems == []

    # The next prune (the volume works again) removes the leftover once it is old enough.
    healthy = LocalStorage(tmp_path)
    young = prune(
        healthy, tenant="acme", keyring=keyring, policy=RetentionPolicy(keep_last=1), now=NOW
    )
    assert young.leftovers_deleted == ()  # within the grace period: perhaps a running backup
    age(tmp_path / old.archive, hours=7)
    (tmp_path / ".x.archive.abcdef.tmp").write_bytes(b"a crashed write")
    age(tmp_path / ".x.archive.abcdef.tmp", hours=7)
    later = prune(
        healthy,
        tenant="acme",
        keyring=keyring,
        policy=RetentionPolicy(keep_last=1),
        now=datetime.now(UTC),
    )
    assert later.leftovers_deleted == (old.archive,)
    assert later.incomplete_removed == 1
    assert names(tmp_path) == {new.archive, manifest_name(new.backup_id)}

"""Damaged archives and manifests are refused before the target database is touched."""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cleo_operator.backup.catalog import archive_name, manifest_name
from cleo_operator.backup.connection import ConnectionInfo
from cleo_operator.backup.errors import (
    ArchiveCorrupt,
    KeyUnavailable,
    ManifestInvalid,
    RestoreFailed,
    TargetNotEmpty,
    WrongTenant,
)
from cleo_operator.backup.restore import restore_archive, verify_backup
from cleo_operator.backup.runner import BackupResult, run_backup
from cleo_operator.backup.storage import LocalStorage
from cleo_operator.crypto import Keyring
from cleo_operator.crypto.stream import TAG_SIZE
from tests.harness.postgres import PostgresServer
from tests.integration.backup_support import (
    create_database,
    create_sample_database,
    drop_database,
    table_contents,
    user_relations,
)

pytestmark = pytest.mark.postgres

CHUNK = 16 << 10
"""Small chunks, so that the archive has many and chunk-level damage can be aimed."""


class Backup:
    """One real backup, made once for the module, copied for each test to damage."""

    def __init__(self, folder: Path, result: BackupResult, keyring: Keyring, source: str) -> None:
        self.folder = folder
        self.result = result
        self.keyring = keyring
        self.source = source

    def copy(self, into: Path) -> LocalStorage:
        shutil.copytree(self.folder, into)
        return LocalStorage(into)

    @property
    def backup_id(self) -> str:
        return self.result.backup_id


@pytest.fixture(scope="module")
def backup(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backup]:
    source = f"bk_src_{secrets.token_hex(4)}"
    create_database(postgres_server, source)
    try:
        create_sample_database(postgres_server, source, people=1500, memories=3000)
        keyring = Keyring.generate(datetime.now(UTC))
        folder = tmp_path_factory.mktemp("pristine") / "store"
        result = run_backup(
            source=ConnectionInfo.from_dsn(postgres_server.dsn(source)),
            tenant="acme",
            storage=LocalStorage(folder),
            keyring=keyring,
            chunk_size=CHUNK,
        )
        assert result.archive_size > 8 * CHUNK
        yield Backup(folder, result, keyring, source)
    finally:
        drop_database(postgres_server, source)


@pytest.fixture
def target(postgres_server: PostgresServer) -> Iterator[str]:
    name = f"bk_dst_{secrets.token_hex(4)}"
    create_database(postgres_server, name)
    yield name
    drop_database(postgres_server, name)


def restore_into(
    server: PostgresServer, storage: LocalStorage, backup: Backup, target: str, **kwargs: object
) -> None:
    restore_archive(
        allow_privileged_target=True,  # restored as the test's superuser: its own archive
        storage=storage,
        backup_id=backup.backup_id,
        keyring=kwargs.pop("keyring", backup.keyring),  # type: ignore[arg-type]
        target=ConnectionInfo.from_dsn(server.dsn(target)),
        **kwargs,  # type: ignore[arg-type]
    )


def flip(offset: int) -> Callable[[bytearray], bytearray]:
    def damage(data: bytearray) -> bytearray:
        data[offset if offset >= 0 else len(data) + offset] ^= 0x01
        return data

    return damage


def swap_chunks(first: int, second: int) -> Callable[[bytearray], bytearray]:
    def damage(data: bytearray) -> bytearray:
        block = CHUNK + TAG_SIZE
        header = _header_size(data)
        a = header + first * block
        b = header + second * block
        data[a : a + block], data[b : b + block] = data[b : b + block], data[a : a + block]
        return data

    return damage


def _header_size(data: bytearray) -> int:
    # magic (8) + version (1) + key id length (1) + key id + nonce prefix (8) + chunk size (4)
    return 8 + 1 + 1 + data[9] + 8 + 4


DAMAGES: dict[str, tuple[Callable[[bytearray], bytearray], str]] = {
    "a flipped bit in the header's nonce": (flip(30), "chunk 1 of the encrypted stream failed"),
    "a flipped bit in the header's key id": (flip(15), "do not belong together"),
    "a flipped bit in the first chunk": (flip(200), "chunk 1 of the encrypted stream failed"),
    "a flipped bit in the middle": (flip(5 * (CHUNK + TAG_SIZE) + 77), "failed authentication"),
    "a flipped bit in the last tag": (flip(-1), "failed authentication"),
    "two chunks swapped": (swap_chunks(2, 3), "chunk 3 of the encrypted stream failed"),
    "cut at a chunk boundary": (
        lambda d: d[: _header_size(d) + 4 * (CHUNK + TAG_SIZE)],
        "but its manifest says .*: it was cut short",
    ),
    "cut inside a chunk": (lambda d: d[: len(d) // 2], "it was cut short"),
    "bytes appended": (lambda d: d + b"\x00" * 16, "it was extended"),
    "emptied": (lambda d: bytearray(), "it was cut short"),
}


@pytest.mark.security
@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_a_damaged_archive_is_refused_and_the_target_untouched(
    postgres_server: PostgresServer, backup: Backup, target: str, tmp_path: Path, damage: str
) -> None:
    storage = backup.copy(tmp_path / "store")
    path = storage.root / archive_name(backup.backup_id)
    edit, message = DAMAGES[damage]
    path.write_bytes(bytes(edit(bytearray(path.read_bytes()))))
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ArchiveCorrupt, match=message) as caught:
        restore_into(postgres_server, storage, backup, target, work_dir=work)
    assert "use another backup" in caught.value.message or "take the backup again" in (
        caught.value.message
    )
    assert user_relations(postgres_server, target) == []
    assert list(work.iterdir()) == []  # no decrypted dump left behind


def test_damage_that_keeps_the_size_is_caught_by_the_stream_not_the_size(
    postgres_server: PostgresServer, backup: Backup, target: str, tmp_path: Path
) -> None:
    # The size check stops truncation early; a same-size edit must be caught by the
    # chunk tags, after part of the dump was already decrypted (into the temp file only).
    storage = backup.copy(tmp_path / "store")
    path = storage.root / archive_name(backup.backup_id)
    data = bytearray(path.read_bytes())
    data[-TAG_SIZE - 5] ^= 0x80  # inside the final chunk
    path.write_bytes(bytes(data))
    with pytest.raises(ArchiveCorrupt, match="failed authentication"):
        restore_into(postgres_server, storage, backup, target)
    assert user_relations(postgres_server, target) == []


@pytest.mark.security
def test_an_edited_manifest_is_refused(
    postgres_server: PostgresServer, backup: Backup, target: str, tmp_path: Path
) -> None:
    storage = backup.copy(tmp_path / "store")
    path = storage.root / manifest_name(backup.backup_id)
    document = json.loads(path.read_bytes())
    document["tables"]["public.people"]["rows"] += 1
    path.write_text(json.dumps(document, indent=2))
    with pytest.raises(ManifestInvalid, match="altered after the backup was made"):
        restore_into(postgres_server, storage, backup, target)
    assert user_relations(postgres_server, target) == []


@pytest.mark.security
def test_the_wrong_keyring_or_tenant_is_refused(
    postgres_server: PostgresServer, backup: Backup, target: str
) -> None:
    storage = LocalStorage(backup.folder)
    with pytest.raises(ManifestInvalid, match="does not open"):
        restore_into(
            postgres_server, storage, backup, target, keyring=Keyring.generate(datetime.now(UTC))
        )
    # A keyring whose only version is v2 (v1 was dropped from the Secret).
    rotated = backup.keyring.rotate(datetime.now(UTC))
    only_v2 = Keyring(keys=rotated.keys[1:], active_version=2)
    with pytest.raises(KeyUnavailable, match="tenant key v1"):
        restore_into(postgres_server, storage, backup, target, keyring=only_v2)
    with pytest.raises(WrongTenant, match="belongs to tenant 'acme', not 'globex'"):
        restore_into(postgres_server, storage, backup, target, tenant="globex")
    assert user_relations(postgres_server, target) == []


def test_a_target_with_tables_is_refused(
    postgres_server: PostgresServer, backup: Backup, target: str
) -> None:
    postgres_server.execute("CREATE TABLE precious (x int)", dbname=target)
    postgres_server.execute("INSERT INTO precious VALUES (42)", dbname=target)
    with pytest.raises(TargetNotEmpty, match="already holds 1 tables"):
        restore_into(postgres_server, LocalStorage(backup.folder), backup, target)
    assert user_relations(postgres_server, target) == ["public.precious"]
    assert postgres_server.execute("SELECT x FROM precious", dbname=target) == [(42,)]


def test_a_failing_pg_restore_rolls_back_everything(
    postgres_server: PostgresServer, target: str, tmp_path: Path
) -> None:
    # The dump grants to a role that no longer exists when it is restored: pg_restore
    # fails near the end, after the tables were created and filled.
    source = f"bk_src_{secrets.token_hex(4)}"
    role = f"reader_{secrets.token_hex(4)}"
    create_database(postgres_server, source)
    try:
        postgres_server.execute(f'CREATE ROLE "{role}"')
        create_sample_database(postgres_server, source, people=200, memories=200)
        postgres_server.execute(f'GRANT SELECT ON people TO "{role}"', dbname=source)
        keyring = Keyring.generate(datetime.now(UTC))
        storage = LocalStorage(tmp_path)
        result = run_backup(
            source=ConnectionInfo.from_dsn(postgres_server.dsn(source)),
            tenant="acme",
            storage=storage,
            keyring=keyring,
        )
        postgres_server.execute(f'REVOKE ALL ON people FROM "{role}"', dbname=source)
        postgres_server.execute(f'DROP ROLE "{role}"')
        info = ConnectionInfo.from_dsn(postgres_server.dsn(target))
        with pytest.raises(RestoreFailed, match=f'role "{role}" does not exist') as caught:
            restore_archive(
                allow_privileged_target=True,  # restored as the test's superuser: its own archive
                storage=storage,
                backup_id=result.backup_id,
                keyring=keyring,
                target=info,
            )
        assert "nothing was changed" in caught.value.message
        assert user_relations(postgres_server, target) == []
        # Without privileges (a site where the original roles do not exist) it restores.
        restore_archive(
            allow_privileged_target=True,  # restored as the test's superuser: its own archive
            storage=storage,
            backup_id=result.backup_id,
            keyring=keyring,
            target=info,
            no_privileges=True,
        )
        assert table_contents(postgres_server, target) == table_contents(postgres_server, source)
    finally:
        drop_database(postgres_server, source)
        postgres_server.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_verification_of_a_damaged_archive_fails_and_cleans_up(
    postgres_server: PostgresServer, backup: Backup, tmp_path: Path
) -> None:
    storage = backup.copy(tmp_path / "store")
    path = storage.root / archive_name(backup.backup_id)
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x04
    path.write_bytes(bytes(data))
    verdict = verify_backup(
        storage=storage,
        backup_id=backup.backup_id,
        keyring=backup.keyring,
        admin=ConnectionInfo.from_dsn(postgres_server.dsn()),
    )
    assert not verdict.passed
    assert verdict.reason == "ArchiveCorrupt"
    assert "failed authentication" in verdict.message
    assert (
        postgres_server.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'cleo\\_verify\\_%'"
        )
        == []
    )
    record = json.loads((storage.root / f"{backup.backup_id}.verification.json").read_bytes())
    assert record["passed"] is False
    # An undamaged copy verifies, replacing the failed record with a passed one.
    (storage.root / archive_name(backup.backup_id)).write_bytes(
        (backup.folder / archive_name(backup.backup_id)).read_bytes()
    )
    verdict = verify_backup(
        storage=storage,
        backup_id=backup.backup_id,
        keyring=backup.keyring,
        admin=ConnectionInfo.from_dsn(postgres_server.dsn()),
    )
    assert verdict.passed, verdict.message
    record = json.loads((storage.root / f"{backup.backup_id}.verification.json").read_bytes())
    assert record["passed"] is True

"""Attacks on a backup volume: what a tenant admin can plant where backups are stored.

A tenant's admins can run pods that mount the tenant's backup volume, and the operator
mounts the same volume to verify backups. So the volume may hold, in place of a manifest,
an archive or the backup folder itself: symbolic links (to a file of the reader's
machine, to another tenant's volume, to the operator's files), FIFOs (a reader that opens
one waits forever), devices and directories. `LocalStorage` must refuse each one by name,
without following, opening or blocking, and read and write nothing outside its folder.
"""

from __future__ import annotations

import io
import os
import secrets
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cleo_operator.backup.catalog import list_backups
from cleo_operator.backup.errors import StorageError
from cleo_operator.backup.retention import RetentionPolicy
from cleo_operator.backup.storage import LocalStorage
from cleo_operator.cli.backup import run_backup_for
from cleo_operator.crypto import Keyring
from tests.harness.postgres import PostgresServer
from tests.integration.backup_support import create_database, drop_database

pytestmark = pytest.mark.security

NAME = "20260301T120000Z-1a2b3c4d"


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its content: what an attack must not change."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Files outside the storage that a link could point to: a secret, another volume."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "shadow").write_text("root:$6$secret-hash:19000:0:99999:7:::\n")
    other = folder / "other-tenant"
    other.mkdir()
    (other / f"{NAME}.manifest.json").write_text('{"format": "not yours"}\n')
    return folder


def finishes(action: Callable[[], object], *, seconds: float = 5.0) -> BaseException | None:
    """Run `action` in a thread; fail the test if it is still blocked after `seconds`."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            action()
        except BaseException as error:
            outcome.append(error)
        else:
            outcome.append(None)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        pytest.fail(f"still blocked after {seconds}s: the storage opened a FIFO and waits")
    return outcome[0]


def test_a_symlink_at_the_manifest_path_is_refused_unread(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    (root / f"{NAME}.manifest.json").symlink_to(outside / "shadow")
    storage = LocalStorage(root)
    before = tree(outside)

    with pytest.raises(StorageError, match=rf"{NAME}\.manifest\.json is a symbolic link"):
        storage.read_bytes(f"{NAME}.manifest.json", limit=1 << 20)
    with pytest.raises(StorageError, match="symbolic link"):
        storage.stat(f"{NAME}.manifest.json")
    assert storage.list() == []
    assert list_backups(storage).backups == []
    assert tree(outside) == before


def test_a_symlinked_archive_is_refused_and_never_overwritten_through(
    tmp_path: Path, outside: Path
) -> None:
    root = tmp_path / "store"
    root.mkdir()
    (root / f"{NAME}.archive").symlink_to(outside / "shadow")
    # A dangling link, where the operator will write the next verification record.
    (root / f"{NAME}.verification.json").symlink_to(outside / "planted-by-link")
    storage = LocalStorage(root)
    before = tree(outside)

    with (
        pytest.raises(StorageError, match=rf"{NAME}\.archive is a symbolic link"),
        storage.open(f"{NAME}.archive"),
    ):
        pass
    with pytest.raises(StorageError, match="already exists"):
        storage.put_bytes(f"{NAME}.verification.json", b"{}")
    with pytest.raises(StorageError, match="already exists"):
        storage.put(f"{NAME}.archive", io.BytesIO(b"x"))
    assert tree(outside) == before
    assert not (outside / "planted-by-link").exists()


def test_a_symlinked_backup_directory_is_not_followed(tmp_path: Path, outside: Path) -> None:
    """The tenant replaces its backup folder with a link to another tenant's volume."""
    mount = tmp_path / "volumes" / "tenant-a" / "claim"
    mount.mkdir(parents=True)
    (mount / "backups").symlink_to(outside / "other-tenant")
    before = tree(outside)

    for storage in (
        LocalStorage(mount / "backups", base=mount, create=False),
        LocalStorage(mount / "backups"),  # the root's own name is never followed either
    ):
        for action in (
            storage.list,
            lambda s=storage: s.read_bytes(f"{NAME}.manifest.json", limit=100),
            lambda s=storage: s.put_bytes("x.verification.json", b"{}"),
            lambda s=storage: s.delete(f"{NAME}.manifest.json"),
        ):
            with pytest.raises(StorageError, match="backups is a symbolic link"):
                action()
    assert tree(outside) == before


def test_a_symlinked_directory_deeper_under_the_mount_is_not_followed(
    tmp_path: Path, outside: Path
) -> None:
    mount = tmp_path / "volumes" / "tenant-a" / "claim"
    mount.mkdir(parents=True)
    (mount / "nightly").symlink_to(outside)
    storage = LocalStorage(mount / "nightly" / "other-tenant", base=mount)
    before = tree(outside)

    with pytest.raises(StorageError, match="nightly is a symbolic link"):
        storage.list()
    with pytest.raises(StorageError, match="nightly is a symbolic link"):
        storage.put_bytes("x.verification.json", b"{}")
    assert tree(outside) == before


def test_a_fifo_as_an_archive_is_refused_without_blocking(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    os.mkfifo(root / f"{NAME}.archive")
    os.mkfifo(root / f"{NAME}.manifest.json")
    storage = LocalStorage(root)

    def read_archive() -> None:
        with storage.open(f"{NAME}.archive") as reader:
            reader.read(1)

    error = finishes(read_archive)
    assert isinstance(error, StorageError)
    assert f"{NAME}.archive is a FIFO" in error.message
    error = finishes(lambda: storage.read_bytes(f"{NAME}.manifest.json", limit=100))
    assert isinstance(error, StorageError)
    assert "FIFO" in error.message
    assert finishes(lambda: list_backups(storage)) is None
    assert storage.list() == []


def test_a_device_in_place_of_an_archive_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    try:
        os.mknod(root / f"{NAME}.archive", 0o600 | 0o020000, os.makedev(1, 5))  # /dev/zero
    except PermissionError:
        pytest.fail("creating a device node needs CAP_MKNOD")
    storage = LocalStorage(root)

    error = finishes(lambda: storage.read_bytes(f"{NAME}.archive", limit=1 << 30))
    assert isinstance(error, StorageError)
    assert f"{NAME}.archive is a device" in error.message
    with pytest.raises(StorageError, match="device"):
        storage.stat(f"{NAME}.archive")


def test_a_directory_in_place_of_a_manifest_is_refused_and_not_deleted(tmp_path: Path) -> None:
    root = tmp_path / "store"
    (root / f"{NAME}.manifest.json").mkdir(parents=True)
    (root / f"{NAME}.manifest.json" / "keep").write_text("tenant data")
    storage = LocalStorage(root)

    with pytest.raises(StorageError, match=rf"{NAME}\.manifest\.json is a directory"):
        storage.read_bytes(f"{NAME}.manifest.json", limit=100)
    with pytest.raises(StorageError, match=rf"deleting {NAME}\.manifest\.json"):
        storage.delete(f"{NAME}.manifest.json")
    assert (root / f"{NAME}.manifest.json" / "keep").read_text() == "tenant data"
    assert storage.list() == []


@pytest.mark.postgres
def test_the_runner_follows_no_symlinked_directory_under_its_volume_mount(
    tmp_path: Path, outside: Path, postgres_server: PostgresServer
) -> None:
    """A tenant admin's pod that mounts the backup claim replaces a folder of the runner's
    destination path with a link to another tenant's folder (or anywhere): the runner
    (`run_backup_for`, as the CronJob calls it with its volume mount) refuses it by name and
    writes nothing through it."""
    database = f"bk_link_{secrets.token_hex(4)}"
    create_database(postgres_server, database)
    try:
        postgres_server.execute("CREATE TABLE notes (id int)", dbname=database)
        keyring_dir = tmp_path / "keyring"
        keyring_dir.mkdir()
        for name, value in Keyring.generate(datetime.now(UTC)).to_secret_data().items():
            (keyring_dir / name).write_bytes(value)
        mount = tmp_path / "var-lib-cleo-backup"
        mount.mkdir()
        (mount / "cleo").symlink_to(outside)
        before = tree(outside)

        report = run_backup_for(
            tenant="acme",
            destination=f"{mount}/cleo/other-tenant",
            keyring_dir=keyring_dir,
            retention=RetentionPolicy(keep_last=1),
            environ={
                "PGHOST": postgres_server.host,
                "PGPORT": str(postgres_server.port),
                "PGDATABASE": database,
                "PGUSER": postgres_server.superuser,
                "PGPASSWORD": postgres_server.password,
            },
            volume_mount=mount,
        )

        assert report["outcome"] == "Failed"
        assert "cleo is a symbolic link" in str(report.get("message"))
        assert tree(outside) == before
        assert sorted(p.name for p in (outside / "other-tenant").iterdir()) == [
            f"{NAME}.manifest.json"
        ]
    finally:
        drop_database(postgres_server, database)

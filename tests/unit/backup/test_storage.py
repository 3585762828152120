"""LocalStorage: writes are all or nothing, whatever goes wrong, a full disk included."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cleo_operator.backup.errors import StorageError, StorageFull
from cleo_operator.backup.storage import LocalStorage, Storage, check_object_name


def visible(root: Path) -> list[str]:
    """Every entry of the directory, hidden ones included."""
    return sorted(os.listdir(root))


def test_write_read_list_delete(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "backups")
    assert isinstance(storage, Storage)
    assert storage.list() == []
    data = os.urandom(3 * (1 << 20) + 17)
    size = storage.put("one.archive", io.BytesIO(data))
    assert size == len(data)
    storage.put_bytes("one.manifest.json", b"{}")
    assert [o.name for o in storage.list()] == ["one.archive", "one.manifest.json"]
    info = storage.stat("one.archive")
    assert info is not None
    assert info.size == len(data)
    assert abs(info.modified - datetime.now(UTC)) < timedelta(minutes=1)
    with storage.open("one.archive") as reader:
        assert reader.read() == data
    assert storage.read_bytes("one.manifest.json", limit=10) == b"{}"
    with pytest.raises(StorageError, match="larger than 1 bytes"):
        storage.read_bytes("one.manifest.json", limit=1)
    assert storage.delete("one.archive") is True
    assert storage.delete("one.archive") is False
    assert storage.stat("one.archive") is None
    with pytest.raises(StorageError, match=r"one\.archive does not exist"):
        storage.open("one.archive").__enter__()
    # Archives are private to the backup pod's user.
    assert (tmp_path / "backups" / "one.manifest.json").stat().st_mode & 0o077 == 0


def test_an_exception_in_the_block_leaves_nothing(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    seen_while_writing: list[list[str]] = []

    def dump_that_dies() -> None:
        with storage.writer("x.archive") as out:
            out.write(b"partial data" * 1000)
            seen_while_writing.append([o.name for o in storage.list()])
            seen_while_writing.append(visible(tmp_path))
            raise RuntimeError("pg_dump died")

    with pytest.raises(RuntimeError, match="pg_dump died"):
        dump_that_dies()
    # While the block ran, the data sat in a hidden temporary file only...
    listed, on_disk = seen_while_writing
    assert listed == []
    assert len(on_disk) == 1
    assert on_disk[0].startswith(".x.archive.")
    # ...which is gone now.
    assert visible(tmp_path) == []
    assert storage.stat("x.archive") is None


def test_objects_are_never_overwritten(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.put_bytes("a.archive", b"first")
    with pytest.raises(StorageError, match="already exists"):
        storage.put_bytes("a.archive", b"second")
    assert storage.read_bytes("a.archive", limit=100) == b"first"
    assert visible(tmp_path) == ["a.archive"]


def test_names_are_checked(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    for bad in ("../escape", ".hidden", "a/b", "", "x" * 201):
        with pytest.raises(ValueError, match="invalid object name"):
            storage.put_bytes(bad, b"")
    assert check_object_name("20260301T120000Z-1a2b3c4d.archive")
    assert visible(tmp_path) == []


def test_foreign_files_are_not_listed(tmp_path: Path) -> None:
    (tmp_path / "lost+found").mkdir()
    (tmp_path / ".x.archive.abc.tmp").write_bytes(b"leftover")
    (tmp_path / "notes.txt").write_text("someone's file")
    assert [o.name for o in LocalStorage(tmp_path).list()] == ["notes.txt"]


def test_clean_incomplete_removes_only_old_leftovers(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    old = tmp_path / ".a.archive.111111.tmp"
    fresh = tmp_path / ".b.archive.222222.tmp"
    old.write_bytes(b"crashed run")
    fresh.write_bytes(b"running now")
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).timestamp()
    os.utime(old, (an_hour_ago, an_hour_ago))
    storage.put_bytes("kept.archive", b"x")
    removed = storage.clean_incomplete(older_than=datetime.now(UTC) - timedelta(minutes=30))
    assert removed == 1
    assert visible(tmp_path) == [fresh.name, "kept.archive"]


def test_a_missing_root_is_created_or_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist: mount the backup volume"):
        LocalStorage(tmp_path / "absent", create=False).put_bytes("a", b"")
    LocalStorage(tmp_path / "made" / "deep").put_bytes("a", b"")
    assert (tmp_path / "made" / "deep" / "a").exists()


# A real write failure, not a simulated one: the child process may not grow any file past
# 1 MiB (RLIMIT_FSIZE), so the kernel fails the write with EFBIG, exactly as a full volume
# fails it with ENOSPC. SIGXFSZ is ignored so that the write returns the error instead of
# the signal killing the process.
_FULL_DISK_CHILD = textwrap.dedent(
    """
    import io, json, os, resource, signal, sys
    from cleo_operator.backup.errors import StorageFull
    from cleo_operator.backup.storage import LocalStorage
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    storage = LocalStorage(sys.argv[1])
    try:
        storage.put("big.archive", io.BytesIO(os.urandom(5 << 20)))
    except StorageFull as error:
        print(json.dumps({"reason": error.reason, "message": error.message}))
    else:
        print(json.dumps({"reason": None}))
    """
)


def test_a_full_disk_leaves_no_partial_object(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.put_bytes("earlier.archive", b"an earlier backup")
    child = subprocess.run(
        [sys.executable, "-c", _FULL_DISK_CHILD, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    outcome = json.loads(child.stdout)
    assert outcome["reason"] == "StorageFull"
    assert "is full (File too large) while writing big.archive after" in outcome["message"]
    assert "nothing of the unfinished object was kept" in outcome["message"]
    # No temporary file, no partial archive; what was there before is intact.
    assert visible(tmp_path) == ["earlier.archive"]
    assert storage.read_bytes("earlier.archive", limit=100) == b"an earlier backup"


def test_storage_full_is_a_storage_error() -> None:
    # Callers that handle StorageError handle a full volume too.
    assert issubclass(StorageFull, StorageError)
    assert StorageFull.reason == "StorageFull"


def test_a_root_outside_its_base_or_with_dotdot_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not under"):
        LocalStorage(tmp_path / "elsewhere", base=tmp_path / "mount")
    with pytest.raises(ValueError, match=r"must not contain '\.\.'"):
        LocalStorage(tmp_path / "mount" / ".." / "other", base=tmp_path / "mount")


def test_directories_below_the_base_are_created_without_following(tmp_path: Path) -> None:
    mount = tmp_path / "mount"
    mount.mkdir()
    storage = LocalStorage(mount / "a" / "b", base=mount)
    storage.put_bytes("x.manifest.json", b"{}")
    assert (mount / "a" / "b" / "x.manifest.json").read_bytes() == b"{}"
    assert [o.name for o in storage.list()] == ["x.manifest.json"]
    missing = LocalStorage(mount / "c" / "d", base=mount, create=False)
    assert missing.list() == []
    assert missing.stat("x.manifest.json") is None
    assert missing.delete("x.manifest.json") is False
    with pytest.raises(StorageError, match="does not exist"):
        missing.put_bytes("x.manifest.json", b"{}")
    assert not (mount / "c").exists()

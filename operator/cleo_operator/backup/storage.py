"""Where archives and manifests live: a small object-store interface and the volume backend.

Why an object store and not a file system API: the same runner writes to a
PersistentVolumeClaim (a directory) and to object storage (`backup.object_store`: S3, GCS,
Azure Blob), and all can offer exactly this much: named
objects written whole from a stream, read as a stream, listed and deleted. Objects are
flat names (letters, digits, '.', '_', '-'); the backup catalog decides what they mean.

Why writes are atomic: a backup that fails half-way (a full disk, pg_dump dying, the pod
being evicted) must leave nothing that looks like an archive. `writer(name)` hands out a
stream to a temporary object and makes it visible under `name` only when the `with` block
ends without an exception, after the data is durable (for a directory: write to a hidden
temporary file, fsync it, rename it, fsync the directory). On any exception the temporary
object is removed. A process killed outright cannot clean up: its hidden temporary files
(or, on object storage, its unfinished multipart uploads) are never listed as objects;
`clean_incomplete`, which pruning calls, removes the temporary files (object stores leave
unfinished uploads to the bucket's lifecycle rule, see `backup.object_store`).

Errors are `StorageError` (or `StorageFull` for ENOSPC, EDQUOT, EFBIG) naming the storage
and the object, raised from the exact write that failed, so that a failure of the storage
is never mistaken for a failure of the database.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import stat
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

from cleo_operator.backup.errors import StorageError, StorageFull

__all__ = [
    "COPY_BUFFER_SIZE",
    "LocalStorage",
    "ObjectInfo",
    "ReadStream",
    "Storage",
    "WriteStream",
    "check_object_name",
    "copy_stream",
]

COPY_BUFFER_SIZE: Final = 1 << 20
"""Bytes moved per read when copying streams: bounds memory whatever the object size."""

OBJECT_NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
logger = logging.getLogger(__name__)

_TEMP_SUFFIX: Final = ".tmp"
_FULL_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def check_object_name(name: str) -> str:
    """Return `name` if it is a valid object name, else raise ValueError saying the rule."""
    if OBJECT_NAME_PATTERN.fullmatch(name) is None:
        raise ValueError(
            f"invalid object name {name!r}: use 1 to 200 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object."""

    name: str
    """Its name in the storage."""
    size: int
    """Its size in bytes."""
    modified: datetime
    """When it was last written (UTC)."""


class WriteStream(Protocol):
    """What `Storage.writer` hands out: a binary stream that only writes."""

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        """Write all of `data`; returns its length."""
        ...


class ReadStream(Protocol):
    """What `Storage.open` hands out: a binary stream that only reads."""

    def read(self, size: int = -1, /) -> bytes:
        """Up to `size` bytes; fewer only at the end (b'' there)."""
        ...


@runtime_checkable
class Storage(Protocol):
    """A flat store of named objects with atomic whole-object writes."""

    @property
    def description(self) -> str:
        """Where the objects are, for messages (never credentials)."""
        ...

    def writer(
        self, name: str, *, size_hint: int | None = None
    ) -> AbstractContextManager[WriteStream]:
        """A stream that becomes object `name` when the block ends without an exception.

        Refuses (StorageError) when `name` exists: archives are never overwritten.
        `size_hint` is about how large the object will be (None: unknown); an object
        store sizes its upload's parts from it, a directory needs none.
        """
        ...

    def put(self, name: str, source: ReadStream) -> int:
        """Copy `source` to its end into object `name`, atomically; returns the size."""
        ...

    def put_bytes(self, name: str, data: bytes) -> None:
        """Store `data` as object `name`, atomically."""
        ...

    def open(self, name: str) -> AbstractContextManager[ReadStream]:
        """Read object `name`; StorageError if it does not exist."""
        ...

    def read_bytes(self, name: str, *, limit: int) -> bytes:
        """The whole of a small object; StorageError when it is larger than `limit`."""
        ...

    def stat(self, name: str) -> ObjectInfo | None:
        """The object's size and time, or None if it does not exist."""
        ...

    def list(self) -> list[ObjectInfo]:
        """Every complete object, sorted by name (never temporary or unfinished ones)."""
        ...

    def delete(self, name: str) -> bool:
        """Remove object `name`; False when it did not exist."""
        ...

    def clean_incomplete(self, *, older_than: datetime) -> int:
        """Remove leftovers of writes started before `older_than` that never finished."""
        ...


def copy_stream(source: ReadStream, out: WriteStream) -> int:
    """Copy `source` to its end into `out` in bounded pieces; returns the bytes copied."""
    total = 0
    while True:
        piece = source.read(COPY_BUFFER_SIZE)
        if not piece:
            return total
        out.write(piece)
        total += len(piece)


def storage_error(
    error: OSError, *, storage: str, doing: str, written: int | None = None
) -> StorageError:
    """A StorageError (StorageFull for a full volume) for an OSError of `doing`."""
    detail = error.strerror or type(error).__name__
    if error.errno in _FULL_ERRNOS:
        after = f" after {written} bytes" if written is not None else ""
        return StorageFull(
            f"{storage} is full ({detail}) while {doing}{after}; nothing of the unfinished "
            "object was kept. Free space, grow the volume or lower retention, then back up "
            "again."
        )
    return StorageError(f"{storage}: {doing} failed: {detail}")


class _FileWriter:
    """The stream `LocalStorage.writer` hands out: a file whose errors name the object."""

    def __init__(self, handle: os.PathLike[str] | int, *, storage: str, name: str) -> None:
        self._file = open(handle, "wb", buffering=COPY_BUFFER_SIZE)  # noqa: SIM115 - closed by the writer
        self._storage = storage
        self._name = name
        self.written = 0

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        try:
            count = self._file.write(data)
        except OSError as error:
            raise storage_error(
                error, storage=self._storage, doing=f"writing {self._name}", written=self.written
            ) from None
        self.written += count
        return count

    def finish(self) -> None:
        """Flush and fsync: after this the bytes are on the device."""
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as error:
            raise storage_error(
                error, storage=self._storage, doing=f"writing {self._name}", written=self.written
            ) from None

    def close(self) -> None:
        # A failed close after a failed write must not hide the first error.
        with contextlib.suppress(OSError):
            self._file.close()


class _FileReader:
    """The stream `LocalStorage.open` hands out: read errors name the object."""

    def __init__(self, fd: int, *, storage: str, name: str) -> None:
        self._file = open(fd, "rb", buffering=0)  # noqa: SIM115 - closed by the caller
        self._storage = storage
        self._name = name

    def read(self, size: int = -1, /) -> bytes:
        try:
            return self._file.read(size) or b""
        except OSError as error:
            raise storage_error(
                error, storage=self._storage, doing=f"reading {self._name}"
            ) from None

    def close(self) -> None:
        self._file.close()


_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NOFOLLOW_DIR_FLAGS: Final = _DIR_FLAGS | os.O_NOFOLLOW
_READ_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _kind(mode: int) -> str:
    """What a non-regular directory entry is, for messages."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


class LocalStorage:
    """A directory as storage: the PersistentVolumeClaim backend (see the module docstring).

    The volume is writable by the tenant's admins, so nothing on it is followed: every
    object is opened relative to a descriptor of the root directory with `O_NOFOLLOW`
    (and `O_NONBLOCK`, so that a FIFO cannot block a reader), checked to be a regular file
    after it is open, and listed with `lstat`. Symbolic links, FIFOs, devices, sockets and
    directories in place of an object are refused with a StorageError naming them. The
    root is opened without following a symbolic link in its last component, nor in any
    component below `base` when that is given (the trusted mount point the root is under).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        create: bool = True,
        base: str | os.PathLike[str] | None = None,
    ) -> None:
        self.root = Path(root)
        self._create = create
        self._base = Path(base) if base is not None else None
        if self._base is not None and not self.root.is_relative_to(self._base):
            raise ValueError(f"the backup directory {self.root} is not under {self._base}")
        if ".." in self.root.parts:
            raise ValueError(f"the backup directory {self.root} must not contain '..'")

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    @property
    def description(self) -> str:
        return f"backup directory {self.root}"

    # -- the root directory --------------------------------------------------------------

    @contextlib.contextmanager
    def _root_fd(self, *, create: bool = False) -> Iterator[int | None]:
        """A descriptor of the root (None when it is missing and not to be created)."""
        if self._base is not None:
            start, parts = self._base, self.root.relative_to(self._base).parts
        else:
            start, parts = self.root.parent, (self.root.name,) if self.root.name else ()
        try:
            fd = os.open(start, _DIR_FLAGS)
        except FileNotFoundError:
            if not create:
                yield None
                return
            try:
                start.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(start, _DIR_FLAGS)
            except OSError as error:
                raise storage_error(
                    error, storage=self.description, doing="creating the directory"
                ) from None
        except OSError as error:
            raise storage_error(error, storage=self.description, doing="opening") from None
        try:
            for part in parts:
                parent, fd = fd, -1
                fd = self._step(parent, part, create=create)
                if fd < 0:
                    yield None
                    return
            yield fd
        finally:
            if fd >= 0:
                os.close(fd)

    def _step(self, parent: int, part: str, *, create: bool) -> int:
        """Open directory `part` under `parent` without following it; closes `parent`."""
        try:
            try:
                return os.open(part, _NOFOLLOW_DIR_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                if not create:
                    return -1
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o700, dir_fd=parent)
                return os.open(part, _NOFOLLOW_DIR_FLAGS, dir_fd=parent)
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR):
                raise StorageError(
                    f"{self.description}: {part} is a symbolic link or not a directory; the "
                    "backup directory is never reached through links: remove it"
                ) from None
            raise storage_error(error, storage=self.description, doing=f"opening {part}") from None
        finally:
            os.close(parent)

    # -- writing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def writer(self, name: str, *, size_hint: int | None = None) -> Iterator[WriteStream]:
        del size_hint  # a file grows as it is written
        check_object_name(name)
        with self._root_fd(create=self._create) as root:
            if root is None:
                raise StorageError(
                    f"{self.description} does not exist: mount the backup volume there or fix "
                    "the path"
                )
            if self._lstat(root, name) is not None:
                raise StorageError(
                    f"{self.description}: {name} already exists; backups are never overwritten"
                )
            temp = f".{name}.{secrets.token_hex(6)}{_TEMP_SUFFIX}"
            committed = False
            try:
                try:
                    fd = os.open(temp, _CREATE_FLAGS, 0o600, dir_fd=root)
                except OSError as error:
                    raise storage_error(
                        error, storage=self.description, doing=f"creating {name}"
                    ) from None
                stream = _FileWriter(fd, storage=self.description, name=name)
                try:
                    yield stream
                    stream.finish()
                finally:
                    stream.close()
                try:
                    # rename() never follows a link at either name; same directory fd.
                    os.replace(temp, name, src_dir_fd=root, dst_dir_fd=root)
                except OSError as error:
                    raise storage_error(
                        error, storage=self.description, doing=f"renaming {name}"
                    ) from None
                committed = True
                with contextlib.suppress(OSError):
                    os.fsync(root)
            finally:
                if not committed:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(temp, dir_fd=root)

    def put(self, name: str, source: ReadStream) -> int:
        with self.writer(name) as out:
            return copy_stream(source, out)

    def put_bytes(self, name: str, data: bytes) -> None:
        with self.writer(name) as out:
            out.write(data)

    # -- reading -------------------------------------------------------------------------

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[ReadStream]:
        check_object_name(name)
        with self._root_fd() as root:
            if root is None:
                raise StorageError(f"{self.description}: {name} does not exist")
            try:
                fd = os.open(name, _READ_FLAGS, dir_fd=root)
            except FileNotFoundError:
                raise StorageError(f"{self.description}: {name} does not exist") from None
            except OSError as error:
                if error.errno == errno.ELOOP:
                    raise self._not_regular(name, "a symbolic link") from None
                raise storage_error(
                    error, storage=self.description, doing=f"opening {name}"
                ) from None
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise self._not_regular(name, _kind(mode))
            # Regular files never block; reads go back to ordinary blocking I/O.
            os.set_blocking(fd, True)
            reader = _FileReader(fd, storage=self.description, name=name)
        except BaseException:
            os.close(fd)
            raise
        try:
            yield reader
        finally:
            reader.close()

    def read_bytes(self, name: str, *, limit: int) -> bytes:
        with self.open(name) as reader:
            data = reader.read(limit + 1)
        if len(data) > limit:
            raise StorageError(
                f"{self.description}: {name} is larger than {limit} bytes, too large for "
                "what it should be"
            )
        return data

    def stat(self, name: str) -> ObjectInfo | None:
        check_object_name(name)
        with self._root_fd() as root:
            if root is None:
                return None
            result = self._lstat(root, name)
        if result is None:
            return None
        if not stat.S_ISREG(result.st_mode):
            raise self._not_regular(name, _kind(result.st_mode))
        return ObjectInfo(
            name=name, size=result.st_size, modified=datetime.fromtimestamp(result.st_mtime, UTC)
        )

    def list(self) -> list[ObjectInfo]:
        objects: list[ObjectInfo] = []
        with self._root_fd() as root:
            if root is None:
                return []
            try:
                with os.scandir(root) as entries:
                    for entry in entries:
                        if OBJECT_NAME_PATTERN.fullmatch(entry.name) is None:
                            continue  # temporary files start with '.', foreign ones are ignored
                        result = entry.stat(follow_symlinks=False)
                        if not stat.S_ISREG(result.st_mode):
                            logger.warning(
                                "%s: %s is %s, not a regular file; it is not a backup object "
                                "and is ignored",
                                self.description,
                                entry.name,
                                _kind(result.st_mode),
                            )
                            continue
                        objects.append(
                            ObjectInfo(
                                name=entry.name,
                                size=result.st_size,
                                modified=datetime.fromtimestamp(result.st_mtime, UTC),
                            )
                        )
            except OSError as error:
                raise storage_error(error, storage=self.description, doing="listing") from None
        return sorted(objects, key=lambda o: o.name)

    # -- deleting ------------------------------------------------------------------------

    def delete(self, name: str) -> bool:
        check_object_name(name)
        with self._root_fd() as root:
            if root is None:
                return False
            try:
                # unlink() removes a link itself, never what it points to.
                os.unlink(name, dir_fd=root)
            except FileNotFoundError:
                return False
            except OSError as error:
                raise storage_error(
                    error, storage=self.description, doing=f"deleting {name}"
                ) from None
            with contextlib.suppress(OSError):
                os.fsync(root)
        return True

    def clean_incomplete(self, *, older_than: datetime) -> int:
        cutoff = older_than.timestamp()
        removed = 0
        with self._root_fd() as root:
            if root is None:
                return 0
            try:
                with os.scandir(root) as entries:
                    for entry in entries:
                        if not (entry.name.startswith(".") and entry.name.endswith(_TEMP_SUFFIX)):
                            continue
                        if not entry.is_file(follow_symlinks=False):
                            continue
                        if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                            continue  # perhaps a backup that is running right now
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.name, dir_fd=root)
                            removed += 1
            except OSError as error:
                raise storage_error(
                    error, storage=self.description, doing="removing unfinished writes"
                ) from None
        return removed

    # -- internals -----------------------------------------------------------------------

    def _lstat(self, root: int, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=root, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise storage_error(error, storage=self.description, doing=f"reading {name}") from None

    def _not_regular(self, name: str, kind: str) -> StorageError:
        return StorageError(
            f"{self.description}: {name} is {kind}, not a regular file; it is refused unread "
            "(objects on a volume are never followed or opened unless they are plain files)"
        )

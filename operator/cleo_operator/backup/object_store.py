"""Object storage (S3, Google Cloud Storage, Azure Blob) as backup `Storage`, through obstore.

Why obstore: one maintained client (the Rust ``object_store`` crate) for the three clouds,
with their credential chains (static keys, web identity, workload identity, instance
metadata), retries and concurrent multipart uploads; boto3 cannot share our virtualenv and
the Google and Azure SDKs would be two more large trees. This module only maps the
`Storage` contract onto it; `backup.object_stores` builds the store from a destination.

How the contract holds:

- atomic writes: an object becomes visible only when its single PUT, or its multipart
  upload's completion (S3 CompleteMultipartUpload, GCS XML API completion, Azure Put Block
  List), succeeds. `writer` holds up to `SINGLE_PUT_LIMIT` in memory; an object that ends
  within it is one conditional PUT. A larger one is a multipart upload of
  `PartPlan.part_size` parts: obstore's writer fills one part while `PartPlan.concurrency`
  others are in flight, so memory stays within `PartPlan.memory` (``part_size *
  (concurrency + 1)`` plus the first bytes), at most `MEMORY_BOUND` (about 2.5 GiB; a
  5 TiB database gets 1049 MiB parts, one in flight: 2.1 GiB) whatever the archive's
  size. On any exception the upload is aborted
  (obstore's writer aborts when its ``with`` block fails), so nothing is visible; a killed
  process leaves an unfinished upload, invisible to `list`, which the bucket's lifecycle
  rule removes (docs/backups.md: S3 and GCS ``AbortIncompleteMultipartUpload``; Azure drops
  uncommitted blocks after 7 days by itself). obstore 0.12 does not list unfinished uploads
  (no ListMultipartUploads), so `clean_incomplete` cannot remove them: it says so in the
  log once, and `unfinished_uploads` puts it in the run report's prune block;
- never overwriting: a HEAD refuses an existing name first, and single PUTs use obstore's
  ``mode="create"`` (``If-None-Match: *`` on S3 and Azure, ``ifGenerationMatch=0`` on GCS),
  which the store itself enforces against a writer that raced past the HEAD. obstore
  sends a multipart upload only without a mode (``mode="create"`` forces one in-memory
  PUT, impossible for a 5 TiB archive), so for a multipart archive `writer` refuses an
  existing name with a HEAD before it starts; the race that leaves open needs a second
  writer of the same name between that HEAD and the completion, and archive names carry
  32 random bits (`manifest.new_backup_id`), while manifests and records, written by
  several processes, are small and always conditional;
- part sizes scale with the archive: S3 allows 10 000 parts, so `part_plan` sizes parts
  from the writer's ``size_hint`` (the runner passes the database's size; the archive is
  compressed, rarely larger) with a margin of two, up to 5 TiB in 1 GiB parts;
- the operator's reads (verification, drills) reach a store whose endpoint and credentials
  a tenant admin chose, from one small shared pool: with `ReadLimits` every request is
  bounded (obstore's whole-request timeout), objects are read in ranged GETs, and a
  listing or a read has a wall clock (a base, plus the object's size at a throughput
  floor) after which it fails, so a slow server holds a verification worker for a
  bounded time;
- errors: obstore's exceptions carry the request's URL (an Azure SAS token sits in its
  query string) and the response body; they are never shown. `storage_error` keeps the
  kind (not found, refused, exists), the HTTP status and the store's error code (letters
  only), and names the storage and the object.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
from collections.abc import Callable, Iterator, MutableSequence, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, ClassVar, Final

import obstore
from obstore import exceptions as obstore_errors

from cleo_operator.backup.errors import StorageError, StorageFull
from cleo_operator.backup.storage import (
    OBJECT_NAME_PATTERN,
    ObjectInfo,
    ReadStream,
    WriteStream,
    check_object_name,
    copy_stream,
)

if TYPE_CHECKING:
    from obstore import BytesStream, ObjectMeta, WritableFile
    from obstore.store import ObjectStore

__all__ = [
    "MAX_PARTS",
    "MEMORY_BOUND",
    "ObjectStoreStorage",
    "PartPlan",
    "ReadLimits",
    "part_plan",
    "storage_error",
]

logger = logging.getLogger(__name__)

MiB: Final = 1 << 20
MAX_PARTS: Final = 10_000
"""S3's (and GCS's XML API's) limit of parts per multipart upload."""
MIN_PART_SIZE: Final = 5 * MiB
"""S3's smallest part, except for the last one."""
MAX_PART_SIZE: Final = 1280 * MiB
"""The largest part planned (S3 allows 5 GiB): with `SIZE_MARGIN`, the archive of a
database of up to 6 TiB, and it keeps `MEMORY_BOUND` at about 2.5 GiB."""
SINGLE_PUT_LIMIT: Final = 16 * MiB
"""An object up to this size is one conditional PUT (held in memory first)."""
DEFAULT_PART_SIZE: Final = 16 * MiB
"""Parts when the archive's size is unknown: up to about 156 GiB."""
SIZE_MARGIN: Final = 2
"""How much larger than its hint an archive may grow before it runs out of parts."""
MEMORY_BUDGET: Final = 256 * MiB
"""Parts in flight are bounded by this much memory (but never fewer than one)."""
MAX_CONCURRENCY: Final = 8
MEMORY_BOUND: Final = 2 * MAX_PART_SIZE + SINGLE_PUT_LIMIT + 1 * MiB
"""The most an upload holds, whatever the plan (`PartPlan.memory`): one largest part in
flight, the next one filling, and the first bytes (with a write's chunk beyond them). The
runner's container needs this besides pg_dump's pipe and Python (see docs/backups.md)."""
READ_CHUNK: Final = 1 * MiB

_CODE: Final = re.compile(r"<Code>([A-Za-z]{1,64})</Code>|\"reason\":\s*\"([A-Za-z]{1,64})\"")
_STATUS: Final = re.compile(r"\b(?:status(?: code)?:?\s*|HTTP status client error \()([1-5]\d\d)\b")
_FULL_CODES: Final = frozenset({"EntityTooLarge", "QuotaExceeded", "XMinioStorageFull"})


_NOT_FOUND: Final = (FileNotFoundError, obstore_errors.NotFoundError)
"""obstore raises Python's FileNotFoundError for a missing object (its own class in stubs)."""
_EXISTS: Final = (
    FileExistsError,
    obstore_errors.AlreadyExistsError,
    obstore_errors.PreconditionError,
)
_REFUSED: Final = (
    PermissionError,
    obstore_errors.PermissionDeniedError,
    obstore_errors.UnauthenticatedError,
)


@dataclass(frozen=True)
class ReadLimits:
    """How long the operator waits on a store whose endpoint a tenant chose.

    Every request is bounded by `request_seconds` (whole body included, retries too); a
    listing by `base_seconds` of wall clock, a read of N bytes by `read_seconds` (N at
    `floor_bytes_per_second`). Past those a `StorageError` says so.
    """

    base_seconds: float = 120.0
    """A listing, a HEAD or a small read; the margin of every large one."""
    floor_bytes_per_second: int = 1 * MiB
    """The slowest store taken as working."""
    range_size: int = 16 * MiB
    """Objects are read in ranged GETs of this size."""

    @property
    def request_seconds(self) -> float:
        """The longest one request (a range of `range_size` bytes) may take."""
        return self.base_seconds + self.range_size / self.floor_bytes_per_second

    def read_seconds(self, size: int) -> float:
        """The longest reading an object of `size` bytes may take."""
        return self.base_seconds + size / self.floor_bytes_per_second

    def client_timeouts(self) -> dict[str, str]:
        """obstore's client options that bound each request."""
        seconds = math.ceil(self.request_seconds)
        return {"timeout": f"{seconds}s", "read_timeout": f"{min(seconds, 30)}s"}


@dataclass(frozen=True)
class PartPlan:
    """How a multipart upload is cut: part size and parts in flight."""

    part_size: int
    concurrency: int

    @property
    def largest_object(self) -> int:
        """The largest object these parts can hold."""
        return self.part_size * MAX_PARTS

    @property
    def memory(self) -> int:
        """The most an upload of this plan holds: obstore's part being filled, the parts in
        flight, and `writer`'s first bytes (a write's chunk of up to 1 MiB beyond them)."""
        return self.part_size * (self.concurrency + 1) + SINGLE_PUT_LIMIT + 1 * MiB


def part_plan(size_hint: int | None, *, minimum: int = MIN_PART_SIZE) -> PartPlan:
    """Parts for an object of about `size_hint` bytes (None: unknown).

    The part size is the smallest whole MiB (at least `minimum`) that holds `SIZE_MARGIN`
    times the hint in `MAX_PARTS` parts; the concurrency keeps the parts in flight within
    `MEMORY_BUDGET` (one at least, `MAX_CONCURRENCY` at most), so `PartPlan.memory` stays
    within `MEMORY_BOUND`.
    """
    if size_hint is None or size_hint <= 0:
        size = max(DEFAULT_PART_SIZE, minimum)
    else:
        needed = -(-(size_hint * SIZE_MARGIN) // MAX_PARTS)
        size = max(minimum, -(-needed // MiB) * MiB)
    size = min(size, MAX_PART_SIZE)
    concurrency = max(1, min(MAX_CONCURRENCY, MEMORY_BUDGET // size))
    return PartPlan(part_size=size, concurrency=concurrency)


def _error_details(error: Exception) -> tuple[int | None, str | None]:
    """The HTTP status and the store's error code in an obstore error (nothing else)."""
    text = str(error)
    status_match = _STATUS.search(text)
    code_match = _CODE.search(text)
    status = int(status_match.group(1)) if status_match else None
    code = next((g for g in code_match.groups() if g), None) if code_match else None
    return status, code


def storage_error(error: Exception, *, storage: str, doing: str) -> StorageError:
    """A StorageError for an obstore failure of `doing`, safe to show.

    Only the kind of failure, the HTTP status and the store's error code are kept: the
    original text may hold the request URL (with a SAS token) or headers.
    """
    status, code = _error_details(error)
    detail = f"HTTP {status}" if status else type(error).__name__
    if code:
        detail += f" {code}"
    if code in _FULL_CODES:
        return StorageFull(
            f"{storage} refused the data ({detail}) while {doing}; nothing of the unfinished "
            "object was kept. Raise the quota or lower retention."
        )
    if isinstance(error, _NOT_FOUND) or status == 404:
        hint = "; check that the bucket (or container) exists and the destination names it"
        if code not in ("NoSuchBucket", "ContainerNotFound"):
            hint = ""
        return StorageError(f"{storage}: {doing} failed: not found ({detail}){hint}")
    if isinstance(error, _EXISTS) or status in (409, 412):
        return StorageError(
            f"{storage}: {doing} failed: the object already exists ({detail}); backups are "
            "never overwritten"
        )
    if isinstance(error, _REFUSED) or status in (401, 403):
        return StorageError(
            f"{storage}: {doing} failed: access refused ({detail}); check the credentials "
            "(the Secret or the workload identity the destination names) and the bucket's "
            "policy"
        )
    return StorageError(f"{storage}: {doing} failed ({detail})")


def _utc(moment: datetime) -> datetime:
    """A store's time as UTC; a time without a zone (some emulators) is taken as UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class _ChunkReader:
    """A GET's chunk stream as a ReadStream (`read(size)`); errors name the object."""

    def __init__(self, chunks: BytesStream, *, storage: str, name: str) -> None:
        self._chunks = chunks
        self._pending = b""
        self._ended = False
        self._storage = storage
        self._name = name

    def _next(self) -> bytes:
        try:
            return bytes(next(self._chunks))
        except StopIteration:
            self._ended = True
            return b""
        except Exception as error:
            raise storage_error(
                error, storage=self._storage, doing=f"reading {self._name}"
            ) from None

    def read(self, size: int = -1, /) -> bytes:
        if size < 0:
            parts = [self._pending]
            self._pending = b""
            while not self._ended:
                parts.append(self._next())
            return b"".join(parts)
        while len(self._pending) < size and not self._ended:
            self._pending += self._next()
        out, self._pending = self._pending[:size], self._pending[size:]
        return out


class _RangeReader:
    """An object read in ranged GETs under a wall clock (`ReadLimits`)."""

    def __init__(
        self,
        storage: ObjectStoreStorage,
        limits: ReadLimits,
        *,
        name: str,
        size: int,
        deadline: float,
    ) -> None:
        self._storage = storage
        self._limits = limits
        self._name = name
        self._size = size
        self._deadline = deadline
        self._offset = 0
        self._pending = bytearray()

    def _fetch(self) -> bool:
        """Append the next range to the pending bytes; False at the end."""
        if self._offset >= self._size:
            return False
        doing = f"reading {self._name}"
        self._storage.check_deadline(self._deadline, doing=doing)
        end = min(self._size, self._offset + self._limits.range_size)
        try:
            result = obstore.get(
                self._storage.store, self._name, options={"range": (self._offset, end)}
            )
            data = bytes(result.bytes())
        except Exception as error:
            raise self._storage.error(error, doing=doing) from None
        self._storage.check_deadline(self._deadline, doing=doing)
        if not data:
            self._offset = self._size
            return False
        self._offset += len(data)
        self._pending += data
        return True

    def read(self, size: int = -1, /) -> bytes:
        while (size < 0 or len(self._pending) < size) and self._fetch():
            pass
        if size < 0:
            size = len(self._pending)
        out = bytes(self._pending[:size])
        del self._pending[:size]
        return out


class _Upload:
    """One object being written: the first part in memory, then a multipart upload."""

    def __init__(self, storage: ObjectStoreStorage, *, name: str, plan: PartPlan) -> None:
        self._storage = storage
        self._name = name
        self._plan = plan
        self._buffer = bytearray()
        self._writer: WritableFile | None = None
        self.written = 0

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        size = len(memoryview(data).cast("B"))
        if self.written + size > self._plan.largest_object:
            raise StorageError(
                f"{self._storage.description}: {self._name} outgrew its {self._plan.part_size} "
                f"byte parts ({MAX_PARTS} at most) after {self.written} bytes; the runner "
                "sizes parts from the database's size, which this archive exceeds twice over "
                f"(parts stop at {MAX_PART_SIZE >> 20} MiB, so that memory stays bounded)"
            )
        if self._writer is None:
            self._buffer += data
            if len(self._buffer) > min(self._plan.part_size, SINGLE_PUT_LIMIT):
                self._start_multipart()
        else:
            self._send(data)
        self.written += size
        return size

    def _start_multipart(self) -> None:
        store = self._storage
        try:
            self._writer = obstore.open_writer(
                store.store,
                self._name,
                buffer_size=self._plan.part_size,
                max_concurrency=self._plan.concurrency,
            )
        except Exception as error:
            raise store.error(error, doing=f"writing {self._name}") from None
        pending, self._buffer = self._buffer, bytearray()
        self._send(pending)

    def _send(self, data: bytes | bytearray | memoryview) -> None:
        assert self._writer is not None
        try:
            self._writer.write(data)
        except Exception as error:
            raise self._storage.error(
                error, doing=f"writing {self._name} (after {self.written} bytes)"
            ) from None

    def finish(self) -> None:
        store = self._storage
        if self._writer is None:
            try:
                obstore.put(store.store, self._name, bytes(self._buffer), mode="create")
            except Exception as error:
                raise store.error(error, doing=f"writing {self._name}") from None
            return
        writer, self._writer = self._writer, None
        try:
            writer.close()
        except Exception as error:
            raise store.error(error, doing=f"completing {self._name}") from None

    def abort(self, failure: BaseException) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            # obstore's writer aborts the multipart upload when its block fails.
            writer.__exit__(type(failure), failure, failure.__traceback__)
        except Exception as error:
            # The failure that led here matters more; the lifecycle rule removes the rest.
            logger.warning(
                "%s", store_message(self._storage, error, doing=f"aborting {self._name}")
            )


def store_message(storage: ObjectStoreStorage, error: Exception, *, doing: str) -> str:
    """The safe message of an obstore failure, for a log line."""
    return storage.error(error, doing=doing).message


class ObjectStoreStorage:
    """A bucket or container (and key prefix) as backup storage; see the module docstring."""

    unfinished_uploads: ClassVar[str] = (
        "not removed by pruning (the client cannot list them): the bucket's lifecycle rule "
        "must abort incomplete multipart uploads"
    )
    """What becomes of a killed run's unfinished upload, for the run report."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        description: str,
        min_part_size: int = MIN_PART_SIZE,
        limits: ReadLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        """The obstore store; its prefix is the destination's, so names are flat."""
        self._description = description
        self._min_part_size = max(MIN_PART_SIZE, min_part_size)
        self._warned_incomplete = False
        self.limits = limits
        """Wall clocks of listings and reads (the operator's); None: unbounded (the runner)."""
        self._clock = clock

    def __repr__(self) -> str:
        return f"ObjectStoreStorage({self._description!r})"

    @property
    def description(self) -> str:
        return self._description

    def error(self, error: Exception, *, doing: str) -> StorageError:
        """`storage_error` for this storage."""
        return storage_error(error, storage=self._description, doing=doing)

    def check_deadline(self, deadline: float, *, doing: str) -> None:
        """A StorageError when `deadline` (of the clock) has passed while `doing`."""
        if self._clock() > deadline:
            raise StorageError(
                f"{self._description}: {doing} took longer than the store is given (the "
                "operator reads a store at a minimum throughput and gives up past it); "
                "check the store's endpoint and health"
            )

    def plan(self, size_hint: int | None) -> PartPlan:
        """The parts of an object of about `size_hint` bytes."""
        return part_plan(size_hint, minimum=self._min_part_size)

    # -- writing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def writer(self, name: str, *, size_hint: int | None = None) -> Iterator[WriteStream]:
        check_object_name(name)
        if self.stat(name) is not None:
            raise StorageError(
                f"{self._description}: {name} already exists; backups are never overwritten"
            )
        upload = _Upload(self, name=name, plan=self.plan(size_hint))
        try:
            yield upload
            upload.finish()
        except BaseException as failure:
            upload.abort(failure)
            raise

    def put(self, name: str, source: ReadStream) -> int:
        with self.writer(name) as out:
            return copy_stream(source, out)

    def put_bytes(self, name: str, data: bytes) -> None:
        # The HEAD first, as the old client did: an S3-compatible store that ignores
        # If-None-Match still does not get an existing object replaced.
        if self.stat(name) is not None:
            raise StorageError(
                f"{self._description}: {name} already exists; backups are never overwritten"
            )
        try:
            obstore.put(self.store, name, data, mode="create")
        except Exception as error:
            raise self.error(error, doing=f"writing {name}") from None

    # -- reading -------------------------------------------------------------------------

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[ReadStream]:
        check_object_name(name)
        if self.limits is not None:
            started = self._clock()
            info = self.stat(name)
            if info is None:
                raise StorageError(f"{self._description}: {name} does not exist")
            yield _RangeReader(
                self,
                self.limits,
                name=name,
                size=info.size,
                deadline=started + self.limits.read_seconds(info.size),
            )
            return
        try:
            result = obstore.get(self.store, name)
        except _NOT_FOUND:
            raise StorageError(f"{self._description}: {name} does not exist") from None
        except Exception as error:
            raise self.error(error, doing=f"reading {name}") from None
        yield _ChunkReader(
            result.stream(min_chunk_size=READ_CHUNK), storage=self._description, name=name
        )

    def read_bytes(self, name: str, *, limit: int) -> bytes:
        with self.open(name) as reader:
            data = reader.read(limit + 1)
        if len(data) > limit:
            raise StorageError(f"{self._description}: {name} is larger than {limit} bytes")
        return data

    def stat(self, name: str) -> ObjectInfo | None:
        check_object_name(name)
        try:
            meta = obstore.head(self.store, name)
        except _NOT_FOUND:
            return None
        except Exception as error:
            raise self.error(error, doing=f"reading {name}") from None
        return ObjectInfo(name=name, size=meta["size"], modified=_utc(meta["last_modified"]))

    def list(self) -> list[ObjectInfo]:
        if self.limits is not None:
            metas = self._bounded_listing(self.limits)
        else:
            try:
                metas = obstore.list_with_delimiter(self.store)["objects"]
            except Exception as error:
                raise self.error(error, doing="listing") from None
        objects = [
            ObjectInfo(name=meta["path"], size=meta["size"], modified=_utc(meta["last_modified"]))
            for meta in metas
            if OBJECT_NAME_PATTERN.fullmatch(meta["path"]) is not None
        ]
        return sorted(objects, key=lambda o: o.name)

    def _bounded_listing(self, limits: ReadLimits) -> Sequence[ObjectMeta]:
        """The listing page by page, under `limits.base_seconds` of wall clock (a server
        can hand out pages without end)."""
        deadline = self._clock() + limits.base_seconds
        metas: MutableSequence[ObjectMeta] = []
        try:
            pages = obstore.list(self.store, chunk_size=1000)
            for page in pages:
                metas.extend(m for m in page if "/" not in m["path"])
                self.check_deadline(deadline, doing="listing")
        except StorageError:
            raise
        except Exception as error:
            raise self.error(error, doing="listing") from None
        self.check_deadline(deadline, doing="listing")
        return metas

    # -- deleting ------------------------------------------------------------------------

    def delete(self, name: str) -> bool:
        if self.stat(name) is None:
            return False
        try:
            obstore.delete(self.store, name)
        except _NOT_FOUND:
            return False
        except Exception as error:
            raise self.error(error, doing=f"deleting {name}") from None
        return True

    def clean_incomplete(self, *, older_than: datetime) -> int:
        # Unfinished uploads are invisible and obstore cannot list them: the bucket's
        # lifecycle rule removes those of killed runs (see the module docstring).
        del older_than
        if not self._warned_incomplete:
            self._warned_incomplete = True
            logger.info(
                "%s: unfinished uploads of killed runs are left to the bucket's lifecycle rule "
                "(abort incomplete multipart uploads after a day)",
                self._description,
            )
        return 0

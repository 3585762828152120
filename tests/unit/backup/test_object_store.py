"""The pure parts of the object store backend: part sizes, safe errors, times, reading."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, timezone

import pytest
from obstore import exceptions as obstore_errors
from obstore.store import MemoryStore

from cleo_operator.backup.errors import StorageError, StorageFull
from cleo_operator.backup.object_store import (
    MAX_PARTS,
    MEMORY_BOUND,
    MEMORY_BUDGET,
    ObjectStoreStorage,
    ReadLimits,
    _ChunkReader,
    _utc,
    part_plan,
    storage_error,
)
from cleo_operator.backup.report import prune_report
from cleo_operator.backup.retention import PruneResult, RetentionPolicy, prune
from cleo_operator.crypto import Keyring

MiB = 1 << 20
TiB = 1 << 40


@pytest.mark.parametrize("size", [0, 1, 100 * MiB, 80 << 30, 1 * TiB, 5 * TiB])
def test_parts_hold_twice_the_hint_within_the_part_limit(size: int) -> None:
    plan = part_plan(size)
    assert plan.part_size >= 5 * MiB
    assert plan.part_size % MiB == 0
    if size:
        assert plan.largest_object >= 2 * size
    assert 1 <= plan.concurrency <= 8
    # Memory: the parts in flight stay within the budget, or one part when it is larger.
    assert plan.part_size * plan.concurrency <= max(MEMORY_BUDGET, plan.part_size)
    assert plan.memory <= MEMORY_BOUND


@pytest.mark.parametrize("size", [None, 0, 1, 100 * MiB, 80 << 30, 1 * TiB, 5 * TiB, 50 * TiB])
def test_an_uploads_memory_stays_within_the_documented_bound(size: int | None) -> None:
    plan = part_plan(size)
    # The part being filled, the parts in flight, the first bytes and one write's chunk.
    held = plan.part_size * (plan.concurrency + 1) + 16 * MiB + 1 * MiB
    assert plan.memory == held
    assert held <= MEMORY_BOUND
    assert 2560 * MiB + 17 * MiB >= MEMORY_BOUND


def test_a_5_tib_database_gets_1_gib_parts_one_in_flight() -> None:
    plan = part_plan(5 * TiB)
    assert (plan.part_size, plan.concurrency) == (1049 * MiB, 1)
    assert plan.largest_object >= 2 * 5 * TiB
    assert plan.memory < 2200 * MiB
    assert part_plan(50 * TiB).part_size == 1280 * MiB  # capped: memory, not the hint, wins
    assert part_plan(None).concurrency == 8


def test_a_5_tib_archive_fits_and_the_old_8_mib_parts_would_not() -> None:
    plan = part_plan(5 * TiB)
    assert plan.part_size * MAX_PARTS >= 5 * TiB
    assert 8 * MiB * MAX_PARTS < 80 << 30  # why the fixed 8 MiB parts failed near 78 GiB
    assert part_plan(None).part_size == 16 * MiB


def test_a_minimum_part_size_is_kept() -> None:
    assert part_plan(1, minimum=64 * MiB).part_size == 64 * MiB


SECRET_URL = "https://acct.blob.core.windows.net/c/x?sv=2024&sig=SECRETSIGNATURE"


@pytest.mark.security
@pytest.mark.parametrize(
    ("error", "expected", "words"),
    [
        (FileNotFoundError(f"not found: GET {SECRET_URL}"), StorageError, "not found"),
        (
            obstore_errors.GenericError(
                f"Error performing GET {SECRET_URL} - status: 403 Forbidden: "
                "<Code>AuthorizationFailure</Code> Authorization: SharedKey acct:SECRETSIGNATURE"
            ),
            StorageError,
            "access refused (HTTP 403 AuthorizationFailure)",
        ),
        (
            obstore_errors.PermissionDeniedError(f"denied {SECRET_URL}"),
            StorageError,
            "access refused",
        ),
        (
            obstore_errors.AlreadyExistsError(
                f"PUT {SECRET_URL} 409 <Code>BlobAlreadyExists</Code>"
            ),
            StorageError,
            "already exists",
        ),
        (
            obstore_errors.GenericError(
                f"PUT {SECRET_URL} status: 400 <Code>EntityTooLarge</Code>"
            ),
            StorageFull,
            "refused the data (HTTP 400 EntityTooLarge)",
        ),
        (
            obstore_errors.GenericError(f"POST {SECRET_URL} status: 503 Slow Down"),
            StorageError,
            "failed (HTTP 503)",
        ),
    ],
)
def test_errors_keep_the_kind_status_and_code_never_the_text(
    error: Exception, expected: type[StorageError], words: str
) -> None:
    mapped = storage_error(error, storage="Azure container acct/c", doing="writing x")
    assert type(mapped) is expected
    assert words in mapped.message
    assert mapped.message.startswith("Azure container acct/c")
    assert "SECRETSIGNATURE" not in mapped.message
    assert "sig=" not in mapped.message
    assert mapped.reason in ("StorageError", "StorageFull")


def test_a_store_time_without_a_zone_is_utc() -> None:
    naive = datetime(2026, 3, 1, 12, 0, 0)
    assert _utc(naive) == datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    cet = datetime(2026, 3, 1, 13, 0, 0, tzinfo=timezone(timedelta(hours=1)))
    assert _utc(cet) == datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


class _Chunks:
    def __init__(self, chunks: list[bytes], fail_after: int | None = None) -> None:
        self._chunks = iter(chunks)
        self._left = fail_after

    def __iter__(self) -> _Chunks:
        return self

    def __next__(self) -> bytes:
        if self._left is not None:
            if self._left == 0:
                raise obstore_errors.GenericError(f"connection reset reading {SECRET_URL}")
            self._left -= 1
        return next(self._chunks)


def test_the_reader_gives_exact_sizes_across_chunks() -> None:
    reader = _ChunkReader(_Chunks([b"abc", b"defg", b"h"]), storage="S3 bucket b", name="x")  # type: ignore[arg-type]
    assert reader.read(2) == b"ab"
    assert reader.read(4) == b"cdef"
    assert reader.read(10) == b"gh"
    assert reader.read(10) == b""
    rest = _ChunkReader(_Chunks([b"ab", b"cd"]), storage="S3 bucket b", name="x")  # type: ignore[arg-type]
    assert rest.read() == b"abcd"


def test_a_broken_download_names_the_object_not_the_url() -> None:
    reader = _ChunkReader(
        _Chunks([b"ab", b"cd"], fail_after=1), storage="S3 bucket b", name="x.archive"
    )  # type: ignore[arg-type]
    assert reader.read(2) == b"ab"
    with pytest.raises(StorageError, match=r"S3 bucket b: reading x\.archive failed") as caught:
        reader.read(2)
    assert "SECRETSIGNATURE" not in caught.value.message


def test_a_prune_on_an_object_store_says_unfinished_uploads_are_the_lifecycle_rules() -> None:
    # obstore's in-memory store stands in for a bucket: it has the same Storage mapping,
    # and no way to list unfinished uploads either.
    storage = ObjectStoreStorage(MemoryStore(), description="memory")
    keyring = Keyring.generate(datetime(2026, 12, 1, tzinfo=UTC))
    result = prune(
        storage,
        tenant="acme",
        policy=RetentionPolicy(),
        keyring=keyring,
        now=datetime(2026, 12, 3, tzinfo=UTC),
    )
    assert result.incomplete_removed == 0
    report = prune_report(result)
    assert "lifecycle rule" in report["unfinishedUploads"]
    assert "unfinishedUploads" not in prune_report(
        PruneResult(kept=(), deleted=(), incomplete_removed=0)
    )


def test_a_bounded_read_in_ranges_gives_the_object_exactly() -> None:
    # The operator's reads (ReadLimits) go in ranged GETs; obstore's in-memory store
    # answers them as a bucket would.
    storage = ObjectStoreStorage(
        MemoryStore(), description="memory", limits=ReadLimits(range_size=1 * MiB)
    )
    data = os.urandom(3 * MiB + 12345)
    storage.put_bytes("b1.archive", data)
    storage.put_bytes("b1.manifest.json", b"{}")
    with storage.open("b1.archive") as reader:
        assert reader.read(10) == data[:10]
        assert reader.read(2 * MiB) == data[10 : 2 * MiB + 10]
        assert reader.read() == data[2 * MiB + 10 :]
        assert reader.read(5) == b""
    assert storage.read_bytes("b1.manifest.json", limit=10) == b"{}"
    assert [o.name for o in storage.list()] == ["b1.archive", "b1.manifest.json"]


def test_a_bounded_read_past_its_wall_clock_fails_naming_the_object() -> None:
    ticks = iter(range(0, 10_000, 100))
    storage = ObjectStoreStorage(
        MemoryStore(),
        description="memory",
        limits=ReadLimits(base_seconds=150, floor_bytes_per_second=1 * MiB, range_size=1 * MiB),
        clock=lambda: float(next(ticks)),
    )
    storage.put_bytes("b1.archive", b"x" * (3 * MiB))
    with (
        pytest.raises(StorageError, match=r"reading b1\.archive took longer"),
        storage.open("b1.archive") as reader,
    ):
        reader.read()
    with pytest.raises(StorageError, match="listing took longer"):
        storage.list()

"""Streaming encryption for backups: round trips, truncation, reordering, tampering, memory."""

from __future__ import annotations

import io
import os
import tempfile
import tracemalloc
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleo_operator.crypto.errors import (
    CryptoError,
    MalformedEnvelope,
    Tampered,
    Truncated,
    UnknownKeyVersion,
)
from cleo_operator.crypto.kek import KeyEncryptionKeys
from cleo_operator.crypto.stream import (
    MAX_CHUNK_SIZE,
    EncryptingWriter,
    decrypt_stream,
    iter_decrypted,
    new_stream_key,
    open_stream_key,
    read_stream_key_id,
)
from tests.unit.crypto.secrets_check import assert_no_secret
from tests.unit.crypto.tampering import bit_flips, positions

KEY = os.urandom(32)
KEY_ID = "dk-test"
TAG = 16


def key_for(key_id: str) -> bytes:
    if key_id != KEY_ID:
        raise UnknownKeyVersion(f"no key {key_id}", key_id=key_id)
    return KEY


def encrypt(plaintext: bytes, *, chunk_size: int, pieces: int = 1) -> bytes:
    out = io.BytesIO()
    with EncryptingWriter(out, KEY, key_id=KEY_ID, chunk_size=chunk_size) as writer:
        step = max(1, len(plaintext) // pieces)
        for start in range(0, len(plaintext), step):
            writer.write(plaintext[start : start + step])
    return out.getvalue()


def decrypt(data: bytes, key_for: Callable[[str], bytes] = key_for) -> bytes:
    out = io.BytesIO()
    size = decrypt_stream(io.BytesIO(data), out, key_for)
    assert size == len(out.getvalue())
    return out.getvalue()


def header_size() -> int:
    return 8 + 1 + 1 + len(KEY_ID) + 8 + 4


def chunks(data: bytes, chunk_size: int) -> list[bytes]:
    body = data[header_size() :]
    step = chunk_size + TAG
    return [body[i : i + step] for i in range(0, len(body), step)]


@settings(max_examples=200)
@given(
    plaintext=st.binary(max_size=300),
    chunk_size=st.integers(min_value=1, max_value=64),
    writes=st.lists(st.integers(min_value=0, max_value=70), max_size=20),
)
def test_any_sequence_of_writes_round_trips(
    plaintext: bytes, chunk_size: int, writes: list[int]
) -> None:
    out = io.BytesIO()
    writer = EncryptingWriter(out, KEY, key_id=KEY_ID, chunk_size=chunk_size)
    position = 0
    for size in writes:
        assert writer.write(plaintext[position : position + size]) == len(
            plaintext[position : position + size]
        )
        position += size
    writer.write(plaintext[position:])
    writer.close()
    assert writer.plaintext_size == len(plaintext)
    assert decrypt(out.getvalue()) == plaintext
    # Full chunks, then one final chunk of 1..chunk_size bytes (0 only when empty).
    expected_chunks = max(1, -(-len(plaintext) // chunk_size))
    assert len(out.getvalue()) == header_size() + len(plaintext) + TAG * expected_chunks


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 31, 32, 33, 64, 100])
def test_sizes_around_chunk_boundaries_round_trip(size: int) -> None:
    plaintext = os.urandom(size)
    assert decrypt(encrypt(plaintext, chunk_size=16)) == plaintext


def test_an_empty_stream_round_trips_as_one_empty_final_chunk() -> None:
    data = encrypt(b"", chunk_size=16)
    assert len(data) == header_size() + TAG
    assert decrypt(data) == b""
    assert list(iter_decrypted(io.BytesIO(data), key_for)) == [b""]


def test_truncation_at_every_chunk_boundary_is_truncated() -> None:
    chunk_size = 8
    data = encrypt(os.urandom(8 * 5), chunk_size=chunk_size)
    assert len(chunks(data, chunk_size)) == 5
    for kept in range(5):  # keep 0..4 of the 5 chunks
        cut = data[: header_size() + kept * (chunk_size + TAG)]
        with pytest.raises(Truncated) as caught:
            decrypt(cut)
        assert caught.value.reason == "Truncated"
        assert "cut short" in caught.value.message


def test_truncation_at_every_byte_is_detected() -> None:
    data = encrypt(os.urandom(50), chunk_size=8)
    for length in range(len(data)):
        with pytest.raises(Tampered):  # Truncated is a kind of Tampered
            decrypt(data[:length])


def test_truncation_inside_the_header_is_truncated() -> None:
    data = encrypt(b"abc", chunk_size=8)
    for length in range(header_size()):
        with pytest.raises(Truncated, match="header"):
            decrypt(data[:length])


def test_reordered_chunks_are_tampered() -> None:
    chunk_size = 8
    data = encrypt(os.urandom(8 * 4), chunk_size=chunk_size)
    parts = chunks(data, chunk_size)
    swapped = data[: header_size()] + parts[1] + parts[0] + parts[2] + parts[3]
    with pytest.raises(Tampered) as caught:
        decrypt(swapped)
    assert type(caught.value) is Tampered
    assert "chunk 1" in caught.value.message


def test_a_dropped_or_repeated_middle_chunk_is_tampered() -> None:
    chunk_size = 8
    data = encrypt(os.urandom(8 * 4), chunk_size=chunk_size)
    head, parts = data[: header_size()], chunks(data, chunk_size)
    with pytest.raises(Tampered):
        decrypt(head + parts[0] + parts[2] + parts[3])
    with pytest.raises(Tampered):
        decrypt(head + parts[0] + parts[1] + parts[1] + parts[2] + parts[3])


def test_data_after_a_full_final_chunk_is_tampered_as_an_extension() -> None:
    data = encrypt(os.urandom(16), chunk_size=8)
    for extra in (b"x", os.urandom(8 + TAG), data[header_size() :]):
        with pytest.raises(Tampered, match="appended") as caught:
            decrypt(data + extra)
        assert type(caught.value) is Tampered


def test_data_after_a_short_final_chunk_is_tampered() -> None:
    data = encrypt(os.urandom(13), chunk_size=8)
    with pytest.raises(Tampered):
        decrypt(data + b"\x00")


def test_chunks_from_another_stream_with_the_same_key_are_tampered() -> None:
    chunk_size = 8
    first = encrypt(os.urandom(24), chunk_size=chunk_size)
    second = encrypt(os.urandom(24), chunk_size=chunk_size)
    # Same key and id, different nonce prefix: neither header nor chunks can be mixed.
    with pytest.raises(Tampered):
        decrypt(first[: header_size()] + second[header_size() :])
    spliced = first[: header_size()] + chunks(first, 8)[0] + chunks(second, 8)[1]
    with pytest.raises(Tampered):
        decrypt(spliced + chunks(first, 8)[2])


def test_every_single_bit_flip_of_a_small_stream_is_detected() -> None:
    data = encrypt(b"0123456789abcdefghij", chunk_size=8)
    outcomes: set[type[CryptoError]] = set()
    for flipped in bit_flips(data):
        with pytest.raises(CryptoError) as caught:
            decrypt(flipped)
        outcomes.add(type(caught.value))
    assert Tampered in outcomes
    assert MalformedEnvelope in outcomes  # magic, version, chunk size out of range
    assert UnknownKeyVersion in outcomes  # a flipped key id


@settings(max_examples=100, deadline=None)
@given(
    plaintext=st.binary(min_size=0, max_size=5000),
    chunk_size=st.integers(min_value=1, max_value=600),
    where=positions,
    mask=st.integers(min_value=1, max_value=255),
)
def test_a_changed_byte_anywhere_in_a_larger_stream_is_detected(
    plaintext: bytes, chunk_size: int, where: float, mask: int
) -> None:
    data = bytearray(encrypt(plaintext, chunk_size=chunk_size))
    data[int(where * len(data))] ^= mask
    with pytest.raises(CryptoError):
        decrypt(bytes(data))


def test_the_wrong_key_is_tampered() -> None:
    data = encrypt(b"backup", chunk_size=8)
    with pytest.raises(Tampered):
        decrypt(data, key_for=lambda _key_id: os.urandom(32))


def test_a_chunk_size_beyond_the_reader_limit_is_malformed() -> None:
    data = bytearray(encrypt(b"backup", chunk_size=8))
    data[header_size() - 4 : header_size()] = (MAX_CHUNK_SIZE + 1).to_bytes(4, "big")
    with pytest.raises(MalformedEnvelope, match="chunk size"):
        decrypt(bytes(data))


def test_a_failed_backup_inside_with_is_left_detectably_truncated() -> None:
    out = io.BytesIO()
    writer = EncryptingWriter(out, KEY, key_id=KEY_ID, chunk_size=8)

    def dump() -> None:
        with writer:
            writer.write(os.urandom(20))
            raise RuntimeError("pg_dump died")

    with pytest.raises(RuntimeError, match="pg_dump died"):
        dump()
    assert not writer.closed
    with pytest.raises(Truncated):
        decrypt(out.getvalue())


def test_plaintext_is_released_chunk_by_chunk() -> None:
    data = encrypt(b"a" * 8 + b"b" * 8 + b"c" * 3, chunk_size=8)
    assert list(iter_decrypted(io.BytesIO(data), key_for)) == [b"a" * 8, b"b" * 8, b"ccc"]


class ShortReads(io.RawIOBase):
    """A pipe-like reader that returns at most a few bytes per read."""

    def __init__(self, data: bytes, most: int) -> None:
        self.data = data
        self.position = 0
        self.most = most

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = self.most if size < 0 else min(size, self.most)
        part = self.data[self.position : self.position + size]
        self.position += len(part)
        return part


def test_short_reads_from_a_pipe_are_handled() -> None:
    plaintext = os.urandom(100)
    data = encrypt(plaintext, chunk_size=16)
    out = io.BytesIO()
    assert decrypt_stream(ShortReads(data, 3), out, key_for) == 100  # type: ignore[arg-type]
    assert out.getvalue() == plaintext


def test_memory_stays_flat_for_a_large_stream() -> None:
    chunk_size = 64 * 1024
    total = 24 * 1024 * 1024
    piece = os.urandom(1024 * 1024)
    with tempfile.TemporaryFile() as encrypted:
        tracemalloc.start()
        try:
            writer = EncryptingWriter(encrypted, KEY, key_id=KEY_ID, chunk_size=chunk_size)
            for _ in range(total // len(piece)):
                writer.write(piece)
            writer.close()
            _, write_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            encrypted.seek(0)

            class Counting(io.RawIOBase):
                size = 0

                def writable(self) -> bool:
                    return True

                def write(self, data: object) -> int:
                    assert isinstance(data, bytes)
                    self.size += len(data)
                    return len(data)

            sink = Counting()
            assert decrypt_stream(encrypted, sink, key_for) == total  # type: ignore[arg-type]
            _, read_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    # A few 64 KiB chunks at a time, not the 24 MiB stream (the 1 MiB piece predates tracing).
    assert write_peak < 512 * 1024
    assert read_peak < 512 * 1024


def test_the_header_names_the_key() -> None:
    data = encrypt(b"x", chunk_size=8)
    assert read_stream_key_id(io.BytesIO(data)) == KEY_ID


def test_not_a_stream_is_malformed() -> None:
    with pytest.raises(MalformedEnvelope, match="not a cleo-operator encrypted stream"):
        decrypt(b"PGDMP\x01\x0e\x00" + bytes(40))


def test_writer_misuse_is_refused() -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        EncryptingWriter(io.BytesIO(), KEY, key_id=KEY_ID, chunk_size=0)
    with pytest.raises(ValueError, match="32-byte"):
        EncryptingWriter(io.BytesIO(), b"short", key_id=KEY_ID)
    with pytest.raises(ValueError, match="invalid key id"):
        EncryptingWriter(io.BytesIO(), KEY, key_id="no spaces")
    writer = EncryptingWriter(io.BytesIO(), KEY, key_id=KEY_ID)
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"late")


def test_a_fresh_stream_key_per_backup_wrapped_by_the_tenant_key() -> None:
    keks = KeyEncryptionKeys.generate()
    context = {"tenant": "acme", "backup": "nightly-2026-03-01"}
    stream_key = new_stream_key(keks, context=context)
    other = new_stream_key(keks, context=context)
    assert stream_key.key != other.key
    assert stream_key.key_id != other.key_id
    out = io.BytesIO()
    with EncryptingWriter(out, stream_key.key, key_id=stream_key.key_id, chunk_size=8) as w:
        w.write(b"pg_dump output")
    # At restore time only the manifest's wrapped key and the tenant's wrapper are needed.
    opened = open_stream_key(keks, stream_key.wrapped, context=context)
    assert opened == stream_key
    restored = io.BytesIO()
    decrypt_stream(io.BytesIO(out.getvalue()), restored, opened.key_for)
    assert restored.getvalue() == b"pg_dump output"
    # Re-wrapping after a KEK rotation keeps the id the archive records.
    rotated = keks.rotate()
    rewrapped = open_stream_key(
        rotated, rotated.rewrap(stream_key.wrapped, context=context), context=context
    )
    assert rewrapped.key_id == stream_key.key_id
    # The wrong manifest for an archive is named as such.
    with pytest.raises(UnknownKeyVersion, match="do not belong together"):
        decrypt_stream(io.BytesIO(out.getvalue()), io.BytesIO(), other.key_for)
    assert_no_secret(repr(stream_key) + str(stream_key), stream_key.key)
    assert_no_secret(stream_key.wrapped, stream_key.key)


def test_reprs_hold_no_key_bytes() -> None:
    writer = EncryptingWriter(io.BytesIO(), KEY, key_id=KEY_ID)
    writer.write(b"abc")
    assert_no_secret(repr(writer) + str(writer), KEY)

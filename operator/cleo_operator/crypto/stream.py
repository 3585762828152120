"""Streaming authenticated encryption for backups: flat memory whatever the archive size.

Why not one AES-GCM call: a database dump can be far larger than memory, and AES-GCM must
see the whole message before it can say whether it is authentic. Why not independent chunks:
an attacker (or a broken upload) could then drop, reorder, repeat or cut chunks unnoticed.

This is the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizar 2015) over AES-256-GCM:
every chunk is sealed with the nonce

    nonce prefix (8 random bytes) || u32 big-endian (chunk counter << 1 | last-chunk flag)

and the whole stream header as associated data. The counter in the nonce detects reordering
and dropping; the flag on the final chunk detects truncation at a chunk boundary (the last
chunk present is not flagged) and extension (data after a flagged chunk); the header in
every chunk's associated data detects edits to the header (key id, chunk size, prefix).

Layout (integers big-endian)::

    magic       8 bytes  b"CLEOSTRM"
    version     u8       STREAM_VERSION (1)
    key id      u8 length + ASCII
    nonce prefix 8 bytes, random per stream
    chunk size  u32      plaintext bytes per chunk (the last one may be shorter)
    chunks      each: ciphertext of `chunk size` bytes + 16-byte tag; the final chunk holds
                0..chunk size bytes (an empty stream is one empty final chunk)

A fresh data key per backup is the intended use (`new_stream_key`), which also keeps the
random 64-bit prefix far from any collision bound. Decryption hands out plaintext chunk by
chunk as each one authenticates, so the stream as a whole is only known to be complete when
`decrypt_stream` returns without raising: restore into a scratch place, then swap.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import BinaryIO, Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cleo_operator.crypto._codec import check_key_id
from cleo_operator.crypto.envelope import KEY_SIZE, TAG_SIZE
from cleo_operator.crypto.errors import MalformedEnvelope, Tampered, Truncated, UnknownKeyVersion

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "STREAM_MAGIC",
    "STREAM_VERSION",
    "EncryptingWriter",
    "KeyWrapper",
    "StreamKey",
    "decrypt_stream",
    "iter_decrypted",
    "new_stream_key",
    "open_stream_key",
    "read_stream_key_id",
]

STREAM_MAGIC: Final = b"CLEOSTRM"
STREAM_VERSION: Final = 1
DEFAULT_CHUNK_SIZE: Final = 1 << 20
MAX_CHUNK_SIZE: Final = 64 << 20
"""Upper bound on the chunk size a reader accepts: it bounds the reader's memory."""
NONCE_PREFIX_SIZE: Final = 8
MAX_CHUNKS: Final = 1 << 31
"""The counter has 31 bits; at the default chunk size that is 2 PiB per stream."""
_STREAM_KEY_ID_LABEL: Final = b"cleo-operator stream key id\n"


def _nonce(prefix: bytes, counter: int, *, last: bool) -> bytes:
    return prefix + ((counter << 1) | int(last)).to_bytes(4, "big")


def _header(key_id: str, prefix: bytes, chunk_size: int) -> bytes:
    key_id_bytes = key_id.encode("ascii")
    return (
        STREAM_MAGIC
        + bytes([STREAM_VERSION, len(key_id_bytes)])
        + key_id_bytes
        + prefix
        + chunk_size.to_bytes(4, "big")
    )


def _check_chunk_size(chunk_size: int) -> int:
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be between 1 and {MAX_CHUNK_SIZE} bytes")
    return chunk_size


class EncryptingWriter:
    """A write-only binary stream that encrypts into `out` chunk by chunk.

    `close()` writes the final chunk; without it the output is detectably truncated, which
    is what a backup that failed half-way must look like. Leaving a `with` block by an
    exception therefore does not finalize. `out` is never closed here: its owner closes it.
    """

    def __init__(
        self, out: BinaryIO, key: bytes, *, key_id: str, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"stream keys are {KEY_SIZE}-byte AES-256 keys")
        self._out = out
        self._aead = AESGCM(key)
        self._chunk_size = _check_chunk_size(chunk_size)
        self._prefix = os.urandom(NONCE_PREFIX_SIZE)
        self._header = _header(check_key_id(key_id), self._prefix, chunk_size)
        self._buffer = bytearray()
        self._counter = 0
        self._closed = False
        self._plaintext_size = 0
        self._out.write(self._header)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"EncryptingWriter({state}, chunks={self._counter}, bytes={self._plaintext_size})"

    @property
    def plaintext_size(self) -> int:
        """Plaintext bytes accepted so far."""
        return self._plaintext_size

    @property
    def closed(self) -> bool:
        """Whether the final chunk has been written."""
        return self._closed

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Accept plaintext; full chunks are encrypted and written as soon as more follows."""
        if self._closed:
            raise ValueError("write to a closed EncryptingWriter")
        view = memoryview(data).cast("B")
        size = len(view)
        while view:
            room = self._chunk_size - len(self._buffer)
            if room == 0:
                # A full buffer is only emitted once more data exists, so that the final
                # chunk is never an empty chunk after a full one (unless the stream is empty).
                self._emit(last=False)
                continue
            self._buffer += view[:room]
            view = view[room:]
        self._plaintext_size += size
        return size

    def close(self) -> None:
        """Encrypt and write the final (flagged) chunk. Idempotent."""
        if self._closed:
            return
        self._emit(last=True)
        self._closed = True

    def __enter__(self) -> EncryptingWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()

    def _emit(self, *, last: bool) -> None:
        if self._counter >= MAX_CHUNKS:
            raise ValueError("the stream is longer than 2**31 chunks: use a larger chunk_size")
        nonce = _nonce(self._prefix, self._counter, last=last)
        self._out.write(self._aead.encrypt(nonce, bytes(self._buffer), self._header))
        self._buffer.clear()
        self._counter += 1


@dataclass(frozen=True)
class _StreamHeader:
    key_id: str
    prefix: bytes
    chunk_size: int
    raw: bytes


def _read_full(inp: BinaryIO, size: int) -> bytes:
    """Read `size` bytes, fewer only at end of input (handles short reads of pipes)."""
    parts: list[bytes] = []
    remaining = size
    while remaining:
        part = inp.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def _read_header(inp: BinaryIO) -> _StreamHeader:
    fixed = _read_full(inp, len(STREAM_MAGIC) + 2)
    if len(fixed) < len(STREAM_MAGIC) + 2:
        if STREAM_MAGIC.startswith(fixed[: len(STREAM_MAGIC)]):
            raise Truncated("the encrypted stream ends inside its header: it was cut short")
        raise MalformedEnvelope("not a cleo-operator encrypted stream (wrong magic bytes)")
    if fixed[: len(STREAM_MAGIC)] != STREAM_MAGIC:
        raise MalformedEnvelope("not a cleo-operator encrypted stream (wrong magic bytes)")
    version = fixed[len(STREAM_MAGIC)]
    if version != STREAM_VERSION:
        raise MalformedEnvelope(
            f"encrypted stream format version {version} is not supported (this operator reads "
            f"version {STREAM_VERSION}); upgrade the operator"
        )
    key_id_length = fixed[len(STREAM_MAGIC) + 1]
    rest = _read_full(inp, key_id_length + NONCE_PREFIX_SIZE + 4)
    if len(rest) < key_id_length + NONCE_PREFIX_SIZE + 4:
        raise Truncated("the encrypted stream ends inside its header: it was cut short")
    try:
        key_id = check_key_id(rest[:key_id_length].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise MalformedEnvelope("the encrypted stream's header names an invalid key id") from None
    prefix = rest[key_id_length : key_id_length + NONCE_PREFIX_SIZE]
    chunk_size = int.from_bytes(rest[key_id_length + NONCE_PREFIX_SIZE :], "big")
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise MalformedEnvelope(
            f"the encrypted stream's chunk size {chunk_size} is outside 1..{MAX_CHUNK_SIZE}: "
            "the header was altered"
        )
    return _StreamHeader(key_id=key_id, prefix=prefix, chunk_size=chunk_size, raw=fixed + rest)


def read_stream_key_id(inp: BinaryIO) -> str:
    """The key id in a stream's header (consumes the header; for inspection only)."""
    return _read_header(inp).key_id


def iter_decrypted(inp: BinaryIO, key_for: Callable[[str], bytes]) -> Iterator[bytes]:
    """Yield authenticated plaintext chunks; raise Tampered or Truncated at the first problem.

    `key_for(key_id)` returns the 32-byte key for the id in the header (it may raise
    UnknownKeyVersion). Memory use is about two chunks.
    """
    header = _read_header(inp)
    key = key_for(header.key_id)
    if len(key) != KEY_SIZE:
        raise ValueError(f"key_for returned a key of the wrong size for {header.key_id}")
    aead = AESGCM(key)
    block_size = header.chunk_size + TAG_SIZE

    def attempt(block: bytes, counter: int, *, last: bool) -> bytes | None:
        try:
            return aead.decrypt(_nonce(header.prefix, counter, last=last), block, header.raw)
        except InvalidTag:
            return None

    block = _read_full(inp, block_size)
    counter = 0
    while True:
        # A block shorter than a full one can only be the final chunk; a full one is final
        # exactly when nothing follows it.
        following = _read_full(inp, block_size) if len(block) == block_size else b""
        last = not following
        plaintext = attempt(block, counter, last=last)
        if plaintext is None:
            raise _diagnose(block, counter, last=last, other=attempt(block, counter, last=not last))
        yield plaintext
        if last:
            return
        if counter + 1 >= MAX_CHUNKS:
            raise Tampered("the encrypted stream has more than 2**31 chunks: it was extended")
        block = following
        counter += 1


def _diagnose(block: bytes, counter: int, *, last: bool, other: bytes | None) -> Tampered:
    """Name the failure of chunk `counter` as precisely as the evidence allows."""
    number = counter + 1
    if last and other is not None:
        return Truncated(
            f"the encrypted stream ends after chunk {number}, which is not its final chunk: "
            "it was cut short (an interrupted write or upload); take the backup again"
        )
    if last and len(block) < TAG_SIZE:
        return Truncated(
            f"the encrypted stream ends inside chunk {number}: it was cut short (an interrupted "
            "write or upload); take the backup again"
        )
    if not last and other is not None:
        return Tampered(
            f"data follows the final chunk ({number}) of the encrypted stream: something was "
            "appended to it"
        )
    return Tampered(
        f"chunk {number} of the encrypted stream failed authentication: it was altered, "
        "reordered or cut short inside the chunk, or the key is not the one it was made with"
    )


def decrypt_stream(inp: BinaryIO, out: BinaryIO, key_for: Callable[[str], bytes]) -> int:
    """Decrypt `inp` into `out` chunk by chunk; returns the plaintext size.

    Raises Tampered or Truncated (possibly after writing earlier, authentic chunks to `out`:
    treat `out` as complete only when this returns).
    """
    total = 0
    for chunk in iter_decrypted(inp, key_for):
        out.write(chunk)
        total += len(chunk)
    return total


class KeyWrapper(Protocol):
    """Anything that wraps data keys: a tenant `Keyring` or `KeyEncryptionKeys`."""

    def wrap(self, data_key: bytes, *, context: Mapping[str, str]) -> str:
        """Wrap `data_key`, bound to `context`."""
        ...

    def unwrap(self, wrapped: str, *, context: Mapping[str, str]) -> bytes:
        """Unwrap what `wrap` made for the same context."""
        ...


@dataclass(frozen=True)
class StreamKey:
    """A per-stream data key with its wrapped form (what a backup manifest stores)."""

    key_id: str
    """Id recorded in the stream header; derived from the key, so it ties archive and key."""
    wrapped: str
    """The key wrapped by the tenant's key wrapper: safe to store next to the archive."""
    key: bytes = field(repr=False)
    """The raw 32-byte key; never in reprs, never stored unwrapped."""

    def key_for(self, key_id: str) -> bytes:
        """A `key_for` for `decrypt_stream` that accepts only this key's id."""
        if key_id != self.key_id:
            raise UnknownKeyVersion(
                f"the stream was encrypted with data key {key_id} but the wrapped key given is "
                f"{self.key_id}: the archive and its manifest do not belong together",
                key_id=key_id,
            )
        return self.key


def _stream_key_id(key: bytes) -> str:
    # Derived from the key, not from its wrapped form, so re-wrapping the key after a KEK or
    # keyring rotation keeps the id the archive's header records. A truncated SHA-256 of a
    # 256-bit random key reveals nothing usable about it.
    return "dk-" + hashlib.sha256(_STREAM_KEY_ID_LABEL + key).hexdigest()[:16]


def new_stream_key(wrapper: KeyWrapper, *, context: Mapping[str, str]) -> StreamKey:
    """A fresh random data key for one stream, wrapped by `wrapper` under `context`."""
    key = AESGCM.generate_key(bit_length=256)
    wrapped = wrapper.wrap(key, context=context)
    return StreamKey(key_id=_stream_key_id(key), wrapped=wrapped, key=key)


def open_stream_key(wrapper: KeyWrapper, wrapped: str, *, context: Mapping[str, str]) -> StreamKey:
    """Unwrap a stream key stored by `new_stream_key`'s caller."""
    key = wrapper.unwrap(wrapped, context=context)
    if len(key) != KEY_SIZE:
        raise MalformedEnvelope(
            f"the wrapped stream key holds {len(key)} bytes, not a {KEY_SIZE}-byte key"
        )
    return StreamKey(key_id=_stream_key_id(key), wrapped=wrapped, key=key)

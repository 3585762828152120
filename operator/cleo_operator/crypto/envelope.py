"""The versioned AES-256-GCM envelope every small ciphertext of the operator is stored in.

Why an envelope and not bare `nonce || ciphertext`: a stored ciphertext must say which key
opens it (key rotation leaves several versions readable), which format it is in (so the
format can change without guessing), and what it is *for*. The last point is the
associated data: the tenant, Secret and key a value belongs to are recorded in the header
and the whole header is the AES-GCM associated data. Recording the context, not only
authenticating it, is what lets us report "this was sealed for tenant a, not b" as
`WrongContext` instead of an opaque authentication failure; authenticating the recorded
header is what makes editing it to match a `Tampered`.

Binary layout (all integers big-endian)::

    magic     4 bytes  b"CLEO"
    version   u8       FORMAT_VERSION (1)
    kind      u8       1 data (tenant keyring), 2 sealed (X25519), 3 kek (wrapped key)
    key id    u8 length + ASCII
    context   u8 count, then per field: u8 length + ASCII name, u16 length + UTF-8 value,
              names strictly ascending (one encoding per context)
    params    u16 length + bytes (kind specific; sealed: ephemeral key and wrapped data key)
    nonce     12 bytes, random per envelope
    ciphertext AES-256-GCM output (plaintext length + 16-byte tag)

Associated data of the ciphertext = every byte before it. The text form for YAML and
Secrets is `cleo:v1:` followed by the canonical unpadded base64url of those bytes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cleo_operator.crypto._codec import KEY_ID_PATTERN, b64url_decode, b64url_encode
from cleo_operator.crypto.errors import MalformedEnvelope, Tampered, WrongContext

__all__ = [
    "FORMAT_VERSION",
    "KEY_SIZE",
    "MAGIC",
    "NONCE_SIZE",
    "TAG_SIZE",
    "TEXT_PREFIX",
    "ContextFields",
    "Envelope",
    "EnvelopeKind",
    "decrypt_envelope",
    "encrypt_envelope",
    "envelope_identity",
    "normalize_context",
]

MAGIC: Final = b"CLEO"
FORMAT_VERSION: Final = 1
TEXT_PREFIX: Final = f"cleo:v{FORMAT_VERSION}:"
KEY_SIZE: Final = 32
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16

MAX_CONTEXT_FIELDS: Final = 16
MAX_CONTEXT_VALUE_BYTES: Final = 1024
MAX_PARAMS_BYTES: Final = 0xFFFF

EnvelopeKind = Literal["data", "sealed", "kek"]
"""What made the envelope; part of the header, so one kind is never opened as another."""

ContextFields = tuple[tuple[str, str], ...]
"""A context in canonical form: (name, value) pairs sorted by name."""

_KIND_CODES: Final[dict[EnvelopeKind, int]] = {"data": 1, "sealed": 2, "kek": 3}
_KINDS_BY_CODE: Final[dict[int, EnvelopeKind]] = {code: k for k, code in _KIND_CODES.items()}
_KIND_NAMES: Final[dict[EnvelopeKind, str]] = {
    "data": "value encrypted with a tenant keyring",
    "sealed": "sealed value",
    "kek": "key wrapped by a key-encryption key",
}
_CONTEXT_NAME_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"
)


def normalize_context(context: Mapping[str, str]) -> ContextFields:
    """Validate a context mapping and return its canonical (sorted) form.

    Raises ValueError for a programming error (bad field name, oversized value); the values
    are names such as a tenant or Secret name, never secrets.
    """
    if len(context) > MAX_CONTEXT_FIELDS:
        raise ValueError(f"a context has at most {MAX_CONTEXT_FIELDS} fields")
    for name, value in context.items():
        if not _valid_context_name(name):
            raise ValueError(
                f"invalid context field name {name!r}: use 1 to 64 ASCII letters, digits, "
                "'_', '.' or '-', starting with a letter"
            )
        if not isinstance(value, str):
            raise TypeError(f"context field {name!r} must be a str")
        if len(value.encode("utf-8")) > MAX_CONTEXT_VALUE_BYTES:
            raise ValueError(
                f"context field {name!r} is longer than {MAX_CONTEXT_VALUE_BYTES} bytes"
            )
    return tuple(sorted(context.items()))


def _valid_context_name(name: str) -> bool:
    return (
        0 < len(name) <= 64
        and name[0].isascii()
        and name[0].isalpha()
        and all(c in _CONTEXT_NAME_CHARS for c in name)
    )


def _describe_context(fields: ContextFields) -> str:
    if not fields:
        return "no context"
    return ", ".join(f"{name} {value!r}" for name, value in fields)


@dataclass(frozen=True)
class Envelope:
    """One parsed envelope. Nothing in it is secret: the plaintext is only in `ciphertext`."""

    kind: EnvelopeKind
    """What made it: a tenant keyring (`data`), sealing (`sealed`) or a KEK (`kek`)."""
    key_id: str
    """Id of the key that opens it (a keyring version such as `v3`, or a sealing key id)."""
    context: ContextFields
    """The recorded context (tenant, Secret, key, ...), canonical, covered by the AAD."""
    params: bytes
    """Kind-specific header bytes, covered by the AAD (sealed: ephemeral key, wrapped key)."""
    nonce: bytes
    """The random 96-bit AES-GCM nonce."""
    ciphertext: bytes
    """AES-256-GCM ciphertext and 16-byte tag."""

    def __post_init__(self) -> None:
        if self.kind not in _KIND_CODES:
            raise ValueError(f"unknown envelope kind {self.kind!r}")
        if KEY_ID_PATTERN.fullmatch(self.key_id) is None:
            raise ValueError(f"invalid key id {self.key_id!r}")
        if normalize_context(dict(self.context)) != self.context:
            raise ValueError("the context must be canonical: use normalize_context()")
        if len(self.params) > MAX_PARAMS_BYTES:
            raise ValueError(f"params are longer than {MAX_PARAMS_BYTES} bytes")
        if len(self.nonce) != NONCE_SIZE:
            raise ValueError(f"the nonce must be {NONCE_SIZE} bytes")
        if len(self.ciphertext) < TAG_SIZE:
            raise ValueError(f"the ciphertext must hold at least the {TAG_SIZE}-byte tag")

    # -- encoding ------------------------------------------------------------------------

    def identity_bytes(self) -> bytes:
        """The header up to the context: what the envelope is, for which key and context."""
        return _identity_bytes(self.kind, self.key_id, self.context)

    def header_bytes(self) -> bytes:
        """Everything before the ciphertext: the associated data of the ciphertext."""
        return _header_bytes(self.kind, self.key_id, self.context, self.params, self.nonce)

    def to_bytes(self) -> bytes:
        """The binary form."""
        return self.header_bytes() + self.ciphertext

    def to_text(self) -> str:
        """The text form for YAML and Secrets: `cleo:v1:` + base64url."""
        return TEXT_PREFIX + b64url_encode(self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        """Parse the binary form; MalformedEnvelope says what is wrong with it."""
        return _parse(data)

    @classmethod
    def from_text(cls, text: str) -> Envelope:
        """Parse the text form (surrounding whitespace, as YAML block scalars add, is ok)."""
        text = text.strip(" \t\r\n")
        if not text.startswith(TEXT_PREFIX):
            if text.startswith("cleo:v"):
                version = text[len("cleo:v") :].split(":", 1)[0][:16]
                raise MalformedEnvelope(
                    f"envelope format version {version!r} is not supported by this operator "
                    f"(it reads {TEXT_PREFIX!r}); upgrade the operator"
                )
            raise MalformedEnvelope(
                f"not an encrypted value: it must start with {TEXT_PREFIX!r} "
                "(seal values with `cleo-operator seal`)"
            )
        data = b64url_decode(text[len(TEXT_PREFIX) :])
        if data is None:
            raise MalformedEnvelope(
                f"the text after {TEXT_PREFIX!r} is not canonical unpadded base64url: "
                "the value was altered or cut; copy it again from the output of "
                "`cleo-operator seal`"
            )
        return _parse(data)

    # -- checks --------------------------------------------------------------------------

    def check(self, *, kind: EnvelopeKind, context: Mapping[str, str]) -> None:
        """Check the recorded kind and context before any decryption.

        Raises MalformedEnvelope for another kind of envelope and WrongContext naming the
        differing fields when the envelope was made for another tenant, Secret or key.
        """
        if self.kind != kind:
            raise MalformedEnvelope(
                f"this is a {_KIND_NAMES[self.kind]}, not a {_KIND_NAMES[kind]}: "
                "it was put in the wrong place"
            )
        expected = normalize_context(context)
        if self.context == expected:
            return
        recorded = dict(self.context)
        wanted = dict(expected)
        mismatched = tuple(
            sorted(
                name
                for name in recorded.keys() | wanted.keys()
                if recorded.get(name) != wanted.get(name)
            )
        )
        raise WrongContext(
            f"the {_KIND_NAMES[self.kind]} was made for {_describe_context(self.context)} "
            f"but is used for {_describe_context(expected)} (differs in: "
            f"{', '.join(mismatched)}); it was copied from elsewhere or renamed: encrypt "
            "or seal it again for this place",
            mismatched=mismatched,
        )


def _identity_bytes(kind: EnvelopeKind, key_id: str, context: ContextFields) -> bytes:
    out = bytearray(MAGIC)
    out.append(FORMAT_VERSION)
    out.append(_KIND_CODES[kind])
    key_id_bytes = key_id.encode("ascii")
    out.append(len(key_id_bytes))
    out += key_id_bytes
    out.append(len(context))
    for name, value in context:
        name_bytes = name.encode("ascii")
        value_bytes = value.encode("utf-8")
        out.append(len(name_bytes))
        out += name_bytes
        out += len(value_bytes).to_bytes(2, "big")
        out += value_bytes
    return bytes(out)


def envelope_identity(*, kind: EnvelopeKind, key_id: str, context: Mapping[str, str]) -> bytes:
    """The identity header an envelope of this kind, key and context will start with."""
    return _identity_bytes(kind, key_id, normalize_context(context))


def _header_bytes(
    kind: EnvelopeKind, key_id: str, context: ContextFields, params: bytes, nonce: bytes
) -> bytes:
    return _identity_bytes(kind, key_id, context) + len(params).to_bytes(2, "big") + params + nonce


class _Reader:
    """A cursor over the envelope bytes that turns every short read into MalformedEnvelope."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, size: int, what: str) -> bytes:
        end = self.offset + size
        if end > len(self.data):
            raise MalformedEnvelope(
                f"the envelope ends inside its {what}: it was cut short; copy it again"
            )
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "big")


def _parse(data: bytes) -> Envelope:
    reader = _Reader(bytes(data))
    if reader.take(len(MAGIC), "magic") != MAGIC:
        raise MalformedEnvelope("not a cleo-operator envelope (wrong magic bytes)")
    version = reader.u8("format version")
    if version != FORMAT_VERSION:
        raise MalformedEnvelope(
            f"envelope format version {version} is not supported by this operator "
            f"(it reads version {FORMAT_VERSION}); upgrade the operator"
        )
    kind_code = reader.u8("kind")
    kind = _KINDS_BY_CODE.get(kind_code)
    if kind is None:
        raise MalformedEnvelope(f"unknown envelope kind {kind_code}")
    try:
        key_id = reader.take(reader.u8("key id length"), "key id").decode("ascii")
    except UnicodeDecodeError:
        raise MalformedEnvelope("the envelope's key id is not ASCII") from None
    if KEY_ID_PATTERN.fullmatch(key_id) is None:
        raise MalformedEnvelope(f"the envelope names an invalid key id {key_id!r}")
    fields: list[tuple[str, str]] = []
    for _ in range(reader.u8("context field count")):
        raw_name = reader.take(reader.u8("context name length"), "context name")
        raw_value = reader.take(reader.u16("context value length"), "context value")
        try:
            name = raw_name.decode("ascii")
            value = raw_value.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedEnvelope("a context field of the envelope is not text") from None
        if not _valid_context_name(name) or len(raw_value) > MAX_CONTEXT_VALUE_BYTES:
            raise MalformedEnvelope(f"the envelope has an invalid context field {name!r}")
        if fields and fields[-1][0] >= name:
            raise MalformedEnvelope("the envelope's context fields are not in canonical order")
        fields.append((name, value))
    params = reader.take(reader.u16("params length"), "params")
    nonce = reader.take(NONCE_SIZE, "nonce")
    ciphertext = data[reader.offset :]
    if len(ciphertext) < TAG_SIZE:
        raise MalformedEnvelope(
            "the envelope ends before its authentication tag: it was cut short; copy it again"
        )
    return Envelope(
        kind=kind,
        key_id=key_id,
        context=tuple(fields),
        params=params,
        nonce=nonce,
        ciphertext=bytes(ciphertext),
    )


def encrypt_envelope(
    key: bytes,
    *,
    kind: EnvelopeKind,
    key_id: str,
    context: Mapping[str, str],
    plaintext: bytes,
    params: bytes = b"",
) -> Envelope:
    """Encrypt `plaintext` with AES-256-GCM under a fresh random nonce into an envelope."""
    if len(key) != KEY_SIZE:
        raise ValueError(f"AES-256-GCM keys are {KEY_SIZE} bytes")
    fields = normalize_context(context)
    nonce = os.urandom(NONCE_SIZE)
    aad = _header_bytes(kind, key_id, fields, params, nonce)
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, aad)
    return Envelope(
        kind=kind,
        key_id=key_id,
        context=fields,
        params=params,
        nonce=nonce,
        ciphertext=ciphertext,
    )


def decrypt_envelope(envelope: Envelope, key: bytes) -> bytes:
    """Authenticate and decrypt; Tampered when the tag does not match.

    Call `Envelope.check` first so a wrong context is reported as such, not as Tampered.
    """
    if len(key) != KEY_SIZE:
        raise ValueError(f"AES-256-GCM keys are {KEY_SIZE} bytes")
    try:
        return AESGCM(key).decrypt(envelope.nonce, envelope.ciphertext, envelope.header_bytes())
    except InvalidTag:
        raise Tampered(
            f"the {_KIND_NAMES[envelope.kind]} (key {envelope.key_id}) failed authentication: "
            "it was altered after it was made, or made with a different key of the same id; "
            "encrypt or seal it again"
        ) from None

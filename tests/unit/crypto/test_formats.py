"""The wire formats, read by an independent implementation written from docs/encryption.md.

Sealed values live in Git and backups live for years: the formats are a public contract, not
an implementation detail. These tests decode what the package writes using only the
`cryptography` primitives and the documented layout, so any change to the format (field
order, nonce layout, HKDF info, associated data) fails here and must come with a new
format version.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import struct
from datetime import UTC, datetime
from typing import TypedDict

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cleo_operator.crypto.kek import KeyEncryptionKeys
from cleo_operator.crypto.keyring import Keyring
from cleo_operator.crypto.sealing import SealingKeyring, seal
from cleo_operator.crypto.stream import EncryptingWriter

NOW = datetime(2026, 5, 1, tzinfo=UTC)


class Fields(TypedDict):
    """An envelope's fields as the documentation names them."""

    kind: str
    key_id: str
    context: dict[str, str]
    identity: bytes
    params: bytes
    nonce: bytes
    aad: bytes
    ciphertext: bytes


def parse_envelope(text: str) -> Fields:
    """The documented envelope layout, parsed field by field."""
    assert text.startswith("cleo:v1:")
    body = text[len("cleo:v1:") :]
    data = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    assert data[:4] == b"CLEO"
    assert data[4] == 1
    kind = {1: "data", 2: "sealed", 3: "kek"}[data[5]]
    offset = 6
    key_id = data[offset + 1 : offset + 1 + data[offset]].decode()
    offset += 1 + data[offset]
    count = data[offset]
    offset += 1
    context: dict[str, str] = {}
    for _ in range(count):
        name = data[offset + 1 : offset + 1 + data[offset]].decode()
        offset += 1 + data[offset]
        (length,) = struct.unpack(">H", data[offset : offset + 2])
        context[name] = data[offset + 2 : offset + 2 + length].decode()
        offset += 2 + length
    identity_end = offset
    (params_length,) = struct.unpack(">H", data[offset : offset + 2])
    params = data[offset + 2 : offset + 2 + params_length]
    offset += 2 + params_length
    nonce = data[offset : offset + 12]
    offset += 12
    return {
        "kind": kind,
        "key_id": key_id,
        "context": context,
        "identity": data[:identity_end],
        "params": params,
        "nonce": nonce,
        "aad": data[:offset],
        "ciphertext": data[offset:],
    }


def test_a_keyring_envelope_follows_the_documented_layout() -> None:
    keyring = Keyring.generate(NOW).rotate(NOW)
    context = {"tenant": "acme", "table": "memories"}
    fields = parse_envelope(keyring.encrypt(b"remember this", context=context))
    assert fields["kind"] == "data"
    assert fields["key_id"] == "v2"
    assert fields["context"] == context
    assert list(fields["context"]) == sorted(context)
    assert fields["params"] == b""
    plaintext = AESGCM(keyring.active.material).decrypt(
        fields["nonce"],
        fields["ciphertext"],
        fields["aad"],
    )
    assert plaintext == b"remember this"


def test_a_kek_wrapped_key_follows_the_documented_layout() -> None:
    keks = KeyEncryptionKeys.generate().rotate()
    fields = parse_envelope(keks.wrap(b"k" * 32, context={"tenant": "acme"}))
    assert fields["kind"] == "kek"
    assert fields["key_id"] == "v2"
    key = dict(keks.keys)[2]
    assert (
        AESGCM(key).decrypt(
            fields["nonce"],
            fields["ciphertext"],
            fields["aad"],
        )
        == b"k" * 32
    )


def test_a_sealed_value_opens_with_the_documented_construction() -> None:
    keyring = SealingKeyring.generate(NOW)
    sealed = seal(
        keyring.public_key, tenant="acme", secret="db", key="password", plaintext=b"hunter2"
    )
    fields = parse_envelope(sealed)
    assert fields["kind"] == "sealed"
    assert fields["context"] == {"tenant": "acme", "secret": "db", "key": "password"}
    recipient_public = keyring.public_key.raw
    expected_id = hashlib.sha256(b"cleo-operator sealing key id" + recipient_public).hexdigest()
    assert fields["key_id"] == "x25519-" + expected_id[:16]
    params = fields["params"]
    assert len(params) == 32 + 12 + 48
    ephemeral_public, wrap_nonce, wrapped_key = params[:32], params[32:44], params[44:]
    private = X25519PrivateKey.from_private_bytes(keyring.current.private_raw)
    shared = private.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
    wrapping_key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=b"cleo-operator seal v1 wrapping key" + ephemeral_public + recipient_public,
    ).derive(shared)
    identity = fields["identity"]
    data_key = AESGCM(wrapping_key).decrypt(wrap_nonce, wrapped_key, identity + ephemeral_public)
    plaintext = AESGCM(data_key).decrypt(
        fields["nonce"],
        fields["ciphertext"],
        fields["aad"],
    )
    assert plaintext == b"hunter2"


def test_a_stream_follows_the_documented_stream_construction() -> None:
    key = os.urandom(32)
    out = io.BytesIO()
    with EncryptingWriter(out, key, key_id="dk-1", chunk_size=4) as writer:
        writer.write(b"0123456789")
    data = out.getvalue()
    assert data[:8] == b"CLEOSTRM"
    assert data[8] == 1
    key_id_length = data[9]
    assert data[10 : 10 + key_id_length] == b"dk-1"
    offset = 10 + key_id_length
    prefix = data[offset : offset + 8]
    (chunk_size,) = struct.unpack(">I", data[offset + 8 : offset + 12])
    assert chunk_size == 4
    header = data[: offset + 12]
    body = data[offset + 12 :]
    chunk_lengths = [4 + 16, 4 + 16, 2 + 16]
    assert len(body) == sum(chunk_lengths)
    plaintext = b""
    position = 0
    for counter, length in enumerate(chunk_lengths):
        last = counter == len(chunk_lengths) - 1
        nonce = prefix + struct.pack(">I", counter << 1 | last)
        plaintext += AESGCM(key).decrypt(nonce, body[position : position + length], header)
        position += length
    assert plaintext == b"0123456789"

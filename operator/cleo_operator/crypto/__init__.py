"""Envelope encryption, keyrings, key-encryption-key providers and sealing, on `cryptography` AEADs.

The layer works on bytes and dicts only: reading and writing Secrets, and mounting KEKs, is
the job of the layers above. See `docs/encryption.md` for the formats and rotation rules.
"""

from cleo_operator.crypto.envelope import Envelope, EnvelopeKind
from cleo_operator.crypto.errors import (
    CryptoError,
    InvalidKeyMaterial,
    MalformedEnvelope,
    Tampered,
    Truncated,
    UnknownKeyVersion,
    WrongContext,
)
from cleo_operator.crypto.kek import (
    FileKEKProvider,
    KEKProvider,
    KeyEncryptionKeys,
    kek_from_secret_data,
    kek_to_secret_data,
)
from cleo_operator.crypto.keyring import DataKey, Keyring, unwrap_keyring, wrap_keyring
from cleo_operator.crypto.sealing import (
    SealingKey,
    SealingKeyring,
    SealingPublicKey,
    seal,
    unseal,
)
from cleo_operator.crypto.stream import (
    EncryptingWriter,
    KeyWrapper,
    StreamKey,
    decrypt_stream,
    iter_decrypted,
    new_stream_key,
    open_stream_key,
)

__all__ = [
    "CryptoError",
    "DataKey",
    "EncryptingWriter",
    "Envelope",
    "EnvelopeKind",
    "FileKEKProvider",
    "InvalidKeyMaterial",
    "KEKProvider",
    "KeyEncryptionKeys",
    "KeyWrapper",
    "Keyring",
    "MalformedEnvelope",
    "SealingKey",
    "SealingKeyring",
    "SealingPublicKey",
    "StreamKey",
    "Tampered",
    "Truncated",
    "UnknownKeyVersion",
    "WrongContext",
    "decrypt_stream",
    "iter_decrypted",
    "kek_from_secret_data",
    "kek_to_secret_data",
    "new_stream_key",
    "open_stream_key",
    "seal",
    "unseal",
    "unwrap_keyring",
    "wrap_keyring",
]

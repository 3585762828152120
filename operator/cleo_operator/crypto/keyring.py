"""The tenant data keyring: versioned AES-256-GCM keys, one active, for a tenant's data.

Why versions: rotating a key must not make existing ciphertexts (memories in PostgreSQL,
backup data keys) unreadable. `rotate` adds a new active version and keeps every old one;
each envelope records the version that made it, and `decrypt` uses that version. Removing a
version is deliberately not offered: that is a data-loss decision for a person, after every
ciphertext has been re-encrypted (`needs_reencrypt` tells which ones still need it).

Why `generate` is the only way to make keys: a keyring that cannot be read must never be
replaced by a fresh one behind anybody's back, since every ciphertext made with the old keys
would be lost for good. `from_secret_data` therefore raises on anything missing or wrong and
never falls back to generating; the reconciler creates a keyring only when it knows the
tenant is new.

The keyring is immutable: `rotate` returns a new keyring, so a reconcile can compare the
desired keyring to the stored one and write only on change. `fingerprint` gives a digest
that changes on every rotation and reveals nothing useful about the keys, for the
Deployment's checksum annotation (pods restart onto the new active key).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cleo_operator.crypto._codec import b64url_decode, b64url_encode, require_aware
from cleo_operator.crypto._layout import StoredKey, dump_key_index, load_key_index
from cleo_operator.crypto.envelope import KEY_SIZE, Envelope, decrypt_envelope, encrypt_envelope
from cleo_operator.crypto.errors import InvalidKeyMaterial, MalformedEnvelope, UnknownKeyVersion
from cleo_operator.crypto.kek import KeyEncryptionKeys

__all__ = [
    "KEYRING_INDEX_ENTRY",
    "DataKey",
    "Keyring",
    "keyring_kek_context",
    "unwrap_keyring",
    "wrap_keyring",
]

KEYRING_INDEX_ENTRY: Final = "keyring.json"
"""Secret data entry of the keyring's index; key material is in `v<N>.key` entries."""
_KEYRING_FORMAT: Final = "cleo-operator/tenant-keyring/v1"
_WRAPPED_FORMAT: Final = "cleo-operator/wrapped-tenant-keyring/v1"
_FINGERPRINT_LABEL: Final = b"cleo-operator tenant keyring fingerprint v1\n"


def _key_id(version: int) -> str:
    return f"v{version}"


@dataclass(frozen=True)
class DataKey:
    """One version of a tenant data key."""

    version: int
    """Version number, from 1 up."""
    created: datetime
    """When it was generated (UTC)."""
    material: bytes = field(repr=False)
    """The 32-byte AES-256 key; never in reprs."""

    def __post_init__(self) -> None:
        if self.version < 1:
            raise ValueError("key versions start at 1")
        if len(self.material) != KEY_SIZE:
            raise ValueError(f"data keys are {KEY_SIZE}-byte AES-256 keys")
        require_aware(self.created, name="created")

    @property
    def key_id(self) -> str:
        """The id envelopes record: `v<version>`."""
        return _key_id(self.version)


@dataclass(frozen=True)
class Keyring:
    """A tenant's data keys by version, one active. Immutable; see the module docstring."""

    keys: tuple[DataKey, ...]
    """All versions, ascending; old ones stay so their ciphertexts remain readable."""
    active_version: int
    """The version `encrypt` uses."""

    def __post_init__(self) -> None:
        versions = [k.version for k in self.keys]
        if not versions or versions != sorted(set(versions)):
            raise ValueError("keyring keys must be a non-empty tuple in ascending version order")
        if self.active_version not in versions:
            raise ValueError(f"active version {self.active_version} is not in the keyring")

    def __repr__(self) -> str:
        versions = ", ".join(k.key_id for k in self.keys)
        return f"Keyring(active={_key_id(self.active_version)}, versions=[{versions}])"

    __str__ = __repr__

    @classmethod
    def generate(cls, now: datetime) -> Keyring:
        """A brand-new keyring with one active key, version 1. Only for a new tenant."""
        return cls(keys=(_new_key(1, now),), active_version=1)

    def rotate(self, now: datetime) -> Keyring:
        """A keyring with a fresh active version added; every old version is kept."""
        version = self.keys[-1].version + 1
        return Keyring(keys=(*self.keys, _new_key(version, now)), active_version=version)

    @property
    def active(self) -> DataKey:
        """The active key."""
        return next(k for k in self.keys if k.version == self.active_version)

    def key_for(self, key_id: str) -> DataKey:
        """The key with this id; UnknownKeyVersion when the keyring lacks it."""
        for k in self.keys:
            if k.key_id == key_id:
                return k
        raise UnknownKeyVersion(
            f"the value was encrypted with tenant key {key_id}, which the tenant keyring does "
            f"not hold (it holds {', '.join(k.key_id for k in self.keys)}): the keyring Secret "
            "was replaced or a version removed; restore the keyring from its KEK-wrapped copy "
            "or a backup",
            key_id=key_id,
        )

    def encrypt(self, plaintext: bytes, *, context: Mapping[str, str]) -> str:
        """Encrypt with the active key, bound to `context`; returns the `cleo:v1:` text."""
        active = self.active
        return encrypt_envelope(
            active.material,
            kind="data",
            key_id=active.key_id,
            context=context,
            plaintext=plaintext,
        ).to_text()

    def decrypt(self, envelope: str, *, context: Mapping[str, str]) -> bytes:
        """Decrypt with the version the envelope names.

        Raises MalformedEnvelope, WrongContext, UnknownKeyVersion or Tampered, in that order.
        """
        parsed = Envelope.from_text(envelope)
        parsed.check(kind="data", context=context)
        return decrypt_envelope(parsed, self.key_for(parsed.key_id).material)

    def needs_reencrypt(self, envelope: str) -> bool:
        """True when `envelope` was not made with the active version."""
        parsed = Envelope.from_text(envelope)
        if parsed.kind != "data":
            raise MalformedEnvelope(
                f"expected a value encrypted with a tenant keyring, found an envelope of kind "
                f"{parsed.kind!r}"
            )
        return parsed.key_id != self.active.key_id

    # A keyring wraps keys (for example a backup's fresh data key) exactly as it encrypts.
    def wrap(self, data_key: bytes, *, context: Mapping[str, str]) -> str:
        """Encrypt a data key with the active version (the `KeyWrapper` protocol)."""
        return self.encrypt(data_key, context=context)

    def unwrap(self, wrapped: str, *, context: Mapping[str, str]) -> bytes:
        """Decrypt a data key wrapped by `wrap` (the `KeyWrapper` protocol)."""
        return self.decrypt(wrapped, context=context)

    def fingerprint(self) -> str:
        """`sha256:<hex>` over the active id, key ids and key material; safe to publish.

        A preimage-resistant digest of 256-bit random keys reveals nothing usable about
        them; it changes whenever a version is added, replaced or made active.
        """
        digest = hashlib.sha256(_FINGERPRINT_LABEL)
        digest.update(f"active {self.active.key_id}\n".encode("ascii"))
        for k in self.keys:
            digest.update(f"key {k.key_id}\n".encode("ascii"))
            digest.update(k.material)
        return "sha256:" + digest.hexdigest()

    def to_secret_data(self) -> dict[str, bytes]:
        """The Secret `data` storing this keyring: `keyring.json` plus `v<N>.key` entries."""
        return dump_key_index(
            index_entry=KEYRING_INDEX_ENTRY,
            format_tag=_KEYRING_FORMAT,
            active=self.active_version,
            keys=[
                StoredKey(
                    version=k.version, key_id=k.key_id, created=k.created, material=k.material
                )
                for k in self.keys
            ],
        )

    @classmethod
    def from_secret_data(cls, data: Mapping[str, bytes]) -> Keyring:
        """Load a keyring; InvalidKeyMaterial (never a new keyring) when anything is wrong."""
        active, stored = load_key_index(
            data,
            index_entry=KEYRING_INDEX_ENTRY,
            format_tag=_KEYRING_FORMAT,
            key_size=KEY_SIZE,
            what="tenant keyring",
        )
        for s in stored:
            if s.key_id != _key_id(s.version):
                raise InvalidKeyMaterial(
                    f"the tenant keyring lists version {s.version} with id {s.key_id!r}; tenant "
                    f"key ids are 'v<version>' ({_key_id(s.version)!r}): the Secret was edited"
                )
        return cls(
            keys=tuple(
                DataKey(version=s.version, created=s.created, material=s.material) for s in stored
            ),
            active_version=active,
        )


def _new_key(version: int, now: datetime) -> DataKey:
    return DataKey(
        version=version,
        created=require_aware(now, name="now"),
        material=AESGCM.generate_key(bit_length=256),
    )


def keyring_kek_context(*, tenant: str) -> dict[str, str]:
    """The context a tenant keyring is wrapped under: it opens only for that tenant."""
    return {"tenant": tenant, "purpose": "tenant-keyring"}


def wrap_keyring(keyring: Keyring, kek: KeyEncryptionKeys, *, tenant: str) -> str:
    """The whole keyring wrapped by the current KEK, for a copy kept outside the tenant."""
    payload = {
        "format": _WRAPPED_FORMAT,
        "data": {name: b64url_encode(value) for name, value in keyring.to_secret_data().items()},
    }
    plaintext = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return kek.wrap(plaintext, context=keyring_kek_context(tenant=tenant))


def unwrap_keyring(wrapped: str, kek: KeyEncryptionKeys, *, tenant: str) -> Keyring:
    """Open a copy made by `wrap_keyring` for the same tenant."""
    plaintext = kek.unwrap(wrapped, context=keyring_kek_context(tenant=tenant))
    # The plaintext is authenticated, so a parse failure means a bug or another format
    # version, not an attack; `from None` keeps the decoder's copy of it out of tracebacks.
    try:
        payload = json.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        payload = None
    if not isinstance(payload, dict) or payload.get("format") != _WRAPPED_FORMAT:
        raise MalformedEnvelope(
            f"the wrapped keyring is not in format {_WRAPPED_FORMAT!r}: upgrade the operator"
        )
    entries = payload.get("data")
    data: dict[str, bytes] = {}
    if isinstance(entries, dict):
        for name, value in entries.items():
            decoded = b64url_decode(value) if isinstance(value, str) else None
            if decoded is None:
                break
            data[str(name)] = decoded
        else:
            return Keyring.from_secret_data(data)
    raise MalformedEnvelope(f"the wrapped keyring's data is not in format {_WRAPPED_FORMAT!r}")

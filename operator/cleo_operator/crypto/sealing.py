"""Sealing: encrypting a secret value to the operator's public key, for GitOps repositories.

Why public-key sealing: platform teams commit CleoTenant specs to Git and sync them with
Argo CD or Flux, so the spec must carry secrets that only the operator can read, and anyone
with the public key (not the cluster) must be able to produce them. The construction is an
ECIES in the style of HPKE, from `cryptography` primitives only:

1. an ephemeral X25519 key pair per sealed value, exchanged with the recipient's key;
2. HKDF-SHA256 over the shared secret with an info string that binds the format version
   and both public keys, deriving a 256-bit wrapping key;
3. a fresh AES-256-GCM data key, encrypted under the wrapping key (associated data: the
   envelope's identity header and the ephemeral key), and the value encrypted under the
   data key (associated data: the whole envelope header).

The associated data covers the tenant, the Secret and the key the value is for, recorded in
the envelope header: a value sealed for tenant `a` and pasted into tenant `b` is refused with
WrongContext, so one tenant cannot obtain another's secret by copying ciphertext.

Sealing keys are versioned: `rotate` adds a new current key and keeps the old ones so values
sealed before the rotation still open; key ids are derived from the public key, so a value
sealed for another cluster's key is reported as UnknownKeyVersion rather than Tampered.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cleo_operator.crypto._codec import b64url_decode, b64url_encode, require_aware
from cleo_operator.crypto._layout import StoredKey, dump_key_index, load_key_index
from cleo_operator.crypto.envelope import (
    FORMAT_VERSION,
    KEY_SIZE,
    NONCE_SIZE,
    TAG_SIZE,
    Envelope,
    decrypt_envelope,
    encrypt_envelope,
    envelope_identity,
)
from cleo_operator.crypto.errors import (
    InvalidKeyMaterial,
    MalformedEnvelope,
    Tampered,
    UnknownKeyVersion,
)

__all__ = [
    "PUBLIC_KEY_TEXT_PREFIX",
    "SEALING_INDEX_ENTRY",
    "SealingKey",
    "SealingKeyring",
    "SealingPublicKey",
    "seal",
    "sealing_context",
    "unseal",
]

X25519_SIZE: Final = 32
PUBLIC_KEY_TEXT_PREFIX: Final = "cleo-seal-key:v1:"
SEALING_INDEX_ENTRY: Final = "sealing-keys.json"
"""Secret data entry of the sealing keyring's index (key material is in `v<N>.key`)."""
_SEALING_FORMAT: Final = "cleo-operator/sealing-keyring/v1"
_HKDF_LABEL: Final = f"cleo-operator seal v{FORMAT_VERSION} wrapping key".encode("ascii")
_KEY_ID_LABEL: Final = b"cleo-operator sealing key id"
# params of a sealed envelope: ephemeral public key, nonce and the wrapped data key.
_PARAMS_SIZE: Final = X25519_SIZE + NONCE_SIZE + KEY_SIZE + TAG_SIZE


def sealing_key_id(public_raw: bytes) -> str:
    """The key id of a sealing public key: derived from it, so equal ids mean equal keys."""
    return "x25519-" + hashlib.sha256(_KEY_ID_LABEL + public_raw).hexdigest()[:16]


def sealing_context(*, tenant: str, secret: str, key: str) -> dict[str, str]:
    """The associated-data context of a sealed value: which tenant, Secret and key it is for."""
    return {"tenant": tenant, "secret": secret, "key": key}


@dataclass(frozen=True)
class SealingPublicKey:
    """A sealing public key: what `cleo-operator seal` and GitOps users need."""

    raw: bytes
    """The 32-byte X25519 public key."""

    def __post_init__(self) -> None:
        if len(self.raw) != X25519_SIZE:
            raise ValueError(f"X25519 public keys are {X25519_SIZE} bytes")

    @property
    def key_id(self) -> str:
        """The id sealed envelopes record."""
        return sealing_key_id(self.raw)

    def to_pem(self) -> str:
        """SubjectPublicKeyInfo PEM, for tools that speak PEM."""
        return (
            X25519PublicKey.from_public_bytes(self.raw)
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii")
        )

    @classmethod
    def from_pem(cls, pem: str | bytes) -> SealingPublicKey:
        """Load a PEM public key; ValueError says when it is not an X25519 key."""
        data = pem.encode("ascii") if isinstance(pem, str) else pem
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError:
            raise ValueError("not a PEM public key") from None
        if not isinstance(key, X25519PublicKey):
            raise ValueError("the PEM public key is not an X25519 key (sealing uses X25519)")
        return cls(key.public_bytes_raw())

    def to_text(self) -> str:
        """Compact one-line form with the key id: `cleo-seal-key:v1:<id>:<base64url>`."""
        return f"{PUBLIC_KEY_TEXT_PREFIX}{self.key_id}:{b64url_encode(self.raw)}"

    @classmethod
    def from_text(cls, text: str) -> SealingPublicKey:
        """Parse `to_text` output; the id must match the key (catches copy-paste mix-ups)."""
        text = text.strip()
        if not text.startswith(PUBLIC_KEY_TEXT_PREFIX):
            raise ValueError(f"a sealing public key starts with {PUBLIC_KEY_TEXT_PREFIX!r}")
        key_id, _, encoded = text[len(PUBLIC_KEY_TEXT_PREFIX) :].partition(":")
        raw = b64url_decode(encoded)
        if raw is None or len(raw) != X25519_SIZE:
            raise ValueError("the sealing public key is not 32 bytes of base64url")
        public = cls(raw)
        if public.key_id != key_id:
            raise ValueError(
                f"the sealing public key's id {key_id!r} does not match its key "
                f"({public.key_id!r}): it was altered or pieced together; fetch it again"
            )
        return public


@dataclass(frozen=True)
class SealingKey:
    """One version of the operator's sealing private key."""

    version: int
    """Version number, from 1 up; the highest is current."""
    created: datetime
    """When it was generated (UTC)."""
    private_raw: bytes = field(repr=False)
    """The 32-byte X25519 private key; never in reprs."""

    def __post_init__(self) -> None:
        if len(self.private_raw) != X25519_SIZE:
            raise ValueError(f"X25519 private keys are {X25519_SIZE} bytes")

    @property
    def public_key(self) -> SealingPublicKey:
        """The matching public key."""
        private = X25519PrivateKey.from_private_bytes(self.private_raw)
        return SealingPublicKey(private.public_key().public_bytes_raw())

    @property
    def key_id(self) -> str:
        """The id sealed envelopes record."""
        return self.public_key.key_id


@dataclass(frozen=True)
class SealingKeyring:
    """The operator's sealing private keys, by version; immutable (`rotate` returns a new one).

    Create one with `SealingKeyring.generate(now)` exactly once per installation and store it
    with `to_secret_data`; losing it makes every sealed value in Git unreadable.
    """

    keys: tuple[SealingKey, ...]
    """All versions, oldest first; old ones stay so values sealed to them still open."""
    current_version: int
    """The version new values are sealed to (the one whose public key is published)."""

    def __post_init__(self) -> None:
        versions = [k.version for k in self.keys]
        if not versions or versions != sorted(set(versions)):
            raise ValueError("sealing keys must be a non-empty tuple in ascending version order")
        if self.current_version not in versions:
            raise ValueError(f"current version {self.current_version} is not in the keyring")

    def __repr__(self) -> str:
        versions = ", ".join(f"v{k.version}={k.key_id}" for k in self.keys)
        return f"SealingKeyring(current=v{self.current_version}, keys=[{versions}])"

    __str__ = __repr__

    @classmethod
    def generate(cls, now: datetime) -> SealingKeyring:
        """A new keyring with one fresh key (version 1). Only for a new installation."""
        return cls(keys=(_new_sealing_key(1, now),), current_version=1)

    def rotate(self, now: datetime) -> SealingKeyring:
        """A keyring with a fresh current key added; every old key is kept for unsealing."""
        version = self.keys[-1].version + 1
        return SealingKeyring(
            keys=(*self.keys, _new_sealing_key(version, now)), current_version=version
        )

    @property
    def current(self) -> SealingKey:
        """The current key."""
        return next(k for k in self.keys if k.version == self.current_version)

    @property
    def public_key(self) -> SealingPublicKey:
        """The current public key: what to publish for `cleo-operator seal`."""
        return self.current.public_key

    def key_for(self, key_id: str) -> SealingKey:
        """The private key with this id; UnknownKeyVersion when this keyring lacks it."""
        for k in self.keys:
            if k.key_id == key_id:
                return k
        known = ", ".join(k.key_id for k in self.keys)
        raise UnknownKeyVersion(
            f"the value was sealed to key {key_id}, which this operator does not hold "
            f"(it holds {known}): it was sealed with another cluster's public key, or the key "
            "was removed; seal it again with this operator's current public key",
            key_id=key_id,
        )

    def to_secret_data(self) -> dict[str, bytes]:
        """The Secret `data` that stores this keyring (index + one entry per key)."""
        return dump_key_index(
            index_entry=SEALING_INDEX_ENTRY,
            format_tag=_SEALING_FORMAT,
            active=self.current_version,
            keys=[
                StoredKey(
                    version=k.version, key_id=k.key_id, created=k.created, material=k.private_raw
                )
                for k in self.keys
            ],
        )

    @classmethod
    def from_secret_data(cls, data: Mapping[str, bytes]) -> SealingKeyring:
        """Load what `to_secret_data` wrote; InvalidKeyMaterial names what is wrong."""
        active, stored = load_key_index(
            data,
            index_entry=SEALING_INDEX_ENTRY,
            format_tag=_SEALING_FORMAT,
            key_size=X25519_SIZE,
            what="sealing keyring",
        )
        keys = tuple(
            SealingKey(version=s.version, created=s.created, private_raw=s.material) for s in stored
        )
        for stored_key, key in zip(stored, keys, strict=True):
            if stored_key.key_id != key.key_id:
                raise InvalidKeyMaterial(
                    f"the sealing keyring lists version {key.version} with id "
                    f"{stored_key.key_id} but its key has id {key.key_id}: the Secret was edited; "
                    "restore it from a backup"
                )
        return cls(keys=keys, current_version=active)


def _new_sealing_key(version: int, now: datetime) -> SealingKey:
    private = X25519PrivateKey.generate()
    return SealingKey(
        version=version,
        created=require_aware(now, name="now"),
        private_raw=private.private_bytes_raw(),
    )


def _wrapping_key(shared: bytes, *, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    # Both public keys go into the info so the derived key is bound to this exchange only.
    return HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_SIZE,
        salt=None,
        info=_HKDF_LABEL + ephemeral_public + recipient_public,
    ).derive(shared)


def seal(
    public_key: SealingPublicKey, *, tenant: str, secret: str, key: str, plaintext: bytes
) -> str:
    """Seal `plaintext` for one tenant's Secret key; returns the `cleo:v1:` text form."""
    context = sealing_context(tenant=tenant, secret=secret, key=key)
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes_raw()
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(public_key.raw))
    wrapping_key = _wrapping_key(
        shared, ephemeral_public=ephemeral_public, recipient_public=public_key.raw
    )
    data_key = AESGCM.generate_key(bit_length=256)
    wrap_nonce = os.urandom(NONCE_SIZE)
    # The identity header (kind, key id, context) is known before the params exist, so the
    # data key is bound to it and to the ephemeral key; the whole header then binds the rest.
    identity = envelope_identity(kind="sealed", key_id=public_key.key_id, context=context)
    wrapped_key = AESGCM(wrapping_key).encrypt(wrap_nonce, data_key, identity + ephemeral_public)
    envelope = encrypt_envelope(
        data_key,
        kind="sealed",
        key_id=public_key.key_id,
        context=context,
        plaintext=plaintext,
        params=ephemeral_public + wrap_nonce + wrapped_key,
    )
    return envelope.to_text()


def unseal(keyring: SealingKeyring, sealed: str, *, tenant: str, secret: str, key: str) -> bytes:
    """Open a sealed value for the tenant's Secret key it was sealed for.

    Raises MalformedEnvelope, WrongContext (sealed for another tenant/Secret/key),
    UnknownKeyVersion (sealed to a key this keyring lacks) or Tampered, in that order.
    """
    envelope = Envelope.from_text(sealed)
    envelope.check(kind="sealed", context=sealing_context(tenant=tenant, secret=secret, key=key))
    sealing_key = keyring.key_for(envelope.key_id)
    if len(envelope.params) != _PARAMS_SIZE:
        raise MalformedEnvelope(
            f"the sealed value's key block is {len(envelope.params)} bytes, expected "
            f"{_PARAMS_SIZE}: it was altered; seal it again"
        )
    ephemeral_public = envelope.params[:X25519_SIZE]
    wrap_nonce = envelope.params[X25519_SIZE : X25519_SIZE + NONCE_SIZE]
    wrapped_key = envelope.params[X25519_SIZE + NONCE_SIZE :]
    private = X25519PrivateKey.from_private_bytes(sealing_key.private_raw)
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
    except ValueError:
        # A low-order point gives an all-zero secret, which `cryptography` refuses.
        raise Tampered(
            "the sealed value's ephemeral key is invalid: it was altered; seal it again"
        ) from None
    wrapping_key = _wrapping_key(
        shared, ephemeral_public=ephemeral_public, recipient_public=sealing_key.public_key.raw
    )
    try:
        data_key = AESGCM(wrapping_key).decrypt(
            wrap_nonce, wrapped_key, envelope.identity_bytes() + ephemeral_public
        )
    except InvalidTag:
        raise Tampered(
            f"the sealed value (key {envelope.key_id}) failed authentication: it was altered "
            "after sealing; seal it again"
        ) from None
    return decrypt_envelope(envelope, data_key)

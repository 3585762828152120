"""Key-encryption keys (KEKs): versioned AES-256 keys that wrap other keys.

Why KEKs: a tenant keyring stored only in its own Secret is lost with the namespace and is
readable by anyone who can read Secrets there. Wrapping it (and per-backup data keys) with a
KEK that lives elsewhere, mounted from a KMS or a CSI secrets driver or kept in the
operator's own Secret, gives a second copy that is useless without the KEK.

Versions are plain integers; the newest is current. `wrap` always uses the current version
and records it (`v<N>`) in the envelope, `unwrap` uses whichever version the envelope names,
so a rotation (`rotate`, or a new file appearing in the mounted directory) never breaks old
wrapped keys. `needs_rewrap`/`rewrap` move them to the current version, after which old
versions can be retired.

The KEK directory layout and the Secret `data` layout are the same on purpose: one entry per
version named `v<N>` (or just `<N>`, as some KMS plugins write), holding the 32-byte key raw
or in base64. A KEK Secret mounted as a volume is therefore a valid KEK directory.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cleo_operator.crypto.envelope import KEY_SIZE, Envelope, decrypt_envelope, encrypt_envelope
from cleo_operator.crypto.errors import InvalidKeyMaterial, MalformedEnvelope, UnknownKeyVersion

__all__ = [
    "FileKEKProvider",
    "KEKProvider",
    "KeyEncryptionKeys",
    "kek_from_secret_data",
    "kek_to_secret_data",
]

_ENTRY_NAME: Final = re.compile(r"v?([1-9][0-9]{0,8})")
_BASE64_TEXT: Final = re.compile(rb"[A-Za-z0-9+/_-]+={0,2}")


def _key_id(version: int) -> str:
    return f"v{version}"


@dataclass(frozen=True)
class KeyEncryptionKeys:
    """KEK versions (version -> 32-byte key); the highest version is current. Immutable."""

    keys: tuple[tuple[int, bytes], ...] = field(repr=False)
    """(version, key) pairs in ascending version order; never in reprs."""

    def __post_init__(self) -> None:
        versions = [version for version, _ in self.keys]
        if not versions or versions != sorted(set(versions)) or versions[0] < 1:
            raise ValueError("KEK versions must be distinct integers >= 1, in ascending order")
        if any(len(key) != KEY_SIZE for _, key in self.keys):
            raise ValueError(f"KEKs are {KEY_SIZE}-byte AES-256 keys")

    def __repr__(self) -> str:
        versions = ", ".join(_key_id(v) for v in self.versions)
        return f"KeyEncryptionKeys(current={_key_id(self.current_version)}, versions=[{versions}])"

    __str__ = __repr__

    @classmethod
    def from_mapping(cls, keys: Mapping[int, bytes]) -> KeyEncryptionKeys:
        """Build from a version -> key mapping."""
        return cls(tuple(sorted((version, bytes(key)) for version, key in keys.items())))

    @classmethod
    def generate(cls) -> KeyEncryptionKeys:
        """A new set with one fresh random KEK (version 1)."""
        return cls(((1, AESGCM.generate_key(bit_length=256)),))

    @property
    def versions(self) -> tuple[int, ...]:
        """All versions, ascending."""
        return tuple(version for version, _ in self.keys)

    @property
    def current_version(self) -> int:
        """The version `wrap` uses."""
        return self.keys[-1][0]

    def rotate(self) -> KeyEncryptionKeys:
        """A set with a fresh random current version added; old versions are kept."""
        version = self.current_version + 1
        return KeyEncryptionKeys((*self.keys, (version, AESGCM.generate_key(bit_length=256))))

    def _key(self, key_id: str) -> bytes:
        for version, key in self.keys:
            if _key_id(version) == key_id:
                return key
        raise UnknownKeyVersion(
            f"the key was wrapped with KEK {key_id}, which is not loaded (loaded: "
            f"{', '.join(_key_id(v) for v in self.versions)}): mount or restore that KEK "
            "version; never delete a KEK version before `rewrap` moved everything off it",
            key_id=key_id,
        )

    def wrap(self, data_key: bytes, *, context: Mapping[str, str]) -> str:
        """Wrap a key (or any small secret) with the current KEK, bound to `context`."""
        envelope = encrypt_envelope(
            self.keys[-1][1],
            kind="kek",
            key_id=_key_id(self.current_version),
            context=context,
            plaintext=data_key,
        )
        return envelope.to_text()

    def unwrap(self, wrapped: str, *, context: Mapping[str, str]) -> bytes:
        """Unwrap with the version the envelope names.

        Raises MalformedEnvelope, WrongContext, UnknownKeyVersion or Tampered.
        """
        envelope = _parse_wrapped(wrapped)
        envelope.check(kind="kek", context=context)
        return decrypt_envelope(envelope, self._key(envelope.key_id))

    def needs_rewrap(self, wrapped: str) -> bool:
        """True when `wrapped` is not wrapped with the current version."""
        return _parse_wrapped(wrapped).key_id != _key_id(self.current_version)

    def rewrap(self, wrapped: str, *, context: Mapping[str, str]) -> str:
        """Unwrap with its version and wrap again with the current one (fresh nonce)."""
        return self.wrap(self.unwrap(wrapped, context=context), context=context)


def _parse_wrapped(wrapped: str) -> Envelope:
    envelope = Envelope.from_text(wrapped)
    if envelope.kind != "kek":
        raise MalformedEnvelope(
            f"expected a key wrapped by a key-encryption key, found an envelope of kind "
            f"{envelope.kind!r}: it was put in the wrong place"
        )
    return envelope


class KEKProvider(Protocol):
    """Where the KEKs come from (a mounted directory, a Secret read by the kube layer, ...)."""

    def load(self) -> KeyEncryptionKeys:
        """Read the current set of KEK versions; InvalidKeyMaterial when unusable."""
        ...


@dataclass(frozen=True)
class FileKEKProvider:
    """KEKs from a directory of files named by version (`v1`, `v2` or `1`, `2`, ...).

    For keys mounted from a KMS plugin or a CSI secrets driver, or a mounted KEK Secret.
    Hidden entries (Kubernetes' `..data` symlinks of projected volumes) are skipped; each
    `load` re-reads the directory so a rotation by the KMS is picked up without a restart.
    """

    path: Path
    """The directory holding one key file per version."""

    def load(self) -> KeyEncryptionKeys:
        """Read every version file; InvalidKeyMaterial names the file that is wrong."""
        if not self.path.is_dir():
            raise InvalidKeyMaterial(
                f"the KEK directory {self.path} does not exist or is not a directory: check "
                "the volume mount of the KEK provider"
            )
        entries: dict[str, bytes] = {}
        for child in sorted(self.path.iterdir()):
            if child.name.startswith("."):
                continue
            if not child.is_file():
                raise InvalidKeyMaterial(
                    f"{child} in the KEK directory is not a file: the directory must hold only "
                    "one key file per version"
                )
            entries[child.name] = child.read_bytes()
        return _parse_entries(entries, where=f"the KEK directory {self.path}", item="file")


def kek_from_secret_data(data: Mapping[str, bytes]) -> KeyEncryptionKeys:
    """KEKs from a Secret's decoded `data` (the layout `kek_to_secret_data` writes)."""
    return _parse_entries(data, where="the KEK Secret", item="data key")


def kek_to_secret_data(keks: KeyEncryptionKeys) -> dict[str, bytes]:
    """The Secret `data` for these KEKs: one raw 32-byte entry per version, `v<N>`."""
    return {_key_id(version): key for version, key in keks.keys}


def _parse_entries(entries: Mapping[str, bytes], *, where: str, item: str) -> KeyEncryptionKeys:
    keys: dict[int, bytes] = {}
    names: dict[int, str] = {}
    for name, content in entries.items():
        match = _ENTRY_NAME.fullmatch(name)
        if match is None:
            raise InvalidKeyMaterial(
                f"{item} {name!r} in {where} is not a KEK version: name each {item} after its "
                "version, like 'v1' or '1'"
            )
        version = int(match.group(1))
        if version in names:
            raise InvalidKeyMaterial(
                f"{where} holds version {version} twice ({names[version]!r} and {name!r}): keep one"
            )
        names[version] = name
        keys[version] = _decode_key(content, where=f"{item} {name!r} in {where}")
    if not keys:
        raise InvalidKeyMaterial(f"{where} holds no KEK: add one {item} per version, like 'v1'")
    return KeyEncryptionKeys.from_mapping(keys)


def _decode_key(content: bytes, *, where: str) -> bytes:
    # Exactly 32 bytes is a raw key; anything else must be base64 (standard or url-safe,
    # padding optional, surrounding whitespace ignored) of 32 bytes.
    if len(content) == KEY_SIZE:
        if _BASE64_TEXT.fullmatch(content) is not None:
            # 32 random bytes are all base64 characters with probability 2**-64; this is
            # base64 of a 24-byte (AES-192) key, which must not pass for an AES-256 key.
            raise InvalidKeyMaterial(
                f"{where} holds 32 base64 characters, the encoding of a 24-byte key; "
                f"KEKs are {KEY_SIZE}-byte keys (44 base64 characters)"
            )
        return bytes(content)
    text = content.strip()
    decoded: bytes | None = None
    if _BASE64_TEXT.fullmatch(text) is not None:
        standard = text.rstrip(b"=").replace(b"-", b"+").replace(b"_", b"/")
        try:
            decoded = base64.b64decode(standard + b"=" * (-len(standard) % 4), validate=True)
        except (binascii.Error, ValueError):
            decoded = None
    if decoded is None or len(decoded) != KEY_SIZE:
        raise InvalidKeyMaterial(
            f"{where} must hold a {KEY_SIZE}-byte key, raw or base64; it holds "
            f"{len(content)} bytes that are neither"
        )
    return decoded

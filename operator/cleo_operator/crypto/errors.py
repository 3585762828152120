"""The errors of the crypto layer, each with a machine `reason` and a message for people.

Why a hierarchy of our own instead of `cryptography.exceptions.InvalidTag`: the reconciler
turns these into Kubernetes conditions, so every failure needs a stable CamelCase `reason`
(`WrongContext`, `Tampered`, ...) and a message that says what was wrong and what to do.

AES-GCM alone cannot tell "opened with the wrong associated data" from "the bytes were
altered": both are one failed tag check. Envelopes therefore record the context they were
made for (tenant, Secret, key: names, not secrets) in their header, the header is checked
against the expected context *before* decryption (so a value copied to another tenant is
reported as `WrongContext`), and the header is covered by the associated data (so editing it
to match is reported as `Tampered`).

Messages and reprs never carry secret material: only key ids, versions, names and sizes.
"""

from __future__ import annotations

from cleo_operator.core.errors import CleoError

__all__ = [
    "CryptoError",
    "InvalidKeyMaterial",
    "MalformedEnvelope",
    "Tampered",
    "Truncated",
    "UnknownKeyVersion",
    "WrongContext",
]


class CryptoError(CleoError, retryable=False):
    """Base of every error the crypto layer raises on purpose (none is worth retrying)."""


class WrongContext(CryptoError):
    """The envelope was made for another tenant, Secret or key than the one opening it."""

    def __init__(self, message: str, *, mismatched: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.mismatched = mismatched
        """Names of the context fields that differ (for example `("tenant",)`)."""


class UnknownKeyVersion(CryptoError):
    """The envelope names a key id the keyring does not hold."""

    def __init__(self, message: str, *, key_id: str) -> None:
        super().__init__(message)
        self.key_id = key_id
        """The key id the envelope names (an id, never key bytes)."""


class Tampered(CryptoError):
    """Authentication failed: the bytes were altered, or opened with a different key."""


class Truncated(Tampered):
    """A stream ends before its final chunk: it was cut short (a subclass of `Tampered`)."""


class MalformedEnvelope(CryptoError):
    """The input is not an envelope of a format and version this code understands."""


class InvalidKeyMaterial(CryptoError):
    """Stored keys (Secret data, KEK files) are missing, of the wrong size or inconsistent."""

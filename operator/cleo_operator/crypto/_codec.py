"""Small encodings shared by the crypto modules: strict base64url, timestamps, key ids.

Strictness matters here. Python's base64 decoder accepts padding variants and non-zero
trailing bits, so two different texts can decode to the same bytes: a single changed
character at the end of an envelope would then go unnoticed. Every decoder here re-encodes
and compares, so exactly one text form is accepted for any byte string.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime

__all__ = [
    "KEY_ID_PATTERN",
    "b64url_decode",
    "b64url_encode",
    "check_key_id",
    "require_aware",
]

KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""Key ids: short, printable, safe in Secret data keys, annotations and messages."""

_B64URL_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(data: bytes) -> str:
    """Base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes | None:
    """Decode canonical unpadded base64url; None when `text` is not exactly that."""
    if _B64URL_ALPHABET.fullmatch(text) is None or len(text) % 4 == 1:
        return None
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    if b64url_encode(data) != text:
        # Non-zero trailing bits: another spelling of the same bytes.
        return None
    return data


def check_key_id(key_id: str) -> str:
    """Return `key_id` if it is a valid key id, else raise ValueError naming the rule."""
    if KEY_ID_PATTERN.fullmatch(key_id) is None:
        raise ValueError(
            f"invalid key id {key_id!r}: use 1 to 64 characters of letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return key_id


def require_aware(moment: datetime, *, name: str) -> datetime:
    """Check that `moment` carries a timezone; the keyrings store UTC."""
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (pass datetime.now(UTC))")
    return moment.astimezone(UTC)

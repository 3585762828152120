"""Assertions that secret material does not leak into text (reprs, messages, indexes)."""

from __future__ import annotations

import base64


def secret_spellings(secret: bytes) -> list[str]:
    """The ways key bytes could show up in text: hex, base64, base64url, bytes repr."""
    standard = base64.b64encode(secret).decode("ascii")
    urlsafe = base64.urlsafe_b64encode(secret).decode("ascii").rstrip("=")
    spellings = [
        secret.hex(),
        secret.hex()[:16],
        standard.rstrip("="),
        standard[:16],
        urlsafe,
        urlsafe[:16],
        repr(secret)[2:-1],
    ]
    return [s for s in spellings if len(s) >= 16]


def assert_no_secret(text: str, *secrets: bytes) -> None:
    """Fail when any spelling of any of `secrets` occurs in `text`."""
    for secret in secrets:
        assert len(secret) >= 16, "only meaningful for key-sized secrets"
        for spelling in secret_spellings(secret):
            assert spelling not in text, "secret material appears in the text"

"""How the tamper tests of the crypto formats damage what they protect."""

from __future__ import annotations

from collections.abc import Iterator

from hypothesis import strategies as st

positions = st.floats(min_value=0, max_value=1, exclude_max=True)
"""Where in a text or blob to tamper, as a fraction of its length."""

base64url_characters = st.sampled_from(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
)
"""A character that keeps a base64url text well-formed."""


def bit_flips(data: bytes) -> Iterator[bytes]:
    """Every copy of `data` with exactly one bit flipped."""
    for position in range(len(data)):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[position] ^= 1 << bit
            yield bytes(flipped)


def with_character(text: str, where: float, replacement: str) -> str | None:
    """`text` with the character at `where` (a fraction of its length) replaced; None when
    it already is `replacement` (nothing would change)."""
    position = int(where * len(text))
    if text[position] == replacement:
        return None
    return text[:position] + replacement + text[position + 1 :]

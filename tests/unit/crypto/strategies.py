"""Hypothesis strategies shared by the tamper tests of the crypto formats."""

from __future__ import annotations

from hypothesis import strategies as st

positions = st.floats(min_value=0, max_value=1, exclude_max=True)
"""Where in a text or blob to tamper, as a fraction of its length."""

base64url_characters = st.sampled_from(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
)
"""A character that keeps a base64url text well-formed."""

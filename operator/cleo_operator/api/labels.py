"""Kubernetes label keys and values, as the API's fields take them (selectors, peers).

Shared by the tenant's network peers and the label selectors of its autoscaling metrics, so
that a selector the API server accepts in one place is accepted in the other. Keys are
checked by pydantic only (see `schema.KeysMatch` for why not by CEL). A key's name part is
at most 63 characters, as the API server requires of every label key.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from cleo_operator.api.schema import KeysMatch, Matches

__all__ = ["LABEL_KEY_PATTERN", "LABEL_VALUE_PATTERN", "LabelValue", "Labels"]

LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
LabelValue = Annotated[
    str,
    Field(max_length=63),
    Matches(
        LABEL_VALUE_PATTERN,
        "a label value: up to 63 letters, digits, '-', '_' and '.', starting and ending "
        "with a letter or digit",
    ),
]
Labels = Annotated[
    dict[str, LabelValue],
    Field(max_length=16),
    KeysMatch(LABEL_KEY_PATTERN, "label keys such as app or example.com/tier", 317),
]

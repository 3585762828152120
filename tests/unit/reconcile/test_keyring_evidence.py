"""Whether a tenant provably had keys: only what the operator wrote in its status counts."""

from __future__ import annotations

from typing import Any

import pytest

from cleo_operator.reconcile.keys import recorded_key_version


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({"keyVersion": 1}, 1),
        ({"keyVersion": 7, "lastRotation": "2030-01-01T00:00:00Z"}, 7),
        ({}, None),
        ({"keyVersion": None}, None),
        ({"keyVersion": 0}, None),
        ({"keyVersion": -1}, None),
        ({"keyVersion": True}, None),
        ({"keyVersion": "1"}, None),
        ({"lastRotation": "2030-01-01T00:00:00Z"}, None),
    ],
)
def test_only_a_positive_key_version_is_evidence_of_keys(
    status: dict[str, Any], expected: int | None
) -> None:
    assert recorded_key_version(status) == expected

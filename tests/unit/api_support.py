"""Shared checks of the API model tests: a refused spec names the field that is wrong."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cleo_operator.api.base import SpecError


def assert_refused_naming(
    parse: Callable[[dict[str, Any]], object], body: dict[str, Any], field: str, message: str
) -> None:
    """`parse(body)` raises SpecError with an issue at `field` whose message has `message`."""
    with pytest.raises(SpecError) as caught:
        parse(body)
    issues = {issue.path: issue.message for issue in caught.value.issues}
    assert field in issues, str(caught.value)
    assert message in issues[field]

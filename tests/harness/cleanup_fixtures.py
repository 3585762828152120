"""pytest plugin: close what a test opened, after the test, whatever its outcome.

A `try: ... finally: thing.close()` in each test is one more place to forget the `finally`;
`close_after(thing)` registers it once and the fixture's teardown closes it, last opened
first closed. Other fixtures the test asks for before `close_after` are torn down after it,
so a fixture that drops what the closed thing was using sees it closed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar

import pytest


class Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


@pytest.fixture
def close_after() -> Iterator[Callable[[C], C]]:
    """`close_after(thing)` returns `thing` and closes it when the test ends."""
    with contextlib.ExitStack() as stack:

        def register(thing: C) -> C:
            stack.callback(thing.close)
            return thing

        yield register

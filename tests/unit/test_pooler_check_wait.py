"""The pooler check's wait for its socket (`data.pooler._wait`): a pure function of a file
descriptor and a deadline, tested on a local socket pair (no pooler needed)."""

from __future__ import annotations

import os
import socket
import time

from cleo_operator.data.pooler import _wait


def test_a_descriptor_above_selects_limit_is_waited_for() -> None:
    """A long-running operator holds many sockets (watches, sites, poolers): the check's
    connection may get a descriptor above 1024, which select() refuses."""
    left, right = socket.socketpair()
    high = os.dup2(left.fileno(), 1500)
    try:
        deadline = time.monotonic() + 0.2
        assert not _wait(high, deadline)  # nothing to read: the deadline passes
        assert time.monotonic() >= deadline
        right.sendall(b"x")
        assert _wait(high, time.monotonic() + 5)
        assert _wait(high, time.monotonic() + 5, write=True)
    finally:
        os.close(high)
        left.close()
        right.close()


def test_a_past_deadline_waits_not_at_all() -> None:
    left, right = socket.socketpair()
    with left, right:
        right.sendall(b"x")
        assert not _wait(left.fileno(), time.monotonic() - 1)

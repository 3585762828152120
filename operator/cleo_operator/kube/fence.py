"""The write fence: a replica that may no longer lead refuses to send a write.

Why a fence in the client rather than only stopping the handlers: a reconcile runs in a
worker thread and cannot be interrupted between two of its requests. When leadership ends
(kube/leader.py), a reconcile in flight would go on writing while another replica already
leads. Every mutating request of the `KubeClient` checks the fence first, so nothing the
reconcilers send can reach the API server once this replica's last renew is older than the
renew deadline, whatever the threads are doing.

The fence is a point in time on the local monotonic clock, not a flag another thread sets:
the elector thread may be late to notice (a busy process, a stalled request), the clock is
not. It opens until `last successful renew started + renew deadline`, which ends before any
other replica can see the lease expire (`lease duration` after it observed that renew).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from cleo_operator.kube.errors import KubeError

__all__ = ["NOT_LEADER", "WriteFence"]

NOT_LEADER = "NotLeader"
"""The reason of the KubeError a fenced write raises."""


class WriteFence:
    """Open until a deadline of `clock` (monotonic seconds); closed at first."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._until = float("-inf")

    def open_until(self, deadline: float) -> None:
        """Let writes through until `deadline` (never shortens an open fence)."""
        with self._lock:
            self._until = max(self._until, deadline)

    def close(self) -> None:
        """Refuse every write from now on (until opened again)."""
        with self._lock:
            self._until = float("-inf")

    @property
    def until(self) -> float:
        """The deadline writes are let through until; -inf when closed."""
        with self._lock:
            return self._until

    def is_open(self) -> bool:
        return self._clock() < self.until

    def check(self, what: str) -> None:
        """Raise KubeError (reason NotLeader) unless a write may go out now."""
        if not self.is_open():
            raise KubeError(
                status=0,
                reason=NOT_LEADER,
                message="this replica does not hold the leader lease: the write was not sent",
                what=what,
            )

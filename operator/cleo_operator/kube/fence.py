"""The write fence: a replica that may no longer lead refuses to send a write.

Why a fence in the client rather than only stopping the handlers: a reconcile runs in a
worker thread and cannot be interrupted between two of its requests. When leadership ends
(kube/leader.py), a reconcile in flight would go on writing while another replica already
leads. Every mutating request of the `KubeClient` checks the fence first, so nothing the
reconcilers send can reach the API server once this replica's last renew is older than the
renew deadline, whatever the threads are doing.

The fence is a point in time on the local clock, not a flag another thread sets: the
elector thread may be late to notice (a busy process, a stalled request), the clock is
not. It opens until `last successful renew started + renew deadline`, which ends before any
other replica can see the lease expire (`lease duration` after it observed that renew).

The clock is `boottime`: monotonic, and unlike `time.monotonic` on Linux it goes on while
the machine is suspended (a paused VM, a laptop's lid), so a fence whose deadline passed
during a suspend is closed when the process wakes up, as the other replicas' view of the
lease demands.

The fence bounds when a write starts and, through the client's timeout (kube/client.py),
how long it may take; a write already on the wire when the fence closes may still land
within that timeout, which the margin `lease duration - renew deadline` absorbs. Once
sealed (the lease released or lost), it never opens again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from cleo_operator.kube.errors import KubeError

__all__ = ["NOT_LEADER", "WriteFence", "boottime"]

NOT_LEADER = "NotLeader"
"""The reason of the KubeError a fenced write raises."""


def boottime() -> float:
    """Seconds of a clock that never goes back and counts a suspend (CLOCK_BOOTTIME where
    the platform has it, Linux; `time.monotonic` elsewhere)."""
    clock_id = getattr(time, "CLOCK_BOOTTIME", None)
    if clock_id is None:
        return time.monotonic()
    return time.clock_gettime(clock_id)


class WriteFence:
    """Open until a deadline of `clock` (seconds); closed at first."""

    def __init__(self, clock: Callable[[], float] = boottime) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._until = float("-inf")
        self._sealed = False

    def open_until(self, deadline: float) -> None:
        """Let writes through until `deadline` (never shortens an open fence; nothing once
        sealed)."""
        with self._lock:
            if not self._sealed:
                self._until = max(self._until, deadline)

    def close(self) -> None:
        """Refuse every write from now on (until opened again)."""
        with self._lock:
            self._until = float("-inf")

    def seal(self) -> None:
        """Refuse every write from now on, for good: `open_until` does nothing any more (a
        renew that was still in flight when the lease was released or lost)."""
        with self._lock:
            self._until = float("-inf")
            self._sealed = True

    @property
    def sealed(self) -> bool:
        with self._lock:
            return self._sealed

    @property
    def until(self) -> float:
        """The deadline writes are let through until; -inf when closed."""
        with self._lock:
            return self._until

    def is_open(self) -> bool:
        return self._clock() < self.until

    def check(self, what: str) -> float:
        """Raise KubeError (reason NotLeader) unless a write may go out now; the seconds
        it has until the fence closes (its timeout's bound)."""
        left = self.until - self._clock()
        if not left > 0:
            raise KubeError(
                status=0,
                reason=NOT_LEADER,
                message="this replica does not hold the leader lease: the write was not sent",
                what=what,
            )
        return left

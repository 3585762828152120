"""Per-site thread lanes: a PostgreSQL site that is down must not hold a reconcile.

Database work never runs in a reconcile's worker thread: it runs in the lane of its site
(a small thread pool, as wide as the site's admin pool), and the reconcile waits for it
only so long. Sites share no lane, so a site whose operations hang fills its own lane
and never delays an operation on another site.

Once a site has not answered in time it is remembered as slow, and later waits on it
last a moment instead of the whole budget, until one of its operations answers again: a
dead site holding many tenants then costs the shared worker threads next to nothing.

Knows nothing of PostgreSQL or Kubernetes: it runs callables, so it is unit-tested alone.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import logging
import threading
import time
from collections.abc import Callable
from typing import Final, TypeVar

from cleo_operator.core.threads import executors_ended
from cleo_operator.data.errors import SiteUnavailable

log = logging.getLogger(__name__)

_T = TypeVar("_T")

SLOW_SITE_WAIT_SECONDS: Final = 0.05
"""How long a wait on a site known slow lasts: its operations either fail fast now (its
circuit breaker is open) or hang, so they get a moment, not the whole budget."""

MIN_LANE_WIDTH: Final = 2
"""Threads of the narrowest lane: one hung operation leaves room for another tenant."""


class SiteLanes:
    """The lanes of every site of one operator process; thread-safe."""

    def __init__(self, *, wait_seconds: float) -> None:
        self._wait_seconds = wait_seconds  # only for the log line: the budget a wait had
        self._lock = threading.Lock()
        self._lanes: dict[str, concurrent.futures.ThreadPoolExecutor] = {}
        self._slow: set[str] = set()
        self._closed = False
        self._stopped: list[concurrent.futures.ThreadPoolExecutor] = []

    def submit(
        self, site: str, width: int, call: Callable[[], _T]
    ) -> concurrent.futures.Future[_T]:
        """Run `call` in the lane of `site` (made `width` threads wide, at least two).

        Raises `SiteUnavailable` once the lanes are closed (the operator shutting down).
        `call` runs in a copy of the caller's context: its SQL spans are children of the
        reconcile's span, and its log lines name the reconcile's object.
        """
        with self._lock:
            if self._closed:
                raise SiteUnavailable("the operator is shutting down.", site=site)
            lane = self._lanes.get(site)
            if lane is None:
                lane = concurrent.futures.ThreadPoolExecutor(
                    max_workers=max(MIN_LANE_WIDTH, width), thread_name_prefix=f"db-{site}"
                )
                self._lanes[site] = lane
        return lane.submit(contextvars.copy_context().run, call)

    def wait(self, site: str, future: concurrent.futures.Future[_T], deadline: float) -> bool:
        """Wait for `future` until `deadline` (monotonic), or only a moment if `site` is slow.

        False when it is not done; the site is then remembered as slow.
        """
        with self._lock:
            slow = site in self._slow
        timeout = SLOW_SITE_WAIT_SECONDS if slow else max(0.0, deadline - time.monotonic())
        done, _ = concurrent.futures.wait([future], timeout=timeout)
        if done:
            return True
        with self._lock:
            if site not in self._slow:
                log.warning(
                    "site %s has not answered within %.1fs; reconciles stop waiting for it "
                    "until it does",
                    site,
                    self._wait_seconds,
                )
            self._slow.add(site)
        return False

    def answered(self, site: str) -> None:
        """`site` answered (with a result or a refusal): wait for it in full again."""
        with self._lock:
            if site in self._slow:
                log.info("site %s answers again", site)
            self._slow.discard(site)

    def is_slow(self, site: str) -> bool:
        """Whether waits on `site` last only a moment (it has not answered in time)."""
        with self._lock:
            return site in self._slow

    def close(self) -> None:
        """Stop every lane; running operations are left to end (see `ended`), queued ones
        cancelled."""
        with self._lock:
            self._closed = True
            lanes, self._lanes = list(self._lanes.values()), {}
            self._stopped.extend(lanes)
        for lane in lanes:
            lane.shutdown(wait=False, cancel_futures=True)

    def ended(self, timeout: float) -> bool:
        """After `close`: wait until no operation runs in any lane any more, `timeout`
        seconds at most; False when some still run (the operator's graceful stop)."""
        with self._lock:
            lanes = list(self._stopped) + list(self._lanes.values())
        return executors_ended(lanes, timeout)

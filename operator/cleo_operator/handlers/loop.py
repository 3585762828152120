"""One level-based loop per object, woken by events, run in a bounded thread pool.

Why a daemon per object rather than Kopf's create/update handlers: those are edge-triggered
on spec diffs and do not fire when a child is edited or deleted by hand (Kopf issue #715).
Here every CleoTenant has a small async task that runs the reconciler whenever it is woken
(its spec changed, one of its children changed) and at least every resync period. Wake-ups
that arrive while a reconcile runs coalesce into one more run. The reconcilers are plain
synchronous code (the Kubernetes client and psycopg are synchronous) and run in a thread
pool whose size bounds the load on the API server and the databases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from cleo_operator.kube.client import KubeError
from cleo_operator.observability.metrics import RECONCILE_ERRORS, timed_reconcile

log = logging.getLogger(__name__)


class Outcome(Protocol):
    """What a reconcile returns: at least when it wants to be called again."""

    @property
    def requeue_after(self) -> float | None: ...


@dataclass
class Backoff:
    """Exponential backoff for failing reconciles: 1, 2, 4 ... up to `limit` seconds."""

    limit: float = 60.0
    current: float = 0.0

    def failed(self) -> float:
        self.current = min(self.limit, max(1.0, self.current * 2))
        return self.current

    def succeeded(self) -> None:
        self.current = 0.0


class ReconcileLoops:
    """The wake-up events and the thread pool shared by all loops of one kind."""

    def __init__(self, *, kind: str, executor: ThreadPoolExecutor, resync_seconds: float) -> None:
        self.kind = kind
        self.executor = executor
        self.resync_seconds = resync_seconds
        self._wake: dict[str, asyncio.Event] = {}

    def __len__(self) -> int:
        return len(self._wake)

    def wake(self, key: str) -> None:
        """Ask the loop of `key` to reconcile soon; a no-op when it has no loop (yet)."""
        event = self._wake.get(key)
        if event is not None:
            event.set()

    async def run(self, key: str, reconcile: Callable[[], Outcome]) -> None:
        """Run until cancelled: reconcile, then wait for a wake-up, a requeue or the resync."""
        event = self._wake.setdefault(key, asyncio.Event())
        backoff = Backoff()
        loop = asyncio.get_running_loop()
        try:
            while True:
                event.clear()
                delay = await self._once(key, loop, reconcile, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout=delay)
        finally:
            if self._wake.get(key) is event:
                del self._wake[key]

    async def _once(
        self,
        key: str,
        loop: asyncio.AbstractEventLoop,
        reconcile: Callable[[], Outcome],
        backoff: Backoff,
    ) -> float:
        def timed() -> Outcome:
            with timed_reconcile(self.kind):
                return reconcile()

        try:
            outcome = await loop.run_in_executor(self.executor, timed)
        except KubeError as exc:
            RECONCILE_ERRORS.labels(kind=self.kind, reason=exc.reason or str(exc.status)).inc()
            if exc.conflict:
                # Someone wrote between our read and our write: read again right away.
                log.info("%s %s: conflict, retrying soon", self.kind, key)
                return 0.5
            delay = backoff.failed()
            log.warning("%s %s: %s (retrying in %.0fs)", self.kind, key, exc, delay)
            return delay
        except Exception as exc:
            RECONCILE_ERRORS.labels(kind=self.kind, reason=type(exc).__name__).inc()
            delay = backoff.failed()
            log.exception("%s %s: reconcile failed (retrying in %.0fs)", self.kind, key, delay)
            return delay
        backoff.succeeded()
        return outcome.requeue_after or self.resync_seconds

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
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from opentelemetry import context as otel_context

from cleo_operator.core.errors import CleoError
from cleo_operator.kube.client import KubeError
from cleo_operator.observability.logs import logging_object
from cleo_operator.observability.metrics import RECONCILE_ERRORS, timed_reconcile
from cleo_operator.observability.tracing import reconcile_span

log = logging.getLogger(__name__)


class Outcome(Protocol):
    """What a reconcile returns: at least when it wants to be called again."""

    @property
    def requeue_after(self) -> float | None: ...


@dataclass
class Backoff:
    """Exponential backoff with full jitter for a loop whose reconciles fail in a row.

    The n-th failure waits a uniformly random time in ``[floor, min(limit, base * 2**(n-1))]``
    (AWS's "full jitter"). Why random and not 1, 2, 4 ... seconds: after an API server or a
    database outage every tenant's loop fails at the same moment; with fixed steps they all
    come back at the same moments too, and each wave is the outage's load again. Spread over
    the window, the retries arrive as a trickle.
    """

    limit: float = 60.0
    base: float = 1.0
    floor: float = 0.1
    failures: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def ceiling(self) -> float:
        """The longest wait the next failure may get."""
        exponent = min(max(0, self.failures - 1), 32)
        return min(self.limit, self.base * 2.0**exponent)

    def failed(self) -> float:
        self.failures += 1
        return max(self.floor, self.rng.uniform(0.0, self.ceiling()))

    def succeeded(self) -> None:
        self.failures = 0

    def conflict(self) -> float:
        """Someone wrote between our read and our write: read again soon (0.1 to 1 s)."""
        return self.rng.uniform(self.floor, 1.0)

    def resync(self, period: float) -> float:
        """The next periodic reconcile: 80 to 100 % of `period`, so that loops started
        together (an operator restart) do not all resync in the same second; never later
        than `period`, which is the promise ("at least every resync period")."""
        return period * self.rng.uniform(0.8, 1.0)


TraceParent = Callable[[str], otel_context.Context | None]
"""For a loop's key, the context its reconcile span starts under (None: a trace's root)."""


class ReconcileLoops:
    """The wake-up events and the thread pool shared by all loops of one kind.

    `trace_parent`: asked in the worker thread before each reconcile span starts (the
    CleoBackups': their tenant's creation trace, `observability.creation_traces`); what it
    raises is logged at DEBUG and the span is a root, as without it. It only reads."""

    def __init__(
        self,
        *,
        kind: str,
        executor: ThreadPoolExecutor,
        resync_seconds: float,
        trace_parent: TraceParent | None = None,
    ) -> None:
        self.kind = kind
        self.executor = executor
        self.resync_seconds = resync_seconds
        self.trace_parent = trace_parent
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
        namespace, _, name = key.rpartition("/")
        # Every line logged about this reconcile names its object: here (this task) and in
        # the worker thread (which does not inherit the task's context).
        with logging_object(self.kind, name, namespace or None):
            return await self._reconcile_once(key, loop, reconcile, backoff)

    async def _reconcile_once(
        self,
        key: str,
        loop: asyncio.AbstractEventLoop,
        reconcile: Callable[[], Outcome],
        backoff: Backoff,
    ) -> float:
        namespace, _, name = key.rpartition("/")

        def timed() -> Outcome:
            # The span outside the timing: the duration's exemplar names the span's trace.
            with logging_object(self.kind, name, namespace or None):
                parent = self._parent(key)
                with (
                    reconcile_span(self.kind, name, namespace or None, parent=parent) as record,
                    timed_reconcile(self.kind),
                ):
                    try:
                        return reconcile()
                    except CleoError as exc:  # KubeError too: retryable when transient
                        record.outcome = "retry" if exc.retryable else "error"
                        raise

        try:
            outcome = await loop.run_in_executor(self.executor, timed)
        except KubeError as exc:
            RECONCILE_ERRORS.labels(kind=self.kind, reason=exc.reason or str(exc.status)).inc()
            if exc.conflict:
                # Someone wrote between our read and our write: read again right away.
                log.info("%s %s: conflict, retrying soon", self.kind, key)
                return backoff.conflict()
            delay = backoff.failed()
            log.warning("%s %s: %s (retrying in %.1fs)", self.kind, key, exc, delay)
            return delay
        except Exception as exc:
            RECONCILE_ERRORS.labels(kind=self.kind, reason=type(exc).__name__).inc()
            delay = backoff.failed()
            log.exception("%s %s: reconcile failed (retrying in %.1fs)", self.kind, key, delay)
            return delay
        backoff.succeeded()
        return outcome.requeue_after or backoff.resync(self.resync_seconds)

    def _parent(self, key: str) -> otel_context.Context | None:
        if self.trace_parent is None:
            return None
        try:
            return self.trace_parent(key)
        except Exception as exc:  # the reconcile meets the same trouble and reports it
            log.debug("%s %s: no parent trace (%s)", self.kind, key, type(exc).__name__)
            return None

"""The trace of a tenant's creation, kept in memory so its first backup joins it.

A tenant's creation and its first backup are reconciles of two objects (the CleoTenant,
then a CleoBackup in the tenant's namespace), each with a span of its own. So that one
trace shows both, this process remembers, per tenant uid, the span context of the tenant's
creation: the reconcile span of the first reconcile that found the tenant not yet Ready
(`CreationTraces.begin`, called by the tenant reconciler once the namespace is the
tenant's). A CleoBackup reconcile of that tenant, while it is known, starts its reconcile
span as a child of it (`CreationTraces.parent`), so the Job's ``TRACEPARENT`` and the
runner's spans land in the creation's trace too.

The memory is forgotten when the tenant turns Ready (`forget`), when it is deleted
(`forget_name`), and after `ttl_seconds` (15 minutes) in any case; it holds at most
`max_entries` tenants (the oldest go first). It is never persisted and no write depends on
it: a reconcile with or without it writes the same objects (the backup runner's
``TRACEPARENT`` is kept as it is once written, `render.backup.with_kept_traceparent`).

Who joins which trace: the map is keyed by tenant uid, and the entry also holds the
tenant's namespace. A caller asks with the uid of the tenant it resolved and the namespace
its object lives in; both must match, so a CleoBackup joins only the creation trace of the
tenant it belongs to (as the backup reconciler resolves it: the tenant its spec names,
whose namespace is the backup's), never another tenant's.

When tracing is off (or the creation's span is not sampled) nothing is ever remembered,
and `parent` answers None without work.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext

__all__ = ["CREATION_TRACE_SECONDS", "MAX_CREATION_TRACES", "CreationTraces"]

CREATION_TRACE_SECONDS: Final = 15 * 60.0
"""How long a tenant's creation trace is joined at most (a creation that has not turned
Ready by then is stuck; later backups start traces of their own)."""

MAX_CREATION_TRACES: Final = 1024
"""Tenants remembered at most; beyond it the oldest are forgotten first."""


@dataclass(frozen=True)
class _Creation:
    name: str
    namespace: str
    span_context: SpanContext
    expires: float


class CreationTraces:
    """Tenant uid -> the span context of its creation's reconcile; thread-safe, bounded."""

    def __init__(
        self,
        *,
        ttl_seconds: float = CREATION_TRACE_SECONDS,
        max_entries: int = MAX_CREATION_TRACES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Creation] = OrderedDict()

    def count(self) -> int:
        """How many tenants' creations are remembered now (not `__len__`: an empty map is
        still a map, never falsy)."""
        with self._lock:
            self._expire(self._clock())
            return len(self._entries)

    def _expire(self, now: float) -> None:
        # Oldest first (insertion order, all with the same ttl): stop at the first live one.
        while self._entries:
            uid, entry = next(iter(self._entries.items()))
            if entry.expires > now:
                return
            del self._entries[uid]

    def begin(self, uid: str, *, name: str, namespace: str) -> None:
        """Tenant `uid` (named `name`, in `namespace`) is being created: remember the current
        span's context, unless one is known already (the first reconcile's is kept). Nothing
        when no span is recording or it is not sampled (tracing off)."""
        current = trace.get_current_span()
        span_context = current.get_span_context()
        if not current.is_recording() or not span_context.trace_flags.sampled:
            return
        with self._lock:
            now = self._clock()
            self._expire(now)
            if uid in self._entries:
                return
            self._entries[uid] = _Creation(
                name=name,
                namespace=namespace,
                span_context=span_context,
                expires=now + self.ttl_seconds,
            )
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def forget(self, uid: str) -> None:
        """Tenant `uid` is Ready (or gone): its creation is over."""
        with self._lock:
            self._entries.pop(uid, None)

    def forget_name(self, name: str) -> None:
        """Tenant `name` is deleted (its uid may be unknown by then)."""
        with self._lock:
            for uid in [u for u, e in self._entries.items() if e.name == name]:
                del self._entries[uid]

    def watching(self, namespace: str) -> bool:
        """Whether a tenant of `namespace` is being created (cheap: a caller skips the reads
        that resolve its object's tenant when not)."""
        with self._lock:
            if not self._entries:
                return False
            self._expire(self._clock())
            return any(e.namespace == namespace for e in self._entries.values())

    def parent(self, uid: str, *, namespace: str) -> otel_context.Context | None:
        """The context to start a span of tenant `uid`'s object in `namespace` under: the
        tenant's creation, while it is known and the tenant's namespace is `namespace`."""
        with self._lock:
            self._expire(self._clock())
            entry = self._entries.get(uid)
        if entry is None or entry.namespace != namespace:
            return None
        return trace.set_span_in_context(NonRecordingSpan(entry.span_context))

"""Tracing into memory for tests: the operator's own set-up (observability/tracing.py) with
an in-memory exporter instead of OTLP, so a test reads exactly what would have been sent
(after the sanitizing processor)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cleo_operator.observability.tracing import (
    configure_tracing,
    flush_tracing,
    shutdown_tracing,
)


@dataclass
class Spans:
    exporter: InMemorySpanExporter

    def finished(self) -> Sequence[ReadableSpan]:
        """Every span ended so far (waits for the batch processor to hand them over)."""
        flush_tracing()
        return self.exporter.get_finished_spans()

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.finished() if s.name == name]

    def children_of(self, parent: ReadableSpan) -> list[ReadableSpan]:
        assert parent.context is not None
        return [
            s
            for s in self.finished()
            if s.parent is not None and s.parent.span_id == parent.context.span_id
        ]

    def texts(self) -> list[str]:
        """Every text of every span: names, attribute and event values, status, resource."""
        found: list[str] = []
        for s in self.finished():
            found.append(s.name)
            found.extend(str(v) for v in (s.attributes or {}).values())
            for event in s.events:
                found.append(event.name)
                found.extend(str(v) for v in (event.attributes or {}).values())
            found.append(s.status.description or "")
            found.extend(str(v) for v in s.resource.attributes.values())
        return found


@contextmanager
def traced(
    environ: dict[str, str] | None = None, *, instrument_sql: bool = False
) -> Iterator[Spans]:
    """Tracing on, into memory, for the block; off again after it."""
    exporter = InMemorySpanExporter()
    configure_tracing(
        environ or {}, identity="test-replica", exporter=exporter, instrument_sql=instrument_sql
    )
    try:
        yield Spans(exporter)
    finally:
        shutdown_tracing()

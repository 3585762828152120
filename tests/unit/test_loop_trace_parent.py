"""The reconcile loop's `trace_parent` (handlers/loop.py): the reconcile span starts under the
context it gives (a CleoBackup's under its tenant's creation), and a lookup that fails
leaves the span a root and the reconcile running as without it."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from opentelemetry import context as otel_context

from cleo_operator.handlers.loop import Backoff, ReconcileLoops, TraceParent
from cleo_operator.observability.tracing import span
from tests.harness.tracing import traced


@dataclass
class Done:
    requeue_after: float | None = 60.0


def run_once(trace_parent: TraceParent | None, ran: list[str]) -> None:
    with ThreadPoolExecutor(max_workers=1) as executor:
        loops = ReconcileLoops(
            kind="CleoBackup",
            executor=executor,
            resync_seconds=60.0,
            trace_parent=trace_parent,
        )

        def reconcile() -> Done:
            ran.append("reconciled")
            return Done()

        async def once() -> float:
            loop = asyncio.get_running_loop()
            return await loops._once("cleo-acme/first", loop, reconcile, Backoff())

        assert asyncio.run(once()) == 60.0


def test_the_reconcile_span_starts_under_the_given_parent() -> None:
    asked: list[str] = []
    ran: list[str] = []
    with traced() as spans:
        with span("reconcile CleoTenant") as creation:
            kept = otel_context.get_current()

        def parent(key: str) -> otel_context.Context | None:
            asked.append(key)
            return kept

        run_once(parent, ran)
        (backup,) = spans.named("reconcile CleoBackup")
    assert asked == ["cleo-acme/first"]
    assert ran == ["reconciled"]
    assert backup.parent is not None
    assert backup.parent.span_id == creation.get_span_context().span_id
    assert backup.context is not None
    assert backup.context.trace_id == creation.get_span_context().trace_id


def test_a_failing_lookup_leaves_a_root_span_and_the_reconcile_runs() -> None:
    ran: list[str] = []

    def broken(key: str) -> otel_context.Context | None:
        raise RuntimeError(f"no tenant for {key}")

    with traced() as spans:
        run_once(broken, ran)
        (backup,) = spans.named("reconcile CleoBackup")
    assert ran == ["reconciled"]
    assert backup.parent is None
    assert dict(backup.attributes or {})["cleo.outcome"] == "ok"

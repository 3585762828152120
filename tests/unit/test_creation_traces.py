"""The in-memory map of tenants' creation traces (observability/creation_traces.py): what it
keeps, for how long, how many, and who may join a kept trace."""

from __future__ import annotations

import pytest

from cleo_operator.observability.creation_traces import CreationTraces
from cleo_operator.observability.tracing import reconcile_span, span
from tests.harness.tracing import traced


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_backup_reconcile_is_a_child_of_its_tenants_creation() -> None:
    creations = CreationTraces()
    with traced() as spans:
        with reconcile_span("CleoTenant", "acme") as first:
            creations.begin("uid-acme", name="acme", namespace="cleo-acme")
        with reconcile_span("CleoTenant", "acme"):  # a later round: the first is kept
            creations.begin("uid-acme", name="acme", namespace="cleo-acme")
        parent = creations.parent("uid-acme", namespace="cleo-acme")
        assert parent is not None
        with reconcile_span("CleoBackup", "first", "cleo-acme", parent=parent):
            pass
        (backup,) = spans.named("reconcile CleoBackup")
    created = first.span.get_span_context()
    assert backup.parent is not None
    assert backup.parent.span_id == created.span_id
    assert backup.context is not None
    assert backup.context.trace_id == created.trace_id


@pytest.mark.security
def test_only_the_tenants_own_uid_and_namespace_join() -> None:
    creations = CreationTraces()
    with traced(), span("reconcile CleoTenant"):
        creations.begin("uid-a", name="a", namespace="cleo-a")
    assert creations.watching("cleo-a")
    assert not creations.watching("cleo-b")
    assert creations.parent("uid-a", namespace="cleo-a") is not None
    # Another tenant's uid, or this uid asked for from another namespace: nothing.
    assert creations.parent("uid-b", namespace="cleo-a") is None
    assert creations.parent("uid-a", namespace="cleo-b") is None


def test_it_expires_after_the_bound() -> None:
    clock = Clock()
    creations = CreationTraces(ttl_seconds=900.0, clock=clock)
    with traced(), span("reconcile CleoTenant"):
        creations.begin("uid-a", name="a", namespace="cleo-a")
    clock.now += 899.0
    assert creations.parent("uid-a", namespace="cleo-a") is not None
    clock.now += 1.0
    assert creations.parent("uid-a", namespace="cleo-a") is None
    assert not creations.watching("cleo-a")
    assert creations.count() == 0


def test_it_holds_at_most_max_entries_the_oldest_go_first() -> None:
    clock = Clock()
    creations = CreationTraces(max_entries=3, clock=clock)
    with traced(), span("reconcile CleoTenant"):
        for i in range(5):
            clock.now += 1.0
            creations.begin(f"uid-{i}", name=f"t{i}", namespace=f"cleo-t{i}")
    assert creations.count() == 3
    assert [creations.parent(f"uid-{i}", namespace=f"cleo-t{i}") is not None for i in range(5)] == [
        False,
        False,
        True,
        True,
        True,
    ]


def test_ready_or_deleted_tenants_are_forgotten() -> None:
    creations = CreationTraces()
    with traced(), span("reconcile CleoTenant"):
        creations.begin("uid-a", name="a", namespace="cleo-a")
        creations.begin("uid-b", name="b", namespace="cleo-b")
    creations.forget("uid-a")  # turned Ready
    assert creations.parent("uid-a", namespace="cleo-a") is None
    creations.forget_name("b")  # deleted
    assert creations.parent("uid-b", namespace="cleo-b") is None
    assert creations.count() == 0


def test_nothing_is_kept_when_tracing_is_off_or_no_span_records() -> None:
    creations = CreationTraces()
    with span("reconcile CleoTenant"):  # tracing off: the invalid span
        creations.begin("uid-a", name="a", namespace="cleo-a")
    with traced():
        creations.begin("uid-b", name="b", namespace="cleo-b")  # outside any span
    with traced({"OTEL_TRACES_SAMPLER": "always_off"}), span("reconcile CleoTenant"):
        creations.begin("uid-c", name="c", namespace="cleo-c")  # not sampled
    assert creations.count() == 0
    assert not creations.watching("cleo-a")

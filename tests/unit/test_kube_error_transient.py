"""Which API errors are worth the same request again: a server error is, but not the one
server-side apply answers for a field the server's schema lacks (a 500 that never heals:
retried, it aborted the whole tenant reconcile every time, where a refusal is recorded on
that one object and the rest is applied)."""

from __future__ import annotations

import pytest

from cleo_operator.kube.client import KubeError

SCHEMA_MISMATCH = (
    "failed to create typed patch object (autoscaling/v2, Kind=HorizontalPodAutoscaler): "
    ".spec.behavior.scaleDown.tolerance: field not declared in schema"
)


def test_a_field_the_servers_schema_lacks_is_not_transient() -> None:
    error = KubeError(status=500, reason="InternalError", message=SCHEMA_MISMATCH, what="apply")
    assert not error.transient
    assert not error.retryable


@pytest.mark.parametrize(
    ("status", "message"),
    [(500, "etcdserver: request timed out"), (503, "unavailable"), (409, "conflict"), (0, "")],
)
def test_other_server_errors_stay_transient(status: int, message: str) -> None:
    assert KubeError(status=status, reason="X", message=message, what="apply").transient

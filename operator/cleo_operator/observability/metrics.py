"""Prometheus metrics of the operator.

Labels never carry secret material; tenant names are fine (they are not secret and
platform teams alert per tenant). Kopf exports no metrics of its own, so everything
a dashboard needs is defined here, in one place, and the Grafana dashboard and the
alert rules are checked against these names.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from cleo_operator import __version__
from cleo_operator.observability.tracing import current_ids

BUILD_INFO = Gauge(
    "cleo_operator_build_info",
    "Always 1; the label says which version of the operator runs.",
    ["version"],
)
BUILD_INFO.labels(version=__version__).set(1)

RECONCILES = Counter(
    "cleo_operator_reconciles_total",
    "Reconciles run, by kind and result (ok, error, invalid).",
    ["kind", "result"],
)
RECONCILE_ERRORS = Counter(
    "cleo_operator_reconcile_errors_total",
    "Reconciles that failed, by kind and machine reason.",
    ["kind", "reason"],
)
RECONCILE_DURATION = Histogram(
    "cleo_operator_reconcile_duration_seconds",
    "Wall time of one reconcile, by kind.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
API_WRITES = Counter(
    "cleo_operator_api_writes_total",
    "Write requests the operator sent to the Kubernetes API, by verb and resource.",
    ["verb", "resource"],
)
LEADER = Gauge(
    "cleo_operator_leader",
    "1 while this replica holds the leader lease and reconciles, 0 while it stands by; "
    "identity: the replica's (pod name and a random suffix, as in the Lease).",
    ["identity"],
)
TENANT_READY = Gauge(
    "cleo_operator_tenant_ready",
    "1 when the tenant's Ready condition is True, 0 otherwise.",
    ["tenant"],
)


KEY_NEXT_ROTATION = Gauge(
    "cleo_operator_key_next_rotation_timestamp_seconds",
    "When the tenant's keyring is due to rotate (status.nextRotation), as a Unix time.",
    ["tenant"],
)


def forget_tenant(tenant: str) -> None:
    """Drop a deleted tenant's series, so dashboards do not show it forever."""
    for gauge in (TENANT_READY, KEY_NEXT_ROTATION):
        with contextlib.suppress(KeyError):
            gauge.remove(tenant)


@contextmanager
def timed_reconcile(kind: str) -> Iterator[None]:
    """Count and time one reconcile of `kind`; an exception counts as an error."""
    start = time.perf_counter()
    try:
        yield
    except Exception:
        RECONCILES.labels(kind=kind, result="error").inc()
        raise
    else:
        RECONCILES.labels(kind=kind, result="ok").inc()
    finally:
        # The trace of this reconcile as an exemplar (shown in the OpenMetrics exposition
        # only, which /metrics serves to a scraper that asks for it).
        ids = current_ids()
        RECONCILE_DURATION.labels(kind=kind).observe(
            time.perf_counter() - start,
            exemplar={"trace_id": ids[0], "span_id": ids[1]} if ids is not None else None,
        )


def serve_metrics(*, port: int, address: str = "0.0.0.0") -> None:  # noqa: S104 - a pod listens on all
    """Serve /metrics on `address:port` from a background thread."""
    start_http_server(port, addr=address)

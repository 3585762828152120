"""Prometheus metrics of failovers, switchovers and drills, per tenant and type.

The alert rules (``deploy/monitoring``) already name these: ``CleoFailoverFailed`` fires on
``cleo_operator_failovers_total{result="failed"}`` and ``CleoFailoverObjectiveMissed`` on
``cleo_operator_failover_objective_missed_total``. Each is counted once per CleoFailover,
when it ends (the reconciler counts after the status write that ended it). Labels are
tenant names, the type and fixed words, never free text or secret material.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

from prometheus_client import Counter, Gauge

__all__ = [
    "FAILOVERS",
    "LAST_RPO_SECONDS",
    "LAST_RTO_SECONDS",
    "OBJECTIVE_MISSED",
    "observe_end",
]

_PREFIX: Final = "cleo_operator_failover"

FAILOVERS = Counter(
    f"{_PREFIX}s_total",
    "CleoFailovers that ended, by tenant, type (Failover, Switchover, Drill) and result.",
    ["tenant", "type", "result"],
)
OBJECTIVE_MISSED = Counter(
    f"{_PREFIX}_objective_missed_total",
    "CleoFailovers whose measured RTO or estimated RPO exceeded the objective of the spec.",
    ["tenant", "type", "objective"],
)
LAST_RTO_SECONDS = Gauge(
    f"{_PREFIX}_last_rto_seconds",
    "Measured RTO of the tenant's newest successful CleoFailover of this type.",
    ["tenant", "type"],
)
LAST_RPO_SECONDS = Gauge(
    f"{_PREFIX}_last_rpo_seconds",
    "Estimated RPO (seconds of data) of the tenant's newest successful CleoFailover of this type.",
    ["tenant", "type"],
)


def observe_end(
    *,
    tenant: str,
    type: str,
    result: Literal["succeeded", "failed"],
    rto_seconds: float | None,
    rpo_seconds: float | None,
    missed: Iterable[str],
) -> None:
    """Count one CleoFailover that ended."""
    FAILOVERS.labels(tenant=tenant, type=type, result=result).inc()
    for objective in missed:
        OBJECTIVE_MISSED.labels(tenant=tenant, type=type, objective=objective).inc()
    if result == "succeeded":
        if rto_seconds is not None:
            LAST_RTO_SECONDS.labels(tenant=tenant, type=type).set(rto_seconds)
        if rpo_seconds is not None:
            LAST_RPO_SECONDS.labels(tenant=tenant, type=type).set(rpo_seconds)

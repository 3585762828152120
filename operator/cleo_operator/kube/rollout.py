"""How far a Deployment's rollout is, as its controller reports it: the one reading of a
Deployment's status for the pooler's rollout (`reconcile.pooler.observe_rollout`), the
workload's roll off the pooler (its switch-off) and a failover's rollout step
(`failover.pooler.pooler_route`).

Only the controller's own report counts: ``observedGeneration`` (has it seen the spec?),
``updatedReplicas`` (pods of the current template), ``availableReplicas`` and ``replicas``
(pods of every template, not counting those being deleted).
"""

from __future__ import annotations

import dataclasses

from cleo_operator.api.objects import KubeObject

__all__ = ["Rollout", "rollout_of", "whole"]


def whole(value: object) -> int:
    """`value` if it is an integer (not a bool), else 0: a count from an object's status or
    spec, which may be missing or of another type (the one reading of such counts)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclasses.dataclass(frozen=True)
class Rollout:
    """What a Deployment's controller reports of its rollout (`rollout_of`)."""

    seen: bool
    """The controller has observed the current spec (its generation)."""
    updated: int
    available: int
    total: int
    """Pods of every template, not counting those being deleted."""

    @property
    def old_pods_left(self) -> bool:
        """Pods of an older template may still run (or the spec is not seen yet)."""
        return not self.seen or self.total > self.updated

    def short_of(self, replicas: int) -> bool:
        """Whether it does not run exactly `replicas` available pods of the current template."""
        return (
            not self.seen
            or self.updated < replicas
            or self.available < replicas
            or self.total > replicas
        )


def rollout_of(deployment: KubeObject) -> Rollout:
    """The rollout of `deployment` as its controller reports it."""
    meta = deployment.get("metadata") or {}
    status = deployment.get("status") or {}
    return Rollout(
        seen=whole(status.get("observedGeneration")) >= whole(meta.get("generation")),
        updated=whole(status.get("updatedReplicas")),
        available=whole(status.get("availableReplicas")),
        total=whole(status.get("replicas")),
    )

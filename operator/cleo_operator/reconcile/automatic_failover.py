"""Automatic failover as a part of the tenant reconcile.

Each reconcile of a tenant that asks for automatic failover (`spec.failover.automatic`)
health-checks its primary through `failover.automatic.AutomaticFailover` (shared by all
tenants: one probe per site, through the circuit-breaker pools). When the primary has been
unavailable for longer than `spec.failover.failoverDelay`, that check creates a
CleoFailover, so every failover, automatic or not, leaves a record; this part posts an
Event on the tenant when it does, and reports the `AutomaticFailover` condition. The
condition is informational: DatabaseReady already says whether the database works.
"""

from __future__ import annotations

from cleo_operator.failover.automatic import CONDITION_TYPE, AutomaticFailover
from cleo_operator.kube.audit import audit
from cleo_operator.kube.kinds import TENANT
from cleo_operator.reconcile.status import Observation, clip
from cleo_operator.reconcile.tenant_parts import PartResult, TenantContext


class AutomaticFailoverPart:
    """The tenant part that watches the primary and creates CleoFailovers when it is gone."""

    def __init__(self, automatic: AutomaticFailover) -> None:
        self.automatic = automatic

    def reconcile(self, ctx: TenantContext) -> PartResult:
        outcome = self.automatic.check(
            tenant=ctx.name, namespace=ctx.namespace, spec=ctx.spec, annotations=ctx.annotations
        )
        result = PartResult(requeue_after=outcome.requeue_after)
        if outcome.condition is None:
            result.remove_conditions.add(CONDITION_TYPE)
        else:
            cond = outcome.condition
            result.informational[cond.type] = Observation(
                cond.status, cond.reason, clip(cond.message)
            )
        if outcome.created:
            audit(
                self.automatic.kube,
                {
                    "apiVersion": TENANT.api_version,
                    "kind": TENANT.kind,
                    "metadata": {"name": ctx.name, "uid": ctx.uid},
                },
                action="FailoverCreated",
                message=f"the primary was unavailable for longer than "
                f"spec.failover.failoverDelay: created CleoFailover "
                f"{ctx.namespace}/{outcome.created}",
                type="Warning",
            )
        return result

    def finalize(self, ctx: TenantContext, *, delete: bool) -> bool:
        del ctx, delete
        return True

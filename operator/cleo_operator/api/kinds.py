"""Every kind of the cleoai.io API, for code that handles them all (CRD generator, handlers)."""

from __future__ import annotations

from typing import Final

from cleo_operator.api import backup, failover, tenant
from cleo_operator.api.resource import ResourceDefinition

__all__ = ["RESOURCES"]

RESOURCES: Final[tuple[ResourceDefinition, ...]] = (
    tenant.RESOURCE,
    backup.RESOURCE,
    failover.RESOURCE,
)

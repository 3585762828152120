"""What a tenant part is: the contract between the tenant reconcile and the concerns it plugs in.

Why a module of its own: the parts (keys and sealed secrets, the database, automatic
failover) depend on this contract and nothing else of the tenant reconcile, and the tenant
reconcile depends on it to run them; neither side's changes should reach the other.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from cleo_operator.api.objects import KubeObject
from cleo_operator.api.tenant import CleoTenantSpec
from cleo_operator.reconcile.status import Observation
from cleo_operator.render.meta import tenant_owner

__all__ = ["PartResult", "TenantContext", "TenantEvent", "TenantPart"]


@dataclass(frozen=True)
class TenantContext:
    """What a part needs to know about the tenant being reconciled."""

    name: str
    uid: str
    generation: int
    spec: CleoTenantSpec
    namespace: str
    annotations: Mapping[str, str]
    status: Mapping[str, Any]
    now: datetime.datetime
    waiting: list[str] = field(default_factory=list)
    """What a part's ``finalize`` still waits for, in words for people ("database: waiting
    for ..."): the deletion puts it on the tenant's Ready condition (reason ``Deleting``)."""

    @property
    def owner(self) -> Any:
        return tenant_owner(name=self.name, uid=self.uid)


@dataclass
class PartResult:
    """What one part contributes to a reconcile."""

    objects: list[KubeObject] = field(default_factory=list)
    """Objects to apply (before the rendered children), e.g. Secrets in the namespace."""
    conditions: dict[str, Observation] = field(default_factory=dict)
    """Conditions by type; each one gates Ready."""
    informational: dict[str, Observation] = field(default_factory=dict)
    """Conditions by type that do not gate Ready (e.g. AutomaticFailover)."""
    remove_conditions: set[str] = field(default_factory=set)
    """Condition types that no longer apply (a feature switched off)."""
    status: dict[str, Any] = field(default_factory=dict)
    """Status fields this part owns (e.g. keyVersion, database)."""
    fingerprints: dict[str, str] = field(default_factory=dict)
    """Inputs of the Deployment's checksum: change one and the pods roll."""
    secret_names: list[str] = field(default_factory=list)
    """Secrets the workload reads all keys of (envFrom)."""
    database_secret: str | None = None
    keyring_secret: str | None = None
    """The tenant keyring Secret, mounted read-only into the workload when it exists."""
    pooler_secret: str | None = None
    """The pooler's Secret when the workload goes through the pooler (its DATABASE_URL)."""
    requeue_after: float | None = None
    events: list[TenantEvent] = field(default_factory=list)
    """Significant actions (a key rotated, a password rotated), posted as Events."""
    workload_image: str | None = None
    """The image the Deployment runs instead of spec.workload.image (the last migrated)."""
    hold_reason: str | None = None
    """Set: leave the Deployment out for now (its first image is not migrated yet), and why,
    for the WorkloadAvailable condition (reason WaitingForMigrations)."""
    record_now: bool = False
    """The status this part owns records something it just made (a Job's uid): write it
    this round, even for a new tenant whose first status would otherwise wait for Ready."""


@dataclass(frozen=True)
class TenantEvent:
    """An Event to post on the CleoTenant; the message never holds secret material."""

    reason: str
    message: str
    type: Literal["Normal", "Warning"] = "Normal"
    audit: bool = False
    """A security-relevant action (keys, passwords, unsealing, a refused namespace): posted
    through `kube.audit.audit`, which also writes the audit log line."""


class TenantPart(Protocol):
    """A concern of the tenant beyond rendering (secrets and keys, the database)."""

    def reconcile(self, ctx: TenantContext) -> PartResult: ...

    def finalize(self, ctx: TenantContext, *, delete: bool) -> bool:
        """Clean up on deletion (`delete`: the Delete policy); True when done."""
        ...

"""CleoFailover: one failover, switchover or drill of a tenant's database to its standby.

A failover is an event, not a desired state: once created, its spec cannot change (CEL
``self == oldSelf`` on the whole spec), and a second attempt is a second object. That
gives every failover, the automatic ones too (the operator creates those itself), an
audit trail in the cluster: what was asked, each step with its times, the measured RTO
and the estimated RPO.

- Failover: the primary is lost; promote the standby, fence the old primary.
- Switchover: both are healthy; hand over without losing data (waits for zero lag).
- Drill: rehearse against a copy; the tenant keeps its primary.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import ConfigDict, Field

from cleo_operator.api.base import (
    DnsLabel,
    SpecModel,
    StatusBase,
    StatusModel,
    TenantName,
    Timestamp,
)
from cleo_operator.api.resource import PrinterColumn, ResourceDefinition, parse_spec
from cleo_operator.api.schema import ListMap, cel, validations

__all__ = [
    "KIND",
    "PLURAL",
    "RESOURCE",
    "SHORT_NAMES",
    "SINGULAR",
    "CleoFailoverSpec",
    "CleoFailoverStatus",
    "FailoverPhase",
    "FailoverStep",
    "FailoverType",
    "StepState",
    "parse_failover_spec",
]

PLURAL: Final = "cleofailovers"
SINGULAR: Final = "cleofailover"
KIND: Final = "CleoFailover"
SHORT_NAMES: Final = ("cfo",)

FailoverType = Literal["Failover", "Switchover", "Drill"]
FailoverPhase = Literal["Pending", "Running", "Succeeded", "Failed"]
StepState = Literal["Pending", "Running", "Succeeded", "Failed", "Skipped"]

_WEEK = 7 * 24 * 3600


class CleoFailoverSpec(SpecModel):
    """What to do, to which tenant, and within which objectives. Fixed once created."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self == oldSelf",
                "spec of a CleoFailover cannot change: it records one event; create a new "
                "CleoFailover instead",
            )
        )
    )

    tenant: TenantName = Field(description="Name of the CleoTenant whose database moves.")
    type: FailoverType = Field(
        description=(
            "Failover (the primary is lost), Switchover (planned, no data loss) or Drill "
            "(a rehearsal that leaves the primary in place)."
        )
    )
    target_site: DnsLabel | None = Field(
        default=None,
        description="Site to promote; unset, the tenant's spec.failover.standbySite.",
    )
    rto_seconds: int | None = Field(
        default=None,
        ge=0,
        le=_WEEK,
        description="Recovery time objective: how long the move may take; unset, no objective.",
    )
    rpo_seconds: int | None = Field(
        default=None,
        ge=0,
        le=_WEEK,
        description="Recovery point objective: how much recent data (in time) may be lost.",
    )
    max_lag_bytes: int | None = Field(
        default=None,
        ge=0,
        le=2**53,
        description="Refuse to promote a standby further behind than this (WAL bytes).",
    )
    dry_run: bool = Field(
        default=False,
        description="Only check and write the plan to status.plan; change nothing.",
    )


class FailoverStep(StatusModel):
    """One step of the procedure (fence, check lag, promote, repoint, roll out, verify)."""

    name: str = Field(max_length=63, description="The step, e.g. promote.")
    state: StepState = Field(description="Pending, Running, Succeeded, Failed or Skipped.")
    start_time: Timestamp | None = Field(default=None, description="When it started.")
    end_time: Timestamp | None = Field(default=None, description="When it ended.")
    message: str | None = Field(
        default=None, max_length=1024, description="What happened, for people."
    )


class CleoFailoverStatus(StatusBase):
    """How the failover went."""

    phase: FailoverPhase | None = Field(
        default=None, description="Pending, Running, Succeeded or Failed."
    )
    steps: Annotated[list[FailoverStep], ListMap("name")] = Field(
        default_factory=list, max_length=32, description="Each step, in order."
    )
    plan: list[Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=list,
        max_length=64,
        description="What would be done, for a dry run.",
    )
    measured_rto_seconds: float | None = Field(
        default=None,
        ge=0,
        alias="measuredRTOSeconds",
        description="How long the move took, from start to the workload serving again.",
    )
    estimated_rpo_seconds: float | None = Field(
        default=None,
        ge=0,
        alias="estimatedRPOSeconds",
        description="Estimated recent data lost, in time (replication delay at promotion).",
    )
    estimated_rpo_bytes: int | None = Field(
        default=None,
        ge=0,
        alias="estimatedRPOBytes",
        description="Estimated recent data lost, in WAL bytes not replicated at promotion.",
    )
    new_primary: str | None = Field(
        default=None, max_length=63, description="The site that is primary now."
    )
    start_time: Timestamp | None = Field(default=None, description="When the failover started.")
    completion_time: Timestamp | None = Field(
        default=None, description="When it succeeded or failed."
    )


RESOURCE: Final = ResourceDefinition(
    kind=KIND,
    plural=PLURAL,
    singular=SINGULAR,
    short_names=SHORT_NAMES,
    scope="Namespaced",
    description=(
        "A CleoFailover moves one CleoTenant's database to its standby site (failover, "
        "switchover or drill) and records each step and the measured RTO and RPO."
    ),
    spec_model=CleoFailoverSpec,
    status_model=CleoFailoverStatus,
    printer_columns=(
        PrinterColumn(
            name="Type", type="string", json_path=".spec.type", description="What kind of move."
        ),
        PrinterColumn(
            name="Tenant", type="string", json_path=".spec.tenant", description="The tenant."
        ),
        PrinterColumn(
            name="Phase", type="string", json_path=".status.phase", description="Summary."
        ),
        PrinterColumn(
            name="RTO",
            type="number",
            json_path=".status.measuredRTOSeconds",
            description="Measured recovery time in seconds.",
        ),
        PrinterColumn(
            name="Age",
            type="date",
            json_path=".metadata.creationTimestamp",
            description="Time since creation.",
        ),
    ),
    name_max_length=63,
    name_reason="its name is used as a label value",
)


def parse_failover_spec(body_spec: Mapping[str, Any] | None) -> CleoFailoverSpec:
    """Validate a CleoFailover's raw ``.spec``; raises `SpecError` naming the bad fields."""
    return parse_spec(CleoFailoverSpec, KIND, body_spec)

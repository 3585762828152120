"""The steps of each kind of failover, their records on status, and the objectives verdict.

Pure code (no I/O), so the order of steps, the resume rules and the RTO/RPO verdict are
tested alone. Why it is built this way:

- **The status is the procedure's memory.** Each step is recorded on the CleoFailover's
  ``status.steps`` (name, state, startTime, endTime, message) *before* it acts (state
  Running) and again after (Succeeded, Failed, Skipped). An operator that restarts reads
  the steps and continues with the first one that has not ended; a step found Running
  was interrupted and runs again, which is why every step is idempotent.
- **Times carry milliseconds.** ``measuredRTOSeconds`` is computed from the recorded
  times, which must survive a restart (a monotonic clock does not), and an RTO of a few
  seconds needs better than whole seconds. RFC 3339 allows fractions; the API's
  ``date-time`` format accepts them.
- **A Drill is a different list of steps**, not a Failover with steps switched off: it
  never fences, promotes or repoints anything, and the difference is visible in the plan.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal, cast, get_args

from cleo_operator.api.failover import FailoverType, StepState
from cleo_operator.core.redaction import clip
from cleo_operator.core.times import read_rfc3339, rfc3339_ms

TRACE_ANNOTATION: Final = "cleoai.io/traceparent"
"""On a CleoFailover: the W3C trace context its steps' spans are children of, so that a
failover is one trace from its detection (an automatic one: the tenant reconcile that
created it) or its first reconcile to its verification. Not a secret: ids only."""

__all__ = [
    "DRILL_STEPS",
    "MOVE_STEPS",
    "TERMINAL_STATES",
    "ObjectivesVerdict",
    "StepName",
    "StepRecord",
    "judge_objectives",
    "next_step",
    "seconds_between",
    "steps_for",
]

StepName = Literal[
    "preflight",
    "fence",
    "check-lag",
    "promote",
    "repoint",
    "rollout",
    "verify",
    "restore",
    "check-standby",
]
STEP_NAMES: Final[tuple[StepName, ...]] = get_args(StepName)

MOVE_STEPS: Final[tuple[StepName, ...]] = (
    "preflight",
    "fence",
    "check-lag",
    "promote",
    "repoint",
    "rollout",
    "verify",
)
"""A Failover or a Switchover: the database moves to the target site."""

DRILL_STEPS: Final[tuple[StepName, ...]] = ("preflight", "check-lag", "restore", "check-standby")
"""A Drill: checks and a restore into a scratch database; production is not touched."""

TERMINAL_STATES: Final[frozenset[StepState]] = frozenset({"Succeeded", "Failed", "Skipped"})

PROMOTION_STEPS: Final[frozenset[StepName]] = frozenset({"promote", "repoint", "rollout", "verify"})
"""Once one of these has started, the standby may be a primary: nothing is rolled back."""


def steps_for(kind: FailoverType) -> tuple[StepName, ...]:
    """The steps of a Failover, Switchover or Drill, in order."""
    return DRILL_STEPS if kind == "Drill" else MOVE_STEPS


# --------------------------------------------------------------------------- times


def seconds_between(start: object, end: object) -> float | None:
    """Seconds from ``start`` to ``end`` (status timestamps); None when either is unknown."""
    first, last = read_rfc3339(start), read_rfc3339(end)
    if first is None or last is None:
        return None
    return max(0.0, (last - first).total_seconds())


# --------------------------------------------------------------------------- records


@dataclasses.dataclass(kw_only=True)
class StepRecord:
    """One entry of ``status.steps`` (mutable while the reconciler works on it)."""

    name: str
    """The step."""
    state: StepState = "Pending"
    """Pending, Running, Succeeded, Failed or Skipped."""
    start_time: str | None = None
    """When it (last) started, RFC 3339 with milliseconds."""
    end_time: str | None = None
    """When it ended."""
    message: str | None = None
    """What happened, for people."""

    @property
    def ended(self) -> bool:
        return self.state in TERMINAL_STATES

    def start(self, now: datetime.datetime, message: str | None = None) -> None:
        """Mark it Running; a step resumed after a restart keeps its first start time."""
        self.state = "Running"
        self.start_time = self.start_time or rfc3339_ms(now)
        self.end_time = None
        if message is not None:
            self.message = clip(message)

    def finish(self, state: StepState, now: datetime.datetime, message: str) -> None:
        """Mark it ended (Succeeded, Failed or Skipped) with what happened."""
        self.state = state
        self.start_time = self.start_time or rfc3339_ms(now)
        self.end_time = rfc3339_ms(now)
        self.message = clip(message)

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "state": self.state}
        if self.start_time is not None:
            out["startTime"] = self.start_time
        if self.end_time is not None:
            out["endTime"] = self.end_time
        if self.message is not None:
            out["message"] = self.message
        return out

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> StepRecord:
        raw_state = raw.get("state")
        state: StepState = (
            cast(StepState, raw_state) if raw_state in get_args(StepState) else "Pending"
        )
        return cls(
            name=str(raw.get("name", "")),
            state=state,
            start_time=raw.get("startTime") if isinstance(raw.get("startTime"), str) else None,
            end_time=raw.get("endTime") if isinstance(raw.get("endTime"), str) else None,
            message=raw.get("message") if isinstance(raw.get("message"), str) else None,
        )


def records_for(kind: FailoverType, stored: Sequence[Mapping[str, Any]]) -> list[StepRecord]:
    """The records of every step of ``kind``, in order: stored ones kept, others Pending.

    Entries of status that are not steps of this kind (hand-written, or from another
    version of the operator) are dropped.
    """
    by_name = {str(raw.get("name")): StepRecord.from_api(raw) for raw in stored}
    return [by_name.get(name) or StepRecord(name=name) for name in steps_for(kind)]


def next_step(records: Sequence[StepRecord]) -> StepRecord | None:
    """The first step that has not ended (Pending, or Running: interrupted); None when done."""
    return next((record for record in records if not record.ended), None)


def promotion_started(records: Sequence[StepRecord]) -> bool:
    """Whether a step that may have promoted the standby has started (no rollback then)."""
    return any(r.name in PROMOTION_STEPS and r.state != "Pending" for r in records)


# --------------------------------------------------------------------------- objectives

Objective = Literal["RTO", "RPO"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ObjectivesVerdict:
    """The ``ObjectivesMet`` condition, and which objectives were missed (for metrics)."""

    status: Literal["True", "False", "Unknown"]
    """True: every objective set was met; False: one was missed; Unknown: cannot tell."""
    reason: str
    """``ObjectivesMet``, ``RTOMissed``, ``RPOMissed``, ``RTOAndRPOMissed``,
    ``RTOUnknown``, ``RPOUnknown``, ``ObjectivesUnknown``, ``NoObjectives``."""
    message: str
    """The numbers, for people."""
    missed: tuple[Objective, ...] = ()
    """The objectives that were missed."""


def judge_objectives(
    *,
    rto_objective: int | None,
    rpo_objective: int | None,
    measured_rto: float | None,
    estimated_rpo_seconds: float | None,
    drill: bool = False,
) -> ObjectivesVerdict:
    """Compare what was measured with the objectives of the spec.

    An objective that is not set cannot be missed. An RPO objective with an unknown
    estimate (the old primary was gone and no lag had been sampled) is Unknown, never a
    hopeful True. For a Drill the verdict says whether the objectives *would* be met.
    """
    would = "would be " if drill else ""
    parts: list[str] = []
    missed: list[Objective] = []
    unknown: list[Objective] = []
    if rto_objective is not None:
        if measured_rto is None:
            unknown.append("RTO")
            parts.append(f"RTO unknown (objective {rto_objective}s)")
        elif measured_rto <= rto_objective:
            parts.append(f"RTO {measured_rto:.1f}s {would}within {rto_objective}s")
        else:
            missed.append("RTO")
            parts.append(f"RTO {measured_rto:.1f}s {would}over the objective of {rto_objective}s")
    if rpo_objective is not None:
        if estimated_rpo_seconds is None:
            unknown.append("RPO")
            parts.append(
                f"RPO unknown (objective {rpo_objective}s): the data lost could not be estimated"
            )
        elif estimated_rpo_seconds <= rpo_objective:
            parts.append(f"RPO {estimated_rpo_seconds:.1f}s {would}within {rpo_objective}s")
        else:
            missed.append("RPO")
            parts.append(
                f"RPO {estimated_rpo_seconds:.1f}s {would}over the objective of {rpo_objective}s"
            )
    if rto_objective is None and rpo_objective is None:
        rto = "unknown" if measured_rto is None else f"{measured_rto:.1f}s"
        rpo = "unknown" if estimated_rpo_seconds is None else f"{estimated_rpo_seconds:.1f}s"
        return ObjectivesVerdict(
            status="True",
            reason="NoObjectives",
            message=f"no objectives set (spec.rtoSeconds, spec.rpoSeconds); RTO {rto}, RPO {rpo}",
        )
    message = "; ".join(parts)
    if missed:
        reason = "RTOAndRPOMissed" if len(missed) == 2 else f"{missed[0]}Missed"
        return ObjectivesVerdict(
            status="False", reason=reason, message=message, missed=tuple(missed)
        )
    if unknown:
        reason = "ObjectivesUnknown" if len(unknown) == 2 else f"{unknown[0]}Unknown"
        return ObjectivesVerdict(status="Unknown", reason=reason, message=message)
    return ObjectivesVerdict(status="True", reason="ObjectivesMet", message=message)

"""Conditions as a reconcile collects them, written once at the end only if they changed.

Every kind's reconciler builds its status the same way: start from the conditions on the
object, set each observed condition (keeping lastTransitionTime while a status holds, as
the Kubernetes API conventions ask), then write once through the status writer
(`kube.status`), which sends nothing when nothing changed and never removes keys of status
that another writer owns. What differs per kind (its phase, the fields it owns, what it
keeps) stays in that kind's module.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from cleo_operator.api.base import Condition, ConditionStatus, set_condition
from cleo_operator.api.objects import KubeObject
from cleo_operator.core.redaction import MESSAGE_LIMIT, clip, redact

__all__ = ["MESSAGE_LIMIT", "Observation", "StatusBuilder", "clip", "current_conditions"]


@dataclass(frozen=True)
class Observation:
    """One condition as observed: status, a CamelCase reason and a message for people."""

    status: ConditionStatus
    reason: str
    message: str

    @property
    def ok(self) -> bool:
        return self.status == "True"


def current_conditions(obj: KubeObject) -> list[Condition]:
    """The conditions on `obj`'s status; a malformed one (written by hand) is dropped."""
    raw = (obj.get("status") or {}).get("conditions") or []
    out: list[Condition] = []
    for item in raw:
        try:
            out.append(Condition.model_validate(item))
        except ValueError:
            continue
    return out


class StatusBuilder:
    """Collects conditions and fields of one reconcile of `obj`."""

    def __init__(self, obj: KubeObject, generation: int, now: datetime.datetime) -> None:
        self.obj = obj
        self.generation = generation
        self.now = now
        self.conditions = current_conditions(obj)
        self.fields: dict[str, Any] = {}

    def condition(self, type_: str, obs: Observation) -> None:
        self.conditions = set_condition(
            self.conditions,
            type=type_,
            status=obs.status,
            reason=obs.reason,
            # Every condition message passes the redactor, whoever built it.
            message=redact(obs.message),
            observed_generation=self.generation,
            now=self.now,
        )

    def remove_condition(self, type_: str) -> None:
        self.conditions = [c for c in self.conditions if c.type != type_]

    def base(self, phase: str) -> dict[str, Any]:
        """observedGeneration, phase and conditions: what every kind's status has."""
        return {
            "observedGeneration": self.generation,
            "phase": phase,
            "conditions": [c.model_dump(by_alias=True, exclude_none=True) for c in self.conditions],
        }

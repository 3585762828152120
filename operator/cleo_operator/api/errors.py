"""Errors for people: a refused spec says which field (in the API's camelCase) and why.

The API server stops most bad input with the CRD's schema and CEL rules. What gets
through anyway (an older CRD, a rule CEL cannot say) must become a condition on the
resource, never a crash loop. `SpecError` is what the handlers turn into that
condition, so its text is written for the person who owns the resource:
``spec.autoscaling.maxReplicas: must be >= minReplicas (3)``.

pydantic's own error text carries the offending input (``input_value=...``). Specs
hold sealed secrets and environment values, so that text must never reach a log, an
event or a status: `SpecError` is built only from each error's location and message,
and is raised ``from None`` so the original `ValidationError` is not chained to it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic

from cleo_operator.core.errors import CleoError

__all__ = [
    "RuleViolation",
    "RuleViolations",
    "SpecError",
    "SpecIssue",
    "check_block_of_type",
    "format_path",
    "spec_error_from_validation",
]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Location = tuple[str | int, ...]


class RuleViolation(CleoError, ValueError):
    """A cross-field rule broken below the model whose validator found it.

    pydantic reports a model validator's error at the model itself. Raising this
    instead lets the error name the exact field (``loc`` is relative to the model),
    the way the CRD's CEL rules name it with ``fieldPath``.
    """

    def __init__(self, loc: Location, message: str) -> None:
        super().__init__(message)
        self.loc: Location = loc
        self.message = message


class RuleViolations(CleoError, ValueError):
    """Several `RuleViolation` found by one validator, reported together (as CEL does)."""

    def __init__(self, violations: Sequence[RuleViolation]) -> None:
        super().__init__("; ".join(v.message for v in violations))
        self.violations: tuple[RuleViolation, ...] = tuple(violations)

    @staticmethod
    def raise_any(violations: Sequence[RuleViolation]) -> None:
        """Raise the one violation, or all of them, or nothing when there are none."""
        if len(violations) == 1:
            raise violations[0]
        if violations:
            raise RuleViolations(violations)


def check_block_of_type(model: pydantic.BaseModel, chosen: str, blocks: Mapping[str, str]) -> None:
    """Refuse a union written as ``type`` plus one block: ``blocks`` maps each type to the
    API name of its block, and only the chosen type's block may be, and must be, set.

    The Python side of the CEL rules ``has(self.<block>) == (self.type == '<type>')``.
    """
    attributes = {info.alias or name: name for name, info in type(model).model_fields.items()}
    violations = []
    for type_, block in blocks.items():
        present = getattr(model, attributes[block]) is not None
        if present and chosen != type_:
            violations.append(RuleViolation((block,), f"must not be set when type is {chosen}"))
        if not present and chosen == type_:
            violations.append(RuleViolation((block,), f"is required when type is {type_}"))
    RuleViolations.raise_any(violations)


@dataclasses.dataclass(frozen=True)
class SpecIssue:
    """One problem found in a resource's spec."""

    path: str
    """Where, as a camelCase path from the object's root, e.g. ``spec.env[2].name``."""

    message: str
    """What is wrong and, where it helps, what to do. Never contains input values."""

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class SpecError(CleoError, ValueError, reason="InvalidSpec", retryable=False):
    """A spec (or name) that the models refuse; the text lists every issue found."""

    def __init__(self, kind: str, issues: Sequence[SpecIssue]) -> None:
        self.kind = kind
        self.issues: tuple[SpecIssue, ...] = tuple(issues)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "; ".join(str(issue) for issue in self.issues)

    def __repr__(self) -> str:
        return f"SpecError(kind={self.kind!r}, issues={list(self.issues)!r})"


def format_path(root: str, loc: Location) -> str:
    """Render a location as Kubernetes prints field paths: ``spec.env[0].name``, ``map[a.b]``."""
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _IDENTIFIER.match(part):
            path += f".{part}" if path else part
        else:
            # Map keys such as "app.kubernetes.io/name" cannot be written with dots.
            path += f"[{part}]"
    return path


# pydantic's wording for the commonest errors, rewritten to say what to do.
_FRIENDLIER = {
    "missing": "is required",
    "extra_forbidden": "is not a field of this API; check the spelling (fields are camelCase)",
}


# "Input should be greater than 0" -> "must be greater than 0": one voice for all messages.
_SHOULD = re.compile(r"^(Input|String|List|Dictionary|Value|Object) should ")


def _issues(root: str, error: Any) -> list[SpecIssue]:
    loc: Location = tuple(error["loc"])
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, RuleViolations):
        return [SpecIssue(format_path(root, loc + v.loc), v.message) for v in cause.violations]
    if isinstance(cause, RuleViolation):
        return [SpecIssue(format_path(root, loc + cause.loc), cause.message)]
    message = _FRIENDLIER.get(error["type"], _SHOULD.sub("must ", error["msg"]))
    if error["type"] in ("value_error", "assertion_error"):
        # Our own validators raise plain ValueErrors whose text is already for people.
        message = str(cause) if cause is not None else message.partition(", ")[2]
    return [SpecIssue(format_path(root, loc), message)]


def spec_error_from_validation(
    kind: str, error: pydantic.ValidationError, *, root: str = "spec"
) -> SpecError:
    """Turn a pydantic error into a `SpecError` whose paths start at ``root``.

    Only locations and messages are kept: never the input values (see the module
    docstring for why).
    """
    errors = error.errors(include_url=False, include_input=False)
    issues = [issue for e in errors for issue in _issues(root, e)]
    return SpecError(kind, issues)

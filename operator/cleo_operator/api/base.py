"""What every resource of the API shares: model bases, conditions, names and value types.

- `CamelModel`: Python attributes are snake_case, the API is camelCase (Kubernetes
  convention). Spec models (`SpecModel`) refuse unknown fields, so a misspelt field is an
  error, not a silently ignored setting; they are frozen because the operator never writes
  to a spec. Status models (`StatusModel`) ignore unknown fields, because Kopf and older
  operator versions may leave their own keys there.
- Conditions follow the Kubernetes API conventions (the shape of `metav1.Condition`):
  ``lastTransitionTime`` moves only when ``status`` changes, so people can see how long
  something has been broken.
- `Duration` and `Quantity` are kept as the strings (or numbers) the user wrote, so a
  status or a dump round-trips unchanged; `parse_duration` gives a `timedelta` when needed.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Final, Literal

import pydantic
from pydantic import AfterValidator, ConfigDict, Field, PlainValidator, WithJsonSchema
from pydantic.alias_generators import to_camel

from cleo_operator.api.errors import RuleViolation, SpecError, SpecIssue
from cleo_operator.api.schema import Extra, ListMap, Matches, Rules, cel
from cleo_operator.core.times import parse_rfc3339, rfc3339

__all__ = [
    "API_VERSION",
    "CATEGORY",
    "DNS_LABEL_HINT",
    "DNS_LABEL_PATTERN",
    "DNS_SUBDOMAIN_HINT",
    "DNS_SUBDOMAIN_PATTERN",
    "DURATION_PATTERN",
    "GROUP",
    "QUANTITY_PATTERN",
    "TENANT_NAME_MAX_LENGTH",
    "TENANT_NAME_PATTERN",
    "VERSION",
    "CamelModel",
    "Condition",
    "ConditionStatus",
    "DnsLabel",
    "DnsSubdomain",
    "Duration",
    "IntOrPercent",
    "PositiveDuration",
    "Quantity",
    "ResourceList",
    "ResourceRequirements",
    "SpecError",
    "SpecIssue",
    "SpecModel",
    "StatusBase",
    "StatusModel",
    "TenantName",
    "Timestamp",
    "get_condition",
    "is_condition_true",
    "parse_duration",
    "quantity_value",
    "requests_over_limits",
    "rfc3339",
    "set_condition",
    "validate_object_name",
    "validate_tenant_name",
]

GROUP = "cleoai.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "cleo"
"""``kubectl get cleo`` lists every kind of this API."""

# --- names --------------------------------------------------------------------------------

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_LABEL_HINT = (
    "a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit"
)
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_SUBDOMAIN_HINT = (
    "a DNS subdomain: lowercase letters, digits, '-' and '.', starting and ending with a "
    "letter or digit"
)

TENANT_NAME_PATTERN = DNS_LABEL_PATTERN
TENANT_NAME_MAX_LENGTH = 40
"""A tenant's name becomes the namespace ``cleo-<name>`` and the database ``cleo_<name>``
(``-`` as ``_``); 40 keeps both within PostgreSQL's 63-byte identifiers and DNS labels."""

DnsLabel = Annotated[
    str, Field(min_length=1, max_length=63), Matches(DNS_LABEL_PATTERN, DNS_LABEL_HINT)
]
DnsSubdomain = Annotated[
    str, Field(min_length=1, max_length=253), Matches(DNS_SUBDOMAIN_PATTERN, DNS_SUBDOMAIN_HINT)
]
TenantName = Annotated[
    str,
    Field(min_length=1, max_length=TENANT_NAME_MAX_LENGTH),
    Matches(TENANT_NAME_PATTERN, DNS_LABEL_HINT),
]

_DNS_LABEL = re.compile(DNS_LABEL_PATTERN)


def validate_object_name(kind: str, name: str, *, max_length: int) -> None:
    """Refuse a name that is no DNS label of at most ``max_length`` (`SpecError`).

    The same check as the CEL rules on ``metadata.name`` in the CRDs.
    """
    problem = None
    if len(name) > max_length:
        problem = f"must be at most {max_length} characters"
    elif _DNS_LABEL.fullmatch(name) is None:
        problem = f"must be {DNS_LABEL_HINT}"
    if problem is not None:
        raise SpecError(kind, [SpecIssue("metadata.name", problem)])


def validate_tenant_name(name: str) -> None:
    """Refuse a CleoTenant name the API server's CEL rule would refuse (`SpecError`)."""
    validate_object_name("CleoTenant", name, max_length=TENANT_NAME_MAX_LENGTH)


# --- value types --------------------------------------------------------------------------

DURATION_PATTERN = r"^([0-9]{1,7}d)?([0-9]{1,7}h)?([0-9]{1,7}m)?([0-9]{1,7}s)?$"
_DURATION = re.compile(DURATION_PATTERN)
_DURATION_HINT = "a duration such as 90d, 12h, 30m, 45s or 1h30m (units in the order d, h, m, s)"


def parse_duration(text: str) -> datetime.timedelta:
    """Parse ``90d``, ``12h``, ``30m``, ``45s`` or a combination such as ``1h30m``."""
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"{text!r} is not {_DURATION_HINT}")
    days, hours, minutes, seconds = (int(g[:-1]) if g else 0 for g in match.groups())
    return datetime.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def _check_duration(text: str) -> str:
    if not text or _DURATION.fullmatch(text) is None:
        raise ValueError(f"must be {_DURATION_HINT}")
    return text


def _check_positive_duration(text: str) -> str:
    if parse_duration(text) <= datetime.timedelta(0):
        raise ValueError("must be longer than zero, e.g. 90d")
    return text


Duration = Annotated[
    str,
    Field(max_length=32),
    AfterValidator(_check_duration),
    # The pattern also matches "", which minLength excludes (RE2 has no lookahead).
    Extra({"pattern": DURATION_PATTERN, "minLength": 2}),
]
"""A duration in days, hours, minutes and seconds: ``90d``, ``1h30m``, ``45s``."""

PositiveDuration = Annotated[
    Duration,
    AfterValidator(_check_positive_duration),
    # Every part is digits then a unit, so a non-zero digit anywhere means "longer than zero".
    Rules(cel("self.matches('[1-9]')", "{path} must be longer than zero, e.g. 90d")),
]
"""A `Duration` longer than zero (for periods of rotation: zero would mean "always")."""

# The regular expression of Kubernetes' resource.Quantity (as its OpenAPI schema publishes it),
# less the minus sign: every quantity of this API is an amount of a resource (CPU, memory,
# storage, a quota), and a negative amount is a mistake to stop at `kubectl apply`.
QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?[0-9]+))?$"
)
# The exponent is whole digits: the OpenAPI pattern also matches "1e1.5", which Kubernetes'
# parser refuses and no Decimal reads (InvalidOperation, an ArithmeticError pydantic does
# not turn into a validation error).
_QUANTITY = re.compile(QUANTITY_PATTERN)
_QUANTITY_MAX_LENGTH = 64


def _validate_quantity(value: Any) -> int | str:
    # bool is an int in Python, but `true` is no quantity; floats are refused as the API
    # server refuses them (int-or-string), so "1.5" must be written as a string.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if (
        isinstance(value, str)
        and len(value) <= _QUANTITY_MAX_LENGTH
        and _QUANTITY.fullmatch(value) is not None
    ):
        return value
    raise ValueError(
        "must be a Kubernetes quantity, not negative: a whole number or a string such as "
        "'500m', '2Gi' or '1.5'"
    )


Quantity = Annotated[
    int | str,
    PlainValidator(_validate_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
    # The pattern only constrains strings; a whole number is checked here.
    Rules(cel("type(self) != int || self >= 0", "{path} must not be negative")),
]
"""A Kubernetes quantity (``500m``, ``2Gi``, ``1.5``, or a whole number), kept as written."""

_PERCENT_PATTERN = r"^[0-9]{1,3}%$"
_PERCENT = re.compile(_PERCENT_PATTERN)


def _validate_int_or_percent(value: Any) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and _PERCENT.fullmatch(value) and int(value[:-1]) <= 100:
        return value
    raise ValueError("must be a whole number >= 0 or a percentage such as '50%'")


IntOrPercent = Annotated[
    int | str,
    PlainValidator(_validate_int_or_percent),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": _PERCENT_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A count or a percentage, as a PodDisruptionBudget takes it: ``1`` or ``"50%"``."""


def _check_timestamp(text: str) -> str:
    try:
        parse_rfc3339(text)
    except ValueError:
        parsed = False
    else:
        parsed = True
    if not parsed or "T" not in text:
        raise ValueError("must be an RFC 3339 time such as 2024-05-01T12:00:00Z")
    return text


Timestamp = Annotated[
    str,
    Field(max_length=64),
    AfterValidator(_check_timestamp),
    Extra({"format": "date-time"}),
]
"""A point in time as an RFC 3339 string (what `rfc3339` writes)."""


# --- models -------------------------------------------------------------------------------


class CamelModel(pydantic.BaseModel):
    """Base of every API model: snake_case in Python, camelCase in the API."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    def to_api(self, *, exclude_none: bool = True) -> dict[str, Any]:
        """The model as the API writes it: camelCase keys, JSON values, no unset optionals."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=exclude_none)


class SpecModel(CamelModel):
    """Base of spec models: unknown fields are refused; the operator never changes a spec."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StatusModel(CamelModel):
    """Base of status models: written by the operator, unknown keys ignored when read back."""

    model_config = ConfigDict(extra="ignore")


ConditionStatus = Literal["True", "False", "Unknown"]

# As metav1.Condition: an optional DNS-subdomain prefix, then a qualified name.
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


class Condition(StatusModel):
    """One aspect of the resource's state (Kubernetes API conventions, as metav1.Condition)."""

    type: Annotated[str, Matches(CONDITION_TYPE_PATTERN, "a CamelCase condition type")] = Field(
        max_length=316, description="What aspect this condition is about, e.g. Ready."
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: Annotated[str, Matches(REASON_PATTERN, "a CamelCase reason")] = Field(
        min_length=1,
        max_length=1024,
        description="Why the condition is in this status, as one CamelCase word for machines.",
    )
    message: str = Field(
        max_length=32768, description="Why the condition is in this status, for people."
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="The .metadata.generation the condition was computed from.",
    )
    last_transition_time: Timestamp = Field(
        description="When the status last changed (RFC 3339). Unchanged while status stays."
    )


def get_condition(conditions: Sequence[Condition], type: str) -> Condition | None:
    """The condition of this type, or None."""
    return next((c for c in conditions if c.type == type), None)


def is_condition_true(conditions: Sequence[Condition], type: str) -> bool:
    """Whether the condition of this type exists and is True."""
    condition = get_condition(conditions, type)
    return condition is not None and condition.status == "True"


def set_condition(
    conditions: Sequence[Condition],
    *,
    type: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    observed_generation: int | None,
    now: datetime.datetime,
) -> list[Condition]:
    """A new list with the condition of ``type`` set; the input is left unchanged.

    ``lastTransitionTime`` becomes ``now`` only when the status changes (or the condition
    is new); a changed reason or message alone keeps it. Other conditions and their order
    are kept; a new type is appended.
    """
    updated: list[Condition] = []
    found = False
    for condition in conditions:
        if condition.type != type:
            updated.append(condition)
            continue
        found = True
        transition = condition.last_transition_time if condition.status == status else rfc3339(now)
        updated.append(
            Condition(
                type=type,
                status=status,
                reason=reason,
                message=message,
                observed_generation=observed_generation,
                last_transition_time=transition,
            )
        )
    if not found:
        updated.append(
            Condition(
                type=type,
                status=status,
                reason=reason,
                message=message,
                observed_generation=observed_generation,
                last_transition_time=rfc3339(now),
            )
        )
    return updated


class StatusBase(StatusModel):
    """What every status has: the generation seen, a phase for people, and conditions."""

    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="The .metadata.generation the operator last acted on.",
    )
    phase: str | None = Field(
        default=None, max_length=32, description="A one-word summary for kubectl get."
    )
    conditions: Annotated[list[Condition], ListMap("type")] = Field(
        default_factory=list,
        max_length=32,
        description="The resource's conditions; Ready is True only when it really works.",
    )


class ResourceList(SpecModel):
    """Amounts of CPU and memory."""

    cpu: Quantity | None = Field(default=None, description="CPU, e.g. 500m or 2.")
    memory: Quantity | None = Field(default=None, description="Memory, e.g. 512Mi or 2Gi.")


_QUANTITY_SUFFIX: Final[dict[str, Decimal | int]] = {
    "": 1, "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip


def quantity_value(quantity: int | str) -> Decimal:
    """The amount a (validated) `Quantity` stands for: ``500m`` is 0.5, ``1Ki`` is 1024."""
    if isinstance(quantity, int):
        return Decimal(quantity)
    text = quantity.lstrip("+")
    number = text.rstrip("numkKMGTPEi")
    suffix = text[len(number) :]
    try:
        if "e" in number.lower() or suffix not in _QUANTITY_SUFFIX:
            return Decimal(text)  # an exponent (1e3): Decimal reads it whole
        return Decimal(number) * _QUANTITY_SUFFIX[suffix]
    except InvalidOperation:
        # A ValueError, so that a validator calling this reports the field, not a crash.
        raise ValueError("is not a Kubernetes quantity") from None


def requests_over_limits(resources: ResourceRequirements | None) -> RuleViolation | None:
    """The first request above its limit (located at ``requests.<resource>``), or None.

    The API server refuses such a pod; a spec that would render one is refused with the
    field named instead. (No CEL rule: the quantity library is missing on some supported
    API servers.)
    """
    if resources is None or resources.requests is None or resources.limits is None:
        return None
    for resource in ("cpu", "memory"):
        request = getattr(resources.requests, resource)
        limit = getattr(resources.limits, resource)
        if (
            request is not None
            and limit is not None
            and quantity_value(request) > quantity_value(limit)
        ):
            return RuleViolation(
                ("requests", resource),
                f"{request} is more than limits.{resource} ({limit}); a request cannot "
                "exceed its limit",
            )
    return None


class ResourceRequirements(SpecModel):
    """Compute resources of a container (as in a Pod's resources)."""

    requests: ResourceList | None = Field(
        default=None, description="What the container is guaranteed (used for scheduling)."
    )
    limits: ResourceList | None = Field(default=None, description="The most the container may use.")

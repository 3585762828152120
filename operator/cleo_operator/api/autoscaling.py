"""The autoscaling/v2 parts of a CleoTenant, typed: metrics (``MetricSpec``) and behavior.

Why typed, when the HPA validates them anyway: passed through as raw JSON, a typo in a
metric got past ``kubectl apply`` of the CleoTenant and surfaced later, as the API server's
refusal of the HPA in a condition. Typed, the API server refuses it at the door, naming the
field (``spec.autoscaling.metrics[0].pods.target.type``), and ``kubectl explain`` describes
every field. The JSON names are autoscaling/v2's, so metrics written for an HPA paste as is.

The rules are the HPA's own (``pkg/apis/autoscaling/validation``), plus two that make a
typo an error instead of a surprise at run time:

- A target's ``type`` names the one field it sets: ``Utilization`` sets
  ``averageUtilization``, ``Value`` sets ``value``, ``AverageValue`` sets ``averageValue``.
  The HPA accepts a mismatch and reads targets by field, not by type; a reader of the spec
  reads the type.
- Each source takes only the target types the HPA controller reads for it: Resource and
  ContainerResource ``Utilization`` or ``AverageValue``; Pods ``AverageValue``; Object and
  External ``Value`` or ``AverageValue``. The enum of each source's target says so, so the
  API server's message lists what is allowed.
- Resource names are ``cpu`` or ``memory``: the resource metrics API serves nothing else,
  so anything else is a typo (``memroy``) that would never scale.

Names of metrics are text the tenant's author writes and the operator later quotes in the
Autoscaling condition: they are bounded (253 characters) and may hold no whitespace or
control characters, besides the HPA's own ban on ``/``, ``%``, ``.`` and ``..``.

CEL cost: the API server estimates each rule's cost times how often it may run (16 metrics,
five sources each) and refuses a CRD whose total is over its budget. So the rules here are
``has()`` and comparisons only, each source's target carries only its own fields, and a
positive quantity is a schema pattern: a version with a CEL ``matches()`` per quantity was
refused at three times the budget (tests/integration/test_crds_cluster.py installs the CRD
on a real API server).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import ROUND_CEILING, Decimal
from typing import Annotated, Any, Final, Generic, Literal, TypeVar

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, model_validator

from cleo_operator.api.base import DnsLabel, Quantity, SpecModel, quantity_value
from cleo_operator.api.errors import RuleViolation, check_block_of_type
from cleo_operator.api.labels import LABEL_KEY_PATTERN, Labels, LabelValue
from cleo_operator.api.schema import Extra, Matches, Rules, cel, validations

__all__ = [
    "MAX_PERIOD_SECONDS",
    "MAX_STABILIZATION_WINDOW_SECONDS",
    "POSITIVE_QUANTITY_PATTERN",
    "SOURCE_FIELDS",
    "ContainerResourceMetricSource",
    "CrossVersionObjectReference",
    "ExternalMetricSource",
    "HPAScalingPolicy",
    "HPAScalingRules",
    "HorizontalPodAutoscalerBehavior",
    "LabelSelector",
    "LabelSelectorRequirement",
    "MetricIdentifier",
    "MetricSpec",
    "NamedMetricSource",
    "ObjectMetricSource",
    "PodsMetricSource",
    "PodsTarget",
    "ResourceMetricSource",
    "ResourceTarget",
    "ValueTarget",
]

MAX_STABILIZATION_WINDOW_SECONDS: Final = 3600
"""The HPA's bound on a stabilization window (validation.MaxStabilizationWindowSeconds)."""

MAX_PERIOD_SECONDS: Final = 1800
"""The HPA's bound on a scaling policy's period (validation.MaxPeriodSeconds)."""

INT32_MAX: Final = 2**31 - 1

MetricSourceType = Literal["Resource", "ContainerResource", "Pods", "Object", "External"]

SOURCE_FIELDS: Final[dict[str, str]] = {
    "Resource": "resource",
    "ContainerResource": "containerResource",
    "Pods": "pods",
    "Object": "object",
    "External": "external",
}
"""Each metric source type and the field (API name) that holds it."""

_TARGET_FIELDS: Final = {
    "Utilization": "averageUtilization",
    "Value": "value",
    "AverageValue": "averageValue",
}


def _positive(value: int | str) -> int | str:
    if quantity_value(value) <= 0:
        raise ValueError("must be greater than zero, e.g. 100 or 500m")
    return value


# A quantity is positive when its mantissa (the digits before any suffix or exponent) holds
# a non-zero digit. Said as a pattern, not CEL: a regular expression in CEL costs by the
# string's length, and on an int-or-string that the API server cannot bound, the CRD's
# cost estimate went over its budget (the quantity library is not on every API server).
POSITIVE_QUANTITY_PATTERN: Final = (
    r"^\+?(([0-9]*[1-9][0-9]*(\.[0-9]*)?)|([0-9]+\.[0-9]*[1-9][0-9]*)|(\.[0-9]*[1-9][0-9]*))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?[0-9]+))?$"
)


def _number_as_quantity(value: Any) -> Any:
    """A bare decimal number (``averageValue: 0.5``), as the HPA takes it, as a quantity
    string: a release that stored metrics raw let tenants write them, and the HPA reads them
    the same. (New ones are refused by the CRD's int-or-string type, which names the field.)"""
    if isinstance(value, float):
        if not math.isfinite(value):
            return value  # refused as no quantity
        text = format(Decimal(repr(value)), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    return value


_NANO: Final = Decimal("1e-9")
_INT64_MAX: Final = 2**63 - 1


def _as_the_api_server_stores(value: int | str) -> int | str:
    """`value` as the API server stores it in the HPA, so that the HPA read back equals the
    one applied (else every reconcile applies it again and warns of a drift): rounded up to
    whole nanounits (``1.5n`` is ``2n``), and a binary amount over 2^63-1 capped there."""
    if isinstance(value, int):
        return value
    amount = quantity_value(value)
    nanos = amount / _NANO
    if nanos != nanos.to_integral_value():
        return f"{nanos.to_integral_value(rounding=ROUND_CEILING)}n"
    if value.endswith("i") and amount > _INT64_MAX:
        return str(_INT64_MAX)
    return value


PositiveQuantity = Annotated[
    Quantity,
    BeforeValidator(_number_as_quantity),
    AfterValidator(_positive),
    AfterValidator(_as_the_api_server_stores),
    Extra({"pattern": POSITIVE_QUANTITY_PATTERN}),
    Rules(cel("type(self) != int || self > 0", "{path} must be greater than zero")),
]
"""A `Quantity` above zero, as the HPA requires of its targets."""


def _not_dot(name: str) -> str:
    if name in (".", ".."):
        raise ValueError("must not be '.' or '..'")
    return name


# Spaces, line breaks and invisible or reordering characters (Unicode's Zs, Zl, Zp, Cc and
# the Cf that matter: bidirectional controls, zero widths, the byte order mark), spelled out:
# Go's regular expressions, which the API server runs, read `\s` as ASCII only, so a `\s`
# here let the API server take what pydantic then refused (after the tenant was stored).
# Written as Go writes them (\x{2028}); `Matches` gives Python the same characters.
NOT_IN_NAMES: Final = (
    r"\x00-\x20\x7f-\x9f\x{a0}\x{ad}\x{61c}\x{1680}\x{180e}\x{2000}-\x{200f}"
    r"\x{2028}-\x{202f}\x{205f}-\x{206f}\x{3000}\x{feff}\x{fff9}-\x{fffb}"
)
PATH_SEGMENT_PATTERN: Final = f"^[^/%{NOT_IN_NAMES}]+$"

PathSegment = Annotated[
    str,
    Field(min_length=1, max_length=253),
    Matches(
        PATH_SEGMENT_PATTERN,
        "a name without '/', '%', spaces, line breaks, control or invisible characters",
    ),
    AfterValidator(_not_dot),
    Rules(cel("self != '.' && self != '..'", "{path} must not be '.' or '..'")),
]
"""A name the HPA puts into an API path (metric names, described objects)."""


# As the HPA parses it (schema.ParseGroupVersion): one slash at most, around two non-empty
# parts.
API_VERSION_PATTERN: Final = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[a-z0-9]+$"

# --- selectors and references --------------------------------------------------------------


def _without_empty(data: Any, *keys: str) -> Any:
    """`data` without the `keys` whose value is an empty list or map."""
    if not isinstance(data, Mapping):
        return data
    return {k: v for k, v in data.items() if not (k in keys and v in ([], {}))}


class LabelSelectorRequirement(SpecModel):
    """One expression of a label selector: key, operator and values."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "(self.operator == 'In' || self.operator == 'NotIn') == "
                "(has(self.values) && size(self.values) > 0)",
                "{path}.values must be given for In and NotIn, and only for them",
                field_path=".values",
            )
        )
    )

    key: Annotated[
        str, Field(min_length=1, max_length=317), Matches(LABEL_KEY_PATTERN, "a label key")
    ] = Field(description="The label's key, e.g. queue.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="In, NotIn, Exists or DoesNotExist."
    )
    values: list[LabelValue] | None = Field(
        default=None, max_length=64, description="The values, for In and NotIn."
    )

    @model_validator(mode="before")
    @classmethod
    def _no_empty_values(cls, data: Any) -> Any:
        # The API server drops an empty list (omitempty): the HPA read back would differ.
        return _without_empty(data, "values")

    @model_validator(mode="after")
    def _values_match_operator(self) -> LabelSelectorRequirement:
        wants_values = self.operator in ("In", "NotIn")
        if wants_values != bool(self.values):
            raise RuleViolation(("values",), "must be given for In and NotIn, and only for them")
        return self


class LabelSelector(SpecModel):
    """Labels that select series of a metric (a metav1.LabelSelector)."""

    @model_validator(mode="before")
    @classmethod
    def _no_empty_collections(cls, data: Any) -> Any:
        # As for `values`: `{}` and `[]` are dropped by the API server, so by us too.
        return _without_empty(data, "matchLabels", "matchExpressions")

    match_labels: Labels | None = Field(default=None, description="Labels that must match.")
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None, max_length=16, description="Expressions that must all hold."
    )


class MetricIdentifier(SpecModel):
    """A metric by name, and optionally which of its series."""

    name: PathSegment = Field(description="The metric's name, e.g. requests_per_second.")
    selector: LabelSelector | None = Field(
        default=None, description="Which series of the metric; unset, the metrics API decides."
    )


class CrossVersionObjectReference(SpecModel):
    """The object an Object metric describes, in the tenant's namespace."""

    api_version: (
        Annotated[
            str,
            Field(max_length=253),
            Matches(API_VERSION_PATTERN, "an apiVersion: a version, or group/version"),
        ]
        | None
    ) = Field(default=None, description="apiVersion of the object, e.g. networking.k8s.io/v1.")
    kind: PathSegment = Field(description="Kind of the object, e.g. Ingress.")
    name: PathSegment = Field(description="Name of the object.")


# --- targets -------------------------------------------------------------------------------


def _block_rules(blocks: Mapping[str, str]) -> dict[str, Any]:
    """CEL: the block of each type is set exactly when ``type`` says so (`check_block_of_type`
    is the Python side)."""
    return validations(
        *(
            cel(
                f"has(self.{block}) == (self.type == '{type_}')",
                f"{{path}}.{block} must be set when {{path}}.type is {type_}, and only then",
                field_path=f".{block}",
            )
            for type_, block in blocks.items()
        )
    )


def _target_fields(*types: str) -> dict[str, str]:
    return {type_: _TARGET_FIELDS[type_] for type_ in types}


# Each source's target has only the fields of the types the HPA reads for it: fewer fields
# and rules than one target shape for all (the CEL cost of a rule counts once per source,
# per metric), and a field that does not belong is an unknown field, refused by name.


class ResourceTarget(SpecModel):
    """A CPU or memory target: a utilization of the requests, or an average value."""

    model_config = ConfigDict(
        json_schema_extra=_block_rules(_target_fields("Utilization", "AverageValue"))
    )

    type: Literal["Utilization", "AverageValue"] = Field(
        description="Utilization (percent of requests) or AverageValue (e.g. 500Mi per pod)."
    )
    average_utilization: int | None = Field(
        default=None,
        ge=1,
        le=INT32_MAX,
        description="Percent of the pods' requests to aim for (type Utilization).",
    )
    average_value: PositiveQuantity | None = Field(
        default=None, description="The usage per pod to aim for (type AverageValue)."
    )

    @model_validator(mode="after")
    def _field_matches_type(self) -> ResourceTarget:
        check_block_of_type(self, self.type, _target_fields("Utilization", "AverageValue"))
        return self


class PodsTarget(SpecModel):
    """A Pods metric's target: the average over the pods."""

    type: Literal["AverageValue"] = Field(
        description="AverageValue: a Pods metric is averaged over the pods."
    )
    average_value: PositiveQuantity = Field(description="The value per pod to aim for.")


class ValueTarget(SpecModel):
    """An Object or External metric's target: its value, or its value per pod."""

    model_config = ConfigDict(
        json_schema_extra=_block_rules(_target_fields("Value", "AverageValue"))
    )

    type: Literal["Value", "AverageValue"] = Field(
        description="Value (the metric as a whole) or AverageValue (divided by the pods)."
    )
    value: PositiveQuantity | None = Field(
        default=None, description="The metric's value to aim for (type Value)."
    )
    average_value: PositiveQuantity | None = Field(
        default=None, description="The value per pod to aim for (type AverageValue)."
    )

    @model_validator(mode="after")
    def _field_matches_type(self) -> ValueTarget:
        check_block_of_type(self, self.type, _target_fields("Value", "AverageValue"))
        return self


# --- sources -------------------------------------------------------------------------------

ResourceName = Literal["cpu", "memory"]
TargetT = TypeVar("TargetT", PodsTarget, ValueTarget)


class ResourceMetricSource(SpecModel):
    """CPU or memory of the whole pod, from the resource metrics API (metrics-server)."""

    name: ResourceName = Field(description="cpu or memory.")
    target: ResourceTarget = Field(description="What to aim for.")


class ContainerResourceMetricSource(ResourceMetricSource):
    """CPU or memory of one container of the pods, from the resource metrics API."""

    container: DnsLabel = Field(description="The container's name, e.g. cleoai.")


class NamedMetricSource(SpecModel, Generic[TargetT]):
    """A metric by name from a custom or external metrics API, and its target."""

    metric: MetricIdentifier = Field(description="The metric.")
    target: TargetT = Field(description="What to aim for.")


PodsMetricSource = NamedMetricSource[PodsTarget]
"""A metric of each pod, from the custom metrics API (e.g. requests per second)."""

ExternalMetricSource = NamedMetricSource[ValueTarget]
"""A metric from outside the cluster, from the external metrics API (e.g. queue depth)."""


class ObjectMetricSource(NamedMetricSource[ValueTarget]):
    """A metric of one object of the namespace, from the custom metrics API."""

    described_object: CrossVersionObjectReference = Field(description="The object.")


class MetricSpec(SpecModel):
    """One metric the HPA scales on (an autoscaling/v2 MetricSpec): set the block of its type."""

    model_config = ConfigDict(json_schema_extra=_block_rules(SOURCE_FIELDS))

    type: MetricSourceType = Field(
        description="Resource, ContainerResource, Pods, Object or External: the block to set."
    )
    resource: ResourceMetricSource | None = Field(
        default=None, description="CPU or memory of the pods, for type Resource."
    )
    container_resource: ContainerResourceMetricSource | None = Field(
        default=None, description="CPU or memory of one container, for type ContainerResource."
    )
    pods: PodsMetricSource | None = Field(
        default=None, description="A custom metric of each pod, for type Pods."
    )
    object: ObjectMetricSource | None = Field(
        default=None, description="A custom metric of an object, for type Object."
    )
    external: ExternalMetricSource | None = Field(
        default=None, description="A metric from outside the cluster, for type External."
    )

    @model_validator(mode="after")
    def _block_matches_type(self) -> MetricSpec:
        check_block_of_type(self, self.type, SOURCE_FIELDS)
        return self


# --- behavior ------------------------------------------------------------------------------


class HPAScalingPolicy(SpecModel):
    """At most ``value`` pods (or percent of them) added or removed per ``periodSeconds``."""

    type: Literal["Pods", "Percent"] = Field(description="Pods or Percent.")
    value: int = Field(ge=1, le=INT32_MAX, description="How many pods, or what percent.")
    period_seconds: int = Field(
        ge=1, le=MAX_PERIOD_SECONDS, description="The window the policy looks back on, 1..1800."
    )


class HPAScalingRules(SpecModel):
    """How fast the HPA scales in one direction.

    No ``tolerance``: the HPA has it from 1.33, behind a feature gate that is off by default
    until 1.35. Where it is not served, the apply of the HPA fails (1.30-1.32) or the field
    is dropped and re-applied at every reconcile (1.33-1.34) on clusters this operator
    supports.
    """

    stabilization_window_seconds: int | None = Field(
        default=None,
        ge=0,
        le=MAX_STABILIZATION_WINDOW_SECONDS,
        description=(
            "Seconds of past recommendations considered before scaling (0..3600); unset, "
            "0 for scaling up and 300 for scaling down."
        ),
    )
    select_policy: Literal["Max", "Min", "Disabled"] | None = Field(
        default=None,
        description="Max (default) or Min of the policies' limits; Disabled stops scaling.",
    )
    policies: list[HPAScalingPolicy] | None = Field(
        default=None,
        min_length=1,
        max_length=10,
        description="Limits on the change per period; unset, the HPA's defaults.",
    )


class HorizontalPodAutoscalerBehavior(SpecModel):
    """Scale-up and scale-down rules (the HPA's behavior)."""

    scale_up: HPAScalingRules | None = Field(default=None, description="Rules for scaling up.")
    scale_down: HPAScalingRules | None = Field(default=None, description="Rules for scaling down.")

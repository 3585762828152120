"""A quantity the patterns let through but no number reads (``1e1.5``) is a `SpecError`
naming the field, never an exception that escapes validation: every caller of
`parse_tenant_spec` (the tenant and backup reconcilers, failover, the finalizer) catches
`SpecError` only, and anything else loops a reconcile with a traceback and no status."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import field_validator

from cleo_operator.api.autoscaling import POSITIVE_QUANTITY_PATTERN
from cleo_operator.api.base import QUANTITY_PATTERN, SpecModel
from cleo_operator.api.errors import SpecError
from cleo_operator.api.resource import parse_spec
from cleo_operator.api.tenant import parse_tenant_spec
from tests.unit.api_support import assert_refused_naming

IMAGE = "registry.example.com/cleoai:1.4.2"


def _pods_target(value: str) -> dict[str, Any]:
    metric = {
        "type": "Pods",
        "pods": {
            "metric": {"name": "rps"},
            "target": {"type": "AverageValue", "averageValue": value},
        },
    }
    return {"workload": {"image": IMAGE}, "autoscaling": {"metrics": [metric]}}


def _external_value(value: str) -> dict[str, Any]:
    metric = {
        "type": "External",
        "external": {"metric": {"name": "q"}, "target": {"type": "Value", "value": value}},
    }
    return {"workload": {"image": IMAGE}, "autoscaling": {"metrics": [metric]}}


def _resource_average(value: str) -> dict[str, Any]:
    metric = {
        "type": "Resource",
        "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": value}},
    }
    return {"workload": {"image": IMAGE}, "autoscaling": {"metrics": [metric]}}


def _requests(value: str) -> dict[str, Any]:
    resources = {"requests": {"cpu": value}, "limits": {"cpu": "2"}}
    return {"workload": {"image": IMAGE, "resources": resources}}


# (a spec with the quantity at one field, that field)
EVERY_QUANTITY_FIELD = [
    (_pods_target, "spec.autoscaling.metrics[0].pods.target.averageValue"),
    (_external_value, "spec.autoscaling.metrics[0].external.target.value"),
    (_resource_average, "spec.autoscaling.metrics[0].resource.target.averageValue"),
    (_requests, "spec.workload.resources.requests.cpu"),
    (lambda v: {"workload": {"image": IMAGE, "resources": {"limits": {"memory": v}}}},
     "spec.workload.resources.limits.memory"),
    (lambda v: {"quota": {"cpu": v}}, "spec.quota.cpu"),
    (lambda v: {"limits": {"maxMemory": v}}, "spec.limits.maxMemory"),
]  # fmt: skip


@pytest.mark.parametrize("text", ["1e1.5", "1e.5", "2E+3.0", "5e-.5"])
@pytest.mark.parametrize(
    ("body", "field"), EVERY_QUANTITY_FIELD, ids=[f for _, f in EVERY_QUANTITY_FIELD]
)
def test_a_fractional_exponent_is_a_spec_error_not_a_crash(
    body: Any, field: str, text: str
) -> None:
    assert_refused_naming(parse_tenant_spec, body(text), field, "quantity")


@pytest.mark.parametrize("text", ["1e1.5", "1e.5", "1E+0.5"])
def test_neither_crd_pattern_takes_a_fractional_exponent(text: str) -> None:
    # Kubernetes' own parser refuses it; the CRD must too (the API server test sends it).
    assert re.fullmatch(QUANTITY_PATTERN, text) is None
    assert re.fullmatch(POSITIVE_QUANTITY_PATTERN, text) is None


@pytest.mark.parametrize("text", ["1e3", "1E-3", "2e+2", "+1.5e3"])
def test_integer_exponents_still_match(text: str) -> None:
    assert re.fullmatch(QUANTITY_PATTERN, text) is not None
    assert re.fullmatch(POSITIVE_QUANTITY_PATTERN, text) is not None


class _Exploding(SpecModel):
    """A model whose validator fails the way Decimal did: not with a ValueError."""

    amount: str

    @field_validator("amount")
    @classmethod
    def _explode(cls, value: str) -> str:
        raise ArithmeticError(f"cannot read {value}")


def test_any_exception_from_validation_becomes_a_spec_error() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(_Exploding, "Widget", {"amount": "x"})
    assert caught.value.kind == "Widget"
    # pydantic gives no location for an exception it does not convert: the spec as a whole.
    assert [issue.path for issue in caught.value.issues] == ["spec"]
    assert "could not be validated" in str(caught.value)
    assert "cannot read x" not in str(caught.value)  # exception text may quote the input

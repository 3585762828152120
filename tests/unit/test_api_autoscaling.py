"""The typed autoscaling/v2 metrics and behavior of a tenant: HPA JSON is accepted as written,
typos are refused naming the field (the same cases tests/integration/test_crds_cluster.py
sends to the API server)."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from cleo_operator.api.autoscaling import POSITIVE_QUANTITY_PATTERN, MetricSpec
from cleo_operator.api.base import QUANTITY_PATTERN, quantity_value
from cleo_operator.api.errors import SpecError
from cleo_operator.api.schema import python_pattern
from cleo_operator.api.tenant import parse_tenant_spec
from tests.unit.api_support import assert_refused_naming

EVERY_SOURCE: list[dict[str, Any]] = [
    {
        "type": "Resource",
        "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "1Gi"}},
    },
    {
        "type": "ContainerResource",
        "containerResource": {
            "name": "cpu",
            "container": "cleoai",
            "target": {"type": "Utilization", "averageUtilization": 60},
        },
    },
    {
        "type": "Pods",
        "pods": {
            "metric": {
                "name": "requests_per_second",
                "selector": {"matchLabels": {"route": "chat"}},
            },
            "target": {"type": "AverageValue", "averageValue": "100"},
        },
    },
    {
        "type": "Object",
        "object": {
            "describedObject": {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "name": "main-route",
            },
            "metric": {"name": "requests-per-second"},
            "target": {"type": "Value", "value": "2k"},
        },
    },
    {
        "type": "External",
        "external": {
            "metric": {
                "name": "queue_depth",
                "selector": {
                    "matchExpressions": [
                        {"key": "queue", "operator": "In", "values": ["chat", "batch"]},
                        {"key": "paused", "operator": "DoesNotExist"},
                    ]
                },
            },
            "target": {"type": "AverageValue", "averageValue": 30},
        },
    },
]
"""One metric of each source type, as a user writes them for an HPA."""

FULL_BEHAVIOR: dict[str, Any] = {
    "scaleUp": {
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [
            {"type": "Percent", "value": 100, "periodSeconds": 15},
            {"type": "Pods", "value": 4, "periodSeconds": 15},
        ],
    },
    "scaleDown": {
        "stabilizationWindowSeconds": 300,
        "selectPolicy": "Min",
        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
    },
}


def autoscaling(**fields: Any) -> dict[str, Any]:
    return {"workload": {"image": "registry.example.com/cleoai:1.4.2"}, "autoscaling": fields}


def with_metric(metric: dict[str, Any]) -> dict[str, Any]:
    return autoscaling(metrics=[metric])


def policy(direction: str, **fields: Any) -> dict[str, Any]:
    """A behavior with one policy of ``direction`` (scaleUp, scaleDown), ``fields`` changed."""
    one = {"type": "Pods", "value": 1, "periodSeconds": 60, **fields}
    return autoscaling(behavior={direction: {"policies": [one]}})


def pods_metric(**target: Any) -> dict[str, Any]:
    metric = copy.deepcopy(EVERY_SOURCE[2])
    metric["pods"]["target"] = target
    return metric


def described_object(**fields: Any) -> dict[str, Any]:
    metric = copy.deepcopy(EVERY_SOURCE[3])
    metric["object"]["describedObject"].update(fields)
    return metric


def external_selector(selector: dict[str, Any]) -> dict[str, Any]:
    metric = copy.deepcopy(EVERY_SOURCE[4])
    metric["external"]["metric"]["selector"] = selector
    return metric


def test_every_source_and_a_full_behavior_dump_back_as_written() -> None:
    spec = parse_tenant_spec(autoscaling(metrics=EVERY_SOURCE, behavior=FULL_BEHAVIOR))
    assert [m.to_api() for m in spec.autoscaling.metrics] == EVERY_SOURCE
    assert spec.autoscaling.behavior is not None
    assert spec.autoscaling.behavior.to_api() == FULL_BEHAVIOR
    assert spec.autoscaling.metrics[4].external is not None
    assert spec.autoscaling.metrics[4].external.metric.name == "queue_depth"


# (the metric or behavior, the field the error must name, words of its message)
REFUSED: list[tuple[dict[str, Any], str, str]] = [
    (
        with_metric({"type": "Pods", "external": EVERY_SOURCE[4]["external"]}),
        "spec.autoscaling.metrics[0].pods",
        "is required when type is Pods",
    ),
    (
        with_metric({**EVERY_SOURCE[2], "external": EVERY_SOURCE[4]["external"]}),
        "spec.autoscaling.metrics[0].external",
        "must not be set when type is Pods",
    ),
    (with_metric({**EVERY_SOURCE[2], "type": "Pod"}), "spec.autoscaling.metrics[0].type", "'Pods'"),
    (
        with_metric({"pods": EVERY_SOURCE[2]["pods"]}),
        "spec.autoscaling.metrics[0].type",
        "required",
    ),
    (
        with_metric({"type": "Pods", "pods": {"metric": {"name": "rps"}}}),
        "spec.autoscaling.metrics[0].pods.target",
        "is required",
    ),
    (
        with_metric(pods_metric(type="Utilization", averageValue="100")),
        "spec.autoscaling.metrics[0].pods.target.type",
        "'AverageValue'",
    ),
    (
        with_metric(pods_metric(type="AverageValue", averageUtilization=50)),
        "spec.autoscaling.metrics[0].pods.target.averageUtilization",
        "is not a field of this API",
    ),
    (
        with_metric(pods_metric(type="AverageValue", averageValue="0")),
        "spec.autoscaling.metrics[0].pods.target.averageValue",
        "greater than zero",
    ),
    (
        with_metric(pods_metric(type="AverageValue", averageValue="100", value="5")),
        "spec.autoscaling.metrics[0].pods.target.value",
        "is not a field of this API",
    ),
    (
        with_metric(
            {
                "type": "Resource",
                "resource": {"name": "memory", "target": {"type": "Utilization"}},
            }
        ),
        "spec.autoscaling.metrics[0].resource.target.averageUtilization",
        "is required when type is Utilization",
    ),
    (
        with_metric(
            {
                "type": "Resource",
                "resource": {
                    "name": "memroy",
                    "target": {"type": "Utilization", "averageUtilization": 80},
                },
            }
        ),
        "spec.autoscaling.metrics[0].resource.name",
        "'cpu' or 'memory'",
    ),
    (
        with_metric({**EVERY_SOURCE[4], "external": {"metric": {"name": "a/b"}, "target": {}}}),
        "spec.autoscaling.metrics[0].external.metric.name",
        "without '/'",
    ),
    (
        with_metric(
            {
                "type": "External",
                "external": {
                    "metric": {"name": ".."},
                    "target": {"type": "Value", "value": 1},
                },
            }
        ),
        "spec.autoscaling.metrics[0].external.metric.name",
        "must not be '.' or '..'",
    ),
    (
        with_metric(
            {
                "type": "External",
                "external": {
                    "metric": {
                        "name": "queue_depth",
                        "selector": {"matchExpressions": [{"key": "queue", "operator": "In"}]},
                    },
                    "target": {"type": "Value", "value": 1},
                },
            }
        ),
        "spec.autoscaling.metrics[0].external.metric.selector.matchExpressions[0].values",
        "must be given for In and NotIn",
    ),
    (
        autoscaling(behavior={"scaleUp": {"stabilizationWindowSeconds": -1}}),
        "spec.autoscaling.behavior.scaleUp.stabilizationWindowSeconds",
        "greater than or equal to 0",
    ),
    (
        autoscaling(behavior={"scaleDown": {"stabilizationWindowSeconds": 3601}}),
        "spec.autoscaling.behavior.scaleDown.stabilizationWindowSeconds",
        "less than or equal to 3600",
    ),
    (
        autoscaling(behavior={"scaleUp": {"selectPolicy": "Maximum"}}),
        "spec.autoscaling.behavior.scaleUp.selectPolicy",
        "'Max'",
    ),
    (
        autoscaling(behavior={"scaleUp": {"policies": []}}),
        "spec.autoscaling.behavior.scaleUp.policies",
        "at least 1",
    ),
    (
        policy("scaleUp", type="Replicas"),
        "spec.autoscaling.behavior.scaleUp.policies[0].type",
        "'Pods' or 'Percent'",
    ),
    (
        policy("scaleDown", value=0),
        "spec.autoscaling.behavior.scaleDown.policies[0].value",
        "greater than or equal to 1",
    ),
    (
        policy("scaleDown", periodSeconds=1801),
        "spec.autoscaling.behavior.scaleDown.policies[0].periodSeconds",
        "less than or equal to 1800",
    ),
    # Not on every supported cluster (1.33+, behind a feature gate): an HPA with it fails to
    # apply on 1.30-1.32 and is silently stripped, then re-applied forever, on 1.33-1.34.
    (
        autoscaling(behavior={"scaleDown": {"tolerance": "0.05"}}),
        "spec.autoscaling.behavior.scaleDown.tolerance",
        "is not a field of this API",
    ),
    # Kubernetes' parser refuses a fractional exponent; no number reads it either.
    (
        with_metric(pods_metric(type="AverageValue", averageValue="1e1.5")),
        "spec.autoscaling.metrics[0].pods.target.averageValue",
        "quantity",
    ),
    (
        with_metric(pods_metric(type="AverageValue", averageValue="1e.5")),
        "spec.autoscaling.metrics[0].pods.target.averageValue",
        "quantity",
    ),
    # The HPA parses it as group/version and refuses a second slash.
    (
        with_metric(described_object(apiVersion="networking.k8s.io/v1/extra")),
        "spec.autoscaling.metrics[0].object.describedObject.apiVersion",
        "apiVersion",
    ),
    (
        with_metric(described_object(apiVersion="/v1")),
        "spec.autoscaling.metrics[0].object.describedObject.apiVersion",
        "apiVersion",
    ),
    # A label key's name part is at most 63 characters (the prefix may be longer).
    (
        with_metric(external_selector({"matchExpressions": [
            {"key": "example.com/" + "k" * 64, "operator": "Exists"}
        ]})),
        "spec.autoscaling.metrics[0].external.metric.selector.matchExpressions[0].key",
        "label key",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "field", "message"), REFUSED, ids=[f"{f}:{m}"[-70:] for _, f, m in REFUSED]
)
def test_a_typo_is_refused_naming_the_field(body: dict[str, Any], field: str, message: str) -> None:
    assert_refused_naming(parse_tenant_spec, body, field, message)


@pytest.mark.parametrize(
    "name",
    [
        "queue depth",
        "queue\ndepth",
        "x" * 254,
        "",
        "50%",
        *(f"queue{c}depth" for c in "\u00a0\u0085\u2028\u2029\u202e\u2066\u200b\u3000\ufeff"),
    ],
)
def test_metric_names_that_would_break_a_message_or_a_path_are_refused(name: str) -> None:
    metric = {
        "type": "External",
        "external": {"metric": {"name": name}, "target": {"type": "Value", "value": 1}},
    }
    with pytest.raises(ValueError, match="name"):
        MetricSpec.model_validate(metric)


def test_positive_quantities_in_every_form_are_accepted() -> None:
    for value in ("1", "500m", "0.5", "+2", ".5", "1e3", "1n", "512Ki", "1.5Gi", 7):
        metric = pods_metric(type="AverageValue", averageValue=value)
        assert parse_tenant_spec(with_metric(metric)).autoscaling.metrics[0].pods is not None
    for zero in ("0", "0.0", "0m", "0e3", "+0", "0Ki", 0):
        metric = pods_metric(type="AverageValue", averageValue=zero)
        assert_refused_naming(
            parse_tenant_spec,
            with_metric(metric),
            "spec.autoscaling.metrics[0].pods.target.averageValue",
            "greater than zero",
        )


QUANTITIES = ["1", "500m", "0.5", "+2", ".5", "1e3", "2e-3", "1n", "0", "0.0", "0m", "0e3"]
QUANTITIES += ["+0", "00", "0.", "0.01", ".0", "0.000001", "007", "1.", "10Ki", "0Ki", "1.5Gi"]


@pytest.mark.parametrize("text", QUANTITIES)
def test_the_crd_pattern_for_positive_quantities_agrees_with_their_value(text: str) -> None:
    assert re.fullmatch(QUANTITY_PATTERN, text)
    positive = re.fullmatch(POSITIVE_QUANTITY_PATTERN, text) is not None
    assert positive == (quantity_value(text) > 0)


def test_binary_suffixes_have_their_value() -> None:
    # "Ki" once read as "K" and "i", which is no number at all.
    assert quantity_value("10Ki") == 10 * 1024
    assert quantity_value("1.5Gi") == 1.5 * 2**30
    assert quantity_value("2k") == 2000


@pytest.mark.parametrize(
    ("number", "text"), [(0.5, "0.5"), (2.0, "2"), (1e-3, "0.001"), (1.25e6, "1250000")]
)
def test_a_stored_number_target_reads_as_the_quantity_the_hpa_takes(
    number: float, text: str
) -> None:
    # An older release stored metrics raw, and the HPA takes a bare number.
    metric = pods_metric(type="AverageValue", averageValue=number)
    spec = parse_tenant_spec(with_metric(metric))
    assert spec.autoscaling.metrics[0].to_api()["pods"]["target"]["averageValue"] == text


@pytest.mark.parametrize("number", [-0.5, 0.0, float("nan"), float("inf"), True])
def test_a_stored_number_that_is_no_positive_quantity_is_refused(number: Any) -> None:
    metric = pods_metric(type="AverageValue", averageValue=number)
    with pytest.raises(SpecError):
        parse_tenant_spec(with_metric(metric))


@pytest.mark.parametrize(
    ("written", "rendered"),
    [
        ("1.5n", "2n"),
        ("1e-30", "1n"),
        ("0.0000000011", "2n"),
        ("8Ei", str(2**63 - 1)),
        ("7Ei", "7Ei"),
        ("1e19", "1e19"),
        ("500m", "500m"),
    ],
)
def test_a_target_renders_as_the_api_server_stores_it(written: str, rendered: str) -> None:
    # Rounded up to nanounits, binary amounts capped at 2^63-1: else the HPA read back
    # differs from the one applied, and every reconcile applies it again.
    metric = pods_metric(type="AverageValue", averageValue=written)
    spec = parse_tenant_spec(with_metric(metric))
    assert spec.autoscaling.metrics[0].to_api()["pods"]["target"]["averageValue"] == rendered


@pytest.mark.parametrize(
    "selector",
    [
        {"matchLabels": {}},
        {"matchExpressions": []},
        {"matchLabels": {}, "matchExpressions": []},
        {"matchExpressions": [{"key": "paused", "operator": "Exists", "values": []}]},
    ],
)
def test_empty_selector_collections_are_not_rendered(selector: dict[str, Any]) -> None:
    spec = parse_tenant_spec(with_metric(external_selector(selector)))
    rendered = spec.autoscaling.metrics[0].to_api()["external"]["metric"]["selector"]
    assert "matchLabels" not in rendered
    assert all("values" not in e for e in rendered.get("matchExpressions", []))
    assert rendered.get("matchExpressions") != []


@pytest.mark.parametrize("name", ["requests_per_second", "queue-depth:p99", "Zähler", "キュー"])
def test_names_in_any_script_without_spaces_or_controls_are_taken(name: str) -> None:
    metric = {
        "type": "External",
        "external": {"metric": {"name": name}, "target": {"type": "Value", "value": 1}},
    }
    assert MetricSpec.model_validate(metric).external is not None


def test_go_code_points_read_the_same_in_python() -> None:
    pattern = python_pattern(r"^[^\x{2028}\x{a0}-\x{ad}-]+$")
    assert re.fullmatch(pattern, "queue_depth")
    for refused in ("a\u2028b", "a\u00a0b", "a\u00adb", "a-b"):
        assert re.fullmatch(pattern, refused) is None, ascii(refused)

"""The chart's `tracing.collector` and `tracing.workloads` values reach tenants' pods and
NetworkPolicies, through the operator's own code.

The real `helm template` renders the chart, the operator container's environment is taken
from the rendered Deployment as it is, the operator's `TracingSettings` is built from exactly
that environment (the code the operator runs at start), and `render_tenant` renders a
tenant: its pods' OTEL_* variables and its policy to the collector must be what the values
say. Off by default; misspelt or ill-typed values fail at `helm template`, naming the value;
a collector a tenant could match passes the chart's types but stops the operator's start.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cleo_operator.reconcile.tracing_settings import TracingSettings
from cleo_operator.render.network import ALLOW_COLLECTOR
from tests.integration import test_helm_template as template
from tests.integration.test_helm_backup import operator_env
from tests.integration.test_helm_template import CHART, RELEASE, render, run_helm, values_file
from tests.unit.render.specs import FULL, spec_of
from tests.unit.render.specs import render as render_tenant

helm = template.helm
"""The template tests' fixture: the toolchain's helm, its state in a temporary folder."""

NAMESPACE_SELECTOR = {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}
POD_SELECTOR = {"matchLabels": {"app.kubernetes.io/name": "otel-collector"}}
ENDPOINT = "http://otel-collector.observability.svc:4318"
TRACED: dict[str, Any] = {
    "tracing": {
        "collector": {"namespaceSelector": NAMESPACE_SELECTOR, "podSelector": POD_SELECTOR},
        "workloads": {"enabled": True, "endpoint": ENDPOINT},
    }
}
BY_ADDRESS: dict[str, Any] = {
    "tracing": {
        "collector": {"ipBlock": {"cidr": "192.0.2.10/32"}, "grpcPort": 4317},
        "workloads": {"enabled": True, "endpoint": ENDPOINT, "serviceName": "cleo-ai"},
    }
}


def tracing_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if "TRACING" in k or k.startswith("CLEO_WORKLOAD")}


@pytest.mark.parametrize("values", [TRACED, BY_ADDRESS], ids=["selectors", "address"])
def test_lint_strict_passes(helm: list[str], tmp_path: Path, values: dict[str, Any]) -> None:
    result = run_helm(
        helm, "lint", "--strict", str(CHART), "--values", str(values_file(tmp_path, values))
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_by_default_nothing_of_tracing_reaches_the_operator(
    helm: list[str], tmp_path: Path
) -> None:
    env = operator_env(render(helm, tmp_path, {}))
    assert tracing_env(env) == {}
    assert TracingSettings.from_environment(env) == TracingSettings()


def test_the_values_give_tenant_pods_the_otel_variables_and_the_collector_policy(
    helm: list[str], tmp_path: Path
) -> None:
    env = operator_env(render(helm, tmp_path, TRACED))
    assert tracing_env(env) == {
        "CLEO_TRACING_COLLECTOR": json.dumps(
            {
                "grpcPort": None,
                "ipBlock": {},
                "namespaceSelector": NAMESPACE_SELECTOR,
                "podSelector": POD_SELECTOR,
                "port": 4318,
            },
            separators=(",", ":"),
        ),
        "CLEO_WORKLOAD_TRACING": "true",
        "CLEO_WORKLOAD_OTLP_ENDPOINT": ENDPOINT,
        "CLEO_WORKLOAD_SERVICE_NAME": "cleoai",
    }
    settings = TracingSettings.from_environment(env)
    assert settings.jobs_collector is None  # the runner's traces follow tracing.enabled
    objects = render_tenant(spec_of(), workload_tracing=settings.workloads)
    (policy,) = [o for o in objects if o["metadata"]["name"] == ALLOW_COLLECTOR]
    (rule,) = policy["spec"]["egress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 4318}]
    (peer,) = rule["to"]
    assert peer["namespaceSelector"]["matchLabels"] == NAMESPACE_SELECTOR["matchLabels"]
    assert peer["podSelector"] == POD_SELECTOR
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    pod_env = {e["name"]: e.get("value") for e in container["env"]}
    assert pod_env["OTEL_EXPORTER_OTLP_ENDPOINT"] == ENDPOINT
    assert pod_env["OTEL_SERVICE_NAME"] == "cleoai"
    assert pod_env["OTEL_RESOURCE_ATTRIBUTES"] == (
        f"cleoai.tenant=acme,k8s.namespace.name={FULL['namespace']}"
    )


def test_a_collector_by_address_with_grpc(helm: list[str], tmp_path: Path) -> None:
    settings = TracingSettings.from_environment(operator_env(render(helm, tmp_path, BY_ADDRESS)))
    assert settings.workloads is not None
    assert settings.workloads.service_name == "cleo-ai"
    objects = render_tenant(spec_of(), workload_tracing=settings.workloads)
    (policy,) = [o for o in objects if o["metadata"]["name"] == ALLOW_COLLECTOR]
    assert policy["spec"]["egress"] == [
        {
            "to": [{"ipBlock": {"cidr": "192.0.2.10/32"}}],
            "ports": [{"protocol": "TCP", "port": 4317}, {"protocol": "TCP", "port": 4318}],
        }
    ]


@pytest.mark.security
@pytest.mark.parametrize(
    "collector",
    [
        {"namespaceSelector": {}, "podSelector": POD_SELECTOR},
        {"namespaceSelector": {"matchLabels": {}}, "podSelector": POD_SELECTOR},
        {"namespaceSelector": {"matchLabels": {"cleoai.io/tenant": "acme"}}},
        {"ipBlock": {"cidr": "0.0.0.0/0"}},
    ],
    ids=["podSelector alone", "empty namespaceSelector", "tenant label", "every address"],
)
def test_a_collector_a_tenant_could_match_stops_the_operators_start(
    helm: list[str], tmp_path: Path, collector: dict[str, Any]
) -> None:
    values = {"tracing": {"collector": collector, "workloads": TRACED["tracing"]["workloads"]}}
    env = operator_env(render(helm, tmp_path, values))
    with pytest.raises(ValueError, match=r"^CLEO_TRACING_COLLECTOR: "):
        TracingSettings.from_environment(env)


BAD_VALUES = [
    ("port", ["--set", "tracing.collector.port=0"], "/tracing/collector/port"),
    (
        "grpc port",
        ["--set-string", "tracing.collector.grpcPort=grpc"],
        "/tracing/collector/grpcPort",
    ),
    ("misspelt", ["--set", "tracing.collector.namespace=observability"], "namespace"),
    (
        "expressions",
        ["--set", "tracing.collector.namespaceSelector.matchExpressions[0].key=team"],
        "matchExpressions",
    ),
    ("endpoint", ["--set", "tracing.workloads.endpoint=otel:4318"], "/tracing/workloads/endpoint"),
    (
        "credentials",
        ["--set", "tracing.workloads.endpoint=https://u:p@otel:4318"],
        "/tracing/workloads/endpoint",
    ),
    ("service name", ["--set", "tracing.workloads.serviceName=cleo ai"], "serviceName"),
    ("switch", ["--set-string", "tracing.workloads.enabled=yes"], "/tracing/workloads/enabled"),
    (
        "no endpoint",
        ["--set", "tracing.workloads.enabled=true,tracing.collector.ipBlock.cidr=192.0.2.10/32"],
        "tracing.workloads.endpoint",
    ),
    (
        "no collector",
        ["--set", f"tracing.workloads.enabled=true,tracing.workloads.endpoint={ENDPOINT}"],
        "tracing.collector",
    ),
]


@pytest.mark.parametrize(
    ("args", "names"), [(a, n) for _, a, n in BAD_VALUES], ids=[i for i, _, _ in BAD_VALUES]
)
def test_bad_values_fail_naming_the_value(helm: list[str], args: list[str], names: str) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), *args)
    assert result.returncode != 0, f"helm accepted {args}"
    assert names in result.stderr, result.stderr

"""The operator's workload-tracing settings from its environment: off by default, read once at
start, and a wrong value refused with the variable's name (never silently off)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cleo_operator.core.environment import flag_setting
from cleo_operator.reconcile.backup_settings import BackupSettings
from cleo_operator.reconcile.tracing_settings import TracingSettings
from cleo_operator.render.network import CollectorPeer

COLLECTOR: dict[str, Any] = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "otel-collector"}},
    "ipBlock": {},
    "port": 4318,
    "grpcPort": None,
}
ON = {
    "CLEO_WORKLOAD_TRACING": "true",
    "CLEO_WORKLOAD_OTLP_ENDPOINT": "http://otel-collector.observability.svc:4318",
    "CLEO_TRACING_COLLECTOR": json.dumps(COLLECTOR),
}


def test_tracing_is_off_by_default_and_with_the_charts_empty_collector() -> None:
    assert TracingSettings.from_environment({}) == TracingSettings()
    empty = {"namespaceSelector": {}, "podSelector": {}, "ipBlock": {}, "port": 4318}
    settings = TracingSettings.from_environment({"CLEO_TRACING_COLLECTOR": json.dumps(empty)})
    assert settings == TracingSettings()
    assert BackupSettings.from_environment({}).pod.collector is None


def test_workload_tracing_on_names_endpoint_service_and_collector() -> None:
    settings = TracingSettings.from_environment({**ON, "CLEO_WORKLOAD_SERVICE_NAME": "cleo-ai"})
    assert settings.workloads is not None
    assert settings.workloads.endpoint == ON["CLEO_WORKLOAD_OTLP_ENDPOINT"]
    assert settings.workloads.service_name == "cleo-ai"
    assert settings.workloads.collector == CollectorPeer(
        namespace_labels={"kubernetes.io/metadata.name": "observability"},
        pod_labels={"app.kubernetes.io/name": "otel-collector"},
        ports=(4318,),
    )
    assert settings.jobs_collector is None  # the runner's traces have a switch of their own
    default = TracingSettings.from_environment(ON)
    assert default.workloads is not None
    assert default.workloads.service_name == "cleoai"


def test_the_backup_runner_reaches_the_collector_only_while_its_traces_are_on() -> None:
    by_address = json.dumps({"ipBlock": {"cidr": "192.0.2.10/32"}, "port": 4318, "grpcPort": 4317})
    env = {"CLEO_TRACING_COLLECTOR": by_address}
    assert BackupSettings.from_environment(env).pod.collector is None
    traced = BackupSettings.from_environment({**env, "CLEO_BACKUP_TRACING": "true"})
    assert traced.pod.collector == CollectorPeer(cidr="192.0.2.10/32", ports=(4317, 4318))


@pytest.mark.parametrize(
    ("changes", "variable", "says"),
    [
        ({"CLEO_WORKLOAD_TRACING": "yes"}, "CLEO_WORKLOAD_TRACING", "true or false"),
        ({"CLEO_WORKLOAD_OTLP_ENDPOINT": ""}, "CLEO_WORKLOAD_OTLP_ENDPOINT", "name the OTLP"),
        ({"CLEO_WORKLOAD_OTLP_ENDPOINT": "otel:4318"}, "CLEO_WORKLOAD_OTLP_ENDPOINT", "http"),
        (
            {"CLEO_WORKLOAD_OTLP_ENDPOINT": "http://$(HOST):4318"},
            "CLEO_WORKLOAD_OTLP_ENDPOINT",
            "\\$",
        ),
        ({"CLEO_WORKLOAD_OTLP_ENDPOINT": "http://otel:43x8"}, "CLEO_WORKLOAD_OTLP_ENDPOINT", "URL"),
        ({"CLEO_WORKLOAD_SERVICE_NAME": "cleo ai"}, "CLEO_WORKLOAD_SERVICE_NAME", "letters"),
        ({"CLEO_TRACING_COLLECTOR": ""}, "CLEO_TRACING_COLLECTOR", "name the collector"),
        ({"CLEO_TRACING_COLLECTOR": "{"}, "CLEO_TRACING_COLLECTOR", "not JSON"),
        ({"CLEO_TRACING_COLLECTOR": "[]"}, "CLEO_TRACING_COLLECTOR", "JSON object"),
        (
            {"CLEO_TRACING_COLLECTOR": json.dumps({**COLLECTOR, "namespace": "x"})},
            "CLEO_TRACING_COLLECTOR",
            "unknown key namespace",
        ),
        (
            # An empty namespaceSelector selects every namespace, tenants' too.
            {"CLEO_TRACING_COLLECTOR": json.dumps({**COLLECTOR, "namespaceSelector": {}})},
            "CLEO_TRACING_COLLECTOR",
            "namespaceSelector",
        ),
        (
            {
                "CLEO_TRACING_COLLECTOR": json.dumps(
                    {**COLLECTOR, "namespaceSelector": {"matchLabels": {}}}
                )
            },
            "CLEO_TRACING_COLLECTOR",
            "namespaceSelector",
        ),
        (
            {
                "CLEO_TRACING_COLLECTOR": json.dumps(
                    {
                        **COLLECTOR,
                        "namespaceSelector": {
                            "matchExpressions": [{"key": "team", "operator": "Exists"}]
                        },
                    }
                )
            },
            "CLEO_TRACING_COLLECTOR",
            "matchLabels only",
        ),
        (
            {
                "CLEO_TRACING_COLLECTOR": json.dumps(
                    {**COLLECTOR, "namespaceSelector": {"matchLabels": {"cleoai.io/tenant": "a"}}}
                )
            },
            "CLEO_TRACING_COLLECTOR",
            "tenant namespaces",
        ),
        (
            {"CLEO_TRACING_COLLECTOR": json.dumps({**COLLECTOR, "port": "4318"})},
            "CLEO_TRACING_COLLECTOR",
            "port",
        ),
        (
            {"CLEO_TRACING_COLLECTOR": json.dumps({"ipBlock": {"cidr": "0.0.0.0/0"}})},
            "CLEO_TRACING_COLLECTOR",
            "wider",
        ),
    ],
)
def test_a_wrong_setting_is_refused_naming_the_variable(
    changes: dict[str, str], variable: str, says: str
) -> None:
    with pytest.raises(ValueError, match=says) as refused:
        TracingSettings.from_environment({**ON, **changes})
    assert str(refused.value).startswith(variable), refused.value


@pytest.mark.security
def test_credentials_in_the_endpoint_are_refused_without_being_repeated() -> None:
    endpoint = "https://user:s3cr3t-t0ken@otel.example:4318"
    with pytest.raises(ValueError, match="no credentials") as refused:
        TracingSettings.from_environment({**ON, "CLEO_WORKLOAD_OTLP_ENDPOINT": endpoint})
    assert "s3cr3t" not in str(refused.value)


def test_a_switch_is_true_or_false_and_nothing_else() -> None:
    assert flag_setting({}, "X") is False
    assert flag_setting({"X": " TRUE "}, "X") is True
    assert flag_setting({"X": "false"}, "X", default=True) is False
    for typo in ("ture", "1", "on"):
        with pytest.raises(ValueError, match=f"X='{typo}'"):
            flag_setting({"X": typo}, "X")

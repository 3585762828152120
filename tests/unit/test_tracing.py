"""Tracing's set-up from the OTEL_* variables, its cost when off, and what spans say
(observability/tracing.py), with the in-memory exporter."""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import urllib.request

import pytest
from opentelemetry import trace

from cleo_operator.core.errors import CleoError
from cleo_operator.kube.kinds import CONFIG_MAP
from cleo_operator.observability import tracing
from cleo_operator.observability.logs import (
    JsonFormatter,
    ObjectContextFilter,
    RedactingFilter,
    TraceContextFilter,
)
from cleo_operator.observability.metrics import serve_metrics, timed_reconcile
from cleo_operator.observability.tracing import (
    TracingSettings,
    configure_tracing,
    context_from_traceparent,
    count_write,
    exporter_environment,
    note_reconcile,
    reconcile_span,
    sanitize_statement,
    span,
    traceparent,
)
from tests.harness.fake_kube import FakeKube
from tests.harness.tracing import traced


def test_off_by_default() -> None:
    assert TracingSettings.from_environment({}).enabled is False
    assert TracingSettings.from_environment({"OTEL_SERVICE_NAME": "x"}).enabled is False


@pytest.mark.parametrize(
    ("environ", "enabled", "endpoint"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, True, "http://c:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}, True, "http://c:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c/t"}, True, "http://c/t"),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True, "http://localhost:4318/v1/traces"),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, False, None),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False, None),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, False, None),
    ],
)
def test_settings_from_the_standard_variables(
    environ: dict[str, str], enabled: bool, endpoint: str | None
) -> None:
    settings = TracingSettings.from_environment(environ)
    assert settings.enabled is enabled
    if endpoint:
        assert settings.endpoint == endpoint


def test_tracing_off_is_free() -> None:
    """No provider, no exporter thread, no span recorded, no traceparent, no Job env."""
    threads_before = {t.ident for t in threading.enumerate()}
    assert configure_tracing({}) is False
    assert not tracing.tracing_enabled()
    with span("anything") as current, reconcile_span("CleoTenant", "t") as record:
        assert not current.is_recording()
        assert not record.span.is_recording()
        assert traceparent() is None
        count_write()
    assert record.tally.writes == 1  # the tally works either way (it is not tracing)
    assert exporter_environment(service_name="x") == {}
    assert tracing.current_ids() is None
    # The process-global provider is untouched: the API's proxy, not an SDK provider.
    assert type(trace.get_tracer_provider()).__module__.startswith("opentelemetry.trace")
    assert {t.ident for t in threading.enumerate()} == threads_before


def test_resource_service_name_version_identity_and_sampler() -> None:
    environ = {
        "OTEL_SERVICE_NAME": "cleo-operator-test",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=staging,team=plat%20form",
        "OTEL_TRACES_SAMPLER": "always_off",
        "POD_NAME": "cleo-operator-0",
    }
    with traced(environ) as spans:
        with span("sampled out") as current:
            assert not current.is_recording()
        assert spans.finished() == ()
    with traced({"POD_NAME": "cleo-operator-0"}) as spans:
        with span("kept"):
            pass
        (kept,) = spans.finished()
    attributes = kept.resource.attributes
    assert attributes["service.name"] == "cleo-operator"
    assert attributes["service.version"] == tracing.__version__
    assert attributes["service.instance.id"] == "test-replica"
    assert attributes["k8s.pod.name"] == "cleo-operator-0"
    settings = TracingSettings.from_environment(environ)
    assert settings.resource_attributes == {
        "deployment.environment": "staging",
        "team": "plat form",
    }


def test_reconcile_span_attributes_and_writes() -> None:
    kube = FakeKube()
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "a", "namespace": "default"},
    }
    with traced() as spans:
        with reconcile_span("CleoTenant", "t1", None):
            note_reconcile(generation=3)
            kube.apply(config_map)
            kube.list(CONFIG_MAP, namespace="default")  # a read: not a write
            kube.delete(CONFIG_MAP, "a", namespace="default")
        with reconcile_span("CleoBackup", "b", "ns"):
            note_reconcile(outcome="refused")
        with pytest.raises(CleoError), reconcile_span("CleoFailover", "f", "ns"):
            raise CleoError("boom: password=hunter2")
        (tenant,) = spans.named("reconcile CleoTenant")
        (backup,) = spans.named("reconcile CleoBackup")
        (failover,) = spans.named("reconcile CleoFailover")
    assert dict(tenant.attributes or {}) == {
        "cleo.kind": "CleoTenant",
        "cleo.name": "t1",
        "cleo.generation": 3,
        "cleo.outcome": "ok",
        "cleo.writes": 2,
    }
    assert (backup.attributes or {})["cleo.namespace"] == "ns"
    assert (backup.attributes or {})["cleo.outcome"] == "refused"
    assert (failover.attributes or {})["cleo.outcome"] == "error"
    assert failover.status.status_code is trace.StatusCode.ERROR
    assert "hunter2" not in (failover.status.description or "")


def test_traceparent_round_trip_makes_children() -> None:
    with traced() as spans:
        with span("reconcile CleoBackup") as parent:
            value = traceparent()
        assert value is not None
        assert value.startswith("00-")
        with span("backup", context=context_from_traceparent(value)):
            pass
        (child,) = spans.named("backup")
        assert child.parent is not None
        assert child.parent.span_id == parent.get_span_context().span_id
        assert child.context is not None
        assert child.context.trace_id == parent.get_span_context().trace_id
    assert context_from_traceparent("") is None
    assert context_from_traceparent("garbage") is None


@pytest.mark.security
def test_exporter_environment_when_on() -> None:
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer s3cret",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.5",
    }
    with traced(environ):
        env = exporter_environment(service_name="cleo-backup")
    assert env == {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces",
        "OTEL_SERVICE_NAME": "cleo-backup",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.5",
    }


@pytest.mark.security
@pytest.mark.parametrize(
    "endpoint",
    ["https://12345:glc_token@gateway.example/otlp", "https://gateway.example/otlp?token=x"],
)
def test_an_endpoint_that_may_carry_a_credential_is_not_handed_to_runners(endpoint: str) -> None:
    with traced({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}):
        assert exporter_environment(service_name="cleo-backup") == {}


@pytest.mark.security
@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        (
            "ALTER ROLE \"t\" WITH PASSWORD 'SCRAM-SHA-256$4096:abc=$x:y'",
            'ALTER ROLE "t" WITH PASSWORD ?',
        ),
        ("SELECT 'a''b', E'c\\'d', 42 FROM x", "SELECT ?, ?, ? FROM x"),
        ("DO $body$ secret $body$", "DO ?"),
        ("SELECT $$x$$, col1 FROM t2 WHERE a = $1", "SELECT ?, col1 FROM t2 WHERE a = $1"),
        ("SET x = 'unterminated secret", "SET x = ?"),
        ("SELECT 1 -- 'x'\n, 2 /* secret */", "SELECT ? \n, ? "),
        ('CREATE ROLE "we""ird" LOGIN', 'CREATE ROLE "we""ird" LOGIN'),
    ],
)
def test_statement_text_keeps_no_literal(statement: str, expected: str) -> None:
    assert sanitize_statement(statement) == expected


@pytest.mark.security
def test_the_sanitizing_processor_cleans_what_is_sent() -> None:
    with traced() as spans:
        with span("ALTER") as current:
            current.set_attribute("db.statement", "ALTER ROLE r PASSWORD 'SCRAM-SHA-256$x'")
            current.set_attribute("db.statement.parameters", "('hunter2',)")
            current.set_attribute("note", "DATABASE_URL=postgres://u:hunter2@h/d")
            current.add_event(
                "exception",
                {"exception.message": "LINE 1: ALTER ROLE r PASSWORD 'SCRAM-SHA-256$x'"},
            )
        (sent,) = spans.finished()
        texts = " ".join(spans.texts())
    assert "SCRAM-SHA-256" not in texts
    assert "hunter2" not in texts
    assert (sent.attributes or {})["db.statement"] == "ALTER ROLE r PASSWORD ?"
    assert "db.statement.parameters" not in (sent.attributes or {})


# -- trace ids in log lines, exemplars on the reconcile duration ---------------------------


def test_log_lines_inside_a_span_carry_its_ids() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ObjectContextFilter())
    handler.addFilter(TraceContextFilter())
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.tracing.logs")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.info("tracing off")
    with traced():
        with span("reconcile CleoTenant") as current:
            logger.info("inside")
        logger.info("outside")
    off, inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    ctx = current.get_span_context()
    assert inside["trace_id"] == f"{ctx.trace_id:032x}"
    assert inside["span_id"] == f"{ctx.span_id:016x}"
    assert "trace_id" not in off
    assert "trace_id" not in outside


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_reconcile_duration_has_the_trace_as_exemplar_in_openmetrics() -> None:
    port = _free_port()
    serve_metrics(port=port, address="127.0.0.1")
    with traced(), reconcile_span("CleoTenant", "exemplar-tenant") as record:
        with timed_reconcile("CleoTenantExemplar"):
            pass
        trace_id = f"{record.span.get_span_context().trace_id:032x}"
    url = f"http://127.0.0.1:{port}/metrics"
    request = urllib.request.Request(
        url, headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - a local URL
        assert answer.headers["Content-Type"].startswith("application/openmetrics-text")
        openmetrics = answer.read().decode()
    lines = [
        line
        for line in openmetrics.splitlines()
        if line.startswith("cleo_operator_reconcile_duration_seconds_bucket")
        and 'kind="CleoTenantExemplar"' in line
        and "#" in line
    ]
    assert lines, "no bucket of the reconcile has an exemplar"
    assert f'trace_id="{trace_id}"' in lines[0]
    # The classic text format (what a scraper gets by default) has no exemplars and parses.
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    assert 'kind="CleoTenantExemplar"' in text
    assert trace_id not in text

"""The operator process with tracing on (the `OTEL_*` variables of the chart's `tracing`
values): it posts its spans over OTLP/HTTP, and on SIGTERM it sends what is still queued
before it exits. The collector is the toolchain's OpenTelemetry Collector (the session
fixture `trace_collector`, tests/harness/trace_collector.py); the whole trace tree is
tested in the trace backend's own e2e test (e2e/test_tracing_backend.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from e2e.cluster import LocalCluster
from tests.harness.cluster_fixtures import wait_for
from tests.harness.operator_fixtures import OPERATOR_NAMESPACE, OperatorProcess, start_operator
from tests.harness.specs import IMAGE, tenant_manifest
from tests.harness.trace_collector import Span, TraceCollector

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]


def test_the_operator_sends_its_spans_and_flushes_them_on_sigterm(
    cluster: LocalCluster,
    operator_process: OperatorProcess,
    operator_sites: dict[str, str],
    trace_collector: TraceCollector,
    tmp_path: Path,
) -> None:
    since = trace_collector.mark()
    operator_process.pause()
    tenant = "traced"
    try:
        traced = start_operator(
            cluster,
            tmp_path / "traced.log",
            extra_args=["--operator-namespace", OPERATOR_NAMESPACE],
            env={**operator_sites, "OTEL_BSP_SCHEDULE_DELAY": "60000"},  # only the flush sends
            tracing_endpoint=trace_collector.endpoint,
        )
        cluster.kubectl(
            "apply",
            "-f",
            "-",
            input=yaml.safe_dump(tenant_manifest(tenant, {"workload": {"image": IMAGE}})),
        )

        def reconciled() -> bool:
            status = cluster.kubectl("get", "cleotenant", tenant, "-o", "jsonpath={.status}")
            return "observedGeneration" in status.stdout

        wait_for(reconciled, timeout=60, what="the tenant's first reconcile")
        assert traced.stop() == 0, traced.log_text()[-3000:]
    finally:
        cluster.kubectl("delete", "cleotenant", tenant, "--wait=false", check=False)
        operator_process.resume()

    def reconciles(spans: list[Span]) -> list[Span]:
        return [
            s
            for s in spans
            if s.name == "reconcile CleoTenant" and s.attributes.get("cleo.name") == tenant
        ]

    # The process has exited: what the collector gets now, the SIGTERM path flushed.
    spans = trace_collector.wait_for(
        lambda spans: bool(reconciles(spans)), since=since, what="the tenant's reconcile spans"
    )
    ours = {s.trace_id for s in reconciles(spans)}
    assert {s.service for s in spans if s.trace_id in ours} == {"cleo-operator"}
    assert any(
        s.name == "get CleoTenant" and s.attributes.get("k8s.name") == tenant
        for s in spans
        if s.trace_id in ours
    )

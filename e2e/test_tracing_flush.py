"""The operator process with tracing on (the `OTEL_*` variables of the chart's `tracing`
values): it posts its spans over OTLP/HTTP, and on SIGTERM it sends what is still queued
before it exits. The collector here is a stub that keeps the posted requests (the trace
backend and the whole trace tree are tested in the trace backend's own e2e test)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from e2e.cluster import LocalCluster, free_port
from tests.harness.cluster_fixtures import wait_for
from tests.harness.operator_fixtures import OPERATOR_NAMESPACE, OperatorProcess, start_operator
from tests.harness.specs import IMAGE, tenant_manifest

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]


class _Collector(http.server.ThreadingHTTPServer):
    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.requests: list[ExportTraceServiceRequest] = []

    def spans(self) -> list[tuple[str, str, dict[str, str]]]:
        """(service name, span name, string attributes) of every span posted so far."""
        found = []
        for request in list(self.requests):
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        attributes = {a.key: a.value.string_value for a in span.attributes}
                        found.append((resource.get("service.name", ""), span.name, attributes))
        return found


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/v1/traces":
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            self.server.requests.append(request)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        del args


@pytest.fixture
def collector() -> Iterator[_Collector]:
    server = _Collector(free_port())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_operator_sends_its_spans_and_flushes_them_on_sigterm(
    cluster: LocalCluster,
    operator_process: OperatorProcess,
    operator_sites: dict[str, str],
    collector: _Collector,
    tmp_path: Path,
) -> None:
    operator_process.pause()
    tenant = "traced"
    try:
        traced = start_operator(
            cluster,
            tmp_path / "traced.log",
            extra_args=["--operator-namespace", OPERATOR_NAMESPACE],
            env={**operator_sites, "OTEL_BSP_SCHEDULE_DELAY": "60000"},  # only the flush sends
            tracing_endpoint=f"http://127.0.0.1:{collector.server_port}",
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
    spans = collector.spans()
    reconciles = [a for service, name, a in spans if name == "reconcile CleoTenant"]
    assert reconciles, sorted({name for _, name, _ in spans})
    assert {a["cleo.name"] for a in reconciles} >= {tenant}
    assert {service for service, _, _ in spans} == {"cleo-operator"}
    assert any(name == "get CleoTenant" for _, name, _ in spans)

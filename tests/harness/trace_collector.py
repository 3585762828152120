"""A real trace backend for the tests: an OpenTelemetry Collector on a loopback port.

The collector is the toolchain's (``e2e/toolchain/otelcol``: the collector's own modules with
the OTLP receiver and the file exporter, built and cached like the control plane). It
listens for OTLP/HTTP (what the operator and the backup runner send, ``/v1/traces``) on a
free loopback port and writes every batch it receives to a file, one OTLP JSON
``ExportTraceServiceRequest`` a line; `TraceCollector.spans` reads that file back into
`Span` records (trace id, span id, parent span id, name, service, attributes), so a test
asserts on what the collector really received, after the real wire format.

The session fixture `trace_collector` starts one collector for the whole run (a second or
so) and stops it at the end; a test tells its own spans apart by trace id or attributes,
or takes `TraceCollector.mark` before it starts and reads only what came after.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

from e2e.cluster import build_toolchain, free_port
from tests.integration.emulator_support import running

FLUSH_INTERVAL: Final = "100ms"
"""How often the file exporter writes what it holds (its default, 1 s, slows every wait)."""


@dataclass(frozen=True)
class Span:
    """One span as the collector received it (ids in lowercase hex, "" for no parent)."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    service: str
    attributes: dict[str, Any] = field(hash=False)
    resource: dict[str, Any] = field(hash=False)
    kind: int = 0
    status_code: int = 0
    start_ns: int = 0
    end_ns: int = 0


def _value(value: dict[str, Any]) -> Any:
    """An OTLP JSON AnyValue as a Python value."""
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])  # int64 is a string in OTLP JSON
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return [_value(v) for v in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return _attributes(value["kvlistValue"].get("values", []))
    if "bytesValue" in value:
        return value["bytesValue"]
    return None


def _attributes(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    return {pair["key"]: _value(pair.get("value", {})) for pair in pairs}


def parse_spans(lines: str) -> list[Span]:
    """Every span of the file exporter's OTLP JSON lines (a last line still being written,
    without its newline, is left for the next read)."""
    found: list[Span] = []
    for line in lines.splitlines(keepends=True):
        if not line.endswith("\n") or not line.strip():
            continue
        for resource_spans in json.loads(line).get("resourceSpans", []):
            resource = _attributes(resource_spans.get("resource", {}).get("attributes", []))
            service = str(resource.get("service.name", ""))
            for scope_spans in resource_spans.get("scopeSpans", []):
                for span in scope_spans.get("spans", []):
                    found.append(
                        Span(
                            trace_id=span.get("traceId", ""),
                            span_id=span.get("spanId", ""),
                            parent_span_id=span.get("parentSpanId", ""),
                            name=span.get("name", ""),
                            service=service,
                            attributes=_attributes(span.get("attributes", [])),
                            resource=resource,
                            kind=int(span.get("kind", 0)),
                            status_code=int(span.get("status", {}).get("code", 0)),
                            start_ns=int(span.get("startTimeUnixNano", 0)),
                            end_ns=int(span.get("endTimeUnixNano", 0)),
                        )
                    )
    return found


def tree(spans: list[Span], *, trace_id: str | None = None) -> str:
    """The spans (of one trace, or all) as an indented tree with their services: what a
    failed assertion on a trace shows."""
    chosen = [s for s in spans if trace_id is None or s.trace_id == trace_id]
    ids = {(s.trace_id, s.span_id) for s in chosen}
    below: dict[tuple[str, str], list[Span]] = {}
    for s in chosen:
        below.setdefault((s.trace_id, s.parent_span_id), []).append(s)
    lines: list[str] = []

    def show(span: Span, depth: int) -> None:
        lines.append(f"{'  ' * depth}{span.name} [{span.service}]")
        for child in sorted(below.get((span.trace_id, span.span_id), []), key=_start):
            show(child, depth + 1)

    roots = [s for s in chosen if (s.trace_id, s.parent_span_id) not in ids]
    for root in sorted(roots, key=_start):
        show(root, 0)
    return "\n".join(lines)


def _start(span: Span) -> int:
    return span.start_ns


@dataclass
class TraceCollector:
    """A running collector: where to send spans and how to read what it received."""

    endpoint: str
    """The OTLP/HTTP base URL (``OTEL_EXPORTER_OTLP_ENDPOINT``); traces go to /v1/traces."""
    output: Path
    log: Path

    def mark(self) -> int:
        """Where the output ends now: `spans(since=...)` reads only what came after."""
        return self.output.stat().st_size if self.output.exists() else 0

    def spans(self, *, since: int = 0) -> list[Span]:
        """Every span received so far (after `since`, a `mark`)."""
        if not self.output.exists():
            return []
        with self.output.open("rb") as f:
            f.seek(since)
            return parse_spans(f.read().decode())

    def wait_for(
        self,
        done: Callable[[list[Span]], bool],
        *,
        since: int = 0,
        timeout: float = 30.0,
        what: str = "the spans",
    ) -> list[Span]:
        """The spans received once `done(spans)` holds; fails the test after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans(since=since)
            if done(spans):
                return spans
            if time.monotonic() > deadline:
                names = sorted({s.name for s in spans})
                pytest.fail(f"the collector did not receive {what} in {timeout:.0f} s: {names}")
            time.sleep(0.1)


def collector_config(http_port: int, output: Path) -> dict[str, Any]:
    """The collector's whole configuration: OTLP/HTTP in on loopback, the file exporter
    out, its own telemetry off (no metrics port to collide on)."""
    return {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{http_port}"}}}},
        "exporters": {"file": {"path": str(output), "flush_interval": FLUSH_INTERVAL}},
        "service": {
            "telemetry": {"metrics": {"level": "none"}},
            "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file"]}},
        },
    }


def otelcol_bin() -> Path:
    binary = build_toolchain() / "otelcol"
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing: run e2e/toolchain/build.sh")
    return binary


def _listens(port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    return check


@contextmanager
def run_collector(workdir: Path) -> Iterator[TraceCollector]:
    """A collector for the block, its configuration, output and log in `workdir`."""
    port = free_port()
    output = workdir / "traces.jsonl"
    config = workdir / "otelcol.yaml"
    config.write_text(yaml.safe_dump(collector_config(port, output)))
    log = workdir / "otelcol.log"
    argv = [str(otelcol_bin()), f"--config=file:{config}"]
    with running(argv, log=log, ready=_listens(port), what="the OpenTelemetry Collector"):
        yield TraceCollector(endpoint=f"http://127.0.0.1:{port}", output=output, log=log)


@pytest.fixture(scope="session")
def trace_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TraceCollector]:
    """One collector for the session (see the module docstring)."""
    with run_collector(tmp_path_factory.mktemp("otelcol")) as collector:
        yield collector

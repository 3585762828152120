"""The tests' trace backend (tests/harness/trace_collector.py) receives what the Python OTLP
exporter sends: the real SDK and OTLP/HTTP exporter the operator uses, the real collector
built by the toolchain, and the collector's file read back into spans with their ids,
parents, names, service and attributes."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.harness.trace_collector import TraceCollector, parse_spans, tree


def test_the_collector_receives_a_span_tree_from_the_python_exporter(
    trace_collector: TraceCollector,
) -> None:
    since = trace_collector.mark()
    provider = TracerProvider(resource=Resource.create({"service.name": "collector-test"}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{trace_collector.endpoint}/v1/traces"))
    )
    tracer = provider.get_tracer("tests")
    try:
        with (
            tracer.start_as_current_span("parent", attributes={"cleo.name": "t1"}) as parent,
            tracer.start_as_current_span(
                "child", attributes={"cleo.writes": 3, "ok": True, "ratio": 0.5}
            ),
        ):
            pass
    finally:
        provider.shutdown()
    trace_id = format(parent.get_span_context().trace_id, "032x")
    span_id = format(parent.get_span_context().span_id, "016x")

    spans = trace_collector.wait_for(
        lambda spans: {"parent", "child"} <= {s.name for s in spans if s.trace_id == trace_id},
        since=since,
        what="the parent and child spans",
    )
    ours = {s.name: s for s in spans if s.trace_id == trace_id}
    assert set(ours) == {"parent", "child"}
    assert ours["parent"].span_id == span_id
    assert ours["parent"].parent_span_id == ""
    assert ours["child"].parent_span_id == span_id
    assert ours["parent"].attributes == {"cleo.name": "t1"}
    assert ours["child"].attributes == {"cleo.writes": 3, "ok": True, "ratio": 0.5}
    assert {s.service for s in ours.values()} == {"collector-test"}
    assert ours["child"].start_ns >= ours["parent"].start_ns
    assert ours["child"].end_ns <= ours["parent"].end_ns
    assert tree(spans, trace_id=trace_id) == "parent [collector-test]\n  child [collector-test]"


def test_a_line_still_being_written_is_left_for_the_next_read() -> None:
    line = (
        '{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":'
        '{"stringValue":"s"}}]},"scopeSpans":[{"scope":{},"spans":[{"traceId":"ab",'
        '"spanId":"cd","parentSpanId":"ef","name":"n","kind":2,"attributes":[{"key":"k",'
        '"value":{"arrayValue":{"values":[{"intValue":"7"}]}}}],"status":{"code":2}}]}]}]}'
    )
    assert parse_spans(line) == []
    (span,) = parse_spans(line + "\n" + line[:40])
    assert (span.trace_id, span.span_id, span.parent_span_id, span.name) == ("ab", "cd", "ef", "n")
    assert (span.service, span.kind, span.status_code) == ("s", 2, 2)
    assert span.attributes == {"k": [7]}

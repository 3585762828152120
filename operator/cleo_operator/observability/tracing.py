"""OpenTelemetry traces: off by default, configured by the standard ``OTEL_*`` variables.

When tracing is off (the default: no ``OTEL_TRACES_EXPORTER=otlp`` and no OTLP endpoint, or
``OTEL_SDK_DISABLED=true``) nothing of the SDK is set up: no tracer provider, no exporter,
no background thread. `span` then yields the API's non-recording span without creating
anything, `traceparent` is None and `exporter_environment` is empty, so the reconcilers'
objects (the backup CronJob's env) look exactly as they did before tracing existed.

When it is on, `configure_tracing` builds one SDK `TracerProvider` of the operator's own
(never the process-global one, so tests can set up and tear down), with a
`BatchSpanProcessor` and the OTLP/HTTP exporter, and instruments psycopg with it. Every
finished span passes `SanitizingProcessor` before it is queued for export: statement text
keeps its shape but never a literal (``ALTER ROLE "r" WITH PASSWORD ?``), and every other
text (attributes, events, the status) goes through the one redactor (`core.redaction`).
`shutdown_tracing` flushes what is queued (the SIGTERM path of ``cleo-operator run``, and
the end of every CLI command).

The honoured variables: ``OTEL_SDK_DISABLED``, ``OTEL_TRACES_EXPORTER`` (``otlp`` or
``none``), ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (used as it is),
``OTEL_EXPORTER_OTLP_ENDPOINT`` (``/v1/traces`` appended), ``OTEL_SERVICE_NAME`` (default
``cleo-operator``), ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG`` (default
``parentbased_always_on``), ``OTEL_RESOURCE_ATTRIBUTES``, and ``TRACEPARENT`` (the W3C
trace context a backup Job's runner starts its spans under). The exporter reads its other
``OTEL_EXPORTER_OTLP_*`` settings (headers, timeout, certificate) itself.

Writes per reconcile are tallied here too (`counting_writes`, `count_write`): the
reconcile span says how many writes it made, and a test of "a no-op reconcile writes
nothing" can read it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from cleo_operator import __version__
from cleo_operator.core.errors import CleoError
from cleo_operator.core.redaction import CUT, INPUT_LIMIT, redact

__all__ = [
    "DEFAULT_SERVICE_NAME",
    "SanitizingProcessor",
    "TracingSettings",
    "WriteTally",
    "child_span",
    "configure_tracing",
    "context_from_environment",
    "context_from_traceparent",
    "count_write",
    "counting_writes",
    "current_ids",
    "exporter_environment",
    "fail_span",
    "flush_tracing",
    "note_reconcile",
    "reconcile_span",
    "sanitize_statement",
    "shutdown_tracing",
    "span",
    "traceparent",
    "tracing_enabled",
]

log = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME: Final = "cleo-operator"
TRACER_NAME: Final = "cleo_operator"
DEFAULT_OTLP_ENDPOINT: Final = "http://localhost:4318"
TRACES_PATH: Final = "/v1/traces"
STATEMENT_ATTRIBUTES: Final = frozenset({"db.statement", "db.query.text"})
"""The attributes of the psycopg instrumentation that hold statement text."""

_PROPAGATOR: Final = TraceContextTextMapPropagator()
_NO_OP_TRACER: Final = trace.NoOpTracer()


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def _sampler(name: str, arg: str) -> Sampler:
    """The sampler `OTEL_TRACES_SAMPLER` names; unknown names fall back to the default."""

    def ratio() -> float:
        try:
            value = float(arg) if arg.strip() else 1.0
        except ValueError:
            log.warning("OTEL_TRACES_SAMPLER_ARG %r is not a number: sampling everything", arg)
            return 1.0
        return min(1.0, max(0.0, value))

    name = name.strip().lower() or "parentbased_always_on"
    samplers: dict[str, Callable[[], Sampler]] = {
        "always_on": lambda: ALWAYS_ON,
        "always_off": lambda: ALWAYS_OFF,
        "traceidratio": lambda: TraceIdRatioBased(ratio()),
        "parentbased_always_on": lambda: ParentBased(ALWAYS_ON),
        "parentbased_always_off": lambda: ParentBased(ALWAYS_OFF),
        "parentbased_traceidratio": lambda: ParentBased(TraceIdRatioBased(ratio())),
    }
    make = samplers.get(name)
    if make is None:
        log.warning("OTEL_TRACES_SAMPLER %r is not known: using parentbased_always_on", name)
        return ParentBased(ALWAYS_ON)
    return make()


def _resource_attributes(text: str) -> dict[str, str]:
    """``key=value,key=value`` (values percent-decoded), as the specification says."""
    found: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            found[key.strip()] = unquote(value.strip())
    return found


@dataclass(frozen=True)
class TracingSettings:
    """What the ``OTEL_*`` variables say."""

    enabled: bool = False
    endpoint: str = DEFAULT_OTLP_ENDPOINT + TRACES_PATH
    """The full URL spans are posted to."""
    service_name: str = DEFAULT_SERVICE_NAME
    sampler: str = "parentbased_always_on"
    sampler_arg: str = ""
    resource_attributes: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> TracingSettings:
        env = os.environ if environ is None else environ
        traces_endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        base_endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
        if _true(env.get("OTEL_SDK_DISABLED")):
            enabled = False
        elif exporter:
            # A list per the specification; only OTLP is built in.
            names = {n.strip() for n in exporter.split(",")}
            enabled = "otlp" in names
            if not enabled and names - {"none"}:
                log.warning(
                    "OTEL_TRACES_EXPORTER %r: only otlp is supported; tracing is off", exporter
                )
        else:
            # Unlike the SDK's default (otlp), off unless someone named a collector.
            enabled = bool(traces_endpoint or base_endpoint)
        if traces_endpoint:
            endpoint = traces_endpoint
        else:
            endpoint = (base_endpoint or DEFAULT_OTLP_ENDPOINT).rstrip("/") + TRACES_PATH
        return cls(
            enabled=enabled,
            endpoint=endpoint,
            service_name=env.get("OTEL_SERVICE_NAME", "").strip() or DEFAULT_SERVICE_NAME,
            sampler=env.get("OTEL_TRACES_SAMPLER", "").strip(),
            sampler_arg=env.get("OTEL_TRACES_SAMPLER_ARG", "").strip(),
            resource_attributes=_resource_attributes(env.get("OTEL_RESOURCE_ATTRIBUTES", "")),
        )


# -- statement text without literals ----------------------------------------------------

_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def sanitize_statement(text: str) -> str:
    """SQL text with every string literal (``'...'``, ``E'...'``, ``$tag$...$tag$``) and
    every number replaced by ``?``; an unterminated literal swallows the rest.

    Fail-closed: what cannot be told apart from a literal is replaced. Quoted identifiers
    (role and database names) stay: they are names, and names are what traces are for.
    Reads at most `INPUT_LIMIT` characters, as the redactor does (an error's text may be a
    tenant's, of any length): a literal the cut goes through is unterminated, so replaced."""
    if len(text) > INPUT_LIMIT:
        text = text[:INPUT_LIMIT]
        cut = True
    else:
        cut = False
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "'":
            escapes = i > 0 and text[i - 1] in "eE" and (i < 2 or not text[i - 2].isalnum())
            if escapes:
                out.pop()  # the E prefix goes with its literal
            j = i + 1
            while j < n:
                if escapes and text[j] == "\\":
                    j += 2
                    continue
                if text[j] == "'":
                    if j + 1 < n and text[j + 1] == "'":
                        j += 2
                        continue
                    break
                j += 1
            out.append("?")
            i = j + 1
            continue
        if char == "$":
            tag = _DOLLAR_TAG.match(text, i)
            if tag is not None:
                end = text.find(tag.group(0), tag.end())
                out.append("?")
                i = n if end < 0 else end + len(tag.group(0))
                continue
        if char == '"':  # an identifier: kept as it is
            j = text.find('"', i + 1)
            while j >= 0 and j + 1 < n and text[j + 1] == '"':
                j = text.find('"', j + 2)
            j = n - 1 if j < 0 else j
            out.append(text[i : j + 1])
            i = j + 1
            continue
        if char.isdigit() and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] in "_$")):
            j = i
            while j < n and (text[j].isalnum() or text[j] == "."):
                j += 1
            out.append("?")
            i = j
            continue
        if text.startswith("--", i) or text.startswith("/*", i):  # comments: dropped
            end = text.find("\n", i) if char == "-" else text.find("*/", i + 2)
            i = n if end < 0 else end + (0 if char == "-" else 2)
            continue
        out.append(char)
        i += 1
    return "".join(out) + (CUT if cut else "")


def _clean(value: AttributeValue) -> AttributeValue:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, tuple | list) and value and isinstance(value[0], str):
        return tuple(redact(str(item)) for item in value)
    return value


def _clean_attributes(attributes: Mapping[str, AttributeValue] | None) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if key in STATEMENT_ATTRIBUTES and isinstance(value, str):
            cleaned[key] = sanitize_statement(value)
        elif key == "db.statement.parameters":
            continue  # never, even if someone turns capture_parameters on
        elif key.startswith("exception.") and isinstance(value, str):
            # A server's error quotes the statement ("LINE 1: ALTER ROLE ... PASSWORD '..'").
            cleaned[key] = redact(sanitize_statement(value))
        else:
            cleaned[key] = _clean(value)
    return cleaned


class SanitizingProcessor(SpanProcessor):
    """Hands each finished span on without statement literals or anything that looks like
    a credential (see the module docstring); in front of the exporting processor."""

    def __init__(self, inner: SpanProcessor) -> None:
        self.inner = inner

    def on_start(self, span: SdkSpan, parent_context: otel_context.Context | None = None) -> None:
        self.inner.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        status = span.status
        if status.description:
            status = Status(status.status_code, redact(sanitize_statement(status.description)))
        self.inner.on_end(
            ReadableSpan(
                name=span.name,
                context=span.context,
                parent=span.parent,
                resource=span.resource,
                attributes=_clean_attributes(span.attributes),
                events=[
                    Event(e.name, _clean_attributes(e.attributes), e.timestamp) for e in span.events
                ],
                links=span.links,
                kind=span.kind,
                status=status,
                start_time=span.start_time,
                end_time=span.end_time,
                instrumentation_scope=span.instrumentation_scope,
            )
        )

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


# -- the process's tracing ---------------------------------------------------------------


@dataclass
class _State:
    settings: TracingSettings
    provider: TracerProvider
    tracer: trace.Tracer
    sql_instrumented: bool


_STATE: _State | None = None
_STATE_LOCK = threading.Lock()


def tracing_enabled() -> bool:
    return _STATE is not None


def configure_tracing(
    environ: Mapping[str, str] | None = None,
    *,
    identity: str = "",
    exporter: SpanExporter | None = None,
    instrument_sql: bool = True,
) -> bool:
    """Set tracing up as the environment says; True when it is on.

    `identity`: this process's name (the replica identity, a pod name), a resource
    attribute beside the version. `exporter`: instead of OTLP (tests: an in-memory one,
    which also turns tracing on). `instrument_sql`: trace psycopg's statements."""
    global _STATE  # noqa: PLW0603 - one tracing set-up per process
    env = os.environ if environ is None else environ
    settings = TracingSettings.from_environment(env)
    if exporter is None and not settings.enabled:
        return False
    target = "the given exporter" if exporter is not None else settings.endpoint
    with _STATE_LOCK:
        if _STATE is not None:
            _shutdown_locked()
        attributes: dict[str, str] = {
            **settings.resource_attributes,
            "service.name": settings.service_name,
            "service.version": __version__,
        }
        if identity:
            attributes["service.instance.id"] = identity
        pod = env.get("POD_NAME", "").strip()
        if pod:
            attributes["k8s.pod.name"] = pod
        provider = TracerProvider(
            resource=Resource.create(attributes),
            sampler=_sampler(settings.sampler, settings.sampler_arg),
        )
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
                OTLPSpanExporter,
            )

            exporter = OTLPSpanExporter(endpoint=settings.endpoint)
        provider.add_span_processor(SanitizingProcessor(BatchSpanProcessor(exporter)))
        sql = False
        if instrument_sql:
            from opentelemetry.instrumentation.psycopg import (  # noqa: PLC0415
                PsycopgInstrumentor,
            )

            instrumentor = PsycopgInstrumentor()
            if not instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.instrument(tracer_provider=provider, skip_dep_check=True)
                sql = True
        _STATE = _State(
            settings=settings,
            provider=provider,
            tracer=provider.get_tracer(TRACER_NAME, __version__),
            sql_instrumented=sql,
        )
    log.info(
        "tracing on: service %s, spans to %s",
        settings.service_name,
        target,
    )
    return True


def _shutdown_locked() -> None:
    global _STATE
    state, _STATE = _STATE, None
    if state is None:
        return
    if state.sql_instrumented:
        from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor  # noqa: PLC0415

        PsycopgInstrumentor().uninstrument()
    state.provider.shutdown()  # flushes the batch processor's queue


def shutdown_tracing() -> None:
    """Flush the spans not yet sent and stop the exporter; a no-op when tracing is off."""
    with _STATE_LOCK:
        _shutdown_locked()


def flush_tracing(timeout_millis: int = 5000) -> bool:
    """Send the spans queued so far (tests; a CLI command before it exits)."""
    state = _STATE
    return True if state is None else state.provider.force_flush(timeout_millis)


def tracer() -> trace.Tracer:
    state = _STATE
    return _NO_OP_TRACER if state is None else state.tracer


@contextlib.contextmanager
def span(
    name: str,
    attributes: Mapping[str, AttributeValue] | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    context: otel_context.Context | None = None,
    link: bool = False,
) -> Iterator[Span]:
    """A span around the block, current inside it; free (the invalid span) when tracing is
    off. An exception ends it with status ERROR and its type (`fail_span`), never the
    exception's text as it is: that text may quote a server or a statement.

    `context`: the parent (another trace's span, e.g. from a ``TRACEPARENT``) instead of
    the current span; `link`: then also link the current span (the reconcile running it)."""
    state = _STATE
    if state is None:
        yield INVALID_SPAN
        return
    links: list[trace.Link] = []
    if link:
        here = trace.get_current_span().get_span_context()
        if here.is_valid:
            links.append(trace.Link(here))
    with state.tracer.start_as_current_span(
        name,
        context=context,
        kind=kind,
        links=links,
        attributes=dict(attributes or {}),
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            fail_span(current, exc)
            raise


def fail_span(current: Span, exc: BaseException) -> None:
    """Mark `current` failed by `exc`: its type, and for the operator's own errors the
    reason and the redacted safe message (the rest of an exception's text is not kept)."""
    if not current.is_recording():
        return
    current.set_attribute("error.type", type(exc).__name__)
    description = type(exc).__name__
    if isinstance(exc, CleoError):
        current.set_attribute("cleo.reason", exc.reason)
        description = f"{exc.reason}: {exc.safe_message}"
    current.set_status(Status(StatusCode.ERROR, redact(description)))


def traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span; None when tracing is off or no span
    is recording."""
    if _STATE is None:
        return None
    current = trace.get_current_span()
    if not current.is_recording():
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def context_from_traceparent(value: str | None) -> otel_context.Context | None:
    """The context a ``TRACEPARENT`` names (spans started in it are its children); None for
    none or a malformed one."""
    if not value or not value.strip():
        return None
    ctx = _PROPAGATOR.extract({"traceparent": value.strip()})
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        return None
    return ctx


TRACEPARENT_ENV: Final = "TRACEPARENT"


def context_from_environment(
    environ: Mapping[str, str] | None = None,
) -> otel_context.Context | None:
    """The context ``TRACEPARENT`` of the environment names (a backup Job's runner: the
    reconcile that made its CronJob or Job), or None."""
    env = os.environ if environ is None else environ
    return context_from_traceparent(env.get(TRACEPARENT_ENV))


def exporter_environment(*, service_name: str) -> dict[str, str]:
    """The ``OTEL_*`` variables a process the operator starts (a backup Job's runner)
    needs to send its spans where the operator's go; empty when tracing is off.

    The endpoint, the sampler and the service name only: never the exporter's headers
    (they may hold a collector's credentials, and the Job runs in a tenant's namespace).
    Empty too when the endpoint itself may carry a credential (user info, which the exporter
    sends as Basic auth, or a query): tenant admins read the Job's environment, so such an
    endpoint is never handed on and the runners are not traced."""
    state = _STATE
    if state is None:
        return {}
    parts = urlsplit(state.settings.endpoint)
    if parts.username is not None or parts.password is not None or parts.query:
        log.warning(
            "the OTLP endpoint carries user info or a query (a credential?): backup runners"
            " in tenant namespaces are not given it and send no traces"
        )
        return {}
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": state.settings.endpoint,
        "OTEL_SERVICE_NAME": service_name,
    }
    if state.settings.sampler:
        env["OTEL_TRACES_SAMPLER"] = state.settings.sampler
    if state.settings.sampler_arg:
        env["OTEL_TRACES_SAMPLER_ARG"] = state.settings.sampler_arg
    return env


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the current span, when it is sampled (a trace the
    backend will have: log lines and exemplars never point at a trace that was dropped)."""
    if _STATE is None:
        return None
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid or not ctx.trace_flags.sampled:
        return None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


@contextlib.contextmanager
def child_span(
    name: str,
    attributes: Mapping[str, AttributeValue] | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Iterator[Span]:
    """Like `span`, but only under a recording span (a reconcile, a runner's step): a
    request nothing traces (the leader Lease's renewals) starts no trace of its own."""
    if _STATE is None or not trace.get_current_span().is_recording():
        yield INVALID_SPAN
        return
    with span(name, attributes, kind=kind) as current:
        yield current


# -- one span per reconcile --------------------------------------------------------------

OUTCOMES: Final = ("ok", "retry", "error", "refused")


@dataclass
class ReconcileRecord:
    """What the reconcile span of the running reconcile will say; the reconcilers fill in
    what only they know (`note_reconcile`)."""

    span: Span
    tally: WriteTally
    generation: int | None = None
    outcome: str | None = None


_RECONCILE: ContextVar[ReconcileRecord | None] = ContextVar("cleo_reconcile", default=None)


def note_reconcile(*, generation: int | None = None, outcome: str | None = None) -> None:
    """Tell the running reconcile's span the object's generation, or that its outcome is
    not plain "ok" (``refused``: the operator declined to act, e.g. a namespace refused or
    an invalid spec). A no-op outside a reconcile."""
    record = _RECONCILE.get()
    if record is None:
        return
    if generation is not None:
        record.generation = generation
    if outcome is not None:
        record.outcome = outcome


@contextlib.contextmanager
def reconcile_span(
    kind: str,
    name: str,
    namespace: str | None = None,
    *,
    action: str = "reconcile",
    parent: otel_context.Context | None = None,
) -> Iterator[ReconcileRecord]:
    """The span of one reconcile (``reconcile <Kind>``, or ``finalize <Kind>`` for a
    deletion's `action`; its attributes: ``cleo.kind``,
    ``cleo.name``, ``cleo.namespace``, ``cleo.generation``, ``cleo.outcome``,
    ``cleo.writes``), with the writes inside counted. The caller sets ``outcome`` when it
    maps an exception (``retry`` or ``error``); an exception it did not map is ``error``.

    `parent`: the span is a child of that context (a CleoBackup's reconcile under its
    tenant's creation, `observability.creation_traces`) instead of a trace's root."""
    attributes: dict[str, AttributeValue] = {"cleo.kind": kind, "cleo.name": name}
    if namespace:
        attributes["cleo.namespace"] = namespace
    with (
        counting_writes() as tally,
        span(f"{action} {kind}", attributes, context=parent) as current,
    ):
        record = ReconcileRecord(span=current, tally=tally)
        token = _RECONCILE.set(record)
        try:
            yield record
        except BaseException:
            record.outcome = record.outcome or "error"
            raise
        finally:
            _RECONCILE.reset(token)
            if current.is_recording():
                if record.generation is not None:
                    current.set_attribute("cleo.generation", record.generation)
                current.set_attribute("cleo.outcome", record.outcome or "ok")
                current.set_attribute("cleo.writes", tally.writes)


# -- writes per reconcile ------------------------------------------------------------------


@dataclass
class WriteTally:
    """Writes sent to the Kubernetes API inside one `counting_writes` block."""

    writes: int = 0


_TALLY: ContextVar[WriteTally | None] = ContextVar("cleo_write_tally", default=None)


@contextlib.contextmanager
def counting_writes() -> Iterator[WriteTally]:
    """Count the writes made inside (in this thread or task); nested blocks count alone."""
    tally = WriteTally()
    token = _TALLY.set(tally)
    try:
        yield tally
    finally:
        _TALLY.reset(token)


def count_write() -> None:
    """One write was sent (kube/client.py calls it for every write)."""
    tally = _TALLY.get()
    if tally is not None:
        tally.writes += 1

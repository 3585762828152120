"""Structured logging: plain text for people at a terminal, JSON lines for log pipelines.

Every record passes through `redact` (the one redactor, in `redaction`) so that a value
that looks like a credential (a DATABASE_URL with a password, a bearer token,
``PGPASSWORD=...``, a JSON ``"password": ...``) never reaches a log line even when some
library puts it into an exception message or an ``extra`` field. The same filter sits on
Kopf's ``kopf.objects`` logger, whose records Kopf also posts as Events.

JSON lines are written by python-json-logger (a dependency of Kopf) with an RFC 3339 time
in UTC with milliseconds (``2026-01-01T12:00:00.123Z``), the record's ``extra`` fields, the
``trace_id`` and ``span_id`` of the span the record was written in (`TraceContextFilter`,
when tracing is on), and the object the record is about: Kopf's per-object loggers say it
(``k8s_ref``); the reconcilers, which run in worker threads outside Kopf's handlers, say it
with `logging_object`, a context variable the reconcile loop sets around each reconcile.

Kopf's steady-state chatter is lowered on ``kopf.objects`` before any handler (or Kopf's
Event poster) sees it (`KopfNoiseFilter`): "Handler '...' succeeded." is DEBUG (one per
child event otherwise), and "Handler '...' failed temporarily: ..." is INFO, because the
only `kopf.TemporaryError` of the operator is raised on purpose for an expected wait (a
deletion waiting for its final backup), and "Daemon '...' is cancelled. Will escalate." (how
each reconcile loop ends when its object is deleted) is DEBUG. Every other error of Kopf stays
ERROR.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any, Final, Literal

from pythonjsonlogger.json import JsonFormatter as _BaseJsonFormatter

from cleo_operator.core.redaction import CUT, LOG_MESSAGE_LIMIT, MASK, holds_secret, redact
from cleo_operator.core.times import rfc3339_ms
from cleo_operator.observability.tracing import current_ids

__all__ = [
    "JsonFormatter",
    "KopfNoiseFilter",
    "LogFormat",
    "ObjectContextFilter",
    "PlainFormatter",
    "RedactingFilter",
    "TraceContextFilter",
    "configure_logging",
    "current_object",
    "logging_object",
    "redact",
]

LogFormat = Literal["plain", "json"]

_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
}
# Kopf's own extras (its object reference and settings): objects Kopf reads back, not text.
_KOPF_ATTRIBUTES = frozenset({"k8s_ref", "k8s_skip", "settings"})

_OBJECT: ContextVar[Mapping[str, str] | None] = ContextVar("cleo_log_object", default=None)


@contextlib.contextmanager
def logging_object(kind: str, name: str, namespace: str | None = None) -> Iterator[None]:
    """Every record logged inside (in this thread or task) names this object; a CleoTenant's
    records also name the tenant."""
    ref = {"kind": kind, "name": name}
    if namespace:
        ref["namespace"] = namespace
    token = _OBJECT.set(ref)
    try:
        yield
    finally:
        _OBJECT.reset(token)


def current_object() -> Mapping[str, str] | None:
    """The object `logging_object` names here, if any."""
    return _OBJECT.get()


def _record_object(record: logging.LogRecord) -> dict[str, str] | None:
    """The object a record is about: Kopf's reference, else the reconcile's context."""
    ref = getattr(record, "k8s_ref", None)
    if not isinstance(ref, Mapping):
        ref = getattr(record, "_cleo_object", None)
    if not isinstance(ref, Mapping):
        return None
    found = {k: str(ref[k]) for k in ("kind", "namespace", "name") if ref.get(k)}
    return found or None


class TraceContextFilter(logging.Filter):
    """Stamps a record written inside a recording span with ``trace_id`` and ``span_id``
    (hex, as a trace backend shows them), which the JSON formatter writes as fields.

    On the handler, so it runs in the thread that logs: the span current there is the one
    the line was written in. Nothing when tracing is off."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "trace_id"):
            ids = current_ids()
            if ids is not None:
                record.trace_id, record.span_id = ids
        return True


class ObjectContextFilter(logging.Filter):
    """Stamps a record with the object of `logging_object` (when Kopf did not name one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "_cleo_object"):
            record._cleo_object = _OBJECT.get()
        return True


_SUCCEEDED = re.compile(r"^Handler '[^']+' succeeded\.$")
_EXPECTED_WAIT = re.compile(r"^Handler '[^']+' failed temporarily: ")
# Our daemons (one reconcile loop per object) are stopped by cancellation when their object
# is deleted or the operator stops; Kopf says so at WARNING (and would post it as an Event).
_DAEMON_CANCELLED = re.compile(r"^Daemon '[^']+' is cancelled\. Will escalate\.$")


class KopfNoiseFilter(logging.Filter):
    """Lowers Kopf's per-handler success lines to DEBUG and its lines for our deliberate
    waits (`kopf.TemporaryError`) to INFO; drops them when their new level is off.

    Sits on the ``kopf.objects`` logger, so it runs before Kopf's Event poster and before
    the record propagates to the root handler. Only the exact shapes above are lowered: a
    handler that failed with any other exception, or a temporary error that will time out
    or exceed its retries ("failed temporarily but ..."), stays ERROR.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        super().__init__()
        self._logger = logger or logging.getLogger("kopf.objects")

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str) or record.args:
            return True
        if record.levelno == logging.INFO and _SUCCEEDED.match(record.msg):
            level = logging.DEBUG
        elif record.levelno == logging.ERROR and _EXPECTED_WAIT.match(record.msg):
            level = logging.INFO
        elif record.levelno == logging.WARNING and _DAEMON_CANCELLED.match(record.msg):
            level = logging.DEBUG
        else:
            return True
        record.levelno, record.levelname = level, logging.getLevelName(level)
        return self._logger.isEnabledFor(level)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD_ATTRIBUTES
        and key not in _KOPF_ATTRIBUTES
        and not key.startswith("_")
    }


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bytes | bytearray):
        return redact(bytes(value).decode("utf-8", "replace"))
    if isinstance(value, dict):
        return {
            k: MASK if isinstance(k, str) and holds_secret(k) else _redact_value(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(item) for item in value]
    # Other objects are left as they are (a handler may need them); whoever turns them into
    # text redacts that text (the JSON formatter does).
    return value


class RedactingFilter(logging.Filter):
    """Redacts the formatted message, exception text, stack and ``extra`` fields of a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_cleo_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not leak its arguments
            message = f"{record.msg!s} (unformattable arguments)"
        record.msg, record.args = redact(message), None
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.exc_text = (
                redact(logging.Formatter().formatException(record.exc_info), tail=True)
                or f"{type(exc).__name__}"
            )
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text, tail=True)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, tail=True)
        for key, value in _extras(record).items():
            record.__dict__[key] = MASK if holds_secret(key) else _redact_value(value)
        record._cleo_redacted = True
        return True


def _time(record: logging.LogRecord) -> str:
    return rfc3339_ms(datetime.datetime.fromtimestamp(record.created, datetime.UTC))


class JsonFormatter(_BaseJsonFormatter):
    """One JSON object per line: ``time`` (RFC 3339, UTC, milliseconds), ``level``,
    ``logger``, ``message``, the ``object`` (kind, namespace, name) and ``tenant`` when the
    record is about one, ``exception`` when there was one, then the record's extras."""

    def __init__(self) -> None:
        # Objects the encoder does not know become text, redacted.
        super().__init__(json_default=lambda value: redact(str(value)))

    def add_fields(
        self,
        log_data: dict[str, Any],
        record: logging.LogRecord,
        message_dict: dict[str, Any],
    ) -> None:
        log_data["time"] = _time(record)
        log_data["level"] = record.levelname.lower()
        log_data["logger"] = record.name
        log_data["message"] = record.getMessage()
        ref = _record_object(record)
        if ref is not None:
            log_data["object"] = ref
            if ref.get("kind") == "CleoTenant":
                log_data["tenant"] = ref["name"]
        if record.exc_text:
            log_data["exception"] = record.exc_text
        elif record.exc_info and record.exc_info[1] is not None:
            log_data["exception"] = redact(
                logging.Formatter().formatException(record.exc_info), tail=True
            )
        if record.stack_info:
            log_data["stack"] = record.stack_info
        for key, value in {**_extras(record), **message_dict}.items():
            if key not in {"exc_info", "stack_info"}:
                log_data.setdefault(key, value)


# Control characters (a tab aside) and Unicode's line separators, escaped in a plain line:
# terminals and log collectors may start a new line at any of them.
_ESCAPES: Final[dict[int, str]] = {
    code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if code != 0x09
} | {0x0A: "\\n", 0x0D: "\\r", 0x2028: "\\u2028", 0x2029: "\\u2029"}


class PlainFormatter(logging.Formatter):
    """``TIME LEVEL logger: [Kind namespace/name] message``, for people at a terminal.

    One record is one line, whose message may quote anyone's text (a server's error, a
    tenant's): line breaks and control characters in it are escaped (``\\n``) and it is cut
    to `LOG_MESSAGE_LIMIT`, so no text can start a line that looks like another record.
    A traceback or stack follows on lines of their own, each indented by two spaces, which
    no record's line is.
    """

    def format(self, record: logging.LogRecord) -> str:
        head, _, rest = super().format(record).partition("\n")
        if not rest:
            return head
        lines = rest.replace("\r", "\\r").split("\n")
        return "\n".join([head, *(f"  {line}" for line in lines)])

    def formatMessage(self, record: logging.LogRecord) -> str:
        ref = _record_object(record)
        prefix = ""
        # Kopf's per-object records name their object in the message already.
        if ref is not None and getattr(record, "k8s_ref", None) is None:
            where = "/".join(ref[k] for k in ("namespace", "name") if k in ref)
            prefix = f"[{ref.get('kind', '?')} {where}] "
        message = record.message
        if len(message) > LOG_MESSAGE_LIMIT:
            message = message[:LOG_MESSAGE_LIMIT] + CUT
        message = message.translate(_ESCAPES)
        return f"{_time(record)} {record.levelname:<7} {record.name}: {prefix}{message}"


def configure_logging(*, level: str = "INFO", fmt: LogFormat = "plain") -> None:
    """Install one stderr handler with redaction for the whole process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ObjectContextFilter())
    handler.addFilter(TraceContextFilter())
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Kopf posts records of its per-object logger as Events through a handler of its own:
    # filter them on that logger, before any of its handlers sees them.
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, KopfNoiseFilter) for f in objects.filters):
        objects.filters.insert(0, KopfNoiseFilter(objects))  # first: it reads Kopf's words
    if not any(isinstance(f, RedactingFilter) for f in objects.filters):
        objects.addFilter(RedactingFilter())
    root.setLevel(level.upper())
    # Client libraries are chatty at INFO and may echo request bodies at DEBUG.
    for noisy in ("urllib3", "kubernetes", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

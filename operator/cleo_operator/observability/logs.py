"""Structured logging: plain text for people at a terminal, JSON lines for log pipelines.

Every record passes through `redact` (the one redactor, in `redaction`) so that a value
that looks like a credential (a DATABASE_URL with a password, a bearer token,
``PGPASSWORD=...``, a JSON ``"password": ...``) never reaches a log line even when some
library puts it into an exception message or an ``extra`` field. The same filter sits on
Kopf's ``kopf.objects`` logger, whose records Kopf also posts as Events.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, Literal

from cleo_operator.core.redaction import MASK, holds_secret, redact

__all__ = ["JsonFormatter", "LogFormat", "RedactingFilter", "configure_logging", "redact"]

LogFormat = Literal["plain", "json"]

_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
}
# Kopf's own extras (its object reference and settings): objects Kopf reads back, not text.
_KOPF_ATTRIBUTES = frozenset({"k8s_ref", "k8s_skip", "settings"})


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
                redact(logging.Formatter().formatException(record.exc_info))
                or f"{type(exc).__name__}"
            )
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in _extras(record).items():
            record.__dict__[key] = MASK if holds_secret(key) else _redact_value(value)
        record._cleo_redacted = True
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line with time, level, logger, message and Kopf's object context."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        # Kopf's per-object loggers attach the object's identity as `k8s_ref`.
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, dict):
            entry["object"] = {k: ref.get(k) for k in ("kind", "namespace", "name") if ref.get(k)}
        if record.exc_text:
            entry["exception"] = record.exc_text
        for key, value in _extras(record).items():
            entry.setdefault(key, value)
        # Extras that are objects become text here, redacted.
        return json.dumps(entry, sort_keys=False, default=lambda value: redact(str(value)))


def configure_logging(*, level: str = "INFO", fmt: LogFormat = "plain") -> None:
    """Install one stderr handler with redaction for the whole process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Kopf posts records of its per-object logger as Events through a handler of its own:
    # filter them on that logger, before any of its handlers sees them.
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, RedactingFilter) for f in objects.filters):
        objects.addFilter(RedactingFilter())
    root.setLevel(level.upper())
    # Client libraries are chatty at INFO and may echo request bodies at DEBUG.
    for noisy in ("urllib3", "kubernetes", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

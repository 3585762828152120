"""Structured logging: plain text for people at a terminal, JSON lines for log pipelines.

Every record passes through `redact` so that a value that looks like a credential
(a DATABASE_URL with a password, a bearer token) never reaches a log line even when
some library puts it into an exception message.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Literal

LogFormat = Literal["plain", "json"]

_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]+:)[^@\s]+@")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_KEY_VALUE = re.compile(
    r"(?i)\b(password|passwd|secret|token|api[_-]?key)(\s*[=:]\s*)([^\s,;'\"]+)"
)


def redact(text: str) -> str:
    """Replace credentials that may hide in free text with `***`."""
    text = _URL_PASSWORD.sub(r"\g<scheme>***@", text)
    text = _BEARER.sub(r"\1***", text)
    return _KEY_VALUE.sub(r"\1\2***", text)


class RedactingFilter(logging.Filter):
    """Redacts the fully formatted message (and exception text) of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = redact(record.getMessage())
        record.msg, record.args = message, None
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.exc_text = (
                redact(logging.Formatter().formatException(record.exc_info))
                or f"{type(exc).__name__}"
            )
            record.exc_info = None
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
        return json.dumps(entry, sort_keys=False)


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
    root.setLevel(level.upper())
    # Client libraries are chatty at INFO and may echo request bodies at DEBUG.
    for noisy in ("urllib3", "kubernetes", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

"""Log lines never carry credentials, whatever a library put into a message."""

from __future__ import annotations

import json
import logging

import pytest

from cleo_operator.observability.logs import JsonFormatter, RedactingFilter, redact


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("connect postgresql://cleo_acme:s3cr3t-P4ss@db:5432/cleo_acme failed", "s3cr3t-P4ss"),
        ("Authorization: Bearer eyJhbGciOi.payload.sig", "eyJhbGciOi.payload.sig"),
        ("password=hunter2 user=x", "hunter2"),
        ("api_key: sk-live-123", "sk-live-123"),
    ],
)
def test_redact_removes_credentials(text: str, secret: str) -> None:
    cleaned = redact(text)
    assert secret not in cleaned
    assert "***" in cleaned


def test_filter_redacts_message_args_and_exceptions() -> None:
    record = logging.LogRecord(
        "t", logging.ERROR, __file__, 1, "dsn %s", ("postgresql://u:pw123@h/db",), None
    )
    try:
        raise RuntimeError("token=abcdef123")
    except RuntimeError:
        import sys  # noqa: PLC0415

        record.exc_info = sys.exc_info()
    assert RedactingFilter().filter(record)
    out = JsonFormatter().format(record)
    entry = json.loads(out)
    assert "pw123" not in out
    assert "abcdef123" not in out
    assert entry["message"] == "dsn postgresql://u:***@h/db"
    assert "RuntimeError" in entry["exception"]

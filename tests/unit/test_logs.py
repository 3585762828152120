"""Log lines never carry credentials, whatever a library put into a message."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from cleo_operator.core.redaction import LOG_MESSAGE_LIMIT
from cleo_operator.observability.logs import (
    JsonFormatter,
    KopfNoiseFilter,
    ObjectContextFilter,
    PlainFormatter,
    RedactingFilter,
    configure_logging,
    current_object,
    logging_object,
    redact,
)


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


# -- the JSON line: python-json-logger, RFC 3339 with milliseconds, extras, the object ------

RFC3339_MS_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _emit(
    logger_name: str, fmt: logging.Formatter, *, level: str = "INFO"
) -> tuple[logging.Logger, io.StringIO, logging.Handler]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ObjectContextFilter())
    handler.addFilter(RedactingFilter())
    handler.setFormatter(fmt)
    logger = logging.getLogger(logger_name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(level)
    return logger, stream, handler


def test_json_lines_have_a_zoned_millisecond_time_extras_and_the_reconciled_object() -> None:
    logger, stream, _ = _emit("test.logs.json", JsonFormatter())
    with logging_object("CleoTenant", "acme"):
        logger.info("wrote %d objects", 3, extra={"writes": 3, "site": "eu-west-1"})
    with logging_object("CleoBackup", "nightly", "cleo-acme"):
        logger.warning("a DSN postgresql://u:pw@h/db", extra={"password": "hunter2"})
    logger.info("outside any reconcile")
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())

    assert RFC3339_MS_UTC.match(first["time"]), first["time"]
    assert list(first)[:4] == ["time", "level", "logger", "message"]
    assert first["level"] == "info"
    assert first["message"] == "wrote 3 objects"
    assert first["object"] == {"kind": "CleoTenant", "name": "acme"}
    assert first["tenant"] == "acme"
    assert (first["writes"], first["site"]) == (3, "eu-west-1")

    assert second["object"] == {"kind": "CleoBackup", "namespace": "cleo-acme", "name": "nightly"}
    assert "tenant" not in second
    assert second["password"] == "***"
    assert "hunter2" not in stream.getvalue()
    assert "pw@" not in second["message"]

    assert "object" not in third
    assert current_object() is None


def test_kopfs_object_reference_names_the_object_of_its_lines() -> None:
    logger, stream, _ = _emit("test.logs.kopf-ref", JsonFormatter())
    ref = {"kind": "CleoTenant", "name": "acme", "namespace": None, "uid": "u"}
    with logging_object("CleoBackup", "other", "ns"):  # Kopf's reference wins
        logger.info("Handler 'x' is done", extra={"k8s_ref": ref, "k8s_skip": False})
    entry = json.loads(stream.getvalue())
    assert entry["object"] == {"kind": "CleoTenant", "name": "acme"}
    assert "k8s_ref" not in entry
    assert "k8s_skip" not in entry


def test_the_plain_format_stays_and_names_the_object() -> None:
    logger, stream, _ = _emit("test.logs.plain", PlainFormatter())
    with logging_object("CleoFailover", "move-1", "cleo-acme"):
        logger.info("step fence succeeded")
    logger.info("no object")
    inside, outside = stream.getvalue().splitlines()
    time, level, name, rest = inside.split(maxsplit=3)
    assert RFC3339_MS_UTC.match(time)
    assert (level, name) == ("INFO", "test.logs.plain:")
    assert rest == "[CleoFailover cleo-acme/move-1] step fence succeeded"
    assert outside.endswith("test.logs.plain: no object")


FORGED = "2026-01-01T00:00:00.000Z INFO    cleo_operator.audit: tenant acme deleted by admin"


@pytest.mark.parametrize("brk", ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x85", "\u2028", "\x1b[2K\r"])
@pytest.mark.security
def test_a_plain_line_cannot_be_forged_with_a_line_break(brk: str) -> None:
    """A message quoting someone's text (a server's error, a tenant's) with a line break
    and a whole forged record after it stays one line, the break escaped."""
    logger, stream, _ = _emit("test.logs.forge", PlainFormatter())
    logger.warning("restore failed: %s", f"ERROR: boom{brk}{FORGED}")
    out = stream.getvalue()
    assert out.count("\n") == 1
    assert len(out.splitlines()) == 1
    assert "\r" not in out
    assert FORGED in out  # still there to read, on the record's own line


@pytest.mark.security
def test_a_plain_traceback_is_indented_so_it_cannot_forge_a_record() -> None:
    logger, stream, _ = _emit("test.logs.forge_exc", PlainFormatter())
    try:
        raise RuntimeError(f"boom\n{FORGED}\r{FORGED}")
    except RuntimeError:
        logger.exception("reconcile failed")
    first, *rest = stream.getvalue().splitlines()
    assert first.endswith("test.logs.forge_exc: reconcile failed")
    assert rest
    assert all(line.startswith("  ") for line in rest)
    assert any("Traceback" in line for line in rest)


@pytest.mark.security
def test_a_plain_message_is_capped() -> None:
    logger, stream, _ = _emit("test.logs.cap", PlainFormatter())
    logger.info("x " * 100_000)
    out = stream.getvalue()
    assert len(out) < LOG_MESSAGE_LIMIT + 200
    assert out.rstrip("\n").endswith("…(cut)")


def test_an_exception_is_one_redacted_field() -> None:
    logger, stream, _ = _emit("test.logs.exc", JsonFormatter())
    try:
        raise RuntimeError("connect password=s3cr3t failed")
    except RuntimeError:
        logger.exception("reconcile failed")
    entry = json.loads(stream.getvalue())
    assert "RuntimeError" in entry["exception"]
    assert "s3cr3t" not in stream.getvalue()


# -- Kopf's steady-state lines ---------------------------------------------------------------


def _kopf_objects(level: str) -> tuple[logging.Logger, io.StringIO]:
    logger, stream, _ = _emit(f"test.kopf.objects.{level}", PlainFormatter(), level=level)
    logger.filters[:] = [KopfNoiseFilter(logger)]
    return logger, stream


@pytest.mark.parametrize(
    ("message", "level", "shown_at_info", "level_after"),
    [
        # Kopf's exact words (kopf/_core/actions/execution.py), the handler being our own.
        ("Handler 'wake/secrets' succeeded.", logging.INFO, False, "DEBUG"),
        (
            "Handler 'tenant_deleted' failed temporarily: the deletion is not finished: "
            "see the CleoTenant's Ready condition",
            logging.ERROR,
            True,
            "INFO",
        ),
        # Real errors stay errors.
        (
            "Handler 'tenant_deleted' failed temporarily but will time out after 60 seconds: x",
            logging.ERROR,
            True,
            "ERROR",
        ),
        ("Handler 'tenant_deleted' failed permanently: boom", logging.ERROR, True, "ERROR"),
        (
            "Handler 'wake/pods' failed with an exception. Will retry.",
            logging.ERROR,
            True,
            "ERROR",
        ),
        ("Handler 'x' succeeded. And more", logging.INFO, True, "INFO"),
        (
            "Daemon 'build_registry.<locals>.tenant_loop' is cancelled. Will escalate.",
            logging.WARNING,
            False,
            "DEBUG",
        ),
        ("Daemon 'x' has exited on its own. Stopping.", logging.WARNING, True, "WARNING"),
    ],
)
def test_kopf_success_and_expected_wait_lines_are_lowered_and_errors_kept(
    message: str, level: int, shown_at_info: bool, level_after: str
) -> None:
    logger, stream = _kopf_objects("INFO")
    logger.log(level, message)
    assert bool(stream.getvalue()) is shown_at_info, stream.getvalue()
    logger, stream = _kopf_objects("DEBUG")
    logger.log(level, message)
    assert stream.getvalue().split()[1] == level_after, stream.getvalue()


def test_configure_logging_installs_the_noise_filter_before_kopfs_event_poster() -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    objects = logging.getLogger("kopf.objects")
    filters = objects.filters[:]
    try:
        configure_logging(level="INFO", fmt="json")
        kinds = [type(f) for f in objects.filters]
        # On the logger (before its handlers: Kopf's Event poster), and before redaction,
        # which rewrites the message the noise filter recognises.
        assert kinds.index(KopfNoiseFilter) < kinds.index(RedactingFilter)
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
    finally:
        root.handlers[:], objects.filters[:] = handlers, filters
        root.setLevel(level)

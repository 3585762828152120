"""Secrets pushed through every door a message leaves by: log lines, Events, status.

An attacker who can make the operator quote something (a tenant's dump whose restore
fails with the tenant's text, a server message echoing a connection string, a library
exception with a request body) hopes to read a credential in the operator's logs, in an
Event on their tenant or in its status. Each test sends secrets in the spellings that
slipped through before (``password='...'``, JSON ``"password": ...``, ``PGPASSWORD=``,
``AWS_SECRET_ACCESS_KEY=``) through the real path and checks that none arrives.
"""

from __future__ import annotations

import datetime
import json
import logging
import secrets
from collections.abc import Iterator

import kopf
import pytest

from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.events import post_event
from cleo_operator.kube.kinds import EVENT, TENANT
from cleo_operator.kube.status import write_status
from cleo_operator.observability.logs import configure_logging
from cleo_operator.reconcile.status import Observation, StatusBuilder
from cleo_operator.reconcile.tenant import OWNED_STATUS_KEYS
from tests.harness.specs import tenant_manifest

pytestmark = pytest.mark.security


def leaks() -> tuple[list[str], str]:
    """Fresh secret values and one text that carries them in many spellings."""
    values = [secrets.token_urlsafe(18) for _ in range(9)]
    text = (
        f"pg_restore: error: connection to server failed: password='{values[0]}' "
        f'{{"password": "{values[1]}", "user": "cleo_acme"}} PGPASSWORD={values[2]} '
        f"AWS_SECRET_ACCESS_KEY={values[3]} secretAccessKey: {values[4]} "
        f"postgresql://cleo_acme:{values[5]}@db:5432/cleo_acme "
        f"Authorization: Bearer {values[6]}\n"
        f"  x-amz-security-token = {values[7]}\n  apiKey:{values[8]}"
    )
    return values, text


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    objects = logging.getLogger("kopf.objects")
    filters = objects.filters[:]
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    objects.filters[:] = filters


@pytest.mark.parametrize("fmt", ["plain", "json"])
def test_log_lines_carry_no_secret(
    fmt: str, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    values, text = leaks()
    configure_logging(level="DEBUG", fmt=fmt)  # type: ignore[arg-type]
    log = logging.getLogger("cleo_operator.test_security")
    log.warning("restore failed: %s", text)
    log.info("extra fields", extra={"detail": text, "body": {"password": values[1]}})
    try:
        raise RuntimeError(text)
    except RuntimeError:
        log.exception("while restoring")
    # Kopf's per-object logger, whose records Kopf also posts as Events.
    logging.getLogger("kopf.objects").error("handler failed: %s", text)
    err = capsys.readouterr().err
    assert "restore failed" in err
    assert "while restoring" in err
    assert "RuntimeError" in err
    if fmt == "json":
        entries = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        assert len(entries) == 4
        assert "detail" in entries[1]
    for value in values:
        assert value not in err


def test_kopf_object_records_are_redacted_before_kopf_posts_them(restore_logging: None) -> None:
    values, text = leaks()
    configure_logging(level="INFO", fmt="json")
    seen: list[str] = []
    poster_records: list[logging.LogRecord] = []

    class Poster(logging.Handler):  # stands in for Kopf's K8sPoster, a handler on this logger
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())
            poster_records.append(record)

    objects = logging.getLogger("kopf.objects")
    poster = Poster()
    objects.addHandler(poster)
    ref = {"kind": "CleoTenant", "name": "acme", "namespace": None}
    # Kopf's real settings object, with posting off: Kopf's own K8sPoster may already sit on
    # this logger (any test that ran Kopf in this process leaves it), and it reads them.
    marker = kopf.OperatorSettings()
    marker.posting.enabled = False
    try:
        objects.error(
            "handler failed: %s",
            text,
            extra={"k8s_ref": ref, "settings": marker, "k8s_skip": False},
        )
    finally:
        objects.removeHandler(poster)
    assert seen
    for value in values:
        assert value not in seen[0]
    # Kopf's own extras stay the objects Kopf reads back.
    assert poster_records[0].k8s_ref is ref
    assert poster_records[0].settings is marker


@pytest.mark.cluster
def test_events_and_status_carry_no_secret(kube: KubeClient, crds_installed: None) -> None:
    values, text = leaks()
    name = f"redact-{secrets.token_hex(3)}"
    tenant = kube.create(tenant_manifest(name))
    try:
        assert post_event(kube, tenant, reason="RestoreFailed", message=text, type="Warning")
        status = StatusBuilder(tenant, 1, datetime.datetime.now(datetime.UTC))
        status.condition("DatabaseReady", Observation("False", "RestoreFailed", text))
        assert write_status(
            kube, TENANT, tenant, status.base("Degraded"), owned_keys=OWNED_STATUS_KEYS
        )
        stored = kube.get(TENANT, name)
        assert stored is not None
        events = [
            e
            for e in kube.list(EVENT, namespace="default")
            if e["involvedObject"].get("name") == name
        ]
        assert events
        written = json.dumps(stored["status"]) + json.dumps(events)
        assert "pg_restore: error" in written
        for value in values:
            assert value not in written
    finally:
        kube.delete(TENANT, name)
        for event in kube.list(EVENT, namespace="default"):
            if event["involvedObject"].get("name") == name:
                kube.delete(EVENT, event["metadata"]["name"], namespace="default")

"""The audit trail (`kube.audit`): one Event and one `audit: true` line per security action.

The Events go to the in-memory API server (tests/harness/fake_kube.py); the log lines through
the operator's own filters and JSON formatter, as in the running operator. The real API
server's side is tests/integration/test_audit_cluster.py.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from cleo_operator.cli.common import local_user
from cleo_operator.kube.audit import (
    AUDIT_LOGGER,
    audit,
    operator_identity,
    set_operator_identity,
)
from cleo_operator.kube.keys import SecretKEKProvider
from cleo_operator.kube.kinds import EVENT, TENANT
from cleo_operator.observability.logs import JsonFormatter, ObjectContextFilter, RedactingFilter
from cleo_operator.reconcile.keys import OperatorKeys
from cleo_operator.reconcile.tenant import TenantReconciler
from tests.harness.fake_kube import FakeKube
from tests.integration.keys_harness import SecretScanner
from tests.unit.reconcile.test_tenant_decisions import NOW, add_intruder, add_tenant, spec

IDENTITY = "system:serviceaccount:cleo-system:cleo-operator"


@pytest.fixture
def audit_lines() -> Iterator[io.StringIO]:
    """The audit logger's lines as the operator writes them (JSON, filtered, redacted)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ObjectContextFilter())
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(AUDIT_LOGGER)
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    set_operator_identity(IDENTITY)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        set_operator_identity("")


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_an_action_is_an_event_and_one_audit_line_without_the_secret(
    audit_lines: io.StringIO,
) -> None:
    kube = FakeKube(now=lambda: NOW)
    add_tenant(kube, "acme", spec())
    tenant = kube.get(TENANT, "acme")
    assert tenant is not None

    audit(
        kube,
        tenant,
        action="Database",
        message="rotated the password of database cleo_acme (PGPASSWORD=hunter2-secret)",
    )

    (event,) = kube.objects(EVENT, namespace="default")
    assert event["reason"] == "Database"
    assert event["involvedObject"]["name"] == "acme"
    assert "hunter2" not in json.dumps(event)
    (line,) = lines(audit_lines)
    assert line["audit"] is True
    assert line["action"] == "Database"
    assert line["actor"] == IDENTITY
    assert line["object"] == {"kind": "CleoTenant", "name": "acme"}
    assert line["tenant"] == "acme"
    assert line["level"] == "info"
    assert "hunter2" not in audit_lines.getvalue()


def test_without_a_client_only_the_line_is_written_with_the_actor_given(
    audit_lines: io.StringIO,
) -> None:
    audit(
        None,
        {"kind": "Database", "metadata": {"name": "database 'x' on db:5432"}},
        action="RestoreFailed",
        message="TargetNotEmpty",
        actor="alice (command line)",
        type="Warning",
    )
    (line,) = lines(audit_lines)
    assert (line["actor"], line["level"], line["action"]) == (
        "alice (command line)",
        "warning",
        "RestoreFailed",
    )
    assert line["object"] == {"kind": "Database", "name": "database 'x' on db:5432"}


def test_the_operator_is_the_actor_until_it_knows_its_name() -> None:
    set_operator_identity("")
    assert operator_identity() == "cleo-operator"
    set_operator_identity(IDENTITY)
    assert operator_identity() == IDENTITY
    set_operator_identity("")


def test_a_refused_namespace_is_audited_once(audit_lines: io.StringIO) -> None:
    kube = FakeKube(now=lambda: NOW)
    add_intruder(kube)
    tenants = TenantReconciler(kube, operator_namespace="cleo-system", now=lambda: NOW)

    tenants.reconcile("intruder")
    (line,) = lines(audit_lines)
    assert line["action"] == "NamespaceNotOwned"
    assert line["object"] == {"kind": "CleoTenant", "name": "intruder"}
    assert line["level"] == "warning"
    events = [e for e in kube.objects(EVENT, namespace="default") if e["reason"] == line["action"]]
    assert len(events) == 1

    # Looked at again (the refused recheck, a resync): no second line, no second Event.
    tenants.reconcile("intruder")
    tenants.reconcile("intruder")
    assert len(lines(audit_lines)) == 1
    again = [e for e in kube.objects(EVENT, namespace="default") if e["reason"] == line["action"]]
    assert len(again) == 1


def test_a_command_line_user_is_named_when_the_system_knows_it() -> None:
    user = local_user()
    assert user is None or user.endswith(" (command line)")


def test_the_operators_keys_created_and_rotated_are_audited_on_their_secrets(
    audit_lines: io.StringIO,
) -> None:
    kube = FakeKube(now=lambda: NOW)
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "cleo-system"}})
    keys = OperatorKeys.locate(kube, operator_namespace="cleo-system", kek_dir=None)
    assert isinstance(keys.kek, SecretKEKProvider)
    keys.kek.ensure()
    keys.sealing.ensure(now=NOW)
    keys.kek.ensure()  # existing keys are read, not created again: no second line
    keys.kek.rotate()
    keys.sealing.rotate(now=NOW)

    trail = lines(audit_lines)
    assert [e["action"] for e in trail] == [
        "KEKCreated",
        "SealingKeyCreated",
        "KEKRotated",
        "SealingKeyRotated",
    ]
    assert {e["object"]["kind"] for e in trail} == {"Secret"}
    assert {e["object"]["namespace"] for e in trail} == {"cleo-system"}
    assert {e["actor"] for e in trail} == {IDENTITY}
    posted = [e["reason"] for e in kube.objects(EVENT, namespace="cleo-system")]
    assert sorted(posted) == sorted(e["action"] for e in trail)
    scanner = SecretScanner()
    scanner.add_cluster_keys(kube, "cleo-system")
    assert scanner.needles
    scanner.assert_clean("the audit lines", audit_lines.getvalue())
    scanner.assert_clean("the Events", json.dumps(kube.objects(EVENT, namespace="cleo-system")))

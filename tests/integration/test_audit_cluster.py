"""The audit trail on a real API server: a tenant keyring created, then rotated, is an Event
on the CleoTenant and an `audit: true` JSON line each, naming the actor and the tenant, and
neither holds key material.

The real tenant reconcile runs here with `EncryptionPart` (as in test_keys_tenant.py), its log
written by the operator's own JSON formatter and filters; the clock is injected, so a
rotation period of an hour passes in one step.
"""

from __future__ import annotations

import datetime
import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from cleo_operator.kube.audit import AUDIT_LOGGER, set_operator_identity
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import EVENT
from cleo_operator.observability.logs import JsonFormatter, ObjectContextFilter, RedactingFilter
from cleo_operator.reconcile.encryption import EncryptionPart
from cleo_operator.reconcile.keys import OperatorKeys, ensure_operator_keys
from cleo_operator.reconcile.tenant import TenantReconciler
from e2e.cluster import LocalCluster
from tests.harness.specs import IMAGE, apply_tenant
from tests.integration.keys_harness import (
    SecretScanner,
    create_namespace,
    delete_namespace,
)

# The reconciler runs in this process: no operator may race it.
pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("without_session_operator")]

T0 = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=datetime.UTC)
IDENTITY = "system:serviceaccount:audit-test:cleo-operator"


def _unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@pytest.fixture
def setting(
    cluster: LocalCluster, kube: KubeClient, crds_installed: None
) -> Iterator[tuple[OperatorKeys, str, str]]:
    del crds_installed
    operator_ns, name = _unique("audit-op-"), _unique("audit")
    namespace = f"{name}-ns"
    create_namespace(kube, operator_ns)
    keys = ensure_operator_keys(kube, operator_namespace=operator_ns, kek_dir=None, now=T0)
    yield keys, name, namespace
    cluster.kubectl("delete", "cleotenant", name, "--wait=false", check=False)
    delete_namespace(kube, namespace)
    delete_namespace(kube, operator_ns)


@pytest.fixture
def audit_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ObjectContextFilter())
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    audit_logger = logging.getLogger(AUDIT_LOGGER)
    level = audit_logger.level
    audit_logger.setLevel(logging.INFO)
    set_operator_identity(IDENTITY)
    try:
        yield stream
    finally:
        logging.getLogger().removeHandler(handler)
        audit_logger.setLevel(level)
        set_operator_identity("")


def test_keyring_creation_and_rotation_are_audited_without_key_material(
    cluster: LocalCluster,
    kube: KubeClient,
    setting: tuple[OperatorKeys, str, str],
    audit_log: io.StringIO,
) -> None:
    keys, name, namespace = setting
    clock = [T0]
    reconciler = TenantReconciler(kube, parts=[EncryptionPart(kube, keys)], now=lambda: clock[0])
    spec: dict[str, Any] = {
        "namespace": namespace,
        "workload": {"image": IMAGE},
        "encryption": {"rotationPeriod": "1h"},
    }
    apply_tenant(cluster, name, spec)

    reconciler.reconcile(name)
    clock[0] = T0 + datetime.timedelta(minutes=61)
    reconciler.reconcile(name)

    entries = [json.loads(line) for line in audit_log.getvalue().splitlines()]
    trail = [e for e in entries if e.get("audit") is True]
    assert len(trail) == 2, entries
    for entry in trail:
        assert entry["action"] == "Keyring"
        assert entry["actor"] == IDENTITY
        assert entry["object"] == {"kind": "CleoTenant", "name": name}
        assert entry["tenant"] == name
        assert entry["logger"] == AUDIT_LOGGER
    assert "v1" in trail[0]["message"]
    assert "v2" in trail[1]["message"]

    events = [
        e
        for e in kube.list(EVENT, namespace="default")
        if e["involvedObject"]["name"] == name and e["reason"] == "Keyring"
    ]
    assert len(events) == 2, events
    assert {e["message"] for e in events} == {e["message"].removeprefix("Keyring: ") for e in trail}

    scanner = SecretScanner()
    scanner.add_cluster_keys(kube, keys.operator_namespace, [namespace])
    assert scanner.needles
    scanner.assert_clean("the audit log", audit_log.getvalue())
    scanner.assert_clean("the Events", json.dumps(events))

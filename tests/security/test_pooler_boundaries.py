"""Attacks on the tenant's pooler: its network paths, and what its Secret gives away.

The NetworkPolicies are the ones the operator renders for a pooled tenant (the tenant's
own set with the workload on the pooler's route, and the pooler part's check policy),
judged by an independent evaluator of NetworkPolicy semantics (tests/unit/render/netpol.py,
written from the Kubernetes documentation), so that the question is "can this pod open
that connection", not "does the YAML look right". The control-plane test
(tests/integration/test_pooler_cluster.py) shows the same objects on a real API server;
the admission tests (tests/security/test_tenant_writable_admission.py) show that a tenant
admin cannot make a pod wear the pooler's labels.
"""

from __future__ import annotations

import contextlib
import datetime
import socket
import struct
import threading
from typing import Any

import pytest

from cleo_operator.api.pooler import PoolerSpec
from cleo_operator.api.tenant import parse_tenant_spec
from cleo_operator.data.errors import DataError
from cleo_operator.data.pooler import check_pooler_login
from cleo_operator.data.sites import SiteConfig
from cleo_operator.reconcile.database_secret import credentials_values
from cleo_operator.reconcile.pooler import (
    DEFAULT_OPERATOR_POD_LABELS,
    pooler_target,
    render_check_policy,
)
from cleo_operator.reconcile.tenant_parts import TenantContext
from cleo_operator.render.child import workload_pod_labels
from cleo_operator.render.meta import tenant_owner
from cleo_operator.render.network import render_network_policies
from cleo_operator.render.pooler import (
    DATABASE_ROUTE_LABEL,
    POOLER_PORT,
    POOLER_ROUTE,
    pooler_config_values,
    pooler_selector,
)
from tests.unit.render.netpol import Pod, can_connect, can_reach_ip

pytestmark = [pytest.mark.security]

TENANT, UID, NS = "acme", "0b6f3c2e-5d1a-4c1e-9a57-3f1d2b8c9e10", "cleo-acme"
OPERATOR_NS = "cleo-system"
SITE_IP, SITE_PORT = "10.20.0.5", 5432
WORKLOAD_PORT = 8080
CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

SPEC = parse_tenant_spec(
    {
        "workload": {"image": "registry.example/cleoai:1", "port": WORKLOAD_PORT},
        "network": {"databaseEgress": [{"cidr": "10.20.0.0/16", "ports": [SITE_PORT]}]},
        "database": {"enabled": True, "pooler": {"enabled": True}},
    }
)


def policies() -> list[dict[str, Any]]:
    owner = tenant_owner(name=TENANT, uid=UID)
    rendered = render_network_policies(
        tenant=TENANT, namespace=NS, owner=owner, spec=SPEC, pooled=True
    )
    ctx = TenantContext(
        name=TENANT,
        uid=UID,
        generation=1,
        spec=SPEC,
        namespace=NS,
        annotations={},
        status={},
        now=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    )
    return [*rendered, render_check_policy(ctx, operator_namespace=OPERATOR_NS)]


TENANT_NS_LABELS = {"cleoai.io/tenant": TENANT}
WORKLOAD = Pod(
    NS, {**workload_pod_labels(TENANT), DATABASE_ROUTE_LABEL: POOLER_ROUTE}, TENANT_NS_LABELS
)
POOLER = Pod(NS, {**pooler_selector(TENANT)}, TENANT_NS_LABELS)
JOB = Pod(NS, {"job-name": "migrate"}, TENANT_NS_LABELS)
OPERATOR = Pod(OPERATOR_NS, dict(DEFAULT_OPERATOR_POD_LABELS))
BACKUP_RUNNER = Pod(OPERATOR_NS, {"app.kubernetes.io/name": "cleo-backup"})
OTHER_TENANT = Pod("cleo-other", {"app": "anything"}, {"cleoai.io/tenant": "other"})


def test_the_workload_reaches_the_site_only_through_the_pooler() -> None:
    rules = policies()
    assert can_connect(rules, WORKLOAD, POOLER, port=POOLER_PORT)
    assert not can_reach_ip(rules, WORKLOAD, SITE_IP, port=SITE_PORT)
    assert can_reach_ip(rules, POOLER, SITE_IP, port=SITE_PORT)
    # Nowhere else: the pooler's way out is the site's port, no other.
    assert not can_reach_ip(rules, POOLER, SITE_IP, port=22)
    assert not can_reach_ip(rules, POOLER, "203.0.113.9", port=SITE_PORT)


def test_only_the_operator_pod_reaches_the_poolers_port() -> None:
    # Other pods of the operator's namespace (a backup runner, a debugging pod) are not the
    # operator: they get no way to the tenant's pool.
    rules = policies()
    assert can_connect(rules, OPERATOR, POOLER, port=POOLER_PORT)
    assert not can_connect(rules, BACKUP_RUNNER, POOLER, port=POOLER_PORT)
    assert not can_connect(rules, Pod(OPERATOR_NS, {}), POOLER, port=POOLER_PORT)


def test_only_the_operator_namespace_is_let_in_and_only_to_the_poolers_port() -> None:
    rules = policies()
    assert can_connect(rules, OPERATOR, POOLER, port=POOLER_PORT)
    assert not can_connect(rules, OPERATOR, POOLER, port=WORKLOAD_PORT)
    assert not can_connect(rules, OPERATOR, WORKLOAD, port=WORKLOAD_PORT)
    assert not can_connect(rules, OPERATOR, JOB, port=POOLER_PORT)
    assert not can_connect(rules, OTHER_TENANT, POOLER, port=POOLER_PORT)
    # A namespace that calls itself the operator's by a label of its own gets nothing:
    # the policy names the API server's own name label.
    impostor = Pod("evil", {}, {"name": OPERATOR_NS})
    assert not can_connect(rules, impostor, POOLER, port=POOLER_PORT)


def test_a_pod_wearing_the_poolers_labels_gains_no_way_out() -> None:
    """Were the admission policy missing, a twin of the pooler would reach what any pod of
    the namespace reaches (Jobs reach the site), and no more: the pooler has no egress of
    its own."""
    rules = policies()
    twin = Pod(NS, dict(POOLER.pod_labels), TENANT_NS_LABELS)
    for ip, port in ((SITE_IP, SITE_PORT), (SITE_IP, 22), ("203.0.113.9", 443)):
        assert can_reach_ip(rules, twin, ip, port=port) == can_reach_ip(rules, JOB, ip, port=port)
    for target in (OPERATOR, OTHER_TENANT):
        for port in (POOLER_PORT, 443, 8080):
            assert can_connect(rules, twin, target, port=port) == can_connect(
                rules, JOB, target, port=port
            )


def test_removing_the_route_label_from_a_pod_gives_back_only_what_every_pod_has() -> None:
    rules = policies()
    relabelled = Pod(NS, workload_pod_labels(TENANT), TENANT_NS_LABELS)
    assert can_reach_ip(rules, relabelled, SITE_IP, port=SITE_PORT) == can_reach_ip(
        rules, JOB, SITE_IP, port=SITE_PORT
    )


def test_the_poolers_secret_holds_nothing_the_tenant_admin_cannot_already_read() -> None:
    """Tenant admins read every Secret of the namespace, the credentials Secret included.
    The pooler's Secret must not add to that: its only secret is the tenant's own
    password, and its CA is the credentials Secret's."""
    site = SiteConfig(
        name="main",
        host="pg.example.internal",
        sslmode="verify-full",
        ssl_root_cert="/etc/cleo/sites/main.crt",
        ca_pem=CA,
    )
    target = pooler_target(site, tenant=TENANT)
    pooler = PoolerSpec(enabled=True)
    first = pooler_config_values(
        target=target, pooler=pooler, password="P" * 43, namespace="cleo-x"
    )
    second = pooler_config_values(
        target=target, pooler=pooler, password="Q" * 43, namespace="cleo-x"
    )
    assert {k: v.replace("P" * 43, "<pw>") for k, v in first.items()} == {
        k: v.replace("Q" * 43, "<pw>") for k, v in second.items()
    }
    credentials = credentials_values(TENANT, site=site, password="P" * 43)
    assert first["ca.crt"] == credentials["ca.crt"]
    # No path of the operator's pod, no admin identity: the tenant's role, its database.
    assert not any("/etc/cleo/sites" in value for value in first.values())
    databases = first["pgbouncer.ini"].split("[databases]\n")[1].split("\n\n")[0]
    assert databases.splitlines() == [
        "cleo_acme = host=pg.example.internal port=5432 dbname=cleo_acme user=cleo_acme "
        f"password={'P' * 43}"
    ]
    assert first["userlist.txt"].splitlines() == [f'"cleo_acme" "{"P" * 43}"']


class ImpersonatingPooler:
    """A server on loopback that asks every client for its password in clear (or MD5, whose
    hash is as good as the password to it) and records all it receives."""

    def __init__(self, method: int) -> None:
        self.method = method
        self.received = bytearray()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        # Every connection (the check probes the port before it logs in), until closed.
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.listener.accept()
                with conn, contextlib.suppress(OSError):
                    conn.settimeout(5)
                    startup = conn.recv(65536)  # the startup message
                    if not startup:
                        continue
                    self.received += startup
                    salt = b"salt" if self.method == 5 else b""
                    conn.sendall(b"R" + struct.pack("!ii", 8 + len(salt), self.method) + salt)
                    while chunk := conn.recv(65536):
                        self.received += chunk

    def close(self) -> None:
        self.listener.close()
        self.thread.join(timeout=5)


@pytest.mark.parametrize("method", [3, 5], ids=["cleartext", "md5"])
def test_an_impersonating_pooler_never_receives_the_tenant_password(method: int) -> None:
    password = "A" * 43
    fake = ImpersonatingPooler(method)
    try:
        with pytest.raises(DataError) as caught:
            check_pooler_login(
                host="127.0.0.1",
                port=fake.port,
                dbname="cleo_acme",
                user="cleo_acme",
                password=password,
                timeout_seconds=2,
            )
    finally:
        fake.close()
    assert b"cleo_acme" in fake.received  # it did talk to the fake
    assert password.encode() not in fake.received
    assert password not in str(caught.value)

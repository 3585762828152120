"""Workload tracing on a real API server: the CleoAI pods get the OTEL_* variables naming
their tenant (not the tenant's spoofed value), the tenant's and the backup runner's
NetworkPolicies reach the collector and nothing more, a change of the setting rolls the
workload once, and with it unchanged a reconcile writes nothing.

The real tenant reconcile runs in this process; a change of the setting is what an
operator restart with other values does (the settings are read once at start): a new
reconciler with the new setting.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cleo_operator.api.backup import parse_backup_spec
from cleo_operator.api.objects import ObjectRef
from cleo_operator.kube.apply import with_hash
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import DEPLOYMENT, NETWORK_POLICY
from cleo_operator.reconcile.tenant import TenantReconciler
from cleo_operator.render.backup import BackupPodSettings, render_network_policy
from cleo_operator.render.network import ALLOW_COLLECTOR, CollectorPeer
from cleo_operator.render.workload import WorkloadTracing
from e2e.cluster import LocalCluster
from tests.harness.cluster_fixtures import wait_for
from tests.harness.operator_fixtures import start_operator
from tests.harness.specs import IMAGE, apply_tenant
from tests.integration.keys_harness import delete_namespace

# The reconciler runs in this process: no operator may race it.
pytestmark = [
    pytest.mark.cluster,
    pytest.mark.security,
    pytest.mark.usefixtures("without_session_operator"),
]

COLLECTOR = CollectorPeer(
    namespace_labels={"kubernetes.io/metadata.name": "observability"},
    pod_labels={"app.kubernetes.io/name": "otel-collector"},
)
FIRST = WorkloadTracing(
    endpoint="http://otel-collector.observability.svc:4318", collector=COLLECTOR
)
SECOND = WorkloadTracing(
    endpoint="http://otel-gateway.observability.svc:4318",
    collector=CollectorPeer(
        namespace_labels=COLLECTOR.namespace_labels,
        pod_labels=COLLECTOR.pod_labels,
        ports=(4317, 4318),
    ),
)


@pytest.fixture
def tenant(cluster: LocalCluster, kube: KubeClient, crds_installed: None) -> Iterator[str]:
    del crds_installed
    name = f"traced{uuid.uuid4().hex[:8]}"
    spec: dict[str, Any] = {
        "namespace": f"{name}-ns",
        "workload": {
            "image": IMAGE,
            # The tenant tries to pass for another tenant in its traces.
            "env": [{"name": "OTEL_RESOURCE_ATTRIBUTES", "value": "cleoai.tenant=globex"}],
        },
    }
    apply_tenant(cluster, name, spec)
    yield name
    cluster.kubectl("delete", "cleotenant", name, "--wait=false", check=False)
    delete_namespace(kube, f"{name}-ns")


def settle(reconciler: TenantReconciler, name: str) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """Reconcile until a round writes nothing; what the rounds applied and deleted."""
    applied: list[ObjectRef] = []
    deleted: list[ObjectRef] = []

    def quiet() -> bool:
        result = reconciler.reconcile(name)
        applied.extend(result.applied)
        deleted.extend(result.deleted)
        return not result.applied and not result.deleted and not result.status_written

    wait_for(quiet, timeout=60, interval=0.5, what="a reconcile that writes nothing")
    return applied, deleted


def container_env(kube: KubeClient, namespace: str) -> tuple[dict[str, str], int]:
    deployment = kube.get(DEPLOYMENT, "cleoai", namespace=namespace)
    assert deployment is not None
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    entries = container.get("env") or []
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), names
    return {e["name"]: e.get("value", "") for e in entries}, deployment["metadata"]["generation"]


def kinds(refs: list[ObjectRef]) -> list[str]:
    return sorted(f"{r['kind']}/{r['name']}" for r in refs)


def test_a_setting_change_rolls_the_workload_once_and_a_resync_writes_nothing(
    kube: KubeClient, tenant: str
) -> None:
    namespace = f"{tenant}-ns"
    settle(TenantReconciler(kube, workload_tracing=FIRST), tenant)
    env, generation = container_env(kube, namespace)
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == FIRST.endpoint
    assert env["OTEL_SERVICE_NAME"] == "cleoai"
    # The operator's value, not the spec's: the tenant cannot name another tenant.
    assert env["OTEL_RESOURCE_ATTRIBUTES"] == (
        f"cleoai.tenant={tenant},k8s.namespace.name={namespace}"
    )
    policy = kube.get(NETWORK_POLICY, ALLOW_COLLECTOR, namespace=namespace)
    assert policy is not None
    assert policy["spec"] == {
        "podSelector": {
            "matchLabels": {"app.kubernetes.io/name": "cleoai", "cleoai.io/tenant": tenant}
        },
        "policyTypes": ["Egress"],
        "egress": [
            {
                "to": [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": "observability"},
                            "matchExpressions": [
                                {"key": "cleoai.io/tenant", "operator": "DoesNotExist"}
                            ],
                        },
                        "podSelector": {
                            "matchLabels": {"app.kubernetes.io/name": "otel-collector"}
                        },
                    }
                ],
                "ports": [{"protocol": "TCP", "port": 4318}],
            }
        ],
    }

    # Unchanged: a new process with the same setting writes nothing at all.
    assert settle(TenantReconciler(kube, workload_tracing=FIRST), tenant) == ([], [])

    # Changed: the Deployment (its pods roll once) and the collector's policy, once each.
    applied, deleted = settle(TenantReconciler(kube, workload_tracing=SECOND), tenant)
    assert kinds(applied) == ["Deployment/cleoai", f"NetworkPolicy/{ALLOW_COLLECTOR}"]
    assert deleted == []
    env, rolled = container_env(kube, namespace)
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == SECOND.endpoint
    assert rolled == generation + 1
    policy = kube.get(NETWORK_POLICY, ALLOW_COLLECTOR, namespace=namespace)
    assert policy is not None
    assert policy["spec"]["egress"][0]["ports"] == [
        {"protocol": "TCP", "port": 4317},
        {"protocol": "TCP", "port": 4318},
    ]

    # Off: the pods roll once more, without OTEL_* of the operator's; the policy goes.
    applied, deleted = settle(TenantReconciler(kube, workload_tracing=None), tenant)
    assert kinds(applied) == ["Deployment/cleoai"]
    assert kinds(deleted) == [f"NetworkPolicy/{ALLOW_COLLECTOR}"]
    env, off = container_env(kube, namespace)
    assert off == rolled + 1
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env
    assert env["OTEL_RESOURCE_ATTRIBUTES"] == "cleoai.tenant=globex"  # the spec's own, now
    assert kube.get(NETWORK_POLICY, ALLOW_COLLECTOR, namespace=namespace) is None


def test_the_backup_runners_policy_is_accepted_as_rendered(kube: KubeClient, tenant: str) -> None:
    namespace = f"{tenant}-ns"
    settle(TenantReconciler(kube), tenant)  # the namespace
    spec = parse_backup_spec(
        {"tenant": tenant, "destination": {"type": "pvc", "pvc": {"claimName": "backups"}}}
    )
    by_address = CollectorPeer(cidr="192.0.2.10/32", ports=(4317, 4318))
    for collector in (COLLECTOR, by_address):
        rendered = render_network_policy(
            name="nightly",
            namespace=namespace,
            uid=str(uuid.uuid4()),
            tenant=tenant,
            spec=spec,
            settings=BackupPodSettings(
                image=IMAGE, api_server_cidrs=("10.0.0.1/32",), collector=collector
            ),
        )
        rendered["metadata"].pop("ownerReferences")  # no CleoBackup to own it here
        stored = kube.apply(with_hash(rendered))
        assert stored["spec"] == rendered["spec"]
        assert stored["spec"]["egress"][-1]["ports"][-1] == {"protocol": "TCP", "port": 4318}


def test_the_operator_does_not_start_with_a_collector_a_tenant_could_match(
    cluster: LocalCluster, kube: KubeClient, crds_installed: None, tmp_path: Path
) -> None:
    """Read once at start: an empty namespaceSelector (every namespace, tenants' too) stops
    the process with exit code 2 and the variable's name, before any reconcile."""
    del crds_installed
    namespace = f"traced-op-{uuid.uuid4().hex[:8]}"
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    collector = {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "collector"}}}
    proc = start_operator(
        cluster,
        tmp_path / "operator.log",
        extra_args=["--operator-namespace", namespace],
        env={
            "CLEO_WORKLOAD_TRACING": "true",
            "CLEO_WORKLOAD_OTLP_ENDPOINT": FIRST.endpoint,
            "CLEO_TRACING_COLLECTOR": json.dumps(collector),
        },
        wait_ready=False,
    )
    try:
        code = proc.popen.wait(timeout=60)
    finally:
        proc.stop()
        delete_namespace(kube, namespace)
    log = proc.log_text()
    assert code == 2, log[-3000:]
    assert "CLEO_TRACING_COLLECTOR: namespaceSelector" in log, log[-3000:]

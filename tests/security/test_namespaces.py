"""Namespace ownership under races, with the tenant reconciler against the real API server.

Two tenants racing for one free namespace, and a namespace that changes hands between the
operator's ownership check and its delete. The reconcilers run in this process (the
session's operator, if any, is paused), so the race can be started on a barrier.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from cleo_operator.api.objects import KubeObject
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import NAMESPACE, ROLE_BINDING, TENANT, Kind
from cleo_operator.reconcile.tenant import TenantReconciler
from e2e.cluster import LocalCluster
from tests.harness.specs import apply_tenant

pytestmark = [
    pytest.mark.security,
    pytest.mark.cluster,
    pytest.mark.usefixtures("crds_installed", "without_session_operator"),
]

UID_LABEL = "cleoai.io/tenant-uid"


def _unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def create_tenant(cluster: LocalCluster, name: str, spec: dict[str, Any]) -> str:
    apply_tenant(cluster, name, spec)
    uid = cluster.kubectl("get", "cleotenant", name, "-o", "jsonpath={.metadata.uid}").stdout
    return uid.strip()


@pytest.fixture
def cleanup(cluster: LocalCluster) -> Iterator[list[str]]:
    """Tenants to delete after the test (no operator runs: the finalizer is not there)."""
    names: list[str] = []
    yield names
    for name in names:
        cluster.kubectl("delete", "cleotenant", name, "--wait=false", check=False)


def test_of_tenants_racing_for_one_free_namespace_exactly_one_wins(
    cluster: LocalCluster, kube: KubeClient, cleanup: list[str]
) -> None:
    for _ in range(3):
        ns = _unique("race-")
        names = [_unique("racer-") for _ in range(4)]
        cleanup.extend(names)
        uids = {n: create_tenant(cluster, n, {"namespace": ns}) for n in names}
        barrier = threading.Barrier(len(names))
        outcomes: dict[str, Any] = {}

        def run(
            name: str,
            barrier: threading.Barrier = barrier,
            outcomes: dict[str, Any] = outcomes,
        ) -> None:
            reconciler = TenantReconciler(kube, operator_namespace="cleo-system")
            barrier.wait()
            try:
                outcomes[name] = reconciler.reconcile(name)
            except Exception as exc:  # a lost race may also surface as a conflict
                outcomes[name] = exc

        threads = [threading.Thread(target=run, args=(n,)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        # A second round, as the loop would do after a conflict: every one settles.
        for name in names:
            TenantReconciler(kube, operator_namespace="cleo-system").reconcile(name)

        live = kube.get(NAMESPACE, ns)
        assert live is not None
        owner = live["metadata"]["labels"][UID_LABEL]
        winners = [n for n, u in uids.items() if u == owner]
        assert len(winners) == 1
        assert [o["uid"] for o in live["metadata"]["ownerReferences"]] == [owner]
        for name in names:
            tenant = kube.get(TENANT, name)
            assert tenant is not None
            conds = {c["type"]: c for c in tenant["status"]["conditions"]}
            if name in winners:
                assert conds["NamespaceReady"]["status"] == "True", conds
            else:
                assert conds["NamespaceReady"]["reason"] == "NamespaceNotOwned", conds
                assert f"tenant {winners[0]}" in conds["NamespaceReady"]["message"]
                assert not tenant["status"].get("children")
        # Only the winner's bindings are in the namespace.
        bindings = kube.list(ROLE_BINDING, namespace=ns)
        assert {b["metadata"]["labels"]["cleoai.io/tenant"] for b in bindings} <= {winners[0]}
        cluster.kubectl("delete", "namespace", ns, "--wait=false")


class RelabelledOnRead(KubeClient):
    """The real client; right after the operator reads namespace `target`, a cluster
    administrator (a second, real API request) hands the namespace to someone else.

    Not a mock: both requests reach the API server; this only fixes the interleaving that
    a real race would need luck to hit.
    """

    def __init__(self, inner: KubeClient, target: str, admin: KubeClient) -> None:
        super().__init__(inner.api)
        self.target = target
        self.admin = admin
        self.reads = 0

    def get(self, kind: Kind, name: str, *, namespace: str | None = None) -> KubeObject | None:
        obj = super().get(kind, name, namespace=namespace)
        if kind.kind == "Namespace" and name == self.target:
            self.reads += 1
            # finalize reads the namespace first to decide, then again right before the
            # delete: the hand-over lands between that last read and the delete.
            if self.reads == 2:
                self.admin.patch_merge(
                    NAMESPACE, name, {"metadata": {"labels": {UID_LABEL: "someone-else"}}}
                )
        return obj


def test_a_namespace_that_changes_hands_before_the_delete_is_not_deleted(
    cluster: LocalCluster, kube: KubeClient, cleanup: list[str]
) -> None:
    name = _unique("handover-")
    ns = f"cleo-{name}"
    cleanup.append(name)
    create_tenant(cluster, name, {"deletionPolicy": "Delete"})
    TenantReconciler(kube, operator_namespace="cleo-system").reconcile(name)
    assert kube.get(NAMESPACE, ns) is not None

    racing = TenantReconciler(RelabelledOnRead(kube, ns, kube), operator_namespace="cleo-system")
    assert racing.finalize(name) is False  # the delete's preconditions failed: retry later
    live = kube.get(NAMESPACE, ns)
    assert live is not None
    assert live["metadata"].get("deletionTimestamp") is None
    # The next round reads a namespace that is no longer the tenant's: released, kept.
    assert racing.finalize(name) is True
    live = kube.get(NAMESPACE, ns)
    assert live is not None
    assert live["metadata"].get("deletionTimestamp") is None
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_a_tenant_with_retain_leaves_a_foreign_namespace_unmarked(
    cluster: LocalCluster, kube: KubeClient, cleanup: list[str]
) -> None:
    """Retain on a refused tenant touches nothing: no orphan label, no owner patch."""
    ns = _unique("foreign-")
    cluster.kubectl("create", "namespace", ns)
    name = _unique("retainer-")
    cleanup.append(name)
    create_tenant(cluster, name, {"namespace": ns})
    reconciler = TenantReconciler(kube, operator_namespace="cleo-system")
    reconciler.reconcile(name)
    before = kube.get(NAMESPACE, ns)
    assert before is not None
    assert reconciler.finalize(name) is True
    after = kube.get(NAMESPACE, ns)
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert "cleoai.io/orphaned" not in (after["metadata"].get("labels") or {})
    cluster.kubectl("delete", "namespace", ns, "--wait=false")

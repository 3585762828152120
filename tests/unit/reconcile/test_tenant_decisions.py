"""The tenant reconciler's decisions, judged in milliseconds on an in-memory API server.

FakeKube (tests/harness/fake_kube.py) is a fake of a boundary, the Kubernetes API server,
not of the operator: the reconciler under test is the real one, and so are rendering and
the namespace claim. These tests say what the reconciler decides to write, and how many
writes it costs; the control-plane tests (e2e/test_tenant.py, tests/security/
test_namespaces.py, tests/integration) remain the proof that the same decisions work
against a real API server, with its defaulting, admission and controllers, which the fake
has not. Nothing runs the cluster's controllers here: where a test needs the deployment
or namespace controller, it does their part by hand and says so.
"""

from __future__ import annotations

import datetime
import threading
from typing import Any

import pytest

from cleo_operator.kube.kinds import (
    DEPLOYMENT,
    KINDS,
    NAMESPACE,
    NETWORK_POLICY,
    RESOURCE_QUOTA,
    ROLE_BINDING,
    SERVICE,
    TENANT,
)
from cleo_operator.reconcile.tenant import REFUSED_RECHECK_SECONDS, TenantReconciler
from cleo_operator.reconcile.tenant_parts import PartResult, TenantContext
from cleo_operator.render.meta import FINALIZER
from cleo_operator.render.rbac import OperatorAccess
from tests.harness.fake_kube import FakeKube, Write

NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
OPERATOR_NAMESPACE = "cleo-system"
UID_LABEL = "cleoai.io/tenant-uid"
ACCESS = OperatorAccess(
    role="cleo-operator-tenant", username="system:serviceaccount:cleo-system:cleo-operator"
)


def spec(**overrides: Any) -> dict[str, Any]:
    """A tenant with a child of every kind but the HPA (no metrics API to judge it)."""
    return {
        "workload": {
            "image": "registry.example.com/cleoai:2.0.0",
            "replicas": 2,
            "config": {"CLEO_MODE": "unit"},
        },
        "autoscaling": {"enabled": False},
        "admins": [{"kind": "Group", "name": "acme-ops"}],
        "viewers": [{"kind": "Group", "name": "acme-support"}],
        "quota": {"cpu": "2", "pods": 10},
        "limits": {"defaultRequestCpu": "10m"},
        **overrides,
    }


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube(now=lambda: NOW)


def reconciler(kube: FakeKube, **kwargs: Any) -> TenantReconciler:
    return TenantReconciler(kube, operator_namespace=OPERATOR_NAMESPACE, now=lambda: NOW, **kwargs)


def add_tenant(kube: FakeKube, name: str, tenant_spec: dict[str, Any]) -> str:
    """A CleoTenant as its author would create it; returns its uid. Not counted as a write."""
    created = kube.create(
        {
            "apiVersion": "cleoai.io/v1alpha1",
            "kind": "CleoTenant",
            "metadata": {"name": name},
            "spec": tenant_spec,
        }
    )
    kube.writes.clear()
    return str(created["metadata"]["uid"])


def run_deployment_controller(kube: FakeKube, namespace: str) -> None:
    """What the deployment controller would report once the pods run (the fake has none)."""
    for dep in kube.objects(DEPLOYMENT, namespace=namespace):
        want = int(dep["spec"].get("replicas", 1))
        kube.patch_merge(
            DEPLOYMENT,
            dep["metadata"]["name"],
            {
                "status": {
                    "observedGeneration": dep["metadata"]["generation"],
                    "replicas": want,
                    "updatedReplicas": want,
                    "readyReplicas": want,
                    "availableReplicas": want,
                    "conditions": [{"type": "Available", "status": "True"}],
                }
            },
            namespace=namespace,
            subresource="status",
        )
    kube.writes.clear()


def conditions(kube: FakeKube, name: str) -> dict[str, dict[str, Any]]:
    tenant = kube.get(TENANT, name)
    assert tenant is not None
    return {c["type"]: c for c in (tenant.get("status") or {}).get("conditions") or []}


def status_of(kube: FakeKube, name: str) -> dict[str, Any]:
    tenant = kube.get(TENANT, name)
    assert tenant is not None
    return dict(tenant.get("status") or {})


def delete_tenant(kube: FakeKube, name: str) -> None:
    """`kubectl delete` of a tenant that holds the operator's finalizer (as Kopf puts it)."""
    kube.patch_merge(TENANT, name, {"metadata": {"finalizers": [FINALIZER]}})
    kube.delete(TENANT, name)
    kube.writes.clear()


def ready_tenant(kube: FakeKube, name: str, **overrides: Any) -> TenantReconciler:
    """A tenant reconciled once, its pods reported running, and reconciled to Ready."""
    add_tenant(kube, name, spec(**overrides))
    tenants = reconciler(kube)
    tenants.reconcile(name)
    run_deployment_controller(kube, f"cleo-{name}")
    assert tenants.reconcile(name).ready
    kube.writes.clear()
    return tenants


def test_first_reconcile_creates_the_namespace_and_every_child(kube: FakeKube) -> None:
    uid = add_tenant(kube, "acme", spec())
    result = reconciler(kube).reconcile("acme")

    ns = kube.get(NAMESPACE, "cleo-acme")
    assert ns is not None
    assert ns["metadata"]["labels"][UID_LABEL] == uid
    assert [o["uid"] for o in ns["metadata"]["ownerReferences"]] == [uid]
    # The namespace is created (a create, not an apply: of two racing tenants, one wins).
    assert kube.writes[0] == Write("create", "Namespace", "", "cleo-acme")
    assert {r["kind"] for r in result.applied} == {
        "Namespace",
        "ResourceQuota",
        "LimitRange",
        "NetworkPolicy",
        "ServiceAccount",
        "RoleBinding",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    }
    for ref in result.applied:
        kind = KINDS[(ref["apiVersion"], ref["kind"])]
        child = kube.get(kind, ref["name"], namespace=ref["namespace"] or None)
        assert child is not None, ref
        assert child["metadata"]["labels"]["cleoai.io/tenant"] == "acme"
        assert child["metadata"]["ownerReferences"][0]["uid"] == uid
    # Nothing is written outside the tenant's namespace but its Events.
    elsewhere = {w for w in kube.writes if w.namespace not in ("cleo-acme", "", "default")}
    assert elsewhere == set()
    assert not result.ready  # no pods run yet: the fake has no deployment controller


def test_a_young_tenant_gets_its_first_status_when_it_is_ready(kube: FakeKube) -> None:
    add_tenant(kube, "acme", spec())
    tenants = reconciler(kube)
    result = tenants.reconcile("acme")
    # Still converging and seconds old: no status yet (one write instead of two), asked back.
    assert not result.status_written
    assert result.requeue_after == 1.0
    assert status_of(kube, "acme") == {}

    run_deployment_controller(kube, "cleo-acme")
    result = tenants.reconcile("acme")
    assert result.ready
    assert result.applied == []
    cond = conditions(kube, "acme")
    for type_ in ("NamespaceReady", "PoliciesReady", "WorkloadAvailable", "Ready"):
        assert cond[type_]["status"] == "True", cond[type_]
    assert status_of(kube, "acme")["phase"] == "Ready"
    assert status_of(kube, "acme")["replicas"]["available"] == 2
    assert [w.method for w in kube.writes] == ["create", "patch"]  # a Ready Event, the status
    assert kube.writes[1].subresource == "status"


def test_a_second_reconcile_writes_nothing(kube: FakeKube) -> None:
    tenants = ready_tenant(kube, "acme")
    result = tenants.reconcile("acme")
    assert result.ready
    assert (result.applied, result.deleted, result.status_written) == ([], [], False)
    assert kube.writes == []
    # Nor after a restart (a new reconciler, which has not converged anything itself).
    reconciler(kube).reconcile("acme")
    assert kube.writes == []


def test_a_child_deleted_by_hand_is_put_back(kube: FakeKube) -> None:
    tenants = ready_tenant(kube, "acme")
    kube.delete(NETWORK_POLICY, "cleo-default-deny", namespace="cleo-acme")
    kube.patch_merge(
        RESOURCE_QUOTA, "cleo-quota", {"spec": {"hard": {"pods": "1000"}}}, namespace="cleo-acme"
    )
    kube.writes.clear()

    result = tenants.reconcile("acme")
    assert {(r["kind"], r["name"]) for r in result.applied} == {
        ("NetworkPolicy", "cleo-default-deny"),
        ("ResourceQuota", "cleo-quota"),
    }
    assert kube.get(NETWORK_POLICY, "cleo-default-deny", namespace="cleo-acme") is not None
    quota = kube.get(RESOURCE_QUOTA, "cleo-quota", namespace="cleo-acme")
    assert quota is not None
    assert quota["spec"]["hard"]["pods"] == "10"
    # The two applies, and an Event that says so; status did not change.
    assert sorted((w.method, w.kind) for w in kube.writes) == [
        ("apply", "NetworkPolicy"),
        ("apply", "ResourceQuota"),
        ("create", "Event"),
    ]
    events = kube.objects(KINDS[("v1", "Event")], namespace="default")
    assert any(e["reason"] == "DriftRepaired" for e in events)


def add_intruder(kube: FakeKube) -> None:
    """Tenant `owner`, its namespace `shared`, and tenant `intruder` asking for `shared`."""
    owner_uid = add_tenant(kube, "owner", spec())
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "shared", "labels": {UID_LABEL: owner_uid}},
        }
    )
    add_tenant(kube, "intruder", spec(namespace="shared"))


def test_a_refused_tenant_looks_again_after_the_operators_setting(kube: FakeKube) -> None:
    add_intruder(kube)
    result = reconciler(kube, refused_recheck_seconds=1.5).reconcile("intruder")
    assert not result.ready
    assert result.requeue_after == 1.5


def test_a_namespace_of_another_tenant_is_refused_and_left_untouched(kube: FakeKube) -> None:
    add_intruder(kube)
    before = kube.get(NAMESPACE, "shared")

    result = reconciler(kube).reconcile("intruder")
    assert not result.ready
    assert result.applied == []
    assert result.requeue_after == REFUSED_RECHECK_SECONDS
    cond = conditions(kube, "intruder")
    assert cond["NamespaceReady"]["status"] == "False"
    assert cond["NamespaceReady"]["reason"] == "NamespaceNotOwned"
    assert "tenant owner" in cond["NamespaceReady"]["message"]
    assert cond["Ready"]["reason"] == "NamespaceNotOwned"
    status = status_of(kube, "intruder")
    assert status["children"] == []
    assert "namespace" not in status
    # Nothing was written into the namespace, nor to it.
    assert kube.writes_to("shared") == []
    assert kube.get(NAMESPACE, "shared") == before
    assert {(w.method, w.kind) for w in kube.writes} <= {
        ("patch", "CleoTenant"),
        ("create", "Event"),
    }
    # The refusal is stable: checked again, nothing new is written.
    kube.writes.clear()
    reconciler(kube).reconcile("intruder")
    assert kube.writes == []


def test_a_namespace_left_by_a_deleted_tenant_is_taken_only_when_handed_over(
    kube: FakeKube,
) -> None:
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": "cleo-legacy",
                "labels": {UID_LABEL: "uid-of-a-tenant-long-gone", "cleoai.io/orphaned": "true"},
            },
        }
    )
    uid = add_tenant(kube, "legacy", spec())
    tenants = reconciler(kube)
    tenants.reconcile("legacy")
    assert conditions(kube, "legacy")["NamespaceReady"]["reason"] == "NamespaceNotOwned"
    assert kube.writes_to("cleo-legacy") == []

    # Its owner hands it over; the mark is spent once the tenant has taken it.
    kube.patch_merge(
        NAMESPACE, "cleo-legacy", {"metadata": {"annotations": {"cleoai.io/adopt": "legacy"}}}
    )
    tenants.reconcile("legacy")
    ns = kube.get(NAMESPACE, "cleo-legacy")
    assert ns is not None
    assert ns["metadata"]["labels"][UID_LABEL] == uid
    assert "cleoai.io/orphaned" not in ns["metadata"]["labels"]
    assert "cleoai.io/adopt" not in (ns["metadata"].get("annotations") or {})
    assert kube.get(SERVICE, "cleoai", namespace="cleo-legacy") is not None


class LosesTheRace(FakeKube):
    """Another tenant's namespace of the same name appears between the reconciler's read
    and its create (what two operators' workers racing for one name would do)."""

    def __init__(self, winner_uid: str) -> None:
        self.winner_uid = winner_uid
        self.raced = True  # not while the fake makes its own namespaces
        super().__init__(now=lambda: NOW)
        self.raced = False

    def request(self, method: str, path: str, **options: Any) -> Any:
        if (method, path) == ("POST", NAMESPACE.path()) and not self.raced:
            self.raced = True
            meta = {"name": "contested", "labels": {UID_LABEL: self.winner_uid}}
            super().request(
                method, path, body={"apiVersion": "v1", "kind": "Namespace", "metadata": meta}
            )
            self.writes.pop()  # the other worker's write, not the reconciler's
        return super().request(method, path, **options)


def test_a_tenant_that_loses_the_race_for_a_namespace_is_refused() -> None:
    kube = LosesTheRace(winner_uid="")
    kube.winner_uid = add_tenant(kube, "winner", spec(namespace="contested"))
    add_tenant(kube, "loser", spec(namespace="contested"))

    result = reconciler(kube).reconcile("loser")
    assert kube.raced
    assert result.applied == []
    cond = conditions(kube, "loser")
    assert cond["NamespaceReady"]["reason"] == "NamespaceNotOwned"
    assert "tenant winner" in cond["NamespaceReady"]["message"]
    # Its one write there was the create that lost; nothing after it.
    assert kube.writes_to("contested") == [Write("create", "Namespace", "", "contested")]


def test_the_operators_own_namespace_is_refused(kube: FakeKube) -> None:
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}})
    kube.writes.clear()
    add_tenant(kube, "greedy", spec(namespace=OPERATOR_NAMESPACE))

    result = reconciler(kube).reconcile("greedy")
    assert result.applied == []
    cond = conditions(kube, "greedy")
    assert cond["NamespaceReady"]["reason"] == "OperatorNamespace"
    assert cond["Ready"]["status"] == "False"
    assert kube.writes_to(OPERATOR_NAMESPACE) == []
    assert kube.objects(ROLE_BINDING, namespace=OPERATOR_NAMESPACE) == []


def test_a_paused_tenant_writes_nothing_but_its_status(kube: FakeKube) -> None:
    tenants = ready_tenant(kube, "sleepy")
    kube.patch_merge(TENANT, "sleepy", {"spec": {"paused": True}})
    kube.delete(SERVICE, "cleoai", namespace="cleo-sleepy")
    kube.writes.clear()

    result = tenants.reconcile("sleepy")
    assert result.applied == []
    assert kube.get(SERVICE, "cleoai", namespace="cleo-sleepy") is None
    assert conditions(kube, "sleepy")["Ready"]["reason"] == "Paused"
    assert status_of(kube, "sleepy")["phase"] == "Paused"
    assert kube.writes == [Write("patch", "CleoTenant", "", "sleepy", "status")]
    kube.writes.clear()
    tenants.reconcile("sleepy")
    assert kube.writes == []

    # Unpaused, the Service comes back.
    kube.patch_merge(TENANT, "sleepy", {"spec": {"paused": False}})
    tenants.reconcile("sleepy")
    assert kube.get(SERVICE, "cleoai", namespace="cleo-sleepy") is not None


def test_retain_cuts_every_child_loose_and_keeps_it(kube: FakeKube) -> None:
    tenants = ready_tenant(kube, "legacy", deletionPolicy="Retain")
    children = status_of(kube, "legacy")["children"]
    delete_tenant(kube, "legacy")
    assert tenants.reconcile("legacy").applied == []  # a tenant being deleted is not
    assert kube.writes == []

    assert tenants.finalize("legacy") is True
    for ref in children:
        kind = KINDS[(ref["apiVersion"], ref["kind"])]
        child = kube.get(kind, ref["name"], namespace=ref["namespace"] or None)
        assert child is not None, ref  # no garbage collector here: the point is the refs
        assert not child["metadata"].get("ownerReferences"), ref
    ns = kube.get(NAMESPACE, "cleo-legacy")
    assert ns is not None
    assert ns["metadata"]["labels"]["cleoai.io/orphaned"] == "true"
    assert {w.method for w in kube.writes} <= {"delete", "patch"}


class _Stalled:
    """A part that, once armed, holds its reconcile until released: a reconcile in flight
    (it read the tenant before its deletion began) while the deletion is asked for."""

    def __init__(self) -> None:
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def reconcile(self, ctx: TenantContext) -> PartResult:
        del ctx
        if self.armed:
            self.entered.set()
            assert self.release.wait(10)
        return PartResult()

    def finalize(self, ctx: TenantContext, *, delete: bool) -> bool:
        del ctx, delete
        return True


def test_a_reconcile_in_flight_never_gives_a_retained_child_its_owner_back(
    kube: FakeKube,
) -> None:
    # The reconcile read the tenant before `kubectl delete`; its apply of the children (with
    # the tenant as owner) must not land after Retain cut them loose, or the garbage
    # collector deletes the kept Deployment once the tenant is gone.
    stalled = _Stalled()
    add_tenant(kube, "legacy", spec(deletionPolicy="Retain"))
    tenants = reconciler(kube, parts=[stalled])
    tenants.reconcile("legacy")
    run_deployment_controller(kube, "cleo-legacy")
    assert tenants.reconcile("legacy").ready
    kube.delete(DEPLOYMENT, "cleoai", namespace="cleo-legacy")  # drift the reconcile repairs
    stalled.armed = True
    in_flight = threading.Thread(target=tenants.reconcile, args=("legacy",))
    in_flight.start()
    assert stalled.entered.wait(10)
    delete_tenant(kube, "legacy")
    finalized: list[bool] = []
    deletion = threading.Thread(target=lambda: finalized.append(tenants.finalize("legacy")))
    deletion.start()
    deletion.join(0.5)
    assert deletion.is_alive(), "the deletion waits for the reconcile in flight"
    stalled.release.set()
    in_flight.join(10)
    deletion.join(10)
    assert finalized == [True]
    deployment = kube.get(DEPLOYMENT, "cleoai", namespace="cleo-legacy")
    assert deployment is not None
    assert not deployment["metadata"].get("ownerReferences")


def test_delete_removes_the_namespace_once_it_is_gone(kube: FakeKube) -> None:
    tenants = ready_tenant(kube, "brief", deletionPolicy="Delete")
    delete_tenant(kube, "brief")
    assert tenants.finalize("brief") is False  # asked for; the namespace is terminating
    ns = kube.get(NAMESPACE, "cleo-brief")
    assert ns is not None
    assert ns["metadata"]["deletionTimestamp"]
    # The tenant says what its deletion waits for, and how to see what holds it.
    assert status_of(kube, "brief")["phase"] == "Deleting"
    ready = conditions(kube, "brief")["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "Deleting")
    assert "waiting for namespace cleo-brief to be deleted" in ready["message"]
    assert "kubectl get namespace cleo-brief" in ready["message"]
    writes = len(kube.writes)
    assert tenants.finalize("brief") is False  # still on its way: not deleted twice
    assert [w.method for w in kube.writes].count("delete") == 1
    assert len(kube.writes) == writes, "nothing new to say: no second status write"
    kube.finish_namespace_deletions()  # the namespace controller's part
    assert tenants.finalize("brief") is True


def test_the_operator_waits_for_its_binding_before_the_parts_write(kube: FakeKube) -> None:
    """The authorizer lags behind a new RoleBinding: the reconciler asks it (a
    SelfSubjectAccessReview, which the fake answers as allowed) before going on."""
    add_tenant(kube, "acme", spec())
    reconciler(kube, operator_access=ACCESS).reconcile("acme")
    binding = kube.get(ROLE_BINDING, "cleo-operator", namespace="cleo-acme")
    assert binding is not None
    assert binding["roleRef"]["name"] == ACCESS.role
    assert kube.access_reviews == [{"namespace": "cleo-acme", "verb": "get", "resource": "secrets"}]
    assert kube.writes[1] == Write("apply", "RoleBinding", "cleo-acme", "cleo-operator")


def test_a_refused_child_is_reported_and_the_rest_applied(kube: FakeKube) -> None:
    kube.refuse("apply", NETWORK_POLICY, "cleo-allow-dns", message="denied by a policy")
    add_tenant(kube, "acme", spec())
    tenants = reconciler(kube)
    tenants.reconcile("acme")
    run_deployment_controller(kube, "cleo-acme")
    result = tenants.reconcile("acme")
    assert not result.ready
    assert kube.get(NETWORK_POLICY, "cleo-default-deny", namespace="cleo-acme") is not None
    cond = conditions(kube, "acme")
    assert cond["PoliciesReady"]["status"] == "False"
    assert "denied by a policy" in cond["PoliciesReady"]["message"]
    assert cond["Ready"]["status"] == "False"


def test_an_invalid_spec_becomes_a_condition_and_changes_nothing(kube: FakeKube) -> None:
    bad = spec()
    bad["workload"]["config"] = {"not/a valid key": "x"}
    add_tenant(kube, "typo", bad)
    result = reconciler(kube).reconcile("typo")
    assert result.applied == []
    ready = conditions(kube, "typo")["Ready"]
    assert ready["reason"] == "InvalidSpec"
    assert "spec.workload.config[not/a valid key]" in ready["message"]
    assert kube.get(NAMESPACE, "cleo-typo") is None


class _WaitingPart:
    """A part whose finalize waits, as the database part does for a final backup."""

    def reconcile(self, ctx: Any) -> Any:
        raise AssertionError("not reconciled in this test")

    def finalize(self, ctx: Any, *, delete: bool) -> bool:
        del delete
        ctx.waiting.append("database: waiting for the final backup CleoBackup x/y (Pending)")
        return False


def test_a_deletion_waiting_for_a_part_says_for_what(kube: FakeKube) -> None:
    tenants = ready_tenant(kube, "slow", deletionPolicy="Delete")
    waiting = reconciler(kube, parts=[_WaitingPart()])
    delete_tenant(kube, "slow")
    assert waiting.finalize("slow") is False
    ns = kube.get(NAMESPACE, "cleo-slow")
    assert ns is not None
    assert not ns["metadata"].get("deletionTimestamp"), "the namespace waits for the parts"
    ready = conditions(kube, "slow")["Ready"]
    assert ready["reason"] == "Deleting"
    assert ready["message"] == (
        "the tenant is being deleted (deletionPolicy Delete): database: "
        "waiting for the final backup CleoBackup x/y (Pending)"
    )
    del tenants

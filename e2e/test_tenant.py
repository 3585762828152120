"""CleoTenant end to end, with the operator process on the local control plane: every
child is made and kept, status tells the truth, changes converge, drift is repaired,
pause stops changes, and a no-op reconcile writes nothing."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import yaml

from e2e.cluster import OPERATOR_USER, LocalCluster
from tests.harness.cluster_fixtures import kubectl_json, wait_for
from tests.harness.operator_fixtures import OperatorProcess
from tests.harness.specs import IMAGE, apply_tenant, tenant_children, tenant_manifest

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]


def full_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "admins": [{"kind": "User", "name": "alice"}],
        "viewers": [{"kind": "User", "name": "victor"}],
        "quota": {"cpu": "8", "memory": "16Gi", "pods": 40},
        "limits": {"defaultRequestCpu": "100m", "defaultRequestMemory": "128Mi"},
        "network": {
            "ingressFrom": [{"namespaceSelector": {"kubernetes.io/metadata.name": "ingress"}}],
            "databaseEgress": [{"cidr": "10.20.0.0/16", "ports": [5432]}],
        },
        "workload": {
            "image": IMAGE,
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
            "config": {"CLEO_MODE": "test"},
        },
        "autoscaling": {"minReplicas": 2, "maxReplicas": 4, "targetCPUUtilizationPercentage": 70},
    }
    spec.update(overrides)
    return spec


def conditions(tenant: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in ((tenant or {}).get("status") or {}).get("conditions") or []}


def wait_condition(
    cluster: LocalCluster, name: str, type_: str, status: str, timeout: float = 90
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        tenant = kubectl_json(cluster, "get", "cleotenant", name)
        cond = conditions(tenant).get(type_)
        if (
            cond
            and cond["status"] == status
            and tenant["status"].get("observedGeneration") == tenant["metadata"]["generation"]
        ):
            return dict(tenant)
        return None

    result: dict[str, Any] = wait_for(check, timeout=timeout, what=f"{name} {type_}={status}")
    return result


def test_full_tenant_has_every_child_and_truthful_status(
    cluster: LocalCluster, operator_process: OperatorProcess
) -> None:
    apply_tenant(cluster, "full", full_spec())
    tenant = wait_condition(cluster, "full", "Ready", "True")
    ns = "cleo-full"
    cond = conditions(tenant)
    for type_ in ("NamespaceReady", "PoliciesReady", "WorkloadAvailable"):
        assert cond[type_]["status"] == "True", cond[type_]
        assert cond[type_]["observedGeneration"] == tenant["metadata"]["generation"]
    # Ready is not gated on Autoscaling: the HPA reads no metrics until metrics-server has
    # scraped the new pods twice, and then it does (test_metrics.py follows that through).
    assert "Autoscaling" in cond
    assert tenant["status"]["replicas"]["available"] == 2

    kinds = {(c["kind"], c["name"]) for c in tenant["status"]["children"]}
    expected = set(tenant_children(ns))
    assert expected <= kinds, expected - kinds
    for kind, name in expected:
        args = ["get", kind.lower(), name] + ([] if kind == "Namespace" else ["-n", ns])
        obj = kubectl_json(cluster, *args, "--show-managed-fields")
        assert obj is not None, (kind, name)
        assert obj["metadata"]["labels"]["cleoai.io/tenant"] == "full"
        assert obj["metadata"]["ownerReferences"][0]["uid"] == tenant["metadata"]["uid"]
        managers = {m["manager"] for m in obj["metadata"].get("managedFields", [])}
        assert "cleo-operator" in managers, (kind, name, managers)

    pods = kubectl_json(cluster, "get", "pods", "-n", ns)["items"]
    assert len(pods) == 2  # the restricted Pod Security profile admitted them
    # The tenant's keyring (made by the operator) reaches CleoAI, read-only.
    volumes = {v["name"]: v for v in pods[0]["spec"]["volumes"]}
    assert volumes["keyring"]["secret"]["secretName"] == "cleo-keyring"
    events = cluster.kubectl(
        "get", "events", "-n", "default", "--field-selector", "involvedObject.name=full"
    ).stdout
    assert "Ready" in events
    for pod in pods:
        sc = pod["spec"]["containers"][0]["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"]

    # The printer columns. PHASE turns from Degraded to Ready when the HPA first reads
    # metrics, so it is compared with the phase on status, read again until both agree.
    def row_and_phase() -> tuple[dict[str, str], str] | None:
        table = cluster.kubectl("get", "cleotenant", "full").stdout.splitlines()
        row = dict(zip(table[0].split(), table[1].split(), strict=False))
        phase = kubectl_json(cluster, "get", "cleotenant", "full")["status"]["phase"]
        return (row, phase) if row["PHASE"] == phase else None

    row, phase = wait_for(row_and_phase, timeout=10, what="the PHASE column to match status")
    assert phase in {"Ready", "Degraded"}
    assert (row["READY"], row["NAMESPACE"], row["REPLICAS"]) == ("True", ns, "2")


def test_spec_change_converges(cluster: LocalCluster, operator_process: OperatorProcess) -> None:
    apply_tenant(cluster, "grow", full_spec())
    wait_condition(cluster, "grow", "Ready", "True")
    apply_tenant(cluster, "grow", full_spec(autoscaling={"minReplicas": 3, "maxReplicas": 9}))

    def hpa_follows() -> bool:
        hpa = kubectl_json(cluster, "get", "hpa", "cleoai", "-n", "cleo-grow")
        return bool(hpa and hpa["spec"]["maxReplicas"] == 9 and hpa["spec"]["minReplicas"] == 3)

    wait_for(hpa_follows, timeout=30, what="the HPA to take the new bounds")
    wait_condition(cluster, "grow", "Ready", "True")

    # Turning autoscaling off removes the HPA and gives the Deployment a fixed size.
    spec = full_spec(autoscaling={"enabled": False})
    spec["workload"]["replicas"] = 1
    apply_tenant(cluster, "grow", spec)
    wait_for(
        lambda: kubectl_json(cluster, "get", "hpa", "cleoai", "-n", "cleo-grow") is None,
        timeout=30,
        what="the HPA to be pruned",
    )
    tenant = wait_condition(cluster, "grow", "Autoscaling", "True")
    assert conditions(tenant)["Autoscaling"]["reason"] == "Disabled"


def test_drift_is_repaired(cluster: LocalCluster, operator_process: OperatorProcess) -> None:
    apply_tenant(cluster, "drift", full_spec())
    wait_condition(cluster, "drift", "Ready", "True")
    ns = "cleo-drift"
    cluster.kubectl("delete", "networkpolicy", "cleo-default-deny", "-n", ns)
    cluster.kubectl(
        "patch", "resourcequota", "cleo-quota", "-n", ns, "--type=merge",
        "-p", json.dumps({"spec": {"hard": {"pods": "1000"}}}),
    )  # fmt: skip
    cluster.kubectl("set", "image", "deployment/cleoai", "-n", ns, "cleoai=attacker.example/evil:1")
    start = time.monotonic()

    def repaired() -> bool:
        np = kubectl_json(cluster, "get", "networkpolicy", "cleo-default-deny", "-n", ns)
        quota = kubectl_json(cluster, "get", "resourcequota", "cleo-quota", "-n", ns)
        dep = kubectl_json(cluster, "get", "deployment", "cleoai", "-n", ns)
        image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
        return bool(np and quota["spec"]["hard"]["pods"] == "40" and image == IMAGE)

    wait_for(repaired, timeout=30, what="the operator to undo the hand edits")
    assert time.monotonic() - start < 15  # children are watched, not polled every resync
    # And it says so, where `kubectl describe cleotenant drift` shows it.
    wait_for(
        lambda: (
            "DriftRepaired"
            in cluster.kubectl(
                "get", "events", "-n", "default", "--field-selector", "involvedObject.name=drift"
            ).stdout
        ),
        timeout=15,
        what="a DriftRepaired Event on the tenant",
    )


def test_pause_stops_all_changes(cluster: LocalCluster, operator_process: OperatorProcess) -> None:
    apply_tenant(cluster, "sleepy", full_spec())
    wait_condition(cluster, "sleepy", "Ready", "True")
    apply_tenant(cluster, "sleepy", full_spec(paused=True))
    tenant = wait_condition(cluster, "sleepy", "Ready", "False")
    assert conditions(tenant)["Ready"]["reason"] == "Paused"
    assert tenant["status"]["phase"] == "Paused"
    cluster.kubectl("delete", "service", "cleoai", "-n", "cleo-sleepy")
    time.sleep(5)
    assert kubectl_json(cluster, "get", "service", "cleoai", "-n", "cleo-sleepy") is None
    apply_tenant(cluster, "sleepy", full_spec(paused=False))
    wait_for(
        lambda: kubectl_json(cluster, "get", "service", "cleoai", "-n", "cleo-sleepy"),
        timeout=30,
        what="the Service to come back after unpausing",
    )


def test_retain_keeps_children_in_place(
    cluster: LocalCluster, operator_process: OperatorProcess
) -> None:
    apply_tenant(cluster, "legacy", full_spec())
    wait_condition(cluster, "legacy", "Ready", "True")
    cluster.kubectl("delete", "cleotenant", "legacy", "--timeout=60s")
    time.sleep(3)  # give the garbage collector its chance to do the wrong thing
    ns = "cleo-legacy"
    for kind, name in (("deployment", "cleoai"), ("networkpolicy", "cleo-default-deny")):
        obj = kubectl_json(cluster, "get", kind, name, "-n", ns)
        assert obj is not None, (kind, name)
        assert not obj["metadata"].get("ownerReferences")
    assert (
        kubectl_json(cluster, "get", "namespace", ns)["metadata"]["labels"]["cleoai.io/orphaned"]
        == "true"
    )

    # A tenant of the same name does not take it by its name alone (names are reused):
    # the namespace's owner hands it over with the adoption mark, which is then spent.
    apply_tenant(cluster, "legacy", full_spec())
    refused = wait_condition(cluster, "legacy", "NamespaceReady", "False")
    assert conditions(refused)["NamespaceReady"]["reason"] == "NamespaceNotOwned"
    cluster.kubectl("annotate", "namespace", ns, "cleoai.io/adopt=legacy")
    tenant = wait_condition(cluster, "legacy", "Ready", "True")
    meta = kubectl_json(cluster, "get", "namespace", ns)["metadata"]
    assert "cleoai.io/orphaned" not in meta["labels"]
    assert meta["labels"]["cleoai.io/tenant-uid"] == tenant["metadata"]["uid"]
    assert "cleoai.io/adopt" not in (meta.get("annotations") or {})


@pytest.mark.security
def test_isolation_between_tenants(
    cluster: LocalCluster, operator_process: OperatorProcess
) -> None:
    apply_tenant(cluster, "iso-a", full_spec(admins=[{"kind": "User", "name": "alice-a"}]))
    apply_tenant(cluster, "iso-b", full_spec(admins=[{"kind": "User", "name": "bob-b"}]))
    wait_condition(cluster, "iso-a", "Ready", "True")
    wait_condition(cluster, "iso-b", "Ready", "True")

    def can(who: list[str], verb: str, resource: str, namespace: str | None) -> bool:
        args = ["auth", "can-i", verb, resource, *who]
        args += ["-n", namespace] if namespace else []
        out = cluster.kubectl(*args, check=False).stdout.strip()
        assert out in {"yes", "no"}, out
        return out == "yes"

    admin_a = ["--as=alice-a"]
    sa_a = ["--as=system:serviceaccount:cleo-iso-a:cleoai"]
    for who in (admin_a, sa_a):
        for resource in ("secrets", "configmaps", "pods", "deployments"):
            for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
                assert not can(who, verb, resource, "cleo-iso-b"), (who, verb, resource)
        for verb in ("get", "list", "create", "update", "patch", "delete"):
            assert not can(who, verb, "cleotenants.cleoai.io", None), (who, verb)
    # A's admin runs its own namespace, but cannot lift its own fences.
    for resource in ("deployments", "secrets", "configmaps", "pods"):
        assert can(admin_a, "create", resource, "cleo-iso-a"), resource
    assert not can(admin_a, "update", "resourcequotas", "cleo-iso-a")
    assert not can(admin_a, "delete", "networkpolicies", "cleo-iso-a")
    assert not can(admin_a, "create", "rolebindings", "cleo-iso-a")
    # A's admin holds the ClusterRole cleo-tenant-admin through a RoleBinding in A's
    # namespace: nowhere else, not across all namespaces, and it cannot bind it onward.
    for resource in ("secrets", "deployments", "pods"):
        assert not can(admin_a, "create", resource, "default"), resource
    across = cluster.kubectl(
        "auth", "can-i", "list", "secrets", "--all-namespaces", "--as=alice-a", check=False
    )
    assert across.stdout.strip() == "no"
    assert not can(admin_a, "bind", "clusterroles/cleo-tenant-admin", "cleo-iso-a")
    assert not can(admin_a, "escalate", "clusterroles", None)
    # A real request, not only the review: B's secrets are refused with 403.
    denied = cluster.kubectl("get", "secrets", "-n", "cleo-iso-b", "--as=alice-a", check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()


def test_twenty_tenants_at_once_and_a_resync_writes_nothing(
    cluster: LocalCluster, operator_process: OperatorProcess
) -> None:
    """20 tenants become Ready; then a restart forces every tenant through a full reconcile,
    and the audit log shows the operator made zero write requests."""
    names = [f"many-{i:02d}" for i in range(20)]
    docs = [tenant_manifest(n, full_spec(autoscaling={"enabled": False})) for n in names]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    for n in names:
        wait_condition(cluster, n, "Ready", "True", timeout=180)
    time.sleep(3)  # let late events (pod status, endpoints, tenant status) settle

    # The audit log does see the operator's writes: creating the tenants took many.
    created = [
        e
        for e in cluster.audit_events(user=OPERATOR_USER)
        if e["objectRef"].get("namespace", "").startswith("cleo-many-")
    ]
    assert len(created) >= 20 * 10

    offset = cluster.audit_offset()
    operator_process.restart()
    every = len(kubectl_json(cluster, "get", "cleotenants")["items"])
    # Every tenant's loop starts with a reconcile: wait until all of them have run.
    wait_for(
        lambda: (
            operator_process.metric(
                "cleo_operator_reconciles_total", 'kind="CleoTenant",result="ok"'
            )
            >= every
        ),
        timeout=120,
        what=f"the restarted operator to reconcile all {every} tenants",
    )
    time.sleep(2)
    # Only these tenants are known to be settled: other tests' tenants on the shared cluster
    # may still change for real (an HPA reading its first metrics is a status write).
    writes = [
        f"{e['verb']} {e['objectRef'].get('resource')}/{e['objectRef'].get('name')}"
        for e in cluster.audit_events(user=OPERATOR_USER, offset=offset)
        if _is_many(e["objectRef"])
    ]
    assert writes == [], f"a no-op resync wrote: {writes[:20]}"


def _is_many(ref: dict[str, Any]) -> bool:
    """An audited object of test_twenty_tenants_at_once's tenants."""
    name = ref.get("name", "")
    return (
        ref.get("namespace", "").startswith("cleo-many-")
        or (ref.get("resource") == "namespaces" and name.startswith("cleo-many-"))
        or (ref.get("resource") == "cleotenants" and name.startswith("many-"))
    )


def test_invalid_spec_that_gets_through_becomes_a_condition(
    cluster: LocalCluster, operator_process: OperatorProcess
) -> None:
    """Map keys are checked by the operator, not the CRD (CEL's cost budget): the operator
    says what is wrong on status and carries on with everything else."""
    spec = full_spec()
    spec["workload"]["config"] = {"not/a valid key": "x"}
    apply_tenant(cluster, "typo", spec)
    tenant = wait_condition(cluster, "typo", "Ready", "False")
    ready = conditions(tenant)["Ready"]
    assert ready["reason"] == "InvalidSpec"
    assert "spec.workload.config[not/a valid key]" in ready["message"]
    assert tenant["status"]["phase"] == "Invalid"
    assert operator_process.alive()
    # Fixing the spec recovers without a restart.
    apply_tenant(cluster, "typo", full_spec())
    wait_condition(cluster, "typo", "Ready", "True")

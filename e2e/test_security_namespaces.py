"""Attacks on namespace ownership, against the real operator process.

The author of a CleoTenant (a team's GitOps repository) tries to make the operator work in a
namespace that is not the tenant's: another tenant's, the operator's own, one of
Kubernetes', or any namespace of the cluster. Every attack must fail with a truthful
`NamespaceReady=False`, and leave the victim namespace and the operator's namespace exactly
as they were: the same objects at the same resourceVersions (Secrets, RoleBindings, the
keyring copies included), no write request of the operator there (the API server's audit
log), no database role, and deleting the attacker, even with `deletionPolicy: Delete`,
deletes nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from cleo_operator.kube.permissions import LEADER_LEASE
from e2e.cluster import OPERATOR_USER, LocalCluster
from tests.harness.cluster_fixtures import kubectl_json, wait_for
from tests.harness.operator_fixtures import OPERATOR_NAMESPACE, RECHECK_SECONDS, OperatorProcess
from tests.harness.postgres import PostgresServer
from tests.harness.specs import apply_tenant, tenant_manifest

pytestmark = [pytest.mark.security, pytest.mark.cluster, pytest.mark.e2e]

UID_LABEL = "cleoai.io/tenant-uid"
ADOPT = "cleoai.io/adopt"

# Events of cluster-scoped objects (our CleoTenants) live in `default`; they are about the
# tenant, not objects in the namespace, and are left out of the snapshots. So are Leases:
# the controllers renew theirs in kube-system every few seconds.
SKIPPED_RESOURCES = {"events", "events.events.k8s.io", "leases.coordination.k8s.io"}


def condition(cluster: LocalCluster, name: str, type_: str) -> dict[str, Any] | None:
    tenant = kubectl_json(cluster, "get", "cleotenant", name)
    for cond in ((tenant or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return None


def wait_condition(
    cluster: LocalCluster, name: str, type_: str, status: str, timeout: float = 90
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        cond = condition(cluster, name, type_)
        return cond if cond and cond["status"] == status else None

    found: dict[str, Any] = wait_for(check, timeout=timeout, what=f"{name} {type_}={status}")
    return found


def wait_gone(cluster: LocalCluster, name: str) -> None:
    wait_for(
        lambda: kubectl_json(cluster, "get", "cleotenant", name) is None,
        timeout=60,
        what=f"tenant {name} to be finalized (its finalizer must not hang)",
    )


_RESOURCES: list[str] = []


def namespaced_resources(cluster: LocalCluster) -> list[str]:
    if not _RESOURCES:
        out = cluster.kubectl("api-resources", "--verbs=list", "--namespaced", "-o", "name")
        _RESOURCES.extend(r for r in out.stdout.split() if r not in SKIPPED_RESOURCES)
    return _RESOURCES


def snapshot(cluster: LocalCluster, namespace: str) -> dict[str, Any]:
    """The namespace object and every object in it, by kind and name, at its resourceVersion."""
    ns = kubectl_json(cluster, "get", "namespace", namespace)
    assert ns is not None, namespace
    meta = ns["metadata"]
    objects: dict[str, Any] = {
        "Namespace": (
            meta["uid"],
            meta["resourceVersion"],
            meta.get("labels"),
            meta.get("annotations"),
            meta.get("ownerReferences"),
            ns["status"]["phase"],
        )
    }
    items = json.loads(
        cluster.kubectl(
            "get", ",".join(namespaced_resources(cluster)), "-n", namespace, "-o", "json"
        ).stdout
    )["items"]
    for item in items:
        key = f"{item['kind']}/{item['metadata']['name']}"
        objects[key] = (item["metadata"]["uid"], item["metadata"]["resourceVersion"])
    return objects


def operator_writes_in(cluster: LocalCluster, offset: int, *namespaces: str) -> list[str]:
    """Write requests of the operator in (or on) these namespaces since `offset`; not the
    renewals of its leader Lease (in its own namespace, every retry period, whatever the
    tenants do); a Lease of that name in any other namespace is a write like any other."""
    out = []
    for e in cluster.audit_events(user=OPERATOR_USER, offset=offset):
        ref = e["objectRef"]
        if (
            ref.get("resource") == "leases"
            and ref.get("name") == LEADER_LEASE
            and ref.get("namespace") == OPERATOR_NAMESPACE
        ):
            continue
        on_namespace = ref.get("resource") == "namespaces" and ref.get("name") in namespaces
        if ref.get("namespace") in namespaces or on_namespace:
            out.append(
                f"{e['verb']} {ref.get('resource')} {ref.get('namespace')}/{ref.get('name')}"
            )
    return out


def operator_writes_on(cluster: LocalCluster, offset: int, tenant: str) -> list[str]:
    """Write requests of the operator on the CleoTenant `tenant` (its status) since `offset`."""
    return [
        f"{e['verb']} cleotenants/{tenant} {e['objectRef'].get('subresource', '')}"
        for e in cluster.audit_events(user=OPERATOR_USER, offset=offset)
        if e["objectRef"].get("resource") == "cleotenants" and e["objectRef"].get("name") == tenant
    ]


def role_exists(postgres_server: PostgresServer, tenant: str) -> bool:
    role = "cleo_" + tenant.replace("-", "_")
    rows = postgres_server.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
    dbs = postgres_server.execute("SELECT 1 FROM pg_database WHERE datname = %s", (role,))
    return bool(rows or dbs)


def can_i(cluster: LocalCluster, who: str, verb: str, resource: str, namespace: str) -> bool:
    out = cluster.kubectl(
        "auth", "can-i", verb, resource, "-n", namespace, f"--as={who}", check=False
    ).stdout.strip()
    assert out in {"yes", "no"}, out
    return out == "yes"


def refused(cluster: LocalCluster, name: str, reason: str, *, naming: str) -> dict[str, Any]:
    """Wait for the refusal on status: NamespaceReady and Ready False, saying who owns it."""
    cond = wait_condition(cluster, name, "NamespaceReady", "False")
    assert cond["reason"] == reason, cond
    assert naming in cond["message"], cond
    ready = condition(cluster, name, "Ready")
    assert ready is not None and ready["status"] == "False", ready
    assert ready["reason"] == reason, ready
    tenant = kubectl_json(cluster, "get", "cleotenant", name)
    assert not tenant["status"].get("children"), tenant["status"]
    return dict(tenant)


@pytest.fixture
def victim(
    cluster: LocalCluster, operator_process: OperatorProcess, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A Ready tenant with Secrets (keyring, database credentials) and admin bindings."""
    del operator_process
    name = "v-" + request.node.name.removeprefix("test_")[:20].rstrip("_-").replace("_", "-")
    apply_tenant(
        cluster,
        name,
        {
            "admins": [{"kind": "User", "name": f"{name}-admin"}],
            "viewers": [{"kind": "User", "name": f"{name}-viewer"}],
            "database": {"enabled": True},
            "deletionPolicy": "Delete",
        },
    )
    wait_condition(cluster, name, "Ready", "True")
    time.sleep(2)  # let the victim's own first reconciles settle
    yield name
    cluster.kubectl("delete", "cleotenant", name, "--wait=false", check=False)


def attack_is_refused(
    cluster: LocalCluster,
    server: PostgresServer,
    attacker: str,
    spec: dict[str, Any],
    why: tuple[str, str],
) -> None:
    """The attacker's tenant is refused (`why`: the reason, and what its message names),
    changes nothing in the namespace it names or the operator's, and deleting it changes
    nothing either."""
    watched = (spec["namespace"],) if "namespace" in spec else ()
    before, offset = attack(cluster, attacker, spec, watched=watched)
    reason, naming = why
    refused(cluster, attacker, reason, naming=naming)
    nothing_changed(cluster, server, attacker, before, offset)
    delete_attacker_and_check(cluster, server, attacker, before, offset)


def attack(
    cluster: LocalCluster,
    attacker: str,
    spec: dict[str, Any],
    *,
    watched: tuple[str, ...],
) -> tuple[dict[str, dict[str, Any]], int]:
    """Snapshot the watched namespaces and the operator's, then create the attacker."""
    before = {ns: snapshot(cluster, ns) for ns in {*watched, OPERATOR_NAMESPACE}}
    offset = cluster.audit_offset()
    apply_tenant(
        cluster,
        attacker,
        {
            "admins": [{"kind": "User", "name": "mallory"}],
            "database": {"enabled": True},
            "deletionPolicy": "Delete",
            **spec,
        },
    )
    return before, offset


def nothing_changed(
    cluster: LocalCluster,
    postgres_server: PostgresServer,
    attacker: str,
    before: dict[str, dict[str, Any]],
    offset: int,
) -> None:
    for ns, objects in before.items():
        assert snapshot(cluster, ns) == objects, f"namespace {ns} changed"
        assert not can_i(cluster, "mallory", "get", "secrets", ns)
        assert not can_i(cluster, "mallory", "create", "pods", ns)
    writes = operator_writes_in(cluster, offset, *before)
    assert writes == [], f"the operator wrote into {sorted(before)}: {writes}"
    assert not role_exists(postgres_server, attacker)
    copy = kubectl_json(
        cluster, "get", "secret", f"cleo-keyring-{attacker}", "-n", OPERATOR_NAMESPACE
    )
    assert copy is None


def delete_attacker_and_check(
    cluster: LocalCluster,
    postgres_server: PostgresServer,
    attacker: str,
    before: dict[str, dict[str, Any]],
    offset: int,
) -> None:
    """Delete the attacker (deletionPolicy Delete): it goes, and takes nothing along."""
    cluster.kubectl("delete", "cleotenant", attacker, "--wait=false")
    wait_gone(cluster, attacker)
    time.sleep(2)  # a namespace deletion would show as Terminating by now
    nothing_changed(cluster, postgres_server, attacker, before, offset)


# -- another tenant's namespace -----------------------------------------------------------


def test_a_tenant_cannot_take_another_tenants_namespace(
    cluster: LocalCluster, postgres_server: PostgresServer, victim: str
) -> None:
    ns = f"cleo-{victim}"
    attacker = "nsattack-neighbour"
    before, offset = attack(cluster, attacker, {"namespace": ns}, watched=(ns,))
    refused(cluster, attacker, "NamespaceNotOwned", naming=f"tenant {victim}")
    nothing_changed(cluster, postgres_server, attacker, before, offset)

    # A refused tenant that nothing changed for writes nothing on its next reconciles.
    quiet = cluster.audit_offset()
    time.sleep(3 * RECHECK_SECONDS)  # at least two rechecks of the refused tenant
    assert operator_writes_on(cluster, quiet, attacker) == []
    nothing_changed(cluster, postgres_server, attacker, before, offset)

    delete_attacker_and_check(cluster, postgres_server, attacker, before, offset)
    # The victim is untouched, and still Ready.
    assert condition(cluster, victim, "Ready")["status"] == "True"  # type: ignore[index]


def test_an_adoption_mark_does_not_hand_over_another_tenants_namespace(
    cluster: LocalCluster, postgres_server: PostgresServer, victim: str
) -> None:
    ns = f"cleo-{victim}"
    attacker = "nsattack-marked"
    # The owner spends a mark on its own namespace at its next reconcile (so that it can never
    # hand the namespace over later): pause the owner, so the mark is there while the
    # attacker's tenant is reconciled, and nothing but the attacker could change the namespace.
    cluster.kubectl("patch", "cleotenant", victim, "--type=merge", "-p", '{"spec":{"paused":true}}')
    assert wait_condition(cluster, victim, "Ready", "False")["reason"] == "Paused"
    # Even a mark put there by someone who may write Namespaces does not take a namespace
    # away from a tenant that exists.
    cluster.kubectl("annotate", "namespace", ns, f"{ADOPT}={attacker}")
    attack_is_refused(
        cluster,
        postgres_server,
        attacker,
        {"namespace": ns},
        ("NamespaceNotOwned", f"tenant {victim}"),
    )
    marks = kubectl_json(cluster, "get", "namespace", ns)["metadata"].get("annotations") or {}
    assert marks.get(ADOPT) == attacker, "the mark was there throughout the attack"
    cluster.kubectl(
        "patch", "cleotenant", victim, "--type=merge", "-p", '{"spec":{"paused":false}}'
    )
    # Unpaused, the owner spends the mark.
    wait_for(
        lambda: (
            ADOPT
            not in (
                kubectl_json(cluster, "get", "namespace", ns)["metadata"].get("annotations") or {}
            )
        ),
        timeout=60,
        what="the owner to spend the adoption mark on its namespace",
    )


# -- the operator's namespace ----------------------------------------------------------------


def test_a_tenant_named_system_cannot_take_the_operator_namespace(
    cluster: LocalCluster, postgres_server: PostgresServer, operator_process: OperatorProcess
) -> None:
    del operator_process
    attacker = "system"  # its default namespace, cleo-system, is the operator's
    attack_is_refused(
        cluster, postgres_server, attacker, {}, ("OperatorNamespace", "the operator's namespace")
    )


def test_spec_namespace_cannot_name_the_operator_namespace(
    cluster: LocalCluster, postgres_server: PostgresServer, operator_process: OperatorProcess
) -> None:
    del operator_process
    attacker = "nsattack-operator"
    # Even with a mark on it: the operator's namespace is never a tenant's.
    cluster.kubectl("annotate", "namespace", OPERATOR_NAMESPACE, f"{ADOPT}={attacker}")
    try:
        attack_is_refused(
            cluster,
            postgres_server,
            attacker,
            {"namespace": OPERATOR_NAMESPACE},
            ("OperatorNamespace", "the operator's namespace"),
        )
    finally:
        cluster.kubectl("annotate", "namespace", OPERATOR_NAMESPACE, f"{ADOPT}-")


# -- Kubernetes' own namespaces --------------------------------------------------------------


@pytest.mark.parametrize(
    "target", ["kube-system", "default", "kube-public", "kube-node-lease", "kube-extra"]
)
def test_spec_namespace_cannot_name_a_kubernetes_namespace(
    cluster: LocalCluster,
    postgres_server: PostgresServer,
    operator_process: OperatorProcess,
    target: str,
) -> None:
    del operator_process
    if kubectl_json(cluster, "get", "namespace", target) is None:
        cluster.kubectl("create", "namespace", target)
    before = {ns: snapshot(cluster, ns) for ns in (target, OPERATOR_NAMESPACE)}
    offset = cluster.audit_offset()
    body = tenant_manifest("nsattack-system", {"namespace": target, "deletionPolicy": "Delete"})
    result = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(body), check=False)
    assert result.returncode != 0
    assert "spec.namespace" in result.stderr, result.stderr
    assert kubectl_json(cluster, "get", "cleotenant", "nsattack-system") is None
    time.sleep(1)
    nothing_changed(cluster, postgres_server, "nsattack-system", before, offset)


# -- a namespace of the cluster: handed over only by an explicit mark -------------------------


def test_an_existing_namespace_is_adopted_only_with_the_mark(
    cluster: LocalCluster, postgres_server: PostgresServer, operator_process: OperatorProcess
) -> None:
    del operator_process
    ns, tenant = "nsattack-team-ns", "nsattack-adopter"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("create", "configmap", "team-data", "-n", ns, "--from-literal=k=v")
    before, offset = attack(cluster, tenant, {"namespace": ns}, watched=(ns,))
    refused(cluster, tenant, "NamespaceNotOwned", naming=f"{ADOPT}={tenant}")
    nothing_changed(cluster, postgres_server, tenant, before, offset)

    # The namespace's owner hands it over: the tenant takes it, and from then on it is the
    # tenant's by uid (the mark is spent).
    cluster.kubectl("annotate", "namespace", ns, f"{ADOPT}={tenant}")
    wait_condition(cluster, tenant, "Ready", "True", timeout=RECHECK_SECONDS + 60)
    uid = kubectl_json(cluster, "get", "cleotenant", tenant)["metadata"]["uid"]

    def owned() -> dict[str, Any] | None:
        obj = kubectl_json(cluster, "get", "namespace", ns)
        meta = obj["metadata"]
        done = (meta.get("labels") or {}).get(UID_LABEL) == uid and ADOPT not in (
            meta.get("annotations") or {}
        )
        return dict(obj) if done else None

    obj = wait_for(owned, timeout=30, what="the adopted namespace to carry the tenant's uid")
    assert [o["uid"] for o in obj["metadata"]["ownerReferences"]] == [uid]
    assert kubectl_json(cluster, "get", "configmap", "team-data", "-n", ns) is not None
    cluster.kubectl("delete", "cleotenant", tenant, "--wait=false")
    wait_gone(cluster, tenant)


def test_a_namespace_marked_for_one_tenant_is_refused_to_another(
    cluster: LocalCluster, postgres_server: PostgresServer, operator_process: OperatorProcess
) -> None:
    del operator_process
    ns, attacker = "nsattack-for-x", "nsattack-y"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("annotate", "namespace", ns, f"{ADOPT}=nsattack-x")
    attack_is_refused(
        cluster, postgres_server, attacker, {"namespace": ns}, ("NamespaceNotOwned", "nsattack-x")
    )


# -- deletion ----------------------------------------------------------------------------------


def test_deleting_the_owner_after_a_namespace_swap_keeps_the_new_namespace(
    cluster: LocalCluster, postgres_server: PostgresServer, operator_process: OperatorProcess
) -> None:
    del operator_process
    tenant, ns = "nsattack-swapped", "cleo-nsattack-swapped"
    apply_tenant(cluster, tenant, {"deletionPolicy": "Delete"})
    wait_condition(cluster, tenant, "Ready", "True")
    # Held still, so that the operator does not put its namespace back at once.
    apply_tenant(cluster, tenant, {"deletionPolicy": "Delete", "paused": True})
    wait_condition(cluster, tenant, "Ready", "False")
    old = kubectl_json(cluster, "get", "namespace", ns)["metadata"]["uid"]
    cluster.kubectl("delete", "namespace", ns, "--wait=true", "--timeout=90s")
    cluster.kubectl("create", "namespace", ns)  # someone else's now, same name, other uid
    cluster.kubectl("create", "configmap", "theirs", "-n", ns, "--from-literal=k=v")
    before = {ns: snapshot(cluster, ns), OPERATOR_NAMESPACE: snapshot(cluster, OPERATOR_NAMESPACE)}
    assert before[ns]["Namespace"][0] != old
    offset = cluster.audit_offset()
    cluster.kubectl("delete", "cleotenant", tenant, "--wait=false")
    wait_gone(cluster, tenant)
    time.sleep(2)
    assert snapshot(cluster, ns) == before[ns]
    assert operator_writes_in(cluster, offset, ns) == []


def test_a_retained_namespace_is_reattached_only_with_the_mark(
    cluster: LocalCluster, postgres_server: PostgresServer, operator_process: OperatorProcess
) -> None:
    """A name can be reused by another team: the new tenant of the same name does not get
    the old one's namespace, Secrets and bindings until the namespace's owner says so."""
    del operator_process
    tenant, ns = "nsattack-reused", "cleo-nsattack-reused"
    apply_tenant(cluster, tenant, {"admins": [{"kind": "User", "name": "first-team"}]})
    wait_condition(cluster, tenant, "Ready", "True")
    cluster.kubectl("create", "secret", "generic", "kept", "-n", ns, "--from-literal=k=v")
    cluster.kubectl("delete", "cleotenant", tenant, "--timeout=60s")
    orphan = kubectl_json(cluster, "get", "namespace", ns)
    assert orphan["metadata"]["labels"]["cleoai.io/orphaned"] == "true"
    assert UID_LABEL in orphan["metadata"]["labels"]

    before, offset = attack(
        cluster, tenant, {"admins": [{"kind": "User", "name": "mallory"}]}, watched=(ns,)
    )
    refused(cluster, tenant, "NamespaceNotOwned", naming=f"{ADOPT}={tenant}")
    assert snapshot(cluster, ns) == before[ns]
    assert operator_writes_in(cluster, offset, ns) == []
    assert not can_i(cluster, "mallory", "get", "secrets", ns)

    cluster.kubectl("annotate", "namespace", ns, f"{ADOPT}={tenant}")
    wait_condition(cluster, tenant, "Ready", "True", timeout=RECHECK_SECONDS + 60)
    uid = kubectl_json(cluster, "get", "cleotenant", tenant)["metadata"]["uid"]
    meta = kubectl_json(cluster, "get", "namespace", ns)["metadata"]
    assert meta["labels"][UID_LABEL] == uid
    assert "cleoai.io/orphaned" not in meta["labels"]
    assert ADOPT not in (meta.get("annotations") or {})
    assert can_i(cluster, "mallory", "get", "secrets", ns)  # handed over, on purpose
    cluster.kubectl("delete", "cleotenant", tenant, "--timeout=60s")


# -- a race for one free namespace -----------------------------------------------------------


def test_two_tenants_racing_for_one_namespace_one_wins(
    cluster: LocalCluster, postgres_server: PostgresServer, operator_process: OperatorProcess
) -> None:
    del operator_process
    ns = "nsattack-contested"
    names = [f"nsattack-racer-{i}" for i in range(4)]
    docs = [
        tenant_manifest(n, {"namespace": ns, "admins": [{"kind": "User", "name": n}]})
        for n in names
    ]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))

    def settled() -> dict[str, dict[str, Any]] | None:
        conds = {n: condition(cluster, n, "NamespaceReady") for n in names}
        if all(c and c["status"] in {"True", "False"} for c in conds.values()):
            return conds  # type: ignore[return-value]
        return None

    conds = wait_for(settled, timeout=90, what="every racer to report NamespaceReady")
    winners = [n for n, c in conds.items() if c["status"] == "True"]
    assert len(winners) == 1, conds
    winner = winners[0]
    uid = kubectl_json(cluster, "get", "cleotenant", winner)["metadata"]["uid"]
    meta = kubectl_json(cluster, "get", "namespace", ns)["metadata"]
    assert meta["labels"][UID_LABEL] == uid
    assert [o["uid"] for o in meta["ownerReferences"]] == [uid]
    for loser in set(names) - {winner}:
        assert conds[loser]["reason"] == "NamespaceNotOwned"
        assert f"tenant {winner}" in conds[loser]["message"]
        assert not can_i(cluster, loser, "get", "secrets", ns)
    assert can_i(cluster, winner, "get", "secrets", ns)
    cluster.kubectl("delete", "cleotenant", *names, "--wait=false")
    for n in names:
        wait_gone(cluster, n)

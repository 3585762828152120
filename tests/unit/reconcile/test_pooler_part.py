"""The pooler part's decisions: what it renders, when the workload switches, what PoolerReady says.

Judged on the in-memory API server (FakeKube, a fake of that boundary only) with the real
part, rendering and site configuration; no site is contacted. The login through the
pooler is the one thing replaced: `check` is the network login to a PgBouncer pod, which
cannot run here; tests/integration/test_pooler.py runs the real check against a real
pgbouncer, and tests/integration/test_pooler_cluster.py the part on a real API server.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import datetime
import ipaddress
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509

from cleo_operator.api.tenant import parse_tenant_spec
from cleo_operator.crypto.pooler_tls import certificates_in
from cleo_operator.data.errors import AuthenticationFailed
from cleo_operator.data.pool import SitePools
from cleo_operator.data.sites import AdminCredentials, SiteConfig
from cleo_operator.failover.pooler import points_to, pooler_route, pooler_server
from cleo_operator.kube.client import KubeError
from cleo_operator.kube.kinds import (
    DEPLOYMENT,
    EVENT,
    NAMESPACE,
    NETWORK_POLICY,
    PDB,
    POD,
    REPLICA_SET,
    SECRET,
    SERVICE,
)
from cleo_operator.kube.kinds import TENANT as TENANT_KIND
from cleo_operator.reconcile.database_passwords import StoredPassword, password_fingerprint
from cleo_operator.reconcile.database_secret import render_credentials_secret
from cleo_operator.reconcile.pooler import (
    CHECK_POLICY,
    CONDITION_TYPE,
    PoolerPart,
    PoolerSettings,
    observe_rollout,
    pooler_target,
    render_check_policy,
    routes_workload,
)
from cleo_operator.reconcile.tenant import TenantReconciler
from cleo_operator.reconcile.tenant_databases import TenantDatabases
from cleo_operator.reconcile.tenant_parts import TenantContext
from cleo_operator.render.meta import tenant_owner
from cleo_operator.render.pooler import (
    CLIENT_PASSWORD_KEY,
    DEFAULT_POOLER_IMAGE,
    POOLER_HASH_ANNOTATION,
    POOLER_NAME,
    TLS_CERT,
    pooler_client_fingerprint,
    pooler_server_host,
)
from tests.harness.fake_kube import FakeKube
from tests.unit.reconcile.test_tenant_decisions import add_tenant

NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
TENANT, UID, NS = "acme", "0b6f3c2e-5d1a-4c1e-9a57-3f1d2b8c9e10", "cleo-acme"
PASSWORD = "A" * 43
SITE = SiteConfig(name="main", host="pg.example.internal", port=5432, sslmode="disable")


class Logins:
    """Stands in for the network login through a pooler pod (see the module docstring)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.error: Exception | None = None

    def __call__(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)
        if self.error is not None:
            raise self.error


@pytest.fixture
def kube() -> FakeKube:
    fake = FakeKube(now=lambda: NOW)
    fake.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    return fake


@pytest.fixture
def databases(kube: FakeKube) -> Iterator[TenantDatabases]:
    credentials = AdminCredentials(user="admin", password="unused-here")
    pools = SitePools({"main": SITE}, credentials=lambda _site: credentials)
    yield TenantDatabases(kube, pools)
    pools.close()


def context(
    pooler: dict[str, Any] | None, *, status: dict[str, Any] | None = None
) -> TenantContext:
    database: dict[str, Any] = {"enabled": True, "site": "main"}
    if pooler is not None:
        database["pooler"] = pooler
    return TenantContext(
        name=TENANT,
        uid=UID,
        generation=1,
        spec=parse_tenant_spec({"database": database}),
        namespace=NS,
        annotations={},
        status=status or {},
        now=NOW,
    )


def write_credentials(
    kube: FakeKube,
    password: str = PASSWORD,
    *,
    rotated_at: datetime.datetime = NOW,
    request: str | None = None,
) -> None:
    record = StoredPassword(
        password=password,
        fingerprint=password_fingerprint(tenant=TENANT, password=password),
        rotated_at=rotated_at,
        rotation_request=request,
    )
    kube.apply(
        render_credentials_secret(
            {"apiVersion": "v1", "kind": "Secret", "namespace": NS, "name": "cleo-database"},
            tenant=TENANT,
            owner=tenant_owner(name=TENANT, uid=UID),
            site=SITE,
            record=record,
        )
    )


def part(kube: FakeKube, databases: TenantDatabases, logins: Logins) -> PoolerPart:
    return PoolerPart(
        kube,
        databases,
        operator_namespace="cleo-system",
        settings=PoolerSettings(),
        check=logins,
    )


CLUSTER_IP = "10.96.12.34"


def service_as_the_api_server_allocates(kube: FakeKube, rendered: list[dict[str, Any]]) -> None:
    """Apply what the tenant reconcile would (the Deployment aside, see below), the Service
    with the cluster IP the API server would give it."""
    for obj in rendered:
        if obj["kind"] == "Deployment":
            continue
        applied = copy.deepcopy(obj)
        if applied["kind"] == "Service":
            applied["spec"]["clusterIP"] = CLUSTER_IP
        kube.apply(applied)


def pooler_applied(kube: FakeKube, databases: TenantDatabases) -> PoolerPart:
    """A tenant with credentials whose enabled pooler's objects are applied (as the tenant
    reconcile would); the part, with logins that always succeed."""
    write_credentials(kube)
    pooler = part(kube, databases, Logins())
    for obj in pooler.reconcile(context({"enabled": True})).objects:
        kube.apply(obj)
    return pooler


def rolled_out(kube: FakeKube, pooler: PoolerPart, ctx: TenantContext) -> None:
    """Reconcile once, then do what the tenant reconcile, the API server and the deployment
    controller would: the pooler's objects applied, one pod of them available."""
    first = pooler.reconcile(ctx).objects
    service_as_the_api_server_allocates(kube, first)
    rendered = next(o for o in first if o["kind"] == "Deployment")
    deployment_as_the_controller_reports(kube, rendered, available=1)


def secret_text(kube: FakeKube, key: str) -> str:
    secret = kube.get(SECRET, POOLER_NAME, namespace=NS)
    assert secret is not None
    return base64.b64decode(secret["data"][key]).decode()


def client_password(kube: FakeKube) -> str:
    return secret_text(kube, CLIENT_PASSWORD_KEY)


def deployment_as_the_controller_reports(
    kube: FakeKube, rendered: dict[str, Any], *, available: int, updated: int | None = None
) -> None:
    """Apply `rendered` and write the status the deployment controller would (none runs here)."""
    live = kube.apply(copy.deepcopy(rendered))
    replicas = rendered["spec"]["replicas"]
    kube.patch_merge(
        DEPLOYMENT,
        POOLER_NAME,
        {
            "status": {
                "observedGeneration": live["metadata"]["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas if updated is None else updated,
                "availableReplicas": available,
            }
        },
        namespace=NS,
        subresource="status",
    )


def test_without_the_pooler_nothing_is_rendered_and_nothing_read(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    logins = Logins()
    result = part(kube, databases, logins).reconcile(context(None))
    assert result.objects == []
    assert result.conditions == {}
    assert result.pooler_secret is None
    assert logins.calls == []


def test_the_pooler_waits_for_the_password_and_says_so(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    result = part(kube, databases, Logins()).reconcile(context({"enabled": True}))
    assert result.objects == []
    condition = result.conditions[CONDITION_TYPE]
    assert (condition.status, condition.reason) == ("False", "WaitingForCredentials")


def test_a_new_pooler_is_rendered_but_the_workload_stays_direct_until_a_pod_is_available(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    write_credentials(kube)
    logins = Logins()
    result = part(kube, databases, logins).reconcile(context({"enabled": True, "poolSize": 5}))
    kinds = [(o["kind"], o["metadata"]["name"]) for o in result.objects]
    assert kinds == [
        ("NetworkPolicy", CHECK_POLICY),
        ("Secret", POOLER_NAME),
        ("Deployment", POOLER_NAME),
        ("Service", POOLER_NAME),
        ("PodDisruptionBudget", POOLER_NAME),
    ]
    assert result.conditions[CONDITION_TYPE].reason == "Creating"
    assert result.pooler_secret is None
    assert "pooler" not in result.fingerprints
    assert logins.calls == []  # nothing to log in to yet
    assert result.requeue_after is not None


def test_ready_means_every_replica_of_the_current_config_and_a_login_through_it(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    write_credentials(kube)
    logins = Logins()
    pooler = part(kube, databases, logins)
    ctx = context({"enabled": True})
    first = pooler.reconcile(ctx)
    service_as_the_api_server_allocates(kube, first.objects)
    rendered = next(o for o in first.objects if o["kind"] == "Deployment")
    deployment_as_the_controller_reports(kube, rendered, available=1)
    half = pooler.reconcile(ctx)
    # One pod serves: the workload may switch, but the pool is not whole yet.
    assert half.pooler_secret == POOLER_NAME
    assert half.conditions[CONDITION_TYPE].reason == "Unavailable"
    assert logins.calls == []
    deployment_as_the_controller_reports(kube, rendered, available=2)
    ready = pooler.reconcile(ctx)
    assert ready.conditions[CONDITION_TYPE].status == "True"
    assert ready.conditions[CONDITION_TYPE].reason == "Serving"
    assert logins.calls == [
        {
            "host": CLUSTER_IP,
            "port": 5432,
            "dbname": "cleo_acme",
            "user": "cleo_acme",
            # The workload's own credential to the pooler, not the role's password.
            "password": client_password(kube),
            "timeout_seconds": 2,
            # Pinned to the pooler's own certificate, as the Secret holds it.
            "server_cert_pem": secret_text(kube, TLS_CERT),
        }
    ]
    assert logins.calls[0]["password"] != PASSWORD
    secret = kube.get(SECRET, POOLER_NAME, namespace=NS)
    assert secret is not None
    values = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    # The workload's checksum: its credential to the pooler, and of the database Secret only
    # the names it still reads from it (not the role's password: a rotation rolls no pod).
    assert ready.fingerprints["pooler"] == pooler_client_fingerprint(values)
    assert set(ready.fingerprints) == {"pooler", "database"}


@pytest.mark.security
def test_a_rotation_rolls_the_pooler_but_never_the_workload(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    write_credentials(kube)
    pooler = part(kube, databases, Logins())
    ctx = context({"enabled": True, "replicas": 1})
    rolled_out(kube, pooler, ctx)
    before = pooler.reconcile(ctx)
    assert before.conditions[CONDITION_TYPE].status == "True"
    client = client_password(kube)
    cert = secret_text(kube, TLS_CERT)
    write_credentials(kube, password="B" * 43)
    after = pooler.reconcile(ctx)
    service_as_the_api_server_allocates(kube, after.objects)
    assert after.conditions[CONDITION_TYPE].reason == "Rolling"  # the pooler rolls
    assert after.fingerprints == before.fingerprints  # the workload does not
    assert client_password(kube) == client
    assert secret_text(kube, TLS_CERT) == cert  # the key and certificate are kept too
    # The same reconcile twice renders the same objects: nothing to write.
    assert pooler.reconcile(ctx).objects == after.objects


def test_a_failed_login_through_a_rolled_out_pooler_is_not_ready(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    write_credentials(kube)
    logins = Logins()
    logins.error = AuthenticationFailed("the pooler refused the tenant's role cleo_acme")
    pooler = part(kube, databases, logins)
    ctx = context({"enabled": True, "replicas": 1})
    rolled_out(kube, pooler, ctx)
    result = pooler.reconcile(ctx)
    condition = result.conditions[CONDITION_TYPE]
    assert (condition.status, condition.reason) == ("False", "AuthenticationFailed")
    assert PASSWORD not in condition.message


def test_a_rotated_password_is_a_new_config_and_the_old_pods_are_rolling(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    write_credentials(kube)
    pooler = part(kube, databases, Logins())
    ctx = context({"enabled": True, "replicas": 1})
    before = next(o for o in pooler.reconcile(ctx).objects if o["kind"] == "Deployment")
    deployment_as_the_controller_reports(kube, before, available=1)
    write_credentials(kube, password="B" * 43)
    result = pooler.reconcile(ctx)
    after = next(o for o in result.objects if o["kind"] == "Deployment")
    hashes = [
        d["spec"]["template"]["metadata"]["annotations"][POOLER_HASH_ANNOTATION]
        for d in (before, after)
    ]
    assert hashes[0] != hashes[1]
    assert result.conditions[CONDITION_TYPE].reason == "Rolling"
    assert result.pooler_secret == POOLER_NAME  # the old pods still serve meanwhile


def test_rollout_is_judged_from_the_deployments_own_status() -> None:
    def deployment(**status: int) -> dict[str, Any]:
        return {
            "metadata": {"generation": 2},
            "spec": {"template": {"metadata": {"annotations": {POOLER_HASH_ANNOTATION: "h"}}}},
            "status": status,
        }

    done = deployment(observedGeneration=2, replicas=2, updatedReplicas=2, availableReplicas=2)
    assert observe_rollout(done, config_hash="h", replicas=2) is None
    assert observe_rollout(done, config_hash="other", replicas=2) is not None
    stale = deployment(observedGeneration=1, replicas=2, updatedReplicas=2, availableReplicas=2)
    assert observe_rollout(stale, config_hash="h", replicas=2) is not None
    surge = deployment(observedGeneration=2, replicas=3, updatedReplicas=2, availableReplicas=3)
    rolling = observe_rollout(surge, config_hash="h", replicas=2)
    assert rolling is not None
    assert rolling.reason == "Rolling"
    assert observe_rollout(None, config_hash="h", replicas=2) is not None
    assert routes_workload(done)
    assert not routes_workload(deployment(availableReplicas=0))
    assert not routes_workload(None)


def test_switching_it_off_deletes_what_is_ours_and_drops_the_condition(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    pooler = pooler_applied(kube, databases)
    had = {"conditions": [{"type": CONDITION_TYPE, "status": "True"}]}
    result = pooler.reconcile(context({"enabled": False}, status=had))
    assert result.remove_conditions == {CONDITION_TYPE}
    for kind in (SECRET, DEPLOYMENT, SERVICE, PDB):
        assert kube.get(kind, POOLER_NAME, namespace=NS) is None
    assert kube.get(NETWORK_POLICY, CHECK_POLICY, namespace=NS) is None
    assert kube.get(SECRET, "cleo-database", namespace=NS) is not None


def workload(kube: FakeKube, *, pooled: bool, rolled: bool) -> None:
    """The tenant's workload Deployment as the tenant reconcile left it and the deployment
    controller reports it (no controller runs here): on the pooler's route or not, and
    with its old pods gone (`rolled`) or not."""
    env = (
        [
            {
                "name": "DATABASE_URL",
                "valueFrom": {"secretKeyRef": {"name": POOLER_NAME, "key": "DATABASE_URL"}},
            }
        ]
        if pooled
        else []
    )
    kube.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "cleoai",
                "namespace": NS,
                "labels": {
                    "app.kubernetes.io/managed-by": "cleo-operator",
                    "cleoai.io/tenant": TENANT,
                },
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "cleoai"}},
                "template": {
                    "metadata": {"labels": {"app": "cleoai"}},
                    "spec": {"containers": [{"name": "cleoai", "image": "x", "env": env}]},
                },
            },
        }
    )
    live = kube.get(DEPLOYMENT, "cleoai", namespace=NS)
    assert live is not None
    kube.patch_merge(
        DEPLOYMENT,
        "cleoai",
        {
            "status": {
                "observedGeneration": live["metadata"]["generation"],
                "replicas": 2 if rolled else 4,
                "updatedReplicas": 2,
                "availableReplicas": 2,
            }
        },
        namespace=NS,
        subresource="status",
    )


@pytest.mark.security
def test_switching_it_off_after_a_lost_status_write_still_removes_the_pooler(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    pooler = pooler_applied(kube, databases)
    workload(kube, pooled=False, rolled=True)
    # No PoolerReady in status (a lost write, a crash, a re-adopted tenant): what decides
    # is what lives in the namespace with the operator's labels.
    pooler.reconcile(context({"enabled": False}, status={}))
    for kind in (SECRET, DEPLOYMENT, SERVICE, PDB):
        assert kube.get(kind, POOLER_NAME, namespace=NS) is None, kind
    assert kube.get(NETWORK_POLICY, CHECK_POLICY, namespace=NS) is None


@pytest.mark.security
def test_switching_it_off_keeps_the_pool_until_the_workload_has_rolled(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    pooler = pooler_applied(kube, databases)
    had = {"conditions": [{"type": CONDITION_TYPE, "status": "True"}]}
    off = context({"enabled": False}, status=had)
    # The workload's template still reads the pooler's Secret: its pods would fail to start.
    workload(kube, pooled=True, rolled=True)
    waiting = pooler.reconcile(off)
    assert kube.get(SERVICE, POOLER_NAME, namespace=NS) is not None
    assert kube.get(SECRET, POOLER_NAME, namespace=NS) is not None
    assert waiting.requeue_after is not None
    assert CONDITION_TYPE not in waiting.remove_conditions
    assert waiting.conditions[CONDITION_TYPE].reason == "SwitchingOff"
    # The template is direct again, but old pods (still on the pooler) run.
    workload(kube, pooled=False, rolled=False)
    pooler.reconcile(off)
    assert kube.get(SERVICE, POOLER_NAME, namespace=NS) is not None
    # The roll is done: now the pooler goes.
    workload(kube, pooled=False, rolled=True)
    done = pooler.reconcile(off)
    assert kube.get(SERVICE, POOLER_NAME, namespace=NS) is None
    assert kube.get(SECRET, POOLER_NAME, namespace=NS) is None
    assert done.remove_conditions == {CONDITION_TYPE}


def controlled_by(owner: dict[str, Any]) -> list[dict[str, Any]]:
    meta = owner["metadata"]
    return [
        {
            "apiVersion": owner["apiVersion"],
            "kind": owner["kind"],
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
        }
    ]


def workload_replica_set(kube: FakeKube, name: str = "cleoai-5d8f7c9b4") -> list[dict[str, Any]]:
    """A ReplicaSet that the workload's Deployment controls, as its controller makes it;
    the owner references a pod of it carries."""
    deployment = kube.get(DEPLOYMENT, "cleoai", namespace=NS)
    assert deployment is not None
    replica_set = kube.get(REPLICA_SET, name, namespace=NS) or kube.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": name,
                "namespace": NS,
                "labels": {"app.kubernetes.io/name": "cleoai", "cleoai.io/tenant": TENANT},
                "ownerReferences": controlled_by(deployment),
            },
            "spec": {"selector": {"matchLabels": {"app": "cleoai"}}, "template": {}},
        }
    )
    return controlled_by(replica_set)


def workload_pod(
    kube: FakeKube,
    name: str,
    *,
    pooled: bool,
    terminating: bool = False,
    owners: list[dict[str, Any]] | None = None,
    env: list[dict[str, Any]] | None = None,
) -> None:
    """A pod of the workload as its ReplicaSet made it (`owners`: the workload's ReplicaSet
    unless given): on the pooler's route or not."""
    if env is None:
        env = [{"name": "PGHOST", "value": POOLER_NAME}] if pooled else []
    labels = {"app.kubernetes.io/name": "cleoai", "cleoai.io/tenant": TENANT}
    if pooled:
        labels["cleoai.io/database-route"] = "pooler"
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": NS,
                "labels": labels,
                "ownerReferences": workload_replica_set(kube) if owners is None else owners,
                # Held as the kubelet holds a pod in its grace period (it runs meanwhile).
                "finalizers": ["test.cleoai.io/grace-period"] if terminating else [],
            },
            "spec": {"containers": [{"name": "cleoai", "image": "x", "env": env}]},
        }
    )
    if terminating:  # deleted: the Deployment's status no longer counts it, yet it runs
        kube.delete(POD, name, namespace=NS)
        live = kube.get(POD, name, namespace=NS)
        assert live is not None
        assert live["metadata"].get("deletionTimestamp")


@pytest.mark.security
def test_switching_it_off_waits_for_every_live_pod_on_the_pooler_whatever_the_status_says(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    pooler = pooler_applied(kube, databases)
    off = context({"enabled": False}, status={})
    # The Deployment reports the roll done (status.replicas does not count terminating
    # pods), but an old pod still runs in its grace period with the pooler in its env.
    workload(kube, pooled=False, rolled=True)
    workload_pod(kube, "cleoai-new-1", pooled=False)
    workload_pod(kube, "cleoai-old-1", pooled=True, terminating=True)
    waiting = pooler.reconcile(off)
    assert waiting.conditions[CONDITION_TYPE].reason == "SwitchingOff"
    assert "cleoai-old-1" in waiting.conditions[CONDITION_TYPE].message
    for kind in (SECRET, DEPLOYMENT, SERVICE):
        assert kube.get(kind, POOLER_NAME, namespace=NS) is not None, kind
    # Its grace period is over: it is gone.
    kube.patch_merge(POD, "cleoai-old-1", {"metadata": {"finalizers": None}}, namespace=NS)
    assert kube.get(POD, "cleoai-old-1", namespace=NS) is None
    done = pooler.reconcile(off)
    for kind in (SECRET, DEPLOYMENT, SERVICE):
        assert kube.get(kind, POOLER_NAME, namespace=NS) is None, kind
    assert done.remove_conditions == {CONDITION_TYPE}


def test_switching_it_off_leaves_a_foreign_object_of_that_name_alone(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": POOLER_NAME, "namespace": NS, "labels": {"app": "theirs"}},
            "spec": {"ports": [{"port": 5432}]},
        }
    )
    had = {"conditions": [{"type": CONDITION_TYPE, "status": "False"}]}
    part(kube, databases, Logins()).reconcile(context(None, status=had))
    assert kube.get(SERVICE, POOLER_NAME, namespace=NS) is not None


@pytest.mark.security
def test_a_released_credentials_secret_cannot_plant_a_verifier_in_the_auth_file(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    # A former admin edits a released Secret: the fingerprint beside the password is an
    # HMAC keyed with the password itself, so whoever writes one can write the other.
    planted = "SCRAM-SHA-256$6000000:c2FsdA==$c3RvcmVkS2V5PQ==:c2VydmVyS2V5PQ=="
    write_credentials(kube, password=planted)
    result = part(kube, databases, Logins()).reconcile(context({"enabled": True}))
    assert result.objects == []
    condition = result.conditions[CONDITION_TYPE]
    assert (condition.status, condition.reason) == ("False", "WaitingForCredentials")
    assert planted not in condition.message


@pytest.mark.security
def test_scaling_the_pooler_to_one_replica_deletes_its_pdb(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    write_credentials(kube)
    pooler = part(kube, databases, Logins())
    for obj in pooler.reconcile(context({"enabled": True, "replicas": 2})).objects:
        kube.apply(obj)
    assert kube.get(PDB, POOLER_NAME, namespace=NS) is not None
    result = pooler.reconcile(context({"enabled": True, "replicas": 1}))
    assert "PodDisruptionBudget" not in [o["kind"] for o in result.objects]
    # A budget of one pod kept up, over a single replica, would block every node drain.
    assert kube.get(PDB, POOLER_NAME, namespace=NS) is None
    # Not someone else's budget of that name.
    foreign = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": POOLER_NAME, "namespace": NS, "labels": {"app": "theirs"}},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "theirs"}}},
    }
    kube.apply(foreign)
    pooler.reconcile(context({"enabled": True, "replicas": 1}))
    assert kube.get(PDB, POOLER_NAME, namespace=NS) is not None


@pytest.mark.security
def test_ready_says_what_was_checked_and_never_the_answerers_text(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    write_credentials(kube)
    logins = Logins()
    pooler = part(kube, databases, logins)
    ctx = context({"enabled": True, "replicas": 1})
    rolled_out(kube, pooler, ctx)
    ready = pooler.reconcile(ctx).conditions[CONDITION_TYPE]
    assert "a login through the pooler's Service succeeded" in ready.message
    logins.error = AuthenticationFailed(
        "the pooler refused: FATAL: visit https://evil.example to fix your pooler"
    )
    failed = pooler.reconcile(ctx).conditions[CONDITION_TYPE]
    assert failed.reason == "AuthenticationFailed"
    assert "evil.example" not in failed.message
    assert "a login through the pooler's Service failed" in failed.message


@pytest.mark.security
def test_the_login_check_never_goes_through_the_dns_search_list(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    # "cleo-pooler.<ns>.svc" with ndots:5 is tried under the search domains first, where
    # whoever owns namespace "svc" answers: the check connects to the Service's cluster IP,
    # and only to a Service that is provably the operator's for this tenant.
    write_credentials(kube)
    logins = Logins()
    pooler = part(kube, databases, logins)
    ctx = context({"enabled": True, "replicas": 1})
    rolled_out(kube, pooler, ctx)
    assert pooler.reconcile(ctx).conditions[CONDITION_TYPE].status == "True"
    (call,) = logins.calls
    assert ipaddress.ip_address(call["host"]) == ipaddress.ip_address(CLUSTER_IP)
    # A Service of that name that is not the operator's, or is another tenant's: no login.
    service = kube.get(SERVICE, POOLER_NAME, namespace=NS)
    assert service is not None
    for change in (
        {"metadata": {"labels": {"app.kubernetes.io/managed-by": "someone"}}},
        {
            "metadata": {
                "ownerReferences": [{**service["metadata"]["ownerReferences"][0], "uid": "x"}]
            }
        },
        {"spec": {"clusterIP": "None"}},
    ):
        kube.delete(SERVICE, POOLER_NAME, namespace=NS)
        forged = copy.deepcopy(service)
        for key, value in change.items():
            forged[key] = {**forged[key], **value}
        forged["metadata"].pop("resourceVersion", None)
        kube.create(forged)
        logins.calls.clear()
        condition = pooler.reconcile(ctx).conditions[CONDITION_TYPE]
        assert logins.calls == [], change
        assert (condition.status, condition.reason) == ("False", "ServiceNotVerified"), change


@pytest.mark.security
def test_a_check_that_does_not_answer_does_not_hold_the_reconcile(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    # The login runs in the part's own lane; the reconcile waits for it only so long, and a
    # check still running is not started twice for the same pooler.
    write_credentials(kube)
    release = threading.Event()
    logins = Logins()

    def hanging(**kwargs: Any) -> None:
        logins(**kwargs)
        release.wait(10)

    pooler = PoolerPart(
        kube,
        databases,
        operator_namespace="cleo-system",
        settings=PoolerSettings(check_timeout_seconds=1, check_grace_seconds=0.2),
        check=hanging,
    )
    ctx = context({"enabled": True, "replicas": 1})
    rolled_out(kube, pooler, ctx)
    try:
        started = time.monotonic()
        condition = pooler.reconcile(ctx).conditions[CONDITION_TYPE]
        assert time.monotonic() - started < 2
        assert (condition.status, condition.reason) == ("False", "CheckPending")
        pooler.reconcile(ctx)
        assert len(logins.calls) == 1  # the running check was not started again
    finally:
        release.set()
    pooler.close()


@pytest.mark.security
@pytest.mark.parametrize(
    ("status", "reason"),
    [(422, "Invalid"), (500, "InternalError"), (503, "ServiceUnavailable"), (409, "Conflict")],
    ids=["refused", "server-error", "unavailable", "conflict"],
)
def test_a_refused_pooler_secret_write_carries_no_password(
    kube: FakeKube,
    databases: TenantDatabases,
    caplog: pytest.LogCaptureFixture,
    status: int,
    reason: str,
) -> None:
    # The API server's or an admission's message may quote what was sent: the Secret's
    # values (base64), so the auth file and the URL with the password in them.
    tenants = TenantReconciler(
        kube,
        parts=[PoolerPart(kube, databases, operator_namespace="cleo-system", check=Logins())],
        operator_namespace="cleo-system",
        now=lambda: NOW,
    )
    kube.patch_merge(NAMESPACE, NS, {"metadata": {"annotations": {"cleoai.io/adopt": TENANT}}})
    add_tenant(
        kube,
        TENANT,
        {
            "workload": {"image": "registry.example/cleoai:1", "replicas": 1},
            "autoscaling": {"enabled": False},
            "database": {"enabled": True, "site": "main", "pooler": {"enabled": True}},
        },
    )
    tenants.reconcile(TENANT)
    write_credentials(kube)
    userlist = f'"cleo_acme" "{PASSWORD}"\n'
    quoted = base64.b64encode(userlist.encode()).decode()
    kube.refuse(
        "apply",
        SECRET,
        POOLER_NAME,
        status=status,
        reason=reason,
        message=f"data[userlist.txt]: Invalid value: {quoted!r}, password {PASSWORD}",
    )
    raised = ""
    with caplog.at_level(logging.DEBUG):
        if status == 422:
            tenants.reconcile(TENANT)  # refused: reported, the reconcile goes on
        else:
            with pytest.raises(KubeError) as caught:  # transient: the loop retries and logs it
                tenants.reconcile(TENANT)
            exc = caught.value
            assert (exc.transient, exc.status) == (True, status)
            logging.getLogger("test").error("the loop logs: %s", exc, exc_info=exc)
            raised = f"{exc!s} {exc!r} {exc.args!r} {exc.message}"
    seen = json.dumps(kube.get(TENANT_KIND, TENANT)) + json.dumps(kube.objects(EVENT)) + caplog.text
    seen += raised
    assert "cleo-pooler" in seen  # the refusal is reported
    assert PASSWORD not in seen
    assert quoted not in seen


def test_the_image_setting_comes_from_the_environment_and_bad_values_name_the_variable() -> None:
    assert PoolerSettings.from_environment({}).image.image == DEFAULT_POOLER_IMAGE
    chosen = PoolerSettings.from_environment(
        {
            "CLEO_POOLER_IMAGE": "registry.example/pgbouncer@sha256:" + "a" * 64,
            "CLEO_POOLER_IMAGE_PULL_POLICY": "Always",
        }
    )
    assert chosen.image.image.endswith("a" * 64)
    assert chosen.image.pull_policy == "Always"
    with pytest.raises(ValueError, match="CLEO_POOLER_IMAGE_PULL_POLICY"):
        PoolerSettings.from_environment({"CLEO_POOLER_IMAGE_PULL_POLICY": "Sometimes"})
    with pytest.raises(ValueError, match="CLEO_POOLER_IMAGE"):
        PoolerSettings.from_environment({"CLEO_POOLER_IMAGE": "pgbouncer latest"})
    labels = "app.kubernetes.io/name=cleo-operator,app.kubernetes.io/instance=prod"
    assert PoolerSettings.from_environment(
        {"CLEO_OPERATOR_POD_LABELS": labels}
    ).operator_pod_labels == {
        "app.kubernetes.io/name": "cleo-operator",
        "app.kubernetes.io/instance": "prod",
    }
    with pytest.raises(ValueError, match="CLEO_OPERATOR_POD_LABELS"):
        PoolerSettings.from_environment({"CLEO_OPERATOR_POD_LABELS": "app=cleo operator"})
    assert PoolerSettings.from_environment({}).cluster_domain == "cluster.local"
    domain = {"CLEO_CLUSTER_DOMAIN": "corp.example."}
    assert PoolerSettings.from_environment(domain).cluster_domain == "corp.example"
    with pytest.raises(ValueError, match="CLEO_CLUSTER_DOMAIN"):
        PoolerSettings.from_environment({"CLEO_CLUSTER_DOMAIN": "cluster local"})


@pytest.mark.security
def test_an_upgrade_keeps_the_auth_file_and_lets_old_plain_pods_in_until_they_are_gone(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    # The pooler's Secret as an operator before the client credential and client TLS left
    # it: the auth file and URL hold the role's password, and the workload's pods connect
    # in the clear with it (PGHOST=cleo-pooler, PGSSLMODE=disable as literal values).
    write_credentials(kube)
    pooler = part(kube, databases, Logins())
    ctx = context({"enabled": True})
    for obj in pooler.reconcile(ctx).objects:
        kube.apply(obj)
    old_userlist = f'"cleo_acme" "{PASSWORD}"\n'
    kube.patch_merge(
        SECRET,
        POOLER_NAME,
        {
            "data": {
                "userlist.txt": base64.b64encode(old_userlist.encode()).decode(),
                CLIENT_PASSWORD_KEY: None,
            }
        },
        namespace=NS,
    )
    workload(kube, pooled=True, rolled=False)
    plain_env = [
        {"name": "PGHOST", "value": "cleo-pooler"},
        {"name": "PGSSLMODE", "value": "disable"},
    ]
    # A tenant admin's pod of the same labels and env is nobody's: it opens nothing.
    workload_pod(kube, "x", pooled=False, owners=[], env=plain_env)
    for obj in pooler.reconcile(ctx).objects:
        kube.apply(obj)
    assert "client_tls_sslmode = require" in secret_text(kube, "pgbouncer.ini")
    workload_pod(kube, "cleoai-old", pooled=False, env=plain_env)
    for obj in pooler.reconcile(ctx).objects:
        kube.apply(obj)
    # The same auth file: the old pods' credential is the client credential now.
    assert secret_text(kube, "userlist.txt") == old_userlist
    assert client_password(kube) == PASSWORD
    assert "client_tls_sslmode = allow" in secret_text(kube, "pgbouncer.ini")
    kube.delete(POD, "cleoai-old", namespace=NS)  # the workload has rolled
    for obj in pooler.reconcile(ctx).objects:
        kube.apply(obj)
    assert "client_tls_sslmode = require" in secret_text(kube, "pgbouncer.ini")
    assert secret_text(kube, "userlist.txt") == old_userlist


@pytest.mark.security
def test_the_workloads_host_for_the_pooler_is_fully_qualified_under_the_cluster_domain(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    # A relative name goes through the pod's search list, where a Service a tenant made (or
    # a namespace named svc) could answer; the fully qualified one cannot, and the pooler's
    # certificate names exactly it (the workload verifies it).
    write_credentials(kube)
    settings = PoolerSettings(cluster_domain="corp.example")
    pooler = PoolerPart(
        kube, databases, operator_namespace="cleo-system", settings=settings, check=Logins()
    )
    for obj in pooler.reconcile(context({"enabled": True})).objects:
        kube.apply(obj)
    host = f"cleo-pooler.{NS}.svc.corp.example"
    assert secret_text(kube, "PGHOST") == host
    assert f"@{host}:5432/" in secret_text(kube, "DATABASE_URL")
    assert "sslmode=verify-full" in secret_text(kube, "DATABASE_URL")
    cert = x509.load_pem_x509_certificate(secret_text(kube, TLS_CERT).encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert host in san.get_values_for_type(x509.DNSName)
    assert secret_text(kube, "client-ca.crt") == secret_text(kube, TLS_CERT)


def test_retain_cuts_the_pooler_loose_so_the_kept_workload_keeps_its_pool(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    write_credentials(kube)
    pooler = part(kube, databases, Logins())
    ctx = context({"enabled": True})
    for obj in pooler.reconcile(ctx).objects:
        kube.apply(obj)
    assert pooler.finalize(ctx, delete=True)
    assert kube.get(SECRET, POOLER_NAME, namespace=NS)["metadata"]["ownerReferences"]
    assert pooler.finalize(ctx, delete=False)
    for kind in (SECRET, DEPLOYMENT, SERVICE, PDB):
        live = kube.get(kind, POOLER_NAME, namespace=NS)
        assert live is not None
        assert not live["metadata"].get("ownerReferences"), kind
    check = kube.get(NETWORK_POLICY, CHECK_POLICY, namespace=NS)
    assert check is not None
    assert not check["metadata"].get("ownerReferences")


@pytest.mark.security
@pytest.mark.parametrize(
    ("host", "sslmode", "written"),
    [
        # A single label: the tenant namespace's search list would try a Service of that
        # name in the tenant's own namespace first (one a tenant admin can make).
        ("pg", "require", "pg.cleo-system.svc.cluster.local"),
        ("pg.db.svc", "disable", "pg.db.svc.cluster.local"),
        ("pg.db.svc.cluster.local", "require", "pg.db.svc.cluster.local"),
        ("pg.example.internal", "require", "pg.example.internal"),
        ("10.1.2.3", "disable", "10.1.2.3"),
        # verify-full: the certificate must name the host as written, and only the site's
        # server can present one.
        ("pg", "verify-full", "pg"),
    ],
)
def test_the_poolers_server_host_is_what_the_operators_pod_reaches(
    host: str, sslmode: str, written: str
) -> None:
    site = SiteConfig(name="main", host=host, port=5432, sslmode=sslmode)
    target = pooler_target(site, tenant=TENANT, operator_namespace="cleo-system")
    assert target.host == written
    rendered = {"pgbouncer.ini": f"cleo_acme = host={target.host} port=5432 dbname=x\n"}
    server = pooler_server(rendered["pgbouncer.ini"])
    assert server is not None
    # A failover's rollout step recognises it: computed the same way, compared exactly.
    same = pooler_server_host(
        site, operator_namespace="cleo-system", cluster_domain="cluster.local"
    )
    assert points_to(server, same, 5432)
    assert not points_to(server, "other", 5432)


@pytest.mark.security
def test_a_failovers_pooler_gate_compares_the_server_host_exactly(kube: FakeKube) -> None:
    # A configuration rendered while the operator ran in another namespace qualifies a
    # single-label site host with that namespace: it points elsewhere now, and must not
    # pass the failover's "the pooler goes to the new primary" gate.
    site = SiteConfig(name="main", host="pg", port=5432, sslmode="disable")
    credentials = AdminCredentials(user="admin", password="unused-here")
    pools = SitePools({"main": site}, credentials=lambda _site: credentials)
    try:
        write_credentials(kube)
        old = PoolerPart(
            kube, TenantDatabases(kube, pools), operator_namespace="cleo-old", check=Logins()
        )
        first = old.reconcile(context({"enabled": True, "replicas": 1})).objects
        service_as_the_api_server_allocates(kube, first)
        rendered = next(o for o in first if o["kind"] == "Deployment")
        deployment_as_the_controller_reports(kube, rendered, available=1)
        assert pooler_route(kube, NS, site=site, operator_namespace="cleo-old").ready
        moved = pooler_route(kube, NS, site=site, operator_namespace="cleo-system")
        assert not moved.ready
        assert "does not point to" in moved.message
    finally:
        pools.close()


def context_at(now: datetime.datetime) -> TenantContext:
    return dataclasses.replace(context({"enabled": True}), now=now)


@pytest.mark.security
def test_a_renewed_certificate_is_trusted_by_the_workload_before_the_pooler_presents_it(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    # The workload's copy of the trusted bundle is refreshed by the kubelet within a minute
    # or so; the pooler presents a new certificate only weeks after the bundle holds it,
    # and the old one stays trusted while pooler pods of the last roll may present it.
    write_credentials(kube)
    pooler = part(kube, databases, Logins())

    def reconcile_at(now: datetime.datetime) -> tuple[str, list[str], str]:
        result = pooler.reconcile(context_at(now))
        for obj in result.objects:
            kube.apply(obj)
        deployment = next(o for o in result.objects if o["kind"] == "Deployment")
        pooler_hash = deployment["spec"]["template"]["metadata"]["annotations"][
            POOLER_HASH_ANNOTATION
        ]
        return (
            secret_text(kube, TLS_CERT),
            certificates_in(secret_text(kube, "client-ca.crt")),
            pooler_hash,
        )

    first, trusted, hash_first = reconcile_at(NOW)
    assert trusted == [first]
    ends = x509.load_pem_x509_certificate(first.encode()).not_valid_after_utc
    assert reconcile_at(NOW + datetime.timedelta(days=1)) == (first, [first], hash_first)
    # 59 days before its end: the next certificate is trusted, not presented; no roll.
    presented, trusted, staged_hash = reconcile_at(ends - datetime.timedelta(days=59))
    assert presented == first
    assert len(trusted) == 2
    assert first in trusted
    (upcoming,) = [c for c in trusted if c != first]
    assert staged_hash == hash_first
    assert reconcile_at(ends - datetime.timedelta(days=58)) == (first, trusted, hash_first)
    # 29 days before its end: the pooler presents the staged one (it rolls); both trusted.
    presented, trusted, switched_hash = reconcile_at(ends - datetime.timedelta(days=29))
    assert presented == upcoming
    assert set(trusted) == {first, upcoming}
    assert switched_hash != hash_first
    # Once the first has expired, it is trusted no more.
    presented, trusted, _ = reconcile_at(ends + datetime.timedelta(days=1))
    assert (presented, trusted) == (upcoming, [upcoming])


@pytest.mark.security
def test_no_operator_pod_labels_never_renders_a_check_policy_open_to_the_whole_namespace() -> None:
    ctx = context({"enabled": True})
    with pytest.raises(ValueError, match="labels are empty"):
        render_check_policy(ctx, operator_namespace="cleo-system", operator_pod_labels={})
    # Unset in the environment: the chart's selector labels, never none.
    assert PoolerSettings.from_environment({"CLEO_OPERATOR_POD_LABELS": " "}).operator_pod_labels


@pytest.mark.security
def test_a_tenant_admins_pod_with_the_workloads_labels_never_holds_the_pooler_on(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    # The workload's labels are not reserved: a pod of anyone's with them and the pooler in
    # its spec (by name, by a user's value mentioning it, or the route label) is not the
    # workload's. Only pods that the operator's Deployment controls (by uid, through its
    # ReplicaSet) hold the switch-off.
    pooler = pooler_applied(kube, databases)
    off = context({"enabled": False}, status={})
    workload(kube, pooled=False, rolled=True)
    forged_rs = kube.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "cleoai-forged", "namespace": NS},
            "spec": {"selector": {"matchLabels": {"app": "cleoai"}}, "template": {}},
        }
    )
    mention = [{"name": "NOTE", "value": "see cleo-pooler docs"}]
    workload_pod(kube, "x", pooled=True, owners=[])
    workload_pod(kube, "y", pooled=True, owners=controlled_by(forged_rs))
    workload_pod(kube, "cleoai-mine", pooled=False, env=mention)
    done = pooler.reconcile(off)
    for kind in (SECRET, DEPLOYMENT, SERVICE):
        assert kube.get(kind, POOLER_NAME, namespace=NS) is None, kind
    assert done.remove_conditions == {CONDITION_TYPE}


@pytest.mark.security
def test_the_plain_clients_window_is_on_the_condition_not_reported_as_serving(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    write_credentials(kube)
    pooler = part(kube, databases, Logins())
    ctx = context({"enabled": True, "replicas": 1})
    workload(kube, pooled=True, rolled=True)
    plain_env = [
        {"name": "PGHOST", "value": "cleo-pooler"},
        {"name": "PGSSLMODE", "value": "disable"},
    ]
    workload_pod(kube, "cleoai-old", pooled=False, env=plain_env)
    rolled_out(kube, pooler, ctx)
    condition = pooler.reconcile(ctx).conditions[CONDITION_TYPE]
    assert (condition.status, condition.reason) == ("True", "PlainClientsAllowed")
    assert "in the clear" in condition.message


@pytest.mark.security
def test_a_rotation_request_rotates_the_workloads_client_credential_a_schedule_does_not(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    # A request follows a suspected leak of DATABASE_URL/PGPASSWORD: the workload's
    # credential to the pooler, not the role's password, so it must change too.
    write_credentials(kube, request="r1")
    pooler = part(kube, databases, Logins())
    ctx = context({"enabled": True})
    for obj in pooler.reconcile(ctx).objects:
        kube.apply(obj)
    first = client_password(kube)
    later = NOW + datetime.timedelta(days=30)
    write_credentials(kube, "B" * 43, rotated_at=later, request="r1")  # scheduled
    for obj in pooler.reconcile(ctx).objects:
        kube.apply(obj)
    assert client_password(kube) == first
    write_credentials(kube, "C" * 43, rotated_at=later, request="r2")  # requested
    for obj in pooler.reconcile(ctx).objects:
        kube.apply(obj)
    second = client_password(kube)
    assert second != first
    for obj in pooler.reconcile(ctx).objects:  # and only once
        kube.apply(obj)
    assert client_password(kube) == second


@pytest.mark.security
def test_an_inherited_client_credential_is_replaced_at_the_next_rotation(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    write_credentials(kube)
    pooler = part(kube, databases, Logins())
    ctx = context({"enabled": True})
    for obj in pooler.reconcile(ctx).objects:
        kube.apply(obj)
    old_userlist = f'"cleo_acme" "{PASSWORD}"\n'
    kube.patch_merge(
        SECRET,
        POOLER_NAME,
        {
            "metadata": {"annotations": None},
            "data": {
                "userlist.txt": base64.b64encode(old_userlist.encode()).decode(),
                CLIENT_PASSWORD_KEY: None,
            },
        },
        namespace=NS,
    )
    for obj in pooler.reconcile(ctx).objects:
        kube.apply(obj)
    assert client_password(kube) == PASSWORD  # kept through the upgrade
    for obj in pooler.reconcile(ctx).objects:
        kube.apply(obj)
    assert client_password(kube) == PASSWORD
    later = NOW + datetime.timedelta(days=30)
    write_credentials(kube, "B" * 43, rotated_at=later)  # the next (scheduled) rotation
    for obj in pooler.reconcile(ctx).objects:
        kube.apply(obj)
    assert client_password(kube) not in (PASSWORD, "B" * 43)


@pytest.mark.security
def test_the_check_waits_from_its_start_says_queued_and_reports_a_late_outcome(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    write_credentials(kube)
    logins = Logins()

    def slow(**kwargs: Any) -> None:
        logins(**kwargs)
        time.sleep(1.5)

    pooler = PoolerPart(
        kube,
        databases,
        operator_namespace="cleo-system",
        settings=PoolerSettings(
            check_timeout_seconds=1, check_grace_seconds=0.2, check_lane_width=1
        ),
        check=slow,
    )
    ctx = context({"enabled": True, "replicas": 1})
    rolled_out(kube, pooler, ctx)
    blocker = threading.Event()
    pooler._lane.submit(blocker.wait, 10)  # another tenant's check holds the lane
    try:
        queued = pooler.reconcile(ctx).conditions[CONDITION_TYPE]
        assert (queued.status, queued.reason) == ("False", "CheckPending")
        assert "queued" in queued.message
        assert logins.calls == []  # no login was attempted, and none is blamed
    finally:
        blocker.set()
    running = pooler.reconcile(ctx).conditions[CONDITION_TYPE]  # the queued one, now running
    assert (running.status, running.reason) == ("False", "CheckPending")
    time.sleep(1.0)  # it ends, late
    assert len(logins.calls) == 1
    # A new check starts (slow again): the late outcome of the last one is reported.
    kept = pooler.reconcile(ctx).conditions[CONDITION_TYPE]
    assert (kept.status, kept.reason) == ("True", "Serving")
    assert "the last check, at" in kept.message
    pooler.close()


def test_a_check_that_breaks_is_never_kept_as_a_success(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    write_credentials(kube)

    def broken(**_kwargs: Any) -> None:
        raise RuntimeError("a fault of the check itself")

    pooler = part(kube, databases, Logins())
    pooler.check = broken
    ctx = context({"enabled": True, "replicas": 1})
    rolled_out(kube, pooler, ctx)
    with pytest.raises(RuntimeError):
        pooler.reconcile(ctx)
    assert pooler._outcomes == {}
    pooler.close()


@pytest.mark.security
def test_a_requested_client_credential_rolls_the_pooler_before_the_workload(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    write_credentials(kube, request="r1")
    pooler = part(kube, databases, Logins())
    ctx = context({"enabled": True, "replicas": 1})
    rolled_out(kube, pooler, ctx)
    before = pooler.reconcile(ctx).fingerprints["pooler"]
    write_credentials(kube, "B" * 43, request="r2")
    rolling = pooler.reconcile(ctx)
    assert rolling.conditions[CONDITION_TYPE].reason == "Rolling"
    assert rolling.fingerprints["pooler"] == before  # the workload waits for the pooler
    service_as_the_api_server_allocates(kube, rolling.objects)
    rendered = next(o for o in rolling.objects if o["kind"] == "Deployment")
    deployment_as_the_controller_reports(kube, rendered, available=1)
    rolled = pooler.reconcile(ctx)
    assert rolled.conditions[CONDITION_TYPE].reason == "Serving"
    assert rolled.fingerprints["pooler"] != before  # now the workload rolls onto it


@pytest.mark.security
def test_a_re_created_tenant_never_inherits_the_former_tenants_client_credential_or_key(
    kube: FakeKube, databases: TenantDatabases
) -> None:
    # Retain cuts the pooler's Secret loose; a tenant of the same name made again (a new
    # uid) must not keep what the former admins could read: the client password, the key.
    pooler = pooler_applied(kube, databases)
    before_password, before_key = client_password(kube), secret_text(kube, "tls.key")
    pooler.finalize(context({"enabled": True}), delete=False)
    again = dataclasses.replace(
        context({"enabled": True}), uid="5c1d0e7a-0000-4000-8000-000000000001"
    )
    for obj in pooler.reconcile(again).objects:
        kube.apply(obj)
    assert client_password(kube) != before_password
    assert secret_text(kube, "tls.key") != before_key

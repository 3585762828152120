"""The pooler on the local control plane, through the real tenant reconcile and a real site.

The operator's database and pooler parts run here against the local API server and the
session's PostgreSQL. The cluster's pods are KWOK's (they become Ready, but no container
runs), so the pooler's pod is played by a real ``pgbouncer`` started from the very Secret
the operator wrote to the cluster (`PooledPod`), and the operator's login check is pointed
at it instead of the Service's cluster IP, which nothing routes here. Everything
else (objects, NetworkPolicies, the Deployment controller's status, PoolerReady, the roll
after a rotation, switching it off) is the real thing.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Iterator
from typing import Any

import pytest

from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import (
    DEPLOYMENT,
    NAMESPACE,
    NETWORK_POLICY,
    PDB,
    SECRET,
    SERVICE,
    TENANT,
)
from cleo_operator.reconcile.database import ROTATE_ANNOTATION, DatabasePart, TenantDatabases
from cleo_operator.reconcile.pooler import CHECK_POLICY, PoolerPart
from cleo_operator.reconcile.tenant import TenantReconciler
from cleo_operator.render.network import ALLOW_DATABASE
from cleo_operator.render.pooler import (
    CLIENT_URL_KEY,
    DATABASE_ROUTE_LABEL,
    INI_KEY,
    POOLER_HASH_ANNOTATION,
    POOLER_NAME,
    TLS_CERT,
    TLS_KEY,
    USERLIST_KEY,
)
from tests.harness.cluster_fixtures import wait_for
from tests.harness.marks import RECONCILERS_ALONE
from tests.harness.pgbouncer import PgBouncer
from tests.harness.postgres import PostgresServer
from tests.harness.specs import IMAGE, tenant_manifest
from tests.integration import tenant_database_support as support

pytestmark = RECONCILERS_ALONE

CHECKSUM = "cleoai.io/config-checksum"
OPERATOR_NAMESPACE = "cleo-system"

databases = support.databases_fixture("pool-operator", sites={"default": {}})


class PooledPod:
    """The pooler's pod, played by a local pgbouncer that runs the cluster's Secret."""

    def __init__(self, kube: KubeClient, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.bouncer: PgBouncer | None = None
        self.starts = 0

    def sync(self) -> None:
        """Start (or restart, as a new pod would) on the Secret's files when they changed."""
        secret = self.kube.get(SECRET, POOLER_NAME, namespace=self.namespace)
        if secret is None:
            return
        values = support.secret_values(secret)
        mounted = (INI_KEY, USERLIST_KEY, TLS_KEY, TLS_CERT)  # what the pod mounts
        files = {key: values[key] for key in mounted if key in values}
        if self.bouncer is not None and self.bouncer.files == files:
            return
        if self.bouncer is None:
            self.bouncer = PgBouncer(files).start()
        else:
            self.bouncer.restart(files)
        self.starts += 1

    def address(self, service: dict[str, Any]) -> tuple[str, int]:
        """Where the check goes instead of the Service's cluster IP (no kube-proxy here);
        the part calls it only with the Service it verified as its own."""
        assert service["metadata"]["namespace"] == self.namespace
        assert self.bouncer is not None, "the check ran before the pooler had a pod"
        return self.bouncer.host, self.bouncer.port

    def stop(self) -> None:
        if self.bouncer is not None:
            self.bouncer.stop()


@pytest.fixture
def tenant_name(kube: KubeClient, postgres_server: PostgresServer) -> Iterator[str]:
    name = support.unique("pool")
    kube.create(
        tenant_manifest(
            name,
            {
                "workload": {"image": IMAGE, "replicas": 1},
                "autoscaling": {"enabled": False},
                "network": {
                    "databaseEgress": [{"cidr": "127.0.0.1/32", "ports": [postgres_server.port]}]
                },
                "database": {"enabled": True, "pooler": {"enabled": True, "poolSize": 5}},
            },
        )
    )
    yield name
    kube.delete(TENANT, name)
    kube.delete(NAMESPACE, f"cleo-{name}")
    support.drop_tenant_objects(postgres_server, name)


def condition(tenant: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for item in ((tenant or {}).get("status") or {}).get("conditions") or []:
        if item["type"] == type_:
            return dict(item)
    return None


def template(kube: KubeClient, ns: str, name: str) -> dict[str, Any]:
    deployment = kube.get(DEPLOYMENT, name, namespace=ns)
    assert deployment is not None
    result: dict[str, Any] = deployment["spec"]["template"]
    return result


def operator_write_times(obj: dict[str, Any]) -> list[tuple[str, str]]:
    """When each field manager last wrote `obj` (the API server's managedFields)."""
    return sorted(
        (str(entry.get("manager")), str(entry.get("time")))
        for entry in obj["metadata"].get("managedFields") or []
        if entry.get("subresource") != "status"
    )


def test_the_pooler_serves_the_workload_rolls_on_rotation_and_goes_when_switched_off(
    kube: KubeClient, databases: TenantDatabases, tenant_name: str
) -> None:
    ns = f"cleo-{tenant_name}"
    pod = PooledPod(kube, ns)
    reconciler = TenantReconciler(
        kube,
        parts=[
            DatabasePart(databases),
            PoolerPart(kube, databases, operator_namespace=OPERATOR_NAMESPACE, address=pod.address),
        ],
        now=lambda: datetime.datetime.now(datetime.UTC),
    )

    def pooler_ready() -> dict[str, Any] | None:
        pod.sync()
        reconciler.reconcile(tenant_name)
        tenant = kube.get(TENANT, tenant_name)
        ready = condition(tenant, "PoolerReady")
        routed = DATABASE_ROUTE_LABEL in template(kube, ns, "cleoai")["metadata"]["labels"]
        return tenant if ready and ready["status"] == "True" and routed else None

    try:
        tenant = wait_for(pooler_ready, timeout=60, interval=0.3, what="PoolerReady")
        ready = condition(tenant, "PoolerReady")
        assert ready is not None
        assert ready["reason"] == "Serving"

        # The objects, owned by the tenant.
        for kind in (SECRET, DEPLOYMENT, SERVICE, PDB):
            obj = kube.get(kind, POOLER_NAME, namespace=ns)
            assert obj is not None, kind
            assert obj["metadata"]["ownerReferences"][0]["name"] == tenant_name
        check = kube.get(NETWORK_POLICY, CHECK_POLICY, namespace=ns)
        assert check is not None
        # The workload goes through the pooler; its pods lose the direct route.
        workload = template(kube, ns, "cleoai")
        env = {e["name"]: e for e in workload["spec"]["containers"][0]["env"]}
        assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": POOLER_NAME,
            "key": CLIENT_URL_KEY,
        }
        assert env["PGHOST"]["valueFrom"]["secretKeyRef"] == {"name": POOLER_NAME, "key": "PGHOST"}
        host = support.secret_values(kube.get(SECRET, POOLER_NAME, namespace=ns))["PGHOST"]
        assert host == f"{POOLER_NAME}.{ns}.svc.cluster.local"  # fully qualified
        database_policy = kube.get(NETWORK_POLICY, ALLOW_DATABASE, namespace=ns)
        assert database_policy is not None
        assert database_policy["spec"]["podSelector"]["matchExpressions"] == [
            {"key": DATABASE_ROUTE_LABEL, "operator": "NotIn", "values": ["pooler"]}
        ]
        pooler_hash = template(kube, ns, POOLER_NAME)["metadata"]["annotations"][
            POOLER_HASH_ANNOTATION
        ]
        checksum = workload["metadata"]["annotations"][CHECKSUM]
        password = support.secret_values(support.secret_of(kube, ns))["PGPASSWORD"]
        visible = repr(kube.get(DEPLOYMENT, POOLER_NAME, namespace=ns)) + repr(workload)
        assert password not in visible
        assert base64.b64encode(password.encode()).decode() not in visible

        # Once everything has settled, a reconcile (the login check included) writes nothing.
        def quiet() -> bool:
            pod.sync()
            result = reconciler.reconcile(tenant_name)
            return not result.applied and not result.status_written

        wait_for(quiet, timeout=60, interval=0.5, what="a reconcile that writes nothing")

        # A rotation request: a new password rolls the pooler (a new hash), and the pooler's
        # new pod logs in with it (PoolerReady comes back only through a login). A request
        # follows a suspected leak of the workload's DATABASE_URL, which is the client
        # credential to the pooler: that is rotated too, the pooler rolling onto it first
        # and the workload after (a scheduled rotation never rolls the workload:
        # tests/unit/reconcile/test_pooler_part.py, tests/integration/test_pooler.py).
        starts = pod.starts
        client_before = support.secret_values(kube.get(SECRET, POOLER_NAME, namespace=ns))
        kube.patch_merge(
            TENANT, tenant_name, {"metadata": {"annotations": {ROTATE_ANNOTATION: "now"}}}
        )

        def rolled() -> dict[str, Any] | None:
            tenant = pooler_ready()
            rolled_hash = template(kube, ns, POOLER_NAME)["metadata"]["annotations"][
                POOLER_HASH_ANNOTATION
            ]
            return tenant if tenant and rolled_hash != pooler_hash else None

        wait_for(rolled, timeout=60, interval=0.3, what="PoolerReady after the rotation")
        assert support.secret_values(support.secret_of(kube, ns))["PGPASSWORD"] != password
        assert pod.starts == starts + 1
        client_after = support.secret_values(kube.get(SECRET, POOLER_NAME, namespace=ns))
        assert client_after[CLIENT_URL_KEY] != client_before[CLIENT_URL_KEY]

        def workload_rolled() -> bool:
            pooler_ready()
            annotations = template(kube, ns, "cleoai")["metadata"]["annotations"]
            return bool(annotations[CHECKSUM] != checksum)

        wait_for(workload_rolled, timeout=60, interval=0.3, what="the workload's roll")

        # Switched off: the pooler's objects go, the workload is direct again.
        kube.patch_merge(
            TENANT, tenant_name, {"spec": {"database": {"pooler": {"enabled": False}}}}
        )

        def direct() -> bool:
            reconciler.reconcile(tenant_name)
            tenant = kube.get(TENANT, tenant_name)
            labels = template(kube, ns, "cleoai")["metadata"]["labels"]
            return condition(tenant, "PoolerReady") is None and DATABASE_ROUTE_LABEL not in labels

        wait_for(direct, timeout=60, interval=0.3, what="the workload back on the site")
        for kind in (SECRET, DEPLOYMENT, SERVICE, PDB):
            assert kube.get(kind, POOLER_NAME, namespace=ns) is None, kind
        assert kube.get(NETWORK_POLICY, CHECK_POLICY, namespace=ns) is None
        database_policy = kube.get(NETWORK_POLICY, ALLOW_DATABASE, namespace=ns)
        assert database_policy is not None
        assert database_policy["spec"]["podSelector"] == {}
        assert "env" not in template(kube, ns, "cleoai")["spec"]["containers"][0]
    finally:
        pod.stop()

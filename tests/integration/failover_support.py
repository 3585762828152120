"""Shared pieces of the failover tests (no tests here): a tenant on a real primary/standby
pair, on the real API server, as the operator's parts make it.

Each test gets a new PostgreSQL pair (failovers promote the standby, so pairs are not
shared), its own tenant name, namespace and operator namespace. The tenant's database,
role and credentials Secret are made by the real tenant database part
(``TenantDatabases``), the CleoAI Deployment is a plain Deployment that reads that Secret
(``envFrom``) as the rendered one does; KWOK runs its pods.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from cleo_operator.api.objects import KubeObject
from cleo_operator.api.tenant import parse_tenant_spec
from cleo_operator.data.pool import BreakerSettings, PoolSettings, SitePools
from cleo_operator.data.sites import AdminCredentials, SiteConfig, load_site_config
from cleo_operator.data.tenant_db import tenant_database_name
from cleo_operator.failover.drill import BackupSource
from cleo_operator.failover.procedure import FailoverSettings
from cleo_operator.failover.samples import LagSamples
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import DEPLOYMENT, FAILOVER, NAMESPACE, SECRET, TENANT
from cleo_operator.observability.tracing import reconcile_span
from cleo_operator.reconcile.database import DatabaseSettings, TenantDatabases
from cleo_operator.reconcile.failover import FailoverReconciler
from cleo_operator.render.meta import tenant_owner
from tests.harness.cluster_fixtures import wait_for
from tests.harness.postgres import PostgresServer
from tests.harness.specs import IMAGE, tenant_manifest

PRIMARY = "east"
STANDBY = "west"
SCRATCH = "scratch"
REPLICAS = 2

FAST_BREAKER = PoolSettings(breaker=BreakerSettings(failure_threshold=1, cooldown_seconds=0.5))
"""A breaker that lets a site that came back be used within a second (the tests restart
servers; production waits 30 s)."""


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@dataclass
class Setting:
    """A tenant with a database on a primary/standby pair, its Deployment and Secret."""

    kube: KubeClient
    primary: PostgresServer
    standby: PostgresServer
    tenant: str
    namespace: str
    operator_namespace: str
    sites_yaml: str
    uid: str = ""
    extra_sites: dict[str, PostgresServer] = field(default_factory=dict)

    # -- sites --------------------------------------------------------------------------

    def server(self, site: str) -> PostgresServer:
        servers = {PRIMARY: self.primary, STANDBY: self.standby, **self.extra_sites}
        return servers[site]

    def credentials(self, site: SiteConfig) -> AdminCredentials:
        """Each site's admin, as its admin Secret would say (a standby shares its primary's)."""
        server = self.server(site.name)
        return AdminCredentials(user=server.superuser, password=server.password)

    def pools(self, settings: PoolSettings = FAST_BREAKER) -> SitePools:
        sites = load_site_config(self.sites_yaml)
        return SitePools(sites, credentials=self.credentials, settings=settings)

    def reconciler(
        self,
        pools: SitePools,
        *,
        backups: BackupSource | None = None,
        lag_samples: LagSamples | None = None,
        **settings: Any,
    ) -> FailoverReconciler:
        """The reconciler as the operator builds it, with test-speed retries."""
        defaults: dict[str, Any] = {"fence_retry_seconds": 0.5, "retry_seconds": 0.5}
        return FailoverReconciler(
            self.kube,
            pools,
            credentials=self.credentials,
            settings=FailoverSettings(**{**defaults, **settings}),
            backups=backups,
            lag_samples=lag_samples,
        )

    # -- the tenant's objects -----------------------------------------------------------

    def tenant_object(self) -> KubeObject:
        obj = self.kube.get(TENANT, self.tenant)
        assert obj is not None
        return obj

    def tenant_annotations(self) -> dict[str, str]:
        return dict(self.tenant_object()["metadata"].get("annotations") or {})

    def secret(self) -> KubeObject:
        obj = self.kube.get(SECRET, "cleo-database", namespace=self.namespace)
        assert obj is not None
        return obj

    def secret_values(self) -> dict[str, str]:
        data = self.secret().get("data") or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    def deployment(self) -> KubeObject:
        obj = self.kube.get(DEPLOYMENT, "cleoai", namespace=self.namespace)
        assert obj is not None
        return obj

    def create_failover(self, type_: str, **spec: Any) -> str:
        name = unique(type_.lower())
        self.kube.create(
            {
                "apiVersion": "cleoai.io/v1alpha1",
                "kind": "CleoFailover",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": {"tenant": self.tenant, "type": type_, **spec},
            }
        )
        return name

    def failover(self, name: str) -> KubeObject:
        obj = self.kube.get(FAILOVER, name, namespace=self.namespace)
        assert obj is not None
        return obj

    # -- the tenant's data --------------------------------------------------------------

    def connect_as_tenant(self, server: PostgresServer | None = None) -> psycopg.Connection[Any]:
        """Connect as the application does: with the Secret's values (or to ``server``)."""
        values = self.secret_values()
        host, port = values["PGHOST"], values["PGPORT"]
        if server is not None:
            host, port = server.host, str(server.port)
        return psycopg.connect(
            host=host,
            port=port,
            dbname=values["PGDATABASE"],
            user=values["PGUSER"],
            password=values["PGPASSWORD"],
            sslmode=values["PGSSLMODE"],
            connect_timeout=5,
            autocommit=True,
        )

    def write_rows(self, count: int, *, server: PostgresServer | None = None) -> None:
        with self.connect_as_tenant(server) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS memories (id bigserial, body text)")
            conn.execute(
                "INSERT INTO memories (body) SELECT 'memory ' || g FROM generate_series(1, %s) g",
                (count,),
            )

    def count_rows(self, server: PostgresServer) -> int:
        rows = server.execute(
            "SELECT count(*) FROM memories", dbname=tenant_database_name(self.tenant)
        )
        return int(rows[0][0])

    def tenant_can_write(self, server: PostgresServer) -> bool:
        try:
            with self.connect_as_tenant(server) as conn:
                conn.execute("CREATE TEMPORARY TABLE probe (x int)")
                conn.execute("INSERT INTO probe VALUES (1)")
        except psycopg.Error:
            return False
        return True

    def role_can_login(self, server: PostgresServer) -> bool:
        rows = server.execute(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = %s",
            (tenant_database_name(self.tenant),),
        )
        return bool(rows and rows[0][0])

    def wait_replayed(self, timeout: float = 30.0) -> None:
        """Until the standby has replayed everything the primary wrote so far."""
        target = self.primary.execute("SELECT pg_current_wal_insert_lsn()")[0][0]
        wait_for(
            lambda: self.standby.execute(
                "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (str(target),)
            )[0][0],
            timeout=timeout,
            what="the standby to replay the primary's WAL",
        )


def site_entry(
    server: PostgresServer, *, secret_ns: str, standby: str | None = None, admin: str = "pg-admin"
) -> Any:
    entry: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "sslMode": "disable",
        "connectTimeoutSeconds": 2,
        "adminSecret": {"name": admin, "namespace": secret_ns},
    }
    if standby:
        entry["standby"] = standby
    return entry


def admin_secret(
    kube: KubeClient, namespace: str, server: PostgresServer, *, name: str = "pg-admin"
) -> None:
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "type": "kubernetes.io/basic-auth",
            "data": {
                "username": base64.b64encode(server.superuser.encode()).decode(),
                "password": base64.b64encode(server.password.encode()).decode(),
            },
        }
    )


def deployment(namespace: str, tenant: str, *, replicas: int = REPLICAS) -> KubeObject:
    """A Deployment like the rendered CleoAI one: named cleoai, env from cleo-database."""
    labels = {"app.kubernetes.io/name": "cleoai", "cleoai.io/tenant": tenant}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "cleoai", "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "cleoai",
                            "image": IMAGE,
                            "envFrom": [{"secretRef": {"name": "cleo-database"}}],
                        }
                    ]
                },
            },
        },
    }


def wait_available(kube: KubeClient, namespace: str, replicas: int, timeout: float = 60) -> None:
    def available() -> bool:
        obj = kube.get(DEPLOYMENT, "cleoai", namespace=namespace) or {}
        status = obj.get("status") or {}
        return (
            int(status.get("availableReplicas") or 0) == replicas
            and int(status.get("updatedReplicas") or 0) == replicas
            and int(status.get("replicas") or 0) == replicas
        )

    wait_for(available, timeout=timeout, what=f"{namespace}/cleoai to have {replicas} pods")


@contextlib.contextmanager
def tenant_setting(
    kube: KubeClient,
    pair: tuple[PostgresServer, PostgresServer],
    *,
    extra_sites: Mapping[str, PostgresServer] | None = None,
    failover: Mapping[str, Any] | None = None,
    workload: bool = True,
) -> Iterator[Setting]:
    """A tenant whose database lives on ``pair`` (east primary, west standby)."""
    primary, standby = pair
    tenant = unique("fo")
    namespace = f"cleo-{tenant}"
    operator_ns = unique("fo-op")
    for ns in (namespace, operator_ns):
        kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    admin_secret(kube, operator_ns, primary)
    sites: dict[str, Any] = {
        PRIMARY: site_entry(primary, secret_ns=operator_ns, standby=STANDBY),
        STANDBY: site_entry(standby, secret_ns=operator_ns),
    }
    for name, server in (extra_sites or {}).items():
        admin_secret(kube, operator_ns, server, name=f"pg-admin-{name}")
        sites[name] = site_entry(server, secret_ns=operator_ns, admin=f"pg-admin-{name}")
    sites_yaml = yaml.safe_dump({"sites": sites})
    obj = kube.create(
        tenant_manifest(
            tenant,
            {
                "database": {"enabled": True, "site": PRIMARY},
                "failover": {"standbySite": STANDBY, **(failover or {})},
            },
        )
    )
    setting = Setting(
        kube=kube,
        primary=primary,
        standby=standby,
        tenant=tenant,
        namespace=namespace,
        operator_namespace=operator_ns,
        sites_yaml=sites_yaml,
        uid=obj["metadata"]["uid"],
        extra_sites=dict(extra_sites or {}),
    )
    with contextlib.closing(
        TenantDatabases.from_environment(
            kube,
            environ={"CLEO_SITES": sites_yaml},
            settings=DatabaseSettings(wait_seconds=30.0),
        )
    ) as databases:
        outcome = databases.reconcile(
            tenant=tenant,
            uid=setting.uid,
            spec=parse_tenant_spec(obj["spec"]),
            namespace=namespace,
            owner=tenant_owner(name=tenant, uid=setting.uid),
            annotations={},
            now=datetime.datetime.now(datetime.UTC),
        )
        assert outcome.condition is not None
        assert outcome.condition.status == "True", outcome
    setting.wait_replayed()
    if workload:
        kube.apply(deployment(namespace, tenant))
        wait_available(kube, namespace, REPLICAS)
    try:
        yield setting
    finally:
        kube.delete(TENANT, tenant)
        for ns in (namespace, operator_ns):
            kube.delete(NAMESPACE, ns)


def run_until(
    reconciler: FailoverReconciler, setting: Setting, name: str, *, timeout: float = 120.0
) -> KubeObject:
    """Reconcile as the daemon would (again after requeue_after) until the failover ended."""
    result = reconciler.drive(setting.namespace, name, timeout=timeout)
    assert result.phase in ("Succeeded", "Failed"), result
    return setting.failover(name)


def drive_in_spans(
    reconciler: FailoverReconciler, setting: Setting, name: str, *, timeout: float = 120.0
) -> KubeObject:
    """`run_until`, each reconcile in its span as the handlers' loop runs it (traced when
    the test turned tracing on)."""
    deadline = time.monotonic() + timeout
    while True:
        with reconcile_span("CleoFailover", name, setting.namespace):
            result = reconciler.reconcile(setting.namespace, name)
        if result.phase in ("Succeeded", "Failed"):
            return setting.failover(name)
        assert time.monotonic() < deadline, result
        time.sleep(min(result.requeue_after or 0.5, 0.5))


def condition(obj: Mapping[str, Any], type_: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    pytest.fail(f"no condition {type_} in {obj.get('status')}")


def steps(obj: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in (obj.get("status") or {}).get("steps") or []}


def elapsed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def drop_tenant(server: PostgresServer, tenant: str) -> None:
    ident = tenant_database_name(tenant)
    server.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(ident)))
    server.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ident)))


def setting_fixture(**options: Any) -> Any:
    """A fixture `setting`: a tenant on a new primary/standby pair, `tenant_setting` with
    `options`. A test module names it: ``setting = setting_fixture()``."""

    @pytest.fixture
    def setting(
        kube: KubeClient,
        crds_installed: None,
        postgres_replica_pair: tuple[PostgresServer, PostgresServer],
    ) -> Iterator[Setting]:
        del crds_installed
        with tenant_setting(kube, postgres_replica_pair, **options) as made:
            yield made

    return setting

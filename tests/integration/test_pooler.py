"""The operator's PgBouncer configuration, run by a real ``pgbouncer`` against a real PostgreSQL.

What runs is what the operator renders into the pooler's Secret (``pgbouncer.ini`` and
``userlist.txt`` from `render_pooler`'s values, for a site as the operator configures it);
only the pod's config folder and listen address are rewritten, because ``/etc/pgbouncer``
and port 6432 on every interface cannot be had here (tests/harness/pgbouncer.py). The
tenant's role and database are made by the operator's own data layer, and the check
behind ``PoolerReady`` (`check_pooler_login`) is the one under test.
"""

from __future__ import annotations

import datetime
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cleo_operator.api.pooler import PoolerSpec
from cleo_operator.crypto.pooler_tls import PoolerTls, issue_pooler_tls
from cleo_operator.data.errors import AuthenticationFailed
from cleo_operator.data.pool import SitePools
from cleo_operator.data.pooler import PoolerBusy, PoolerCheckFailed, check_pooler_login
from cleo_operator.data.sites import AdminCredentials, SiteConfig, validate_ca_pem
from cleo_operator.data.tenant_db import ensure_tenant_database, tenant_role_name
from cleo_operator.reconcile.pooler import pooler_target
from cleo_operator.render.pooler import (
    CLIENT_CA_DIR,
    CLIENT_CA_KEY,
    CLIENT_URL_KEY,
    pooler_config_hash,
    pooler_config_values,
    pooler_env,
)
from tests.harness.pgbouncer import PgBouncer, running_pgbouncer
from tests.harness.postgres import PostgresServer
from tests.harness.postgres_tls import issue_server_certificate, make_authority

pytestmark = [pytest.mark.postgres]

CLIENTS = 200


def new_password() -> str:
    return secrets.token_urlsafe(32)


def files(site: SiteConfig, tenant: str, password: str, pooler: PoolerSpec) -> dict[str, str]:
    """The pooler Secret's values, exactly as the operator renders them."""
    target = pooler_target(site, tenant=tenant)
    return pooler_config_values(target=target, pooler=pooler, password=password, namespace="cleo-x")


def role_of(tenant: str) -> str:
    return tenant_role_name(tenant)


def login(
    bouncer: PgBouncer, tenant: str, password: str, *, dbname: str | None = None, **options: Any
) -> None:
    """The check behind PoolerReady, through `bouncer`, as the tenant's role."""
    role = role_of(tenant)
    check_pooler_login(
        host=bouncer.host,
        port=bouncer.port,
        dbname=dbname or role,
        user=role,
        password=password,
        **options,
    )


def connect(bouncer: PgBouncer, tenant: str, password: str, **options: Any) -> psycopg.Connection:
    """A client of the pooler (no TLS to the pooler unless `options` say ``sslmode``)."""
    role = role_of(tenant)
    dsn = f"host={bouncer.host} port={bouncer.port} dbname={role} user={role} sslmode=disable"
    return psycopg.connect(dsn, password=password, **options)


def server_connections(server: PostgresServer, tenant: str) -> int:
    role = role_of(tenant)
    row = server.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND backend_type = "
        "'client backend'",
        (role,),
    )
    return int(row[0][0])


@pytest.fixture
def provisioned(postgres_site_pools: SitePools, tenant_name: str) -> tuple[SitePools, str, str]:
    password = new_password()
    ensure_tenant_database(
        postgres_site_pools, "main", tenant=tenant_name, password=password, connection_limit=20
    )
    return postgres_site_pools, tenant_name, password


def test_connections_pass_and_the_ready_check_sees_a_wrong_password(
    provisioned: tuple[SitePools, str, str],
) -> None:
    pools, tenant, password = provisioned
    pooler = PoolerSpec(enabled=True, pool_size=3)
    with running_pgbouncer(files(pools.site("main"), tenant, password, pooler)) as bouncer:
        login(bouncer, tenant, password)
        # Transaction pooling: a transaction sees its own writes, across statements.
        with connect(bouncer, tenant, password) as conn:
            with conn.transaction():
                conn.execute("CREATE TABLE memories (id int)")
                conn.execute("INSERT INTO memories VALUES (1), (2)")
            assert conn.execute("SELECT count(*) FROM memories").fetchone() == (2,)
        with pytest.raises(AuthenticationFailed) as caught:
            login(bouncer, tenant, "not-" + password)
        assert password not in str(caught.value)
        # Only the tenant's database is served: another name is refused by the pooler.
        with pytest.raises(PoolerCheckFailed):
            login(bouncer, tenant, password, dbname="postgres")


def test_the_pool_limit_holds_under_200_concurrent_clients(
    postgres_server: PostgresServer, provisioned: tuple[SitePools, str, str]
) -> None:
    pools, tenant, password = provisioned
    pool_size = 5
    pooler = PoolerSpec(enabled=True, pool_size=pool_size, max_client_connections=CLIENTS + 10)
    with running_pgbouncer(files(pools.site("main"), tenant, password, pooler)) as bouncer:
        start = threading.Barrier(CLIENTS + 1)
        done = threading.Event()
        errors: list[BaseException] = []
        served = []
        peak = 0

        def client() -> None:
            try:
                with connect(
                    bouncer, tenant, password, connect_timeout=30, autocommit=True
                ) as conn:
                    start.wait(timeout=60)
                    for _ in range(3):
                        conn.execute("SELECT pg_sleep(0.02)")
                    served.append(1)
            except BaseException as exc:
                errors.append(exc)
                start.abort()

        threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        start.wait(timeout=60)  # all 200 are connected to the pooler at once
        while not done.is_set():
            peak = max(peak, server_connections(postgres_server, tenant))
            if all(not t.is_alive() for t in threads):
                done.set()
            time.sleep(0.01)
        for thread in threads:
            thread.join(timeout=60)
    assert errors == []
    assert len(served) == CLIENTS
    # The pool was used (not one connection at a time) and never exceeded.
    assert 1 < peak <= pool_size


def test_a_rotated_password_works_after_the_roll(
    postgres_site_pools: SitePools, provisioned: tuple[SitePools, str, str]
) -> None:
    pools, tenant, old = provisioned
    pooler = PoolerSpec(enabled=True, pool_size=2)
    site = pools.site("main")
    before = files(site, tenant, old, pooler)
    with running_pgbouncer(before) as bouncer:
        login(bouncer, tenant, old)
        new = new_password()
        ensure_tenant_database(
            postgres_site_pools, "main", tenant=tenant, password=new, connection_limit=20
        )
        after = files(site, tenant, new, pooler)
        # A new configuration, so a new hash on the pod template: the pooler rolls.
        assert pooler_config_hash(after, password=new) != pooler_config_hash(before, password=old)
        bouncer.restart(after)  # what a pod of the new template starts with
        login(bouncer, tenant, new)
        with pytest.raises(AuthenticationFailed):
            login(bouncer, tenant, old)


@pytest.mark.security
def test_a_pool_held_by_the_workload_does_not_hold_the_reconcile(
    provisioned: tuple[SitePools, str, str],
) -> None:
    # The workload holds the whole pool idle in transaction: PgBouncer queues the check's
    # SELECT 1 for up to query_wait_timeout (120 s). The check gives up at its own
    # deadline, cancels, and says the pool is busy, not that the pooler is down.
    pools, tenant, password = provisioned
    pooler = PoolerSpec(enabled=True, pool_size=1)
    with running_pgbouncer(files(pools.site("main"), tenant, password, pooler)) as bouncer:
        with connect(bouncer, tenant, password) as holder:
            holder.execute("SELECT 1")  # a transaction is open: the server connection is its
            started = time.monotonic()
            with pytest.raises(PoolerBusy):
                login(bouncer, tenant, password, timeout_seconds=2)
            assert time.monotonic() - started < 4
            holder.rollback()
        login(bouncer, tenant, password)  # the pool is free again: the check passes


@pytest.mark.security
def test_a_rotation_never_runs_new_workload_pods_against_old_pooler_pods(
    postgres_site_pools: SitePools, provisioned: tuple[SitePools, str, str]
) -> None:
    # The workload authenticates to the pooler with a client credential of the pooler's
    # own, which a rotation of the role's password does not change: the workload's URL
    # stays, so its pods do not roll, and old and new pooler pods both accept them. Only
    # the pooler's login to the server changes.
    pools, tenant, old = provisioned
    client = new_password()
    pooler = PoolerSpec(enabled=True, pool_size=2)
    site = pools.site("main")
    target = pooler_target(site, tenant=tenant)
    before = pooler_config_values(
        target=target, pooler=pooler, password=old, client_password=client, namespace="cleo-x"
    )
    with running_pgbouncer(before) as old_pod:
        login(old_pod, tenant, client)  # a server connection of the old password, pooled
        new = new_password()
        ensure_tenant_database(
            postgres_site_pools, "main", tenant=tenant, password=new, connection_limit=20
        )
        after = pooler_config_values(
            target=target, pooler=pooler, password=new, client_password=client, namespace="cleo-x"
        )
        assert after[CLIENT_URL_KEY] == before[CLIENT_URL_KEY]  # the workload keeps its URL
        assert old not in after[CLIENT_URL_KEY]
        assert new not in after[CLIENT_URL_KEY]
        with running_pgbouncer(after) as new_pod:
            for pod in (old_pod, new_pod):  # the same workload pod, on either pooler pod
                with connect(pod, tenant, client) as conn:
                    assert conn.execute("SELECT current_user").fetchone() == (role_of(tenant),)
            with pytest.raises(AuthenticationFailed):
                login(new_pod, tenant, old)  # the role's password is not a client credential


@pytest.mark.security
def test_a_man_in_the_middle_of_the_pooler_gets_no_password(
    provisioned: tuple[SitePools, str, str],
) -> None:
    # Clients must come over TLS; the operator's check pins the pooler's own certificate,
    # so a server in the middle with a certificate of its own (here another real pgbouncer,
    # which would relay the login) never completes TLS with it.
    pools, tenant, password = provisioned
    pooler = PoolerSpec(enabled=True, pool_size=2)
    target = pooler_target(pools.site("main"), tenant=tenant)
    now = datetime.datetime.now(datetime.UTC)
    names = {"service": "cleo-pooler", "namespace": "cleo-x", "cluster_domain": "cluster.local"}
    real, forged = (issue_pooler_tls(now=now, **names) for _ in range(2))

    def rendered(tls: PoolerTls) -> dict[str, str]:
        return pooler_config_values(
            target=target, pooler=pooler, password=password, tls=tls, namespace="cleo-x"
        )

    with running_pgbouncer(rendered(real)) as pod, running_pgbouncer(rendered(forged)) as mitm:
        login(pod, tenant, password, server_cert_pem=real.cert_pem)
        with connect(pod, tenant, password, sslmode="require") as conn:  # as the workload
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError):
            connect(pod, tenant, password)  # sslmode=disable: refused, nothing in clear
        with pytest.raises(PoolerCheckFailed) as caught:
            login(mitm, tenant, password, server_cert_pem=real.cert_pem)
        assert "certificate" in str(caught.value)
        assert password not in str(caught.value)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PostgresServer, Path]]:
    authority = make_authority(tmp_path_factory.mktemp("pooler-ca"), "site")
    certificate = issue_server_certificate(authority, tmp_path_factory.mktemp("pooler-server"))
    with PostgresServer(tls=certificate) as server:
        yield server, authority.cert


def tls_site(server: PostgresServer, ca: Path) -> SiteConfig:
    pem = validate_ca_pem(ca.read_bytes(), field="sslRootCert", source=str(ca))
    return server.site(sslmode="verify-full", ssl_root_cert=str(ca), ca_pem=pem)


def test_the_pooler_reaches_a_tls_site_verifying_its_certificate(
    tls_server: tuple[PostgresServer, Path], tmp_path: Path
) -> None:
    server, ca = tls_server
    site = tls_site(server, ca)
    credentials = AdminCredentials(user=server.superuser, password=server.password)
    tenant, password = f"t-{secrets.token_hex(4)}", new_password()
    role = role_of(tenant)
    with SitePools({"main": site}, credentials=lambda _site: credentials) as pools:
        ensure_tenant_database(pools, "main", tenant=tenant, password=password, connection_limit=5)
    rendered = files(site, tenant, password, PoolerSpec(enabled=True, pool_size=2))
    with running_pgbouncer(rendered) as bouncer:
        login(bouncer, tenant, password)
        row = server.execute(
            "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
            "WHERE a.usename = %s",
            (role,),
        )
        assert row[0][0] is True  # the pooler's server connection is TLS
    # The same site presented with another CA: the pooler refuses the server, and the
    # check says the pooler cannot reach the database (not that the password is wrong).
    impostor = make_authority(tmp_path / "impostor", "impostor").cert
    forged = files(tls_site(server, impostor), tenant, password, PoolerSpec(enabled=True))
    with running_pgbouncer(forged) as bouncer, pytest.raises(PoolerCheckFailed):
        login(bouncer, tenant, password)


def pooler_tls_for(namespace: str) -> PoolerTls:
    return issue_pooler_tls(
        now=datetime.datetime.now(datetime.UTC),
        service="cleo-pooler",
        namespace=namespace,
        cluster_domain="cluster.local",
    )


def workload_environment(
    values: dict[str, str], *, role: str, role_password: str, site_ca: Path, mounted: Path
) -> dict[str, str]:
    """The container's environment as the kubelet builds it: the database Secret's variables
    (envFrom: the site's host, the role's password, verify-full against the site's CA),
    then the Deployment's explicit entries from `pooler_env`, which win; the pooler's CA
    volume is at `mounted` here instead of its mount path."""
    env = {
        "PGHOST": "site.example.internal",
        "PGPORT": "5432",
        "PGUSER": role,
        "PGPASSWORD": role_password,
        "PGDATABASE": role,
        "PGSSLMODE": "verify-full",
        "PGSSLROOTCERT": str(site_ca),
    }
    for entry in pooler_env("cleo-pooler"):
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        env[entry["name"]] = values[ref["key"]] if ref else entry.get("value", "")
    (mounted / "ca.crt").write_text(values[CLIENT_CA_KEY])
    return {name: value.replace(CLIENT_CA_DIR, str(mounted)) for name, value in env.items()}


@pytest.mark.security
def test_a_pooled_workload_connects_with_nothing_but_its_environment_verifying_the_pooler(
    provisioned: tuple[SitePools, str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A libpq client that reads nothing but the container's environment (psql, or
    # psycopg's `connect("")`), and one that reads DATABASE_URL, must both get through the
    # pooler with verify-full: the pooler's own certificate as the only root, naming the
    # Service's fully qualified name. The name cannot resolve here: PGHOSTADDR (libpq's address
    # beside the name it verifies) sends it to the local pgbouncer playing the pod.
    pools, tenant, password = provisioned
    site_ca = make_authority(tmp_path, "site").cert  # a site's CA, not the pooler's
    values = pooler_config_values(
        target=pooler_target(pools.site("main"), tenant=tenant),
        pooler=PoolerSpec(enabled=True, pool_size=2),
        password=password,
        client_password=new_password(),
        tls=pooler_tls_for("cleo-x"),
        namespace="cleo-x",
    )
    role = tenant_role_name(tenant)
    mounted = tmp_path / "pooler-ca"
    mounted.mkdir()
    env = workload_environment(
        values, role=role, role_password=password, site_ca=site_ca, mounted=mounted
    )
    assert env["PGHOST"] == "cleo-pooler.cleo-x.svc.cluster.local"
    assert env["PGSSLMODE"] == "verify-full"
    with running_pgbouncer(values) as pod:
        env.update({"PGHOSTADDR": pod.host, "PGPORT": str(pod.port)})
        for name, value in env.items():
            if name.startswith("PG"):
                monkeypatch.setenv(name, value)
        with psycopg.connect("", connect_timeout=5) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (role,)
            assert conn.pgconn.ssl_in_use
        with psycopg.connect(env["DATABASE_URL"], hostaddr=pod.host, port=pod.port) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.security
@pytest.mark.parametrize("impostor", ["another certificate", "another name"])
def test_a_pooler_answering_with_a_certificate_other_than_its_own_is_refused_by_the_workload(
    provisioned: tuple[SitePools, str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    impostor: str,
) -> None:
    # Whoever answers for the pooler's address with a certificate of its own (a man in the
    # middle) never completes TLS with the workload, so no login is sent; and the name is
    # checked too: a certificate trusted as root but made for another namespace's pooler
    # does not pass for this one.
    pools, tenant, password = provisioned
    client = new_password()

    def values_with(tls: PoolerTls) -> dict[str, str]:
        return pooler_config_values(
            target=pooler_target(pools.site("main"), tenant=tenant),
            pooler=PoolerSpec(enabled=True, pool_size=2),
            password=password,
            client_password=client,
            tls=tls,
            namespace="cleo-x",
        )

    served = pooler_tls_for("cleo-x" if impostor == "another certificate" else "cleo-y")
    ours = values_with(pooler_tls_for("cleo-x") if impostor == "another certificate" else served)
    mounted = tmp_path / "pooler-ca"
    mounted.mkdir()
    env = workload_environment(
        ours,
        role=tenant_role_name(tenant),
        role_password=password,
        site_ca=mounted / "ca.crt",
        mounted=mounted,
    )
    with running_pgbouncer(values_with(served)) as answerer:
        env.update({"PGHOSTADDR": answerer.host, "PGPORT": str(answerer.port)})
        for name, value in env.items():
            if name.startswith("PG"):
                monkeypatch.setenv(name, value)
        with pytest.raises(psycopg.OperationalError) as caught:
            psycopg.connect("", connect_timeout=5)
        expected = (
            "certificate verify failed"
            if impostor == "another certificate"
            else "does not match host name"
        )
        assert expected in str(caught.value)
        assert client not in str(caught.value)


@pytest.mark.security
def test_the_trusted_bundle_verifies_the_current_and_the_staged_certificate(
    provisioned: tuple[SitePools, str, str], tmp_path: Path
) -> None:
    # During a renewal the workload's mounted bundle holds both certificates: whichever a
    # pooler pod presents during the roll, libpq's verify-full accepts it; a third is refused.
    pools, tenant, password = provisioned
    role = tenant_role_name(tenant)
    client = new_password()
    current, staged, stranger = (pooler_tls_for("cleo-x") for _ in range(3))
    bundle = tmp_path / "ca.crt"
    bundle.write_text(current.cert_pem + staged.cert_pem)

    def values_with(tls: PoolerTls) -> dict[str, str]:
        return pooler_config_values(
            target=pooler_target(pools.site("main"), tenant=tenant),
            pooler=PoolerSpec(enabled=True, pool_size=2),
            password=password,
            client_password=client,
            tls=tls,
            namespace="cleo-x",
        )

    def connect_verifying(pod: PgBouncer) -> None:
        with psycopg.connect(
            host="cleo-pooler.cleo-x.svc.cluster.local",
            hostaddr=pod.host,
            port=pod.port,
            dbname=role,
            user=role,
            password=client,
            sslmode="verify-full",
            sslrootcert=str(bundle),
            connect_timeout=5,
        ) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)

    with running_pgbouncer(values_with(current)) as old_pod:
        with running_pgbouncer(values_with(staged)) as new_pod:
            connect_verifying(old_pod)
            connect_verifying(new_pod)
        with (
            running_pgbouncer(values_with(stranger)) as other,
            pytest.raises(psycopg.OperationalError, match="certificate verify failed"),
        ):
            connect_verifying(other)

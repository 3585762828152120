"""Which hop a failed check through the pooler names: each reason against a real pgbouncer
and a real PostgreSQL (`check_pooler_login`; ``PoolerReady``'s reason is the error's).

- ``PoolerUnreachable``: nothing answers at the pooler's address, or TLS to it fails;
- ``AuthenticationFailed``: the pooler refuses the client's credential (client -> pgbouncer);
- ``PoolerServerLoginFailed``: the pooler let the client in, but its own login to
  PostgreSQL fails (pgbouncer -> PostgreSQL: a stale role password, an unreachable site);
- ``PoolerBusy``: logged in, but the query got no server connection before the deadline.
"""

from __future__ import annotations

import datetime
import secrets
import socket
import threading
import time

import psycopg
import pytest

from cleo_operator.api.pooler import PoolerSpec
from cleo_operator.crypto.pooler_tls import issue_pooler_tls
from cleo_operator.data.errors import AuthenticationFailed, DataError
from cleo_operator.data.pool import SitePools
from cleo_operator.data.pooler import check_pooler_login
from cleo_operator.data.tenant_db import ensure_tenant_database, tenant_role_name
from cleo_operator.reconcile.pooler import pooler_target
from cleo_operator.render.pooler import pooler_config_values
from tests.harness.pgbouncer import PgBouncer, running_pgbouncer
from tests.harness.postgres import free_loopback_port

pytestmark = [pytest.mark.postgres]

TLS = issue_pooler_tls(
    now=datetime.datetime.now(datetime.UTC),
    service="cleo-pooler",
    namespace="cleo-x",
    cluster_domain="cluster.local",
)


def new_password() -> str:
    return secrets.token_urlsafe(32)


@pytest.fixture
def provisioned(postgres_site_pools: SitePools, tenant_name: str) -> tuple[SitePools, str, str]:
    password = new_password()
    ensure_tenant_database(
        postgres_site_pools, "main", tenant=tenant_name, password=password, connection_limit=20
    )
    return postgres_site_pools, tenant_name, password


def rendered(
    pools: SitePools, tenant: str, *, server_password: str, client: str, port: int | None = None
) -> dict[str, str]:
    target = pooler_target(pools.site("main"), tenant=tenant)
    if port is not None:
        target = target.__class__(**{**target.__dict__, "port": port})
    return pooler_config_values(
        target=target,
        pooler=PoolerSpec(enabled=True, pool_size=1),
        password=server_password,
        client_password=client,
        tls=TLS,
        namespace="cleo-x",
    )


def reason_of(bouncer: PgBouncer | tuple[str, int], tenant: str, client: str) -> DataError:
    host, port = (bouncer.host, bouncer.port) if isinstance(bouncer, PgBouncer) else bouncer
    role = tenant_role_name(tenant)
    with pytest.raises(DataError) as caught:
        check_pooler_login(
            host=host,
            port=port,
            dbname=role,
            user=role,
            password=client,
            timeout_seconds=2,
            server_cert_pem=TLS.cert_pem,
        )
    assert client not in str(caught.value)
    return caught.value


def test_nothing_at_the_poolers_address_is_unreachable(
    provisioned: tuple[SitePools, str, str],
) -> None:
    _, tenant, _ = provisioned
    error = reason_of(("127.0.0.1", free_loopback_port()), tenant, new_password())
    assert error.reason == "PoolerUnreachable"


def test_a_refused_client_credential_is_authentication_failed(
    provisioned: tuple[SitePools, str, str],
) -> None:
    pools, tenant, password = provisioned
    client = new_password()
    with running_pgbouncer(rendered(pools, tenant, server_password=password, client=client)) as b:
        error = reason_of(b, tenant, "x" + client[1:])
    assert isinstance(error, AuthenticationFailed)
    assert error.reason == "AuthenticationFailed"


@pytest.mark.security
@pytest.mark.parametrize("fault", ["stale role password", "site down"])
def test_the_poolers_own_login_to_the_site_is_server_login_failed(
    provisioned: tuple[SitePools, str, str], fault: str
) -> None:
    # The client's credential is right; what fails is pgbouncer's login to PostgreSQL. A
    # stale role password makes PostgreSQL answer "password authentication failed", which
    # pgbouncer passes on: it must not read as the client's credential being wrong.
    pools, tenant, password = provisioned
    client = new_password()
    values = (
        rendered(pools, tenant, server_password=new_password(), client=client)
        if fault == "stale role password"
        else rendered(
            pools, tenant, server_password=password, client=client, port=free_loopback_port()
        )
    )
    with running_pgbouncer(values) as bouncer:
        started = time.monotonic()
        first = reason_of(bouncer, tenant, client)
        assert time.monotonic() - started < 5
        assert first.reason == "PoolerServerLoginFailed", str(first)
        # And again, while pgbouncer holds back retries (server_login_retry).
        assert reason_of(bouncer, tenant, client).reason == "PoolerServerLoginFailed"
        assert password not in str(first)


@pytest.mark.security
def test_a_held_pool_is_busy_and_cancelled_in_the_checks_own_thread(
    provisioned: tuple[SitePools, str, str],
) -> None:
    pools, tenant, password = provisioned
    client = new_password()
    role = tenant_role_name(tenant)
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:  # every thread that exists while the check runs
        while not done.is_set():
            seen.update(t.name for t in threading.enumerate())
            time.sleep(0.01)

    with running_pgbouncer(rendered(pools, tenant, server_password=password, client=client)) as b:
        dsn = f"host={b.host} port={b.port} dbname={role} user={role} sslmode=require"
        with psycopg.connect(dsn, password=client) as holder:
            holder.execute("SELECT 1")  # idle in transaction: the only server connection
            before = {t.name for t in threading.enumerate()}
            watcher = threading.Thread(target=watch, name="watcher")
            watcher.start()
            started = time.monotonic()
            try:
                error = reason_of(b, tenant, client)
            finally:
                done.set()
                watcher.join()
            assert error.reason == "PoolerBusy"
            assert time.monotonic() - started < 2 + 1.5
            assert seen - before == {"watcher"}  # no timer or helper thread of the check's
            holder.rollback()


@pytest.mark.security
@pytest.mark.parametrize("method", ["plain", "md5"])
def test_an_answerer_that_asks_for_another_auth_method_is_refused_by_name(
    provisioned: tuple[SitePools, str, str], method: str
) -> None:
    # A real pgbouncer that asks for the password in clear (or MD5), as an impersonator
    # at the pooler's address would: libpq's require_auth refuses before anything of the
    # password is sent, and the reason says so (not PoolerUnreachable).
    pools, tenant, password = provisioned
    client = new_password()
    values = rendered(pools, tenant, server_password=password, client=client)
    values["pgbouncer.ini"] = values["pgbouncer.ini"].replace(
        "auth_type = scram-sha-256", f"auth_type = {method}"
    )
    assert f"auth_type = {method}" in values["pgbouncer.ini"]
    with running_pgbouncer(values) as bouncer:
        error = reason_of(bouncer, tenant, client)
    assert error.reason == "PoolerAuthMethodRefused", str(error)


@pytest.mark.security
def test_a_login_held_by_the_pooler_ends_at_the_checks_one_deadline(
    provisioned: tuple[SitePools, str, str],
) -> None:
    # The pooler's server answers nothing (a listening socket that never replies), so
    # pgbouncer holds the check's login. The check's one deadline covers the probe and the
    # login (libpq's connect_timeout is whole seconds, at least 2: not used), and the
    # wording blames neither hop (the probe and the login may reach different pods).
    pools, tenant, password = provisioned
    client = new_password()
    role = tenant_role_name(tenant)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        values = rendered(pools, tenant, server_password=password, client=client, port=port)
        with running_pgbouncer(values) as bouncer:
            started = time.monotonic()
            with pytest.raises(DataError) as caught:
                check_pooler_login(
                    host=bouncer.host,
                    port=bouncer.port,
                    dbname=role,
                    user=role,
                    password=client,
                    timeout_seconds=1,
                    server_cert_pem=TLS.cert_pem,
                )
            elapsed = time.monotonic() - started
    assert elapsed < 1.6, elapsed
    assert caught.value.reason == "PoolerServerLoginFailed"
    assert "the pooler pod itself, or its own login" in str(caught.value)

"""The pooler's auth file across a rotation and across the operator upgrade that brought the
client credential and client TLS: continuous client logins, through the old and the new
pooler pod at once (as the Service spreads them during a roll), never fail.

Real ``pgbouncer`` processes play the old and the new pod; the configurations are what the
operator renders; the tenant's role is made by the operator's data layer.
"""

from __future__ import annotations

import datetime
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from cleo_operator.api.pooler import PoolerSpec
from cleo_operator.crypto.pooler_tls import issue_pooler_tls
from cleo_operator.data.pool import SitePools
from cleo_operator.data.tenant_db import ensure_tenant_database, tenant_role_name
from cleo_operator.reconcile.pooler import pooler_target
from cleo_operator.render.pooler import (
    CLIENT_CA_KEY,
    INI_KEY,
    USERLIST_KEY,
    pooler_config_values,
    userlist_password,
)
from tests.harness.pgbouncer import PgBouncer, running_pgbouncer

pytestmark = [pytest.mark.postgres]

POOLER = PoolerSpec(enabled=True, pool_size=4)
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
        postgres_site_pools, "main", tenant=tenant_name, password=password, connection_limit=30
    )
    return postgres_site_pools, tenant_name, password


class Logins:
    """Clients logging in and querying in a loop, each through every pod in turn, until
    stopped; every failure is kept."""

    def __init__(self, clients: list[Callable[[PgBouncer], None]]) -> None:
        self.clients = clients
        self.pods: list[PgBouncer] = []
        self.done = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Logins:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop logging in (before the last pod is stopped: that is not a roll)."""
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pod in list(self.pods):
                for client in self.clients:
                    try:
                        client(pod)
                        self.done += 1
                    except psycopg.Error as error:
                        self.failures.append(f"{pod.port}: {error}")
            time.sleep(0.02)

    def wait(self, count: int) -> None:
        """Until `count` more logins went through (bounded)."""
        target = self.done + count
        deadline = time.monotonic() + 20
        while self.done < target and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.done >= target, self.failures[:3]


def plain_client(role: str, password: str) -> Callable[[PgBouncer], None]:
    """A workload pod of the operator before client TLS: in the clear, the role's password."""

    def login(pod: PgBouncer) -> None:
        dsn = f"host={pod.host} port={pod.port} dbname={role} user={role} sslmode=disable"
        with psycopg.connect(dsn, password=password, connect_timeout=5) as conn:
            conn.execute("SELECT 1")

    return login


def verifying_client(
    role: str, password: str, root: Path, host: str
) -> Callable[[PgBouncer], None]:
    """A workload pod as rendered now: verify-full against the pooler's certificate."""

    def login(pod: PgBouncer) -> None:
        with psycopg.connect(
            host=host,
            hostaddr=pod.host,
            port=pod.port,
            dbname=role,
            user=role,
            password=password,
            sslmode="verify-full",
            sslrootcert=str(root),
            connect_timeout=5,
        ) as conn:
            conn.execute("SELECT 1")

    return login


@pytest.mark.security
def test_continuous_logins_never_fail_across_a_rotation(
    postgres_site_pools: SitePools, provisioned: tuple[SitePools, str, str], tmp_path: Path
) -> None:
    pools, tenant, old = provisioned
    role = tenant_role_name(tenant)
    client = new_password()
    target = pooler_target(pools.site("main"), tenant=tenant)

    def rendered(password: str) -> dict[str, str]:
        return pooler_config_values(
            target=target,
            pooler=POOLER,
            password=password,
            namespace="cleo-x",
            client_password=client,
            tls=TLS,
        )

    before = rendered(old)
    root = tmp_path / "ca.crt"
    root.write_text(before[CLIENT_CA_KEY])
    host = "cleo-pooler.cleo-x.svc.cluster.local"
    with (
        running_pgbouncer(before) as old_pod,
        Logins([verifying_client(role, client, root, host)]) as logins,
    ):
        logins.pods = [old_pod]
        logins.wait(5)
        new = new_password()
        ensure_tenant_database(
            postgres_site_pools, "main", tenant=tenant, password=new, connection_limit=30
        )
        after = rendered(new)
        assert after[USERLIST_KEY] == before[USERLIST_KEY]  # the clients' file is the same
        assert after[INI_KEY] != before[INI_KEY]  # the server login is not: the pooler rolls
        with running_pgbouncer(after) as new_pod:
            logins.pods = [old_pod, new_pod]  # the roll: both pods behind the Service
            logins.wait(20)
            logins.pods = [new_pod]  # the old pod goes
            logins.wait(5)
            logins.stop()
    assert logins.failures == []


@pytest.mark.security
def test_continuous_logins_never_fail_across_the_upgrade_to_client_credentials_and_tls(
    provisioned: tuple[SitePools, str, str], tmp_path: Path
) -> None:
    # Before the upgrade, the pooler's auth file held the role's password, which the
    # workload's pods send in the clear. The upgraded operator keeps that password as the
    # client credential (from the auth file) and lets plain clients in while such pods run.
    pools, tenant, password = provisioned
    role = tenant_role_name(tenant)
    target = pooler_target(pools.site("main"), tenant=tenant)
    old_form = pooler_config_values(
        target=target, pooler=POOLER, password=password, namespace="cleo-x"
    )
    old_form.pop("CLIENT_PASSWORD")  # the old Secret had none
    kept = userlist_password(old_form[USERLIST_KEY], user=role)
    assert kept == password

    def upgraded(*, plain_clients: bool) -> dict[str, str]:
        return pooler_config_values(
            target=target,
            pooler=POOLER,
            password=password,
            namespace="cleo-x",
            client_password=kept,
            tls=TLS,
            plain_clients=plain_clients,
        )

    during, after = upgraded(plain_clients=True), upgraded(plain_clients=False)
    assert during[USERLIST_KEY] == old_form[USERLIST_KEY]
    root = tmp_path / "ca.crt"
    root.write_text(during[CLIENT_CA_KEY])
    old_client = plain_client(role, password)
    new_client = verifying_client(role, password, root, "cleo-pooler.cleo-x.svc.cluster.local")
    with running_pgbouncer(old_form) as old_pod, Logins([old_client]) as logins:
        logins.pods = [old_pod]
        logins.wait(5)
        # The pooler rolls onto the upgraded configuration while old workload pods run;
        # then the workload rolls too: old and new clients, on old and new pooler pods.
        with running_pgbouncer(during) as new_pod:
            logins.pods = [old_pod, new_pod]
            logins.wait(10)
            logins.clients = [old_client, new_client]
            logins.pods = [new_pod]
            logins.wait(10)
            logins.clients = [new_client]  # the old workload pods are gone
            logins.wait(5)
            logins.stop()
    assert logins.failures == []
    # Then the pooler requires TLS again, and a plain client is refused.
    with running_pgbouncer(after) as pod:
        new_client(pod)
        with pytest.raises(psycopg.OperationalError):
            old_client(pod)

"""The failover fence against a pooler that holds server connections to the old primary.

A pooler keeps its server connections open between clients (that is its point), so the
question a failover must answer is whether those connections let writes reach a fenced
primary. What runs: the operator's rendered PgBouncer configuration in a real
``pgbouncer`` (tests/harness/pgbouncer.py), the tenant's role and database made by the
operator's data layer on the session's PostgreSQL server, and the failover's own
`fence_tenant` on that server. Both pool modes are judged: transaction pooling keeps idle
server connections in the pool, session pooling keeps one open under a client.
"""

from __future__ import annotations

import secrets
import threading
from typing import Any

import psycopg
import pytest

from cleo_operator.api.pooler import PoolerSpec
from cleo_operator.data.pool import SitePools
from cleo_operator.data.tenant_db import ensure_tenant_database, tenant_role_name
from cleo_operator.failover.fencing import fence_tenant
from cleo_operator.reconcile.pooler import pooler_target
from cleo_operator.render.pooler import pooler_config_values
from tests.harness.pgbouncer import PgBouncer, running_pgbouncer
from tests.harness.postgres import PostgresServer
from tests.integration.tenant_database_support import connect_with_secret

pytestmark = [pytest.mark.postgres]


def connect(bouncer: PgBouncer, tenant: str, password: str) -> psycopg.Connection[Any]:
    """A client of the pooler, as a workload pod connects (no TLS to the pooler)."""
    role = tenant_role_name(tenant)
    values = {"PGHOST": bouncer.host, "PGPORT": str(bouncer.port), "PGSSLMODE": "disable"}
    return connect_with_secret(
        {**values, "PGDATABASE": role, "PGUSER": role, "PGPASSWORD": password}
    )


class Write:
    """An INSERT on `conn` in a thread of its own; `outcome` its error, or None if it ran."""

    def __init__(self, conn: psycopg.Connection[Any], value: int) -> None:
        self.conn = conn
        self.outcome: list[BaseException | None] = []
        self.thread = threading.Thread(target=self._run, args=(value,), daemon=True)
        self.thread.start()

    def _run(self, value: int) -> None:
        try:
            self.conn.execute("INSERT INTO notes VALUES (%s)", (value,))
            self.outcome.append(None)
        except psycopg.Error as exc:
            self.outcome.append(exc)


def server_sessions(server: PostgresServer, tenant: str) -> int:
    row = server.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (tenant_role_name(tenant),)
    )
    return int(row[0][0])


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_a_pooler_s_open_server_connections_do_not_get_writes_past_the_fence(
    mode: str,
    postgres_server: PostgresServer,
    postgres_site_pools: SitePools,
    tenant_name: str,
) -> None:
    tenant, password = tenant_name, secrets.token_urlsafe(32)
    ensure_tenant_database(
        postgres_site_pools, "main", tenant=tenant, password=password, connection_limit=10
    )
    target = pooler_target(postgres_site_pools.site("main"), tenant=tenant)
    files = pooler_config_values(
        target=target,
        pooler=PoolerSpec(enabled=True, mode=mode, pool_size=3),
        password=password,
        namespace="cleo-x",
    )
    database = target.dbname
    with running_pgbouncer(files) as bouncer:
        held = connect(bouncer, tenant, password)
        held.execute("CREATE TABLE notes (id int)")
        held.execute("INSERT INTO notes VALUES (1)")
        # The pooler holds a server connection to the primary (in the pool, or under
        # the held client in session mode).
        assert server_sessions(postgres_server, tenant) >= 1

        fenced = fence_tenant(postgres_site_pools, "main", tenant=tenant)
        assert fenced.sessions_ended >= 1
        assert server_sessions(postgres_server, tenant) == 0

        # Neither the client that was connected nor a new one gets a write through. The
        # pooler cannot open a server connection (NOLOGIN); PgBouncer keeps such a client
        # waiting while it retries the login (query_wait_timeout, 120 s by default), so the
        # writes are judged while they wait, and must fail when the pooler goes.
        writes = [Write(held, 2), Write(connect(bouncer, tenant, password), 3)]
        for write in writes:
            write.thread.join(timeout=3.0)
        assert server_sessions(postgres_server, tenant) == 0
        assert all(w.outcome != [None] for w in writes), "a write reached the fenced primary"
    for write in writes:
        write.thread.join(timeout=10.0)
        (failed,) = write.outcome
        assert failed is not None, "a write went through"
        write.conn.close()

    rows = postgres_server.execute("SELECT id FROM notes ORDER BY id", dbname=database)
    assert [r[0] for r in rows] == [1]

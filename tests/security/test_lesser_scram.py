"""A tenant's role plants a SCRAM verifier with 2^31-1 iterations: the operator must not bite.

PostgreSQL lets every role set its own password, verifier included (``ALTER ROLE me
PASSWORD 'SCRAM-SHA-256$<iterations>:...'``). The operator compares the stored verifier
with the password of the credentials Secret on every reconcile; deriving PBKDF2 with
the tenant's count would take the operator's CPU for half an hour per reconcile and hold
the site's lane. The operator only ever derives with its own count: any other verifier
does not match, and the password is reset to the Secret's.
"""

from __future__ import annotations

import base64
import logging
import secrets
import threading
import time

import psycopg
import pytest
from psycopg import sql

from cleo_operator.data.pool import SitePools
from cleo_operator.data.scram import SCRAM_ITERATIONS
from cleo_operator.data.tenant_db import (
    check_tenant_connection,
    ensure_tenant_database,
    tenant_database_name,
    tenant_role_name,
)
from cleo_operator.kube.client import KubeClient
from cleo_operator.reconcile.database import TenantDatabases
from tests.harness.postgres import PostgresServer
from tests.integration.tenant_database_support import (
    Tenant,
    connect_with_secret,
    databases_fixture,
    drop_tenant_objects,
    namespace,
    reconcile,
    secret_of,
    secret_values,
    unique,
)

pytestmark = [pytest.mark.security, pytest.mark.postgres]

BOMB_ITERATIONS = 2**31 - 1
CHECK_BUDGET_SECONDS = 1.0
"""A reconcile's password check with the operator's 4096 iterations takes milliseconds."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def bomb_verifier(iterations: int = BOMB_ITERATIONS) -> str:
    """A well-formed SCRAM-SHA-256 verifier with a huge iteration count."""
    return (
        f"SCRAM-SHA-256${iterations}:{_b64(secrets.token_bytes(16))}"
        f"${_b64(secrets.token_bytes(32))}:{_b64(secrets.token_bytes(32))}"
    )


def role_state(server: PostgresServer, role: str) -> tuple[object, ...]:
    rows = server.execute(
        """
        SELECT rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin,
               rolreplication, rolbypassrls, rolconnlimit,
               ARRAY(SELECT b.rolname FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid
                      WHERE m.member = r.oid ORDER BY 1)
          FROM pg_roles r WHERE rolname = %s
        """,
        (role,),
    )
    return rows[0]


def all_roles(server: PostgresServer) -> set[str]:
    return {row[0] for row in server.execute("SELECT rolname FROM pg_roles")}


def stored_verifier(server: PostgresServer, role: str) -> str:
    rows = server.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,))
    return str(rows[0][0])


def ensure_bounded(pools: SitePools, tenant: str, password: str) -> float:
    """Run the reconcile's database step in a daemon thread; fail if it is not quick.

    A thread, so that a vulnerable operator fails this test after a few seconds instead
    of holding the test run for half an hour (the thread dies with the process).
    """
    done = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            ensure_tenant_database(
                pools, "main", tenant=tenant, password=password, connection_limit=5
            )
        except BaseException as error:  # reported by the test below
            errors.append(error)
        finally:
            done.set()

    started = time.monotonic()
    threading.Thread(target=run, name="ensure-under-attack", daemon=True).start()
    finished = done.wait(timeout=10.0)
    elapsed = time.monotonic() - started
    assert finished, (
        f"the reconcile's password check did not finish within 10s: the operator derived "
        f"PBKDF2 with the tenant's {BOMB_ITERATIONS} iterations"
    )
    assert not errors, errors
    return elapsed


def test_tenant_iteration_bomb_is_reset_not_derived(
    postgres_site_pools: SitePools,
    postgres_server: PostgresServer,
    tenant_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    password = "pw-" + secrets.token_urlsafe(24)
    role = tenant_role_name(tenant_name)
    ensure_tenant_database(
        postgres_site_pools, "main", tenant=tenant_name, password=password, connection_limit=5
    )
    before_role = role_state(postgres_server, role)
    before_roles = all_roles(postgres_server)

    # The attack: the tenant, logged in with its own credentials, sets a verifier with an
    # iteration count of its choosing (PostgreSQL lets any role set its own password,
    # verifier included). The server itself derives PBKDF2 once when it accepts one (its
    # empty-password check), so 2^31-1 takes the tenant's own backend ~25 minutes: the
    # tenant does it with 2^20 here, and the bomb's row is then written directly (as
    # the tenant's statement would have left it when done).
    tenant_count = 2**20
    with psycopg.connect(
        postgres_server.dsn(tenant_database_name(tenant_name), user=role, password=password),
        autocommit=True,
    ) as tenant_conn:
        tenant_conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(bomb_verifier(tenant_count))
            )
        )
    assert stored_verifier(postgres_server, role).startswith(f"SCRAM-SHA-256${tenant_count}:")
    with caplog.at_level(logging.INFO, logger="cleo_operator"):
        elapsed = ensure_bounded(postgres_site_pools, tenant_name, password)
    assert elapsed < CHECK_BUDGET_SECONDS, f"took {elapsed:.2f}s"
    assert stored_verifier(postgres_server, role).startswith(f"SCRAM-SHA-256${SCRAM_ITERATIONS}:")

    postgres_server.execute(
        "UPDATE pg_authid SET rolpassword = %s WHERE rolname = %s", (bomb_verifier(), role)
    )
    assert stored_verifier(postgres_server, role).startswith(f"SCRAM-SHA-256${BOMB_ITERATIONS}:")

    with caplog.at_level(logging.INFO, logger="cleo_operator"):
        elapsed = ensure_bounded(postgres_site_pools, tenant_name, password)

    assert elapsed < CHECK_BUDGET_SECONDS, f"took {elapsed:.2f}s"
    # The operator's own verifier is back: the tenant's count was never used.
    assert stored_verifier(postgres_server, role).startswith(f"SCRAM-SHA-256${SCRAM_ITERATIONS}:")
    # The tenant logs in with the credentials the operator hands out.
    check_tenant_connection(postgres_site_pools.site("main"), tenant=tenant_name, password=password)
    # Nothing else changed: same attributes and memberships, no new role.
    assert role_state(postgres_server, role) == before_role
    assert all_roles(postgres_server) == before_roles
    # The reset is logged, without the password or the planted verifier.
    text = caplog.text
    assert "verifier" in text
    assert role in text
    assert str(BOMB_ITERATIONS) in text
    assert password not in text


def test_second_reconcile_after_reset_is_a_no_op(
    postgres_site_pools: SitePools, postgres_server: PostgresServer, tenant_name: str
) -> None:
    password = "pw-" + secrets.token_urlsafe(24)
    role = tenant_role_name(tenant_name)
    ensure_tenant_database(
        postgres_site_pools, "main", tenant=tenant_name, password=password, connection_limit=5
    )
    postgres_server.execute(
        "UPDATE pg_authid SET rolpassword = %s WHERE rolname = %s",
        (bomb_verifier(SCRAM_ITERATIONS + 1), role),
    )
    first = ensure_tenant_database(
        postgres_site_pools, "main", tenant=tenant_name, password=password, connection_limit=5
    )
    assert "set the role's password" in first.changes
    second = ensure_tenant_database(
        postgres_site_pools, "main", tenant=tenant_name, password=password, connection_limit=5
    )
    assert second.changes == ()


# --------------------------------------------------------------------------- the reconcile


databases = databases_fixture("scram-operator", wait_seconds=5.0)


@pytest.mark.cluster
def test_a_reconcile_under_the_bomb_is_quick_and_restores_the_secrets_password(
    kube: KubeClient, databases: TenantDatabases, postgres_server: PostgresServer
) -> None:
    tenant = Tenant(kube, unique("t"), {"database": {"enabled": True, "site": "main"}})
    role = tenant_role_name(tenant.name)
    try:
        with namespace(kube) as ns:
            first = reconcile(databases, tenant, ns)
            assert first.condition is not None
            assert first.condition.reason == "Connected"
            values = secret_values(secret_of(kube, ns))
            before_role = role_state(postgres_server, role)
            before_roles = all_roles(postgres_server)
            postgres_server.execute(
                "UPDATE pg_authid SET rolpassword = %s WHERE rolname = %s", (bomb_verifier(), role)
            )

            started = time.monotonic()
            outcome = reconcile(databases, tenant, ns)
            elapsed = time.monotonic() - started

            assert not outcome.in_progress, "the site's lane is still busy with the verifier"
            assert elapsed < 3.0, f"the reconcile took {elapsed:.2f}s"
            assert outcome.condition is not None
            assert (outcome.condition.status, outcome.condition.reason) == ("True", "Connected")
            assert not outcome.secret_written  # the Secret's password is the truth: kept
            assert secret_values(secret_of(kube, ns)) == values
            assert stored_verifier(postgres_server, role).startswith(
                f"SCRAM-SHA-256${SCRAM_ITERATIONS}:"
            )
            with connect_with_secret(values) as conn:
                assert conn.execute("SELECT current_user").fetchone() == (role,)
            assert role_state(postgres_server, role) == before_role
            assert all_roles(postgres_server) == before_roles
    finally:
        tenant.delete()
        drop_tenant_objects(postgres_server, tenant.name)

"""Tenant databases on a real PostgreSQL server: isolation, idempotency, rotation, drop."""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable, Iterator
from urllib.parse import unquote, urlsplit

import psycopg
import pytest
from psycopg import sql

from cleo_operator.data.errors import (
    AuthenticationFailed,
    InvalidDatabaseSettings,
    NameCollision,
    PermissionDenied,
    TenantDatabaseMissing,
)
from cleo_operator.data.pool import SitePools
from cleo_operator.data.sites import AdminCredentials, SiteConfig
from cleo_operator.data.tenant_db import (
    check_tenant_connection,
    database_url,
    drop_tenant_database,
    ensure_tenant_database,
    set_tenant_password,
    tenant_database_name,
    tenant_role_name,
)
from tests.harness.postgres import PostgresServer

pytestmark = pytest.mark.postgres


def new_password() -> str:
    # Characters that need quoting in SQL and escaping in URLs, on purpose.
    return "pw'" + secrets.token_urlsafe(18) + "@:/?#%"


@pytest.fixture
def other_tenant(postgres_server: PostgresServer) -> Iterator[str]:
    """A second tenant name, cleaned up like ``tenant_name``."""
    name = f"u-{secrets.token_hex(4)}"
    yield name
    ident = tenant_database_name(name)
    postgres_server.execute(
        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(ident))
    )
    postgres_server.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ident)))


@pytest.fixture
def admin_role(postgres_server: PostgresServer) -> Iterator[Callable[[str, str], AdminCredentials]]:
    """`admin_role(prefix, attributes)`: a new login role with the SQL role `attributes`
    (say "CREATEDB CREATEROLE") and a random password, to be a site's admin; each one is
    dropped after the test."""
    made: list[str] = []

    def make(prefix: str, attributes: str) -> AdminCredentials:
        name, password = f"{prefix}_{secrets.token_hex(4)}", secrets.token_urlsafe(16)
        postgres_server.execute(
            sql.SQL("CREATE ROLE {} LOGIN {} PASSWORD {}").format(
                sql.Identifier(name), sql.SQL(attributes), sql.Literal(password)
            )
        )
        made.append(name)
        return AdminCredentials(user=name, password=password)

    yield make
    for name in made:
        postgres_server.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture
def statement_log(postgres_server: PostgresServer) -> Iterator[Callable[[], str]]:
    """The server logs every statement during the test; the callable returns what it logged
    since the test began."""
    offset = postgres_server.log_file.stat().st_size
    postgres_server.execute("ALTER SYSTEM SET log_statement = 'all'")
    postgres_server.execute("SELECT pg_reload_conf()")

    def read() -> str:
        with postgres_server.log_file.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    yield read
    postgres_server.execute("ALTER SYSTEM RESET log_statement")
    postgres_server.execute("SELECT pg_reload_conf()")


def site_of(pools: SitePools) -> SiteConfig:
    return pools.site("main")


def connect_as_tenant(
    server: PostgresServer, *, tenant: str, password: str, database: str | None = None
) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host=server.host,
        port=server.port,
        user=tenant_role_name(tenant),
        password=password,
        dbname=database or tenant_database_name(tenant),
        connect_timeout=5,
        autocommit=True,
    )


@pytest.mark.security
def test_two_tenants_are_isolated(
    postgres_server: PostgresServer,
    postgres_site_pools: SitePools,
    tenant_name: str,
    other_tenant: str,
) -> None:
    pw_a, pw_b = new_password(), new_password()
    ensure_tenant_database(
        postgres_site_pools, "main", tenant=tenant_name, password=pw_a, connection_limit=10
    )
    ensure_tenant_database(
        postgres_site_pools, "main", tenant=other_tenant, password=pw_b, connection_limit=10
    )
    # B keeps a secret table in its own database.
    with connect_as_tenant(postgres_server, tenant=other_tenant, password=pw_b) as conn_b:
        conn_b.execute("CREATE TABLE memories (secret text)")
        conn_b.execute("INSERT INTO memories VALUES ('only for b')")

    # A works in its own database: connects, creates, reads.
    with connect_as_tenant(postgres_server, tenant=tenant_name, password=pw_a) as conn_a:
        conn_a.execute("CREATE TABLE notes (x int)")
        conn_a.execute("INSERT INTO notes VALUES (1)")
        assert conn_a.execute("SELECT x FROM notes").fetchall() == [(1,)]

    # A cannot get into B's database: PUBLIC has no CONNECT there.
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        connect_as_tenant(
            postgres_server,
            tenant=tenant_name,
            password=pw_a,
            database=tenant_database_name(other_tenant),
        )
    # Nor with B's role name and A's password, nor via the typed check.
    with pytest.raises(AuthenticationFailed):
        check_tenant_connection(site_of(postgres_site_pools), tenant=other_tenant, password=pw_a)
    check_tenant_connection(site_of(postgres_site_pools), tenant=tenant_name, password=pw_a)

    # Even the superuser's view confirms: no PUBLIC privilege, A has none on B's objects.
    db_b = tenant_database_name(other_tenant)
    role_a = tenant_role_name(tenant_name)
    rows = postgres_server.execute(
        "SELECT has_database_privilege('public', %s, 'CONNECT'),"
        " has_database_privilege('public', %s, 'TEMPORARY'),"
        " has_database_privilege(%s, %s, 'CONNECT')",
        (db_b, db_b, role_a, db_b),
    )
    assert rows == [(False, False, False)]
    table_rows = postgres_server.execute(
        "SELECT has_table_privilege(%s, 'memories', 'SELECT')", (role_a,), dbname=db_b
    )
    assert table_rows == [(False,)]


def test_role_and_database_are_as_specified(
    postgres_server: PostgresServer, postgres_site_pools: SitePools, tenant_name: str
) -> None:
    password = new_password()
    result = ensure_tenant_database(
        postgres_site_pools, "main", tenant=tenant_name, password=password, connection_limit=7
    )
    role = tenant_role_name(tenant_name)
    database = tenant_database_name(tenant_name)
    assert result.database == database == "cleo_" + tenant_name.replace("-", "_")
    assert result.changed
    assert postgres_server.execute(
        "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication,"
        " rolbypassrls, rolconnlimit, shobj_description(oid, 'pg_authid'),"
        " left(rolpassword, 14)"
        " FROM pg_authid WHERE rolname = %s",
        (role,),
    ) == [
        (True, False, False, False, False, False, 7, f"cleo-operator tenant={tenant_name}",
         "SCRAM-SHA-256$"),
    ]  # fmt: skip
    assert postgres_server.execute(
        "SELECT pg_get_userbyid(datdba), shobj_description(oid, 'pg_database'),"
        " pg_encoding_to_char(encoding)"
        " FROM pg_database WHERE datname = %s",
        (database,),
    ) == [(role, f"cleo-operator tenant={tenant_name}", "UTF8")]
    assert postgres_server.execute(
        "SELECT pg_get_userbyid(nspowner), has_schema_privilege('public', oid, 'CREATE')"
        " FROM pg_namespace WHERE nspname = 'public'",
        dbname=database,
    ) == [(role, False)]


def test_second_ensure_changes_nothing(
    postgres_server: PostgresServer, postgres_site_pools: SitePools, tenant_name: str
) -> None:
    password = new_password()
    first = ensure_tenant_database(
        postgres_site_pools, "main", tenant=tenant_name, password=password, connection_limit=5
    )
    assert "created the role" in first.changes
    assert "created the database" in first.changes
    verifier_before = postgres_server.execute(
        "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (tenant_role_name(tenant_name),)
    )
    second = ensure_tenant_database(
        postgres_site_pools, "main", tenant=tenant_name, password=password, connection_limit=5
    )
    assert second.changes == ()
    assert not second.changed
    # Not even the password was rewritten (a new salt would change the verifier).
    assert (
        postgres_server.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s",
            (tenant_role_name(tenant_name),),
        )
        == verifier_before
    )


def test_drift_converges(
    postgres_server: PostgresServer, postgres_site_pools: SitePools, tenant_name: str
) -> None:
    password = new_password()
    ensure_tenant_database(
        postgres_site_pools, "main", tenant=tenant_name, password=password, connection_limit=5
    )
    role, database = tenant_role_name(tenant_name), tenant_database_name(tenant_name)
    # Someone loosens things by hand.
    postgres_server.execute(sql.SQL("ALTER ROLE {} CREATEDB").format(sql.Identifier(role)))
    postgres_server.execute(
        sql.SQL("GRANT CONNECT ON DATABASE {} TO PUBLIC").format(sql.Identifier(database))
    )
    postgres_server.execute("GRANT CREATE ON SCHEMA public TO PUBLIC", dbname=database)

    result = ensure_tenant_database(
        postgres_site_pools, "main", tenant=tenant_name, password=password, connection_limit=12
    )
    assert set(result.changes) == {
        "reset the role's attributes",
        "changed the connection limit from 5 to 12",
        "revoked PUBLIC's privileges on the database",
        "revoked CREATE on schema public from PUBLIC",
    }
    assert postgres_server.execute(
        "SELECT rolcreatedb, rolconnlimit FROM pg_roles WHERE rolname = %s", (role,)
    ) == [(False, 12)]
    assert postgres_server.execute(
        "SELECT has_database_privilege('public', %s, 'CONNECT')", (database,)
    ) == [(False,)]
    assert postgres_server.execute(
        "SELECT has_schema_privilege('public', 'public', 'CREATE')", dbname=database
    ) == [(False,)]
    # And the next run finds nothing to do.
    again = ensure_tenant_database(
        postgres_site_pools, "main", tenant=tenant_name, password=password, connection_limit=12
    )
    assert again.changes == ()


def test_connection_limit_is_enforced(
    postgres_server: PostgresServer, postgres_site_pools: SitePools, tenant_name: str
) -> None:
    password = new_password()
    ensure_tenant_database(
        postgres_site_pools, "main", tenant=tenant_name, password=password, connection_limit=1
    )
    with (
        connect_as_tenant(postgres_server, tenant=tenant_name, password=password),
        pytest.raises(psycopg.OperationalError, match="too many connections for role"),
    ):
        connect_as_tenant(postgres_server, tenant=tenant_name, password=password)


def test_rotation_new_password_works_old_fails(
    postgres_server: PostgresServer, postgres_site_pools: SitePools, tenant_name: str
) -> None:
    old, new = new_password(), new_password()
    ensure_tenant_database(
        postgres_site_pools, "main", tenant=tenant_name, password=old, connection_limit=5
    )
    site = site_of(postgres_site_pools)
    check_tenant_connection(site, tenant=tenant_name, password=old)

    set_tenant_password(postgres_site_pools, "main", tenant=tenant_name, password=new)

    check_tenant_connection(site, tenant=tenant_name, password=new)
    with pytest.raises(AuthenticationFailed) as caught:
        check_tenant_connection(site, tenant=tenant_name, password=old)
    assert caught.value.reason == "AuthenticationFailed"
    # ensure with the new password is a no-op; with another password it converges.
    assert (
        ensure_tenant_database(
            postgres_site_pools, "main", tenant=tenant_name, password=new, connection_limit=5
        ).changes
        == ()
    )
    third = new_password()
    result = ensure_tenant_database(
        postgres_site_pools, "main", tenant=tenant_name, password=third, connection_limit=5
    )
    assert result.changes == ("set the role's password",)
    check_tenant_connection(site, tenant=tenant_name, password=third)


def test_non_ascii_password_logs_in(postgres_site_pools: SitePools, tenant_name: str) -> None:
    # Exercises the SASLprep path of the client-side SCRAM verifier (NFKC, mapped spaces).
    password = "Pässwörd\u00a0ﬁ-" + secrets.token_hex(4)
    ensure_tenant_database(
        postgres_site_pools, "main", tenant=tenant_name, password=password, connection_limit=5
    )
    check_tenant_connection(site_of(postgres_site_pools), tenant=tenant_name, password=password)


def test_database_url_connects(postgres_site_pools: SitePools, tenant_name: str) -> None:
    password = new_password()
    ensure_tenant_database(
        postgres_site_pools, "main", tenant=tenant_name, password=password, connection_limit=5
    )
    url = database_url(site_of(postgres_site_pools), tenant=tenant_name, password=password)
    parts = urlsplit(url)
    assert unquote(parts.password or "") == password
    assert "'" not in (parts.password or "")  # encoded, not raw
    with psycopg.connect(url, connect_timeout=5) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == (
            tenant_role_name(tenant_name),
            tenant_database_name(tenant_name),
        )


def test_drop_removes_database_and_role(
    postgres_server: PostgresServer, postgres_site_pools: SitePools, tenant_name: str
) -> None:
    password = new_password()
    ensure_tenant_database(
        postgres_site_pools, "main", tenant=tenant_name, password=password, connection_limit=5
    )
    # An open session of the tenant does not block the drop.
    with contextlib.closing(
        connect_as_tenant(postgres_server, tenant=tenant_name, password=password)
    ):
        result = drop_tenant_database(postgres_site_pools, "main", tenant=tenant_name)
    assert (result.dropped_database, result.dropped_role) == (True, True)
    name = tenant_database_name(tenant_name)
    assert postgres_server.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)) == []
    assert postgres_server.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)) == []
    with pytest.raises((AuthenticationFailed, TenantDatabaseMissing)):
        check_tenant_connection(site_of(postgres_site_pools), tenant=tenant_name, password=password)
    # Dropping again is a no-op, not an error.
    again = drop_tenant_database(postgres_site_pools, "main", tenant=tenant_name)
    assert (again.dropped_database, again.dropped_role) == (False, False)


def test_foreign_database_is_a_name_collision_and_untouched(
    postgres_server: PostgresServer, postgres_site_pools: SitePools, tenant_name: str
) -> None:
    name = tenant_database_name(tenant_name)
    postgres_server.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    postgres_server.execute("CREATE TABLE precious (x int)", dbname=name)
    postgres_server.execute("INSERT INTO precious VALUES (42)", dbname=name)
    acl_before = postgres_server.execute(
        "SELECT datacl::text, pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
        (name,),
    )

    with pytest.raises(NameCollision) as caught:
        ensure_tenant_database(
            postgres_site_pools,
            "main",
            tenant=tenant_name,
            password=new_password(),
            connection_limit=5,
        )
    assert caught.value.reason == "NameCollision"
    assert name in str(caught.value)
    with pytest.raises(NameCollision):
        drop_tenant_database(postgres_site_pools, "main", tenant=tenant_name)

    # The foreign database is exactly as it was, with its data.
    assert (
        postgres_server.execute(
            "SELECT datacl::text, pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
            (name,),
        )
        == acl_before
    )
    assert postgres_server.execute("SELECT x FROM precious", dbname=name) == [(42,)]
    assert postgres_server.execute(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
        (name,),
    ) == [(None,)]


def test_foreign_role_is_a_name_collision_and_untouched(
    postgres_server: PostgresServer, postgres_site_pools: SitePools, tenant_name: str
) -> None:
    role = tenant_role_name(tenant_name)
    postgres_server.execute(
        sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT 3").format(sql.Identifier(role))
    )
    with pytest.raises(NameCollision, match="role"):
        ensure_tenant_database(
            postgres_site_pools,
            "main",
            tenant=tenant_name,
            password=new_password(),
            connection_limit=5,
        )
    with pytest.raises(NameCollision):
        set_tenant_password(postgres_site_pools, "main", tenant=tenant_name, password="x-y-z")
    assert postgres_server.execute(
        "SELECT rolconnlimit, rolpassword FROM pg_authid WHERE rolname = %s", (role,)
    ) == [(3, None)]
    # Nothing was created next to it either.
    assert (
        postgres_server.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (tenant_database_name(tenant_name),)
        )
        == []
    )


def test_another_tenants_mark_is_a_collision(
    postgres_server: PostgresServer, postgres_site_pools: SitePools, tenant_name: str
) -> None:
    role = tenant_role_name(tenant_name)
    postgres_server.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    postgres_server.execute(
        sql.SQL("COMMENT ON ROLE {} IS 'cleo-operator tenant=someone-else'").format(
            sql.Identifier(role)
        )
    )
    with pytest.raises(NameCollision, match="someone-else"):
        drop_tenant_database(postgres_site_pools, "main", tenant=tenant_name)
    assert postgres_server.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)) == [(1,)]


def test_password_never_in_errors_or_logs(
    postgres_server: PostgresServer,
    postgres_site_pools: SitePools,
    tenant_name: str,
    caplog: pytest.LogCaptureFixture,
    statement_log: Callable[[], str],
) -> None:
    """Nothing the operator logs or raises, nor the server's statement log, has it."""
    password = "S3cret-" + secrets.token_hex(12)
    rotated = "R0tated-" + secrets.token_hex(12)
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    ensure_tenant_database(
        postgres_site_pools, "main", tenant=tenant_name, password=password, connection_limit=5
    )
    set_tenant_password(postgres_site_pools, "main", tenant=tenant_name, password=rotated)
    ensure_tenant_database(
        postgres_site_pools, "main", tenant=tenant_name, password=password, connection_limit=5
    )
    for wrong in (rotated + "x", password + "y"):
        with pytest.raises(AuthenticationFailed) as caught:
            check_tenant_connection(
                site_of(postgres_site_pools), tenant=tenant_name, password=wrong
            )
        errors += [str(caught.value), repr(caught.value), repr(caught.value.__cause__)]

    server_log = statement_log()
    assert "ALTER ROLE" in server_log or "statement:" in server_log  # logging was on
    texts = [*errors, caplog.text, *(r.getMessage() for r in caplog.records), server_log]
    for secret in (password, rotated, rotated + "x", password + "y"):
        for text in texts:
            assert secret not in text


def test_wrong_admin_password_is_authentication_failed(
    postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    site = postgres_server.site()
    wrong = "not-the-" + secrets.token_hex(8)
    with SitePools(
        {"main": site},
        credentials=lambda _site: AdminCredentials(user=postgres_server.superuser, password=wrong),
    ) as pools:
        for _ in range(5):  # repeated auth failures are not an outage
            with pytest.raises(AuthenticationFailed) as caught:
                ensure_tenant_database(
                    pools, "main", tenant="whoever", password="x-1", connection_limit=1
                )
        assert caught.value.reason == "AuthenticationFailed"
        assert "'main'" in str(caught.value)
        assert pools.breaker_state("main") == "closed"
    assert wrong not in str(caught.value)
    assert wrong not in caplog.text


def test_non_superuser_admin_can_provision_and_drop(
    postgres_server: PostgresServer,
    tenant_name: str,
    admin_role: Callable[[str, str], AdminCredentials],
) -> None:
    """Managed PostgreSQL gives no superuser: CREATEDB CREATEROLE must be enough."""
    admin = admin_role("admin", "CREATEDB CREATEROLE")
    site = postgres_server.site("managed")
    password = new_password()
    with SitePools(
        {"managed": site},
        credentials=lambda _site: admin,
    ) as pools:
        first = ensure_tenant_database(
            pools, "managed", tenant=tenant_name, password=password, connection_limit=4
        )
        assert "created the database" in first.changes
        check_tenant_connection(site, tenant=tenant_name, password=password)
        # Cannot read pg_authid: the password is checked by logging in instead.
        assert (
            ensure_tenant_database(
                pools, "managed", tenant=tenant_name, password=password, connection_limit=4
            ).changes
            == ()
        )
        rotated = new_password()
        set_tenant_password(pools, "managed", tenant=tenant_name, password=rotated)
        check_tenant_connection(site, tenant=tenant_name, password=rotated)
        dropped = drop_tenant_database(pools, "managed", tenant=tenant_name)
        assert (dropped.dropped_database, dropped.dropped_role) == (True, True)


def test_missing_privilege_is_permission_denied(
    postgres_server: PostgresServer,
    tenant_name: str,
    admin_role: Callable[[str, str], AdminCredentials],
) -> None:
    admin = admin_role("weak", "")
    site = SiteConfig(
        name="weak", host=postgres_server.host, port=postgres_server.port, sslmode="disable"
    )
    with (
        SitePools(
            {"weak": site},
            credentials=lambda _site: admin,
        ) as pools,
        pytest.raises(PermissionDenied, match="CREATEROLE"),
    ):
        ensure_tenant_database(
            pools, "weak", tenant=tenant_name, password="p-1", connection_limit=1
        )


def test_password_of_missing_tenant(postgres_site_pools: SitePools, tenant_name: str) -> None:
    with pytest.raises(TenantDatabaseMissing, match="provision"):
        set_tenant_password(postgres_site_pools, "main", tenant=tenant_name, password="p-1")


@pytest.mark.parametrize(
    ("password", "limit", "message"),
    [
        ("", 5, "must not be empty"),
        ("a\x00b", 5, "NUL"),
        ("ok-pw", 0, r"connection limit 0 is out of range: use -1 \(no limit\) or 1\.\.10000"),
        ("ok-pw", -2, "connection limit -2 is out of range"),
    ],
)
def test_invalid_settings_are_refused_before_any_change(
    postgres_site_pools: SitePools,
    tenant_name: str,
    password: str,
    limit: int,
    message: str,
) -> None:
    with pytest.raises(InvalidDatabaseSettings, match=message) as caught:
        ensure_tenant_database(
            postgres_site_pools,
            "main",
            tenant=tenant_name,
            password=password,
            connection_limit=limit,
        )
    assert caught.value.reason == "InvalidDatabaseSettings"
    with postgres_site_pools.connection("main") as conn:
        role = tenant_role_name(tenant_name)
        assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchall() == []

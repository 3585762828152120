"""A tenant's database is code also for the admin that provisions it.

The operator's site admin connects to each tenant's database to keep its `public` schema
the tenant's (`data.tenant_db.ensure_tenant_database`). The tenant owns that database and
may attach settings to it (`ALTER DATABASE ... SET`) that every later session in it gets,
the admin's included: a `search_path` that puts its own schema before `pg_catalog` makes
an unqualified function, table or operator of the admin's query resolve to the tenant's
code, run with the admin's rights. That may gain the tenant nothing.
"""

from __future__ import annotations

import secrets

import psycopg
import pytest
from psycopg import sql

from cleo_operator.data.pool import SitePools
from cleo_operator.data.tenant_db import (
    ensure_tenant_database,
    tenant_database_name,
    tenant_role_name,
)
from tests.harness.postgres import PostgresServer

pytestmark = [pytest.mark.security, pytest.mark.postgres]


def test_settings_the_tenant_attaches_to_its_database_give_it_nothing_at_provisioning(
    postgres_server: PostgresServer, postgres_site_pools: SitePools, tenant_name: str
) -> None:
    password = secrets.token_urlsafe(18)
    ensure_tenant_database(
        postgres_site_pools, "main", tenant=tenant_name, password=password, connection_limit=10
    )
    role, database = tenant_role_name(tenant_name), tenant_database_name(tenant_name)
    grab = sql.SQL("BEGIN EXECUTE {}; EXCEPTION WHEN OTHERS THEN END;").format(
        sql.Literal(f'ALTER ROLE "{role}" SUPERUSER CREATEROLE')
    )
    with psycopg.connect(
        host=postgres_server.host,
        port=postgres_server.port,
        dbname=database,
        user=role,
        password=password,
        sslmode="disable",
        autocommit=True,
    ) as conn:
        # Shadows of what an admin's catalog query calls, in the tenant's own schema.
        for signature, returns, result in (
            ("pg_get_userbyid(oid)", "name", "pg_catalog.pg_get_userbyid($1)"),
            (
                "has_schema_privilege(text, oid, text)",
                "boolean",
                "pg_catalog.has_schema_privilege($1, $2, $3)",
            ),
        ):
            conn.execute(
                sql.SQL(
                    "CREATE FUNCTION public.{} RETURNS {} LANGUAGE plpgsql AS $f$ BEGIN {} "
                    "RETURN {}; END $f$"
                ).format(sql.SQL(signature), sql.SQL(returns), grab, sql.SQL(result))
            )
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET search_path = public, pg_catalog").format(
                sql.Identifier(database)
            )
        )
        # Gives PUBLIC back what provisioning takes away: the admin must take it again.
        conn.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")

    ensure_tenant_database(
        postgres_site_pools, "main", tenant=tenant_name, password=password, connection_limit=10
    )

    assert postgres_server.execute(
        "SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = %s", (role,)
    ) == [(False, False)]
    assert postgres_server.execute(
        "SELECT pg_catalog.has_schema_privilege('public'::pg_catalog.text,"
        " 'public'::pg_catalog.text,"
        " 'CREATE'::pg_catalog.text)",
        dbname=database,
    ) == [(False,)]

"""Attacks through a tenant's dump: code in the database runs when the dump is restored.

The attacker is a tenant's workload: it holds its own database login (an unprivileged role
that owns its database, as ``data.tenant_db`` provisions it) and plants functions that
PostgreSQL calls while a dump is restored or read: a CHECK constraint, a domain's CHECK,
an index expression. The functions try to become superuser, make roles, join privileged
roles, write files on the server and read what only a superuser may read. Then the
tenant's real backup is verified, drilled and restored the way the operator and its CLI
do it. Every attempt must fail, and nothing may have changed on the server: no role gained
an attribute or a membership, no role was left behind, no file written.
"""

from __future__ import annotations

import contextlib
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from cleo_operator.backup.connection import ConnectionInfo
from cleo_operator.backup.errors import RestoreFailed
from cleo_operator.backup.restore import VerificationResult, restore_archive, verify_backup
from cleo_operator.backup.runner import BackupResult, run_backup
from cleo_operator.backup.scratch import VERIFIER_ROLE_MARKER, VERIFIER_ROLE_PREFIX
from cleo_operator.backup.storage import LocalStorage
from cleo_operator.crypto import Keyring
from cleo_operator.data.pool import SitePools
from cleo_operator.data.tenant_db import (
    ensure_tenant_database,
    tenant_database_name,
    tenant_role_name,
)
from cleo_operator.failover.drill import DrillBackup, restore_drill
from tests.harness.postgres import PostgresServer

pytestmark = [pytest.mark.security, pytest.mark.postgres]

Snapshot = tuple[frozenset[tuple[object, ...]], frozenset[tuple[str, str]]]


def server_roles(server: PostgresServer) -> Snapshot:
    """Every role with its attributes, and every membership: what an attack would change."""
    roles = server.execute(
        "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls,"
        " rolcanlogin, rolinherit FROM pg_roles"
    )
    members = server.execute(
        "SELECT r.rolname, m.rolname FROM pg_auth_members a"
        " JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member"
    )
    return (
        frozenset(tuple(row) for row in roles),
        frozenset((str(a), str(b)) for a, b in members),
    )


def scratch_databases(server: PostgresServer) -> list[str]:
    rows = server.execute("SELECT datname FROM pg_database WHERE datname LIKE 'cleo\\_verify\\_%'")
    return [str(r[0]) for r in rows]


@dataclass
class Tenant:
    name: str
    role: str
    database: str
    password: str
    login: ConnectionInfo
    loot: Path
    """A folder the database server may write to: files appearing here were written by SQL."""
    evil: str
    """The role the attack tries to create."""


@pytest.fixture
def loot_dir() -> Iterator[Path]:
    # World-writable, directly under the temp folder: the server's OS user (not ours) can
    # reach it, so a COPY ... TO file as superuser *would* succeed here.
    folder = Path(tempfile.mkdtemp(prefix="cleo-loot-"))
    folder.chmod(0o777)
    try:
        yield folder
    finally:
        for entry in folder.iterdir():
            with contextlib.suppress(OSError):
                entry.unlink()
        folder.rmdir()


@pytest.fixture
def tenant(
    postgres_server: PostgresServer,
    postgres_site_pools: SitePools,
    tenant_name: str,
    loot_dir: Path,
    evil_role: str,
) -> Tenant:
    password = secrets.token_urlsafe(18)
    ensure_tenant_database(
        postgres_site_pools, "main", tenant=tenant_name, password=password, connection_limit=10
    )
    role, database = tenant_role_name(tenant_name), tenant_database_name(tenant_name)
    login = ConnectionInfo(
        host=postgres_server.host,
        port=postgres_server.port,
        dbname=database,
        user=role,
        password=password,
        sslmode="disable",
    )
    return Tenant(tenant_name, role, database, password, login, loot_dir, evil_role)


@pytest.fixture
def evil_role() -> str:
    return f"evil_{secrets.token_hex(4)}"


@pytest.fixture(autouse=True)
def _no_evil_left(postgres_server: PostgresServer, evil_role: str) -> Iterator[None]:
    yield
    postgres_server.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(evil_role)))


def attack_body(tenant: Tenant, evil: str, *, escape: bool) -> str:
    """PL/pgSQL that tries every escalation; each attempt may fail, the next still runs."""
    role = sql.Identifier(tenant.role).as_string(None)
    loot = str(tenant.loot / "pwned")
    steps = [
        f"ALTER ROLE {role} SUPERUSER",
        f"ALTER ROLE {role} CREATEROLE CREATEDB REPLICATION BYPASSRLS",
        f"CREATE ROLE {evil} SUPERUSER LOGIN",
        f"GRANT pg_read_all_data, pg_write_server_files, pg_execute_server_program TO {role}",
        f"COPY (SELECT rolname, rolpassword FROM pg_authid) TO '{loot}-authid'",  # noqa: S608
        f"COPY (SELECT 1) TO PROGRAM 'touch {loot}-program'",
        "ALTER SYSTEM SET log_statement = 'none'",
    ]
    lines = []
    if escape:
        # Get back to the session user's privileges, whatever SET ROLE was used on us.
        lines += [
            "BEGIN PERFORM set_config('role', 'none', false); EXCEPTION WHEN OTHERS THEN END;",
            "BEGIN RESET ROLE; EXCEPTION WHEN OTHERS THEN END;",
            "BEGIN SET ROLE postgres; EXCEPTION WHEN OTHERS THEN END;",
            "BEGIN RESET SESSION AUTHORIZATION; EXCEPTION WHEN OTHERS THEN END;",
        ]
    for step in steps:
        lines.append(
            f"BEGIN EXECUTE {sql.Literal(step).as_string(None)}; EXCEPTION WHEN OTHERS THEN END;"
        )
    return "\n".join(lines)


def plant(tenant: Tenant, evil: str, *, how: str, escape: bool = False) -> None:
    """As the tenant itself, plant a function that runs when the dump is restored or read."""
    body = attack_body(tenant, evil, escape=escape)
    with psycopg.connect(**tenant.login.psycopg_kwargs(), autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION public.innocent(x integer) RETURNS boolean LANGUAGE plpgsql AS $f$"
            f"\nBEGIN\n{body}\nRETURN true;\nEND\n$f$"
        )
        conn.execute(
            "CREATE FUNCTION public.innocent_int(x integer) RETURNS integer LANGUAGE plpgsql"
            " IMMUTABLE AS $f$ BEGIN PERFORM public.innocent(x); RETURN x; END $f$"
        )
        if how == "check":
            conn.execute("CREATE TABLE notes (id integer CHECK (public.innocent(id)), body text)")
        elif how == "domain":
            conn.execute("CREATE DOMAIN safe_int AS integer CHECK (public.innocent(VALUE))")
            conn.execute("CREATE TABLE notes (id safe_int, body text)")
        elif how == "index":
            conn.execute("CREATE TABLE notes (id integer, body text)")
            conn.execute("CREATE INDEX notes_idx ON notes (public.innocent_int(id))")
        elif how == "sleep":
            # Sleeps forever when anyone but the tenant runs it (a restore), and swallows
            # the cancel a statement_timeout would send.
            conn.execute(
                sql.SQL(
                    "CREATE FUNCTION public.forever(x integer) RETURNS boolean LANGUAGE plpgsql"
                    " AS $f$ BEGIN IF current_user = {} THEN RETURN true; END IF;"
                    " LOOP BEGIN PERFORM pg_sleep(3600);"
                    " EXCEPTION WHEN query_canceled THEN NULL; END; END LOOP; END $f$"
                ).format(sql.Literal(tenant.role))
            )
            conn.execute(
                "CREATE TABLE notes (id integer CHECK (public.innocent(id) AND"
                " public.forever(id)), body text)"
            )
        elif how == "name":
            # A table whose name is SQL: only ever usable as a quoted identifier.
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} (id integer CHECK (public.innocent(id)), body text)"
                ).format(sql.Identifier(f'x"; ALTER ROLE {tenant.role} SUPERUSER; --'))
            )
            conn.execute(
                sql.SQL("CREATE SCHEMA {}").format(sql.Identifier("s'); DROP ROLE postgres; --"))
            )
            conn.execute(
                sql.SQL("CREATE TABLE {}.notes (id integer, body text)").format(
                    sql.Identifier("s'); DROP ROLE postgres; --")
                )
            )
            conn.execute(
                sql.SQL("INSERT INTO {} VALUES (1, 'a'), (2, 'b')").format(
                    sql.Identifier(f'x"; ALTER ROLE {tenant.role} SUPERUSER; --')
                )
            )
            conn.execute("CREATE TABLE notes (id integer, body text)")
        else:
            raise AssertionError(how)
        conn.execute("INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 50) g")


def assert_nothing_changed(
    server: PostgresServer, before: Snapshot, tenant: Tenant, evil: str
) -> None:
    after = server_roles(server)
    assert after[0] == before[0], f"roles changed: {set(after[0]) ^ set(before[0])}"
    assert after[1] == before[1], f"memberships changed: {set(after[1]) ^ set(before[1])}"
    assert not server.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (evil,))
    privileged = server.execute(
        "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls"
        " FROM pg_roles WHERE rolname = %s",
        (tenant.role,),
    )
    assert privileged == [(False,)]
    assert sorted(p.name for p in tenant.loot.iterdir()) == []
    assert not scratch_databases(server)


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.generate(datetime.now(UTC))


def admin_login(server: PostgresServer) -> ConnectionInfo:
    return ConnectionInfo(
        host=server.host,
        port=server.port,
        dbname="postgres",
        user=server.superuser,
        password=server.password,
        sslmode="disable",
    )


def back_up(tenant: Tenant, keyring: Keyring, tmp_path: Path) -> tuple[LocalStorage, BackupResult]:
    """A real backup of the tenant's (hostile) database, taken with its own login."""
    storage = LocalStorage(tmp_path / "store")
    backup = run_backup(source=tenant.login, tenant=tenant.name, storage=storage, keyring=keyring)
    return storage, backup


def hostile_backup(
    server: PostgresServer,
    tenant: Tenant,
    keyring: Keyring,
    tmp_path: Path,
    *,
    how: str,
    escape: bool = False,
) -> tuple[LocalStorage, BackupResult, Snapshot]:
    """The tenant's database with hostile code planted (see `plant`), backed up; and the
    server's roles as they were before anything ran the dump."""
    plant(tenant, tenant.evil, how=how, escape=escape)
    storage, backup = back_up(tenant, keyring, tmp_path)
    return storage, backup, server_roles(server)


def verify_as_site(
    server: PostgresServer,
    tenant: Tenant,
    keyring: Keyring,
    storage: LocalStorage,
    backup_id: str,
    **options: Any,
) -> VerificationResult:
    """The operator's verification of `backup_id`, with the site's superuser as its admin."""
    return verify_backup(
        storage=storage,
        backup_id=backup_id,
        keyring=keyring,
        admin=admin_login(server),
        tenant=tenant.name,
        **options,
    )


@pytest.mark.parametrize("how", ["check", "domain", "index"])
def test_hostile_code_in_a_dump_runs_without_privilege_in_verification(
    postgres_server: PostgresServer,
    tenant: Tenant,
    keyring: Keyring,
    tmp_path: Path,
    how: str,
) -> None:
    storage, backup, before = hostile_backup(postgres_server, tenant, keyring, tmp_path, how=how)

    verdict = verify_as_site(postgres_server, tenant, keyring, storage, backup.backup_id)

    assert verdict.passed, verdict.message
    assert verdict.rows_checked == 50
    assert_nothing_changed(postgres_server, before, tenant, tenant.evil)


def test_hostile_code_that_resets_its_role_gets_no_privilege_back(
    postgres_server: PostgresServer,
    tenant: Tenant,
    keyring: Keyring,
    tmp_path: Path,
) -> None:
    """SET ROLE to a NOLOGIN role is no fence: RESET ROLE returns to the session user."""
    storage, backup, before = hostile_backup(
        postgres_server, tenant, keyring, tmp_path, how="check", escape=True
    )

    verdict = verify_as_site(postgres_server, tenant, keyring, storage, backup.backup_id)

    assert verdict.passed, verdict.message
    assert_nothing_changed(postgres_server, before, tenant, tenant.evil)


def test_a_drill_of_a_hostile_backup_runs_without_privilege(
    postgres_server: PostgresServer,
    tenant: Tenant,
    keyring: Keyring,
    tmp_path: Path,
) -> None:
    storage, backup, before = hostile_backup(
        postgres_server, tenant, keyring, tmp_path, how="check", escape=True
    )

    verdict = restore_drill(
        DrillBackup(
            storage=storage,
            backup_id=backup.backup_id,
            keyring=keyring,
            taken=backup.manifest.start_time,
        ),
        admin=admin_login(postgres_server),
        tenant=tenant.name,
    )

    assert verdict.passed, verdict.message
    assert_nothing_changed(postgres_server, before, tenant, tenant.evil)


def test_table_and_schema_names_of_a_dump_are_only_quoted_identifiers(
    postgres_server: PostgresServer,
    tenant: Tenant,
    keyring: Keyring,
    tmp_path: Path,
) -> None:
    storage, backup, before = hostile_backup(postgres_server, tenant, keyring, tmp_path, how="name")
    assert any("ALTER ROLE" in name for name in backup.manifest.tables)

    verdict = verify_as_site(postgres_server, tenant, keyring, storage, backup.backup_id)

    assert verdict.passed, verdict.message
    assert verdict.tables_checked == 3
    assert_nothing_changed(postgres_server, before, tenant, tenant.evil)


def test_restore_refuses_a_superuser_target_and_changes_nothing(
    postgres_server: PostgresServer,
    tenant: Tenant,
    keyring: Keyring,
    tmp_path: Path,
    postgres_database: str,
) -> None:
    storage, backup, before = hostile_backup(
        postgres_server, tenant, keyring, tmp_path, how="check", escape=True
    )

    with pytest.raises(RestoreFailed, match="superuser") as refused:
        restore_archive(
            storage=storage,
            backup_id=backup.backup_id,
            keyring=keyring,
            target=admin_login(postgres_server).with_dbname(postgres_database),
            tenant=tenant.name,
        )

    assert "--allow-privileged-target" in refused.value.message
    assert postgres_server.execute(
        "SELECT count(*) FROM pg_class WHERE relname = 'notes'", dbname=postgres_database
    ) == [(0,)]
    assert_nothing_changed(postgres_server, before, tenant, tenant.evil)


def test_restore_refuses_a_target_login_that_can_become_a_privileged_role(
    postgres_server: PostgresServer,
    tenant: Tenant,
    keyring: Keyring,
    tmp_path: Path,
) -> None:
    """A CREATEROLE login, or one that may SET ROLE to a superuser, is as dangerous."""
    plant(tenant, tenant.evil, how="check")
    storage, backup = back_up(tenant, keyring, tmp_path)
    helper = f"restorer_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(12)
    target_db = f"restored_{secrets.token_hex(4)}"
    postgres_server.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(helper), sql.Literal(password)
        )
    )
    postgres_server.execute(
        sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(target_db), sql.Identifier(helper)
        )
    )
    try:
        login = (
            admin_login(postgres_server)
            .with_dbname(target_db)
            .with_login(user=helper, password=password)
        )
        for grant, revoke, named in (
            (
                sql.SQL("ALTER ROLE {} CREATEROLE"),
                sql.SQL("ALTER ROLE {} NOCREATEROLE"),
                "CREATEROLE",
            ),
            (sql.SQL("GRANT postgres TO {}"), sql.SQL("REVOKE postgres FROM {}"), "'postgres'"),
            (
                sql.SQL("GRANT pg_read_all_data TO {}"),
                sql.SQL("REVOKE pg_read_all_data FROM {}"),
                "'pg_read_all_data'",
            ),
            (sql.SQL("ALTER ROLE {} BYPASSRLS"), sql.SQL("ALTER ROLE {} NOBYPASSRLS"), "BYPASSRLS"),
        ):
            postgres_server.execute(grant.format(sql.Identifier(helper)))
            before = server_roles(postgres_server)
            with pytest.raises(RestoreFailed, match=named):
                restore_archive(
                    storage=storage,
                    backup_id=backup.backup_id,
                    keyring=keyring,
                    target=login,
                    tenant=tenant.name,
                )
            assert_nothing_changed(postgres_server, before, tenant, tenant.evil)
            postgres_server.execute(revoke.format(sql.Identifier(helper)))
    finally:
        postgres_server.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target_db))
        )
        postgres_server.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(helper)))


def test_restore_into_an_unprivileged_target_keeps_hostile_code_unprivileged(
    postgres_server: PostgresServer,
    postgres_site_pools: SitePools,
    tenant: Tenant,
    keyring: Keyring,
    tmp_path: Path,
) -> None:
    """What a person does: restore into a fresh tenant database, as that tenant's role."""
    plant(tenant, tenant.evil, how="index", escape=True)
    storage, backup = back_up(tenant, keyring, tmp_path)
    twin = f"{tenant.name}-r"
    password = secrets.token_urlsafe(18)
    ensure_tenant_database(
        postgres_site_pools, "main", tenant=twin, password=password, connection_limit=5
    )
    try:
        before = server_roles(postgres_server)
        result = restore_archive(
            storage=storage,
            backup_id=backup.backup_id,
            keyring=keyring,
            target=tenant.login.with_dbname(tenant_database_name(twin)).with_login(
                user=tenant_role_name(twin), password=password
            ),
            tenant=tenant.name,
            no_privileges=True,
        )
        assert result.rows == 50
        assert_nothing_changed(postgres_server, before, tenant, tenant.evil)
    finally:
        postgres_server.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(tenant_database_name(twin))
            )
        )
        postgres_server.execute(
            sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(tenant_role_name(twin)))
        )


def test_a_verification_role_left_by_a_crash_is_dropped_by_the_next_run(
    postgres_server: PostgresServer,
    tenant: Tenant,
    keyring: Keyring,
    tmp_path: Path,
) -> None:
    """A crashed verification leaves its role and scratch database; the next run drops
    them once their validity ran out, and never a role that only looks like one."""
    with psycopg.connect(**tenant.login.psycopg_kwargs(), autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id integer)")
        conn.execute("INSERT INTO notes VALUES (1)")
    storage, backup = back_up(tenant, keyring, tmp_path)
    stale = f"{VERIFIER_ROLE_PREFIX}{secrets.token_hex(6)}"
    lookalike = f"{VERIFIER_ROLE_PREFIX}{secrets.token_hex(6)}"
    fresh = f"{VERIFIER_ROLE_PREFIX}{secrets.token_hex(6)}"
    stale_db = f"cleo_verify_leftover_{secrets.token_hex(3)}"
    expired = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    valid = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    for name, until, comment in (
        (stale, expired, VERIFIER_ROLE_MARKER),
        (lookalike, expired, "somebody else's role"),
        (fresh, valid, VERIFIER_ROLE_MARKER),
    ):
        postgres_server.execute(
            sql.SQL("CREATE ROLE {} LOGIN VALID UNTIL {}").format(
                sql.Identifier(name), sql.Literal(until)
            )
        )
        postgres_server.execute(
            sql.SQL("COMMENT ON ROLE {} IS {}").format(sql.Identifier(name), sql.Literal(comment))
        )
    postgres_server.execute(
        sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(stale_db), sql.Identifier(stale)
        )
    )
    with psycopg.connect(**tenant.login.psycopg_kwargs(), autocommit=True) as conn:
        # What the tenant granted the crashed run's login must not keep it alive.
        conn.execute(sql.SQL("GRANT SELECT ON notes TO {}").format(sql.Identifier(stale)))
    try:
        verdict = verify_as_site(postgres_server, tenant, keyring, storage, backup.backup_id)
        assert verdict.passed, verdict.message
        left = {
            str(r[0])
            for r in postgres_server.execute(
                "SELECT rolname FROM pg_roles WHERE rolname LIKE %s",
                (VERIFIER_ROLE_PREFIX.replace("_", "\\_") + "%",),
            )
        }
        assert left == {lookalike, fresh}
        assert stale_db not in scratch_databases(postgres_server)
    finally:
        postgres_server.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(stale_db))
        )
        for name in (stale, lookalike, fresh):
            postgres_server.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def test_a_dump_that_sleeps_forever_cannot_hold_the_verification(
    postgres_server: PostgresServer, tenant: Tenant, keyring: Keyring, tmp_path: Path
) -> None:
    """Code that loops and swallows cancels: pg_restore is stopped, the session ended."""
    storage, backup, before = hostile_backup(
        postgres_server, tenant, keyring, tmp_path, how="sleep", escape=True
    )

    started = time.monotonic()
    verdict = verify_as_site(
        postgres_server, tenant, keyring, storage, backup.backup_id, restore_timeout_seconds=3
    )

    assert time.monotonic() - started < 60
    assert not verdict.passed
    assert verdict.reason == "RestoreFailed"
    assert "did not finish within 3s" in verdict.message
    assert_nothing_changed(postgres_server, before, tenant, tenant.evil)
    sessions = postgres_server.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE starts_with(usename, %s)",
        (VERIFIER_ROLE_PREFIX,),
    )
    assert sessions == [(0,)]


def test_a_dump_whose_error_is_megabytes_long_is_verified_in_bounded_time(
    postgres_server: PostgresServer, tenant: Tenant, keyring: Keyring, tmp_path: Path
) -> None:
    """A CHECK whose function raises 400 KB of `a.` (and a password after it) when anyone
    but the tenant runs it: pg_restore prints it on one line. Reading and redacting it once
    took minutes holding the interpreter lock (the leader election could not renew, every
    tenant stopped); now only stderr's tail is read, redaction is linear and bounded, and
    the verdict is short and masks the password."""
    leaked = secrets.token_urlsafe(18)
    with psycopg.connect(**tenant.login.psycopg_kwargs(), autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION public.loud(x integer) RETURNS boolean LANGUAGE plpgsql AS $f$"
                " BEGIN IF current_user = {} THEN RETURN true; END IF;"
                " RAISE EXCEPTION '%', repeat('a.', 200000) || ' password=' || {}; END $f$"
            ).format(sql.Literal(tenant.role), sql.Literal(leaked))
        )
        conn.execute("CREATE TABLE notes (id integer CHECK (public.loud(id)), body text)")
        conn.execute("INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 5) g")
    storage, backup = back_up(tenant, keyring, tmp_path)

    started = time.monotonic()
    verdict = verify_as_site(postgres_server, tenant, keyring, storage, backup.backup_id)

    assert time.monotonic() - started < 20
    assert not verdict.passed
    assert verdict.reason == "RestoreFailed"
    assert "a.a.a." in verdict.message
    assert len(verdict.message) <= 32 << 10
    assert leaked not in verdict.message
    assert postgres_server.password not in verdict.message
    assert not scratch_databases(postgres_server)


def test_a_login_the_dump_hands_out_dies_with_the_verification(
    postgres_server: PostgresServer, tenant: Tenant, keyring: Keyring, tmp_path: Path
) -> None:
    """Any role may set its own password: the dump's code gives the throwaway login one the
    tenant knows, and the tenant logs in with it while the restore runs. That session
    ends, and the login is gone, when the verification ends."""
    known = secrets.token_urlsafe(12)
    with psycopg.connect(**tenant.login.psycopg_kwargs(), autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION public.leak(x integer) RETURNS boolean LANGUAGE plpgsql AS $f$"
                " BEGIN IF starts_with(current_user, {}) AND x = 1 THEN"
                " EXECUTE format('ALTER ROLE %I PASSWORD %L', current_user, {});"
                " END IF; RETURN true; END $f$"
            ).format(sql.Literal(VERIFIER_ROLE_PREFIX), sql.Literal(known))
        )
        conn.execute("CREATE TABLE notes (id integer CHECK (public.leak(id)))")
        conn.execute("INSERT INTO notes SELECT generate_series(1, 5)")
        # The password takes effect when the restore commits; a large table keeps the
        # verification reading long enough after that for the tenant to log in.
        conn.execute("CREATE TABLE bulk (id integer, payload text)")
        conn.execute("INSERT INTO bulk SELECT g, md5(g::text) FROM generate_series(1, 600000) g")
    storage, backup = back_up(tenant, keyring, tmp_path)
    before = server_roles(postgres_server)
    stolen: list[psycopg.Connection[tuple[object, ...]]] = []

    def log_in_with_the_leaked_password() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not stolen:
            for (name,) in postgres_server.execute(
                "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)",
                (VERIFIER_ROLE_PREFIX,),
            ):
                with contextlib.suppress(psycopg.Error):
                    stolen.append(
                        psycopg.connect(
                            **tenant.login.with_dbname("postgres")
                            .with_login(user=str(name), password=known)
                            .psycopg_kwargs(),
                            autocommit=True,
                        )
                    )
            time.sleep(0.02)

    thief = threading.Thread(target=log_in_with_the_leaked_password, daemon=True)
    thief.start()
    verdict = verify_as_site(postgres_server, tenant, keyring, storage, backup.backup_id)
    thief.join(30)

    assert verdict.passed, verdict.message
    assert stolen, "the attack did not get its session: the test proves nothing"
    with pytest.raises(psycopg.OperationalError):
        stolen[0].execute("SELECT 1")
    assert_nothing_changed(postgres_server, before, tenant, tenant.evil)


def test_a_site_admin_without_superuser_verifies_and_lends_the_dump_nothing(
    postgres_server: PostgresServer, tenant: Tenant, keyring: Keyring, tmp_path: Path
) -> None:
    """A CREATEDB CREATEROLE admin (not a superuser) joins the throwaway role to create its
    database; the membership points from the admin to the role, so the dump gains none of
    the admin's rights (CREATEROLE above all), and everything is gone afterwards."""
    plant(tenant, tenant.evil, how="check", escape=True)
    storage, backup = back_up(tenant, keyring, tmp_path)
    admin = f"site_admin_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(12)
    postgres_server.execute(
        sql.SQL("CREATE ROLE {} LOGIN CREATEDB CREATEROLE PASSWORD {}").format(
            sql.Identifier(admin), sql.Literal(password)
        )
    )
    try:
        before = server_roles(postgres_server)
        verdict = verify_backup(
            storage=storage,
            backup_id=backup.backup_id,
            keyring=keyring,
            admin=admin_login(postgres_server).with_login(user=admin, password=password),
            tenant=tenant.name,
        )
        assert verdict.passed, verdict.message
        assert verdict.rows_checked == 50
        assert_nothing_changed(postgres_server, before, tenant, tenant.evil)
    finally:
        postgres_server.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(admin)))


def test_a_tenant_cannot_keep_the_verification_login_alive_with_grants(
    postgres_server: PostgresServer, tenant: Tenant, keyring: Keyring, tmp_path: Path
) -> None:
    """The tenant sees the throwaway login in pg_roles while its dump is verified and grants
    it privileges in its own database (a table, its database, default privileges, a row
    policy): each is a dependency that blocks DROP ROLE. The login is still dropped when
    the verification ends, and no privilege naming it is left anywhere."""
    with psycopg.connect(**tenant.login.psycopg_kwargs(), autocommit=True) as conn:
        # Slows the restore (as the verifier only) so the tenant has time to act.
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION public.slow(x integer) RETURNS boolean LANGUAGE plpgsql AS $f$"
                " BEGIN IF starts_with(current_user, {}) AND x = 1 THEN PERFORM pg_sleep(3);"
                " END IF; RETURN true; END $f$"
            ).format(sql.Literal(VERIFIER_ROLE_PREFIX))
        )
        conn.execute("CREATE TABLE notes (id integer CHECK (public.slow(id)), body text)")
        conn.execute("INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 5) g")
        # Settings for every session in its database, the admin's included: become the
        # tenant (who may not revoke what was granted to the verifier), and write nothing.
        database = sql.Identifier(tenant.database)
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET role = {}").format(database, sql.Literal(tenant.role))
        )
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(database)
        )
    storage, backup = back_up(tenant, keyring, tmp_path)
    before = server_roles(postgres_server)
    granted: list[str] = []

    def grant_to_the_verifier() -> None:
        deadline = time.monotonic() + 20
        with psycopg.connect(**tenant.login.psycopg_kwargs(), autocommit=True) as conn:
            conn.execute("SET default_transaction_read_only = off")
            while time.monotonic() < deadline and not granted:
                for (name,) in conn.execute(
                    "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)",
                    (VERIFIER_ROLE_PREFIX,),
                ).fetchall():
                    verifier = sql.Identifier(str(name))
                    database = sql.Identifier(tenant.database)
                    for statement in (
                        sql.SQL("GRANT SELECT ON notes TO {}").format(verifier),
                        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, verifier),
                        sql.SQL("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO {}").format(
                            verifier
                        ),
                        sql.SQL("CREATE POLICY sticky ON notes TO {} USING (true)").format(
                            verifier
                        ),
                    ):
                        conn.execute(statement)
                    granted.append(str(name))
                time.sleep(0.02)

    attacker = threading.Thread(target=grant_to_the_verifier, daemon=True)
    attacker.start()
    verdict = verify_as_site(postgres_server, tenant, keyring, storage, backup.backup_id)
    attacker.join(30)

    assert verdict.passed, verdict.message
    assert granted, "the attack did not get its grants in: the test proves nothing"
    assert not postgres_server.execute(
        "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", (VERIFIER_ROLE_PREFIX,)
    )
    assert not postgres_server.execute(
        "SELECT 1 FROM pg_shdepend s JOIN pg_authid a ON a.oid = s.refobjid"
        " WHERE s.refclassid = 'pg_authid'::regclass AND starts_with(a.rolname, %s)",
        (VERIFIER_ROLE_PREFIX,),
    )
    with psycopg.connect(**tenant.login.psycopg_kwargs(), autocommit=True) as conn:
        # No privilege in the tenant's database is left to a role that is gone (it would
        # show as a bare oid, and a new role with that oid would inherit it).
        orphans = conn.execute(
            "SELECT a.grantee FROM pg_class c, aclexplode(c.relacl) a WHERE c.relname = 'notes'"
            " UNION ALL SELECT a.grantee FROM pg_default_acl d, aclexplode(d.defaclacl) a"
            " UNION ALL SELECT a.grantee FROM pg_database d, aclexplode(d.datacl) a"
            " WHERE d.datname = current_database()"
        ).fetchall()
        roles = {r[0] for r in conn.execute("SELECT oid FROM pg_roles").fetchall()}
        assert [g for (g,) in orphans if g != 0 and g not in roles] == []
        assert not conn.execute("SELECT 1 FROM pg_policy WHERE polname = 'sticky'").fetchall()
    assert_nothing_changed(postgres_server, before, tenant, tenant.evil)

"""Scratch databases for verification, owned by a throwaway login that holds no privilege.

Why a login of its own and not the site admin with `SET ROLE`: a dump is the tenant's
code. Functions that CHECK constraints, domains, defaults and index expressions call run
while pg_restore loads the data, and they run with the rights of the *session*: a plain
PL/pgSQL function can `RESET ROLE` (or `set_config('role', 'none', false)`) and is the
session user again. So the session user itself must be unprivileged. For each
verification the admin creates:

- a login role `cleo__verifier_<random>` with a random password known only to this
  process (sent to the server as a SCRAM verifier, handed to pg_restore in a private
  passfile): NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS, no
  memberships, a small connection limit, and a password that expires (`VALID UNTIL`);
- an empty database (from template0) owned by that role, which PUBLIC may not connect to.

pg_restore and every statement that reads the restored data connect as that role; the
admin only creates and drops the database and the role. The role is INHERIT because it is
a member of nothing but PostgreSQL's implicit `pg_database_owner` of its own database,
which is what owns the `public` schema there.

Both are dropped whatever happens: first the login is made NOLOGIN and every session of it
is ended (the dump's code may have changed the role's password, which any role may do for
itself, and handed it out; such a login can do no more than the tenant's own role), then
the database and the role are dropped. A process killed outright cannot drop them: the
role's validity (`VALID UNTIL`, which the role cannot change) bounds how long it can log
in, and its name prefix (which no tenant role can have: tenant roles are `cleo_` and a
letter or digit), its comment (`VERIFIER_ROLE_MARKER`) and its expired validity let a
later verification recognise it as a leftover and drop it with the databases it owns. A
role that is still valid may belong to a verification running right now and is left alone.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Final

import psycopg
from psycopg import sql

from cleo_operator.backup.connection import ConnectionInfo
from cleo_operator.backup.errors import SourceUnavailable, redact
from cleo_operator.data.scram import scram_sha256_verifier

__all__ = [
    "SCRATCH_DATABASE_MARKER",
    "SCRATCH_DATABASE_PREFIX",
    "VERIFIER_LIFETIME",
    "VERIFIER_ROLE_MARKER",
    "VERIFIER_ROLE_PREFIX",
    "drop_stale_verifiers",
    "scratch_database",
]

logger = logging.getLogger(__name__)

VERIFIER_ROLE_PREFIX: Final = "cleo__verifier_"
"""Name prefix of the throwaway verification logins (never a tenant role's prefix)."""
VERIFIER_ROLE_MARKER: Final = "cleo-operator verification login (temporary, safe to drop)"
"""The comment on those logins; a role without it is never dropped as a leftover."""
SCRATCH_DATABASE_PREFIX: Final = "cleo_verify_"
SCRATCH_DATABASE_MARKER: Final = "cleo-operator verification scratch database"
VERIFIER_LIFETIME: Final = timedelta(hours=24)
"""How long a verification login may log in; after that it is a leftover."""
VERIFIER_CONNECTION_LIMIT: Final = 3
"""pg_restore's session and the reading session, and one to spare."""


def _connect(info: ConnectionInfo, *, doing: str) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(**info.psycopg_kwargs(), autocommit=True)
    except psycopg.Error as error:
        detail = error.diag.message_primary if error.diag.message_primary else str(error)
        raise SourceUnavailable(
            f"cannot connect to {info.where} as {info.user!r} for {doing}: "
            f"{redact(' '.join(detail.split()), [info.password])}"
        ) from None


def _is_superuser(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = session_user").fetchone()
    return bool(row and row[0])


@contextlib.contextmanager
def scratch_database(
    admin: ConnectionInfo, *, name: str, purpose: str, now: datetime | None = None
) -> Iterator[ConnectionInfo]:
    """An empty database `name` and the unprivileged login that owns it; both dropped after.

    Yields the login (same server as `admin`, the scratch database, the throwaway role and
    its password). `admin` needs CREATEDB and CREATEROLE (or is a superuser). Leftovers of
    crashed verifications are dropped first (see the module docstring).
    """
    role = VERIFIER_ROLE_PREFIX + secrets.token_hex(8)
    password = secrets.token_urlsafe(32)
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    with _connect(admin, doing="creating the verification database") as conn:
        drop_stale_verifiers(conn, now=moment, admin=admin)
        try:
            superuser = _is_superuser(conn)
            with conn.transaction():
                conn.execute(
                    sql.SQL(
                        "CREATE ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                        "NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT {} "
                        "VALID UNTIL {} PASSWORD {}"
                    ).format(
                        sql.Identifier(role),
                        sql.Literal(VERIFIER_CONNECTION_LIMIT),
                        sql.Literal((moment + VERIFIER_LIFETIME).isoformat()),
                        # Only the verifier reaches the server (and perhaps its log).
                        sql.Literal(scram_sha256_verifier(password)),
                    )
                )
                conn.execute(
                    sql.SQL("COMMENT ON ROLE {} IS {}").format(
                        sql.Identifier(role), sql.Literal(VERIFIER_ROLE_MARKER)
                    )
                )
                if not superuser:
                    # A non-superuser may only create a database owned by a role it belongs
                    # to, and only end the sessions of such a role. The membership points
                    # from the admin to the throwaway role, never the other way.
                    conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role)))
        except psycopg.Error as error:
            raise SourceUnavailable(
                f"cannot create the verification login on {admin.host}:{admin.port} as "
                f"{admin.user!r}: {error.diag.message_primary or type(error).__name__}; the "
                "role needs CREATEROLE (or superuser)"
            ) from None
        try:
            try:
                conn.execute(
                    sql.SQL(
                        "CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING 'UTF8'"
                    ).format(sql.Identifier(name), sql.Identifier(role))
                )
                conn.execute(
                    sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                        sql.Identifier(name), sql.Literal(f"{SCRATCH_DATABASE_MARKER} {purpose}")
                    )
                )
                # Nobody else connects: not another tenant's role, not another verifier.
                conn.execute(
                    sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name))
                )
            except psycopg.Error as error:
                raise SourceUnavailable(
                    f"cannot create the verification database {name} on {admin.host}:"
                    f"{admin.port} as {admin.user!r}: "
                    f"{error.diag.message_primary or type(error).__name__}; the role needs "
                    "CREATEDB"
                ) from None
            yield admin.with_dbname(name).with_login(user=role, password=password)
        finally:
            _drop(admin, database=name, role=role)


def _drop(admin: ConnectionInfo, *, database: str, role: str) -> None:
    try:
        with _connect(admin, doing="dropping the verification database") as conn:
            # The dump's code may have set the login's password to one it knows (any role
            # may change its own) and handed it out: no new session, and every session of
            # the role ends, wherever it is connected, before the role goes.
            conn.execute(
                sql.SQL("ALTER ROLE {} WITH NOLOGIN PASSWORD NULL").format(sql.Identifier(role))
            )
            conn.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
            _release_and_drop_role(conn, admin, role)
    except (psycopg.Error, SourceUnavailable) as error:
        # The verdict matters more than the cleanup; the next verification drops what is
        # left once the role's validity ran out.
        logger.error(
            "could not drop the verification database %s or its login %s on %s:%s (%s); the "
            "next verification drops them after %s, or drop them by hand",
            database,
            role,
            admin.host,
            admin.port,
            getattr(error, "message", type(error).__name__),
            VERIFIER_LIFETIME,
        )


def _neutral_session(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Undo what a database's owner may have set for every session in it (ALTER DATABASE
    ... SET): a role to switch to, read-only transactions, tiny timeouts, a search path."""
    for statement in (
        "SET ROLE NONE",
        "SET default_transaction_read_only = off",
        "SET statement_timeout = '60s'",
        "SET lock_timeout = '30s'",
        "SET search_path = pg_catalog, pg_temp",
    ):
        conn.execute(statement)


def _release_and_drop_role(
    conn: psycopg.Connection[tuple[object, ...]], admin: ConnectionInfo, role: str
) -> None:
    """Drop `role` after revoking whatever anyone granted it, in every database.

    The tenant sees the throwaway login in pg_roles while its dump is verified and may
    grant it privileges in its own database (a table, the database, default privileges, a
    row policy naming it). Each is a dependency that makes DROP ROLE fail, so the role
    would outlive the verification forever. pg_shdepend lists the databases holding such
    dependencies; DROP OWNED BY revokes them there (and drops anything the role owns), and
    run here it also revokes grants on shared objects (a database's CONNECT). It runs as
    the admin in the tenant's database, which runs none of the tenant's code: DROP OWNED
    fires only event triggers, and creating an event trigger needs a superuser, so a
    tenant cannot have one. Settings the database's owner attached to the database are
    undone first (`_neutral_session`).
    """
    role_name = sql.Identifier(role)
    databases = [
        str(row[0])
        for row in conn.execute(
            """
            SELECT DISTINCT d.datname
              FROM pg_shdepend s
              JOIN pg_database d ON d.oid = s.dbid
              JOIN pg_roles r ON r.oid = s.refobjid
             WHERE s.refclassid = 'pg_authid'::regclass AND r.rolname = %s
            """,
            (role,),
        ).fetchall()
    ]
    if (
        not databases
        and not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    ):
        return
    here = conn.info.dbname
    conn.execute(sql.SQL("DROP OWNED BY {}").format(role_name))
    for database in databases:
        if database == here:
            continue
        with _connect(
            admin.with_dbname(database), doing=f"revoking what was granted to {role}"
        ) as other:
            _neutral_session(other)
            other.execute(sql.SQL("DROP OWNED BY {}").format(role_name))
    conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role_name))


def drop_stale_verifiers(
    conn: psycopg.Connection[tuple[object, ...]], *, now: datetime, admin: ConnectionInfo
) -> int:
    """Drop expired verification logins (prefix, marker and validity) and their databases.

    Privileges others granted such a login are revoked first (see `_release_and_drop_role`);
    `admin` is how to reach the databases where they were granted.

    Returns how many logins were dropped; failures are logged, never raised.
    """
    rows = conn.execute(
        """
        SELECT r.rolname, ARRAY(SELECT d.datname FROM pg_database d WHERE d.datdba = r.oid)
          FROM pg_roles r
         WHERE starts_with(r.rolname, %s)
           AND shobj_description(r.oid, 'pg_authid') = %s
           AND r.rolvaliduntil IS NOT NULL AND r.rolvaliduntil < %s
        """,
        (VERIFIER_ROLE_PREFIX, VERIFIER_ROLE_MARKER, now),
    ).fetchall()
    dropped = 0
    for role, databases in rows:
        try:
            for database in databases if isinstance(databases, list) else ():
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(str(database))
                    )
                )
            _release_and_drop_role(conn, admin, str(role))
        except (psycopg.Error, SourceUnavailable) as error:
            logger.warning(
                "could not drop the leftover verification login %s: %s",
                role,
                (error.diag.message_primary if isinstance(error, psycopg.Error) else None)
                or getattr(error, "message", None)
                or type(error).__name__,
            )
            continue
        dropped += 1
        logger.info("dropped the leftover verification login %s and its databases", role)
    return dropped

"""Tenant databases and roles: provision, rotate, check, drop.

Each tenant gets one database and one login role of the same name,
``cleo_<tenant>`` (``-`` becomes ``_``), on its site. Why it is built this way:

- Isolation is enforced by PostgreSQL, not by convention: the role is a plain login
  role (no superuser, createdb, createrole, replication, bypassrls) with a connection
  limit; PUBLIC loses every privilege on the database (CONNECT, TEMPORARY, CREATE) so
  other tenants' roles cannot even connect; the role owns its database and its
  ``public`` schema, and PUBLIC cannot create objects in that schema.
- Level-based and idempotent: :func:`ensure_tenant_database` reads what exists,
  changes only what differs (a changed connection limit converges) and reports what
  it changed, so a no-op reconcile makes no writes.
- Never touch what is not ours: what the operator makes is marked with a comment
  (``cleo-operator tenant=<name>``). A database or role of the tenant's name without
  our mark is a :class:`NameCollision`; it is reported and left alone, also by drop.
- Passwords: the SCRAM verifier is computed here and only the verifier is sent
  (see :mod:`cleo_operator.data.scram`); the session's statement logging is also
  switched off for that transaction where the admin may do so.
- Every identifier and literal goes through ``psycopg.sql``; no SQL is built by
  string formatting.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Final
from urllib.parse import quote

import psycopg
from psycopg import sql

from cleo_operator.data.errors import (
    DataError,
    InvalidDatabaseSettings,
    InvalidTenantName,
    NameCollision,
    ObjectsStillDepend,
    PermissionDenied,
    QueryFailed,
    SiteUnavailable,
    TenantDatabaseMissing,
    redact,
)
from cleo_operator.data.pool import Connection, SitePools, classify_connect_error
from cleo_operator.data.scram import (
    is_operators_form,
    scram_sha256_verifier,
    verifier_iterations,
    verifier_matches,
)
from cleo_operator.data.sites import CA_KEY, CA_PATH, SYSTEM_ROOT_CERT, SiteConfig

logger = logging.getLogger(__name__)

PREFIX: Final = "cleo_"
MAX_TENANT_NAME: Final = 63 - len(PREFIX)
"""Longest tenant name whose database name fits PostgreSQL's 63-byte identifiers."""
MARKER_PREFIX: Final = "cleo-operator tenant="
MAX_CONNECTION_LIMIT: Final = 10_000

_TENANT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


# --------------------------------------------------------------------------- names


def _checked_tenant(tenant: str) -> str:
    if not _TENANT_NAME.match(tenant) or len(tenant) > MAX_TENANT_NAME:
        raise InvalidTenantName(
            f"tenant name {tenant!r} cannot name a database: use lowercase letters, digits "
            f"and '-', starting and ending with a letter or digit, at most "
            f"{MAX_TENANT_NAME} characters."
        )
    return tenant


def tenant_database_name(tenant: str) -> str:
    """``cleo_<tenant>`` with ``-`` as ``_`` (injective: tenant names have no ``_``)."""
    return PREFIX + _checked_tenant(tenant).replace("-", "_")


def tenant_role_name(tenant: str) -> str:
    """The tenant's login role; same name as its database (they are separate namespaces)."""
    return tenant_database_name(tenant)


def ownership_marker(tenant: str) -> str:
    """The comment that marks a database or role as made by the operator for ``tenant``."""
    return MARKER_PREFIX + _checked_tenant(tenant)


def client_root_cert(site: SiteConfig) -> str | None:
    """The ``sslrootcert`` of the tenant's clients of ``site`` (None: a weak sslMode).

    The site's CA as the pods mount it (``CA_PATH``), or libpq's ``system`` for a
    ``verify-full`` site without ``sslRootCert``. Never the operator's own path: that file
    exists in the operator's pod only.
    """
    if not site.verifies_server:
        return None
    if site.ssl_root_cert is None:
        return SYSTEM_ROOT_CERT
    if site.ca_pem is None:
        raise ValueError(
            f"site {site.name!r}: its sslRootCert was not read (load the site configuration "
            "with its CA files), so its tenants cannot be given the CA"
        )
    return CA_PATH


def database_url(site: SiteConfig, *, tenant: str, password: str) -> str:
    """``postgresql://`` URL for the tenant's application (user and password URL-encoded).

    It names the CA file the pods mount (``sslrootcert``) when the site verifies the
    server. The result holds the password: put it in a Secret, never in logs or status.
    """
    host = f"[{site.host}]" if ":" in site.host else site.host
    user = quote(tenant_role_name(tenant), safe="")
    database = quote(tenant_database_name(tenant), safe="")
    secret = quote(password, safe="")
    query = f"sslmode={site.sslmode}"
    root_cert = client_root_cert(site)
    if root_cert is not None:
        query += f"&sslrootcert={quote(root_cert, safe='/')}"
    return f"postgresql://{user}:{secret}@{host}:{site.port}/{database}?{query}"


def site_client_values(site: SiteConfig, *, tenant: str, password: str) -> dict[str, str]:
    """The credentials Secret's keys that depend on the site (what failover repoints).

    ``PGHOST``, ``PGPORT``, ``PGSSLMODE``, ``DATABASE_URL`` always; ``PGSSLROOTCERT`` when
    the site verifies the server; ``CA_KEY`` (the PEM) when it has a CA of its own.
    """
    values = {
        "PGHOST": site.host,
        "PGPORT": str(site.port),
        "PGSSLMODE": site.sslmode,
    }
    root_cert = client_root_cert(site)
    if root_cert is not None:
        values["PGSSLROOTCERT"] = root_cert
    if root_cert == CA_PATH and site.ca_pem is not None:
        values[CA_KEY] = site.ca_pem
    values["DATABASE_URL"] = database_url(site, tenant=tenant, password=password)
    return values


SITE_CLIENT_OPTIONAL_KEYS: Final = ("PGSSLROOTCERT", CA_KEY)
"""Keys of ``site_client_values`` that a site may not have (removed when it has not)."""


# --------------------------------------------------------------------------- results


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ProvisionResult:
    """What :func:`ensure_tenant_database` found and did."""

    site: str
    """The site the database lives on."""
    database: str
    """Name of the tenant's database."""
    role: str
    """Name of the tenant's login role."""
    changes: tuple[str, ...]
    """What was changed, in words (empty when everything already was as wanted)."""

    @property
    def changed(self) -> bool:
        return bool(self.changes)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class DropResult:
    """What :func:`drop_tenant_database` removed."""

    site: str
    """The site the database lived on."""
    dropped_database: bool
    """The database existed and was dropped."""
    dropped_role: bool
    """The role existed and was dropped."""


# --------------------------------------------------------------------------- provisioning


def ensure_tenant_database(
    pools: SitePools,
    site: str,
    *,
    tenant: str,
    password: str,
    connection_limit: int,
) -> ProvisionResult:
    """Make the tenant's role and database exist exactly as wanted; idempotent.

    Raises :class:`NameCollision` when a database or role of that name exists without
    the operator's mark, :class:`SiteUnavailable` / :class:`AuthenticationFailed` when
    the site cannot be used, and :class:`PermissionDenied` when the site admin lacks a
    privilege this needs.
    """
    database = tenant_database_name(tenant)
    role = tenant_role_name(tenant)
    _check_password(password)
    _check_connection_limit(connection_limit)
    secrets = (password,)
    changes: list[str] = []
    try:
        with pools.connection(site) as conn:
            superuser = _is_superuser(conn)
            new_role = _ensure_role(
                conn,
                site=site,
                tenant=tenant,
                role=role,
                connection_limit=connection_limit,
                changes=changes,
            )
            if new_role:
                _set_role_password(conn, role, password)
            _ensure_database(
                conn,
                site=site,
                tenant=tenant,
                database=database,
                role=role,
                superuser=superuser,
                changes=changes,
            )
            password_ok = new_role or _password_matches(conn, role, password)
        with pools.direct_connection(site, dbname=database) as tenant_conn:
            _ensure_schema(tenant_conn, role=role, changes=changes)
        if password_ok is None:
            # The admin may not read pg_authid: log in as the tenant to find out.
            password_ok = _can_log_in(pools.site(site), tenant=tenant, password=password)
        if not password_ok:
            with pools.connection(site) as conn:
                _set_role_password(conn, role, password)
            changes.append("set the role's password")
    except psycopg.Error as error:
        raise _query_error(
            error, site=site, doing=f"provisioning {database!r}", secrets=secrets
        ) from None
    if changes:
        logger.info(
            "site %s: tenant %s database %s: %s", site, tenant, database, "; ".join(changes)
        )
    return ProvisionResult(site=site, database=database, role=role, changes=tuple(changes))


def set_tenant_password(pools: SitePools, site: str, *, tenant: str, password: str) -> None:
    """Give the tenant's role a new password: it works at once, the old one stops working.

    Sessions already open stay open (killing them would cut the application off in
    the middle of a rotation); new logins need the new password.
    """
    role = tenant_role_name(tenant)
    _check_password(password)
    try:
        with pools.connection(site) as conn:
            row = _role_row(conn, role)
            if row is None:
                raise TenantDatabaseMissing(
                    f"site {site!r}: role {role!r} does not exist, so its password cannot be "
                    "set; provision the tenant's database first.",
                    site=site,
                )
            _require_marker(row.comment, tenant=tenant, kind="role", name=role, site=site)
            _set_role_password(conn, role, password)
    except psycopg.Error as error:
        raise _query_error(
            error, site=site, doing=f"setting the password of {role!r}", secrets=(password,)
        ) from None
    logger.info("site %s: tenant %s: password of role %s set", site, tenant, role)


def check_tenant_connection(site: SiteConfig, *, tenant: str, password: str) -> None:
    """Log in as the tenant's role to its database and run ``SELECT 1``.

    Returns quietly when that works; otherwise raises :class:`AuthenticationFailed`,
    :class:`PermissionDenied`, :class:`TenantDatabaseMissing` or
    :class:`SiteUnavailable` with the reason.
    """
    role = tenant_role_name(tenant)
    database = tenant_database_name(tenant)
    try:
        with psycopg.connect(
            **site.connection_kwargs(dbname=database), user=role, password=password, autocommit=True
        ) as conn:
            conn.execute("SELECT 1").fetchone()
    except psycopg.OperationalError as error:
        if isinstance(error, psycopg.errors.ConnectionTimeout) or error.sqlstate is None:
            raise classify_connect_error(
                error, site, user=role, secrets=(password,), dbname=database
            ) from None
        raise _query_error(
            error, site=site.name, doing=f"checking {database!r}", secrets=(password,)
        ) from None
    except psycopg.Error as error:
        raise _query_error(
            error, site=site.name, doing=f"checking {database!r}", secrets=(password,)
        ) from None


def drop_tenant_database(pools: SitePools, site: str, *, tenant: str) -> DropResult:
    """Drop the tenant's database (ending its sessions) and then its role.

    Only what carries the operator's mark for this tenant is dropped; a foreign
    database or role of that name raises :class:`NameCollision` and is left alone.
    Dropping what does not exist is not an error (deletion is retried).
    """
    database = tenant_database_name(tenant)
    role = tenant_role_name(tenant)
    dropped_database = dropped_role = False
    try:
        with pools.connection(site) as conn:
            db_row = _database_row(conn, database, role)
            role_row = _role_row(conn, role)
            # Check both marks before changing anything.
            if db_row is not None:
                _require_marker(
                    db_row.comment, tenant=tenant, kind="database", name=database, site=site
                )
            if role_row is not None:
                _require_marker(role_row.comment, tenant=tenant, kind="role", name=role, site=site)
            if db_row is not None:
                conn.execute(
                    sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(database))
                )
                dropped_database = True
            if role_row is not None:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                    (role,),
                )
                try:
                    conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
                except psycopg.errors.DependentObjectsStillExist as error:
                    detail = (error.diag.message_detail or "").replace("\n", "; ")
                    raise ObjectsStillDepend(
                        f"site {site!r}: role {role!r} cannot be dropped, objects in other "
                        f"databases depend on it ({detail}); reassign or drop them, e.g. with "
                        "REASSIGN OWNED / DROP OWNED in those databases.",
                        site=site,
                    ) from None
                dropped_role = True
    except psycopg.Error as error:
        raise _query_error(error, site=site, doing=f"dropping {database!r}", secrets=()) from None
    logger.info(
        "site %s: tenant %s: dropped database=%s role=%s",
        site,
        tenant,
        dropped_database,
        dropped_role,
    )
    return DropResult(site=site, dropped_database=dropped_database, dropped_role=dropped_role)


# --------------------------------------------------------------------------- steps


@dataclasses.dataclass(frozen=True, slots=True)
class _RoleRow:
    can_login: bool
    privileged: bool  # any of superuser, createdb, createrole, replication, bypassrls
    connection_limit: int
    comment: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class _DatabaseRow:
    owner: str
    comment: str | None
    public_privileges: bool  # PUBLIC still has CONNECT, TEMPORARY or CREATE
    role_can_connect: bool


def _role_row(conn: Connection, role: str) -> _RoleRow | None:
    row = conn.execute(
        """
        SELECT rolcanlogin,
               rolsuper OR rolcreatedb OR rolcreaterole OR rolreplication OR rolbypassrls,
               rolconnlimit,
               shobj_description(oid, 'pg_authid')
          FROM pg_roles WHERE rolname = %s
        """,
        (role,),
    ).fetchone()
    return None if row is None else _RoleRow(*row)


def _database_row(conn: Connection, database: str, role: str) -> _DatabaseRow | None:
    row = conn.execute(
        """
        SELECT pg_get_userbyid(d.datdba),
               shobj_description(d.oid, 'pg_database'),
               has_database_privilege('public', d.oid, 'CONNECT')
                 OR has_database_privilege('public', d.oid, 'TEMPORARY')
                 OR has_database_privilege('public', d.oid, 'CREATE'),
               EXISTS (SELECT FROM pg_roles WHERE rolname = %(role)s)
                 AND has_database_privilege(%(role)s, d.oid, 'CONNECT')
          FROM pg_database d WHERE d.datname = %(database)s
        """,
        {"database": database, "role": role},
    ).fetchone()
    return None if row is None else _DatabaseRow(*row)


def _is_superuser(conn: Connection) -> bool:
    row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    return bool(row and row[0])


def _require_marker(comment: str | None, *, tenant: str, kind: str, name: str, site: str) -> None:
    if comment == ownership_marker(tenant):
        return
    owner = (
        f"marked {comment!r}"
        if comment and comment.startswith(MARKER_PREFIX)
        else "not made by cleo-operator"
    )
    raise NameCollision(
        f"site {site!r}: a {kind} named {name!r} already exists and is {owner}; the operator "
        f"will not touch it. Rename or remove it, or give the tenant another name.",
        site=site,
    )


def _ensure_role(
    conn: Connection,
    *,
    site: str,
    tenant: str,
    role: str,
    connection_limit: int,
    changes: list[str],
) -> bool:
    """Create or converge the role; returns True when it was created now."""
    row = _role_row(conn, role)
    ident = sql.Identifier(role)
    if row is None:
        with conn.transaction():
            conn.execute(
                sql.SQL(
                    "CREATE ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                    "NOREPLICATION NOBYPASSRLS CONNECTION LIMIT {}"
                ).format(ident, sql.Literal(connection_limit))
            )
            conn.execute(
                sql.SQL("COMMENT ON ROLE {} IS {}").format(
                    ident, sql.Literal(ownership_marker(tenant))
                )
            )
        changes.append("created the role")
        return True
    _require_marker(row.comment, tenant=tenant, kind="role", name=role, site=site)
    if row.privileged or not row.can_login:
        conn.execute(
            sql.SQL(
                "ALTER ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                "NOREPLICATION NOBYPASSRLS"
            ).format(ident)
        )
        changes.append("reset the role's attributes")
    if row.connection_limit != connection_limit:
        conn.execute(
            sql.SQL("ALTER ROLE {} WITH CONNECTION LIMIT {}").format(
                ident, sql.Literal(connection_limit)
            )
        )
        changes.append(
            f"changed the connection limit from {row.connection_limit} to {connection_limit}"
        )
    return False


def _ensure_database(
    conn: Connection,
    *,
    site: str,
    tenant: str,
    database: str,
    role: str,
    superuser: bool,
    changes: list[str],
) -> None:
    row = _database_row(conn, database, role)
    db, owner = sql.Identifier(database), sql.Identifier(role)
    if row is None:
        if not superuser:
            # A non-superuser may only create a database owned by a role it belongs to.
            conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(owner))
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING 'UTF8'").format(
                db, owner
            )
        )
        conn.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                db, sql.Literal(ownership_marker(tenant))
            )
        )
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
        conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(db, owner))
        changes.append("created the database")
        return
    _require_marker(row.comment, tenant=tenant, kind="database", name=database, site=site)
    if row.owner != role:
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, owner))
        changes.append(f"gave the database to its role (owner was {row.owner!r})")
    if row.public_privileges:
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
        changes.append("revoked PUBLIC's privileges on the database")
    if not row.role_can_connect:
        conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(db, owner))
        changes.append("granted CONNECT to the role")


def _ensure_schema(conn: Connection, *, role: str, changes: list[str]) -> None:
    row = conn.execute(
        """
        SELECT pg_get_userbyid(nspowner), has_schema_privilege('public', oid, 'CREATE')
          FROM pg_namespace WHERE nspname = 'public'
        """
    ).fetchone()
    if row is None:
        conn.execute(sql.SQL("CREATE SCHEMA public AUTHORIZATION {}").format(sql.Identifier(role)))
        changes.append("created schema public")
        return
    owner, public_can_create = row
    if owner != role:
        conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(role)))
        changes.append("gave schema public to the role")
    if public_can_create:
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        changes.append("revoked CREATE on schema public from PUBLIC")


def _set_role_password(conn: Connection, role: str, password: str) -> None:
    """Store a SCRAM verifier computed here; keep the statement out of the server's logs."""
    verifier = scram_sha256_verifier(password)
    with conn.transaction():
        for setting, value in _QUIET_SETTINGS:
            try:
                with conn.transaction():  # a savepoint: a refused SET must not abort the rest
                    conn.execute(
                        sql.SQL("SET LOCAL {} = {}").format(
                            sql.Identifier(*setting), sql.Literal(value)
                        )
                    )
            except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedObject):
                logger.debug("cannot SET %s in this session; continuing", setting)
            except psycopg.errors.InvalidParameterValue:
                logger.debug("setting %s not available; continuing", setting)
        conn.execute(
            sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(verifier)
            )
        )


# Settings that would otherwise write the ALTER ROLE statement to the server's log or
# to pg_stat_statements. All are superuser-only; with a lesser admin only the verifier
# (never the plaintext) can end up there.
_QUIET_SETTINGS: Final[tuple[tuple[tuple[str, ...], str], ...]] = (
    (("log_statement",), "none"),
    (("log_min_duration_statement",), "-1"),
    (("log_min_error_statement",), "panic"),
    (("pg_stat_statements", "track_utility"), "off"),
)


def _password_matches(conn: Connection, role: str, password: str) -> bool | None:
    """Whether the stored verifier is for ``password``; None if the admin may not read it."""
    try:
        with conn.transaction():
            row = conn.execute(
                "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)
            ).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        return None
    stored = row[0] if row else None
    if stored and not is_operators_form(stored):
        # A role may set its own verifier, with any iteration count: never derive PBKDF2
        # from it (minutes of CPU per reconcile); set the operator's verifier instead.
        iterations = verifier_iterations(stored)
        logger.warning(
            "role %s has a password verifier the operator did not make (%s); resetting it to "
            "the password of the credentials Secret",
            role,
            f"SCRAM-SHA-256 with {iterations} iterations"
            if iterations is not None
            else "not a SCRAM-SHA-256 verifier of the operator's form",
        )
        return False
    return verifier_matches(password, stored)


def _can_log_in(site: SiteConfig, *, tenant: str, password: str) -> bool:
    """Whether the tenant can log in with ``password``; any failure means "set it again"."""
    try:
        check_tenant_connection(site, tenant=tenant, password=password)
    except DataError:
        return False
    return True


def _check_password(password: str) -> None:
    if not password:
        raise InvalidDatabaseSettings("the tenant's database password must not be empty.")
    if "\x00" in password:
        raise InvalidDatabaseSettings(
            "the tenant's database password must not contain NUL characters."
        )


def _check_connection_limit(limit: int) -> None:
    if limit != -1 and not 1 <= limit <= MAX_CONNECTION_LIMIT:
        raise InvalidDatabaseSettings(
            f"connection limit {limit} is out of range: use -1 (no limit) "
            f"or 1..{MAX_CONNECTION_LIMIT}."
        )


def _query_error(
    error: psycopg.Error, *, site: str, doing: str, secrets: tuple[str, ...]
) -> DataError:
    """A typed error for a failed statement, with PostgreSQL's message minus secrets."""
    message = redact(error.diag.message_primary or str(error).strip(), secrets)
    if isinstance(error, psycopg.errors.InsufficientPrivilege):
        return PermissionDenied(
            f"site {site!r}: the site admin lacks a privilege for {doing}: {message}. Give the "
            "admin CREATEDB and CREATEROLE (or make it a superuser).",
            site=site,
        )
    if isinstance(error, psycopg.errors.QueryCanceled):
        return QueryFailed(
            f"site {site!r}: {doing} timed out ({message}); is something holding locks?",
            site=site,
        )
    if isinstance(error, psycopg.OperationalError):
        return SiteUnavailable(
            f"site {site!r}: connection lost while {doing}: {message}", site=site
        )
    return QueryFailed(f"site {site!r}: {doing} failed: {message}", site=site)

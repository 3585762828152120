"""Fencing: the tenant's database on the old primary takes no more writes.

Split brain is two servers taking the tenant's writes. The failover prevents it in this
order: the writers are stopped (the workload scaled to zero), then the old primary is
fenced, and only then is the standby promoted. Fencing, on the old primary:

1. ``ALTER ROLE ... NOLOGIN``: the tenant's role cannot open new sessions. First, so that
   a session ended in step 3 cannot come straight back.
2. ``ALTER DATABASE ... SET default_transaction_read_only = on``: new sessions of anyone
   else start read-only in the tenant's database (a second line, for other roles).
3. ``pg_terminate_backend`` of every session of the role and in the database: what was
   open ends; transactions in flight roll back.

Each is idempotent, so a fence that was interrupted is simply done again. Only the role
and database the operator made for this tenant (its ownership mark) are touched.

The fence is written to WAL like any change. In a switchover the old primary still
streams to the standby, so the standby receives the fence too and the promoted server
would refuse the tenant: :func:`unfence_tenant` opens the tenant's role and database on the
new primary after promotion. A primary that was unreachable during a failover is fenced
when it answers again (the failover keeps trying, see ``OldPrimaryFenced``); its role
then stays NOLOGIN across restarts, because the fence is stored in its catalog.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Final

import psycopg
from psycopg import sql

from cleo_operator.data.errors import (
    DataError,
    NameCollision,
    PermissionDenied,
    QueryFailed,
    SiteUnavailable,
    TenantDatabaseMissing,
)
from cleo_operator.data.pool import Connection, SitePools
from cleo_operator.data.tenant_db import ownership_marker, tenant_database_name, tenant_role_name

__all__ = ["FenceState", "fence_state", "fence_tenant", "unfence_tenant"]

logger = logging.getLogger(__name__)

READ_ONLY_SETTING: Final = "default_transaction_read_only"


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class FenceState:
    """The tenant's role and database on one site, as far as fencing goes."""

    site: str
    """The site asked."""
    role_can_login: bool
    """The tenant's role may open sessions."""
    database_read_only: bool
    """New sessions in the tenant's database start read-only."""
    sessions: int
    """Sessions of the tenant's role or in its database (before any termination)."""

    @property
    def fenced(self) -> bool:
        return not self.role_can_login and self.database_read_only


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class FenceResult:
    """What :func:`fence_tenant` or :func:`unfence_tenant` did."""

    site: str
    changes: tuple[str, ...]
    """What was changed, in words (empty when it already was so)."""
    sessions_ended: int = 0
    """Sessions terminated (fence only)."""


def _error(error: psycopg.Error, *, site: str, doing: str) -> DataError:
    detail = error.diag.message_primary or type(error).__name__
    if isinstance(error, psycopg.errors.InsufficientPrivilege):
        return PermissionDenied(
            f"site {site!r}: the site admin may not {doing}: {detail}. It needs CREATEROLE, "
            "ownership of (or membership in) the tenant's role, and pg_signal_backend (or "
            "superuser).",
            site=site,
        )
    if isinstance(error, psycopg.OperationalError):
        return SiteUnavailable(f"site {site!r}: connection lost while {doing}: {detail}", site=site)
    return QueryFailed(f"site {site!r}: {doing} failed: {detail}", site=site)


def _state(conn: Connection, *, site: str, tenant: str) -> FenceState:
    name = tenant_database_name(tenant)
    row = conn.execute(
        """
        SELECT r.rolcanlogin,
               shobj_description(r.oid, 'pg_authid'),
               shobj_description(d.oid, 'pg_database'),
               EXISTS (SELECT FROM pg_db_role_setting s
                        WHERE s.setdatabase = d.oid AND s.setrole = 0
                          AND %(setting)s = ANY (s.setconfig)),
               (SELECT count(*) FROM pg_stat_activity a
                 WHERE (a.usename = %(name)s OR a.datname = %(name)s)
                   AND a.pid <> pg_backend_pid())
          FROM pg_roles r, pg_database d
         WHERE r.rolname = %(name)s AND d.datname = %(name)s
        """,
        {"name": name, "setting": f"{READ_ONLY_SETTING}=on"},
    ).fetchone()
    if row is None:
        raise TenantDatabaseMissing(
            f"site {site!r}: tenant {tenant!r} has no database or role {name!r} there",
            site=site,
        )
    can_login, role_comment, db_comment, read_only, sessions = row
    marker = ownership_marker(tenant)
    for kind, comment in (("role", role_comment), ("database", db_comment)):
        if comment != marker:
            raise NameCollision(
                f"site {site!r}: the {kind} {name!r} was not made by cleo-operator for tenant "
                f"{tenant!r}; the failover will not touch it.",
                site=site,
            )
    return FenceState(
        site=site,
        role_can_login=bool(can_login),
        database_read_only=bool(read_only),
        sessions=int(sessions),
    )


def fence_state(pools: SitePools, site: str, *, tenant: str) -> FenceState:
    """Whether the tenant is fenced on the site (read only)."""
    try:
        with pools.connection(site) as conn:
            return _state(conn, site=site, tenant=tenant)
    except psycopg.Error as error:
        raise _error(error, site=site, doing="reading the tenant's fence") from None


def fence_tenant(pools: SitePools, site: str, *, tenant: str) -> FenceResult:
    """Stop the tenant's writes on the site: NOLOGIN, read-only database, sessions ended.

    Idempotent. The server must be a primary (a standby takes no ALTER). Raises the data
    layer's errors; ``SiteUnavailable`` means the server did not answer.
    """
    name = tenant_database_name(tenant)
    role = sql.Identifier(tenant_role_name(tenant))
    changes: list[str] = []
    try:
        with pools.connection(site) as conn:
            state = _state(conn, site=site, tenant=tenant)
            if state.role_can_login:
                conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(role))
                changes.append("revoked LOGIN of the tenant's role")
            if not state.database_read_only:
                conn.execute(
                    sql.SQL("ALTER DATABASE {} SET {} = on").format(
                        sql.Identifier(name), sql.Identifier(READ_ONLY_SETTING)
                    )
                )
                changes.append("made the tenant's database read-only for new sessions")
            row = conn.execute(
                """
                SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
                  FROM pg_stat_activity
                 WHERE (usename = %(name)s OR datname = %(name)s) AND pid <> pg_backend_pid()
                """,
                {"name": name},
            ).fetchone()
            ended = int(row[0]) if row else 0
    except psycopg.Error as error:
        raise _error(error, site=site, doing="fencing the tenant") from None
    if ended:
        changes.append(f"ended {ended} session(s)")
    if changes:
        logger.info("site %s: tenant %s fenced: %s", site, tenant, "; ".join(changes))
    return FenceResult(site=site, changes=tuple(changes), sessions_ended=ended)


def unfence_tenant(pools: SitePools, site: str, *, tenant: str) -> FenceResult:
    """Open the tenant's role and database on the site (the new primary); idempotent."""
    name = tenant_database_name(tenant)
    changes: list[str] = []
    try:
        with pools.connection(site) as conn:
            state = _state(conn, site=site, tenant=tenant)
            if not state.role_can_login:
                conn.execute(
                    sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(tenant_role_name(tenant)))
                )
                changes.append("granted LOGIN to the tenant's role")
            if state.database_read_only:
                conn.execute(
                    sql.SQL("ALTER DATABASE {} RESET {}").format(
                        sql.Identifier(name), sql.Identifier(READ_ONLY_SETTING)
                    )
                )
                changes.append("made the tenant's database writable again")
    except psycopg.Error as error:
        raise _error(error, site=site, doing="opening the tenant's database") from None
    if changes:
        logger.info("site %s: tenant %s opened: %s", site, tenant, "; ".join(changes))
    return FenceResult(site=site, changes=tuple(changes))

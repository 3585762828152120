"""What the servers of a failover say about themselves: role, lineage, WAL positions, lag.

Why the failover reads these itself instead of only asking the data layer's
``replication_lag``: a primary may stream to several standbys, and ``replication_lag``
answers with the worst of them, while a failover needs the distance between *its* two
servers. So it reads the primary's WAL insert position and the target's received and
replayed positions and subtracts, in bytes (the LSNs), which needs no assumption about
how the standby is named in ``pg_stat_replication``.

"Is the target a standby *of this primary*?" is answered by the lineage: a standby made
from a primary (``pg_basebackup``) has the primary's ``system_identifier``, and keeps it
after promotion; an unrelated server has another one. Host names are not compared: the
standby may reach its primary by an address the operator does not know.

Every function raises the data layer's errors (``SiteUnavailable``, ``QueryFailed``...);
callers decide what an unreachable server means for their step.
"""

from __future__ import annotations

import dataclasses
import logging

import psycopg

from cleo_operator.data.errors import DataError, QueryFailed, SiteUnavailable
from cleo_operator.data.pool import SitePools
from cleo_operator.data.tenant_db import ownership_marker, tenant_database_name

__all__ = [
    "LagEstimate",
    "ServerState",
    "StandbyPosition",
    "lsn_bytes",
    "measure_lag",
    "primary_insert_lsn",
    "server_state",
    "standby_position",
    "tenant_database_present",
]

logger = logging.getLogger(__name__)


def lsn_bytes(lsn: str) -> int:
    """A WAL position (``16/B374D848``) as a byte offset."""
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ServerState:
    """One server as it describes itself."""

    site: str
    """The site asked."""
    in_recovery: bool
    """A standby (or a server still recovering): it takes no writes."""
    system_identifier: int
    """The cluster's lineage: equal on a primary and the standbys made from it."""
    receiving: bool
    """A standby's WAL receiver streams from its primary right now."""
    replay_paused: bool
    """A standby's replay is paused (``pg_wal_replay_pause()``): it will not catch up."""


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class StandbyPosition:
    """How far a standby has received and replayed WAL."""

    received: int | None
    """Byte offset of the WAL received and flushed (None: nothing streamed since start)."""
    replayed: int
    """Byte offset of the WAL replayed (what promotion keeps at the least)."""
    replay_age_seconds: float | None
    """Age of the last replayed transaction when WAL waits to be replayed, else 0."""


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class LagEstimate:
    """How much of the primary's data the standby lacks, and how it was found out."""

    bytes: int | None
    """WAL bytes (None: unknown)."""
    seconds: float | None
    """An estimate in time (None: unknown)."""
    how: str
    """Where the numbers come from, for people."""


def _query_error(error: psycopg.Error, *, site: str, doing: str) -> DataError:
    detail = error.diag.message_primary or type(error).__name__
    if isinstance(error, psycopg.OperationalError):
        return SiteUnavailable(f"site {site!r}: connection lost while {doing}: {detail}", site=site)
    return QueryFailed(
        f"site {site!r}: {doing} failed: {detail}; the site admin needs pg_monitor (or "
        "superuser) to read replication state.",
        site=site,
    )


def server_state(pools: SitePools, site: str) -> ServerState:
    """Role, lineage and WAL receiver of the site's server."""
    try:
        with pools.connection(site) as conn:
            row = conn.execute(
                """
                SELECT pg_is_in_recovery(),
                       (SELECT system_identifier FROM pg_control_system()),
                       EXISTS (SELECT FROM pg_stat_wal_receiver WHERE status = 'streaming'),
                       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused()
                            ELSE false END
                """
            ).fetchone()
    except psycopg.Error as error:
        raise _query_error(error, site=site, doing="reading the server's state") from None
    if row is None:  # pragma: no cover  (a SELECT without FROM returns one row)
        raise QueryFailed(f"site {site!r}: no answer about its state", site=site)
    in_recovery, system_identifier, receiving, paused = row
    return ServerState(
        site=site,
        in_recovery=bool(in_recovery),
        system_identifier=int(system_identifier),
        receiving=bool(receiving),
        replay_paused=bool(paused),
    )


def primary_insert_lsn(pools: SitePools, site: str) -> int:
    """The primary's WAL insert position (committed data may still sit in WAL buffers)."""
    try:
        with pools.connection(site) as conn:
            row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    except psycopg.Error as error:
        raise _query_error(error, site=site, doing="reading the WAL position") from None
    if row is None:  # pragma: no cover
        raise QueryFailed(f"site {site!r}: no WAL position", site=site)
    return lsn_bytes(str(row[0]))


def standby_position(pools: SitePools, site: str) -> StandbyPosition:
    """What the standby has received and replayed."""
    try:
        with pools.connection(site) as conn:
            row = conn.execute(
                """
                SELECT pg_last_wal_receive_lsn()::text,
                       pg_last_wal_replay_lsn()::text,
                       CASE WHEN pg_last_wal_receive_lsn() IS NULL
                                 OR pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn()
                            THEN 0.0
                            ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())
                       END::float8
                """
            ).fetchone()
    except psycopg.Error as error:
        raise _query_error(error, site=site, doing="reading the standby's WAL position") from None
    if row is None or row[1] is None:
        raise QueryFailed(
            f"site {site!r} is not a standby (it reports no replayed WAL position)", site=site
        )
    received, replayed, age = row
    return StandbyPosition(
        received=None if received is None else lsn_bytes(str(received)),
        replayed=lsn_bytes(str(replayed)),
        replay_age_seconds=None if age is None else max(0.0, float(age)),
    )


def measure_lag(pools: SitePools, *, primary: str, standby: str) -> LagEstimate:
    """The distance from the primary's WAL to what the standby has replayed.

    The primary is asked first: data written in between is counted as not replicated,
    so the number errs on the side of caution. Seconds are the age of the standby's last
    replayed transaction while WAL waits to be replayed (0 when it has caught up).
    """
    target = primary_insert_lsn(pools, primary)
    position = standby_position(pools, standby)
    lag = max(0, target - position.replayed)
    seconds = 0.0 if lag == 0 else position.replay_age_seconds
    return LagEstimate(
        bytes=lag,
        seconds=seconds,
        how=f"primary {primary!r} WAL position against what standby {standby!r} has replayed",
    )


def tenant_database_present(pools: SitePools, site: str, *, tenant: str) -> bool:
    """Whether the site has the tenant's database and role, made by the operator."""
    name = tenant_database_name(tenant)
    marker = ownership_marker(tenant)
    try:
        with pools.connection(site) as conn:
            row = conn.execute(
                """
                SELECT EXISTS (SELECT FROM pg_database d WHERE d.datname = %(name)s
                                 AND shobj_description(d.oid, 'pg_database') = %(marker)s),
                       EXISTS (SELECT FROM pg_roles r WHERE r.rolname = %(name)s
                                 AND shobj_description(r.oid, 'pg_authid') = %(marker)s)
                """,
                {"name": name, "marker": marker},
            ).fetchone()
    except psycopg.Error as error:
        raise _query_error(error, site=site, doing="looking for the tenant's database") from None
    return bool(row and row[0] and row[1])

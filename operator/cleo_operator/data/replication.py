"""Replication lag and promotion of a site's standby.

Failover needs two numbers before it acts (how far behind is the standby, in bytes
and in seconds) and one action (promote). Why it is built this way:

- Lag is read from whichever side is asked. On a primary, ``pg_stat_replication``
  says how far each connected standby has replayed; on a standby, the distance
  between WAL received and WAL replayed, and the age of the last replayed
  transaction. A number that cannot be known is ``None``, never a hopeful zero: a
  standby whose WAL receiver is not streaming reports ``streaming=False``.
- Promotion uses ``pg_promote(wait => true)`` so the call returns only once the
  server accepts writes (or the wait ran out, which raises). Promoting a server
  that already is a primary is not an error, so a resumed failover step can repeat it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Literal

import psycopg
from psycopg import sql

from cleo_operator.data.errors import PromotionFailed, QueryFailed, SiteUnavailable
from cleo_operator.data.pool import Connection, SitePools

logger = logging.getLogger(__name__)

ServerRole = Literal["primary", "standby"]


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class StandbyLag:
    """One standby as its primary sees it (a row of ``pg_stat_replication``)."""

    name: str
    """The standby's ``application_name``."""
    state: str
    """WAL sender state: ``streaming``, ``catchup``, ``startup``, ``backup``, ``stopping``."""
    lag_bytes: int | None
    """WAL the primary has written that the standby has not replayed yet."""
    lag_seconds: float | None
    """``replay_lag``: how long recent WAL took to be replayed (None when idle or unknown)."""
    sync_state: str
    """``async``, ``sync``, ``potential`` or ``quorum``."""


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class LagInfo:
    """How far behind a site's data is (asked of a primary: its worst standby)."""

    site: str
    """The site that was asked."""
    role: ServerRole
    """Whether that site's server is a primary or a standby (in recovery)."""
    lag_bytes: int | None
    """Primary: the largest unreplayed WAL of its streaming standbys. Standby: WAL
    received but not replayed yet; it cannot see WAL it has not received, so ask the
    primary when it is reachable. None when unknown (no standby, not streaming)."""
    lag_seconds: float | None
    """Primary: the largest ``replay_lag``. Standby: age of the last replayed
    transaction while WAL is waiting to be replayed, else 0. None when unknown (a
    standby that has replayed no transaction since it started cannot date its lag)."""
    streaming: bool
    """Primary: at least one standby streams. Standby: its WAL receiver streams."""
    standbys: tuple[StandbyLag, ...] = ()
    """Primary only: every connected standby."""


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class PromotionResult:
    """The outcome of :func:`promote`."""

    site: str
    """The site that was promoted."""
    promoted: bool
    """True when this call promoted it; False when it already was a primary."""
    seconds: float
    """How long the promotion took, as measured here."""


def replication_lag(pools: SitePools, site: str) -> LagInfo:
    """The replication lag as the site's server sees it (primary or standby)."""
    try:
        with pools.connection(site) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            in_recovery = bool(row and row[0])
            if in_recovery:
                return _standby_lag(conn, site)
            return _primary_lag(conn, site)
    except psycopg.OperationalError as error:
        raise SiteUnavailable(
            f"site {site!r}: connection lost while reading replication lag: "
            f"{error.diag.message_primary or 'no detail'}",
            site=site,
        ) from None
    except psycopg.Error as error:
        raise QueryFailed(
            f"site {site!r}: reading replication lag failed: "
            f"{error.diag.message_primary or type(error).__name__}; the site admin needs "
            "pg_monitor (or superuser) to see replication state.",
            site=site,
        ) from None


def _primary_lag(conn: Connection, site: str) -> LagInfo:
    # Measured from the WAL *insert* position: with asynchronous commit, committed
    # transactions may still sit in WAL buffers, and that is data the standby lacks.
    rows = conn.execute(
        """
        SELECT coalesce(application_name, ''),
               coalesce(state, 'unknown'),
               pg_wal_lsn_diff(pg_current_wal_insert_lsn(), replay_lsn)::bigint,
               extract(epoch FROM replay_lag)::float8,
               coalesce(sync_state, 'unknown')
          FROM pg_stat_replication
         ORDER BY application_name
        """
    ).fetchall()
    standbys = tuple(
        StandbyLag(
            name=str(name),
            state=str(state),
            lag_bytes=None if lag_bytes is None else int(lag_bytes),
            lag_seconds=None if lag_seconds is None else float(lag_seconds),
            sync_state=str(sync_state),
        )
        for name, state, lag_bytes, lag_seconds, sync_state in rows
    )
    streaming = [s for s in standbys if s.state == "streaming"]
    byte_lags = [s.lag_bytes for s in streaming if s.lag_bytes is not None]
    # replay_lag is NULL once a standby has caught up and the primary is idle: that is 0.
    second_lags = [s.lag_seconds or 0.0 for s in streaming]
    return LagInfo(
        site=site,
        role="primary",
        lag_bytes=max(byte_lags) if byte_lags else None,
        lag_seconds=max(second_lags) if second_lags else None,
        streaming=bool(streaming),
        standbys=standbys,
    )


def _standby_lag(conn: Connection, site: str) -> LagInfo:
    row = conn.execute(
        """
        SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint,
               CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0.0
                    ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8
               END,
               EXISTS (SELECT FROM pg_stat_wal_receiver WHERE status = 'streaming')
        """
    ).fetchone()
    if row is None:  # pragma: no cover  (a SELECT without FROM returns one row)
        raise QueryFailed(f"site {site!r}: no answer to the replication lag query", site=site)
    lag_bytes, lag_seconds, streaming = row
    return LagInfo(
        site=site,
        role="standby",
        lag_bytes=None if lag_bytes is None else max(0, int(lag_bytes)),
        lag_seconds=None if lag_seconds is None else max(0.0, float(lag_seconds)),
        streaming=bool(streaming),
    )


def promote(pools: SitePools, site: str, *, wait_seconds: int = 60) -> PromotionResult:
    """Promote the site's standby to primary and wait until it accepts writes.

    Idempotent: a server that is not in recovery is reported as already promoted.
    Raises :class:`PromotionFailed` when promotion does not finish in ``wait_seconds``.
    """
    if wait_seconds < 1:
        raise ValueError("wait_seconds must be at least 1")
    started = time.monotonic()
    try:
        with pools.connection(site) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            if not (row and row[0]):
                return PromotionResult(site=site, promoted=False, seconds=0.0)
            with conn.transaction():
                # The site's statement timeout may be shorter than the promotion wait.
                conn.execute(
                    sql.SQL("SET LOCAL statement_timeout = {}").format(
                        sql.Literal(f"{(wait_seconds + 10) * 1000}")
                    )
                )
                done_row = conn.execute(
                    "SELECT pg_promote(wait => true, wait_seconds => %s)", (wait_seconds,)
                ).fetchone()
    except psycopg.OperationalError as error:
        raise SiteUnavailable(
            f"site {site!r}: connection lost while promoting: "
            f"{error.diag.message_primary or 'no detail'}",
            site=site,
        ) from None
    except psycopg.Error as error:
        raise PromotionFailed(
            f"site {site!r}: promotion failed: {error.diag.message_primary or type(error).__name__}"
            "; the site admin must be a superuser or have EXECUTE on pg_promote().",
            site=site,
        ) from None
    seconds = time.monotonic() - started
    if not (done_row and done_row[0]):
        raise PromotionFailed(
            f"site {site!r}: promotion did not finish within {wait_seconds}s; the server may "
            "still complete it. Check the server log, then retry (promotion is idempotent).",
            site=site,
        )
    logger.info("site %s promoted to primary in %.1fs", site, seconds)
    return PromotionResult(site=site, promoted=True, seconds=seconds)

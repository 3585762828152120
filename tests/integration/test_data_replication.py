"""Replication lag and promotion on a real primary/standby pair."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from cleo_operator.data.pool import SitePools
from cleo_operator.data.replication import LagInfo, promote, replication_lag
from cleo_operator.data.sites import AdminCredentials
from tests.harness.postgres import PostgresServer

pytestmark = pytest.mark.postgres


@pytest.fixture
def pair_pools(
    postgres_replica_pair: tuple[PostgresServer, PostgresServer],
) -> Iterator[SitePools]:
    primary, standby = postgres_replica_pair
    sites = {
        "primary": primary.site("primary", standby="standby"),
        "standby": standby.site("standby"),
    }
    # The standby's catalog is a copy of the primary's: same superuser password.
    creds = AdminCredentials(user=primary.superuser, password=primary.password)
    with SitePools(sites, credentials=lambda _s: creds) as pools:
        yield pools


def wait_for(check: Callable[[], LagInfo | None], *, timeout: float = 20.0) -> LagInfo:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result is not None:
            return result
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout}s")


def test_lag_is_zero_when_caught_up(
    postgres_replica_pair: tuple[PostgresServer, PostgresServer], pair_pools: SitePools
) -> None:
    primary, _ = postgres_replica_pair
    primary.execute("CREATE TABLE t AS SELECT 1 AS x")

    def caught_up() -> LagInfo | None:
        info = replication_lag(pair_pools, "primary")
        return info if info.streaming and info.lag_bytes == 0 else None

    on_primary = wait_for(caught_up)
    assert on_primary.role == "primary"
    assert len(on_primary.standbys) == 1
    assert on_primary.standbys[0].name == "cleo-standby"
    assert on_primary.standbys[0].state == "streaming"

    on_standby = replication_lag(pair_pools, "standby")
    assert on_standby.role == "standby"
    assert on_standby.streaming
    assert on_standby.lag_bytes == 0
    assert on_standby.lag_seconds == 0.0


def test_lag_grows_while_replay_is_paused(
    postgres_replica_pair: tuple[PostgresServer, PostgresServer], pair_pools: SitePools
) -> None:
    primary, standby = postgres_replica_pair
    # One replayed transaction first: the standby dates its lag from the last one.
    primary.execute("CREATE TABLE small AS SELECT 1 AS x")
    wait_for(
        lambda: info if (info := replication_lag(pair_pools, "primary")).lag_bytes == 0 else None
    )
    assert standby.execute("SELECT count(*) FROM small") == [(1,)]
    standby.execute("SELECT pg_wal_replay_pause()")
    primary.execute("CREATE TABLE big AS SELECT g AS x FROM generate_series(1, 50000) g")
    time.sleep(1.1)  # let the un-replayed transaction age

    def received_not_replayed() -> LagInfo | None:
        info = replication_lag(pair_pools, "standby")
        return info if info.lag_bytes else None

    on_standby = wait_for(received_not_replayed)
    assert on_standby.lag_bytes is not None
    assert on_standby.lag_bytes > 100_000
    assert on_standby.lag_seconds is not None
    assert on_standby.lag_seconds > 0
    on_primary = replication_lag(pair_pools, "primary")
    assert on_primary.lag_bytes is not None
    assert on_primary.lag_bytes > 100_000

    standby.execute("SELECT pg_wal_replay_resume()")

    def replayed() -> LagInfo | None:
        info = replication_lag(pair_pools, "primary")
        return info if info.lag_bytes == 0 else None

    wait_for(replayed)
    assert standby.execute("SELECT count(*) FROM big") == [(50000,)]


def test_promote_makes_the_standby_writable_and_is_idempotent(
    postgres_replica_pair: tuple[PostgresServer, PostgresServer], pair_pools: SitePools
) -> None:
    primary, standby = postgres_replica_pair
    primary.execute("CREATE TABLE before_failover (x int)")
    primary.execute("INSERT INTO before_failover VALUES (7)")
    wait_for(
        lambda: info if (info := replication_lag(pair_pools, "primary")).lag_bytes == 0 else None
    )
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        standby.execute("INSERT INTO before_failover VALUES (8)")

    result = promote(pair_pools, "standby", wait_seconds=30)
    assert result.promoted
    assert result.site == "standby"
    assert 0 < result.seconds < 30

    assert standby.execute("SELECT pg_is_in_recovery()") == [(False,)]
    standby.execute("INSERT INTO before_failover VALUES (8)")
    assert standby.execute("SELECT x FROM before_failover ORDER BY x") == [(7,), (8,)]

    again = promote(pair_pools, "standby", wait_seconds=30)
    assert (again.promoted, again.seconds) == (False, 0.0)
    lag = replication_lag(pair_pools, "standby")
    assert lag.role == "primary"
    assert (lag.streaming, lag.lag_bytes, lag.lag_seconds, lag.standbys) == (False, None, None, ())


def test_promote_rejects_a_nonsense_wait() -> None:
    creds = AdminCredentials(user="admin", password="unused")
    with (
        SitePools({}, credentials=lambda _s: creds) as pools,
        pytest.raises(ValueError, match="wait_seconds"),
    ):
        promote(pools, "standby", wait_seconds=0)

"""Site pools and circuit breakers against real servers, closed ports and blackholes."""

from __future__ import annotations

import secrets
import statistics
import threading
import time
from collections.abc import Iterator

import pytest
from psycopg import sql

from cleo_operator.data.errors import (
    AuthenticationFailed,
    SiteBusy,
    SiteUnavailable,
    UnknownSite,
)
from cleo_operator.data.pool import (
    BreakerSettings,
    BreakerState,
    CircuitBreaker,
    PoolSettings,
    SitePools,
)
from cleo_operator.data.sites import AdminCredentials, SiteConfig
from cleo_operator.data.tenant_db import ensure_tenant_database, tenant_database_name
from tests.harness.postgres import PostgresServer, free_loopback_port

CONNECT_TIMEOUT = 2  # libpq's minimum

pytestmark = pytest.mark.postgres


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused at once)."""
    return free_loopback_port()


def site(name: str, port: int, host: str = "127.0.0.1", **kwargs: object) -> SiteConfig:
    return SiteConfig(
        name=name,
        host=host,
        port=port,
        sslmode="disable",
        connect_timeout_seconds=CONNECT_TIMEOUT,
        **kwargs,  # type: ignore[arg-type]
    )


def superuser_of(server: PostgresServer) -> AdminCredentials:
    return AdminCredentials(user=server.superuser, password=server.password)


@pytest.fixture
def tenants(postgres_server: PostgresServer) -> Iterator[list[str]]:
    """Tenant names to use on the session server; all dropped afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        ident = tenant_database_name(name)
        postgres_server.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(ident))
        )
        postgres_server.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ident)))


def new_tenant(tenants: list[str]) -> str:
    name = f"p-{secrets.token_hex(4)}"
    tenants.append(name)
    return name


# --------------------------------------------------------------------------- unreachable sites


def test_closed_port_fails_fast_with_site_unavailable(closed_port: int) -> None:
    with SitePools(
        {"down": site("down", closed_port)},
        credentials=lambda _s: AdminCredentials(user="admin", password="pw-123"),
    ) as pools:
        started = time.monotonic()
        with pytest.raises(SiteUnavailable) as caught:
            ensure_tenant_database(pools, "down", tenant="a", password="p-1", connection_limit=1)
        elapsed = time.monotonic() - started
    assert elapsed < 1.0
    assert caught.value.reason == "SiteUnavailable"
    assert caught.value.site == "down"
    assert f"127.0.0.1:{closed_port}" in str(caught.value)
    assert "refused" in str(caught.value).lower()
    assert "pw-123" not in str(caught.value)


def test_blackholed_site_fails_within_connect_timeout_then_fast(blackhole: int) -> None:
    settings = PoolSettings(breaker=BreakerSettings(failure_threshold=2, cooldown_seconds=60))
    with SitePools(
        {"hole": site("hole", blackhole)},
        credentials=lambda _s: AdminCredentials(user="admin", password="pw"),
        settings=settings,
    ) as pools:
        durations = []
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(SiteUnavailable, match="connect timeout"):
                ensure_tenant_database(
                    pools, "hole", tenant="a", password="p-1", connection_limit=1
                )
            durations.append(time.monotonic() - started)
        assert all(CONNECT_TIMEOUT - 0.5 < d < CONNECT_TIMEOUT + 1.5 for d in durations), durations
        assert pools.breaker_state("hole") == "open"

        started = time.monotonic()
        with pytest.raises(SiteUnavailable, match="repeated failures") as caught:
            ensure_tenant_database(pools, "hole", tenant="a", password="p-1", connection_limit=1)
        assert time.monotonic() - started < 0.1
        assert caught.value.reason == "SiteUnavailable"
        assert "connect timeout" in str(caught.value)  # says what the last failure was


def test_dead_sites_do_not_delay_a_healthy_site(
    postgres_server: PostgresServer, blackhole: int, closed_port: int, tenants: list[str]
) -> None:
    """Operations on a healthy site take no longer while other sites hang or refuse."""
    sites = {
        "main": site("main", postgres_server.port),
        "hole": site("hole", blackhole),
        "down": site("down", closed_port),
    }
    creds = superuser_of(postgres_server)
    with SitePools(sites, credentials=lambda _s: creds) as pools:
        password = "p-" + secrets.token_hex(8)
        tenant = new_tenant(tenants)
        ensure_tenant_database(pools, "main", tenant=tenant, password=password, connection_limit=5)
        baseline = []
        for _ in range(3):
            started = time.monotonic()
            ensure_tenant_database(
                pools, "main", tenant=new_tenant(tenants), password=password, connection_limit=5
            )
            baseline.append(time.monotonic() - started)

        spans: list[tuple[float, float, str]] = []
        lock = threading.Lock()

        def hammer(name: str) -> None:
            began = time.monotonic()
            try:
                ensure_tenant_database(pools, name, tenant="x", password="p-1", connection_limit=1)
                outcome = "no error"
            except SiteUnavailable:
                outcome = "SiteUnavailable"
            with lock:
                spans.append((began, time.monotonic(), outcome))

        threads = [threading.Thread(target=hammer, args=("hole",)) for _ in range(4)]
        threads += [threading.Thread(target=hammer, args=("down",)) for _ in range(2)]
        for thread in threads:
            thread.start()
        time.sleep(0.2)  # the blackhole threads are now waiting on their connects
        started = time.monotonic()
        ensure_tenant_database(
            pools, "main", tenant=new_tenant(tenants), password=password, connection_limit=5
        )
        finished = time.monotonic()
        for thread in threads:
            thread.join(timeout=30)

    assert [outcome for *_, outcome in spans] == ["SiteUnavailable"] * len(threads)
    hole_spans = sorted(spans, key=lambda s: s[1] - s[0])[-4:]
    # The healthy operation really ran while the blackholed ones hung...
    assert all(began < started and finished < ended for began, ended, _ in hole_spans)
    # ...and took at most a second more than it does alone.
    assert finished - started < statistics.median(baseline) + 1.0


def test_breaker_recovers_when_the_site_returns(tenants: list[str]) -> None:
    with PostgresServer() as server:
        settings = PoolSettings(breaker=BreakerSettings(failure_threshold=1, cooldown_seconds=1.0))
        creds = superuser_of(server)
        with SitePools(
            {"flaky": site("flaky", server.port)}, credentials=lambda _s: creds, settings=settings
        ) as pools:
            tenant = f"r-{secrets.token_hex(4)}"
            ensure_tenant_database(
                pools, "flaky", tenant=tenant, password="p-1", connection_limit=2
            )
            server.halt()
            started = time.monotonic()
            with pytest.raises(SiteUnavailable, match="refused"):
                ensure_tenant_database(
                    pools, "flaky", tenant=tenant, password="p-1", connection_limit=2
                )
            assert time.monotonic() - started < 1.0  # a refusing site fails at once
            assert pools.breaker_state("flaky") == "open"
            server.start()  # same port
            # Still failing fast during the cool-down, although the server is back.
            with pytest.raises(SiteUnavailable, match="repeated failures"):
                ensure_tenant_database(
                    pools, "flaky", tenant=tenant, password="p-1", connection_limit=2
                )
            time.sleep(1.1)
            assert pools.breaker_state("flaky") == "half-open"
            result = ensure_tenant_database(
                pools, "flaky", tenant=tenant, password="p-1", connection_limit=3
            )
            assert result.changes == ("changed the connection limit from 2 to 3",)
            assert pools.breaker_state("flaky") == "closed"


def test_pooled_connections_survive_a_server_restart() -> None:
    with PostgresServer() as server:
        creds = superuser_of(server)
        with SitePools({"s": site("s", server.port)}, credentials=lambda _s: creds) as pools:
            with pools.connection("s") as conn:
                first_pid = conn.execute("SELECT pg_backend_pid()").fetchone()
            server.restart()
            # The idle pooled connection is dead now; the pool notices and reconnects.
            with pools.connection("s") as conn:
                second_pid = conn.execute("SELECT pg_backend_pid()").fetchone()
            assert first_pid != second_pid
            assert pools.breaker_state("s") == "closed"


# --------------------------------------------------------------------------- credentials


def test_rotated_admin_password_is_picked_up(postgres_server: PostgresServer) -> None:
    admin = f"rot_{secrets.token_hex(4)}"
    first, second = "first-" + secrets.token_hex(6), "second-" + secrets.token_hex(6)
    postgres_server.execute(
        sql.SQL("CREATE ROLE {} LOGIN CREATEDB CREATEROLE PASSWORD {}").format(
            sql.Identifier(admin), sql.Literal(first)
        )
    )
    secret = {"password": "wrong-" + secrets.token_hex(6)}

    def provider(_site: SiteConfig) -> AdminCredentials:
        return AdminCredentials(user=admin, password=secret["password"])

    try:
        with SitePools({"main": site("main", postgres_server.port)}, credentials=provider) as pools:
            with pytest.raises(AuthenticationFailed), pools.connection("main"):
                pass
            secret["password"] = first  # the Secret was fixed: no restart needed
            with pools.connection("main") as conn:
                assert conn.execute("SELECT current_user").fetchone() == (admin,)

            # The password is rotated on the server and the pooled sessions end.
            postgres_server.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(admin), sql.Literal(second)
                )
            )
            postgres_server.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (admin,),
            )
            started = time.monotonic()
            with pytest.raises(AuthenticationFailed) as caught, pools.connection("main"):
                pass
            assert time.monotonic() - started < 2.0
            assert first not in str(caught.value)
            assert pools.breaker_state("main") == "closed"  # a wrong password is no outage

            secret["password"] = second
            with pools.connection("main") as conn:
                assert conn.execute("SELECT current_user").fetchone() == (admin,)
    finally:
        postgres_server.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (admin,)
        )
        postgres_server.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(admin)))


# --------------------------------------------------------------------------- pool bounds


def test_saturated_pool_is_busy_not_down(postgres_server: PostgresServer) -> None:
    creds = superuser_of(postgres_server)
    settings = PoolSettings(
        acquire_timeout_seconds=0.5,
        breaker=BreakerSettings(failure_threshold=1, cooldown_seconds=60),
    )
    with SitePools(
        {"main": site("main", postgres_server.port, pool_max_size=1)},
        credentials=lambda _s: creds,
        settings=settings,
    ) as pools:
        holding = threading.Event()
        release = threading.Event()

        def hold() -> None:
            with pools.connection("main"):
                holding.set()
                release.wait(timeout=10)

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            assert holding.wait(timeout=10)
            with pytest.raises(SiteBusy) as caught, pools.connection("main"):
                pass
            assert caught.value.reason == "SiteBusy"
            assert "maxSize" in str(caught.value)
            assert pools.breaker_state("main") == "closed"  # busy is not an outage
        finally:
            release.set()
            holder.join(timeout=10)
        with pools.connection("main") as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_unknown_site_and_closed_pools(postgres_server: PostgresServer) -> None:
    creds = superuser_of(postgres_server)
    pools = SitePools({"main": site("main", postgres_server.port)}, credentials=lambda _s: creds)
    with pytest.raises(UnknownSite, match="'main'") as caught, pools.connection("elsewhere"):
        pass
    assert caught.value.reason == "UnknownSite"
    with pools.connection("main") as conn:
        conn.execute("SELECT 1")
    pools.close()
    with pytest.raises(SiteUnavailable, match="shutting down"), pools.connection("main"):
        pass
    pools.close()  # twice is fine


def test_admin_sessions_have_a_statement_timeout(postgres_server: PostgresServer) -> None:
    creds = superuser_of(postgres_server)
    with (
        SitePools(
            {"main": site("main", postgres_server.port, statement_timeout_seconds=0.5)},
            credentials=lambda _s: creds,
        ) as pools,
        pools.connection("main") as conn,
    ):
        assert conn.execute("SHOW statement_timeout").fetchone() == ("500ms",)
        assert conn.autocommit


# --------------------------------------------------------------------------- breaker alone


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def state(breaker: CircuitBreaker) -> BreakerState:
    return breaker.state  # a call, so the type checker does not pin it after one assert


def test_breaker_state_machine() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerSettings(failure_threshold=3, cooldown_seconds=10), clock=clock)
    assert state(breaker) == "closed"
    for _ in range(2):
        assert breaker.acquire() is None
        assert breaker.record_failure("boom") is False
    assert breaker.acquire() is None
    breaker.record_success()  # a success resets the count
    for _ in range(2):
        breaker.acquire()
        breaker.record_failure("boom")
    assert state(breaker) == "closed"
    breaker.acquire()
    assert breaker.record_failure("third") is True
    assert state(breaker) == "open"
    assert breaker.last_failure == "third"
    assert breaker.acquire() == pytest.approx(10.0)
    clock.now += 9.5
    assert breaker.acquire() == pytest.approx(0.5)
    clock.now += 0.5
    assert state(breaker) == "half-open"
    assert breaker.acquire() is None  # the one trial
    assert breaker.acquire() == 0.0  # everyone else keeps failing fast meanwhile
    assert breaker.record_failure("trial failed") is True  # re-opens at once
    assert state(breaker) == "open"
    assert breaker.acquire() == pytest.approx(10.0)
    clock.now += 10
    assert breaker.acquire() is None
    breaker.release()  # a trial that ended without an outcome frees the slot
    assert breaker.acquire() is None
    breaker.record_success()
    assert state(breaker) == "closed"
    assert breaker.acquire() is None


def test_breaker_is_thread_safe() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerSettings(failure_threshold=1, cooldown_seconds=1), clock=clock)
    breaker.record_failure("down")
    clock.now += 2
    allowed: list[bool] = []
    barrier = threading.Barrier(16)

    def contend() -> None:
        barrier.wait()
        allowed.append(breaker.acquire() is None)

    threads = [threading.Thread(target=contend) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert allowed.count(True) == 1  # exactly one trial in the half-open state


def test_breaker_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        BreakerSettings(failure_threshold=0)
    with pytest.raises(ValueError, match="cooldown"):
        BreakerSettings(cooldown_seconds=-1)

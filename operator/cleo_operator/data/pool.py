"""Admin connections to PostgreSQL sites: one bounded pool and one circuit breaker per site.

Why it is built this way:

- Reconcilers are sync code that Kopf runs in worker threads, many tenants at once,
  spread over several sites. A site that is down must not hold those threads: a
  blackholed host makes every connection attempt wait for the whole connect timeout.
  So each site has a circuit breaker: after ``failure_threshold`` consecutive
  connection failures it *opens* and every call fails at once with
  :class:`SiteUnavailable` (the reason the tenant's condition shows); after
  ``cooldown_seconds`` one trial call is let through (*half-open*) and its outcome
  closes or re-opens the circuit.
- Sites are isolated from each other: each has its own pool, its own worker threads
  and its own locks, and no lock is held while talking to a server. A dead site
  costs other sites nothing.
- psycopg_pool connects in background workers and reports a failure to the caller
  only as "couldn't get a connection after N sec", which cannot tell a wrong password
  from a dead host. So before a site's pool is (re)built, one direct connection is
  made and its error, if any, is classified precisely (``AuthenticationFailed`` is
  not an outage and does not trip the breaker). While waiting for a pooled
  connection, the pool's own connection errors are watched: a saturated pool (the
  site is fine, just busy: :class:`SiteBusy`) is told apart from failing
  connections, and a refusing site fails at once instead of at the wait's end.
- Credentials are fetched from a provider each time a pool is built, and the pool is
  dropped after an authentication failure, so a rotated admin password is picked up
  without restarting the operator.
- Every admin session runs with ``statement_timeout`` and in autocommit (``CREATE
  DATABASE`` cannot run in a transaction); code that needs a transaction opens one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Literal

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from cleo_operator.data.errors import (
    AuthenticationFailed,
    DataError,
    PermissionDenied,
    ServerNotVerified,
    SiteBusy,
    SiteUnavailable,
    TenantDatabaseMissing,
    UnknownSite,
    redact,
)
from cleo_operator.data.sites import AdminCredentials, SiteConfig

logger = logging.getLogger(__name__)

Connection = psycopg.Connection[TupleRow]
CredentialsProvider = Callable[[SiteConfig], AdminCredentials]
"""Returns the admin credentials of a site (the kube layer reads the site's Secret)."""

BreakerState = Literal["closed", "open", "half-open"]


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class BreakerSettings:
    """When a site's circuit opens and when it is tried again."""

    failure_threshold: int = 3
    """Consecutive connection failures that open the circuit."""
    cooldown_seconds: float = 30.0
    """How long an open circuit fails fast before one trial call is let through."""

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if self.cooldown_seconds < 0:
            raise ValueError("cooldown_seconds must not be negative")


class CircuitBreaker:
    """Closed -> open after N consecutive failures -> half-open after a cool-down.

    Thread-safe. In the half-open state exactly one caller (the trial) goes through;
    the others keep failing fast until the trial's outcome is recorded.
    """

    def __init__(
        self, settings: BreakerSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False
        self._last_failure = ""

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state_locked()

    @property
    def last_failure(self) -> str:
        """Message of the failure that last counted against the circuit."""
        return self._last_failure

    def _state_locked(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if (
            self._trial_running
            or self._clock() - self._opened_at >= self._settings.cooldown_seconds
        ):
            return "half-open"
        return "open"

    def acquire(self) -> float | None:
        """Ask to make a call: ``None`` if allowed, else seconds until a trial is allowed."""
        with self._lock:
            if self._opened_at is None:
                return None
            elapsed = self._clock() - self._opened_at
            if elapsed >= self._settings.cooldown_seconds and not self._trial_running:
                self._trial_running = True
                return None
            return max(0.0, self._settings.cooldown_seconds - elapsed)

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial_running = False

    def record_failure(self, message: str) -> bool:
        """Count a failure; returns True when this failure opened (or re-opened) the circuit."""
        with self._lock:
            self._last_failure = message
            self._failures += 1
            was_trial = self._trial_running
            self._trial_running = False
            if was_trial or self._failures >= self._settings.failure_threshold:
                self._opened_at = self._clock()
                return True
            return False

    def release(self) -> None:
        """End a call that recorded neither outcome (so a trial slot is not lost)."""
        with self._lock:
            self._trial_running = False


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class PoolSettings:
    """Settings shared by all sites' pools."""

    breaker: BreakerSettings = dataclasses.field(default_factory=BreakerSettings)
    """When a failing site starts failing fast, and when it is retried."""
    acquire_timeout_seconds: float | None = None
    """Wait this long for a pooled connection; default: the site's connect timeout + 1s."""
    num_workers: int = 2
    """Background threads per site pool that open connections."""
    max_idle_seconds: float = 300.0
    """Close pooled connections idle longer than this."""


class _Site:
    """Per-site state: its config, breaker and (once it worked) its pool."""

    def __init__(
        self, config: SiteConfig, settings: PoolSettings, clock: Callable[[], float]
    ) -> None:
        self.config = config
        self.breaker = CircuitBreaker(settings.breaker, clock=clock)
        self.lock = threading.Lock()
        self.pool: ConnectionPool | None = None


_ACQUIRE_SLICE = 0.25
"""Seconds between checks whether a site pool's connection attempts are failing."""

_SERVER_ANSWERED = (AuthenticationFailed, PermissionDenied, TenantDatabaseMissing)


class SitePools:
    """Admin connections to every configured site; close it on shutdown (or use ``with``)."""

    def __init__(
        self,
        sites: Mapping[str, SiteConfig],
        *,
        credentials: CredentialsProvider,
        settings: PoolSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings or PoolSettings()
        self._credentials = credentials
        self._clock = clock
        self._sites = {name: _Site(config, self._settings, clock) for name, config in sites.items()}
        self._closed = False
        self._lock = threading.Lock()

    def __enter__(self) -> SitePools:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- queries about sites ---------------------------------------------------------

    def site(self, name: str) -> SiteConfig:
        """The configuration of a site; :class:`UnknownSite` if it is not configured."""
        return self._site(name).config

    @property
    def site_names(self) -> tuple[str, ...]:
        return tuple(self._sites)

    def breaker_state(self, name: str) -> BreakerState:
        """``closed`` (healthy), ``open`` (failing fast) or ``half-open`` (being retried)."""
        return self._site(name).breaker.state

    def _site(self, name: str) -> _Site:
        try:
            return self._sites[name]
        except KeyError:
            raise UnknownSite(
                f"site {name!r} is not in the operator's site configuration; configured "
                f"sites: {sorted(self._sites)}. Fix the tenant's database.site or add the site.",
                site=name,
            ) from None

    # -- connections -----------------------------------------------------------------

    @contextlib.contextmanager
    def connection(self, name: str) -> Iterator[Connection]:
        """A pooled autocommit admin connection to the site's admin database.

        Raises :class:`SiteUnavailable` at once while the site's circuit is open,
        :class:`AuthenticationFailed` when the admin credentials are rejected.
        """
        site = self._site(name)
        self._check_open()
        with self._guarded(site):
            conn, pool = self._get_pooled(site)
        try:
            yield conn
        except psycopg.OperationalError as error:
            if conn.broken:
                # The server went away mid-session: that counts against the site.
                self._connection_lost(site, error)
            raise
        finally:
            pool.putconn(conn)

    @contextlib.contextmanager
    def direct_connection(self, name: str, *, dbname: str) -> Iterator[Connection]:
        """An unpooled autocommit admin connection to another database of the site.

        For rare work inside a tenant's database (schema ownership); same breaker,
        same error classification as :meth:`connection`.
        """
        site = self._site(name)
        self._check_open()
        with self._guarded(site):
            conn, _ = self._connect_direct(site, dbname=dbname)
        with conn:
            try:
                yield conn
            except psycopg.OperationalError as error:
                if conn.broken:
                    self._connection_lost(site, error)
                raise

    def reset(self, name: str) -> None:
        """Drop the site's pool (it is rebuilt, with fresh credentials, on next use)."""
        self._drop_pool(self._site(name))

    def close(self) -> None:
        """Close every site's pool; later calls fail. Safe to call twice."""
        with self._lock:
            self._closed = True
        for site in self._sites.values():
            with site.lock:
                pool, site.pool = site.pool, None
            if pool is not None:
                pool.close(timeout=5.0)

    # -- internals -------------------------------------------------------------------

    def _check_open(self) -> None:
        with self._lock:
            if self._closed:
                raise SiteUnavailable("the operator is shutting down: site pools are closed.")

    @contextlib.contextmanager
    def _guarded(self, site: _Site) -> Iterator[None]:
        """Run a connection attempt under the site's breaker, recording its outcome."""
        wait = site.breaker.acquire()
        if wait is not None:
            when = f"retried in {wait:.0f}s" if wait > 0 else "being retried by another call"
            raise SiteUnavailable(
                f"site {site.config.name!r} ({site.config.host}:{site.config.port}) is "
                f"unavailable after repeated failures, {when} (last failure: "
                f"{site.breaker.last_failure})",
                site=site.config.name,
            )
        try:
            yield
        except SiteBusy:
            site.breaker.release()  # the site answers; it is just saturated
            raise
        except SiteUnavailable as error:
            if site.breaker.record_failure(error.message):
                logger.warning(
                    "site %s: circuit opened, failing fast for %.0fs: %s",
                    site.config.name,
                    self._settings.breaker.cooldown_seconds,
                    error.message,
                )
                self._drop_pool(site)
            raise
        except _SERVER_ANSWERED:
            # The server answered (wrong password, missing database...): it is reachable.
            site.breaker.record_success()
            raise
        except BaseException:
            site.breaker.release()
            raise
        else:
            if site.breaker.state != "closed":
                logger.info("site %s: reachable again, circuit closed", site.config.name)
            site.breaker.record_success()

    def _connection_lost(self, site: _Site, error: psycopg.OperationalError) -> None:
        message = _describe(error, site.config, secrets=())
        if site.breaker.record_failure(f"connection lost: {message}"):
            logger.warning("site %s: circuit opened after a lost connection", site.config.name)
        self._drop_pool(site)

    def _acquire_timeout(self, config: SiteConfig) -> float:
        if self._settings.acquire_timeout_seconds is not None:
            return self._settings.acquire_timeout_seconds
        return config.connect_timeout_seconds + 1.0

    def _get_pooled(self, site: _Site) -> tuple[Connection, ConnectionPool]:
        with site.lock:
            pool = site.pool
        if pool is None:
            pool = self._build_pool(site)
        config = site.config
        errors_before = pool.get_stats().get("connections_errors", 0)
        started = time.monotonic()
        deadline = started + self._acquire_timeout(config)
        # Wait in short slices: when the pool's attempts to open connections fail (a
        # refused port fails at once), give up early instead of at the deadline.
        while True:
            slice_ = min(_ACQUIRE_SLICE, max(deadline - time.monotonic(), 0.01))
            try:
                return pool.getconn(timeout=slice_), pool
            except PoolTimeout:
                stats = pool.get_stats()
            failing = stats.get("connections_errors", 0) > errors_before
            if failing or time.monotonic() >= deadline:
                break
        if not failing and stats.get("pool_size", 0) >= config.pool_max_size:
            raise SiteBusy(
                f"site {config.name!r}: all {config.pool_max_size} admin connections are "
                "busy; try again shortly, or raise the site's pool.maxSize.",
                site=config.name,
            )
        self._drop_pool(site)  # the next call builds a new one
        if failing and time.monotonic() - started < _ACQUIRE_SLICE * 4:
            # It failed fast (refused, rejected login): one direct attempt says exactly
            # why, e.g. AuthenticationFailed after the admin password was rotated.
            probe, _ = self._connect_direct(site, dbname=config.admin_database)
            probe.close()
        raise SiteUnavailable(
            f"site {config.name!r} ({config.host}:{config.port}) is unreachable: no new "
            f"connection within {time.monotonic() - started:.1f}s. Check that the server "
            "runs and is reachable from the operator.",
            site=config.name,
        )

    def _build_pool(self, site: _Site) -> ConnectionPool:
        # One direct connection first: it reports precisely what is wrong, if anything.
        probe, credentials = self._connect_direct(site, dbname=site.config.admin_database)
        probe.close()
        config = site.config
        kwargs: dict[str, object] = {
            **config.connection_kwargs(),
            "user": credentials.user,
            "password": credentials.password,
            "autocommit": True,
            "options": f"-c statement_timeout={config.statement_timeout_ms}",
        }
        pool = ConnectionPool(
            conninfo="",
            kwargs=kwargs,
            min_size=config.pool_min_size,
            max_size=config.pool_max_size,
            name=f"cleo-site-{config.name}",
            open=False,
            timeout=self._acquire_timeout(config),
            check=ConnectionPool.check_connection,
            max_idle=self._settings.max_idle_seconds,
            reconnect_timeout=max(30.0, float(config.connect_timeout_seconds) * 3),
            num_workers=self._settings.num_workers,
        )
        pool.open(wait=False)
        with site.lock:
            if site.pool is None and not self._closed:
                site.pool = pool
                return pool
            winner = site.pool
        # Another thread built one meanwhile (or we are closing): use theirs, drop ours.
        pool.close(timeout=1.0)
        if winner is None:
            raise SiteUnavailable("the operator is shutting down: site pools are closed.")
        return winner

    def _drop_pool(self, site: _Site) -> None:
        with site.lock:
            pool, site.pool = site.pool, None
        if pool is not None:
            # A worker may be stuck connecting to a dead host for the connect timeout;
            # closing waits for it, so do it off the caller's thread.
            threading.Thread(
                target=pool.close,
                kwargs={"timeout": float(site.config.connect_timeout_seconds) + 1},
                name=f"close-pool-{site.config.name}",
                daemon=True,
            ).start()

    def _connect_direct(self, site: _Site, *, dbname: str) -> tuple[Connection, AdminCredentials]:
        config = site.config
        credentials = self._credentials(config)
        try:
            conn = psycopg.connect(
                **config.connection_kwargs(dbname=dbname),
                user=credentials.user,
                password=credentials.password,
                autocommit=True,
                # A tenant owns its database and may attach settings to it (ALTER DATABASE
                # ... SET) that every session there gets, ours included: a search_path that
                # puts its schema before pg_catalog (its functions, tables and operators
                # would shadow those of our queries and run with our rights), a role to
                # become, read-only transactions. Options of the connection outrank them.
                options=" ".join(
                    (
                        f"-c statement_timeout={config.statement_timeout_ms}",
                        "-c search_path=pg_catalog,pg_temp",
                        "-c role=none",
                        "-c default_transaction_read_only=off",
                    )
                ),
            )
        except psycopg.OperationalError as error:
            classified = classify_connect_error(
                error, config, user=credentials.user, secrets=(credentials.password,), dbname=dbname
            )
            if isinstance(classified, AuthenticationFailed):
                self._drop_pool(site)  # maybe the password was rotated: rebuild with new one
            raise classified from None
        return conn, credentials


# --------------------------------------------------------------------------- errors

_AUTH_MARKERS = (
    "password authentication failed",
    "authentication failed",
    "no pg_hba.conf entry",
    "password is missing",
    "no password supplied",
    "scram",
)
_TLS_MARKERS = (
    "certificate verify failed",
    "root certificate file",
    "server certificate for",
    "does not match host name",
    "certificate",
    "ssl error",
    "server does not support ssl",
    "ssl is not enabled on the server",
)
_UNAVAILABLE_MARKERS = (
    "too many connections",
    "remaining connection slots",
    "the database system is",
    "not yet accepting connections",
)


def _describe(error: BaseException, config: SiteConfig, *, secrets: tuple[str, ...]) -> str:
    """The useful part of a psycopg connection error, on one line, without secrets."""
    if isinstance(error, psycopg.errors.ConnectionTimeout):
        return f"no answer within {config.connect_timeout_seconds}s (connect timeout)"
    text = str(error).strip()
    # libpq: 'connection failed: connection to server at "h", port p failed: FATAL:  why'
    if "FATAL:" in text:
        text = text.rpartition("FATAL:")[2]
    else:
        text = text.removeprefix("connection failed:")
    return redact(" ".join(text.split()), secrets)


def classify_connect_error(
    error: psycopg.OperationalError,
    config: SiteConfig,
    *,
    user: str,
    secrets: tuple[str, ...],
    dbname: str | None = None,
) -> DataError:
    """Turn a failed connection attempt into a typed error with a reason and advice.

    libpq reports connection failures as text only (no SQLSTATE), so this matches the
    server's English messages; anything unrecognised counts as the site being
    unavailable, which is retried rather than reported as a configuration error.
    """
    detail = _describe(error, config, secrets=secrets)
    lowered = detail.lower()
    where = f"site {config.name!r} ({config.host}:{config.port})"
    db = dbname or config.admin_database
    if any(marker in lowered for marker in _AUTH_MARKERS) or (
        "role" in lowered and "does not exist" in lowered
    ):
        return AuthenticationFailed(
            f"{where} rejected the login of {user!r}: {detail}. Check the user and password "
            "(the site's adminSecret, or the tenant's database credentials) and pg_hba.conf.",
            site=config.name,
        )
    if "permission denied for database" in lowered or "not permitted to log in" in lowered:
        return PermissionDenied(
            f"{where}: {user!r} may not connect to database {db!r}: {detail}.",
            site=config.name,
        )
    if "database" in lowered and "does not exist" in lowered:
        return TenantDatabaseMissing(
            f"{where}: database {db!r} does not exist: {detail}.", site=config.name
        )
    if any(marker in lowered for marker in _TLS_MARKERS):
        return ServerNotVerified(
            f"{where}: TLS to the server failed, so no password was sent: {detail}. The site "
            f"uses sslMode {config.sslmode!r}: give the site an sslRootCert with the CA that "
            "signed the server's certificate for this host name (or, on a trusted network "
            "only, a weaker sslMode).",
            site=config.name,
        )
    if any(marker in lowered for marker in _UNAVAILABLE_MARKERS):
        return SiteUnavailable(
            f"{where} is not accepting connections: {detail}. Retrying later.",
            site=config.name,
        )
    return SiteUnavailable(
        f"{where} is unreachable: {detail}. Check that the server runs and that the "
        "site's host and port are right and reachable from the operator.",
        site=config.name,
    )

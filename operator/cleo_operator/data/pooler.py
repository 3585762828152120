"""The real check behind ``PoolerReady``: a login through the tenant's PgBouncer.

Why a login and not "the Deployment is available": a PgBouncer pod is ready (its port
answers) long before it has reached the server, and it stays ready when its password is
stale or the site refuses it; only a query through it, as the tenant's role, proves that
the workload's connections will work. ``SELECT 1`` through the pool makes PgBouncer open
(or reuse) a server connection, so the check covers client auth (SCRAM against the
pooler's auth file), the pooler's own login to the site (TLS as configured) and the
database's existence.

**Which hop failed** is the error's reason, so that ``PoolerReady`` says where to look:

- ``PoolerUnreachable`` (`PoolerCheckFailed`): TCP or TLS to PgBouncer fails. It is
  probed on its own first (`_reach`: TCP, and with a pinned certificate the TLS handshake),
  so that a later wait is known to be behind the pooler, not in front of it;
- ``AuthenticationFailed``: PgBouncer refuses the client's credential (its own SCRAM
  failure, client -> pgbouncer);
- ``PoolerServerLoginFailed``: PgBouncer let the client in but cannot log in to PostgreSQL
  (pgbouncer -> PostgreSQL): the server's refusal it passes on (a stale role password
  reads "password authentication failed for user", which is *not* the client's
  credential), its own "server login has been failing", or a login that does not finish
  in time although the pooler answered the probe. That last one's wording blames neither
  hop: the probe and the login are two connections to the Service, which may reach two
  different pooler pods, so a wedged pod and a site it cannot reach look the same;
- ``PoolerAuthMethodRefused``: what answered asked for the password in clear or as MD5,
  and ``require_auth`` refused it: not the pooler the operator configured (SCRAM only);
- ``PoolerBusy``: logged in, but the query got no server connection before the deadline.

One monotonic deadline covers the probe (each socket step waits only for what is left),
the login (driven without blocking up to it; no login starts with less than
`_LOGIN_AT_LEAST` left) and the query.

Bounded, because what answers may be busy or hostile: PgBouncer queues a query for a
server connection up to its ``query_wait_timeout`` (120 s) when the workload holds the
whole pool, and an impersonator may never answer. The query is sent without blocking and
waited for in the connection's own thread up to the deadline; then, still in that thread,
it is cancelled (bounded too) and the connection is closed without reading anything more
(`PoolerBusy`). The login insists on SCRAM (``require_auth``): a server that asks for the
password in clear or as MD5 is refused before anything of the password is sent.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
import struct
import tempfile
import time
from collections.abc import Iterator
from typing import Any, Final

import psycopg
from psycopg import pq
from psycopg.conninfo import make_conninfo

from cleo_operator.data.errors import AuthenticationFailed, DataError, redact

__all__ = [
    "PoolerAuthMethodRefused",
    "PoolerBusy",
    "PoolerCheckFailed",
    "PoolerServerLoginFailed",
    "check_pooler_login",
]


class PoolerCheckFailed(DataError, reason="PoolerUnreachable"):
    """The pooler cannot be reached (TCP, or TLS to it), or the check failed otherwise."""


class PoolerServerLoginFailed(PoolerCheckFailed, reason="PoolerServerLoginFailed"):
    """The pooler let the check in, but its own login to PostgreSQL fails (a stale role
    password in its configuration, the site down or refusing it)."""


class PoolerAuthMethodRefused(PoolerCheckFailed, reason="PoolerAuthMethodRefused"):
    """What answered at the pooler's address asked for the password in clear or as MD5
    (``require_auth`` refused it before anything was sent): not the pooler the operator
    configured, which only does SCRAM; an impersonator or a misconfigured pooler."""


class PoolerBusy(PoolerCheckFailed, reason="PoolerBusy"):
    """The pooler let the check in, but gave it no server connection before the deadline:
    every one of the pool's connections is in use (the workload's own load, or clients
    idle in a transaction)."""


_AUTH_METHOD_REFUSED: Final = "authentication method requirement"
"""libpq's words when ``require_auth`` refuses what the server asked for."""
_CLIENT_AUTH_REFUSED: Final = ("SASL authentication failed", "no such user")
"""PgBouncer's own words when it refuses a client's credential (client -> pgbouncer)."""
_POOLER_OWN_REFUSALS: Final = (
    "no such database",
    "no more connections allowed",
    "unsupported startup parameter",
    "pgbouncer is paused",
)
"""PgBouncer's own refusals of a client that are not about its server login."""
_SSL_REQUEST: Final = struct.pack("!ii", 8, 80877103)


def check_pooler_login(
    *,
    host: str,
    port: int,
    dbname: str,
    user: str,
    password: str,
    timeout_seconds: int = 3,
    server_cert_pem: str | None = None,
) -> None:
    """Log in through the pooler at `host`:`port` as `user` and run ``SELECT 1``.

    Raises, by the hop that failed (see the module): `PoolerCheckFailed` (unreachable),
    `AuthenticationFailed` (the pooler refused the client's credential),
    `PoolerServerLoginFailed` (the pooler's own login to the site) or `PoolerBusy`. The
    password never appears in what is raised. With `server_cert_pem` the connection is TLS
    and the server must present that very certificate (the pooler's own, self-signed).
    """
    where = f"the pooler at {host}:{port}"
    # One deadline for every step (the probe, the login, the query): the check as a whole
    # ends within `timeout_seconds` (plus a bounded cancel), whatever answers.
    deadline = time.monotonic() + timeout_seconds
    with tempfile.TemporaryDirectory(prefix="cleo-pooler-check-") as folder:
        root: str | None = None
        if server_cert_pem is not None:
            # Pinned: the pooler's own self-signed certificate is the only trust anchor.
            root = os.path.join(folder, "pooler.crt")
            with open(root, "w", encoding="ascii") as file:
                file.write(server_cert_pem)
        _reach(where=where, host=host, port=port, root=root, deadline=deadline)
        if deadline - time.monotonic() < _LOGIN_AT_LEAST:
            raise PoolerCheckFailed(
                f"{where} answered the probe too slowly to leave time for a login "
                f"within {timeout_seconds}s"
            )
        with _login(
            where=where,
            host=host,
            port=port,
            dbname=dbname,
            user=user,
            password=password,
            deadline=deadline,
            root=root,
        ) as conn:
            _select_one(conn, where=where, deadline=deadline, seconds=timeout_seconds)


_LOGIN_AT_LEAST: Final = 0.5
"""A login is not started with less time than this left before the check's deadline."""


def _remaining(deadline: float) -> float:
    """Seconds left until `deadline`; a socket timeout of 0 would mean non-blocking."""
    return max(0.001, deadline - time.monotonic())


def _reach(*, where: str, host: str, port: int, root: str | None, deadline: float) -> None:
    """TCP to the pooler and, with `root`, the TLS handshake against it (the first hop),
    each step waiting only for what is left of `deadline`."""
    try:
        with socket.create_connection((host, port), timeout=_remaining(deadline)) as sock:
            if root is None:
                return
            sock.settimeout(_remaining(deadline))
            sock.sendall(_SSL_REQUEST)
            sock.settimeout(_remaining(deadline))
            if sock.recv(1) != b"S":
                raise ssl.SSLError("the pooler does not offer TLS")
            context = ssl.create_default_context(cafile=root)
            context.check_hostname = False  # pinned: the certificate itself is the anchor
            sock.settimeout(_remaining(deadline))
            with context.wrap_socket(sock):  # the handshake, against the pinned certificate
                pass
    except (OSError, ssl.SSLError) as error:
        reason = error.strerror or error.__class__.__name__
        if isinstance(error, ssl.SSLError):
            # e.g. "certificate verify failed": not the pooler's pinned certificate
            reason = "TLS: " + str(error.reason or error).lower().replace("_", " ")
        raise PoolerCheckFailed(f"cannot reach {where}: {reason}") from None


@contextlib.contextmanager
def _login(
    *,
    where: str,
    host: str,
    port: int,
    dbname: str,
    user: str,
    password: str,
    deadline: float,
    root: str | None,
) -> Iterator[psycopg.Connection[Any]]:
    """The login, driven here without blocking up to `deadline` (libpq's and psycopg's
    ``connect_timeout`` is whole seconds and at least 2: it would overrun the deadline)."""
    conninfo = make_conninfo(
        host=host,
        port=port,
        dbname=dbname,
        user=user,
        password=password,
        sslmode="disable" if root is None else "verify-ca",
        sslrootcert=root,
        # Only SCRAM: a server that asks for the password in clear (or MD5) is not the
        # pooler the operator configured, and gets nothing.
        require_auth="scram-sha-256",
        application_name="cleo-operator-pooler-check",
    )
    pgconn = pq.PGconn.connect_start(conninfo.encode())
    try:
        while True:
            bad = pgconn.status == pq.ConnStatus.BAD
            status = pq.PollingStatus.FAILED if bad else pgconn.connect_poll()
            if status == pq.PollingStatus.OK:
                break
            if status == pq.PollingStatus.FAILED:
                text = pgconn.get_error_message(encoding="utf-8")
                raise _login_error(text, where=where, user=user, dbname=dbname, password=password)
            if not _wait(pgconn.socket, deadline, write=status == pq.PollingStatus.WRITING):
                # The pooler answered the probe just before: it holds the login (its pod
                # wedged, or its own server connection not open yet: PgBouncer's
                # server_connect_timeout is longer). Which of the two is not known here.
                raise PoolerServerLoginFailed(
                    f"{where} answered the probe but the login did not finish in time (the "
                    "pooler pod itself, or its own login to the database)"
                )
        pgconn.nonblocking = 1
        conn = psycopg.Connection(pgconn)
    except BaseException:
        pgconn.finish()
        raise
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()


def _login_error(text: str, *, where: str, user: str, dbname: str, password: str) -> DataError:
    """The refused login's error by hop, from libpq's words (redacted of the password)."""
    text = redact(text.strip(), secrets=(password,))
    if _AUTH_METHOD_REFUSED in text:
        # libpq's own refusal (require_auth): the answerer asked for the password in clear
        # or as MD5, which PgBouncer configured by the operator never does.
        return PoolerAuthMethodRefused(
            f"{where} asked for an authentication method other than SCRAM; nothing of the "
            f"password was sent: {text}"
        )
    if any(words in text for words in _CLIENT_AUTH_REFUSED):
        return AuthenticationFailed(f"{where} refused the tenant's role {user}: {text}")
    if "FATAL:" in text and not any(words in text for words in _POOLER_OWN_REFUSALS):
        # A refusal the pooler passes on from the server (or its own server-login one).
        return PoolerServerLoginFailed(
            f"{where} let the check in but could not log in to {dbname} on the site: {text}"
        )
    return PoolerCheckFailed(f"cannot query {dbname} through {where}: {text}")


def _select_one(
    conn: psycopg.Connection[Any], *, where: str, deadline: float, seconds: int
) -> None:
    """``SELECT 1`` on `conn`, waited for in this thread until `deadline`; then cancelled
    here (bounded) and left for the caller to close, nothing more read from it."""
    pgconn = conn.pgconn
    pgconn.send_query(b"SELECT 1")
    while pgconn.flush():
        if not _wait(pgconn.socket, deadline, write=True):
            _cancel(conn)
            raise PoolerBusy(_BUSY.format(where=where, seconds=seconds))
    while True:
        pgconn.consume_input()
        if not pgconn.is_busy():
            break
        if not _wait(pgconn.socket, deadline):
            _cancel(conn)
            raise PoolerBusy(_BUSY.format(where=where, seconds=seconds))
    result = pgconn.get_result()
    if result is None or result.status != pq.ExecStatus.TUPLES_OK:
        message = (result.error_message if result is not None else b"").decode(errors="replace")
        raise PoolerCheckFailed(f"a query through {where} failed: {message.strip()}")
    while pgconn.get_result() is not None:
        pass


def _wait(fd: int, deadline: float, *, write: bool = False) -> bool:
    """Whether `fd` is ready before `deadline`."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    # poll, not select: a busy operator's descriptors pass select's limit of 1024.
    poller = select.poll()
    poller.register(fd, select.POLLOUT if write else select.POLLIN)
    return bool(poller.poll(max(1, int(remaining * 1000 + 0.999))))


def _cancel(conn: psycopg.Connection[Any]) -> None:
    """Ask the pooler to drop the queued query (PgBouncer does), waiting at most
    `_CANCEL_SECONDS`, in this thread; the caller closes the connection after."""
    with contextlib.suppress(Exception):
        conn.cancel_safe(timeout=_CANCEL_SECONDS)


_BUSY: Final = (
    "{where} gave the check no server connection within {seconds}s: the pool is busy "
    "(every server connection in use, or held by clients idle in a transaction)"
)
_CANCEL_SECONDS: Final = 1.0
"""How long the cancel request may take; an answerer that ignores it is simply closed."""

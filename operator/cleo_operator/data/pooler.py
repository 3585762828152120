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
  in time although the pooler answered the probe;
- ``PoolerBusy``: logged in, but the query got no server connection before the deadline.

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

from cleo_operator.data.errors import AuthenticationFailed, DataError, redact

__all__ = ["PoolerBusy", "PoolerCheckFailed", "PoolerServerLoginFailed", "check_pooler_login"]


class PoolerCheckFailed(DataError, reason="PoolerUnreachable"):
    """The pooler cannot be reached (TCP, or TLS to it), or the check failed otherwise."""


class PoolerServerLoginFailed(PoolerCheckFailed, reason="PoolerServerLoginFailed"):
    """The pooler let the check in, but its own login to PostgreSQL fails (a stale role
    password in its configuration, the site down or refusing it)."""


class PoolerBusy(PoolerCheckFailed, reason="PoolerBusy"):
    """The pooler let the check in, but gave it no server connection before the deadline:
    every one of the pool's connections is in use (the workload's own load, or clients
    idle in a transaction)."""


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
    deadline = time.monotonic() + timeout_seconds
    with tempfile.TemporaryDirectory(prefix="cleo-pooler-check-") as folder:
        root: str | None = None
        if server_cert_pem is not None:
            # Pinned: the pooler's own self-signed certificate is the only trust anchor.
            root = os.path.join(folder, "pooler.crt")
            with open(root, "w", encoding="ascii") as file:
                file.write(server_cert_pem)
        _reach(where=where, host=host, port=port, root=root, seconds=timeout_seconds)
        with _login(
            where=where,
            host=host,
            port=port,
            dbname=dbname,
            user=user,
            password=password,
            timeout_seconds=max(1, int(deadline - time.monotonic() + 0.999)),
            root=root,
        ) as conn:
            _select_one(conn, where=where, deadline=deadline, seconds=timeout_seconds)


def _reach(*, where: str, host: str, port: int, root: str | None, seconds: float) -> None:
    """TCP to the pooler and, with `root`, the TLS handshake against it (the first hop)."""
    try:
        with socket.create_connection((host, port), timeout=seconds) as sock:
            if root is None:
                return
            sock.sendall(_SSL_REQUEST)
            if sock.recv(1) != b"S":
                raise ssl.SSLError("the pooler does not offer TLS")
            context = ssl.create_default_context(cafile=root)
            context.check_hostname = False  # pinned: the certificate itself is the anchor
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
    timeout_seconds: int,
    root: str | None,
) -> Iterator[psycopg.Connection[Any]]:
    try:
        conn = psycopg.connect(
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
            connect_timeout=max(2, timeout_seconds),
            application_name="cleo-operator-pooler-check",
            autocommit=True,
        )
    except psycopg.errors.ConnectionTimeout:
        # The pooler answered the probe just before: it holds the login while it tries
        # to open a server connection (PgBouncer's server_connect_timeout is longer).
        raise PoolerServerLoginFailed(
            f"{where} let the check in but its login to the database did not finish "
            f"within {timeout_seconds}s (the site down or unreachable from the pooler?)"
        ) from None
    except psycopg.Error as error:
        raise _login_error(
            error, where=where, user=user, dbname=dbname, password=password
        ) from None
    try:
        yield conn
    finally:
        conn.close()


def _login_error(
    error: psycopg.Error, *, where: str, user: str, dbname: str, password: str
) -> DataError:
    text = redact(str(error), secrets=(password,))
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

"""The real check behind ``PoolerReady``: a login through the tenant's PgBouncer.

Why a login and not "the Deployment is available": a PgBouncer pod is ready (its port
answers) long before it has reached the server, and it stays ready when its password is
stale or the site refuses it; only a query through it, as the tenant's role, proves that
the workload's connections will work. ``SELECT 1`` through the pool makes PgBouncer open
(or reuse) a server connection, so the check covers client auth (SCRAM against the
pooler's auth file), the pooler's own login to the site (TLS as configured) and the
database's existence.

Bounded, because what answers may be busy or hostile: PgBouncer queues a query for a
server connection up to its ``query_wait_timeout`` (120 s) when the workload holds the
whole pool, and an impersonator may never answer. At the deadline the query is cancelled
(`PoolerBusy`), and a socket whose answerer ignores the cancel is shut down. The login
insists on SCRAM (``require_auth``): a server that asks for the password in clear or as
MD5 is refused before anything of the password is sent.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any, Final

import psycopg

from cleo_operator.data.errors import AuthenticationFailed, DataError, redact

__all__ = ["PoolerBusy", "PoolerCheckFailed", "check_pooler_login"]


class PoolerCheckFailed(DataError, reason="PoolerUnreachable"):
    """The pooler cannot be reached, or it cannot reach the tenant's database."""


class PoolerBusy(PoolerCheckFailed, reason="PoolerBusy"):
    """The pooler let the check in, but gave it no server connection before the deadline:
    every one of the pool's connections is in use (the workload's own load, or clients
    idle in a transaction)."""


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

    Raises `AuthenticationFailed` (the pooler or the server refused the password) or
    `PoolerCheckFailed` (no answer, or the pooler could not reach the server: a reason of
    its own, so that a condition says which hop is down). The password never appears in
    what is raised. With `server_cert_pem` the connection is TLS and the server must present
    that very certificate (the pooler's own, self-signed).
    """
    where = f"the pooler at {host}:{port}"
    with tempfile.TemporaryDirectory(prefix="cleo-pooler-check-") as folder:
        root: str | None = None
        if server_cert_pem is not None:
            # Pinned: the pooler's own self-signed certificate is the only trust anchor.
            root = os.path.join(folder, "pooler.crt")
            with open(root, "w", encoding="ascii") as file:
                file.write(server_cert_pem)
        _login(
            where=where,
            host=host,
            port=port,
            dbname=dbname,
            user=user,
            password=password,
            timeout_seconds=timeout_seconds,
            root=root,
        )


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
) -> None:
    deadline = time.monotonic() + timeout_seconds
    expired = threading.Event()
    try:
        with (
            psycopg.connect(
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
            ) as conn,
            _deadline(conn, max(0.1, deadline - time.monotonic()), expired),
        ):
            conn.execute("SELECT 1").fetchone()
    except psycopg.OperationalError as error:
        if expired.is_set():
            raise PoolerBusy(_BUSY.format(where=where, seconds=timeout_seconds)) from None
        text = redact(str(error), secrets=(password,))
        if "password authentication failed" in text or "SASL authentication failed" in text:
            raise AuthenticationFailed(
                f"{where} refused the tenant's role {user}: {text}"
            ) from None
        raise PoolerCheckFailed(f"cannot query {dbname} through {where}: {text}") from None
    except psycopg.Error as error:
        if expired.is_set():
            raise PoolerBusy(_BUSY.format(where=where, seconds=timeout_seconds)) from None
        text = redact(str(error), secrets=(password,))
        raise PoolerCheckFailed(f"a query through {where} failed: {text}") from None


_BUSY: Final = (
    "{where} gave the check no server connection within {seconds}s: the pool is busy "
    "(every server connection in use, or held by clients idle in a transaction)"
)
_CUT_GRACE_SECONDS: Final = 1.0
"""After the cancel request, how long an answerer has to honour it before its socket is cut."""


@contextlib.contextmanager
def _deadline(
    conn: psycopg.Connection[Any], seconds: float, expired: threading.Event
) -> Iterator[None]:
    """Bound the query on `conn` to `seconds`: then cancel it (PgBouncer drops the queued
    request), and if the answerer ignores the cancel, shut its socket down, which ends the
    wait in this thread whatever the other side does."""

    def cancel() -> None:
        expired.set()
        with contextlib.suppress(Exception):
            conn.cancel_safe(timeout=_CUT_GRACE_SECONDS)

    def cut() -> None:
        with contextlib.suppress(OSError, psycopg.Error):
            fd = conn.pgconn.socket
            with socket.socket(fileno=os.dup(fd)) as sock:
                sock.shutdown(socket.SHUT_RDWR)

    timers = [threading.Timer(seconds, cancel), threading.Timer(seconds + _CUT_GRACE_SECONDS, cut)]
    for timer in timers:
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        for timer in timers:
            timer.cancel()

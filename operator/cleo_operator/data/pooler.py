"""The real check behind ``PoolerReady``: a login through the tenant's PgBouncer.

Why a login and not "the Deployment is available": a PgBouncer pod is ready (its port
answers) long before it has reached the server, and it stays ready when its password is
stale or the site refuses it; only a query through it, as the tenant's role, proves that
the workload's connections will work. ``SELECT 1`` through the pool makes PgBouncer open
(or reuse) a server connection, so the check covers client auth (SCRAM against the
pooler's auth file), the pooler's own login to the site (TLS as configured) and the
database's existence.
"""

from __future__ import annotations

import psycopg

from cleo_operator.data.errors import AuthenticationFailed, DataError, redact

__all__ = ["PoolerCheckFailed", "check_pooler_login"]


class PoolerCheckFailed(DataError, reason="PoolerUnreachable"):
    """The pooler cannot be reached, or it cannot reach the tenant's database."""


def check_pooler_login(
    *,
    host: str,
    port: int,
    dbname: str,
    user: str,
    password: str,
    timeout_seconds: int = 3,
) -> None:
    """Log in through the pooler at `host`:`port` as `user` and run ``SELECT 1``.

    Raises `AuthenticationFailed` (the pooler or the server refused the password) or
    `PoolerCheckFailed` (no answer, or the pooler could not reach the server: a reason of
    its own, so that a condition says which hop is down). The password never appears in
    what is raised.
    """
    where = f"the pooler at {host}:{port}"
    try:
        with psycopg.connect(
            host=host,
            port=port,
            dbname=dbname,
            user=user,
            password=password,
            sslmode="disable",
            # Only SCRAM: a server that asks for the password in clear (or MD5) is not the
            # pooler the operator configured, and gets nothing.
            require_auth="scram-sha-256",
            connect_timeout=max(2, timeout_seconds),
            application_name="cleo-operator-pooler-check",
            autocommit=True,
        ) as conn:
            conn.execute("SELECT 1").fetchone()
    except psycopg.OperationalError as error:
        text = redact(str(error), secrets=(password,))
        if "password authentication failed" in text or "SASL authentication failed" in text:
            raise AuthenticationFailed(
                f"{where} refused the tenant's role {user}: {text}"
            ) from None
        raise PoolerCheckFailed(f"cannot query {dbname} through {where}: {text}") from None
    except psycopg.Error as error:
        text = redact(str(error), secrets=(password,))
        raise PoolerCheckFailed(f"a query through {where} failed: {text}") from None

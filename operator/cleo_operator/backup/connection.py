"""How the backup code reaches a database: one value for psycopg and for pg_dump/pg_restore.

Why a type of its own instead of a DSN string: the same connection is used twice, by
psycopg in this process (the snapshot, the table statistics) and by pg_dump or pg_restore
in a child process, and the password must reach the child without ever being on its
command line (`ps` shows argv to every user of the node). `libpq_environment` therefore
hands the child everything through libpq's environment variables and the password through
a private passfile (`PGPASSFILE`, mode 0600, removed afterwards), and strips whatever PG*
variables the parent process had, so the child connects exactly where this value says.

The password never shows in a repr or str, and is never pickled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import ssl
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from psycopg.conninfo import conninfo_to_dict

from cleo_operator.data.sites import SYSTEM_ROOT_CERT, SiteConfig

__all__ = ["ConnectionInfo", "libpq_environment"]

_APPLICATION_NAME: Final = "cleo-operator-backup"

# Parameters a DSN may carry that this type models; anything else is refused, so that a
# setting the child processes would silently not get is never accepted.
_DSN_KEYS: Final = frozenset(
    {
        "host",
        "hostaddr",
        "port",
        "dbname",
        "user",
        "password",
        "sslmode",
        "sslrootcert",
        "connect_timeout",
        "application_name",
    }
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConnectionInfo:
    """Where a database is and who logs in; the password never shows in reprs."""

    host: str
    """Host name, IP address, or a unix socket folder (a path starting with '/')."""
    dbname: str
    """The database."""
    user: str
    """The role that logs in."""
    password: str | None = dataclasses.field(default=None, repr=False, compare=False)
    """The role's password; handed to libpq only (a passfile for child processes)."""
    port: int = 5432
    """TCP port (or the socket file's number, for a unix socket)."""
    sslmode: str = "prefer"
    """libpq `sslmode`; use `verify-full` across untrusted networks."""
    sslrootcert: str | None = None
    """CA bundle for `verify-ca`/`verify-full`."""
    connect_timeout: int = 10
    """Seconds to wait for a connection; at least 2, as libpq enforces."""
    application_name: str = _APPLICATION_NAME
    """What `pg_stat_activity` shows for these sessions."""

    def __post_init__(self) -> None:
        for name in ("host", "dbname", "user"):
            if not getattr(self, name):
                raise ValueError(f"ConnectionInfo.{name} must not be empty")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"ConnectionInfo.port {self.port} is not a TCP port (1..65535)")
        if self.password is not None and "\x00" in self.password:
            raise ValueError("ConnectionInfo.password must not contain NUL characters")

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would put the password into bytes that someone might log or store.
        raise TypeError("ConnectionInfo cannot be pickled")

    @property
    def where(self) -> str:
        """`database on host:port`, for messages (no user, no password)."""
        return f"database {self.dbname!r} on {self.host}:{self.port}"

    def with_dbname(self, dbname: str) -> ConnectionInfo:
        """The same server and login, another database."""
        return dataclasses.replace(self, dbname=dbname)

    def with_login(self, *, user: str, password: str | None) -> ConnectionInfo:
        """The same server and database, another role."""
        return dataclasses.replace(self, user=user, password=password)

    def psycopg_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `psycopg.connect` (they hold the password: never log them)."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "dbname": self.dbname,
            "user": self.user,
            "sslmode": self.sslmode,
            "connect_timeout": self.connect_timeout,
            "application_name": self.application_name,
        }
        if self.password is not None:
            kwargs["password"] = self.password
        if self.sslrootcert:
            kwargs["sslrootcert"] = self.sslrootcert
        return kwargs

    @classmethod
    def for_site(
        cls, site: SiteConfig, *, dbname: str, user: str, password: str | None
    ) -> ConnectionInfo:
        """A connection to a database of a configured site, as `user`."""
        return cls(
            host=site.host,
            port=site.port,
            dbname=dbname,
            user=user,
            password=password,
            sslmode=site.sslmode,
            sslrootcert=site.connection_kwargs().get("sslrootcert"),
            connect_timeout=site.connect_timeout_seconds,
        )

    @classmethod
    def from_dsn(cls, dsn: str) -> ConnectionInfo:
        """Parse a libpq keyword/value string or a `postgresql://` URL.

        ValueError names the parameter that is missing or not supported (never its value).
        """
        try:
            params = conninfo_to_dict(dsn)
        except Exception:  # psycopg's message may quote the DSN, password included
            raise ValueError(
                "the connection string is not a valid libpq keyword/value string or "
                "postgresql:// URL"
            ) from None
        unknown = sorted(set(params) - _DSN_KEYS)
        if unknown:
            raise ValueError(
                f"connection string parameter(s) {unknown} are not supported here; use "
                f"{sorted(_DSN_KEYS)}"
            )
        return cls._from_params({k: str(v) for k, v in params.items()}, source="connection string")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> ConnectionInfo:
        """From libpq's variables: PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD, PGSSLMODE...

        What a pod gets from its Secret-backed environment. `PGPASSFILE` is not read: give
        the password in PGPASSWORD (from a Secret) so that it can be handed on safely.
        """
        env = os.environ if environ is None else environ
        names = {
            "host": "PGHOST",
            "port": "PGPORT",
            "dbname": "PGDATABASE",
            "user": "PGUSER",
            "password": "PGPASSWORD",
            "sslmode": "PGSSLMODE",
            "sslrootcert": "PGSSLROOTCERT",
            "connect_timeout": "PGCONNECT_TIMEOUT",
        }
        params = {key: env[var] for key, var in names.items() if env.get(var)}
        return cls._from_params(params, source="environment", names=names)

    @classmethod
    def _from_params(
        cls,
        params: Mapping[str, str],
        *,
        source: str,
        names: Mapping[str, str] | None = None,
    ) -> ConnectionInfo:
        def label(key: str) -> str:
            return names[key] if names else key

        host = params.get("host") or params.get("hostaddr")
        for key, value in (("host", host), ("dbname", params.get("dbname"))):
            if not value:
                raise ValueError(f"{source}: {label(key)} is required")
        user = params.get("user")
        if not user:
            raise ValueError(f"{source}: {label('user')} is required")
        numbers: dict[str, int] = {}
        for key, default in (("port", 5432), ("connect_timeout", 10)):
            raw = params.get(key)
            try:
                numbers[key] = default if raw is None else int(raw)
            except ValueError:
                raise ValueError(f"{source}: {label(key)} must be an integer") from None
        return cls(
            host=str(host),
            port=numbers["port"],
            dbname=params["dbname"],
            user=user,
            password=params.get("password"),
            sslmode=params.get("sslmode") or "prefer",
            sslrootcert=params.get("sslrootcert"),
            connect_timeout=max(2, numbers["connect_timeout"]),
            application_name=params.get("application_name") or _APPLICATION_NAME,
        )


def _child_root_cert(sslrootcert: str) -> str:
    """`sslrootcert` for pg_dump/pg_restore, whose libpq may be older than psycopg's.

    libpq 16 reads `system` as "the system's trusted CAs"; older ones (the PostgreSQL 15
    client of the default image) take it for a file name and fail. The same CAs by file:
    OpenSSL's default CA file, which `SSL_CERT_FILE` overrides, as libpq's `system` does.
    """
    if sslrootcert != SYSTEM_ROOT_CERT:
        return sslrootcert
    paths = ssl.get_default_verify_paths()
    return os.environ.get(paths.openssl_cafile_env) or paths.openssl_cafile


def _passfile_field(value: str) -> str:
    # The passfile's separators and escape character must be escaped in every field.
    return value.replace("\\", "\\\\").replace(":", "\\:")


@contextlib.contextmanager
def libpq_environment(
    info: ConnectionInfo, *, base: Mapping[str, str] | None = None
) -> Iterator[dict[str, str]]:
    """The environment for a libpq tool (pg_dump, pg_restore) that connects as `info` says.

    Every PG* variable of `base` (default: this process's environment) is dropped and
    replaced; the password goes into a passfile readable only by this user, removed when
    the block ends. Pass the database as `--dbname`/`PGDATABASE`, never in a URL with the
    password.
    """
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if not k.startswith("PG")}
    env.update(
        {
            "PGHOST": info.host,
            "PGPORT": str(info.port),
            "PGDATABASE": info.dbname,
            "PGUSER": info.user,
            "PGSSLMODE": info.sslmode,
            "PGCONNECT_TIMEOUT": str(info.connect_timeout),
            "PGAPPNAME": info.application_name,
            # English messages, so that errors read the same in every pod.
            "LC_MESSAGES": "C",
        }
    )
    if info.sslrootcert:
        env["PGSSLROOTCERT"] = _child_root_cert(info.sslrootcert)
    if info.password is None:
        yield env
        return
    if "\n" in info.password or "\r" in info.password:
        # A passfile holds one entry per line; such a password can only go by variable
        # (the environment of a child is as private as the file: same user, or root).
        env["PGPASSWORD"] = info.password
        yield env
        return
    with tempfile.TemporaryDirectory(prefix="cleo-pgpass-") as folder:
        path = Path(folder) / "pgpass"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(f"*:*:*:{_passfile_field(info.user)}:{_passfile_field(info.password)}\n")
        env["PGPASSFILE"] = str(path)
        yield env

"""Throwaway PostgreSQL servers for tests: real ``initdb`` + ``pg_ctl``, never a mock.

Why it is built this way:

- Each server lives in its own temporary folder (data directory, unix socket, log) and
  listens on a free loopback port only, so parallel runs and a developer's own PostgreSQL
  never collide, and nothing is reachable from outside the machine.
- Authentication is SCRAM everywhere (also on the unix socket) with a random superuser
  password, like a real site: tests that pass only because of ``trust`` auth prove nothing.
- The server is configured so that a streaming standby can be made from it at any time
  (``wal_level=replica``, WAL senders, hot standby), because failover tests need pairs.
- PostgreSQL refuses to run as root. When the tests run as root (containers, CI), the
  server commands run as an unprivileged user (the ``postgres`` user when it exists,
  otherwise ``nobody``), and the temporary folder is handed to that user.
- No server may outlive the test process. ``stop()`` is called by the context manager
  and by an ``atexit`` hook; and because neither runs when the test process is killed
  (SIGKILL, an OOM kill, a CI timeout), each server also has a tiny watchdog process
  that waits on a pipe from the test process: when the pipe closes, for whatever
  reason, the watchdog kills the postmaster and removes the folder.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

    from cleo_operator.data.sites import SiteConfig
    from tests.harness.postgres_tls import ServerCertificate

logger = logging.getLogger(__name__)

SUPERUSER = "postgres"
"""Name of the bootstrap superuser that ``initdb`` creates."""

REPLICATION_USER = "cleo_replicator"
"""Role that standbys use to stream WAL from a primary (created on demand)."""

_PG_TOOLS = ("initdb", "pg_ctl", "postgres", "pg_basebackup")

# Settings for speed and for replication. Durability is pointless for throwaway data;
# replication settings are what a standby made with pg_basebackup needs.
_BASE_SETTINGS: Mapping[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "replica",
    "max_wal_senders": "10",
    "max_replication_slots": "10",
    "wal_keep_size": "'128MB'",
    "hot_standby": "on",
    "hot_standby_feedback": "on",
    "wal_receiver_status_interval": "'1s'",
    "max_connections": "100",
    "shared_buffers": "'32MB'",
    "password_encryption": "'scram-sha-256'",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "log_connections": "off",
    "log_line_prefix": "'%m [%p] %q%u@%d '",
    "timezone": "'UTC'",
}

# The watchdog is a separate interpreter that imports nothing from this project, so it
# keeps working when the test process is gone. It waits for EOF on stdin (the test
# process's end of the pipe closes when that process ends, however it ends), then kills
# the postmaster named in postmaster.pid (only if that process really serves our data
# directory) and removes the folder.
_WATCHDOG = r"""
import os, shutil, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
folder = sys.argv[1]
data_dir = os.path.join(folder, "data")
try:
    while sys.stdin.buffer.read(4096):
        pass
except Exception:
    pass
def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except OSError:
        return False
def postmaster():
    try:
        with open(os.path.join(data_dir, "postmaster.pid")) as f:
            pid = int(f.readline().strip())
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            if data_dir.encode() not in f.read():
                return None
        return pid
    except (OSError, ValueError):
        return None
pid = postmaster()
if pid is not None:
    for sig, wait in ((signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except OSError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.05)
        if not alive(pid):
            break
    time.sleep(0.2)
shutil.rmtree(folder, ignore_errors=True)
"""


class PostgresHarnessError(RuntimeError):
    """A throwaway server could not be set up; the message says what to fix."""


# --------------------------------------------------------------------------- binaries


def _version_key(path: Path) -> tuple[int, ...]:
    """Sort key for ``.../postgresql/<version>/bin`` folders, newest last."""
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)


def _has_tools(folder: Path) -> bool:
    return all(os.access(folder / tool, os.X_OK) for tool in _PG_TOOLS)


def find_postgres_bindir() -> Path:
    """Find the folder with ``initdb``, ``pg_ctl``, ``postgres`` and ``pg_basebackup``.

    Looked up in order: ``$PG_BINDIR``; ``initdb`` on ``PATH`` (symlinks resolved, since
    distributions link single tools into ``/usr/bin``); ``pg_config --bindir``; the
    newest Debian-style ``/usr/lib/postgresql/<version>/bin``. All tools are taken from
    the same folder so that their versions match.
    """
    candidates: list[Path] = []
    if env := os.environ.get("PG_BINDIR"):
        candidates.append(Path(env))
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
            if out:
                candidates.append(Path(out))
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key)
    candidates.extend(reversed(debian))
    for folder in candidates:
        if _has_tools(folder):
            return folder
    raise PostgresHarnessError(
        "PostgreSQL server binaries not found: need "
        + ", ".join(_PG_TOOLS)
        + " in one folder. Install the PostgreSQL server package or set PG_BINDIR "
        "to the folder that holds them."
    )


# --------------------------------------------------------------------------- users


@dataclasses.dataclass(frozen=True)
class _RunAs:
    """Who runs the server commands (only different from us when we are root)."""

    uid: int
    """User id the server processes run as."""
    gid: int
    """Primary group id of that user."""
    name: str
    """User name, for messages."""

    def subprocess_kwargs(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def _run_as() -> _RunAs:
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return _RunAs(uid=entry.pw_uid, gid=entry.pw_gid, name=entry.pw_name)
    for name in (os.environ.get("PG_TEST_USER"), "postgres", "nobody"):
        if not name:
            continue
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        if entry.pw_uid != 0:
            return _RunAs(uid=entry.pw_uid, gid=entry.pw_gid, name=entry.pw_name)
    raise PostgresHarnessError(
        "running as root, and PostgreSQL refuses to run as root, but no unprivileged user "
        "('postgres' or 'nobody') exists: create one or set PG_TEST_USER."
    )


def _check_traversable(folder: Path, user: _RunAs) -> None:
    """Fail early (with the fix) when the server user cannot reach the temp folder."""
    if os.geteuid() != 0:
        return
    for parent in folder.parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            raise PostgresHarnessError(
                f"the temporary folder {parent} is not traversable by user {user.name!r}, "
                "which runs the test PostgreSQL server (it cannot run as root): set TMPDIR "
                "to a folder every user can traverse, such as the system temp folder."
            )


# --------------------------------------------------------------------------- ports


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the caller retries on a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------- registry

_live: set[PostgresServer] = set()
_live_lock = threading.Lock()


def _stop_all_at_exit() -> None:
    with _live_lock:
        servers = list(_live)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


atexit.register(_stop_all_at_exit)


# --------------------------------------------------------------------------- server


class _Template:
    """One pristine ``initdb`` output per process (and server user and binaries), copied
    for each new server: ``initdb`` took 1.5 s of wall time per server (more on a busy
    machine) and the suite makes dozens, while a copy takes a tenth of that. Its superuser
    password is its own; each server sets its own random one at its first start. The
    folder has the servers' watchdog, so it goes when the process goes, however it ends.

    Copies of one template share its database system identifier, as the standbys of one
    primary do, so code that tells clusters apart by it (the failover's preflight) would
    take two of them for one cluster. A server that stands for another database cluster
    names a template of its own (``PostgresServer(template=...)``): one more initdb.
    """

    _made: ClassVar[dict[tuple[Path, int, str], _Template]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, server: PostgresServer) -> None:
        self.password = secrets.token_urlsafe(24)
        self.folder = Path(tempfile.mkdtemp(prefix="cleo-pg-template-"))
        self._watchdog = subprocess.Popen(  # never released: it removes the folder at exit
            [sys.executable, "-I", "-c", _WATCHDOG, str(self.folder)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        atexit.register(shutil.rmtree, self.folder, ignore_errors=True)
        _check_traversable(self.folder, server._user)
        if os.geteuid() == 0:
            os.chown(self.folder, server._user.uid, server._user.gid)
        self.folder.chmod(0o700)
        self.data_dir = self.folder / "data"
        pwfile = server.folder / "template-pwfile"
        server._write_private(pwfile, self.password + "\n")
        try:
            result = server._run(
                [
                    server.bindir / "initdb",
                    "--pgdata",
                    self.data_dir,
                    "--username",
                    server.superuser,
                    "--pwfile",
                    pwfile,
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    "--locale=C",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
                timeout=120,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise PostgresHarnessError(
                f"initdb failed (exit {result.returncode}):\n{result.stderr}"
            )

    @classmethod
    def get(cls, server: PostgresServer) -> _Template:
        key = (server.bindir, server._user.uid, server.template)
        with cls._lock:
            if key not in cls._made:
                cls._made[key] = cls(server)
            return cls._made[key]


class PostgresServer:
    """One throwaway PostgreSQL server on 127.0.0.1; use as a context manager.

    ``start()`` runs ``initdb`` (unless the data directory was made by ``make_standby``)
    and starts the server; ``stop()`` stops it and removes its folder. Both are safe to
    call twice.
    """

    def __init__(
        self,
        *,
        bindir: Path | None = None,
        settings: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
        tls: ServerCertificate | None = None,
        template: str = "default",
    ) -> None:
        self.bindir = bindir or find_postgres_bindir()
        self.template = template
        """The initdb output this server copies (see `_Template`): servers of one template
        share a system identifier; another database cluster needs another template."""
        self.tls = tls
        """With a certificate the server also accepts TLS (``ssl = on``); plain TCP too."""
        self.superuser = SUPERUSER
        self.password = secrets.token_urlsafe(24)
        self.host = "127.0.0.1"
        self.port = 0
        self._extra_settings = dict(settings or {})
        self._start_timeout = start_timeout
        self._user = _run_as()
        self._folder: Path | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._running = False
        self._lock = threading.RLock()
        self.replication_password: str | None = None
        self.is_standby = False
        self._template_password: str | None = None
        """The copied template's superuser password, until the first start replaces it."""

    # -- public properties -----------------------------------------------------------

    @property
    def folder(self) -> Path:
        """The temporary folder that holds the data directory, socket and log."""
        if self._folder is None:
            raise PostgresHarnessError("the server has not been set up yet: call start()")
        return self._folder

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def log_file(self) -> Path:
        """The server's log (stderr of the postmaster)."""
        return self.folder / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        return self.folder

    @property
    def running(self) -> bool:
        return self._running

    def dsn(
        self, dbname: str = "postgres", *, user: str | None = None, password: str | None = None
    ) -> str:
        """A libpq keyword/value connection string (superuser unless told otherwise)."""
        user = user or self.superuser
        password = self.password if password is None else password
        parts = {
            "host": self.host,
            "port": str(self.port),
            "dbname": dbname,
            "user": user,
            "password": password,
            "connect_timeout": "10",
        }
        return " ".join(f"{key}={_quote_conninfo(value)}" for key, value in parts.items())

    def site(self, name: str = "main", **options: Any) -> SiteConfig:
        """This server as the operator's site `name`: plain TCP, 2 s to connect, unless
        `options` (SiteConfig fields) say otherwise."""
        from cleo_operator.data.sites import SiteConfig  # noqa: PLC0415  (harness loads light)

        fields: dict[str, Any] = {
            "name": name,
            "host": self.host,
            "port": self.port,
            "sslmode": "disable",
            "connect_timeout_seconds": 2,
            **options,
        }
        return SiteConfig(**fields)

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"<PostgresServer {self.host}:{self.port} {state}>"

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Create the data directory if needed, start the server and wait until it serves."""
        with self._lock:
            if self._running:
                return self
            if self._folder is None:
                self._make_folder()
                self._initdb()
            self._start_postgres()
            return self

    def stop(self) -> None:
        """Stop the server (fast shutdown, then SIGKILL if needed) and remove its folder."""
        with self._lock:
            if self._folder is None:
                return
            if self._running or (self.data_dir / "postmaster.pid").exists():
                self._stop_postgres()
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
            self._release_watchdog()
            with _live_lock:
                _live.discard(self)

    def restart(self) -> None:
        """Stop and start again, keeping the data and the port."""
        with self._lock:
            self._stop_postgres()
            self._start_postgres()

    def halt(self) -> None:
        """Stop the server but keep its data and port: an outage; ``start()`` ends it."""
        with self._lock:
            self._stop_postgres()

    def postmaster_pid(self) -> int | None:
        """The postmaster's process id, from ``postmaster.pid``, if the file exists."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().splitlines()[0]
            return int(first)
        except (OSError, IndexError, ValueError):
            return None

    # -- SQL helpers (for fixtures; the code under test uses its own connections) ----

    def connect(self, dbname: str = "postgres", **kwargs: Any) -> psycopg.Connection[Any]:
        """An autocommit psycopg connection as the superuser."""
        import psycopg  # noqa: PLC0415  (keep the harness importable without psycopg)

        return psycopg.connect(self.dsn(dbname), autocommit=True, **kwargs)

    def execute(
        self,
        query: str | bytes | sql.SQL | sql.Composed,
        params: Sequence[Any] | None = None,
        *,
        dbname: str = "postgres",
    ) -> list[tuple[Any, ...]]:
        """Run one statement as the superuser and return its rows (empty if none)."""
        with self.connect(dbname) as conn:
            cur = conn.execute(query, params)
            rows: list[tuple[Any, ...]] = cur.fetchall() if cur.description else []
            return rows

    # -- internals -------------------------------------------------------------------

    def _make_folder(self) -> None:
        folder = Path(tempfile.mkdtemp(prefix="cleo-pg-"))
        try:
            _check_traversable(folder, self._user)
            if os.geteuid() == 0:
                os.chown(folder, self._user.uid, self._user.gid)
            folder.chmod(0o700)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self._folder = folder
        self._watchdog = subprocess.Popen(
            [sys.executable, "-I", "-c", _WATCHDOG, str(folder)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        with _live_lock:
            _live.add(self)

    def _release_watchdog(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is None:
            return
        if watchdog.stdin is not None:
            watchdog.stdin.close()
        try:
            watchdog.wait(timeout=15)
        except subprocess.TimeoutExpired:
            watchdog.kill()
            watchdog.wait()

    def _run(
        self,
        args: Sequence[str | os.PathLike[str]],
        *,
        timeout: float,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a server tool as the server user, inside the folder (cwd must be readable)."""
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
        full_env["HOME"] = str(self.folder)
        full_env.update(env or {})
        return subprocess.run(
            [str(arg) for arg in args],
            cwd=self.folder,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **self._user.subprocess_kwargs(),
        )

    def _write_private(self, path: Path, text: str) -> None:
        """Write a file only the server user can read (password files)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        if os.geteuid() == 0:
            os.chown(path, self._user.uid, self._user.gid)

    def _initdb(self) -> None:
        """The data directory: a copy of this process's pristine ``initdb`` output (made
        once, see `_Template`), whose superuser password the first start replaces."""
        template = _Template.get(self)
        result = self._run(["cp", "-a", template.data_dir, self.data_dir], timeout=120)
        if result.returncode != 0:
            raise PostgresHarnessError(
                f"copying the initdb template failed (exit {result.returncode}):\n{result.stderr}"
            )
        self._template_password = template.password
        settings = {**_BASE_SETTINGS, **self._extra_settings}
        if self.tls is not None:
            for source, target in ((self.tls.cert, "server.crt"), (self.tls.key, "server.key")):
                self._write_private(self.data_dir / target, source.read_text())
            settings.update(
                {"ssl": "on", "ssl_cert_file": "'server.crt'", "ssl_key_file": "'server.key'"}
            )
        lines = [f"{key} = {value}" for key, value in settings.items()]
        # Instance settings (port, socket) live in their own file so a standby's copy of
        # postgresql.conf can be pointed elsewhere by rewriting that one file.
        lines.append("include_if_exists = 'instance.conf'")
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# cleo-operator test harness\n" + "\n".join(lines) + "\n")

    def _write_instance_conf(self) -> None:
        text = f"port = {self.port}\nunix_socket_directories = '{self.socket_dir}'\n"
        path = self.data_dir / "instance.conf"
        path.write_text(text)
        if os.geteuid() == 0:
            os.chown(path, self._user.uid, self._user.gid)

    def _start_postgres(self) -> None:
        attempts = 5
        for attempt in range(1, attempts + 1):
            # Keep the port across restarts (clients reconnect to the same address);
            # pick a new one only the first time or when someone else took it.
            if self.port == 0 or attempt > 1:
                self.port = free_loopback_port()
            self._write_instance_conf()
            result = self._run(
                [
                    self.bindir / "pg_ctl",
                    "start",
                    "--pgdata",
                    self.data_dir,
                    "--log",
                    self.log_file,
                    "--wait",
                    "--timeout",
                    str(int(self._start_timeout)),
                ],
                timeout=self._start_timeout + 30,
            )
            if result.returncode == 0:
                self._running = True
                self._wait_until_ready()
                return
            log = self._log_tail()
            if "could not bind" in log or "already in use" in log:
                logger.info("port %s was taken, retrying (attempt %s)", self.port, attempt)
                self._stop_postgres()
                continue
            raise PostgresHarnessError(
                f"pg_ctl start failed (exit {result.returncode}): {result.stderr.strip()}\n"
                f"server log:\n{log}"
            )
        raise PostgresHarnessError(f"no free loopback port after {attempts} attempts")

    def _wait_until_ready(self) -> None:
        """``pg_ctl -w`` waits for the postmaster; also wait until logins really work."""
        import psycopg  # noqa: PLC0415
        from psycopg import sql  # noqa: PLC0415

        deadline = time.monotonic() + self._start_timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(
                    self.dsn(password=self._template_password), connect_timeout=5
                ) as conn:
                    conn.execute("SELECT 1")
                    if self._template_password is not None:
                        # This server's own random password, before anyone else logs in,
                        # stored as initdb stores it whatever the server's settings say.
                        conn.execute("SET password_encryption = 'scram-sha-256'")
                        conn.execute(
                            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                                sql.Identifier(self.superuser), sql.Literal(self.password)
                            )
                        )
                        conn.commit()
                        self._template_password = None
                    return
            except psycopg.OperationalError as error:
                last = error
                time.sleep(0.1)
        raise PostgresHarnessError(
            f"the server on port {self.port} did not accept connections within "
            f"{self._start_timeout:.0f}s: {last}\nserver log:\n{self._log_tail()}"
        )

    def _stop_postgres(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            result = self._run(
                [
                    self.bindir / "pg_ctl",
                    "stop",
                    "--pgdata",
                    self.data_dir,
                    "--mode",
                    "fast",
                    "--wait",
                    "--timeout",
                    "30",
                ],
                timeout=60,
            )
            if result.returncode != 0:
                logger.warning(
                    "pg_ctl stop failed (%s); killing the postmaster", result.stderr.strip()
                )
        pid = self.postmaster_pid()
        if pid is not None and _process_serves(pid, self.data_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, timeout=10)
        self._running = False

    def _log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def set_hba(self, lines: Sequence[str]) -> None:
        """Replace ``pg_hba.conf`` with ``lines`` and reload the server."""
        path = self.data_dir / "pg_hba.conf"
        self._write_private(path, "\n".join(lines) + "\n")
        self.execute("SELECT pg_reload_conf()")
        time.sleep(0.3)  # the postmaster reloads asynchronously

    def site_entry(self, **overrides: Any) -> dict[str, Any]:
        """This server as a site of the site configuration (``sslMode`` set explicitly).

        Without TLS the entry says ``sslMode: disable`` (the default, ``verify-full``,
        needs a certificate); with TLS it verifies against the server's CA.
        """
        entry: dict[str, Any] = {"host": self.host, "port": self.port}
        if self.tls is None:
            entry["sslMode"] = "disable"
        else:
            entry["sslMode"] = "verify-full"
            entry["sslRootCert"] = str(self.tls.authority.cert)
        entry.update(overrides)
        return entry

    # -- replication -----------------------------------------------------------------

    def ensure_replication_role(self) -> str:
        """Create (once) the role standbys stream with; returns its password."""
        with self._lock:
            if self.replication_password is None:
                from psycopg import sql  # noqa: PLC0415

                password = secrets.token_urlsafe(24)
                self.execute(
                    sql.SQL("CREATE ROLE {} WITH REPLICATION LOGIN PASSWORD {}").format(
                        sql.Identifier(REPLICATION_USER), sql.Literal(password)
                    )
                )
                self.replication_password = password
            return self.replication_password


def make_standby(primary: PostgresServer, *, start: bool = True) -> PostgresServer:
    """A streaming hot standby of ``primary``, made with ``pg_basebackup -R``.

    The standby authenticates as a dedicated replication role with SCRAM (its
    ``primary_conninfo`` carries that role's password, written by ``pg_basebackup -R``
    into the standby's ``postgresql.auto.conf``). Its superuser password is the
    primary's, since the catalog is a copy. Stop it like any server.
    """
    if not primary.running:
        raise PostgresHarnessError("make_standby needs a running primary")
    replication_password = primary.ensure_replication_role()
    standby = PostgresServer(bindir=primary.bindir, start_timeout=primary._start_timeout)
    standby.password = primary.password
    standby.is_standby = True
    standby._make_folder()
    try:
        result = standby._run(
            [
                standby.bindir / "pg_basebackup",
                "--pgdata",
                standby.data_dir,
                "--host",
                primary.host,
                "--port",
                str(primary.port),
                "--username",
                REPLICATION_USER,
                "--write-recovery-conf",
                "--wal-method=stream",
                "--checkpoint=fast",
                "--no-sync",
                "--no-password",
            ],
            timeout=300,
            env={"PGPASSWORD": replication_password, "PGAPPNAME": "cleo-standby"},
        )
        if result.returncode != 0:
            raise PostgresHarnessError(
                f"pg_basebackup failed (exit {result.returncode}): {result.stderr.strip()}"
            )
        if start:
            standby.start()
    except BaseException:
        standby.stop()
        raise
    return standby


@contextlib.contextmanager
def running_server(**kwargs: Any) -> Iterator[PostgresServer]:
    """``with running_server() as pg:`` for code that prefers a function."""
    server = PostgresServer(**kwargs)
    try:
        yield server.start()
    finally:
        server.stop()


def _quote_conninfo(value: str) -> str:
    if value and re.fullmatch(r"[A-Za-z0-9_.\-/:]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _process_serves(pid: int, data_dir: Path) -> bool:
    """True when ``pid`` is alive and is a postmaster of ``data_dir`` (guards pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(data_dir).encode() in cmdline


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped by its parent) is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _wait_gone(pid: int, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)

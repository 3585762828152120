"""Throwaway PgBouncer processes for tests: the real ``pgbouncer`` binary, never a mock.

A process runs the configuration the operator renders (the ``pgbouncer.ini`` and
``userlist.txt`` of the pooler's Secret), with only what cannot exist here rewritten:
the pod's config folder (``/etc/pgbouncer``) becomes the process's temporary folder, and
``listen_addr = *`` / port 6432 become 127.0.0.1 and a free port, so that nothing listens
beyond loopback and parallel runs never collide.

Like PostgreSQL, PgBouncer refuses to run as root: as root, the process runs as the same
unprivileged user as the test PostgreSQL servers. It dies with the test process (the
kernel's parent-death signal) and with ``stop()``/``atexit`` otherwise.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Self

from cleo_operator.render.pooler import CONFIG_DIR, INI_KEY, POOLER_PORT
from tests.harness.postgres import _run_as, free_loopback_port

_PR_SET_PDEATHSIG = 1


class PgBouncerHarnessError(RuntimeError):
    """PgBouncer could not be found or started; the message says what to fix."""


def find_pgbouncer() -> Path:
    """``$PGBOUNCER``, ``pgbouncer`` on ``PATH``, or Debian's ``/usr/sbin/pgbouncer``."""
    candidates = [os.environ.get("PGBOUNCER"), shutil.which("pgbouncer"), "/usr/sbin/pgbouncer"]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise PgBouncerHarnessError(
        "pgbouncer not found: install the Debian package pgbouncer (.ci/system-deps does) "
        "or set PGBOUNCER to the binary"
    )


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_live: set[PgBouncer] = set()
_live_lock = threading.Lock()


@atexit.register
def _stop_all() -> None:
    with _live_lock:
        processes = list(_live)
    for process in processes:
        with contextlib.suppress(Exception):
            process.stop()


class PgBouncer:
    """One pgbouncer process on 127.0.0.1 serving `files` (the pooler Secret's values)."""

    def __init__(self, files: Mapping[str, str]) -> None:
        self.files = dict(files)
        self.port = free_loopback_port()
        self.host = "127.0.0.1"
        self._folder: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def folder(self) -> Path:
        assert self._folder is not None, "not started"
        return self._folder

    def local_ini(self) -> str:
        """The rendered ``pgbouncer.ini`` with the pod's paths and address rewritten."""
        ini = self.files[INI_KEY]
        replacements = {
            "listen_addr = *\n": f"listen_addr = {self.host}\n",
            f"listen_port = {POOLER_PORT}\n": f"listen_port = {self.port}\n",
        }
        for old, new in replacements.items():
            if old not in ini:
                raise PgBouncerHarnessError(f"the rendered pgbouncer.ini has no {old.strip()!r}")
            ini = ini.replace(old, new)
        return ini.replace(f"{CONFIG_DIR}/", f"{self.folder}/")

    def start(self) -> Self:
        user = _run_as()
        self._folder = Path(tempfile.mkdtemp(prefix="cleo-pgbouncer-"))
        os.chmod(self._folder, 0o700)
        for name, text in self.files.items():
            (self._folder / name).write_text(text)
        (self._folder / INI_KEY).write_text(self.local_ini())
        if os.geteuid() == 0:
            for path in [self._folder, *self._folder.iterdir()]:
                os.chown(path, user.uid, user.gid)
        log = open(self._folder / "pgbouncer.log", "wb")  # noqa: SIM115 - the process owns it
        self._process = subprocess.Popen(
            [str(find_pgbouncer()), str(self._folder / INI_KEY)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only a prctl, no locks
            **user.subprocess_kwargs(),
        )
        log.close()
        with _live_lock:
            _live.add(self)
        self._wait_listening()
        return self

    def _wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise PgBouncerHarnessError(f"pgbouncer exited:\n{self.log()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=0.5),
            ):
                return
            time.sleep(0.05)
        raise PgBouncerHarnessError(f"pgbouncer did not listen within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        path = self.folder / "pgbouncer.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)  # PgBouncer's immediate shutdown (SIGINT waits)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        with _live_lock:
            _live.discard(self)
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def restart(self, files: Mapping[str, str]) -> None:
        """Stop, then start again on the same port with `files` (a pod of the new config)."""
        port = self.port
        self.stop()
        self.files = dict(files)
        self.port = port
        self.start()


@contextlib.contextmanager
def running_pgbouncer(files: Mapping[str, str]) -> Iterator[PgBouncer]:
    """A started `PgBouncer` for the block, stopped (and its folder removed) after it."""
    bouncer = PgBouncer(files).start()
    try:
        yield bouncer
    finally:
        bouncer.stop()

"""Running an emulator (moto, Azurite, fake-gcs-server) for the length of a test module.

Each runs as a process of its own on a loopback port, its output in a log file that a
failed start shows, and is stopped (terminated, then killed) when the block ends.

The grace between the two is short: an emulator's state is throwaway, and Azurite's
graceful close waits for idle keep-alive connections for minutes (it took the whole
grace, 10 s, on every module that used it).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

STOP_GRACE_SECONDS = 1.0


@contextlib.contextmanager
def running(
    argv: Sequence[str],
    *,
    log: Path,
    ready: Callable[[], bool],
    env: Mapping[str, str] | None = None,
    what: str,
    timeout: float = 60.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `argv`, wait until `ready()` says it answers, and stop it when the block ends."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def answers(call: Callable[[], object]) -> Callable[[], bool]:
    """A `ready` check: True once `call` runs without an OSError (a refused connection)."""

    def check() -> bool:
        try:
            call()
        except OSError:
            return False
        return True

    return check

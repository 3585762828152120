"""Running pg_dump and pg_restore: their versions, and their stderr kept safely.

Why a thread for stderr: a child that writes more to stderr than a pipe holds blocks until
somebody reads it, and the runner's thread is busy streaming stdout. The reader keeps only
the tail (the last lines say what went wrong) so that a chatty tool cannot grow memory, and
its text is passed through `redact` before it reaches any message.
"""

from __future__ import annotations

import collections
import os
import subprocess
import threading
from collections.abc import Iterable
from typing import IO, Final

from cleo_operator.backup.errors import redact

__all__ = ["StderrTail", "describe_exit", "tool_version"]

_TAIL_BYTES: Final = 16 << 10
_TAIL_LINES: Final = 20


def tool_version(tool: str | os.PathLike[str], *, what: str) -> str:
    """`<tool> --version` (e.g. `pg_dump (PostgreSQL) 15.6`); OSError-free, ValueError on failure.

    The ValueError says what to install; `what` is pg_dump or pg_restore, for the message.
    """
    try:
        result = subprocess.run(
            [os.fspath(tool), "--version"],
            # No libpq settings of ours (PGPASSWORD above all) for a call that needs none.
            env={k: v for k, v in os.environ.items() if not k.startswith("PG")},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as error:
        reason = error.strerror if isinstance(error, OSError) else type(error).__name__
        raise ValueError(
            f"cannot run {what} at {os.fspath(tool)!r} ({reason}): install the PostgreSQL "
            "client tools of the server's major version (or newer) and pass their path"
        ) from None
    if result.returncode != 0 or not result.stdout.strip():
        raise ValueError(
            f"{what} at {os.fspath(tool)!r} did not report its version (exit "
            f"{result.returncode}): is it really {what}?"
        )
    return result.stdout.strip().splitlines()[0]


def describe_exit(returncode: int) -> str:
    """`exit 1`, or `killed by signal 9` for a negative return code."""
    if returncode < 0:
        return f"killed by signal {-returncode}"
    return f"exit {returncode}"


class StderrTail:
    """Drains a child's stderr in a thread, keeping only its last bytes."""

    def __init__(self, stream: IO[bytes], *, secrets: Iterable[str | None] = ()) -> None:
        self._stream = stream
        self._secrets = tuple(secrets)
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._drain, name="stderr-tail", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        try:
            while chunk := self._stream.read(4096):
                with self._lock:
                    self._chunks.append(chunk)
                    self._size += len(chunk)
                    while self._size > _TAIL_BYTES and len(self._chunks) > 1:
                        self._size -= len(self._chunks.popleft())
        except (OSError, ValueError):
            return  # the pipe was closed under us: the child is being killed

    def join(self, timeout: float = 10.0) -> None:
        """Wait until the child closed stderr (it exited)."""
        self._thread.join(timeout)

    def text(self) -> str:
        """The last lines of stderr, secrets redacted, on one line (`; ` between lines)."""
        with self._lock:
            data = b"".join(self._chunks)
        lines = [
            line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip()
        ]
        return redact("; ".join(lines[-_TAIL_LINES:]), self._secrets, tail=True) or "(no message)"

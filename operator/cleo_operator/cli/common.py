"""What every command of `cleo-operator` shares: its error, its exit codes, its output.

Why one wrapper: a person (or a CronJob, or a script) reads a command's outcome in two
places only, its exit code and its last lines on stderr. Every command therefore ends the
same way: an error the operator raised on purpose (`CleoError`) becomes its message on one
log line, a `ValueError` (a bad setting or argument, named in its message) too, and an
unexpected exception its type and message; never a traceback, which could carry what a
command was handed (a key, a value to seal, a login). Log lines pass the redacting filter
of `observability.logs` like every other record.

Exit codes (also in `cleo-operator --help`):

- 0: the command did what was asked;
- 1: it did not (the message says why): a refused request, a failed backup, a failover
  that did not succeed, a missing permission;
- 2: the command line is wrong (argparse's usage error), or the operator cannot start
  (`run`'s `StartupError`: the cluster, its CRDs, its permissions or its keys are not
  ready).

Results go to stdout and logs to stderr, so results can be piped and redirected.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from cleo_operator.backup.errors import BackupError
from cleo_operator.core.errors import CleoError
from cleo_operator.core.redaction import redact
from cleo_operator.kube.errors import KubeError

__all__ = [
    "COMMAND_HELP",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Command",
    "CommandError",
    "failure",
    "guarded",
    "local_user",
    "out",
    "repo_root",
]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
"""Also argparse's own exit code for a command line it cannot parse."""

Command = Callable[[argparse.Namespace], int]
"""A command: its parsed arguments in, its exit code out."""

COMMAND_HELP: Final[Mapping[str, str]] = {
    "run": "run the operator",
    "crds": "generate the CRD YAML from the API models (and the tenant ClusterRoles' YAML)",
    "keys": "the operator's keys: KEKs and sealing keys",
    "seal": "seal values for a tenant's Secret; prints the spec.secrets entry",
    "permissions": "the RBAC rules the operator needs, and a check that it holds them",
    "backup": "back up a tenant's database; list, verify, prune",
    "restore": "restore a backup into a new, empty database",
    "tenant-roles": "print the ClusterRoles of tenant admins and viewers (YAML), or --write them",
    "failover": "drive a CleoFailover from this machine (when the operator cannot)",
    "check-tenants": "name the stored CleoTenants this release cannot read (before an upgrade)",
}
"""Every command of the root, in the order of `cleo-operator --help`, and its line there.

Here, not in each group's module, because the root lists them all without importing the
groups (`cli.root`); each group's `register` takes its line from here.
"""


class CommandError(CleoError):
    """A command cannot do what was asked; the message says why and what to do."""

    reason = "CommandFailed"
    retryable = False
    exit_code: int = EXIT_FAILED
    """What the command exits with; the message is its last log line (`str()`)."""


def out(text: str) -> None:
    """Write a result to stdout (logs go to stderr), ending it with a newline."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def local_user() -> str | None:
    """Who runs this command on this machine, for the audit trail (`kube.audit`); None
    when the system cannot say (a container without a user entry)."""
    try:
        return f"{getpass.getuser()} (command line)"
    except (KeyError, OSError):
        return None


def repo_root() -> Path:
    """The checkout this package runs from (for the commands that write generated files)."""
    # operator/cleo_operator/cli/common.py -> the repository root.
    return Path(__file__).resolve().parents[3]


def failure(exc: Exception) -> tuple[str, int]:
    """The one log line (redacted: an unexpected error may quote a server or a tool) and the
    exit code an exception ends a command with."""
    line, code = _failure(exc)
    return redact(line), code


def _failure(exc: Exception) -> tuple[str, int]:
    if isinstance(exc, CommandError):
        return str(exc), exc.exit_code
    if isinstance(exc, KubeError):
        return f"the Kubernetes API refused: {exc}", EXIT_FAILED
    if isinstance(exc, BackupError):
        # The reason is part of what people (and scripts) match on: TargetNotEmpty...
        return f"{exc.reason}: {exc.message}", EXIT_FAILED
    if isinstance(exc, CleoError | ValueError):
        return str(exc), EXIT_FAILED
    return f"{type(exc).__name__}: {exc}", EXIT_FAILED


def guarded(func: Command, log: logging.Logger) -> Command:
    """`func` as it runs from the command line: an exception becomes one line on `log`
    and an exit code (see `failure`), never a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except Exception as exc:
            line, code = failure(exc)
            log.error("%s", line)
            if not isinstance(exc, CleoError | ValueError):
                # A bug, not a refusal: where it happened, for whoever runs with DEBUG.
                trace = "".join(traceback.format_exception(exc))
                log.debug("%s", redact(trace))
            return code

    run.__doc__ = func.__doc__
    return run

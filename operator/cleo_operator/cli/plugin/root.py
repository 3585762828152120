"""The root of `kubectl cleo`: the options every command takes, and the one way in.

kubectl runs `kubectl-cleo` with the words after `kubectl cleo`, so the options look like
kubectl's own and go after the command: `--kubeconfig`, `--context`, `-n/--namespace` and
`-o table|yaml|json`. Every command ends as `cleo-operator`'s do (`cli.common.guarded`):
a refusal or a failure is one line on stderr and exit code 1, a wrong command line exit
code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from cleo_operator import __version__
from cleo_operator.cli.common import guarded
from cleo_operator.cli.plugin import backup_now, backups, seal, status
from cleo_operator.cli.plugin.output import FORMATS, Display
from cleo_operator.cli.plugin.session import Session, connect
from cleo_operator.cli.plugin.tenant import add_tenant_command
from cleo_operator.observability.logs import RedactingFilter

__all__ = ["build_parser", "main"]

log = logging.getLogger("cleo_operator.plugin")

DESCRIPTION = (
    "kubectl cleo: what a tenant has (status), its backups (backups, backup now), and "
    "sealed secrets in CleoTenant files (seal)."
)


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)"
    )
    common.add_argument("--context", help="kubeconfig context (default: the current one)")
    common.add_argument(
        "-n",
        "--namespace",
        help="the tenant's namespace, for those who may not read the cluster-scoped CleoTenant "
        "(default: the tenant's own, or cleo-<tenant>)",
    )
    common.add_argument(
        "-o", "--output", choices=FORMATS, default="table", help="table (default), yaml or json"
    )
    common.add_argument("-v", "--verbose", action="store_true", help="log what happens on stderr")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The whole command line of `kubectl cleo`."""
    parser = argparse.ArgumentParser(prog="kubectl cleo", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"kubectl-cleo {__version__}")
    sub = parser.add_subparsers(dest="name", required=True, metavar="COMMAND")
    parents = [_common_options()]
    add_tenant_command(sub, parents, name="status", text=status.HELP, command=status.cmd_status)
    add_tenant_command(sub, parents, name="backups", text=backups.HELP, command=backups.cmd_backups)
    backup_now.register(sub, parents)
    seal.register(sub, parents)
    return parser


class _Formatter(logging.Formatter):
    """`error: ...`, as kubectl words its own failures."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def _configure_logging(*, verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(_Formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    for noisy in ("urllib3", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _run(args: argparse.Namespace) -> int:
    args.display = Display.for_stdout(args.output)

    def session() -> Session:
        return connect(kubeconfig=args.kubeconfig, context=args.context)

    args.connect = session
    code: int = args.command(args)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: the process's), run the command: its exit code."""
    args = build_parser().parse_args(argv)
    _configure_logging(verbose=args.verbose)
    return guarded(_run, log)(args)

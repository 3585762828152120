"""The root of `cleo-operator`: its global options, and every command group under it.

Each group lives in a module of its own with a ``register(subparsers)`` (or two) and no
`main()`: there is one way into the command line, `main`, for the console script
``cleo-operator`` and ``python -m cleo_operator.cli`` alike, so every command takes the same
``--log-level`` and ``--log-format`` and ends the same way (`cli.common`, which also says
the exit codes).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from cleo_operator import __version__
from cleo_operator.cli import backup, crds, failover, keys, permissions, run, tenants_check

__all__ = ["build_parser", "main"]

DESCRIPTION = (
    "The `cleo-operator` command: run the operator, generate CRDs, and the tools around them."
)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: the global options, then one subcommand per group."""
    parser = argparse.ArgumentParser(prog="cleo-operator", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"cleo-operator {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument("--log-format", choices=["plain", "json"], default="plain")
    sub = parser.add_subparsers(dest="command", required=True)
    # The order is the order of `cleo-operator --help`.
    run.register(sub)
    crds.register(sub)
    keys.register(sub)
    permissions.register_permissions(sub)
    backup.register(sub)
    permissions.register_tenant_roles(sub)
    failover.register(sub)
    tenants_check.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: the process's), set up logging, run the command: its exit code."""
    from cleo_operator.observability.logs import configure_logging  # noqa: PLC0415

    args = build_parser().parse_args(argv)
    configure_logging(level=args.log_level, fmt=args.log_format)
    code: int = args.func(args)
    return code

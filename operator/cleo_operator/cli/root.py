"""The root of `cleo-operator`: its global options, and every command group under it.

Each group lives in a module of its own with a ``register(subparsers)`` (or two) and no
`main()`: there is one way into the command line, `main`, for the console script
``cleo-operator`` and ``python -m cleo_operator.cli`` alike, so every command takes the same
``--log-level`` and ``--log-format`` and ends the same way (`cli.common`, which also says
the exit codes).

Why the groups are imported only when their command runs: each group imports what its
commands need (the Kubernetes client, psycopg, the object stores, Kopf), together about a
CPU-second, and every process that starts the command line (the operator, a backup Job's
runner, `seal`) would pay for all of them. The root lists every command with its line from
`common.COMMAND_HELP`; `_LazyCommands` registers a group's real parser the moment its
command is chosen, so its options, help and errors are the group's own, unchanged.
"""

from __future__ import annotations

import argparse
import importlib
import os
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from cleo_operator import __version__
from cleo_operator.cli.common import COMMAND_HELP

__all__ = ["GROUPS", "build_parser", "main"]

DESCRIPTION = (
    "The `cleo-operator` command: run the operator, generate CRDs, and the tools around them."
)

GROUPS: Final[dict[str, tuple[str, str]]] = {
    "run": ("cleo_operator.cli.run", "register"),
    "crds": ("cleo_operator.cli.crds", "register"),
    "keys": ("cleo_operator.cli.keys", "register"),
    "seal": ("cleo_operator.cli.keys", "register"),
    "permissions": ("cleo_operator.cli.permissions", "register_permissions"),
    "backup": ("cleo_operator.cli.backup", "register"),
    "restore": ("cleo_operator.cli.backup", "register"),
    "tenant-roles": ("cleo_operator.cli.permissions", "register_tenant_roles"),
    "failover": ("cleo_operator.cli.failover", "register"),
    "check-tenants": ("cleo_operator.cli.tenants_check", "register"),
}
"""Each command of the root: the module of its group and the function that registers it
(which may register other commands of the same group too: `keys` also adds `seal`)."""


if TYPE_CHECKING:
    _SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]
else:  # not subscriptable at run time
    _SubParsers = argparse._SubParsersAction


class _LazyCommands(_SubParsers):
    """The root's subcommands: placeholders (name and help line) until one is chosen."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loaded: set[str] = set()

    def load(self, name: str) -> None:
        """Replace `name`'s placeholder (and its group's others) with the group's parsers."""
        if name in self._loaded or name not in GROUPS:
            return
        module, function = GROUPS[name]
        register = getattr(importlib.import_module(module), function)
        scratch = argparse.ArgumentParser().add_subparsers(prog=self._prog_prefix)
        register(scratch)
        for registered, parser in scratch._name_parser_map.items():
            if registered not in self._name_parser_map:
                raise LookupError(f"{module}.{function} registers {registered!r}, not in GROUPS")
            self._name_parser_map[registered] = parser
            self._loaded.add(registered)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        if isinstance(values, Sequence) and values and isinstance(values[0], str):
            self.load(values[0])
        super().__call__(parser, namespace, values, option_string)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: the global options, then one subcommand per group."""
    parser = argparse.ArgumentParser(prog="cleo-operator", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"cleo-operator {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument("--log-format", choices=["plain", "json"], default="plain")
    sub = parser.add_subparsers(dest="command", required=True, action=_LazyCommands)
    # The order is the order of `cleo-operator --help`.
    for name, line in COMMAND_HELP.items():
        sub.add_parser(name, help=line, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: the process's), set up logging, run the command: its exit code."""
    from cleo_operator.observability.logs import configure_logging  # noqa: PLC0415
    from cleo_operator.observability.tracing import (  # noqa: PLC0415
        configure_tracing,
        shutdown_tracing,
    )

    args = build_parser().parse_args(argv)
    configure_logging(level=args.log_level, fmt=args.log_format)
    # Off unless OTEL_* says otherwise (observability/tracing.py); the spans still queued
    # are sent when the command ends (for `run`: after SIGTERM stopped the handlers).
    configure_tracing(identity=os.environ.get("POD_NAME", "").strip() or socket.gethostname())
    try:
        code: int = args.func(args)
    finally:
        shutdown_tracing()
    return code

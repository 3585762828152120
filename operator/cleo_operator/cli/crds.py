"""`cleo-operator crds`: write the generated files of a checkout.

Why one command for both: the CRDs (from the API models) and the RBAC files (from
`kube.permissions` and `render.rbac`) are committed, and a test fails when either drifts
from the code, so whoever changes a model or a permission regenerates everything at once.

``--stdout`` is for a cluster without a checkout (and without Helm, or with
``crds.install=false``): the CRDs as one YAML stream, for
``cleo-operator crds --stdout | kubectl apply --server-side -f -``. It writes nothing else,
so the stream is all a pipe gets.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cleo_operator.cli.common import COMMAND_HELP, guarded, repo_root
from cleo_operator.cli.permissions import write_tenant_roles

__all__ = ["cmd_crds", "register"]

log = logging.getLogger("cleo_operator")


def cmd_crds(args: argparse.Namespace) -> int:
    """Write the CRDs (and the tenant ClusterRoles' files) under the checkout's root."""
    from cleo_operator.api.crdgen import (  # noqa: PLC0415 - keeps the others light
        render_crd_stream,
        write_crds,
    )

    if args.stdout:
        sys.stdout.write(render_crd_stream())
        return 0
    root: Path = args.root or repo_root()
    for path in [*write_crds(root), *write_tenant_roles(root)]:
        log.info("wrote %s", path.relative_to(root))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `cleo-operator crds [--root DIR | --stdout]` to the command line."""
    crds = subparsers.add_parser(
        "crds",
        help=COMMAND_HELP["crds"],
    )
    target = crds.add_mutually_exclusive_group()
    target.add_argument("--root", type=Path, help="repository root (default: this checkout)")
    target.add_argument(
        "--stdout",
        action="store_true",
        help="print the CRDs as one YAML stream (for kubectl apply --server-side -f -)",
    )
    crds.set_defaults(func=guarded(cmd_crds, log))

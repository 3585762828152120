"""`cleo-operator crds`: write the generated files of a checkout.

Why one command for both: the CRDs (from the API models) and the RBAC files (from
`kube.permissions` and `render.rbac`) are committed, and a test fails when either drifts
from the code, so whoever changes a model or a permission regenerates everything at once.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cleo_operator.cli.common import guarded, repo_root
from cleo_operator.cli.permissions import write_tenant_roles

__all__ = ["cmd_crds", "register"]

log = logging.getLogger("cleo_operator")


def cmd_crds(args: argparse.Namespace) -> int:
    """Write the CRDs (and the tenant ClusterRoles' files) under the checkout's root."""
    from cleo_operator.api.crdgen import write_crds  # noqa: PLC0415 - keeps the others light

    root: Path = args.root or repo_root()
    for path in [*write_crds(root), *write_tenant_roles(root)]:
        log.info("wrote %s", path.relative_to(root))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `cleo-operator crds [--root DIR]` to the command line."""
    crds = subparsers.add_parser(
        "crds",
        help="generate the CRD YAML from the API models (and the tenant ClusterRoles' YAML)",
    )
    crds.add_argument("--root", type=Path, help="repository root (default: this checkout)")
    crds.set_defaults(func=guarded(cmd_crds, log))

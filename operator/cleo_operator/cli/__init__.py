"""The command line, `cleo-operator`: the top layer, which nothing in the package imports.

Why a package of its own: the commands are thin (parse, call the layer that does the work,
print), but they share a root, an error, exit codes and an output convention, and those
must not be written once per command group. `root` builds the root command; each group of
commands is a module (`run`, `crds`, `keys` with `seal`, `backup` with `restore`,
`failover`, `permissions` with `tenant-roles`); `common` holds what they share, and
`sealing` what `seal` shares with the kubectl plugin. The plugin, `kubectl-cleo`, is a
command line of its own in `plugin` (its own root and options, the same `common` ending).
No other package parses arguments. Only `run` imports Kopf (`.importlinter`).

Why nothing is imported here, and `root` imports a group only when its command runs: every
process that starts the command line (the operator, a backup Job's runner, `seal`, a
failover) would otherwise pay for importing every group's dependencies (the Kubernetes
client, psycopg, the object stores: about a CPU-second) before doing anything.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """The ``cleo-operator`` console script: `cli.root.main` (see there)."""
    from cleo_operator.cli.root import main as root_main  # noqa: PLC0415 - see the docstring

    return root_main(argv)

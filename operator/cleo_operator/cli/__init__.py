"""The command line, `cleo-operator`: the top layer, which nothing in the package imports.

Why a package of its own: the commands are thin (parse, call the layer that does the work,
print), but they share a root, an error, exit codes and an output convention, and those
must not be written once per command group. `root` builds the root command; each group of
commands is a module (`run`, `crds`, `keys` with `seal`, `backup` with `restore`,
`failover`, `permissions` with `tenant-roles`); `common` holds what they share, and
`sealing` what `seal` shares with the kubectl plugin. The plugin, `kubectl-cleo`, is a
command line of its own in `plugin` (its own root and options, the same `common` ending).
No other package parses arguments. Only `run` imports Kopf (`.importlinter`).
"""

from cleo_operator.cli.root import main

__all__ = ["main"]

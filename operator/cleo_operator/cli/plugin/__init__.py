"""`kubectl cleo`: the platform team's daily questions about tenants, one command each.

A kubectl plugin (the console script `kubectl-cleo`; kubectl runs any `kubectl-*` program
on PATH as a subcommand) that acts as the person running it, with their kubeconfig and
context. One module per command: `status` (the tenant's tree), `backups`, `backup_now`
(`backup now`, a one-off CleoBackup, followed with `--wait`) and `seal` (sealed values
merged into a CleoTenant file, re-sealed after a key rotation, or checked against the
cluster's key). `root` parses, `session` reaches the cluster and words refusals, `output`
writes tables for people and YAML/JSON for scripts, `tree` builds the status tree.

Why inside `cli`: it is a command line like `cleo-operator`, ends the same way
(`cli.common.guarded`: one line, an exit code, never a traceback), and shares the sealing
code with `cleo-operator seal` (`cli.sealing`). It does not import `cleo-operator`'s other
command groups, nor Kopf (`.importlinter`).
"""

from cleo_operator.cli.plugin.root import main

__all__ = ["main"]

"""`cleo-operator failover run NAMESPACE NAME`: drive a CleoFailover from this machine.

Why a command: a failover is needed most when the operator cannot run it (its own node
or site is down). The command runs the same reconciler as the operator's daemon
(`reconcile.failover`), with the kubeconfig and the site configuration of the operator;
it is safe while the operator runs too: steps are idempotent and the tenant's failover
lock keeps two failovers of one tenant apart.
"""

from __future__ import annotations

import argparse
import logging

from cleo_operator.cli.common import COMMAND_HELP, guarded
from cleo_operator.kube.client import KubeClient
from cleo_operator.reconcile.failover import FailoverReconciler

__all__ = ["cmd_failover_run", "register"]

log = logging.getLogger(__name__)


def cmd_failover_run(args: argparse.Namespace) -> int:
    """``failover run``: 0 when the failover succeeded, 1 when it failed or did not end."""
    kube = KubeClient.from_environment(context=args.context)
    reconciler = FailoverReconciler.from_environment(kube)
    try:
        result = reconciler.drive(args.namespace, args.name, timeout=args.timeout)
    finally:
        reconciler.close()
    if result.phase is None:
        log.error("CleoFailover %s/%s does not exist", args.namespace, args.name)
        return 1
    log.info("CleoFailover %s/%s: %s", args.namespace, args.name, result.phase)
    return 0 if result.phase == "Succeeded" else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``cleo-operator failover run NAMESPACE NAME`` to the command line."""
    parser = subparsers.add_parser(
        "failover",
        help=COMMAND_HELP["failover"],
        description=(
            "Run or resume a CleoFailover to its end from this machine, with the kubeconfig "
            "and the site configuration ($CLEO_SITES_FILE or $CLEO_SITES) of the operator. "
            "Safe while the operator runs too: steps are idempotent and the tenant's "
            "failover lock keeps two failovers of one tenant apart."
        ),
    )
    sub = parser.add_subparsers(dest="failover_command", required=True)
    run = sub.add_parser("run", help="run or resume one CleoFailover until it ends")
    run.add_argument("namespace", help="the CleoFailover's namespace (the tenant's)")
    run.add_argument("name", help="the CleoFailover's name")
    run.add_argument("--context", help="kubeconfig context (default: the current one)")
    run.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    run.set_defaults(func=guarded(cmd_failover_run, log))

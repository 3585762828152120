"""`cleo-operator run`: start the operator, after checking what it cannot run without.

Why the checks come first: an operator that starts against the wrong cluster, without its
CRDs, without a permission or without its keys fails later, deep inside a reconcile, with
a Forbidden or a NotFound that names nothing a person can act on. Each check here fails
with a `StartupError` saying what is missing and what to do, and the command exits 2
(`cli.common`).

This is the only command that imports Kopf (and the handlers): the other commands run
without an event loop, and do not pay for importing it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cleo_operator import __version__
from cleo_operator.cli.common import COMMAND_HELP, EXIT_USAGE, CommandError, guarded

if TYPE_CHECKING:
    from cleo_operator.handlers.settings import OperatorConfig
    from cleo_operator.kube.client import KubeClient
    from cleo_operator.reconcile.keys import OperatorKeys

__all__ = [
    "CRD_PLURALS",
    "StartupError",
    "check_access",
    "check_cluster",
    "cmd_run",
    "operator_identity",
    "operator_keys",
    "register",
]

log = logging.getLogger("cleo_operator")

CRD_PLURALS = ("cleotenants", "cleobackups", "cleofailovers")


class StartupError(CommandError):
    """The operator cannot start; the message says what is missing and what to do."""

    reason = "StartupFailed"
    exit_code = EXIT_USAGE

    def __str__(self) -> str:
        # The whole story on one line, with no traceback (cli.common).
        return f"cannot start: {self.message}"


def check_cluster(kube: KubeClient) -> None:
    """Fail early and clearly when the API server is unreachable or our CRDs are missing."""
    from cleo_operator.kube.client import KubeError  # noqa: PLC0415

    try:
        version = kube.request("GET", "/version", what="read the server version")
    except KubeError as exc:
        raise StartupError(
            f"the Kubernetes API server at {kube.host} refused us: {exc}. "
            "Check the kubeconfig or the pod's ServiceAccount."
        ) from None
    except Exception as exc:
        raise StartupError(
            f"cannot reach the Kubernetes API server at {kube.host}: {type(exc).__name__}: {exc}. "
            "Is the cluster running, and does KUBECONFIG point at it?"
        ) from None
    log.info("connected to Kubernetes %s at %s", version.get("gitVersion", "?"), kube.host)
    try:
        discovery = kube.request("GET", "/apis/cleoai.io/v1alpha1", what="discover cleoai.io")
    except KubeError as exc:
        if exc.not_found:
            raise StartupError(
                "the CRDs of cleoai.io/v1alpha1 are not installed: apply them with "
                "`kubectl apply -f crds/` (or install the Helm chart) and start again"
            ) from None
        raise StartupError(f"cannot read the cleoai.io API group: {exc}") from None
    served = {r["name"] for r in discovery.get("resources", [])}
    missing = [p for p in CRD_PLURALS if p not in served]
    if missing:
        raise StartupError(
            "these CRDs are not installed: "
            + ", ".join(f"{p}.cleoai.io" for p in missing)
            + "; apply crds/ and start again"
        )


def check_access(kube: KubeClient, config: OperatorConfig) -> None:
    """Fail early when the operator's identity lacks a permission it will need."""
    from cleo_operator.kube.access import MissingPermissions, check_permissions  # noqa: PLC0415

    try:
        check_permissions(
            kube,
            operator_namespace=config.operator_namespace,
            watch_namespaces=config.namespaces,
            tenant_role=config.tenant_role,
        )
    except MissingPermissions as exc:
        raise StartupError(str(exc)) from None


def operator_identity(kube: KubeClient) -> str:
    """Who the API server knows us by: the subject of our RoleBinding in tenant namespaces."""
    from cleo_operator.kube.access import whoami  # noqa: PLC0415

    identity = whoami(kube)
    if not identity:
        raise StartupError(
            "the API server did not say who we are (SelfSubjectReview, "
            "authentication.k8s.io/v1): the operator binds that identity in each tenant "
            "namespace, so it cannot start without it"
        )
    return identity


def operator_keys(kube: KubeClient, config: OperatorConfig) -> OperatorKeys:
    """Create the KEK and sealing keys once (never replaced), or read the existing ones."""
    from cleo_operator.crypto import CryptoError  # noqa: PLC0415
    from cleo_operator.kube.client import KubeError  # noqa: PLC0415
    from cleo_operator.reconcile.keys import ensure_operator_keys  # noqa: PLC0415

    try:
        return ensure_operator_keys(
            kube,
            operator_namespace=config.operator_namespace,
            kek_dir=config.kek_dir,
            now=datetime.datetime.now(datetime.UTC),
        )
    except KubeError as exc:
        if exc.not_found:
            raise StartupError(
                f"the operator namespace {config.operator_namespace} does not exist: create it "
                "or pass --operator-namespace"
            ) from None
        raise StartupError(f"cannot set up the operator's keys: {exc}") from None
    except (CryptoError, ValueError) as exc:
        raise StartupError(f"the operator's keys are unusable: {exc}") from None


def cmd_run(args: argparse.Namespace) -> int:
    """Check, then run the operator until it is stopped."""
    import kopf  # noqa: PLC0415

    from cleo_operator.data.errors import SiteConfigError  # noqa: PLC0415
    from cleo_operator.handlers.registry import Runtime, build_registry  # noqa: PLC0415
    from cleo_operator.handlers.settings import OperatorConfig  # noqa: PLC0415
    from cleo_operator.kube.audit import set_operator_identity  # noqa: PLC0415
    from cleo_operator.kube.client import KubeClient  # noqa: PLC0415
    from cleo_operator.kube.keys import kek_dir_from_environment  # noqa: PLC0415

    config = OperatorConfig(
        namespaces=tuple(args.namespace or ()),
        operator_namespace=args.operator_namespace,
        workers=args.workers,
        resync_seconds=args.resync,
        metrics_port=args.metrics_port,
        liveness_endpoint=args.liveness or None,
        kek_dir=args.kek_dir or kek_dir_from_environment(),
        tenant_role=args.tenant_role,
    )
    kube = KubeClient.from_environment(context=args.context, pool_size=config.workers + 4)
    try:
        check_cluster(kube)
        check_access(kube, config)
        config = dataclasses.replace(config, identity=operator_identity(kube))
        set_operator_identity(config.identity or "")  # the actor of its audit trail
        keys = operator_keys(kube, config)
        runtime = Runtime.create(config, kube, keys)
    except SiteConfigError as exc:
        raise StartupError(f"the PostgreSQL site configuration is wrong: {exc}") from None
    except ValueError as exc:  # a backup setting from the environment, named in the message
        raise StartupError(str(exc)) from None
    registry = build_registry(runtime)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> Any:
        return kopf.login_via_client(**kwargs)

    log.info(
        "cleo-operator %s starting (%s, %d workers)",
        __version__,
        "namespaces " + ",".join(config.namespaces) if config.namespaces else "cluster-wide",
        config.workers,
    )
    asyncio.run(
        kopf.operator(
            registry=registry,
            standalone=config.standalone,
            clusterwide=not config.namespaces,
            namespaces=config.namespaces,
            liveness_endpoint=config.liveness_endpoint,
        )
    )
    log.info("cleo-operator stopped")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `cleo-operator run` to the command line."""
    run = subparsers.add_parser("run", help=COMMAND_HELP["run"])
    run.add_argument(
        "--namespace",
        action="append",
        help="watch only this namespace for namespaced resources (repeatable); "
        "default: cluster-wide",
    )
    run.add_argument("--operator-namespace", default="cleo-system")
    run.add_argument("--context", help="kubeconfig context (default: the current one)")
    run.add_argument("--workers", type=int, default=8, help="reconcile threads (default 8)")
    run.add_argument(
        "--resync", type=float, default=300.0, help="seconds between periodic reconciles"
    )
    run.add_argument("--metrics-port", type=int, default=8080, help="0 turns /metrics off")
    run.add_argument(
        "--liveness",
        default="http://0.0.0.0:8081/healthz",
        help="liveness endpoint URL; empty turns it off",
    )
    run.add_argument(
        "--kek-dir",
        type=Path,
        help="read key-encryption keys from this directory (default: $CLEO_KEK_DIR, else the "
        "cleo-kek Secret in the operator namespace)",
    )
    run.add_argument(
        "--tenant-role",
        default=os.environ.get("CLEO_OPERATOR_TENANT_ROLE") or "cleo-operator-tenant",
        help="the ClusterRole the operator binds itself to in each tenant namespace "
        "(default: $CLEO_OPERATOR_TENANT_ROLE, else cleo-operator-tenant)",
    )
    run.set_defaults(func=guarded(cmd_run, log))

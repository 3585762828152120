"""`cleo-operator run`: start the operator, after checking what it cannot run without.

Why the checks come first: an operator that starts against the wrong cluster, without its
CRDs, without a permission or without its keys fails later, deep inside a reconcile, with
a Forbidden or a NotFound that names nothing a person can act on. Each check here fails
with a `StartupError` saying what is missing and what to do, and the command exits 2
(`cli.common`).

After the checks, every replica runs the leader election (kube/leader.py) and only the one
holding the leader Lease starts Kopf's handlers. A standby serves /healthz (it is healthy,
not idle by mistake) and /metrics (`cleo_operator_leader` 0) and waits. A leader that
cannot renew the Lease within the renew deadline writes nothing more (the fence of its
client) and exits with code 1 at once, as client-go's components do (the elector's
watchdog sees to it even when its thread is stuck): Kopf's own writes (finalizers, its
annotations, Events) go through Kopf's client, which the fence does not cover, and
database work is fenced by nothing but the process's end, so a graceful stop could still
write after the deadline. The last log lines get a second, not more: a handler stuck on a
full pipe must not keep the process alive. On SIGTERM the leader stops Kopf first, then
stops renewing and closes the fence for good, waits (until its renew deadline at most) for
the reconciles, backup verifications and database operations still running to end, and
only then releases the Lease, so that a standby takes over at its next retry; work that
did not end in time makes it exit at once instead, with the Lease left to expire.

What the checks write (the operator's keys, created once with POST, read when another
replica created them first) is safe with two replicas starting at once
(docs/encryption.md), so it stays before the election: a standby with unusable keys fails
at start, not on the day it is to lead.

This is the only command that imports Kopf (and the handlers): the other commands run
without an event loop, and do not pay for importing it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import logging
import os
import secrets
import signal
import socket
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn

from cleo_operator import __version__
from cleo_operator.cli.common import (
    COMMAND_HELP,
    EXIT_FAILED,
    EXIT_USAGE,
    CommandError,
    guarded,
)

if TYPE_CHECKING:
    import aiohttp.web
    import kopf

    from cleo_operator.handlers.settings import OperatorConfig
    from cleo_operator.kube.client import KubeClient
    from cleo_operator.kube.leader import ElectionTimings, LeaderElector
    from cleo_operator.reconcile.keys import OperatorKeys

__all__ = [
    "CRD_PLURALS",
    "StartupError",
    "check_access",
    "check_cluster",
    "cmd_run",
    "election_timings",
    "operator_identity",
    "operator_keys",
    "register",
    "replica_identity",
    "user_agent",
]

log = logging.getLogger("cleo_operator")

CRD_PLURALS = ("cleotenants", "cleobackups", "cleofailovers")
LAST_LOG_SECONDS: Final = 1.0
"""How long an exit at once waits for its last log lines to be written."""


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


def replica_identity(environ: Mapping[str, str] | None = None) -> str:
    """This process's name in the leader Lease: the pod's (`POD_NAME`, from the downward
    API) or the host's, and a random suffix, so that two processes (a restarted pod's old
    and new container, two operators on one machine) never share one."""
    env = os.environ if environ is None else environ
    base = env.get("POD_NAME", "").strip() or socket.gethostname() or "cleo-operator"
    return f"{base}_{secrets.token_hex(4)}"


def user_agent(identity: str) -> str:
    """The User-Agent of every request of this process, Kopf's included: the API server's
    audit log tells the replicas apart by it."""
    return f"cleo-operator/{__version__} (replica {identity})"


def election_timings(args: argparse.Namespace, environ: Mapping[str, str]) -> ElectionTimings:
    """The leader election's timings: the flags, else the environment, else the defaults."""
    from cleo_operator.kube.leader import ElectionTimings  # noqa: PLC0415

    try:
        return ElectionTimings.from_environment(
            environ,
            lease_seconds=args.leader_election_lease_duration,
            renew_deadline_seconds=args.leader_election_renew_deadline,
            retry_seconds=args.leader_election_retry_period,
        )
    except ValueError as exc:
        raise StartupError(str(exc)) from None


def exit_at_once(code: int, why: str) -> NoReturn:
    """Log `why` and exit with `code` now, whatever the other threads do; the log lines get
    LAST_LOG_SECONDS to be written (a handler blocked on a full pipe would hold the exit)."""

    def last_lines() -> None:
        log.critical("%s", why)
        logging.shutdown()

    writer = threading.Thread(target=last_lines, name="last-log-lines", daemon=True)
    writer.start()
    writer.join(LAST_LOG_SECONDS)
    os._exit(code)


def exit_on_lost_lease() -> None:
    """What a leader does when it lost the Lease: exit with code 1, now (see the module
    docstring); the pod comes back as a standby."""
    exit_at_once(EXIT_FAILED, "exiting: the leader lease is lost, another replica may lead now")


def hand_over(elector: LeaderElector, work_ended: Callable[[float], bool]) -> bool:
    """The end of a graceful stop, after Kopf stopped: no more renews and the fence closed
    for good, then `work_ended(seconds)` until the renew deadline at most, then the Lease
    released if the work ended (True); if not, it is left to expire (False): the caller
    ends the process at once, which is what stops its database work."""
    deadline = elector.resign()
    budget = max(0.0, deadline - elector.clock())
    if work_ended(budget):
        elector.release()
        return True
    elector.abandon()
    return False


def cmd_run(args: argparse.Namespace) -> int:
    """Check, then run the operator until it is stopped."""
    import kopf  # noqa: PLC0415

    from cleo_operator.data.errors import SiteConfigError  # noqa: PLC0415
    from cleo_operator.handlers.registry import Runtime, build_registry  # noqa: PLC0415
    from cleo_operator.handlers.settings import OperatorConfig  # noqa: PLC0415
    from cleo_operator.kube.audit import set_operator_identity  # noqa: PLC0415
    from cleo_operator.kube.client import KubeClient  # noqa: PLC0415
    from cleo_operator.kube.keys import kek_dir_from_environment  # noqa: PLC0415
    from cleo_operator.kube.leader import LeaderElector  # noqa: PLC0415
    from cleo_operator.observability.metrics import serve_metrics  # noqa: PLC0415
    from cleo_operator.observability.tracing import shutdown_tracing  # noqa: PLC0415

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
    timings = election_timings(args, os.environ)
    replica = replica_identity()
    agent = user_agent(replica)
    # The reconcilers' client gets the write fence: urllib3 must not resend a write after it.
    kube = KubeClient.from_environment(
        context=args.context, pool_size=config.workers + 4, resend_writes=False
    )
    kube.user_agent = agent
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
    async def login(**kwargs: Any) -> Any:
        return with_user_agent(kopf.login_via_client(**kwargs), agent)

    # Its own client, without retries: every request must end within the renew deadline,
    # and the reconciles' busy connection pool must not delay a renew.
    election_kube = KubeClient.from_environment(context=args.context, pool_size=2, retries=0)
    election_kube.user_agent = agent
    elector = LeaderElector(
        election_kube,
        namespace=config.operator_namespace,
        identity=replica,
        timings=timings,
        on_lost=exit_on_lost_lease,
    )
    # From here on, the reconcilers' writes need the lease.
    kube.fence = elector.fence
    if config.metrics_port:
        serve_metrics(port=config.metrics_port)
    log.info(
        "cleo-operator %s starting as replica %s (%s, %d workers; lease %s/%s: %g s, "
        "renew deadline %g s, retry %g s)",
        __version__,
        replica,
        "namespaces " + ",".join(config.namespaces) if config.namespaces else "cluster-wide",
        config.workers,
        config.operator_namespace,
        elector.name,
        timings.lease_seconds,
        timings.renew_deadline_seconds,
        timings.retry_seconds,
    )
    asyncio.run(run_when_leading(elector, registry, config, runtime.work_ended))
    # SIGTERM stopped the handlers: send the spans still queued before the pod goes.
    shutdown_tracing()
    log.info("cleo-operator stopped")
    return 0


def with_user_agent(info: Any, agent: str) -> Any:
    """Kopf's connection, as `login_via_client` found it, in an aiohttp session of our own
    whose requests carry `agent` (Kopf's own session would say `kopf/<version>`)."""
    import aiohttp  # noqa: PLC0415
    import kopf  # noqa: PLC0415

    if not isinstance(info, kopf.ConnectionInfo):
        return info
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ssl=info.as_ssl_context()),
        headers={**info.as_http_headers(), "User-Agent": agent},
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        server=info.server,
        priority=info.priority,
        default_namespace=info.default_namespace,
        expiration=info.expiration,
        aiohttp_session=session,
    )


async def run_when_leading(
    elector: LeaderElector,
    registry: kopf.OperatorRegistry,
    config: OperatorConfig,
    work_ended: Callable[[float], bool],
) -> None:
    """Stand by until this replica leads (or SIGTERM/SIGINT), then run Kopf's handlers
    until they stop, then hand the lease over (`hand_over`: `work_ended` waits for the
    work still running)."""
    import kopf  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    # Until Kopf starts (which installs its own handlers for both), a signal ends the wait.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    health = (
        await serve_standby_health(config.liveness_endpoint, elector.identity)
        if config.liveness_endpoint
        else None
    )
    elector.start()
    try:
        while not (stopped.is_set() or elector.leading):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), timeout=0.2)
    finally:
        if health is not None:
            await health.cleanup()  # Kopf serves /healthz from here on, on the same port
    if stopped.is_set():
        elector.release()  # in case it was acquired meanwhile
        log.info("stopped while standing by")
        return
    log.info("this replica leads: starting the handlers")
    # A signal that comes before Kopf has put its own handlers in place is sent again, to
    # them. (Not Kopf's stop_flag: its waiter outlives a stop by signal, and Kopf waits 5 s
    # for it.) Created before Kopf starts, so Kopf leaves this task alone.
    resend = asyncio.create_task(_resend_signal(stopped))
    try:
        await kopf.operator(
            registry=registry,
            standalone=config.standalone,
            clusterwide=not config.namespaces,
            namespaces=config.namespaces,
            liveness_endpoint=config.liveness_endpoint,
        )
    finally:
        resend.cancel()
        if not await asyncio.to_thread(hand_over, elector, work_ended):
            exit_at_once(
                EXIT_FAILED,
                "exiting: work of this replica still ran at its renew deadline; the leader "
                "lease is left to expire",
            )


async def _resend_signal(stopped: asyncio.Event) -> None:
    await stopped.wait()
    await asyncio.sleep(0.5)  # Kopf installs its handlers first thing
    os.kill(os.getpid(), signal.SIGTERM)


async def serve_standby_health(endpoint: str, identity: str) -> aiohttp.web.AppRunner:
    """Answer `endpoint` (Kopf's liveness URL) with 200 while this replica stands by: the
    event loop runs, so the process is healthy, leader or not."""
    import aiohttp.web  # noqa: PLC0415

    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme != "http":
        raise StartupError(f"--liveness {endpoint}: only http:// URLs are served")

    async def health(request: aiohttp.web.Request) -> aiohttp.web.Response:
        del request
        return aiohttp.web.json_response({"leader": False, "replica": identity})

    app = aiohttp.web.Application()
    app.add_routes([aiohttp.web.get(parts.path or "/", health)])
    runner = aiohttp.web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    await aiohttp.web.TCPSite(runner, parts.hostname or "localhost", parts.port or 80).start()
    return runner


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
        "--leader-election-lease-duration",
        type=float,
        metavar="SECONDS",
        help="how long a standby waits for a leader that stopped renewing before it takes "
        "over (whole seconds; default: $CLEO_LEADER_ELECTION_LEASE_SECONDS, else 15)",
    )
    run.add_argument(
        "--leader-election-renew-deadline",
        type=float,
        metavar="SECONDS",
        help="a leader that could not renew for this long stops writing and exits; below "
        "the lease duration (default: $CLEO_LEADER_ELECTION_RENEW_DEADLINE_SECONDS, else 10)",
    )
    run.add_argument(
        "--leader-election-retry-period",
        type=float,
        metavar="SECONDS",
        help="how often the leader renews and a standby looks; below the renew deadline "
        "(default: $CLEO_LEADER_ELECTION_RETRY_PERIOD_SECONDS, else 2)",
    )
    run.add_argument(
        "--tenant-role",
        default=os.environ.get("CLEO_OPERATOR_TENANT_ROLE") or "cleo-operator-tenant",
        help="the ClusterRole the operator binds itself to in each tenant namespace "
        "(default: $CLEO_OPERATOR_TENANT_ROLE, else cleo-operator-tenant)",
    )
    run.set_defaults(func=guarded(cmd_run, log))

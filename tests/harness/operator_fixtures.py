"""pytest fixtures that run the real operator process against the local control plane.

The operator runs as `python -m cleo_operator.cli run`, exactly as in its container, with
the cluster's kubeconfig, its metrics and liveness endpoints on free loopback ports, and
its log captured to a file that tests can read (and scan for secrets).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
import yaml

from cleo_operator.handlers.settings import (
    DELETION_RECHECK_ENV,
    HEALTHY_RECHECK_ENV,
    REFUSED_RECHECK_ENV,
)
from cleo_operator.kube.leader import LEASE_ENV, RENEW_DEADLINE_ENV, RETRY_PERIOD_ENV
from e2e.cluster import LocalCluster, die_with_parent, free_port
from tests.harness.postgres import PostgresServer

REPO = Path(__file__).resolve().parents[2]

RECHECK_SECONDS: Final = 2.0
"""How soon the operators of the tests look again at what no event wakes them for: a tenant
refused its namespace, a healthy primary of a tenant with automatic failover (production:
20 and 30 s, `handlers.settings.Rechecks`). A test proving that something did NOT happen on
the operator's next looks waits a multiple of this."""
DELETION_RECHECK_SECONDS: Final = 0.5
"""How soon a waiting tenant deletion is checked again (production: 2 s)."""
RECHECKS_ENV: Final = {
    REFUSED_RECHECK_ENV: str(RECHECK_SECONDS),
    HEALTHY_RECHECK_ENV: str(RECHECK_SECONDS),
    DELETION_RECHECK_ENV: str(DELETION_RECHECK_SECONDS),
}
LEADER_ELECTION_ENV: Final = {LEASE_ENV: "4", RENEW_DEADLINE_ENV: "3", RETRY_PERIOD_ENV: "1"}
"""The leader election's timings of the tests' operators (production: 15, 10 and 2 s): an
operator that a test SIGKILLs leaves a Lease that the next one waits out, 4 s instead of 15."""
LEADER_METRIC: Final = "cleo_operator_leader"


@dataclass
class OperatorProcess:
    """A running `cleo-operator run` and where to find its output."""

    popen: subprocess.Popen[bytes]
    log_path: Path
    metrics_url: str
    liveness_url: str
    cluster: LocalCluster | None = None
    extra_args: Sequence[str] = ()
    env: dict[str, str] | None = None
    previous_logs: str = ""
    global_args: Sequence[str] = ()
    """Options before `run` (`--log-format json`, `--log-level DEBUG`)."""

    def restart(self) -> None:
        """Stop (SIGTERM) and start again, as a rollout or a crash would; logs are kept."""
        self.pause()
        self.resume()

    def pause(self) -> None:
        """Stop it (SIGTERM), for a test that runs an operator of its own meanwhile."""
        assert self.stop() == 0, self.log_text()[-3000:]

    def resume(self) -> None:
        """Start it again, as it was configured; its earlier logs are kept."""
        assert self.cluster is not None
        self.previous_logs += self.log_text()
        fresh = start_operator(
            self.cluster,
            self.log_path,
            extra_args=self.extra_args,
            env=self.env,
            global_args=self.global_args,
        )
        self.popen, self.metrics_url, self.liveness_url = (
            fresh.popen,
            fresh.metrics_url,
            fresh.liveness_url,
        )

    def all_logs(self) -> str:
        """Everything this operator logged, across restarts."""
        return self.previous_logs + self.log_text()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metric(self, name: str, labels: str = "") -> float:
        """One sample of the operator's /metrics, e.g. metric("x_total", 'kind="CleoTenant"')."""
        key = f"{name}{{{labels}}}" if labels else name
        for line in self.metrics().splitlines():
            if line.startswith(key + " "):
                return float(line.split()[-1])
        return 0.0

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as resp:  # noqa: S310 - loopback
            text: str = resp.read().decode()
            return text

    def alive(self) -> bool:
        return self.popen.poll() is None

    def leader_state(self) -> tuple[str, bool] | None:
        """(its replica identity, whether it leads) from its /metrics; None before it
        answers."""
        try:
            text = self.metrics()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(LEADER_METRIC + "{"):
                identity = line.split('identity="', 1)[1].split('"', 1)[0]
                return identity, float(line.split()[-1]) == 1.0
        return None

    def leads(self) -> bool:
        state = self.leader_state()
        return state is not None and state[1]

    @property
    def identity(self) -> str:
        """Its replica identity (the holder it writes into the leader Lease)."""
        state = self.leader_state()
        assert state is not None, "the operator does not answer on /metrics"
        return state[0]

    def stop(self, *, timeout: float = 30.0) -> int:
        """SIGTERM, as Kubernetes does; return the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        return int(self.popen.returncode)


def start_operator(
    cluster: LocalCluster,
    log_path: Path,
    *,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
    wait_leading: bool = True,
    global_args: Sequence[str] = (),
    tracing_endpoint: str | None = None,
) -> OperatorProcess:
    """Start the operator process and wait until its liveness endpoint answers and (unless
    `wait_leading` is False: a standby) it holds the leader Lease, so it reconciles; its
    rechecks and leader election timings are `RECHECKS_ENV`'s and `LEADER_ELECTION_ENV`'s
    unless `env` says otherwise.

    `tracing_endpoint`: tracing on, spans to this OTLP/HTTP collector (`tracing_env`);
    the backup Jobs it makes then carry the same settings and their TRACEPARENT."""
    if tracing_endpoint is not None:
        env = {**tracing_env(tracing_endpoint), **(env or {})}
    metrics_port, liveness_port = free_port(), free_port()
    args = [
        sys.executable,
        "-m",
        "cleo_operator.cli",
        *global_args,
        "run",
        "--metrics-port",
        str(metrics_port),
        "--liveness",
        f"http://127.0.0.1:{liveness_port}/healthz",
        "--resync",
        "30",
        *extra_args,
    ]
    out = log_path.open("wb")
    popen = subprocess.Popen(
        args,
        cwd=REPO,
        env={**cluster.operator_env(), **RECHECKS_ENV, **LEADER_ELECTION_ENV, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,  # noqa: PLW1509 - no operator outlives the test run
    )
    out.close()
    proc = OperatorProcess(
        popen=popen,
        log_path=log_path,
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        liveness_url=f"http://127.0.0.1:{liveness_port}/healthz",
        cluster=cluster,
        extra_args=extra_args,
        env=env,
        global_args=global_args,
    )
    if wait_ready:
        deadline = time.monotonic() + 60
        while True:
            if not proc.alive():
                pytest.fail(f"the operator exited early:\n{proc.log_text()[-3000:]}")
            try:
                with urllib.request.urlopen(proc.liveness_url, timeout=2) as resp:  # noqa: S310
                    if resp.status == 200 and (not wait_leading or proc.leads()):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                proc.stop()
                pytest.fail(
                    f"the operator did not become live{' and lead' if wait_leading else ''}:\n"
                    f"{proc.log_text()[-3000:]}"
                )
            time.sleep(0.25)
    return proc


def tracing_env(endpoint: str, *, service_name: str = "cleo-operator") -> dict[str, str]:
    """The variables that turn the operator's tracing on (as the chart's `tracing` values
    do), with spans sent every 200 ms instead of every 5 s (a test waits for them)."""
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_SERVICE_NAME": service_name,
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }


OPERATOR_NAMESPACE = "cleo-system"


_SESSION_OPERATOR: list[OperatorProcess] = []
"""The session's operator process, once some test has started it."""

_PAUSED: list[OperatorProcess] = []
"""The session's operator while `without_session_operator` keeps it stopped."""


@pytest.fixture
def without_session_operator() -> None:
    """The session's operator, if it runs, is stopped for this test: for a test that runs the
    reconcilers in processes of its own (with other keys or sites), so that two operators
    never fight over one object. It is not started for this.

    It starts again, as it was configured, before the next test that asks for it
    (`operator_process`), not right after this one: a module of such tests in a row stops it
    once instead of stopping and starting it around each test (seconds each)."""
    for proc in _SESSION_OPERATOR:
        if proc.alive():
            proc.pause()
            _PAUSED.append(proc)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before a test that asks for the session's operator (before its fixtures are set
    up): start it again if `without_session_operator` stopped it."""
    if "operator_process" in getattr(item, "fixturenames", ()):
        resume_session_operator()


def resume_session_operator() -> None:
    """Start the session's operator again if `without_session_operator` stopped it."""
    while _PAUSED:
        _PAUSED.pop().resume()


@pytest.fixture(scope="session")
def backup_volumes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where PVC destinations of backups live on this machine (`<namespace>/<claim>`): the
    runner pods' command runs here as a local process, and the operator verifies from here
    (a ReadWriteMany volume the operator mounts, in a real cluster)."""
    return tmp_path_factory.mktemp("backup-volumes")


@pytest.fixture(scope="session")
def operator_sites(
    cluster: LocalCluster, postgres_server: PostgresServer, backup_volumes: Path
) -> dict[str, str]:
    """The operator's configuration as the Helm chart makes it: its namespace, and one
    PostgreSQL site, `default` (the session's server), whose admin Secret lives there."""
    cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE)
    admin = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "pg-admin-default", "namespace": OPERATOR_NAMESPACE},
        "type": "kubernetes.io/basic-auth",
        "stringData": {"username": postgres_server.superuser, "password": postgres_server.password},
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(admin))  # stdin: not in argv
    sites = {
        "sites": {
            "default": {
                "host": postgres_server.host,
                "port": postgres_server.port,
                "sslMode": "disable",
                "connectTimeoutSeconds": 2,
                "adminSecret": {"name": "pg-admin-default", "namespace": OPERATOR_NAMESPACE},
            }
        }
    }
    return {
        "CLEO_SITES": yaml.safe_dump(sites),
        "CLEO_BACKUP_VOLUMES_DIR": str(backup_volumes),
        "CLEO_BACKUP_EGRESS_CIDRS": "127.0.0.0/8",
    }


@pytest.fixture(scope="session")
def operator_process(
    cluster: LocalCluster,
    crds_installed: None,
    operator_sites: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    """One operator process for the session's e2e tests; stopped (and checked) at the end."""
    del crds_installed
    log_path = tmp_path_factory.mktemp("operator") / "operator.log"
    proc = start_operator(
        cluster,
        log_path,
        extra_args=["--operator-namespace", OPERATOR_NAMESPACE],
        env=operator_sites,
    )
    _SESSION_OPERATOR.append(proc)
    yield proc
    _SESSION_OPERATOR.remove(proc)
    if proc in _PAUSED:  # stopped (cleanly: pause checks it) by the last tests of the run
        _PAUSED.remove(proc)
    code = proc.stop()
    assert code == 0, f"the operator did not stop cleanly ({code}):\n{proc.log_text()[-3000:]}"

"""The local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, KWOK (one fake node) and metrics-server (the metrics API, fed by KWOK's
simulated usage: e2e/metrics.py), built from Go modules and run on loopback ports.

There is no Docker engine on the machines this project is developed and tested on, so kind
cannot run; this launcher gives the tests a real API server with real controllers instead.
Every process is started in a fresh temporary folder with a fresh PKI and tokens, and is
stopped when the cluster stops. Each child also gets a parent-death signal, so that a
launcher killed with SIGKILL still leaves no process behind.

Use it as a context manager (the pytest fixture does), or from the command line:

    python -m e2e.cluster up --state-dir .run/cluster     # start in the background
    python -m e2e.cluster down --state-dir .run/cluster   # stop it
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from e2e.metrics import (
    METRICS_SERVER_HOSTS,
    METRICS_SERVER_USER,
    kwok_usage_config,
    metrics_server_args,
    node_metrics_annotations,
    register_metrics_api,
)
from e2e.pki import FRONT_PROXY_CLIENT, ClusterPKI, generate_pki

log = logging.getLogger("e2e.cluster")

REPO = Path(__file__).resolve().parent.parent
TOOLCHAIN = REPO / "e2e" / "toolchain"

# The controllers the tests rely on. Node lifecycle and taint eviction are left out on
# purpose: KWOK's fake node must never be tainted NotReady and its pods evicted.
CONTROLLERS = [
    "namespace-controller",
    "garbage-collector-controller",
    "deployment-controller",
    "replicaset-controller",
    "job-controller",
    "cronjob-controller",
    "horizontal-pod-autoscaler-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "disruption-controller",
    "resourcequota-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "root-ca-certificate-publisher-controller",
    "ttl-after-finished-controller",
    # Fills admin/edit/view from the ClusterRoles labelled aggregate-to-*, as in any cluster.
    "clusterrole-aggregation-controller",
]

FAKE_NODE = "kwok-node-0"
LIMITED_USER = "cleo-test-limited"
OPERATOR_USER = "cleo-operator-under-test"
"""The identity the tests run the operator process as, so the audit log can tell its
writes from everyone else's."""

# Every write request is audited (who, what, which verb), reads are not: the tests count
# the operator's writes from this log (a no-op reconcile must write nothing).
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        # Access and token reviews are questions, not writes: nothing is stored.
        {
            "level": "None",
            "resources": [
                {"group": "authorization.k8s.io"},
                {"group": "authentication.k8s.io"},
            ],
        },
        {
            "level": "Metadata",
            "verbs": ["create", "update", "patch", "delete", "deletecollection"],
        },
        {"level": "None"},
    ],
}


def build_toolchain() -> Path:
    """Build (or find in the cache) the control-plane binaries; return their folder."""
    result = subprocess.run(
        ["bash", str(TOOLCHAIN / "build.sh")],
        check=False,
        stdout=subprocess.PIPE,
        text=True,
    )
    if result.returncode != 0:
        raise ClusterError(
            f"building the local control plane failed (exit {result.returncode}); "
            "the output above says why"
        )
    return Path(result.stdout.strip().splitlines()[-1])


class ClusterError(RuntimeError):
    """The local control plane could not be started or did not become ready."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the launcher dies, however it dies.

    SIGKILL rather than SIGTERM: the launcher is gone, nobody waits for a graceful stop,
    and kube-apiserver's graceful stop waits for open watches for a long time.
    """
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class LocalCluster:
    """One local control plane. `start()` it, use `kubeconfig`, then `stop()` it."""

    bin_dir: Path
    """Folder with etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
    kwok and metrics-server."""
    workdir: Path | None = None
    """Where state, logs and certificates go; a fresh temporary folder when None."""
    keep_workdir: bool = False
    """Keep the folder after stop (for debugging); removed otherwise."""
    api_only: bool = False
    """Only etcd and the API server: no controllers, scheduler, fake node or metrics (for
    a test that only talks to the API, e.g. an operator refusing to start; a fraction of
    the CPU of a whole cluster's start). It cannot run pods."""
    crds: Sequence[Path] = ()
    """CRD manifests (files or folders) applied as soon as the API server answers, before
    the controllers start: the garbage collector reads which kinds exist when it starts and
    then only every 30 s, so a kind installed later is not collected (its foreground
    deletions wait) for up to that long."""

    server: str = field(init=False, default="")
    kubeconfig: Path = field(init=False, default=Path())
    admin_token: str = field(init=False, default="")
    limited_token: str = field(init=False, default="")
    operator_token: str = field(init=False, default="")
    audit_log: Path = field(init=False, default=Path())
    pki: ClusterPKI | None = field(init=False, default=None)
    apiserver_port: int = field(init=False, default=0)
    metrics_server_port: int = field(init=False, default=0)
    _procs: list[_Proc] = field(init=False, default_factory=list)
    _own_workdir: bool = field(init=False, default=False)

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, *, timeout: float = 120.0) -> None:
        """Start every component and wait until the cluster can run pods."""
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="cleo-cluster-"))
            self._own_workdir = True
        # Every start is a fresh cluster: no etcd data or keys from an earlier run.
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        try:
            self._start(timeout=timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, *, timeout: float) -> None:
        assert self.workdir is not None
        deadline = time.monotonic() + timeout
        self.pki = generate_pki(
            self.workdir / "pki",
            hosts=["127.0.0.1", "localhost", "kubernetes", "kubernetes.default.svc", "10.96.0.1"],
            metrics_server_hosts=METRICS_SERVER_HOSTS,
        )
        tokens = self._write_tokens()
        self._start_etcd(deadline)
        self._start_apiserver(tokens, deadline)
        self._install_crds(deadline)
        if self.api_only:
            return
        self._start_controllers(tokens)
        self._register_metrics_api()
        self._create_fake_node()
        self._wait_for_default_service_account(deadline)
        self._start_metrics_server()

    def stop(self) -> None:
        """Stop every process this cluster started and remove its folder.

        TERM first, KILL after a second's grace: the data is thrown away, and kube-apiserver's
        graceful stop would otherwise wait for every open watch to end (it outlasts 15 s,
        and etcd waits for it); the controllers, the scheduler and KWOK exit at once.
        """
        for proc in reversed(self._procs):
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.terminate()
        deadline = time.monotonic() + 1
        for proc in reversed(self._procs):
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.kill()
                proc.popen.wait(timeout=10)
        self._procs.clear()
        if self._own_workdir and not self.keep_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def pids(self) -> list[int]:
        """Process ids of the running components."""
        return [p.popen.pid for p in self._procs if p.popen.poll() is None]

    # -- components --------------------------------------------------------------------

    def _spawn(self, name: str, args: Sequence[str]) -> _Proc:
        assert self.workdir is not None
        log_path = self.workdir / "logs" / f"{name}.log"
        with log_path.open("wb") as out:
            popen = subprocess.Popen(
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,  # Ctrl-C in a terminal reaches the launcher only
                preexec_fn=die_with_parent,  # noqa: PLW1509 - no threads run yet in our callers
            )
        proc = _Proc(name, popen, log_path)
        self._procs.append(proc)
        log.debug("started %s (pid %d)", name, popen.pid)
        return proc

    def _check_alive(self, proc: _Proc) -> None:
        if proc.popen.poll() is not None:
            raise ClusterError(
                f"{proc.name} exited with code {proc.popen.returncode}; "
                f"last lines of its log:\n{proc.tail()}"
            )

    def _write_tokens(self) -> Path:
        assert self.workdir is not None
        self.admin_token = secrets.token_urlsafe(32)
        self.limited_token = secrets.token_urlsafe(32)
        self.operator_token = secrets.token_urlsafe(32)
        rows = [
            (self.admin_token, "cleo-test-admin", "system:masters"),
            (secrets.token_urlsafe(32), "system:kube-controller-manager", "system:masters"),
            (secrets.token_urlsafe(32), "system:kube-scheduler", ""),
            (secrets.token_urlsafe(32), "kwok-controller", "system:masters"),
            # Only the RBAC its upstream manifests grant (e2e/metrics.py).
            (secrets.token_urlsafe(32), METRICS_SERVER_USER, ""),
            (self.limited_token, LIMITED_USER, ""),
            (self.operator_token, OPERATOR_USER, "system:masters"),
        ]
        path = self.workdir / "pki" / "tokens.csv"
        path.write_text("".join(f'{tok},{user},{user},"{groups}"\n' for tok, user, groups in rows))
        path.chmod(0o600)
        self._component_tokens = {user: tok for tok, user, _ in rows}
        return path

    def _start_etcd(self, deadline: float) -> None:
        assert self.workdir is not None
        client, peer = free_port(), free_port()
        self._etcd_url = f"http://127.0.0.1:{client}"
        proc = self._spawn(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name=default",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self._etcd_url}",
                f"--advertise-client-urls={self._etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=default=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",  # throwaway data: much faster, and safe to lose
                "--log-level=warn",
            ],
        )
        while True:
            self._check_alive(proc)
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self._etcd_url}/health", timeout=2) as resp,
            ):
                if json.loads(resp.read()).get("health") == "true":
                    return
            self._wait_or_fail(deadline, "etcd to report healthy", proc)

    def _start_apiserver(self, tokens: Path, deadline: float) -> None:
        assert self.workdir is not None and self.pki is not None
        self.apiserver_port = free_port()
        self.server = f"https://127.0.0.1:{self.apiserver_port}"
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        self.audit_log = self.workdir / "logs" / "audit.log"
        proc = self._spawn(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers={self._etcd_url}",
                f"--secure-port={self.apiserver_port}",
                "--bind-address=127.0.0.1",
                # Without a default route the server cannot pick an address by itself.
                "--advertise-address=127.0.0.1",
                # A loopback advertise address cannot back the `kubernetes` Service's
                # endpoints; nothing in the tests talks to the API through that Service.
                "--endpoint-reconciler-type=none",
                f"--tls-cert-file={self.pki.serving_cert}",
                f"--tls-private-key-file={self.pki.serving_key}",
                f"--client-ca-file={self.pki.ca_cert}",
                f"--token-auth-file={tokens}",
                "--authorization-mode=RBAC",
                "--anonymous-auth=false",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={self.pki.sa_public_key}",
                f"--service-account-signing-key-file={self.pki.sa_private_key}",
                "--service-cluster-ip-range=10.96.0.0/16",  # room for thousands of Services
                "--allow-privileged=false",
                # This plugin taints every new Node not-ready until the node-lifecycle
                # controller clears it; that controller is left out (it would also mark the
                # fake node NotReady), so the plugin goes too.
                "--disable-admission-plugins=TaintNodesByCondition",
                "--profiling=false",
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                # The aggregation layer, for metrics-server's metrics.k8s.io: the aggregator
                # proxies with this client certificate and names the user in headers that
                # metrics-server trusts only from a certificate of the front-proxy CA.
                f"--requestheader-client-ca-file={self.pki.front_proxy_ca_cert}",
                f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={self.pki.front_proxy_client_cert}",
                f"--proxy-client-key-file={self.pki.front_proxy_client_key}",
                "--audit-log-format=json",
                "--audit-log-mode=blocking",  # an event is on disk before the response
                "--v=1",
            ],
        )
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        while True:
            self._check_alive(proc)
            req = urllib.request.Request(
                f"{self.server}/readyz",
                headers={"Authorization": f"Bearer {self.admin_token}"},
            )
            with (
                contextlib.suppress(OSError, urllib.error.HTTPError),
                urllib.request.urlopen(req, timeout=3, context=ctx) as resp,
            ):
                if resp.status == 200:
                    break
            self._wait_or_fail(deadline, "kube-apiserver /readyz", proc)
        self.kubeconfig = self.workdir / "kubeconfig"
        self._write_kubeconfig(self.kubeconfig, "cleo-test-admin", self.admin_token)

    def _write_kubeconfig(self, path: Path, user: str, token: str) -> None:
        assert self.pki is not None
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "cleo-local",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(self.pki.ca_cert),
                    },
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {"name": "cleo-local", "context": {"cluster": "cleo-local", "user": user}}
            ],
            "current-context": "cleo-local",
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)

    def kubeconfig_for(self, user: str, token: str) -> Path:
        """Write a kubeconfig that authenticates with `token`; return its path."""
        assert self.workdir is not None
        path = self.workdir / f"kubeconfig-{user.replace(':', '-')}"
        self._write_kubeconfig(path, user, token)
        return path

    def _install_crds(self, deadline: float) -> None:
        """Apply `crds` and wait until they are Established (served, so in discovery)."""
        if not self.crds:
            return
        for path in self.crds:
            self.kubectl("apply", "--server-side", "-f", str(path))
        # `kubectl wait` fails at once on a CRD whose status has no conditions yet.
        while (
            self.kubectl(
                "wait", "--for=condition=Established", "crd", "--all", "--timeout=10s", check=False
            ).returncode
            != 0
        ):
            self._wait_or_fail(deadline, "the CRDs to be Established", None)

    def _start_controllers(self, tokens: Path) -> None:
        del tokens
        assert self.workdir is not None and self.pki is not None
        kcm_kubeconfig = self.kubeconfig_for(
            "system:kube-controller-manager",
            self._component_tokens["system:kube-controller-manager"],
        )
        self._spawn(
            "kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                f"--kubeconfig={kcm_kubeconfig}",
                "--leader-elect=false",
                f"--controllers={','.join(CONTROLLERS)}",
                f"--service-account-private-key-file={self.pki.sa_private_key}",
                f"--root-ca-file={self.pki.ca_cert}",
                "--use-service-account-credentials=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--horizontal-pod-autoscaler-sync-period=5s",
                "--concurrent-gc-syncs=5",
                "--v=1",
            ],
        )
        sched_kubeconfig = self.kubeconfig_for(
            "system:kube-scheduler", self._component_tokens["system:kube-scheduler"]
        )
        self._spawn(
            "kube-scheduler",
            [
                str(self.bin_dir / "kube-scheduler"),
                f"--kubeconfig={sched_kubeconfig}",
                f"--authentication-kubeconfig={sched_kubeconfig}",
                f"--authorization-kubeconfig={sched_kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--v=1",
            ],
        )
        kwok_kubeconfig = self.kubeconfig_for(
            "kwok-controller", self._component_tokens["kwok-controller"]
        )
        usage_config = self.workdir / "kwok-usage.yaml"
        usage_config.write_text(yaml.safe_dump_all(kwok_usage_config(), sort_keys=False))
        # KWOK's server is every fake node's kubelet: the node stages advertise this
        # address and port, and metrics-server scrapes the simulated /metrics/resource.
        kubelet_port = free_port()
        self._spawn(
            "kwok",
            [
                str(self.bin_dir / "kwok"),
                f"--kubeconfig={kwok_kubeconfig}",
                f"--config={self.bin_dir / 'kwok-stages.yaml'}",
                f"--config={usage_config}",
                # Test-only stages from the repository (a failing migration's pod): not part
                # of the toolchain, so they never change its cache key.
                f"--config={REPO / 'e2e' / 'kwok' / 'test-stages.yaml'}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                f"--server-address=127.0.0.1:{kubelet_port}",
                "--node-ip=127.0.0.1",
                f"--node-port={kubelet_port}",
                f"--tls-cert-file={self.pki.kubelet_cert}",
                f"--tls-private-key-file={self.pki.kubelet_key}",
                "--node-lease-duration-seconds=40",
            ],
        )

    def _start_metrics_server(self) -> None:
        """Started last and never waited for: start() does not need it, and its start-up
        would compete for CPU with the components start() waits on. Only tests that read
        metrics wait for them (a new pod's metrics need two scrapes anyway)."""
        assert self.pki is not None
        self._spawn(
            "metrics-server",
            [
                str(self.bin_dir / "metrics-server"),
                *metrics_server_args(
                    port=self.metrics_server_port,
                    kubeconfig=self.kubeconfig_for(
                        METRICS_SERVER_USER, self._component_tokens[METRICS_SERVER_USER]
                    ),
                    serving_cert=self.pki.metrics_server_cert,
                    serving_key=self.pki.metrics_server_key,
                    kubelet_ca=self.pki.ca_cert,
                    client_ca=self.pki.ca_cert,
                    front_proxy_ca=self.pki.front_proxy_ca_cert,
                ),
            ],
        )

    def _register_metrics_api(self) -> None:
        assert self.pki is not None
        self.metrics_server_port = free_port()
        register_metrics_api(
            server=self.server,
            token=self.admin_token,
            ca_cert=self.pki.ca_cert,
            port=self.metrics_server_port,
        )

    def _create_fake_node(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": FAKE_NODE,
                "annotations": {
                    "kwok.x-k8s.io/node": "fake",
                    **node_metrics_annotations(FAKE_NODE),
                },
                "labels": {
                    "kubernetes.io/hostname": FAKE_NODE,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                },
            },
            "status": {
                # Room for the tenant storm benchmark: thousands of pods on one fake node.
                "allocatable": {"cpu": "512", "memory": "2Ti", "pods": "5000"},
                "capacity": {"cpu": "512", "memory": "2Ti", "pods": "5000"},
            },
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(node))

    def _wait_for_default_service_account(self, deadline: float) -> None:
        """Pods are admitted only once the namespace's `default` ServiceAccount exists."""
        while True:
            for proc in self._procs:
                self._check_alive(proc)
            sa = self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False)
            node = self.kubectl(
                "get",
                "node",
                FAKE_NODE,
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                check=False,
            )
            if sa.returncode == 0 and node.stdout.strip() == "True":
                return
            self._wait_or_fail(deadline, "the default ServiceAccount and a Ready fake node", None)

    def _wait_or_fail(self, deadline: float, what: str, proc: _Proc | None) -> None:
        if time.monotonic() > deadline:
            detail = f"; last lines of {proc.name}'s log:\n{proc.tail()}" if proc else ""
            raise ClusterError(f"timed out waiting for {what}{detail}")
        time.sleep(0.25)

    # -- conveniences ------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The environment for a process that should talk to this cluster (and only it)."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run this cluster's kubectl against this cluster."""
        cmd = [
            str(self.bin_dir / "kubectl"),
            f"--kubeconfig={kubeconfig or self.kubeconfig}",
            *args,
        ]
        result = subprocess.run(
            cmd, input=input, capture_output=True, text=True, check=False, timeout=120
        )
        if check and result.returncode != 0:
            raise ClusterError(
                f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result

    def audit_events(self, *, user: str | None = None, offset: int = 0) -> list[dict[str, Any]]:
        """Audited write requests (optionally only `user`'s) from byte `offset` of the log."""
        events = []
        with self.audit_log.open("rb") as log_file:
            log_file.seek(offset)
            for line in log_file:
                event = json.loads(line)
                if event.get("stage") != "ResponseComplete":
                    continue
                if user is None or event.get("user", {}).get("username") == user:
                    events.append(event)
        return events

    def audit_offset(self) -> int:
        """Where the audit log ends now; pass to `audit_events` to see only what follows."""
        return self.audit_log.stat().st_size if self.audit_log.exists() else 0

    def operator_env(self) -> dict[str, str]:
        """The environment for the operator process under test (its own identity)."""
        env = self.env()
        env["KUBECONFIG"] = str(self.kubeconfig_for(OPERATOR_USER, self.operator_token))
        return env

    def metrics(self) -> str:
        """The API server's Prometheus metrics text (for counting requests)."""
        assert self.pki is not None
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        req = urllib.request.Request(
            f"{self.server}/metrics", headers={"Authorization": f"Bearer {self.admin_token}"}
        )
        with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
            text: str = resp.read().decode()
            return text

    def state(self) -> dict[str, Any]:
        """What `down` needs to find this cluster again."""
        return {
            "kubeconfig": str(self.kubeconfig),
            "server": self.server,
            "workdir": str(self.workdir),
            "pids": self.pids(),
        }


def iter_logs(cluster: LocalCluster) -> Iterator[tuple[str, str]]:
    """Each component's name and the tail of its log (for failure reports)."""
    for proc in cluster._procs:
        yield proc.name, proc.tail(50)


# -- command line: make cluster-up / cluster-down ----------------------------------------


def _serve(state_dir: Path) -> int:
    """Run a cluster until SIGTERM or SIGINT; publish how to reach it in `state_dir`."""
    state_dir.mkdir(parents=True, exist_ok=True)
    stop = False

    def _on_signal(signum: int, frame: object) -> None:
        del signum, frame
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    cluster = LocalCluster(bin_dir=build_toolchain(), workdir=state_dir / "cluster")
    try:
        cluster.start()
        (state_dir / "state.json").write_text(
            json.dumps({**cluster.state(), "launcher": os.getpid()}, indent=2)
        )
        (state_dir / "ready").touch()
        while not stop:
            for proc in cluster._procs:
                if proc.popen.poll() is not None:
                    log.error("%s exited: %s", proc.name, proc.tail(10))
                    stop = True
            time.sleep(0.5)
    finally:
        cluster.stop()
        for name in ("ready", "state.json"):
            (state_dir / name).unlink(missing_ok=True)
    return 0


def _up(state_dir: Path, timeout: float) -> int:
    if (state_dir / "state.json").exists():
        state = json.loads((state_dir / "state.json").read_text())
        if _alive(state["launcher"]):
            print(f"export KUBECONFIG={state['kubeconfig']}")  # noqa: T201 - CLI output
            return 0
    build_toolchain()  # build in the foreground, so its progress is visible
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / "launcher.log").open("wb") as out:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "e2e.cluster", "serve", "--state-dir", str(state_dir)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while not (state_dir / "ready").exists():
        if launcher.poll() is not None or time.monotonic() > deadline:
            sys.stderr.write((state_dir / "launcher.log").read_text(errors="replace"))
            sys.stderr.write("the local control plane did not start\n")
            with contextlib.suppress(ProcessLookupError):
                launcher.terminate()
            return 1
        time.sleep(0.5)
    state = json.loads((state_dir / "state.json").read_text())
    print(f"export KUBECONFIG={state['kubeconfig']}")  # noqa: T201 - CLI output
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _down(state_dir: Path) -> int:
    state_file = state_dir / "state.json"
    if not state_file.exists():
        return 0
    state = json.loads(state_file.read_text())
    pid = int(state["launcher"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 40
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    for child in [pid, *state.get("pids", [])]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(child), signal.SIGKILL)
    state_file.unlink(missing_ok=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.cluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "serve", "build"])
    parser.add_argument("--state-dir", type=Path, default=REPO / ".run" / "cluster")
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    state_dir: Path = args.state_dir.resolve()
    if args.command == "build":
        print(build_toolchain())  # noqa: T201 - CLI output
        return 0
    if args.command == "up":
        return _up(state_dir, args.timeout)
    if args.command == "down":
        return _down(state_dir)
    return _serve(state_dir)


if __name__ == "__main__":
    sys.exit(main())

"""pytest fixtures for the local Kubernetes control plane.

`cluster` starts one local control plane for the whole session (built from Go modules, see
e2e/toolchain) and stops it at the end, leaving no process behind. It is started only when
a test asks for it, so unit tests stay fast.

Tests never touch a cluster they did not start, unless the user opts in explicitly with
CLEO_TEST_CLUSTER=current, which uses the current kubeconfig context instead (for running
the e2e tests against kind or a real cluster).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from cleo_operator.kube.client import KubeClient
from e2e.cluster import ClusterError, LocalCluster, build_toolchain

REPO = Path(__file__).resolve().parents[2]


class ExistingCluster:
    """The user's current kubeconfig context, used only on explicit opt-in."""

    def __init__(self) -> None:
        self.kubeconfig = Path(os.environ.get("KUBECONFIG", Path.home() / ".kube" / "config"))
        self.bin_dir = Path(os.environ.get("CLEO_KUBECTL_DIR", "/usr/local/bin"))

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["kubectl", f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def operator_env(self) -> dict[str, str]:
        return self.env()


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    """A running local control plane for the whole test session."""
    if os.environ.get("CLEO_TEST_CLUSTER") == "current":
        yield ExistingCluster()  # type: ignore[misc]
        return
    bin_dir = build_toolchain()
    with LocalCluster(bin_dir=bin_dir) as running:
        yield running


@pytest.fixture(scope="session")
def kube(cluster: LocalCluster) -> KubeClient:
    """The operator's own client, authenticated as the cluster admin."""
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(
        config_file=str(cluster.kubeconfig), client_configuration=configuration
    )
    return KubeClient(k8s.ApiClient(configuration))


@pytest.fixture(scope="session")
def crds_installed(cluster: LocalCluster) -> None:
    """Our CRDs and the tenant ClusterRoles, applied from the committed YAML; CRDs Established.

    The ClusterRoles (deploy/rbac/tenant-roles.yaml) are what the operator binds tenant
    admins and viewers to, and deploy/rbac/operator-tenant-role.yaml what it binds itself
    to in tenant namespaces; it refuses to start without them, as in a real cluster.
    """
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    cluster.kubectl(
        "apply", "--server-side", "-f", str(REPO / "deploy" / "rbac" / "tenant-roles.yaml")
    )
    # The operator binds itself to this one in each tenant namespace (kube/permissions.py).
    cluster.kubectl(
        "apply", "--server-side", "-f", str(REPO / "deploy" / "rbac" / "operator-tenant-role.yaml")
    )
    for plural in ("cleotenants", "cleobackups", "cleofailovers"):
        # Not `kubectl wait`: right after the apply it can fail on a CRD whose status has
        # no conditions yet ("status.conditions accessor error") instead of waiting.
        wait_for(
            lambda plural=plural: (
                cluster.kubectl(
                    "get",
                    f"crd/{plural}.cleoai.io",
                    "-o",
                    "jsonpath={.status.conditions[?(@.type=='Established')].status}",
                    check=False,
                ).stdout.strip()
                == "True"
            ),
            timeout=60,
            what=f"CRD {plural}.cleoai.io to be Established",
        )


def wait_for(
    predicate: Callable[[], Any], *, timeout: float = 60.0, interval: float = 0.25, what: str = ""
) -> Any:
    """Poll `predicate` until it returns something truthy; fail the test with `what` otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what or predicate}; last: {last!r}")


def kubectl_json(cluster: LocalCluster, *args: str) -> Any:
    """`kubectl get ... -o yaml`, decoded; None when the object does not exist."""
    result = cluster.kubectl(*args, "-o", "yaml", check=False)
    if result.returncode != 0:
        if "NotFound" in result.stderr or "not found" in result.stderr:
            return None
        raise ClusterError(result.stderr)
    return yaml.safe_load(result.stdout)

"""pytest fixtures for the local Kubernetes control plane.

`cluster` starts one local control plane for the whole session (built from Go modules, see
e2e/toolchain) and stops it at the end, leaving no process behind. It is started only when
a test asks for it, so unit tests stay fast.

Tests never touch a cluster they did not start, unless the user opts in explicitly with
CLEO_TEST_CLUSTER=current, which uses the current kubeconfig context instead (for running
the e2e tests against kind or a real cluster).
"""

from __future__ import annotations

import functools
import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from cleo_operator.kube import kinds
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import Kind
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
    # Our CRDs are there before the garbage collector starts (see `LocalCluster.crds`);
    # `crds_installed` still applies them (a no-op then) with the ClusterRoles.
    with LocalCluster(bin_dir=bin_dir, crds=(REPO / "crds",)) as running:
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
    """`kubectl get ... -o yaml`, decoded; None when the object does not exist.

    A plain `get KIND [NAME] [-n NAMESPACE]` of a kind in `_KINDS`, on the local control
    plane, is one GET from this process instead: tests poll with this every quarter of a
    second, and each kubectl is a Go program started anew (about 0.1 CPU-second and 0.2 s
    of wall time each on the test machines, against a millisecond for the GET). The answer
    is what kubectl prints (managedFields left out, lists as a `List` whose items carry
    their kind); anything else goes to kubectl.
    """
    fast = _get_directly(cluster, args)
    if fast is not _UNSUPPORTED:
        return fast
    result = cluster.kubectl(*args, "-o", "yaml", check=False)
    if result.returncode != 0:
        if "NotFound" in result.stderr or "not found" in result.stderr:
            return None
        raise ClusterError(result.stderr)
    return yaml.safe_load(result.stdout)


def _kinds(*kinds: Kind, short: dict[str, str]) -> dict[str, Kind]:
    """Every name kubectl takes for them: the plural, the singular, the short names."""
    table: dict[str, Kind] = {}
    for k in kinds:
        table[k.plural] = table[k.kind.lower()] = k
        if k.group:
            table[f"{k.plural}.{k.group}"] = k
    for alias, plural in short.items():
        table[alias] = table[plural]
    return table


_KINDS = _kinds(
    *(kinds.NAMESPACE, kinds.SECRET, kinds.CONFIG_MAP, kinds.SERVICE, kinds.POD),
    *(kinds.RESOURCE_QUOTA, kinds.SERVICE_ACCOUNT, kinds.DEPLOYMENT, kinds.JOB, kinds.CRON_JOB),
    *(kinds.HPA, kinds.NETWORK_POLICY, kinds.ROLE, kinds.ROLE_BINDING, kinds.CRD),
    *(kinds.TENANT, kinds.BACKUP, kinds.FAILOVER, kinds.LEASE),
    Kind("apps/v1", "ReplicaSet", "replicasets"),
    Kind("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", namespaced=False),
    short={
        "ns": "namespaces",
        "cm": "configmaps",
        "svc": "services",
        "po": "pods",
        "quota": "resourcequotas",
        "sa": "serviceaccounts",
        "deploy": "deployments",
        "rs": "replicasets",
        "cj": "cronjobs",
        "hpa": "horizontalpodautoscalers",
        "netpol": "networkpolicies",
        "crd": "customresourcedefinitions",
        "crds": "customresourcedefinitions",
    },
)

_UNSUPPORTED = object()


def _get_directly(cluster: LocalCluster, args: tuple[str, ...]) -> Any:
    """What `kubectl_json` would return, by one GET; `_UNSUPPORTED` for anything else."""
    if not isinstance(cluster, LocalCluster) or cluster.pki is None:
        return _UNSUPPORTED  # someone else's cluster: their kubeconfig, so kubectl
    namespace = "default"  # the kubeconfig's context names none
    rest: list[str] = []
    words = iter(args)
    for word in words:
        if word in ("-n", "--namespace"):
            namespace = next(words, "")
        elif word.startswith("--namespace="):
            namespace = word.partition("=")[2]
        elif word.startswith("-"):
            return _UNSUPPORTED
        else:
            rest.append(word)
    if len(rest) == 2 and "/" in rest[1]:
        rest = [rest[0], *rest[1].split("/", 1)]
    if rest[:1] != ["get"] or len(rest) not in (2, 3) or not namespace:
        return _UNSUPPORTED
    kind = _KINDS.get(rest[1].lower())
    if kind is None:
        return _UNSUPPORTED
    name = rest[2] if len(rest) == 3 else None
    request = urllib.request.Request(  # noqa: S310 - the local control plane, https
        cluster.server + kind.path(namespace=namespace if kind.namespaced else None, name=name),
        headers={"Authorization": f"Bearer {cluster.admin_token}", "Accept": "application/json"},
    )
    body = _read_json(request, _tls_context(cluster.pki.ca_cert))
    if body is None:
        return None
    if name is not None:
        body.get("metadata", {}).pop("managedFields", None)
        return body
    items = []
    for item in body.get("items") or []:
        item.get("metadata", {}).pop("managedFields", None)
        items.append({"apiVersion": kind.api_version, "kind": kind.kind, **item})
    return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}


def _read_json(request: urllib.request.Request, context: ssl.SSLContext) -> dict[str, Any] | None:
    """The decoded answer; None for a 404. A 429 (a CRD's storage still initializing, the
    server busy) is retried after the server's Retry-After, as client-go (kubectl) does."""
    for _attempt in range(10):
        try:
            with urllib.request.urlopen(request, timeout=30, context=context) as response:  # noqa: S310 - the local control plane
                body: dict[str, Any] = json.loads(response.read())
                return body
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            if error.code != 429:
                detail = error.read().decode(errors="replace")
                raise ClusterError(f"GET {request.full_url}: {error.code} {detail}") from error
            time.sleep(min(float(error.headers.get("Retry-After") or 1), 1.0))
    raise ClusterError(f"GET {request.full_url}: still 429 Too Many Requests after 10 tries")


@functools.cache
def _tls_context(ca_cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_cert))

"""The metrics API on the local control plane: metrics-server, fed by KWOK's simulated usage.

Without it every HorizontalPodAutoscaler reports ScalingActive=False and a tenant reads
Degraded, which is the truth on a cluster without metrics but not what a user of `make run`
should see. This module holds what the launcher (e2e/cluster.py) needs to wire it the way
kwokctl's binary runtime does (KWOK v0.8.0, pkg/kwokctl/components):

- KWOK serves a kubelet-like `/metrics/resource` for every fake node, from a `Metric` whose
  values are CEL expressions over the pods on the node, and a `ClusterResourceUsage` that
  says how much CPU and memory each container uses. Both are KWOK configuration (given
  with `--config`, as the stages are), not objects in the cluster: nothing a test lists
  or deletes can turn them off.
- The fake node advertises KWOK's server as its kubelet (`--node-ip`, `--node-port` fill
  its InternalIP and `daemonEndpoints.kubeletEndpoint.Port`), and its annotation
  `metrics.k8s.io/resource-metrics-path` tells metrics-server which node's page to read,
  since one KWOK server answers for every node.
- metrics-server listens on loopback; the `v1beta1.metrics.k8s.io` APIService points at an
  ExternalName Service whose name is 127.0.0.1. There is no pod network or kube-proxy
  here, so a ClusterIP would lead nowhere; the aggregator resolves an ExternalName Service
  to `externalName:port` itself (and its availability check skips endpoints for it).

Every TLS hop is verified: the APIService carries the cluster CA as caBundle for
metrics-server's certificate, metrics-server checks KWOK's certificate against the same CA,
and the aggregator authenticates to metrics-server with a front-proxy client certificate.
metrics-server's own identity has the RBAC its upstream manifests grant (but the ConfigMap
reader: see `metrics_server_args`).

Simulated usage per pod: the annotations `kwok.x-k8s.io/usage-cpu` and
`kwok.x-k8s.io/usage-memory` (quantities, for each container of the pod), 1m and 16Mi by
default. A test raises a pod's CPU with `kubectl annotate`; KWOK reads it at the next scrape.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Final

from e2e.pki import FRONT_PROXY_CLIENT

METRICS_SERVER_USER: Final = "metrics-server"
"""The user name metrics-server authenticates as (a static token, like the other components)."""

METRICS_SERVER_SERVICE: Final = ("kube-system", "metrics-server")
"""The Service the APIService names."""

METRICS_SERVER_HOSTS: Final = [
    f"{METRICS_SERVER_SERVICE[1]}.{METRICS_SERVER_SERVICE[0]}.svc",
    "127.0.0.1",
]
"""What metrics-server's certificate is for: the aggregator checks the Service's DNS name
(`<name>.<namespace>.svc`) whatever address it dials."""

USAGE_CPU_ANNOTATION: Final = "kwok.x-k8s.io/usage-cpu"
"""A pod annotation: the CPU each of its containers uses (a quantity such as `300m`)."""

USAGE_MEMORY_ANNOTATION: Final = "kwok.x-k8s.io/usage-memory"
"""A pod annotation: the memory working set of each of its containers (such as `64Mi`)."""

DEFAULT_CPU: Final = "1m"
DEFAULT_MEMORY: Final = "16Mi"

METRIC_RESOLUTION_SECONDS: Final = 10
"""How often metrics-server scrapes (its minimum). A pod's CPU rate needs two scrapes, and
KWOK may not know a pod yet at the first one after it starts, so a new pod has metrics
20-40 s after it runs; the default, 60 s, would make that two minutes."""

NODE_METRICS_PATH: Final = "/metrics/nodes/{nodeName}/metrics/resource"


def node_metrics_annotations(node: str) -> dict[str, str]:
    """The annotation that sends metrics-server to this node's page on KWOK's server."""
    return {"metrics.k8s.io/resource-metrics-path": NODE_METRICS_PATH.format(nodeName=node)}


def _usage_expression(annotation: str, default: str) -> str:
    # CEL, evaluated by KWOK for each container at each scrape. A pod without the
    # annotation uses the default; a value that is not a quantity fails the evaluation,
    # which KWOK logs and counts as 0 (and metrics-server then drops the pod).
    return (
        f'"{annotation}" in pod.metadata.annotations'
        f' ? Quantity(pod.metadata.annotations["{annotation}"])'
        f' : Quantity("{default}")'
    )


def _container_metric(name: str, kind: str, value: str, help_: str) -> dict[str, Any]:
    return {
        "name": name,
        "dimension": "container",
        "kind": kind,
        "help": help_,
        "labels": [
            {"name": "container", "value": "container.name"},
            {"name": "namespace", "value": "pod.metadata.namespace"},
            {"name": "pod", "value": "pod.metadata.name"},
        ],
        "value": value,
    }


def kwok_usage_config() -> list[dict[str, Any]]:
    """KWOK configuration: the kubelet's `/metrics/resource` page and the usage it reports.

    Only the series metrics-server v0.8 reads (pkg/scraper/client/resource/decode.go):
    node and container CPU (cumulative core-seconds, which KWOK integrates from the usage
    over time) and memory working set, and the containers' start times.
    """
    metric = {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Metric",
        "metadata": {"name": "metrics-resource"},
        "spec": {
            "path": NODE_METRICS_PATH,
            "metrics": [
                _container_metric(
                    "container_start_time_seconds",
                    "gauge",
                    "pod.SinceSecond()",
                    "Start time of the container since unix epoch in seconds",
                ),
                _container_metric(
                    "container_cpu_usage_seconds_total",
                    "counter",
                    'pod.CumulativeUsage("cpu", container.name)',
                    "Cumulative cpu time consumed by the container in core-seconds",
                ),
                _container_metric(
                    "container_memory_working_set_bytes",
                    "gauge",
                    'pod.Usage("memory", container.name)',
                    "Current working set of the container in bytes",
                ),
                {
                    "name": "node_cpu_usage_seconds_total",
                    "dimension": "node",
                    "kind": "counter",
                    "help": "Cumulative cpu time consumed by the node in core-seconds",
                    "value": 'node.CumulativeUsage("cpu")',
                },
                {
                    "name": "node_memory_working_set_bytes",
                    "dimension": "node",
                    "kind": "gauge",
                    "help": "Current working set of the node in bytes",
                    "value": 'node.Usage("memory")',
                },
            ],
        },
    }
    usage = {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "ClusterResourceUsage",
        "metadata": {"name": "usage-from-annotation"},
        "spec": {
            "usages": [
                {
                    "usage": {
                        "cpu": {"expression": _usage_expression(USAGE_CPU_ANNOTATION, DEFAULT_CPU)},
                        "memory": {
                            "expression": _usage_expression(USAGE_MEMORY_ANNOTATION, DEFAULT_MEMORY)
                        },
                    }
                }
            ]
        },
    }
    return [metric, usage]


def metrics_server_args(
    *,
    port: int,
    kubeconfig: Path,
    serving_cert: Path,
    serving_key: Path,
    kubelet_ca: Path,
    client_ca: Path,
    front_proxy_ca: Path,
) -> list[str]:
    """metrics-server's flags, after its binary.

    The CAs it authenticates callers with are given as files, the same ones kube-apiserver
    has. In a cluster it reads them from the ConfigMap kube-system/extension-apiserver-
    authentication instead, but it panics at start-up when it cannot, and it would start
    here before its RBAC is applied: with both files given it never looks them up.
    """
    return [
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--tls-cert-file={serving_cert}",
        f"--tls-private-key-file={serving_key}",
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        # The fake nodes' kubelet is KWOK, on 127.0.0.1 at the port the node advertises.
        "--kubelet-preferred-address-types=InternalIP",
        "--kubelet-use-node-status-port",
        f"--kubelet-certificate-authority={kubelet_ca}",
        f"--metric-resolution={METRIC_RESOLUTION_SECONDS}s",
        # Must stay below 90% of the resolution; KWOK answers in milliseconds.
        "--kubelet-request-timeout=5s",
        f"--client-ca-file={client_ca}",
        f"--requestheader-client-ca-file={front_proxy_ca}",
        f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        "--profiling=false",
    ]


def loopback_service(service: tuple[str, str]) -> dict[str, Any]:
    """The Service an APIService names, for a server on loopback (see the module docstring)."""
    namespace, name = service
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"type": "ExternalName", "externalName": "127.0.0.1"},
    }


def api_service(
    group: str, version: str, *, service: tuple[str, str], port: int, ca_bundle_pem: bytes
) -> dict[str, Any]:
    """An APIService that sends `/apis/<group>/<version>` to `service`, whose serving
    certificate the aggregator verifies against `ca_bundle_pem`."""
    namespace, name = service
    return {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": f"{version}.{group}"},
        "spec": {
            "group": group,
            "version": version,
            "service": {"namespace": namespace, "name": name, "port": port},
            "caBundle": base64.b64encode(ca_bundle_pem).decode(),
            "groupPriorityMinimum": 100,
            "versionPriority": 100,
        },
    }


def metrics_api_objects(*, port: int, ca_bundle_pem: bytes) -> list[dict[str, Any]]:
    """The APIService, its Service, and metrics-server's RBAC (as its upstream manifests)."""
    user = {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": METRICS_SERVER_USER}

    def cluster_role_binding(binding: str, role: str) -> dict[str, Any]:
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": binding},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [user],
        }

    return [
        loopback_service(METRICS_SERVER_SERVICE),
        api_service(
            "metrics.k8s.io",
            "v1beta1",
            service=METRICS_SERVER_SERVICE,
            port=port,
            ca_bundle_pem=ca_bundle_pem,
        ),
        {
            # What `kubectl top` needs; aggregated into view, edit and admin.
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {
                "name": "system:aggregated-metrics-reader",
                "labels": {
                    f"rbac.authorization.k8s.io/aggregate-to-{role}": "true"
                    for role in ("view", "edit", "admin")
                },
            },
            "rules": [
                {
                    "apiGroups": ["metrics.k8s.io"],
                    "resources": ["pods", "nodes"],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:metrics-server"},
            "rules": [
                {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
                {
                    "apiGroups": [""],
                    "resources": ["pods", "nodes"],
                    "verbs": ["get", "list", "watch"],
                },
            ],
        },
        cluster_role_binding("system:metrics-server", "system:metrics-server"),
        # Delegated authentication and authorization of the requests the aggregator proxies
        # (TokenReviews, SubjectAccessReviews). The upstream RoleBinding that reads the
        # authentication ConfigMap is left out: metrics-server gets those CAs as files.
        cluster_role_binding("metrics-server:system:auth-delegator", "system:auth-delegator"),
    ]


class RegistrationError(RuntimeError):
    """The API server refused an object of the metrics API's registration."""


def _object_url(server: str, obj: dict[str, Any]) -> str:
    version = obj["apiVersion"]
    namespace = obj["metadata"].get("namespace")
    return (
        server
        + ("/api/v1" if version == "v1" else f"/apis/{version}")
        + (f"/namespaces/{namespace}" if namespace else "")
        + f"/{obj['kind'].lower()}s"  # services, apiservices, clusterroles, ...
    )


def _call(
    url: str, *, method: str, token: str, ca_cert: Path, body: dict[str, Any] | None = None
) -> None:
    req = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    ctx = ssl.create_default_context(cafile=str(ca_cert))
    with urllib.request.urlopen(req, timeout=10, context=ctx):
        pass


def create_objects(
    objects: list[dict[str, Any]], *, server: str, token: str, ca_cert: Path
) -> None:
    """Create `objects`, none of which exists yet.

    Plain POSTs rather than `kubectl apply`: on a fresh cluster there is nothing to merge
    with, and kubectl's discovery and per-object round trips cost most of a second of the
    cluster's start-up for metrics-server's eight objects; this takes about 0.1 s.
    """
    for obj in objects:
        try:
            _call(_object_url(server, obj), method="POST", token=token, ca_cert=ca_cert, body=obj)
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")
            raise RegistrationError(
                f"creating {obj['kind']} {obj['metadata']['name']} failed: {err.code} {detail}"
            ) from err


def delete_objects(
    objects: list[dict[str, Any]], *, server: str, token: str, ca_cert: Path
) -> None:
    """Delete `objects` (those already gone are skipped)."""
    for obj in objects:
        url = f"{_object_url(server, obj)}/{obj['metadata']['name']}"
        try:
            _call(url, method="DELETE", token=token, ca_cert=ca_cert)
        except urllib.error.HTTPError as err:
            if err.code != 404:
                raise RegistrationError(
                    f"deleting {obj['kind']} {obj['metadata']['name']} failed: {err.code}"
                ) from err


def register_metrics_api(*, server: str, token: str, ca_cert: Path, port: int) -> None:
    """Create `metrics_api_objects` on a fresh cluster."""
    create_objects(
        metrics_api_objects(port=port, ca_bundle_pem=ca_cert.read_bytes()),
        server=server,
        token=token,
        ca_cert=ca_cert,
    )

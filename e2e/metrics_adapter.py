"""A custom and external metrics adapter for tests: the HPA's `Pods` and `External` metrics.

A stand-in for prometheus-adapter or KEDA, which cannot run on the local control plane
(they need a Prometheus or the event sources behind it, and a pod network). What the HPA
controller sees is the same: the aggregator proxies `custom.metrics.k8s.io/v1beta2` and
`external.metrics.k8s.io/v1beta1` to this server through APIServices registered as
metrics-server's are (e2e/metrics.py: a Service to loopback, the cluster CA as caBundle),
and the values come back in the APIs' own lists. Only the values are the test's: it sets
them with `set_pods_metric` and `set_external_metric` instead of a Prometheus query.

It answers as a real adapter would, and no more:

- a Pods metric for the pods of the asked namespace that match the asked `labelSelector`
  (listed from the API server, as an adapter maps its series to pods), only when a value
  is set for that namespace and metric; otherwise 404, as prometheus-adapter answers for
  a metric it has no series of;
- an External metric's series of the asked namespace whose labels match the asked
  `labelSelector` (the metric's selector in the HPA), an empty list when none does.

Every request is recorded (`requests`) so a test can assert the HPA asked with the tenant's
namespace and selector. TLS is verified both ways, as metrics-server does it: the
aggregator checks this server's certificate (the cluster CA signs it for the Service's
name), and the server accepts only a client certificate of the front-proxy CA whose name
is the aggregator's, then reads the user from X-Remote-User. The API server has already
authorized the request on the metrics API's resources before proxying it; metrics-server
checks again with a SubjectAccessReview, this stand-in does not.
"""

from __future__ import annotations

import datetime
import json
import ssl
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

from e2e.metrics import api_service, create_objects, delete_objects, loopback_service
from e2e.pki import FRONT_PROXY_CLIENT, ClusterPKI, issue_serving_cert

CUSTOM: Final = ("custom.metrics.k8s.io", "v1beta2")
EXTERNAL: Final = ("external.metrics.k8s.io", "v1beta1")
ADAPTER_SERVICE: Final = ("kube-system", "test-metrics-adapter")


@dataclass(frozen=True)
class MetricRequest:
    """One request the adapter answered (or refused)."""

    path: str
    label_selector: str | None
    user: str
    status: int


def parse_selector(selector: str) -> dict[str, str]:
    """An equality-based label selector (`a=b,c==d`) as a dict; ValueError on any other."""
    labels: dict[str, str] = {}
    for term in filter(None, selector.split(",")):
        key, sep, value = term.partition("==") if "==" in term else term.partition("=")
        if not sep or "!" in key or not key.strip():
            raise ValueError(f"unsupported selector term {term!r}")
        labels[key.strip()] = value.strip()
    return labels


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@dataclass
class MetricsAdapter:
    """The adapter's state and server. `start()` it, set values, `stop()` it."""

    server: str
    """The API server (to list the pods a Pods metric describes)."""
    token: str
    """Whom the adapter lists pods as."""
    pki: ClusterPKI
    workdir: Path
    requests: list[MetricRequest] = field(default_factory=list)
    port: int = 0
    _pods: dict[tuple[str, str], str] = field(default_factory=dict)
    _external: dict[tuple[str, str], list[tuple[dict[str, str], str]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _httpd: ThreadingHTTPServer | None = None

    # -- what the test sets ------------------------------------------------------------

    def set_pods_metric(self, namespace: str, metric: str, value: str) -> None:
        """Every pod of `namespace` reports `value` (a quantity) for `metric`."""
        with self._lock:
            self._pods[(namespace, metric)] = value

    def set_external_metric(
        self, namespace: str, metric: str, labels: dict[str, str], value: str
    ) -> None:
        """The series of `metric` with `labels` in `namespace` is `value`."""
        with self._lock:
            series = [s for s in self._external.get((namespace, metric), []) if s[0] != labels]
            self._external[(namespace, metric)] = [*series, (labels, value)]

    def requests_for(self, prefix: str) -> list[MetricRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith(prefix)]

    # -- lifecycle ---------------------------------------------------------------------

    def objects(self) -> list[dict[str, Any]]:
        """Its Service and the two APIServices."""
        return [
            loopback_service(ADAPTER_SERVICE),
            *(
                api_service(
                    group,
                    version,
                    service=ADAPTER_SERVICE,
                    port=self.port,
                    ca_bundle_pem=self.pki.ca_cert.read_bytes(),
                )
                for group, version in (CUSTOM, EXTERNAL)
            ),
        ]

    def start(self) -> None:
        """Serve on a loopback port and register the APIServices."""
        namespace, name = ADAPTER_SERVICE
        cert, key = self.workdir / "adapter_cert.pem", self.workdir / "adapter_key.pem"
        issue_serving_cert(
            self.pki,
            cert_path=cert,
            key_path=key,
            common_name=name,
            hosts=[f"{name}.{namespace}.svc", "127.0.0.1"],
        )
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(self.pki.front_proxy_ca_cert))
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        httpd.daemon_threads = True
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
        self.port = httpd.server_address[1]
        self._httpd = httpd
        threading.Thread(target=httpd.serve_forever, name="metrics-adapter", daemon=True).start()
        create_objects(
            self.objects(), server=self.server, token=self.token, ca_cert=self.pki.ca_cert
        )

    def stop(self, *, unregister: bool = True) -> None:
        """Stop serving; with `unregister`, delete the APIServices and the Service too."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if unregister:
            delete_objects(
                self.objects(), server=self.server, token=self.token, ca_cert=self.pki.ca_cert
            )

    # -- answers -----------------------------------------------------------------------

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        parts = path.strip("/").split("/")
        if parts == ["apis"]:
            return 200, {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [self._group(g, v) for g, v in (CUSTOM, EXTERNAL)],
            }
        if len(parts) == 2 and parts[0] == "apis":
            for group, version in (CUSTOM, EXTERNAL):
                if parts[1] == group:
                    return 200, {
                        "kind": "APIGroup",
                        "apiVersion": "v1",
                        **self._group(group, version),
                    }
        if parts[:3] == ["apis", *CUSTOM]:
            return self._custom(parts[3:], query)
        if parts[:3] == ["apis", *EXTERNAL]:
            return self._external_answer(parts[3:], query)
        return 404, _status(404, "NotFound", f"the server could not find {path}")

    @staticmethod
    def _group(group: str, version: str) -> dict[str, Any]:
        gv = {"groupVersion": f"{group}/{version}", "version": version}
        return {"name": group, "versions": [gv], "preferredVersion": gv}

    def _resource_list(self, group: str, version: str, names: list[str], kind: str) -> Any:
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}",
            "resources": [
                {"name": n, "singularName": "", "namespaced": True, "kind": kind, "verbs": ["get"]}
                for n in sorted(set(names))
            ],
        }

    def _custom(self, rest: list[str], query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            pods = dict(self._pods)
        if not rest:
            names = [f"pods/{metric}" for _, metric in pods]
            return 200, self._resource_list(*CUSTOM, names, "MetricValueList")
        if len(rest) != 5 or rest[0] != "namespaces" or rest[2:4] != ["pods", "*"]:
            return 404, _status(404, "NotFound", "only Pods metrics of a namespace are served")
        namespace, metric = rest[1], rest[4]
        value = pods.get((namespace, metric))
        if value is None:
            return 404, _status(
                404, "NotFound", f"the server could not find the metric {metric} for pods"
            )
        items = [
            {
                "describedObject": {
                    "kind": "Pod",
                    "namespace": namespace,
                    "name": pod,
                    "apiVersion": "v1",
                },
                "metric": {"name": metric},
                "timestamp": _now(),
                "windowSeconds": 60,
                "value": value,
            }
            for pod in self._pods_matching(namespace, query.get("labelSelector", ""))
        ]
        return 200, {
            "kind": "MetricValueList",
            "apiVersion": "/".join(CUSTOM),
            "metadata": {},
            "items": items,
        }

    def _external_answer(
        self, rest: list[str], query: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            external = {k: list(v) for k, v in self._external.items()}
        if not rest:
            names = [metric for _, metric in external]
            return 200, self._resource_list(*EXTERNAL, names, "ExternalMetricValueList")
        if len(rest) != 3 or rest[0] != "namespaces":
            return 404, _status(404, "NotFound", "only metrics of a namespace are served")
        namespace, metric = rest[1], rest[2]
        try:
            wanted = parse_selector(query.get("labelSelector", ""))
        except ValueError as err:
            return 400, _status(400, "BadRequest", str(err))
        items = [
            {"metricName": metric, "metricLabels": labels, "timestamp": _now(), "value": value}
            for labels, value in external.get((namespace, metric), [])
            if all(labels.get(k) == v for k, v in wanted.items())
        ]
        return 200, {
            "kind": "ExternalMetricValueList",
            "apiVersion": "/".join(EXTERNAL),
            "metadata": {},
            "items": items,
        }

    def _pods_matching(self, namespace: str, selector: str) -> list[str]:
        url = f"{self.server}/api/v1/namespaces/{urllib.parse.quote(namespace)}/pods"
        if selector:
            url += "?" + urllib.parse.urlencode({"labelSelector": selector})
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"})
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
            listed = json.load(resp)
        return [p["metadata"]["name"] for p in listed["items"]]


def _handler(adapter: MetricsAdapter) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            path = urllib.parse.unquote(url.path)  # the HPA asks for `pods/%2A/<metric>`
            query = dict(urllib.parse.parse_qsl(url.query))
            user = self.headers.get("X-Remote-User", "")
            if self._client_name() != FRONT_PROXY_CLIENT or not user:
                code, body = 403, _status(403, "Forbidden", "only the aggregator may ask")
            else:
                code, body = adapter.answer(path, query)
            with adapter._lock:
                adapter.requests.append(MetricRequest(path, query.get("labelSelector"), user, code))
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _client_name(self) -> str:
            assert isinstance(self.connection, ssl.SSLSocket)
            cert = self.connection.getpeercert() or {}
            for rdn in cert.get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        return str(value)
            return ""

        def log_message(self, format: str, *args: Any) -> None:
            del format, args  # the recorded requests say more

    return Handler

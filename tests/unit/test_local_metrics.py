"""The local control plane's metrics wiring (e2e/metrics.py, e2e/pki.py), checked without
starting it: the pieces must agree with each other and with what metrics-server and the
aggregator check at run time, where a mismatch shows only as an HPA without metrics."""

from __future__ import annotations

import base64
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from e2e.metrics import (
    METRICS_SERVER_HOSTS,
    METRICS_SERVER_SERVICE,
    METRICS_SERVER_USER,
    USAGE_CPU_ANNOTATION,
    USAGE_MEMORY_ANNOTATION,
    kwok_usage_config,
    metrics_api_objects,
    metrics_server_args,
    node_metrics_annotations,
)
from e2e.pki import FRONT_PROXY_CLIENT, ClusterPKI, generate_pki

# The series metrics-server v0.8.0 decodes (pkg/scraper/client/resource/decode.go).
DECODED = {
    "node_cpu_usage_seconds_total",
    "node_memory_working_set_bytes",
    "container_cpu_usage_seconds_total",
    "container_memory_working_set_bytes",
    "container_start_time_seconds",
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ClusterPKI:
    return generate_pki(
        tmp_path_factory.mktemp("pki"),
        hosts=["127.0.0.1", "kubernetes"],
        metrics_server_hosts=METRICS_SERVER_HOSTS,
    )


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def signed_by(leaf: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        leaf.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError):  # a wrong signature; another issuer's name
        return False
    return True


def sans(c: x509.Certificate) -> set[str]:
    ext = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(n) for n in ext.get_values_for_type(x509.DNSName)} | {
        str(ip) for ip in ext.get_values_for_type(x509.IPAddress)
    }


def test_kwok_serves_every_series_metrics_server_reads_and_nothing_else() -> None:
    metric, usage = kwok_usage_config()
    assert (metric["kind"], usage["kind"]) == ("Metric", "ClusterResourceUsage")
    assert {m["name"] for m in metric["spec"]["metrics"]} == DECODED
    for m in metric["spec"]["metrics"]:
        if m["dimension"] == "container":
            # metrics-server finds the pod and container by these label names.
            assert {label["name"] for label in m["labels"]} == {"container", "namespace", "pod"}


def test_the_node_annotation_points_at_the_metric_page_of_that_node() -> None:
    metric, _ = kwok_usage_config()
    path = node_metrics_annotations("node-7")["metrics.k8s.io/resource-metrics-path"]
    assert path == metric["spec"]["path"].replace("{nodeName}", "node-7")
    assert path == "/metrics/nodes/node-7/metrics/resource"


def test_usage_reads_each_pods_annotations_with_a_default() -> None:
    _, usage = kwok_usage_config()
    [entry] = usage["spec"]["usages"]
    cpu = entry["usage"]["cpu"]["expression"]
    memory = entry["usage"]["memory"]["expression"]
    assert f'pod.metadata.annotations["{USAGE_CPU_ANNOTATION}"]' in cpu
    assert f'pod.metadata.annotations["{USAGE_MEMORY_ANNOTATION}"]' in memory
    # metrics-server drops a container whose CPU or memory is 0: the defaults must not be.
    for expression in (cpu, memory):
        default = expression.rsplit('Quantity("', 1)[1].split('")')[0]
        assert default[0] in "123456789", expression


def test_metrics_server_args_pass_its_own_validation(pki: ClusterPKI) -> None:
    args = metrics_server_args(
        port=4443,
        kubeconfig=Path("kubeconfig"),
        serving_cert=pki.metrics_server_cert,
        serving_key=pki.metrics_server_key,
        kubelet_ca=pki.ca_cert,
        client_ca=pki.ca_cert,
        front_proxy_ca=pki.front_proxy_ca_cert,
    )
    flags = {k: v for k, _, v in (a.removeprefix("--").partition("=") for a in args)}

    def seconds(value: str) -> float:
        assert value.endswith("s"), value
        return float(value[:-1])

    resolution = seconds(flags["metric-resolution"])
    assert resolution >= 10  # metrics-server refuses less
    assert seconds(flags["kubelet-request-timeout"]) < resolution * 0.9  # and this
    # With both CA files it never reads the ConfigMap it may not read yet at start-up.
    assert flags["client-ca-file"] == str(pki.ca_cert)
    assert flags["requestheader-client-ca-file"] == str(pki.front_proxy_ca_cert)
    assert flags["requestheader-allowed-names"] == FRONT_PROXY_CLIENT
    assert "kubelet-insecure-tls" not in flags


def test_the_apiservice_reaches_metrics_server_by_a_name_its_certificate_has(
    pki: ClusterPKI,
) -> None:
    objects = metrics_api_objects(port=4443, ca_bundle_pem=pki.ca_cert.read_bytes())
    by_kind = {o["kind"]: o for o in objects}
    api, svc = by_kind["APIService"], by_kind["Service"]
    namespace, name = METRICS_SERVER_SERVICE
    assert api["spec"]["service"] == {"namespace": namespace, "name": name, "port": 4443}
    assert (svc["metadata"]["namespace"], svc["metadata"]["name"]) == (namespace, name)
    # No pod network: the aggregator dials an ExternalName Service's name itself.
    assert svc["spec"] == {"type": "ExternalName", "externalName": "127.0.0.1"}
    assert "insecureSkipTLSVerify" not in api["spec"]
    bundle = x509.load_pem_x509_certificate(base64.b64decode(api["spec"]["caBundle"]))
    serving = cert(pki.metrics_server_cert)
    assert signed_by(serving, bundle)
    assert {f"{name}.{namespace}.svc", "127.0.0.1"} <= sans(serving)


def test_metrics_server_is_bound_to_what_it_needs_and_readers_get_top() -> None:
    objects = metrics_api_objects(port=1, ca_bundle_pem=b"x")
    bindings = [o for o in objects if o["kind"].endswith("Binding")]
    assert {b["roleRef"]["name"] for b in bindings} == {
        "system:metrics-server",
        "system:auth-delegator",
    }
    for binding in bindings:
        assert binding["subjects"] == [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": METRICS_SERVER_USER}
        ]
    reader = next(o for o in objects if o["metadata"]["name"] == "system:aggregated-metrics-reader")
    assert set(reader["metadata"]["labels"]) == {
        f"rbac.authorization.k8s.io/aggregate-to-{r}" for r in ("view", "edit", "admin")
    }


def test_the_front_proxy_has_a_ca_of_its_own(pki: ClusterPKI) -> None:
    client = cert(pki.front_proxy_client_cert)
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        FRONT_PROXY_CLIENT
    )
    usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert signed_by(client, cert(pki.front_proxy_ca_cert))
    # A certificate of the cluster CA must not be able to name users in headers.
    assert not signed_by(client, cert(pki.ca_cert))
    assert cert(pki.front_proxy_ca_cert).subject != cert(pki.ca_cert).subject


def test_kwoks_kubelet_certificate_is_for_the_node_address(pki: ClusterPKI) -> None:
    kubelet = cert(pki.kubelet_cert)
    assert signed_by(kubelet, cert(pki.ca_cert))
    assert sans(kubelet) == {str(ipaddress.ip_address("127.0.0.1"))}

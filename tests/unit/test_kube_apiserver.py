"""The API server addresses a backup runner's NetworkPolicy names when none are set."""

from __future__ import annotations

from kubernetes import client as k8s

from cleo_operator.kube.apiserver import find_api_server_cidrs
from cleo_operator.kube.client import KubeClient


def _client(host: str) -> KubeClient:
    configuration = k8s.Configuration()
    configuration.host = host
    return KubeClient(k8s.ApiClient(configuration))


def test_in_a_pod_the_clusterip_is_the_api_server() -> None:
    kube = _client("https://10.96.0.1:443")
    assert find_api_server_cidrs(kube, {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}) == (
        "10.96.0.1/32",
    )


def test_outside_a_pod_an_ip_address_server_is_the_api_server() -> None:
    assert find_api_server_cidrs(_client("https://[2001:db8::1]:6443"), {}) == ("2001:db8::1/128",)


def test_a_server_by_name_is_no_address() -> None:
    assert find_api_server_cidrs(_client("https://api.example.com:6443"), {}) == ()

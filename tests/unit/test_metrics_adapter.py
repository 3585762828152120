"""The test metrics adapter (e2e/metrics_adapter.py), checked without a cluster: it must
answer only for the namespace and selector asked, as a real adapter does, or the e2e test
that scales on its values would prove less than it says."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from e2e.metrics import METRICS_SERVER_HOSTS
from e2e.metrics_adapter import ADAPTER_SERVICE, MetricsAdapter, parse_selector
from e2e.pki import ClusterPKI, generate_pki, issue_serving_cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ClusterPKI:
    return generate_pki(
        tmp_path_factory.mktemp("pki"),
        hosts=["127.0.0.1"],
        metrics_server_hosts=METRICS_SERVER_HOSTS,
    )


@pytest.fixture
def adapter(pki: ClusterPKI, tmp_path: Path) -> MetricsAdapter:
    served = MetricsAdapter(server="https://127.0.0.1:1", token="t", pki=pki, workdir=tmp_path)
    served.set_external_metric("ns-a", "queue_depth", {"queue": "chat"}, "90")
    served.set_external_metric("ns-a", "queue_depth", {"queue": "batch"}, "500")
    served.set_pods_metric("ns-a", "requests_per_second", "150")
    return served


def test_equality_selectors_parse_and_others_are_refused() -> None:
    assert parse_selector("") == {}
    assert parse_selector("queue=chat,tier==gold") == {"queue": "chat", "tier": "gold"}
    for bad in ("queue!=chat", "queue", "queue in (chat)", "=x"):
        with pytest.raises(ValueError, match="unsupported selector term"):
            parse_selector(bad)


def test_an_external_metric_answers_only_the_series_the_selector_picks(
    adapter: MetricsAdapter,
) -> None:
    path = "/apis/external.metrics.k8s.io/v1beta1/namespaces/ns-a/queue_depth"
    code, body = adapter.answer(path, {"labelSelector": "queue=chat"})
    assert code == 200
    assert body["kind"] == "ExternalMetricValueList"
    assert [(i["metricLabels"], i["value"]) for i in body["items"]] == [({"queue": "chat"}, "90")]
    # A later value replaces the series of the same labels.
    adapter.set_external_metric("ns-a", "queue_depth", {"queue": "chat"}, "5")
    _, body = adapter.answer(path, {"labelSelector": "queue=chat"})
    assert [i["value"] for i in body["items"]] == ["5"]
    _, body = adapter.answer(path, {})
    assert sorted(i["value"] for i in body["items"]) == ["5", "500"]
    code, body = adapter.answer(path, {"labelSelector": "queue!=chat"})
    assert (code, body["reason"]) == (400, "BadRequest")


def test_another_namespace_gets_nothing(adapter: MetricsAdapter) -> None:
    code, body = adapter.answer(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/ns-b/queue_depth",
        {"labelSelector": "queue=chat"},
    )
    assert (code, body["items"]) == (200, [])
    code, body = adapter.answer(
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/ns-b/pods/*/requests_per_second", {}
    )
    assert (code, body["reason"]) == (404, "NotFound")
    code, _ = adapter.answer(
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/ns-a/pods/*/other_metric", {}
    )
    assert code == 404


def test_discovery_lists_both_groups_and_the_metrics_set(adapter: MetricsAdapter) -> None:
    code, groups = adapter.answer("/apis", {})
    assert code == 200
    assert {g["preferredVersion"]["groupVersion"] for g in groups["groups"]} == {
        "custom.metrics.k8s.io/v1beta2",
        "external.metrics.k8s.io/v1beta1",
    }
    _, custom = adapter.answer("/apis/custom.metrics.k8s.io/v1beta2", {})
    assert [r["name"] for r in custom["resources"]] == ["pods/requests_per_second"]
    _, external = adapter.answer("/apis/external.metrics.k8s.io/v1beta1", {})
    assert [r["name"] for r in external["resources"]] == ["queue_depth"]
    assert adapter.answer("/apis/metrics.k8s.io/v1beta1", {})[0] == 404


def test_the_apiservices_reach_the_adapter_by_a_name_its_certificate_has(
    adapter: MetricsAdapter, pki: ClusterPKI, tmp_path: Path
) -> None:
    adapter.port = 4444
    apis = [o for o in adapter.objects() if o["kind"] == "APIService"]
    assert {a["metadata"]["name"] for a in apis} == {
        "v1beta2.custom.metrics.k8s.io",
        "v1beta1.external.metrics.k8s.io",
    }
    namespace, name = ADAPTER_SERVICE
    issue_serving_cert(
        pki,
        cert_path=tmp_path / "c.pem",
        key_path=tmp_path / "k.pem",
        common_name=name,
        hosts=[f"{name}.{namespace}.svc", "127.0.0.1"],
    )
    serving = x509.load_pem_x509_certificate((tmp_path / "c.pem").read_bytes())
    for api in apis:
        assert api["spec"]["service"] == {"namespace": namespace, "name": name, "port": 4444}
        bundle = x509.load_pem_x509_certificate(base64.b64decode(api["spec"]["caBundle"]))
        serving.verify_directly_issued_by(bundle)
    alt = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{name}.{namespace}.svc" in alt.get_values_for_type(x509.DNSName)
    assert serving.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name

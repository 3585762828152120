"""Tenant workloads send traces: the OTEL_* environment of the CleoAI pods, the tenant's and
the backup runner's egress to the collector, judged by what traffic they let through
(`netpol`), and collector peers that could match a tenant's pods refused."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

import pytest

from cleo_operator.api.backup import parse_backup_spec
from cleo_operator.api.objects import KubeObject
from cleo_operator.api.tenant import CleoTenantSpec
from cleo_operator.render.backup import (
    BackupPodSettings,
    backup_pod_labels,
    render_network_policy,
)
from cleo_operator.render.meta import tenant_owner
from cleo_operator.render.network import (
    ALLOW_COLLECTOR,
    CollectorPeer,
    collector_problem,
    render_network_policies,
)
from cleo_operator.render.workload import (
    RESOURCE_ATTRIBUTES_ENV,
    WorkloadTracing,
    render_deployment,
    resource_attributes,
)
from tests.unit.render.netpol import Pod, can_connect, can_reach_ip
from tests.unit.render.specs import CHECKSUM, FULL, TENANT, UID, render, spec_of

pytestmark = [pytest.mark.security]

NS = "acme-prod"
OWNER = tenant_owner(name=TENANT, uid=UID)
ENDPOINT = "http://otel-collector.observability.svc:4318"
COLLECTOR_LABELS = {"app.kubernetes.io/name": "otel-collector"}
BY_NAMESPACE = CollectorPeer(
    namespace_labels={"kubernetes.io/metadata.name": "observability"},
    pod_labels=COLLECTOR_LABELS,
)
BY_ADDRESS = CollectorPeer(cidr="192.0.2.10/32", ports=(4317, 4318))
TRACING = WorkloadTracing(endpoint=ENDPOINT, collector=BY_NAMESPACE)

CLEOAI = Pod(NS, {"app.kubernetes.io/name": "cleoai", "cleoai.io/tenant": TENANT})
TENANT_NAMESPACE_LABELS = {"cleoai.io/tenant": TENANT}
COLLECTOR = Pod("observability", COLLECTOR_LABELS)


def env_of(spec: CleoTenantSpec, tracing: WorkloadTracing | None = TRACING) -> dict[str, str]:
    rendered = render_deployment(
        tenant=TENANT,
        namespace=NS,
        owner=OWNER,
        spec=spec,
        config_checksum=CHECKSUM,
        tracing=tracing,
    )
    assert rendered is not None
    entries = rendered["spec"]["template"]["spec"]["containers"][0].get("env", [])
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), f"one entry per name (server-side apply): {names}"
    return {e["name"]: e.get("value", "") for e in entries}


def attributes(text: str) -> dict[str, str]:
    pairs = (pair.split("=", 1) for pair in text.split(","))
    return {unquote(k): unquote(v) for k, v in pairs}


def policies(spec: CleoTenantSpec, collector: CollectorPeer | None) -> list[KubeObject]:
    return render_network_policies(
        tenant=TENANT, namespace=NS, owner=OWNER, spec=spec, collector=collector
    )


# --- the pods' environment ------------------------------------------------------------------


def test_with_tracing_off_the_pods_get_no_otel_variables_and_no_collector_policy() -> None:
    spec = spec_of()
    assert not [name for name in env_of(spec, tracing=None) if name.startswith("OTEL_")]
    assert ALLOW_COLLECTOR not in [p["metadata"]["name"] for p in render(spec)]


def test_with_tracing_on_the_pods_name_the_endpoint_the_service_and_their_tenant() -> None:
    env = env_of(spec_of())
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == ENDPOINT
    assert env["OTEL_SERVICE_NAME"] == "cleoai"
    assert attributes(env[RESOURCE_ATTRIBUTES_ENV]) == {
        "cleoai.tenant": TENANT,
        "k8s.namespace.name": NS,
    }
    named = WorkloadTracing(endpoint=ENDPOINT, collector=BY_NAMESPACE, service_name="cleo-ai")
    assert env_of(spec_of(), tracing=named)["OTEL_SERVICE_NAME"] == "cleo-ai"


def test_a_tenants_own_env_cannot_spoof_or_override_the_tenant_attribute() -> None:
    workload: dict[str, Any] = {
        **FULL["workload"],
        "env": [
            {"name": "OTEL_RESOURCE_ATTRIBUTES", "value": "cleoai.tenant=other,team=x"},
            {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://elsewhere:4318"},
            {"name": "OTEL_SERVICE_NAME", "value": "other"},
            {"name": "GREETING", "value": "$(OTEL_SERVICE_NAME) says hello"},
        ],
        # A ConfigMap entry of the same name comes through envFrom, which env overrides.
        "config": {"OTEL_RESOURCE_ATTRIBUTES": "cleoai.tenant=other"},
    }
    env = env_of(spec_of(workload=workload))
    assert attributes(env[RESOURCE_ATTRIBUTES_ENV])["cleoai.tenant"] == TENANT
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == ENDPOINT
    assert env["OTEL_SERVICE_NAME"] == "cleoai"
    # The spec's other entries stay, after the operator's (a reference to them resolves).
    names = list(env)
    assert env["GREETING"] == "$(OTEL_SERVICE_NAME) says hello"
    assert names.index("OTEL_SERVICE_NAME") < names.index("GREETING")
    # With tracing off, the spec's own values are the pods' (nothing of the operator's).
    off = env_of(spec_of(workload=workload), tracing=None)
    assert off["OTEL_RESOURCE_ATTRIBUTES"] == "cleoai.tenant=other,team=x"


def test_resource_attribute_values_are_percent_encoded() -> None:
    text = resource_attributes({"cleoai.tenant": "a,b=c%d e$(X)", "k8s.namespace.name": "ns"})
    assert text == "cleoai.tenant=a%2Cb%3Dc%25d%20e%24%28X%29,k8s.namespace.name=ns"
    assert attributes(text) == {"cleoai.tenant": "a,b=c%d e$(X)", "k8s.namespace.name": "ns"}


def test_the_render_is_the_same_bytes_twice() -> None:
    first = render(spec_of(), workload_tracing=TRACING)
    assert json.dumps(first) == json.dumps(render(spec_of(), workload_tracing=TRACING))


# --- egress to the collector ------------------------------------------------------------------


def test_the_workload_reaches_the_collector_on_its_port_and_nothing_more() -> None:
    spec = spec_of()
    before = policies(spec, None)
    after = policies(spec, BY_NAMESPACE)
    added = [p for p in after if p["metadata"]["name"] == ALLOW_COLLECTOR]
    assert [p for p in after if p["metadata"]["name"] != ALLOW_COLLECTOR] == before
    (policy,) = added
    assert policy["spec"]["policyTypes"] == ["Egress"]
    assert policy["spec"]["podSelector"] == {"matchLabels": {**CLEOAI.pod_labels}}
    assert can_connect(after, CLEOAI, COLLECTOR, port=4318)
    assert not can_connect(before, CLEOAI, COLLECTOR, port=4318)
    assert not can_connect(after, CLEOAI, COLLECTOR, port=4317)  # gRPC only when named
    assert not can_connect(after, CLEOAI, Pod("observability", {"app": "other"}), port=4318)
    assert not can_connect(after, CLEOAI, Pod("kube-system", COLLECTOR_LABELS), port=4318)
    assert not can_reach_ip(after, CLEOAI, "192.0.2.10", port=4318)


def test_a_tenant_admin_cannot_become_the_collector_by_labelling_a_pod() -> None:
    """A pod labelled like the collector, in the tenant's own namespace or another tenant's
    (whatever labels that namespace carries), is never the collector rule's peer."""
    peer = CollectorPeer(namespace_labels={"team": "observability"}, pod_labels=COLLECTOR_LABELS)
    rule_only = [
        p
        for p in policies(spec_of(), peer)
        if p["metadata"]["name"] in {"cleo-default-deny", ALLOW_COLLECTOR}
    ]
    real = Pod("observability", COLLECTOR_LABELS, {"team": "observability"})
    assert can_connect(rule_only, CLEOAI, real, port=4318)
    own = Pod(NS, COLLECTOR_LABELS, {**TENANT_NAMESPACE_LABELS, "team": "observability"})
    other = Pod(
        "cleo-globex", COLLECTOR_LABELS, {"cleoai.io/tenant": "globex", "team": "observability"}
    )
    for fake in (own, other):
        assert not can_connect(rule_only, CLEOAI, fake, port=4318), fake


def test_a_collector_by_address_is_one_narrow_range_on_its_ports() -> None:
    after = policies(spec_of(), BY_ADDRESS)
    for port in (4317, 4318):
        assert can_reach_ip(after, CLEOAI, "192.0.2.10", port=port)
    assert not can_reach_ip(after, CLEOAI, "192.0.2.11", port=4318)
    assert not can_reach_ip(after, CLEOAI, "192.0.2.10", port=443)


def test_without_a_workload_there_is_no_collector_policy() -> None:
    names = [p["metadata"]["name"] for p in policies(spec_of(workload=None), BY_NAMESPACE)]
    assert ALLOW_COLLECTOR not in names


@pytest.mark.parametrize(
    ("peer", "says"),
    [
        ({"pod_labels": COLLECTOR_LABELS}, "namespaceSelector"),
        ({}, "namespaceSelector"),
        ({"namespace_labels": {"cleoai.io/tenant": "acme"}}, "tenant namespaces"),
        ({"namespace_labels": {"cleoai.io/tenant-uid": UID}}, "tenant namespaces"),
        ({"cidr": "0.0.0.0/0"}, "wider than /24"),
        ({"cidr": "10.0.0.0/8"}, "wider than /24"),
        ({"cidr": "fd00::/48"}, "wider than /64"),
        ({"cidr": "169.254.169.254/32"}, "metadata"),
        ({"cidr": "not-a-range"}, "not an address range"),
        ({"cidr": "192.0.2.10/32", "namespace_labels": {"a": "b"}}, "not both"),
        ({"namespace_labels": {"a": "b"}, "ports": ()}, "port"),
        ({"namespace_labels": {"a": "b"}, "ports": (0,)}, "port"),
        ({"namespace_labels": {"a": "b"}, "ports": (70000,)}, "port"),
        ({"namespace_labels": {"bad key!": "b"}}, "label key"),
        ({"namespace_labels": {"a": "bad value!"}}, "label value"),
    ],
)
def test_a_collector_peer_that_could_match_tenant_pods_or_is_no_peer_is_refused(
    peer: dict[str, Any], says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        CollectorPeer(**peer)
    assert collector_problem(BY_NAMESPACE) is None
    assert collector_problem(BY_ADDRESS) is None


# --- the backup runner -------------------------------------------------------------------------


def test_the_backup_runner_reaches_the_collector_only_while_its_traces_are_on() -> None:
    spec = parse_backup_spec(
        {"tenant": TENANT, "destination": {"type": "pvc", "pvc": {"claimName": "backups"}}}
    )
    ids = {"name": "nightly", "namespace": NS, "uid": UID, "tenant": TENANT}
    runner = Pod(NS, backup_pod_labels(name="nightly", tenant=TENANT), TENANT_NAMESPACE_LABELS)
    plain = BackupPodSettings(
        image="registry.example/cleo-operator:1", api_server_cidrs=("10.0.0.1/32",)
    )
    traced = BackupPodSettings(
        image=plain.image, api_server_cidrs=plain.api_server_cidrs, collector=BY_NAMESPACE
    )
    off = render_network_policy(**ids, spec=spec, settings=plain)
    on = render_network_policy(**ids, spec=spec, settings=traced)
    assert on["spec"]["podSelector"] == off["spec"]["podSelector"]
    assert on["spec"]["egress"][:-1] == off["spec"]["egress"]  # one rule more, the collector's
    deny: KubeObject = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny", "namespace": NS},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }
    assert can_connect([deny, on], runner, COLLECTOR, port=4318)
    assert not can_connect([deny, off], runner, COLLECTOR, port=4318)
    look_alike = Pod(NS, COLLECTOR_LABELS, TENANT_NAMESPACE_LABELS)
    assert not can_connect([deny, on], runner, look_alike, port=4318)

"""NetworkPolicies, judged by what traffic they let through (see `netpol`)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings

from cleo_operator.api.objects import KubeObject
from cleo_operator.api.tenant import CleoTenantSpec
from cleo_operator.render.meta import tenant_owner
from cleo_operator.render.network import render_network_policies
from tests.unit.render.netpol import Pod, can_connect, can_reach_ip
from tests.unit.render.specs import FULL, TENANT, UID, WORKLOAD, labels, spec_of, tenant_specs

NS = "acme-prod"
CLEOAI = Pod(NS, {"app.kubernetes.io/name": "cleoai", "cleoai.io/tenant": TENANT})
OTHER_POD = Pod(NS, {"app": "worker"})
INGRESS_NGINX = Pod("ingress-nginx", {"app": "controller"})
KUBE_DNS = Pod("kube-system", {"k8s-app": "kube-dns"})
DATABASE_IP = "10.20.7.7"


def policies_of(spec: CleoTenantSpec) -> list[KubeObject]:
    return render_network_policies(
        tenant=TENANT, namespace=NS, owner=tenant_owner(name=TENANT, uid=UID), spec=spec
    )


def names(policies: list[KubeObject]) -> list[str]:
    return [p["metadata"]["name"] for p in policies]


def test_a_full_spec_gets_deny_then_each_allow() -> None:
    assert names(policies_of(spec_of())) == [
        "cleo-default-deny",
        "cleo-allow-same-namespace",
        "cleo-allow-dns",
        "cleo-allow-ingress",
        "cleo-allow-database",
    ]


def test_default_deny_selects_every_pod_in_both_directions_and_allows_nothing() -> None:
    deny = policies_of(spec_of())[0]
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    only_deny = [deny]
    assert not can_connect(only_deny, INGRESS_NGINX, CLEOAI, port=8080)
    assert not can_connect(only_deny, CLEOAI, OTHER_POD, port=8080)
    assert not can_reach_ip(only_deny, CLEOAI, "1.1.1.1", port=443)


def test_a_tenant_without_extras_is_closed_to_the_outside_but_open_inside() -> None:
    policies = policies_of(spec_of({}))
    assert names(policies) == ["cleo-default-deny", "cleo-allow-same-namespace", "cleo-allow-dns"]
    assert can_connect(policies, OTHER_POD, CLEOAI, port=8080)
    assert can_connect(policies, CLEOAI, OTHER_POD, port=9999, protocol="UDP")
    assert not can_connect(policies, INGRESS_NGINX, CLEOAI, port=8080)
    assert not can_connect(policies, CLEOAI, INGRESS_NGINX, port=80)
    assert not can_reach_ip(policies, CLEOAI, DATABASE_IP, port=5432)


def test_dns_is_allowed_to_kube_dns_only() -> None:
    policies = policies_of(spec_of({}))
    for protocol in ("UDP", "TCP"):
        assert can_connect(policies, OTHER_POD, KUBE_DNS, port=53, protocol=protocol)
    assert not can_connect(policies, OTHER_POD, KUBE_DNS, port=80)
    assert not can_connect(policies, OTHER_POD, Pod("kube-system", {"k8s-app": "x"}), port=53)
    # A namespace that merely carries the same labels is not kube-system.
    fake = Pod("evil", {"k8s-app": "kube-dns"}, {"name": "kube-system"})
    assert not can_connect(policies, OTHER_POD, fake, port=53, protocol="UDP")


def test_ingress_peers_reach_the_workload_port_and_nothing_else() -> None:
    policies = policies_of(spec_of())
    assert can_connect(policies, INGRESS_NGINX, CLEOAI, port=8080)
    assert not can_connect(policies, INGRESS_NGINX, CLEOAI, port=9090)
    assert not can_connect(policies, INGRESS_NGINX, OTHER_POD, port=8080)
    assert not can_connect(policies, Pod("somewhere", {"app": "controller"}), CLEOAI, port=8080)
    allow = policies[3]["spec"]
    assert allow["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/name": "cleoai", "cleoai.io/tenant": TENANT}
    }


def test_no_ingress_policy_without_a_workload_or_without_peers() -> None:
    assert "cleo-allow-ingress" not in names(policies_of(spec_of(workload=None)))
    no_peers: dict[str, Any] = {"ingressFrom": [], "databaseEgress": []}
    assert "cleo-allow-ingress" not in names(policies_of(spec_of(network=no_peers)))


def test_an_every_namespace_peer_still_excludes_other_tenants() -> None:
    spec = spec_of({"workload": WORKLOAD, "network": {"ingressFrom": [{"namespaceSelector": {}}]}})
    policies = policies_of(spec)
    assert can_connect(policies, INGRESS_NGINX, CLEOAI, port=8080)
    other_tenant = Pod(
        "cleo-globex", {"app.kubernetes.io/name": "cleoai"}, {"cleoai.io/tenant": "globex"}
    )
    assert not can_connect(policies, other_tenant, CLEOAI, port=8080)


@settings(max_examples=150, deadline=None)
@given(spec=tenant_specs(), other_namespace_labels=labels, other_pod_labels=labels)
def test_no_spec_admits_traffic_from_another_tenants_namespace(
    spec: CleoTenantSpec, other_namespace_labels: dict[str, str], other_pod_labels: dict[str, str]
) -> None:
    # The intruders: one made to match each listed peer as closely as a namespace of
    # another tenant can (it always carries cleoai.io/tenant), and one random.
    candidates = [(other_namespace_labels, other_pod_labels)]
    for peer in spec.network.ingress_from:
        candidates.append((peer.namespace_selector or {}, peer.pod_selector or {}))
    policies = policies_of(spec)
    ports = {53, 5432, 8080, spec.workload.port if spec.workload else 80}
    for namespace_labels, pod_labels in candidates:
        tenant_label = {"cleoai.io/tenant": namespace_labels.get("cleoai.io/tenant", "globex")}
        intruder = Pod("cleo-globex", pod_labels, {**namespace_labels, **tenant_label})
        for target in (CLEOAI, OTHER_POD):
            for port in ports:
                for protocol in ("TCP", "UDP"):
                    assert not can_connect(policies, intruder, target, port=port, protocol=protocol)


@settings(max_examples=100, deadline=None)
@given(spec=tenant_specs(), namespace_labels=labels, pod_labels=labels)
def test_an_outside_pod_gets_in_only_as_a_listed_peer_on_the_workload_port(
    spec: CleoTenantSpec, namespace_labels: dict[str, str], pod_labels: dict[str, str]
) -> None:
    namespace_labels.pop("cleoai.io/tenant", None)
    outsider = Pod("platform", pod_labels, namespace_labels)
    policies = policies_of(spec)
    port = spec.workload.port if spec.workload else 8080
    listed = spec.workload is not None and any(
        _peer_admits(peer.namespace_selector, peer.pod_selector, outsider)
        for peer in spec.network.ingress_from
    )
    assert can_connect(policies, outsider, CLEOAI, port=port) == listed
    assert not can_connect(policies, outsider, OTHER_POD, port=port)
    assert not can_connect(policies, outsider, CLEOAI, port=port % 65535 + 1)


def _peer_admits(
    namespace_selector: dict[str, str] | None, pod_selector: dict[str, str] | None, pod: Pod
) -> bool:
    # The spec's documented meaning, computed from the spec, not from the policy.
    if namespace_selector is None:
        return False  # pods of the tenant's own namespace only
    ns_labels = pod.ns_labels()
    if any(ns_labels.get(k) != v for k, v in namespace_selector.items()):
        return False
    return all(pod.pod_labels.get(k) == v for k, v in (pod_selector or {}).items())


def test_database_egress_allows_the_ranges_on_their_ports_only() -> None:
    policies = policies_of(spec_of())
    for pod in (CLEOAI, OTHER_POD):  # backup Jobs in the namespace need it too
        assert can_reach_ip(policies, pod, DATABASE_IP, port=5432)
        assert can_reach_ip(policies, pod, DATABASE_IP, port=6432)
        assert not can_reach_ip(policies, pod, DATABASE_IP, port=22)
        assert not can_reach_ip(policies, pod, "10.21.0.1", port=5432)
    assert "cleo-allow-database" not in names(
        policies_of(spec_of(network={"ingressFrom": FULL["network"]["ingressFrom"]}))
    )


def test_database_ranges_are_canonical_merged_and_sorted() -> None:
    network: dict[str, Any] = {
        "databaseEgress": [
            {"cidr": "fd00::1/64", "ports": [5432]},
            {"cidr": "10.20.3.4/16", "ports": [6432, 5432]},
            {"cidr": "9.0.0.0/8", "ports": [5432]},
            {"cidr": "10.20.0.0/16", "ports": [15432]},
        ]
    }
    database = policies_of(spec_of(network=network))[-1]
    egress = database["spec"]["egress"]
    assert [rule["to"] for rule in egress] == [
        [{"ipBlock": {"cidr": "9.0.0.0/8"}}],
        [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
        [{"ipBlock": {"cidr": "fd00::/64"}}],
    ]
    assert [p["port"] for p in egress[1]["ports"]] == [5432, 6432, 15432]
    assert {p["protocol"] for rule in egress for p in rule["ports"]} == {"TCP"}


def test_reordered_peers_render_the_same_policies() -> None:
    peers = FULL["network"]["ingressFrom"]
    one = policies_of(spec_of(network={"ingressFrom": peers}))
    other = policies_of(spec_of(network={"ingressFrom": [*reversed(peers), peers[0]]}))
    assert one == other


def test_empty_selectors_are_sent_as_empty_objects() -> None:
    # The API server drops an empty matchLabels; sending one would look like drift forever.
    spec = spec_of({"workload": WORKLOAD, "network": {"ingressFrom": [{"podSelector": {}}]}})
    allow = policies_of(spec)[-1]
    assert allow["spec"]["ingress"][0]["from"] == [{"podSelector": {}}]

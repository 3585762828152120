"""The tenant's NetworkPolicies: deny everything, then allow exactly what CleoAI needs.

NetworkPolicies only ever add allowed traffic, so isolation comes from one policy that
selects every pod for both directions and allows nothing (`cleo-default-deny`); each other
policy opens one path:

- `cleo-allow-same-namespace`: the tenant's pods talk to each other freely, but for the
  migration Job's pods, which have a policy of their own (`render.migrations`);
- `cleo-allow-dns`: every pod may resolve names (UDP and TCP 53 to kube-system's kube-dns
  pods, which is where the cluster DNS runs under that label in kubeadm, kind and most
  distributions);
- `cleo-allow-ingress`: the spec's ``network.ingressFrom`` peers may reach the CleoAI pods
  on the workload's port (only when there is a workload and at least one peer);
- `cleo-allow-database`: every pod of the namespace may reach the spec's
  ``network.databaseEgress`` ranges on their TCP ports. Every pod, not just CleoAI's,
  because the tenant's backup and restore Jobs run in the namespace and dump the same
  database; they hold no more than the CleoAI pods could (the database Secret is the
  tenant's own). With the pooler (``spec.database.pooler``) serving the workload, the
  workload's pods (labelled ``cleoai.io/database-route: pooler``) are left out: they reach
  the database through the pooler only (same namespace), and the pooler's pods take their
  place on this path.

No policy admits traffic from another tenant's namespace, even when a peer's
``namespaceSelector`` would match one (``{}`` matches every namespace): every
``namespaceSelector`` rendered here also requires that the namespace carries no
``cleoai.io/tenant`` label, which every tenant namespace has. The tenant's own namespace is
excluded by that too, but `cleo-allow-same-namespace` already admits it.

Lists whose order means nothing to Kubernetes (peers, ranges, ports) are sorted and
deduplicated, so reordering the spec renders the same bytes and writes nothing.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping

from cleo_operator.api.objects import KubeObject, OwnerReference
from cleo_operator.api.tenant import CleoTenantSpec, IngressPeer
from cleo_operator.render.child import child_metadata, sorted_map, workload_selector
from cleo_operator.render.k8s import (
    LabelSelector,
    NetworkPolicy,
    NetworkPolicyEgressRule,
    NetworkPolicyIngressRule,
    NetworkPolicyPeer,
    NetworkPolicyPort,
    NetworkPolicySpec,
    as_object,
)
from cleo_operator.render.meta import TENANT_LABEL
from cleo_operator.render.pooler import DATABASE_ROUTE_LABEL, POOLER_ROUTE

DEFAULT_DENY = "cleo-default-deny"
ALLOW_SAME_NAMESPACE = "cleo-allow-same-namespace"
ALLOW_DNS = "cleo-allow-dns"
ALLOW_INGRESS = "cleo-allow-ingress"
ALLOW_DATABASE = "cleo-allow-database"

MIGRATION_POD_LABEL = "cleoai.io/migration"
"""Worn by the migration Job's pods (`render.migrations.MIGRATION_LABEL`)."""
DNS_PORT = 53
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
"""Set by the API server on every namespace to its own name (cannot be forged by users)."""
DNS_NAMESPACE = "kube-system"
DNS_POD_LABELS: Mapping[str, str] = {"k8s-app": "kube-dns"}


def _selector(labels: Mapping[str, str]) -> LabelSelector:
    # An empty matchLabels is dropped by the API server, so "everything" is sent as {}.
    return {"matchLabels": sorted_map(labels)} if labels else {}


def _foreign_namespaces(labels: Mapping[str, str]) -> LabelSelector:
    """A namespaceSelector for `labels` that can never match a tenant's namespace."""
    selector = _selector(labels)
    selector["matchExpressions"] = [{"key": TENANT_LABEL, "operator": "DoesNotExist"}]
    return selector


def _ingress_peer(peer: IngressPeer) -> NetworkPolicyPeer:
    rendered: NetworkPolicyPeer = {}
    if peer.namespace_selector is not None:
        rendered["namespaceSelector"] = _foreign_namespaces(peer.namespace_selector)
    if peer.pod_selector is not None:
        rendered["podSelector"] = _selector(peer.pod_selector)
    return rendered


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _policy(
    *, name: str, tenant: str, namespace: str, owner: OwnerReference, spec: NetworkPolicySpec
) -> KubeObject:
    obj: NetworkPolicy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": child_metadata(
            name=name, namespace=namespace, tenant=tenant, owner=owner, component="network"
        ),
        "spec": spec,
    }
    return as_object(obj)


def _ingress_spec(spec: CleoTenantSpec, tenant: str) -> NetworkPolicySpec | None:
    if spec.workload is None or not spec.network.ingress_from:
        return None
    peers = {_canonical(p): p for p in map(_ingress_peer, spec.network.ingress_from)}
    rule: NetworkPolicyIngressRule = {
        "from": [peers[key] for key in sorted(peers)],
        "ports": [{"protocol": "TCP", "port": spec.workload.port}],
    }
    return {
        "podSelector": _selector(workload_selector(tenant)),
        "policyTypes": ["Ingress"],
        "ingress": [rule],
    }


def _range_order(cidr: str) -> tuple[int, int, int]:
    """IPv4 before IPv6, then by address and prefix: numeric, not text, order."""
    network = ipaddress.ip_network(cidr)
    return (network.version, int(network.network_address), network.prefixlen)


def database_egress_rules(spec: CleoTenantSpec) -> list[NetworkPolicyEgressRule]:
    """One egress rule per range of ``network.databaseEgress``, ports merged, in order."""
    ports_by_range: dict[str, set[int]] = {}
    for rule in spec.network.database_egress:
        # Canonical form ("10.0.0.7/16" is "10.0.0.0/16"): the same range written two ways
        # becomes one rule, and the API server gets no host bits it would warn about.
        cidr = str(ipaddress.ip_network(rule.cidr, strict=False))
        ports_by_range.setdefault(cidr, set()).update(rule.ports)
    egress: list[NetworkPolicyEgressRule] = []
    for cidr in sorted(ports_by_range, key=_range_order):
        ports: list[NetworkPolicyPort] = [
            {"protocol": "TCP", "port": port} for port in sorted(ports_by_range[cidr])
        ]
        egress.append({"to": [{"ipBlock": {"cidr": cidr}}], "ports": ports})
    return egress


def _database_spec(spec: CleoTenantSpec, *, pooled: bool) -> NetworkPolicySpec | None:
    egress = database_egress_rules(spec)
    if not egress:
        return None
    selector: LabelSelector = {}
    if pooled:
        # The workload's pods that go through the pooler lose the direct route; pods of
        # the old ReplicaSet (without the label) keep it until they are gone.
        selector = {
            "matchExpressions": [
                {"key": DATABASE_ROUTE_LABEL, "operator": "NotIn", "values": [POOLER_ROUTE]}
            ]
        }
    return {"podSelector": selector, "policyTypes": ["Egress"], "egress": egress}


def render_network_policies(
    *,
    tenant: str,
    namespace: str,
    owner: OwnerReference,
    spec: CleoTenantSpec,
    pooled: bool = False,
) -> list[KubeObject]:
    """The tenant's NetworkPolicies: default deny, then the allows (see the module docstring).

    `pooled`: the workload goes through the tenant's pooler, so its pods no longer reach
    the database directly (the pooler's pods, and Jobs, still do).
    """
    specs: list[tuple[str, NetworkPolicySpec]] = [
        (DEFAULT_DENY, {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        (
            ALLOW_SAME_NAMESPACE,
            {
                # Not the migration pods: they reach DNS and the database only
                # (`render.migrations`).
                "podSelector": {
                    "matchExpressions": [{"key": MIGRATION_POD_LABEL, "operator": "DoesNotExist"}]
                },
                "policyTypes": ["Ingress", "Egress"],
                # A peer with only a podSelector means pods of this same namespace.
                "ingress": [{"from": [{"podSelector": {}}]}],
                "egress": [{"to": [{"podSelector": {}}]}],
            },
        ),
        (
            ALLOW_DNS,
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {
                                "namespaceSelector": _selector(
                                    {NAMESPACE_NAME_LABEL: DNS_NAMESPACE}
                                ),
                                "podSelector": _selector(DNS_POD_LABELS),
                            }
                        ],
                        "ports": [
                            {"protocol": "UDP", "port": DNS_PORT},
                            {"protocol": "TCP", "port": DNS_PORT},
                        ],
                    }
                ],
            },
        ),
    ]
    ingress = _ingress_spec(spec, tenant)
    if ingress is not None:
        specs.append((ALLOW_INGRESS, ingress))
    database = _database_spec(spec, pooled=pooled)
    if database is not None:
        specs.append((ALLOW_DATABASE, database))
    return [
        _policy(name=name, tenant=tenant, namespace=namespace, owner=owner, spec=policy_spec)
        for name, policy_spec in specs
    ]

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
- `cleo-allow-collector`: only while the operator's workload tracing is on
  (`render.workload.WorkloadTracing`), the CleoAI pods may reach the trace collector
  (`CollectorPeer`, an operator setting) on its OTLP ports, and nothing else.

The collector is a peer the platform names, never one a tenant can become. As a
namespace selector (with a pod selector) it is rendered like every other
``namespaceSelector`` here, so it never matches a tenant's namespace, where tenant admins
label pods as they like; a pod selector alone (which would mean pods of the tenant's own
namespace), an empty namespace selector (every namespace) and one that names the tenant
labels are refused when the setting is read (`collector_problem`). As an ``ipBlock`` it is
a narrow range (the collector's addresses, /24 or /64 at the widest), never one holding
an instance metadata service.

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
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from cleo_operator.api.cidr import metadata_overlap
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
from cleo_operator.render.meta import GROUP, TENANT_LABEL
from cleo_operator.render.pooler import DATABASE_ROUTE_LABEL, POOLER_ROUTE

DEFAULT_DENY = "cleo-default-deny"
ALLOW_SAME_NAMESPACE = "cleo-allow-same-namespace"
ALLOW_DNS = "cleo-allow-dns"
ALLOW_INGRESS = "cleo-allow-ingress"
ALLOW_DATABASE = "cleo-allow-database"
ALLOW_COLLECTOR = "cleo-allow-collector"

MIGRATION_POD_LABEL = "cleoai.io/migration"
"""Worn by the migration Job's pods (`render.migrations.MIGRATION_LABEL`)."""
DNS_PORT = 53
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
"""Set by the API server on every namespace to its own name (cannot be forged by users)."""
DNS_NAMESPACE = "kube-system"
DNS_POD_LABELS: Mapping[str, str] = {"k8s-app": "kube-dns"}


OTLP_HTTP_PORT: Final = 4318
"""OTLP over HTTP, the collector's port unless the setting names others."""
COLLECTOR_MIN_PREFIX: Final = {4: 24, 6: 64}
"""The widest ``ipBlock`` a collector may be: its addresses, not a network (a range over
the pod network would also match the pods there, tenants' included)."""

_LABEL_NAME: Final = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_PREFIX: Final = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_LABEL_VALUE: Final = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def _label_problem(key: str, value: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if (slash and not _LABEL_PREFIX.match(prefix)) or not _LABEL_NAME.match(name):
        return f"{key!r} is not a label key"
    if not _LABEL_VALUE.match(value):
        return f"{value!r} (of {key!r}) is not a label value"
    return None


@dataclass(frozen=True, kw_only=True)
class CollectorPeer:
    """The trace collector as a NetworkPolicy peer: the labels of its namespace (and of its
    pods), or an ``ipBlock``; and its TCP ports. An operator setting
    (`reconcile.tracing_settings`); refused when constructed if it could match a tenant's
    pods (`collector_problem`)."""

    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    """``matchLabels`` of the collector's namespace (``kubernetes.io/metadata.name`` names
    one namespace and cannot be forged)."""
    pod_labels: Mapping[str, str] = field(default_factory=dict)
    """``matchLabels`` of the collector's pods in it; empty: every pod of the namespace."""
    cidr: str | None = None
    """Instead of the selectors: the collector's addresses (outside the pod network)."""
    ports: tuple[int, ...] = (OTLP_HTTP_PORT,)
    """TCP ports: OTLP/HTTP (4318), and OTLP/gRPC (4317) when named."""

    def __post_init__(self) -> None:
        problem = collector_problem(self)
        if problem is not None:
            raise ValueError(problem)


def collector_problem(peer: CollectorPeer) -> str | None:
    """Why `peer` cannot be the collector's peer (it could match pods a tenant labels, or
    is not a peer at all); None when it can."""
    if peer.cidr is not None and (peer.namespace_labels or peer.pod_labels):
        return "name the collector by namespaceSelector (and podSelector) or by ipBlock, not both"
    if peer.cidr is not None:
        try:
            network = ipaddress.ip_network(peer.cidr, strict=False)
        except ValueError:
            return f"ipBlock: {peer.cidr!r} is not an address range such as 10.0.0.5/32"
        widest = COLLECTOR_MIN_PREFIX[network.version]
        if network.prefixlen < widest:
            return (
                f"ipBlock: {peer.cidr!r} is wider than /{widest}: name the collector's "
                "addresses, not a network (a range over the pod network matches tenants' pods)"
            )
        overlap = metadata_overlap(peer.cidr)
        if overlap is not None:
            return f"ipBlock: {peer.cidr!r} overlaps {overlap}, an instance metadata service"
    elif not peer.namespace_labels:
        return (
            "namespaceSelector: name the collector's namespace by its labels (e.g. "
            "kubernetes.io/metadata.name: observability); a podSelector alone means pods of "
            "the tenant's own namespace and an empty namespaceSelector every namespace, both "
            "of which match pods that tenant admins label"
        )
    for key in peer.namespace_labels:
        prefix = key.rpartition("/")[0]
        if prefix == GROUP or prefix.endswith(f".{GROUP}"):
            return (
                f"namespaceSelector: {key!r} is a label of tenant namespaces (the operator's); "
                "the collector's namespace is never a tenant's"
            )
    for labels in (peer.namespace_labels, peer.pod_labels):
        for key, value in labels.items():
            problem = _label_problem(key, value)
            if problem is not None:
                return problem
    if not peer.ports:
        return f"name at least one port (OTLP/HTTP is {OTLP_HTTP_PORT})"
    for port in peer.ports:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            return f"port: {port!r} is not a TCP port (1-65535)"
    return None


def collector_egress_rule(peer: CollectorPeer) -> NetworkPolicyEgressRule:
    """One egress rule: to the collector, on its TCP ports, nothing else."""
    to: NetworkPolicyPeer
    if peer.cidr is not None:
        to = {"ipBlock": {"cidr": str(ipaddress.ip_network(peer.cidr, strict=False))}}
    else:
        to = {
            "namespaceSelector": _foreign_namespaces(peer.namespace_labels),
            "podSelector": _selector(peer.pod_labels),
        }
    ports: list[NetworkPolicyPort] = [
        {"protocol": "TCP", "port": port} for port in sorted(set(peer.ports))
    ]
    return {"to": [to], "ports": ports}


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


def _collector_spec(
    spec: CleoTenantSpec, tenant: str, collector: CollectorPeer | None
) -> NetworkPolicySpec | None:
    if collector is None or spec.workload is None:
        return None
    return {
        "podSelector": _selector(workload_selector(tenant)),
        "policyTypes": ["Egress"],
        "egress": [collector_egress_rule(collector)],
    }


def render_network_policies(
    *,
    tenant: str,
    namespace: str,
    owner: OwnerReference,
    spec: CleoTenantSpec,
    pooled: bool = False,
    collector: CollectorPeer | None = None,
) -> list[KubeObject]:
    """The tenant's NetworkPolicies: default deny, then the allows (see the module docstring).

    `pooled`: the workload goes through the tenant's pooler, so its pods no longer reach
    the database directly (the pooler's pods, and Jobs, still do). `collector`: the
    workload's traces go there (workload tracing is on), so its pods may reach it.
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
    traces = _collector_spec(spec, tenant, collector)
    if traces is not None:
        specs.append((ALLOW_COLLECTOR, traces))
    return [
        _policy(name=name, tenant=tenant, namespace=namespace, owner=owner, spec=policy_spec)
        for name, policy_spec in specs
    ]

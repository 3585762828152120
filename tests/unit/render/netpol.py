"""A small, independent evaluator of NetworkPolicy semantics, to test policies by behaviour.

Written from the NetworkPolicy documentation: a pod is isolated in a direction when any
policy of its namespace selects it with that policy type; an isolated pod accepts only
what some selecting policy's rule allows (peers AND ports); a peer with only a podSelector
means pods of the policy's own namespace. Enough of it to ask "can A talk to B on port P?".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Direction = Literal["Ingress", "Egress"]


@dataclass(frozen=True)
class Pod:
    """A pod somewhere in the cluster, as a policy sees it."""

    namespace: str
    pod_labels: dict[str, str] = field(default_factory=dict)
    namespace_labels: dict[str, str] = field(default_factory=dict)

    def ns_labels(self) -> dict[str, str]:
        # The API server sets this label on every namespace; users cannot change it.
        return {**self.namespace_labels, "kubernetes.io/metadata.name": self.namespace}


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a LabelSelector matches `labels` ({} matches everything)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        present = key in labels
        ok = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]
        if not ok:
            return False
    return True


def _peer_matches_pod(peer: dict[str, Any], policy_namespace: str, other: Pod) -> bool:
    if "ipBlock" in peer:
        return False  # pods are addressed by selectors here, not by IP
    if "namespaceSelector" in peer:
        if not selector_matches(peer["namespaceSelector"], other.ns_labels()):
            return False
    elif other.namespace != policy_namespace:
        return False
    return selector_matches(peer.get("podSelector", {}), other.pod_labels)


def _peer_matches_ip(peer: dict[str, Any], ip: str) -> bool:
    block = peer.get("ipBlock")
    if block is None:
        return False
    address = ipaddress.ip_address(ip)
    network = ipaddress.ip_network(block["cidr"], strict=False)
    if address.version != network.version or address not in network:
        return False
    return not any(
        address in ipaddress.ip_network(e, strict=False) for e in block.get("except", [])
    )


def _port_matches(rule: dict[str, Any], protocol: str, port: int) -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    return any(
        p.get("protocol", "TCP") == protocol and p.get("port") in (None, port) for p in ports
    )


def _allowed(
    policies: list[dict[str, Any]],
    pod: Pod,
    *,
    direction: Direction,
    peer_matches: Callable[[dict[str, Any], dict[str, Any]], bool],
    protocol: str,
    port: int,
) -> bool:
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == pod.namespace
        and direction in p["spec"].get("policyTypes", ["Ingress"])
        and selector_matches(p["spec"]["podSelector"], pod.pod_labels)
    ]
    if not selecting:
        return True
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in selecting:
        for rule in policy["spec"].get(key) or []:
            peers = rule.get(peers_key)
            peer_ok = not peers or any(peer_matches(peer, policy) for peer in peers)
            if peer_ok and _port_matches(rule, protocol, port):
                return True
    return False


def can_connect(
    policies: list[dict[str, Any]], source: Pod, target: Pod, *, port: int, protocol: str = "TCP"
) -> bool:
    """Whether `source` may open a connection to `target` on `port` (egress and ingress)."""
    egress = _allowed(
        policies,
        source,
        direction="Egress",
        peer_matches=lambda peer, policy: _peer_matches_pod(
            peer, policy["metadata"]["namespace"], target
        ),
        protocol=protocol,
        port=port,
    )
    ingress = _allowed(
        policies,
        target,
        direction="Ingress",
        peer_matches=lambda peer, policy: _peer_matches_pod(
            peer, policy["metadata"]["namespace"], source
        ),
        protocol=protocol,
        port=port,
    )
    return egress and ingress


def can_reach_ip(
    policies: list[dict[str, Any]], source: Pod, ip: str, *, port: int, protocol: str = "TCP"
) -> bool:
    """Whether `source` may connect to an address outside the cluster's pods."""
    return _allowed(
        policies,
        source,
        direction="Egress",
        peer_matches=lambda peer, _policy: _peer_matches_ip(peer, ip),
        protocol=protocol,
        port=port,
    )

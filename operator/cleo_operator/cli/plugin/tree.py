"""The status tree of one tenant, built from objects already read: pure, so tests need no cluster.

Why a tree: the first question about a tenant is "what does it have, and what is wrong",
and the answer has a shape: the CleoTenant and its conditions, its namespace, and in that
namespace what the operator made (found by the labels the operator puts on every child:
`app.kubernetes.io/managed-by=cleo-operator` and `cleoai.io/tenant=<name>`), beside the
tenant's CleoBackups and CleoFailovers. `kubectl tree` shows owner references; the
operator's children are found by label, as the operator itself finds them.

Each node says whether it is ready, by the one signal its kind has (a Ready condition,
a Deployment's Available, an HPA's ScalingActive, a Namespace's phase, a failover's phase),
or nothing when the kind has none (a ConfigMap exists or it does not). A node whose readiness
is False is `bad`: the rows people must see first. What the caller may not read is a node
too, saying so (`error`), so a partial answer is never mistaken for a complete one.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from cleo_operator.cli.plugin.output import Table, age
from cleo_operator.kube.kinds import BACKUP, FAILOVER, TENANT_CHILDREN, Kind

__all__ = ["Node", "build_tree", "conditions_of", "readiness", "tree_table"]

READINESS_CONDITION: Final[Mapping[str, str]] = {
    "Deployment": "Available",
    "HorizontalPodAutoscaler": "ScalingActive",
}
"""The condition that says a kind works, for kinds without a Ready condition."""

KIND_ORDER: Final[dict[str, int]] = {
    kind.kind: i for i, kind in enumerate((*TENANT_CHILDREN, BACKUP, FAILOVER))
}


@dataclass
class Node:
    """One row of the tree: an object (or a condition, or what could not be read)."""

    kind: str
    name: str
    namespace: str = ""
    ready: str | None = None
    """True, False or Unknown; None for what has no readiness (a ConfigMap)."""
    reason: str = ""
    message: str = ""
    created: str | None = None
    error: str | None = None
    """Why this could not be read (forbidden), instead of its state."""
    children: list[Node] = field(default_factory=list)

    @property
    def bad(self) -> bool:
        """A row to stand out: not ready, or not readable."""
        return self.ready == "False" or self.error is not None

    def to_data(self) -> dict[str, Any]:
        """The stable, machine-readable form (`-o json|yaml`)."""
        data: dict[str, Any] = {"kind": self.kind, "name": self.name}
        for key, value in (
            ("namespace", self.namespace),
            ("ready", self.ready),
            ("reason", self.reason),
            ("message", self.message),
            ("created", self.created),
            ("error", self.error),
        ):
            if value:
                data[key] = value
        if self.children:
            data["children"] = [child.to_data() for child in self.children]
        return data


def conditions_of(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """An object's status conditions by type."""
    found = ((obj.get("status") or {}).get("conditions")) or []
    return {str(c.get("type")): c for c in found if isinstance(c, Mapping)}


def _from_condition(condition: Mapping[str, Any] | None) -> tuple[str | None, str, str]:
    if condition is None:
        return None, "", ""
    return (
        str(condition.get("status") or "Unknown"),
        str(condition.get("reason") or ""),
        str(condition.get("message") or ""),
    )


def _newest_backup_run(obj: Mapping[str, Any]) -> str:
    status = obj.get("status") or {}
    history = status.get("history") or []
    if history:
        run = history[0]
        outcome = {True: "succeeded", False: "failed"}.get(run.get("succeeded"), "running")
        parts = [f"newest run {run.get('startTime', '?')} {outcome}"]
        if run.get("reason"):
            parts.append(f"({run['reason']})")
        if run.get("job"):
            parts.append(f"job {run['job']}")
        return " ".join(parts)
    last = status.get("lastBackup") or {}
    if last.get("time"):
        return f"newest backup {last['time']}"
    return "no run yet"


def _newest_failover_step(obj: Mapping[str, Any]) -> str:
    status = obj.get("status") or {}
    started = status.get("startTime")
    steps = [s for s in status.get("steps") or [] if s.get("state") != "Pending"]
    text = f"{(obj.get('spec') or {}).get('type', 'Failover')} started {started or '-'}"
    if steps:
        step = steps[-1]
        text += f", step {step.get('name')} {step.get('state')}"
    return text


def readiness(obj: Mapping[str, Any]) -> tuple[str | None, str, str]:
    """(ready, reason, message) of one object, by the signal its kind has."""
    kind = str(obj.get("kind"))
    status = obj.get("status") or {}
    conditions = conditions_of(obj)
    if kind == "Namespace":
        phase = status.get("phase")
        return ("True", "Active", "") if phase == "Active" else ("False", str(phase or ""), "")
    if kind == "CleoFailover":
        phase = status.get("phase") or "Pending"
        done = {"Succeeded": "True", "Failed": "False"}.get(phase, "Unknown")
        return done, phase, _newest_failover_step(obj)
    if kind == "CleoBackup":
        backup_ready, reason, _ = _from_condition(conditions.get("Ready"))
        phase = status.get("phase") or "Pending"
        return backup_ready, reason or phase, f"phase {phase}; {_newest_backup_run(obj)}"
    if kind == "PodDisruptionBudget":
        # DisruptionAllowed=False is normal for a single replica: informative, not bad.
        allowed = conditions.get("DisruptionAllowed")
        return None, (f"DisruptionAllowed={allowed.get('status')}" if allowed else ""), ""
    if "Ready" in conditions:
        return _from_condition(conditions["Ready"])
    if kind in READINESS_CONDITION:
        return _from_condition(conditions.get(READINESS_CONDITION[kind]))
    return None, "", ""


def object_node(obj: Mapping[str, Any]) -> Node:
    meta = obj.get("metadata") or {}
    ready, reason, message = readiness(obj)
    return Node(
        kind=str(obj.get("kind")),
        name=str(meta.get("name")),
        namespace=str(meta.get("namespace") or ""),
        ready=ready,
        reason=reason,
        message=message,
        created=meta.get("creationTimestamp"),
    )


def condition_nodes(obj: Mapping[str, Any]) -> list[Node]:
    """One node per condition of a CleoTenant, Ready first, the others by type."""
    found = conditions_of(obj)
    order = sorted(found, key=lambda t: (t != "Ready", t))
    return [
        Node(
            kind="Condition",
            name=name,
            ready=str(found[name].get("status") or "Unknown"),
            reason=str(found[name].get("reason") or ""),
            message=str(found[name].get("message") or ""),
            created=found[name].get("lastTransitionTime"),
        )
        for name in order
    ]


@dataclass(frozen=True)
class Unreadable:
    """What could not be read, and why (a one-line refusal)."""

    kind: Kind
    why: str
    reason: str = "Forbidden"


def build_tree(
    *,
    tenant_name: str,
    tenant: Mapping[str, Any] | Unreadable,
    namespace_name: str,
    namespace: Mapping[str, Any] | Unreadable | None,
    children: Mapping[Kind, Sequence[Mapping[str, Any]] | Unreadable],
) -> Node:
    """The tree: tenant, its conditions, its namespace, and what is in it for the tenant.

    `children` holds, per kind, the objects read (already filtered to this tenant) or why
    they could not be read. CleoBackups and CleoFailovers come last, in that order.
    """
    if isinstance(tenant, Unreadable):
        root = Node(kind="CleoTenant", name=tenant_name, reason=tenant.reason, error=tenant.why)
    else:
        root = object_node(tenant)
        phase = (tenant.get("status") or {}).get("phase")
        if phase and not root.message:
            root.message = f"phase {phase}"
        root.children.extend(condition_nodes(tenant))
    if isinstance(namespace, Unreadable):
        ns_node = Node(
            kind="Namespace", name=namespace_name, reason=namespace.reason, error=namespace.why
        )
    elif namespace is None:
        ns_node = Node(
            kind="Namespace", name=namespace_name, ready="False", reason="NotFound", message=""
        )
    else:
        ns_node = object_node(namespace)
    root.children.append(ns_node)
    for kind in sorted(children, key=lambda k: KIND_ORDER.get(k.kind, len(KIND_ORDER))):
        found = children[kind]
        if isinstance(found, Unreadable):
            ns_node.children.append(
                Node(
                    kind=kind.kind,
                    name="*",
                    namespace=namespace_name,
                    reason=found.reason,
                    error=found.why,
                )
            )
            continue
        nodes = [object_node(obj) for obj in found]
        ns_node.children.extend(sorted(nodes, key=lambda n: n.name))
    return root


TREE_COLUMNS: Final = ("namespace", "name", "ready", "reason", "age", "message")


def _walk(node: Node, prefix: str, last: bool, top: bool) -> Iterable[tuple[str, Node]]:
    branch = "" if top else ("└─" if last else "├─")
    yield prefix + branch, node
    inner = prefix + ("" if top else ("  " if last else "│ "))
    for i, child in enumerate(node.children):
        yield from _walk(child, inner, i == len(node.children) - 1, top=False)


def tree_table(root: Node, *, now: datetime.datetime, message_width: int = 100) -> Table:
    """The tree as rows, the branches drawn in the name column (as `kubectl tree` does)."""
    table = Table(columns=TREE_COLUMNS)
    for prefix, node in _walk(root, "", last=True, top=True):
        name = node.name if node.kind == "Condition" else f"{node.kind}/{node.name}"
        ready, reason, message = node.ready, node.reason, node.error or node.message
        if len(message) > message_width:
            message = message[: message_width - 3] + "..."
        table.add(
            node.namespace,
            prefix + name,
            ready,
            reason,
            age(node.created, now=now),
            message,
            bad=node.bad,
        )
    return table

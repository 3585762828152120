"""The status tree: which rows, in which order, which stand out, and its stable data form."""

from __future__ import annotations

import datetime
from typing import Any

from cleo_operator.cli.plugin.output import plain_table
from cleo_operator.cli.plugin.tree import Unreadable, build_tree, readiness, tree_table
from cleo_operator.kube.kinds import BACKUP, DEPLOYMENT, FAILOVER, HPA, ROLE, SERVICE

NOW = datetime.datetime(2026, 12, 3, 12, 0, tzinfo=datetime.UTC)


def obj(kind: str, name: str, namespace: str = "cleo-acme", **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "creationTimestamp": "2026-12-03T11:00:00Z",
        },
        "status": status,
    }


def condition(kind: str, status: str, reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


TENANT = {
    "apiVersion": "cleoai.io/v1alpha1",
    "kind": "CleoTenant",
    "metadata": {"name": "acme", "creationTimestamp": "2026-12-01T12:00:00Z"},
    "status": {
        "phase": "Degraded",
        "conditions": [
            condition("WorkloadAvailable", "True", "Available"),
            condition("Ready", "False", "AutoscalingNotReady", "the HPA reads no metrics"),
            condition("Autoscaling", "False", "FailedGetResourceMetric", "no metrics API"),
        ],
    },
}


def sample_tree() -> Any:
    backup = obj(
        "CleoBackup",
        "nightly",
        phase="Succeeded",
        conditions=[condition("Ready", "True", "BackupAvailable")],
        history=[
            {
                "startTime": "2026-12-03T03:00:00Z",
                "succeeded": True,
                "reason": "BackupSucceeded",
                "job": "cleo-backup-nightly-29000",
            }
        ],
    )
    return build_tree(
        tenant_name="acme",
        tenant=TENANT,
        namespace_name="cleo-acme",
        namespace=obj("Namespace", "cleo-acme", namespace="", phase="Active"),
        children={
            FAILOVER: [],
            DEPLOYMENT: [
                obj("Deployment", "cleoai", conditions=[condition("Available", "True", "Min")])
            ],
            HPA: [
                obj(
                    "HorizontalPodAutoscaler",
                    "cleoai",
                    conditions=[condition("ScalingActive", "False", "FailedGetResourceMetric")],
                )
            ],
            SERVICE: [obj("Service", "cleoai")],
            ROLE: Unreadable(ROLE, "you may not list roles.rbac.authorization.k8s.io in x"),
            BACKUP: [backup],
        },
    )


def test_the_tree_is_tenant_conditions_namespace_then_children_in_kind_order() -> None:
    root = sample_tree()
    assert [(c.kind, c.name) for c in root.children] == [
        ("Condition", "Ready"),
        ("Condition", "Autoscaling"),
        ("Condition", "WorkloadAvailable"),
        ("Namespace", "cleo-acme"),
    ]
    namespace = root.children[-1]
    # TENANT_CHILDREN's order (Service, Role, Deployment, HPA), then backups and failovers.
    assert [(c.kind, c.name) for c in namespace.children] == [
        ("Service", "cleoai"),
        ("Role", "*"),
        ("Deployment", "cleoai"),
        ("HorizontalPodAutoscaler", "cleoai"),
        ("CleoBackup", "nightly"),
    ]


def test_false_conditions_and_refused_reads_stand_out_and_nothing_else() -> None:
    root = sample_tree()
    table = tree_table(root, now=NOW)
    bad = {row[1].lstrip("│├└─ "): flag for row, flag in zip(table.rows, table.bad, strict=True)}
    assert bad == {
        "CleoTenant/acme": True,
        "Ready": True,
        "Autoscaling": True,
        "WorkloadAvailable": False,
        "Namespace/cleo-acme": False,
        "Service/cleoai": False,
        "Role/*": True,
        "Deployment/cleoai": False,
        "HorizontalPodAutoscaler/cleoai": True,
        "CleoBackup/nightly": False,
    }


def test_the_plain_tree_draws_branches_like_kubectl_tree() -> None:
    text = plain_table(tree_table(sample_tree(), now=NOW))
    lines = text.splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "READY", "REASON", "AGE", "MESSAGE"]
    assert lines[1].split()[:5] == ["-", "CleoTenant/acme", "False", "AutoscalingNotReady", "2d"]
    assert "├─Ready" in lines[2]
    assert "└─Namespace/cleo-acme" in lines[5]
    assert "  ├─Service/cleoai" in lines[6]
    assert "Forbidden" in lines[7]
    assert "you may not list roles" in lines[7]
    assert "  └─CleoBackup/nightly" in lines[10]
    assert "newest run 2026-12-03T03:00:00Z succeeded (BackupSucceeded)" in lines[10]
    assert "\x1b" not in text  # plain means no escape codes


def test_the_data_form_is_nested_and_omits_empty_fields() -> None:
    data = sample_tree().to_data()
    assert data["kind"] == "CleoTenant"
    assert data["ready"] == "False"
    assert "error" not in data
    namespace = data["children"][-1]
    role = namespace["children"][1]
    assert role == {
        "kind": "Role",
        "name": "*",
        "namespace": "cleo-acme",
        "reason": "Forbidden",
        "error": "you may not list roles.rbac.authorization.k8s.io in x",
    }
    service = namespace["children"][0]
    assert "ready" not in service  # a Service has no readiness, and says none


def test_an_unreadable_tenant_is_a_row_that_says_so_not_a_missing_one() -> None:
    root = build_tree(
        tenant_name="acme",
        tenant=Unreadable(FAILOVER, "you may not get cleotenants.cleoai.io at cluster scope"),
        namespace_name="cleo-acme",
        namespace=None,
        children={},
    )
    assert root.bad
    assert root.error == "you may not get cleotenants.cleoai.io at cluster scope"
    assert root.children[0].reason == "NotFound"


def test_readiness_by_kind() -> None:
    assert readiness(obj("Namespace", "x", phase="Terminating"))[:2] == ("False", "Terminating")
    failover = obj(
        "CleoFailover",
        "move",
        phase="Running",
        startTime="2026-12-03T11:59:00Z",
        steps=[
            {"name": "fence", "state": "Succeeded"},
            {"name": "promote", "state": "Running"},
            {"name": "verify", "state": "Pending"},
        ],
    )
    failover["spec"] = {"type": "Switchover"}
    ready, reason, message = readiness(failover)
    assert (ready, reason) == ("Unknown", "Running")
    assert message == "Switchover started 2026-12-03T11:59:00Z, step promote Running"
    pdb = obj("PodDisruptionBudget", "p", conditions=[condition("DisruptionAllowed", "False")])
    assert readiness(pdb) == (None, "DisruptionAllowed=False", "")
    assert readiness(obj("ConfigMap", "c")) == (None, "", "")

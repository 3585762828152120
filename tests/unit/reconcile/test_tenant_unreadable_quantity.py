"""A stored tenant with a quantity no number reads (``1e1.5``: the CRD's pattern once took it)
gets a status that says so, and can be deleted: the finalizer does not raise forever.

FakeKube stands in for the API server (it stores what it is given, as etcd holds objects
written under an older CRD); the reconciler is the real one.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from cleo_operator.kube.kinds import NAMESPACE, TENANT
from cleo_operator.reconcile.tenant import TenantReconciler
from cleo_operator.render.meta import FINALIZER
from tests.harness.fake_kube import FakeKube
from tests.harness.specs import tenant_manifest

NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
OPERATOR = "cleo-system"
SPEC = {
    "workload": {
        "image": "registry.example.com/cleoai:2.0.0",
        "resources": {"requests": {"cpu": "1e1.5"}, "limits": {"cpu": "2"}},
    },
}
# A target's quantity is read during validation itself (it must be above zero).
SCALING_SPEC = {
    "workload": {"image": "registry.example.com/cleoai:2.0.0"},
    "autoscaling": {
        "metrics": [
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": "rps"},
                    "target": {"type": "AverageValue", "averageValue": "1e.5"},
                },
            }
        ]
    },
}


def _reconciler(kube: FakeKube) -> TenantReconciler:
    return TenantReconciler(kube, operator_namespace=OPERATOR, now=lambda: NOW)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (SPEC, "spec.workload.resources.requests.cpu"),
        (SCALING_SPEC, "spec.autoscaling.metrics[0].pods.target.averageValue"),
    ],
)
def test_the_status_names_the_field_instead_of_a_crash(spec: dict[str, Any], field: str) -> None:
    kube = FakeKube(now=lambda: NOW, namespaces=(OPERATOR,))
    kube.create(tenant_manifest("odd", spec))
    _reconciler(kube).reconcile("odd")
    tenant = kube.get(TENANT, "odd")
    assert tenant is not None
    ready = {c["type"]: c for c in tenant["status"]["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert field in ready["message"]


@pytest.mark.security
@pytest.mark.parametrize("spec", [SPEC, SCALING_SPEC], ids=["requests", "target"])
def test_the_finalizer_lets_such_a_tenant_go(spec: dict[str, Any]) -> None:
    kube = FakeKube(now=lambda: NOW, namespaces=(OPERATOR,))
    kube.create(tenant_manifest("odd", spec))
    kube.patch_merge(TENANT, "odd", {"metadata": {"finalizers": [FINALIZER]}})
    tenant = kube.get(TENANT, "odd")
    assert tenant is not None
    # As the API server serves it once deleted (the fake drops a deleted object at once).
    tenant["metadata"]["deletionTimestamp"] = "2026-01-01T12:00:00Z"
    assert _reconciler(kube).deletion.finalize(tenant) is True
    assert kube.get(NAMESPACE, "cleo-odd") is None  # nothing was made, nothing deleted

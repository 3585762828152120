"""A tenant's deletion on the in-memory API server: the Retain orphaning comes first and
takes the registry copies with it, and the report of what the deletion waits for never
stands in its way (a refused or failing status write is logged, the message is clipped).

In the style of test_tenant_decisions.py: the reconciler is the real one; FakeKube fakes
only the API server (it has no garbage collector, so the owner references are what count
there; the copies are checked to be gone, not merely cut loose).
"""

from __future__ import annotations

import base64
import datetime
import logging
from typing import Any

import pytest

from cleo_operator.kube.kinds import DEPLOYMENT, NAMESPACE, SECRET, TENANT
from cleo_operator.reconcile.pull_secrets import PullSecretCopies
from cleo_operator.reconcile.status import MESSAGE_LIMIT
from cleo_operator.reconcile.tenant import TenantReconciler
from cleo_operator.render.meta import FINALIZER
from tests.harness.fake_kube import FakeKube
from tests.harness.specs import secret_manifest, tenant_manifest

NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
OPERATOR = "cleo-system"
CONFIG = base64.b64encode(b'{"auths": {"registry.example": {}}}').decode()


class _WaitingPart:
    """A part whose finalize waits (as the database part for a final backup), saying so at
    length."""

    def __init__(self, waiting: str) -> None:
        self.waiting = waiting

    def reconcile(self, ctx: Any) -> Any:
        raise AssertionError("not reconciled in this test")

    def finalize(self, ctx: Any, *, delete: bool) -> bool:
        del delete
        ctx.waiting.append(self.waiting)
        return False


@pytest.fixture
def kube() -> FakeKube:
    fake = FakeKube(now=lambda: NOW, namespaces=(OPERATOR, "kube-system", "default"))
    fake.create(
        secret_manifest(
            "regcred",
            OPERATOR,
            {".dockerconfigjson": CONFIG},
            type_="kubernetes.io/dockerconfigjson",
        )
    )
    return fake


def reconciler(kube: FakeKube, **kwargs: Any) -> TenantReconciler:
    return TenantReconciler(kube, operator_namespace=OPERATOR, now=lambda: NOW, **kwargs)


def retained_tenant_with_copies(kube: FakeKube, name: str) -> str:
    """A reconciled Retain tenant whose namespace holds a registry copy and a Secret of the
    tenant's own; the tenant then deleted (it holds the operator's finalizer)."""
    kube.create(
        tenant_manifest(
            name,
            {
                "workload": {"image": "registry.example.com/cleoai:2.0.0", "replicas": 1},
                "autoscaling": {"enabled": False},
                "deletionPolicy": "Retain",
            },
        )
    )
    tenants = reconciler(kube)
    tenants.reconcile(name)
    namespace = f"cleo-{name}"
    # The deployment controller's part (the fake has none): the pods run, so the tenant
    # is Ready and its status lists its children.
    (deployment,) = kube.objects(DEPLOYMENT, namespace=namespace)
    kube.patch_merge(
        DEPLOYMENT,
        "cleoai",
        {
            "status": {
                "observedGeneration": deployment["metadata"]["generation"],
                "replicas": 1,
                "updatedReplicas": 1,
                "readyReplicas": 1,
                "availableReplicas": 1,
                "conditions": [{"type": "Available", "status": "True"}],
            }
        },
        namespace=namespace,
        subresource="status",
    )
    assert tenants.reconcile(name).ready
    tenant = kube.get(TENANT, name)
    assert tenant is not None
    copies = PullSecretCopies(kube, sources=("regcred",), operator_namespace=OPERATOR)
    assert copies.sync(namespace, tenant=name, owner=tenant).applied
    kube.create(secret_manifest("app-settings", namespace, {"x": CONFIG}))
    kube.patch_merge(TENANT, name, {"metadata": {"finalizers": [FINALIZER]}})
    kube.delete(TENANT, name)
    kube.writes.clear()
    return namespace


@pytest.mark.security
def test_retain_deletes_the_registry_copies_and_keeps_the_tenants_data(kube: FakeKube) -> None:
    namespace = retained_tenant_with_copies(kube, "legacy")
    assert reconciler(kube).finalize("legacy") is True
    # The platform's credential leaves the kept namespace; the tenant's Secret stays.
    assert kube.get(SECRET, "cleo-pull-regcred", namespace=namespace) is None
    assert kube.get(SECRET, "app-settings", namespace=namespace) is not None
    ns = kube.get(NAMESPACE, namespace)
    assert ns is not None
    assert ns["metadata"]["labels"]["cleoai.io/orphaned"] == "true"


@pytest.mark.parametrize(
    ("status", "reason"),
    [(403, "Forbidden"), (422, "Invalid"), (500, "InternalError"), (503, "ServiceUnavailable")],
)
def test_a_refused_status_write_never_blocks_the_retain_orphaning(
    kube: FakeKube, caplog: pytest.LogCaptureFixture, status: int, reason: str
) -> None:
    namespace = retained_tenant_with_copies(kube, "stuck")
    kube.refuse(
        "patch",
        TENANT,
        "stuck",
        status=status,
        reason=reason,
        message="denied; password=hunter2-in-the-message",
        subresource="status",
    )
    waiting = reconciler(kube, parts=[_WaitingPart("database: waiting for the final backup")])
    with caplog.at_level(logging.WARNING):
        assert waiting.finalize("stuck") is False  # the part waits; nothing raised
    # Cut loose and cleaned all the same.
    assert kube.get(SECRET, "cleo-pull-regcred", namespace=namespace) is None
    deployment = kube.get(DEPLOYMENT, "cleoai", namespace=namespace)
    assert deployment is not None
    assert not deployment["metadata"].get("ownerReferences")
    ns = kube.get(NAMESPACE, namespace)
    assert ns is not None
    assert ns["metadata"]["labels"]["cleoai.io/orphaned"] == "true"
    # The status write was tried after the orphaning, and its failure logged, redacted.
    methods = [(w.method, w.kind, w.subresource) for w in kube.writes]
    assert methods[-1] == ("patch", "CleoTenant", "status")
    logged = [r.getMessage() for r in caplog.records if "could not report" in r.getMessage()]
    assert logged, caplog.text
    assert "hunter2" not in caplog.text
    # Only the status subresource was refused (the fake's refusal is that narrow).
    kube.patch_merge(TENANT, "stuck", {"metadata": {"labels": {"checked": "true"}}})


def test_a_long_report_is_clipped_to_what_a_condition_holds(kube: FakeKube) -> None:
    retained_tenant_with_copies(kube, "wordy")
    waiting = reconciler(kube, parts=[_WaitingPart("waiting for " + "a part, " * 400)])
    assert waiting.finalize("wordy") is False
    tenant = kube.get(TENANT, "wordy")
    assert tenant is not None
    (ready,) = [c for c in tenant["status"]["conditions"] if c["type"] == "Ready"]
    assert ready["reason"] == "Deleting"
    assert len(ready["message"]) <= MESSAGE_LIMIT
    assert ready["message"].startswith("the tenant is being deleted (deletionPolicy Retain)")

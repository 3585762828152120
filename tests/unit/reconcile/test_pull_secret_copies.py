"""What a sync of the registry copies decides, on the in-memory API server: which writes,
which condition. The real API server (owners, garbage collection, the admission policy) is
proven in tests/integration/test_backup_pull_secrets.py and the security tests."""

from __future__ import annotations

import base64

import pytest

from cleo_operator.kube.kinds import SECRET
from cleo_operator.reconcile.pull_secrets import PullSecretCopies
from tests.harness.fake_kube import FakeKube

OPERATOR = "cleo-system"
TENANT_NS = "cleo-acme"
CONFIG = base64.b64encode(b'{"auths": {"registry.example": {}}}').decode()


@pytest.fixture
def kube() -> FakeKube:
    fake = FakeKube(namespaces=(OPERATOR, TENANT_NS))
    fake.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": "regcred", "namespace": OPERATOR},
            "data": {".dockerconfigjson": CONFIG},
        }
    )
    fake.create(
        {
            "apiVersion": "cleoai.io/v1alpha1",
            "kind": "CleoBackup",
            "metadata": {"name": "nightly", "namespace": TENANT_NS},
            "spec": {"tenant": "acme"},
        }
    )
    fake.writes.clear()
    return fake


def copies(kube: FakeKube, *sources: str) -> PullSecretCopies:
    return PullSecretCopies(kube, sources=sources, operator_namespace=OPERATOR)


def test_a_copy_is_made_once_and_a_second_sync_writes_nothing(kube: FakeKube) -> None:
    first = copies(kube, "regcred").sync(TENANT_NS, tenant="acme")
    assert first.names == ("cleo-pull-regcred",)
    assert [ref["name"] for ref in first.applied] == ["cleo-pull-regcred"]
    assert first.problem is None
    copy = kube.get(SECRET, "cleo-pull-regcred", namespace=TENANT_NS)
    assert copy is not None
    assert copy["data"] == {".dockerconfigjson": CONFIG}
    kube.writes.clear()
    again = copies(kube, "regcred").sync(TENANT_NS, tenant="acme")
    assert (again.applied, again.deleted, kube.writes) == ([], [], [])


def test_no_source_named_deletes_every_copy_and_nothing_else(kube: FakeKube) -> None:
    copies(kube, "regcred").sync(TENANT_NS, tenant="acme")
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "tenant-own", "namespace": TENANT_NS},
            "data": {"x": CONFIG},
        }
    )
    result = copies(kube).sync(TENANT_NS, tenant="acme")
    assert result.names == ()
    assert [ref["name"] for ref in result.deleted] == ["cleo-pull-regcred"]
    assert kube.get(SECRET, "tenant-own", namespace=TENANT_NS) is not None


def test_a_missing_source_is_the_problem_and_nothing_is_copied(kube: FakeKube) -> None:
    result = copies(kube, "absent", "regcred").sync(TENANT_NS, tenant="acme")
    assert result.problem is not None
    assert (result.problem.status, result.problem.reason) == ("False", "ImagePullSecretMissing")
    assert result.names == ("cleo-pull-absent", "cleo-pull-regcred")
    assert [ref["name"] for ref in result.applied] == ["cleo-pull-regcred"]
    assert kube.get(SECRET, "cleo-pull-absent", namespace=TENANT_NS) is None

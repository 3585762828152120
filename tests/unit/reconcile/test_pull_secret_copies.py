"""What a sync of the registry copies decides, on the in-memory API server: which writes,
which condition, how many requests. The real API server (owners, garbage collection, the
admission policy) is proven in tests/integration/test_backup_pull_secrets.py and the
security tests."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from cleo_operator.api.objects import KubeObject
from cleo_operator.kube.client import KubeError
from cleo_operator.kube.kinds import SECRET, TENANT, Kind
from cleo_operator.reconcile.pull_secrets import PullSecretCopies, check_sources
from cleo_operator.render.meta import MANAGED_BY, MANAGED_BY_LABEL, TENANT_LABEL
from tests.harness.fake_kube import FakeKube
from tests.harness.specs import secret_manifest

OPERATOR = "cleo-system"
TENANT_NS = "cleo-acme"
CONFIG = base64.b64encode(b'{"auths": {"registry.example": {}}}').decode()


class CountingKube(FakeKube):
    """FakeKube that counts every request, reads included (`writes` has only writes)."""

    def __init__(self, **kwargs: Any) -> None:
        self.requests: list[tuple[str, str]] = []
        super().__init__(**kwargs)

    def request(self, method: str, path: str, **options: Any) -> Any:
        self.requests.append((method, path))
        return super().request(method, path, **options)


def registry_secret(name: str, namespace: str, **labels: str) -> KubeObject:
    return secret_manifest(
        name,
        namespace,
        {".dockerconfigjson": CONFIG},
        type_="kubernetes.io/dockerconfigjson",
        labels=labels,
    )


def backup(name: str) -> KubeObject:
    return {
        "apiVersion": "cleoai.io/v1alpha1",
        "kind": "CleoBackup",
        "metadata": {"name": name, "namespace": TENANT_NS},
        "spec": {"tenant": "acme"},
    }


@pytest.fixture
def kube() -> CountingKube:
    fake = CountingKube(namespaces=(OPERATOR, TENANT_NS))
    fake.create(registry_secret("regcred", OPERATOR))
    fake.create(backup("nightly"))
    fake.create(
        {"apiVersion": "cleoai.io/v1alpha1", "kind": "CleoTenant", "metadata": {"name": "acme"}}
    )
    fake.writes.clear()
    fake.requests.clear()
    return fake


def tenant(kube: FakeKube, name: str = "acme") -> KubeObject:
    found = kube.get(TENANT, name)
    assert found is not None
    return found


def copies(kube: FakeKube, *sources: str) -> PullSecretCopies:
    return PullSecretCopies(kube, sources=sources, operator_namespace=OPERATOR)


def test_a_copy_is_made_once_owned_by_the_tenant_and_a_second_sync_writes_nothing(
    kube: CountingKube,
) -> None:
    owner = tenant(kube)
    first = copies(kube, "regcred").sync(TENANT_NS, tenant="acme", owner=owner)
    assert first.names == ("cleo-pull-regcred",)
    assert [ref["name"] for ref in first.applied] == ["cleo-pull-regcred"]
    assert first.problem is None
    assert (first.condition.status, first.condition.reason) == ("True", "Copied")
    copy = kube.get(SECRET, "cleo-pull-regcred", namespace=TENANT_NS)
    assert copy is not None
    assert copy["data"] == {".dockerconfigjson": CONFIG}
    assert [(o["kind"], o["uid"]) for o in copy["metadata"]["ownerReferences"]] == [
        ("CleoTenant", owner["metadata"]["uid"])
    ]
    kube.writes.clear()
    again = copies(kube, "regcred").sync(TENANT_NS, tenant="acme", owner=owner)
    assert (again.applied, again.deleted, kube.writes) == ([], [], [])


def test_a_no_op_sync_costs_the_same_few_requests_with_500_backups(kube: CountingKube) -> None:
    owner = tenant(kube)
    service = copies(kube, "regcred")
    service.sync(TENANT_NS, tenant="acme", owner=owner)
    kube.requests.clear()
    service.sync(TENANT_NS, tenant="acme", owner=owner)
    with_one = list(kube.requests)
    for n in range(500):
        kube.create(backup(f"b{n:03}"))
    service.sync(TENANT_NS, tenant="acme", owner=owner)  # nothing to do for it either
    kube.requests.clear()
    kube.writes.clear()
    service.sync(TENANT_NS, tenant="acme", owner=owner)
    # One list of the copies (by label), then a read of the source and of its copy:
    # never the backups, however many.
    assert kube.requests == with_one
    assert len(kube.requests) == 3
    assert not [path for _, path in kube.requests if "cleobackups" in path]
    assert kube.writes == []
    copy = kube.get(SECRET, "cleo-pull-regcred", namespace=TENANT_NS)
    assert copy is not None
    assert len(copy["metadata"]["ownerReferences"]) == 1


def test_no_source_named_deletes_every_copy_and_nothing_else(kube: FakeKube) -> None:
    copies(kube, "regcred").sync(TENANT_NS, tenant="acme", owner=tenant(kube))
    kube.create(secret_manifest("tenant-own", TENANT_NS, {"x": CONFIG}))
    result = copies(kube).sync(TENANT_NS, tenant="acme", owner=tenant(kube))
    assert result.names == ()
    assert (result.condition.status, result.condition.reason) == ("True", "NoneConfigured")
    assert [ref["name"] for ref in result.deleted] == ["cleo-pull-regcred"]
    assert kube.get(SECRET, "tenant-own", namespace=TENANT_NS) is not None


def test_a_missing_source_is_the_condition_and_nothing_is_copied(kube: FakeKube) -> None:
    result = copies(kube, "absent", "regcred").sync(TENANT_NS, tenant="acme", owner=tenant(kube))
    assert result.problem is not None
    assert (result.problem.status, result.problem.reason) == ("False", "ImagePullSecretMissing")
    # The message tells what happens: the pods still run, and pull without it.
    assert "The runner pods still run and name its copy cleo-pull-absent" in result.problem.message
    assert result.names == ("cleo-pull-absent", "cleo-pull-regcred")
    assert [ref["name"] for ref in result.applied] == ["cleo-pull-regcred"]
    assert kube.get(SECRET, "cleo-pull-absent", namespace=TENANT_NS) is None


@pytest.mark.security
def test_a_secret_planted_at_the_copy_name_of_a_missing_source_is_deleted(
    kube: FakeKube,
) -> None:
    """Without the admission policy a tenant admin can create cleo-pull-absent; the pods
    name it (they name every source's copy), so it must not stay."""
    kube.create(registry_secret("cleo-pull-absent", TENANT_NS, **{MANAGED_BY_LABEL: MANAGED_BY}))
    kube.create(registry_secret("cleo-pull-broken", TENANT_NS))
    kube.create(secret_manifest("broken", OPERATOR, {"password": CONFIG}))
    result = copies(kube, "absent", "broken", "regcred").sync(
        TENANT_NS, tenant="acme", owner=tenant(kube)
    )
    assert {ref["name"] for ref in result.deleted} == {"cleo-pull-absent", "cleo-pull-broken"}
    assert kube.get(SECRET, "cleo-pull-absent", namespace=TENANT_NS) is None
    assert kube.get(SECRET, "cleo-pull-broken", namespace=TENANT_NS) is None
    assert kube.get(SECRET, "cleo-pull-regcred", namespace=TENANT_NS) is not None


@pytest.mark.security
def test_without_a_ready_tenant_its_copies_go_and_another_tenants_stay(kube: FakeKube) -> None:
    """The tenant gone, invalid, or the namespace not its own: the sync runs without an
    owner and prunes, a source removed from the setting meanwhile included."""
    kube.create(registry_secret("mirror", OPERATOR))
    made = copies(kube, "regcred", "mirror").sync(TENANT_NS, tenant="acme", owner=tenant(kube))
    assert len(made.applied) == 2
    # A copy of another tenant whose namespace this is (a CleoBackup of acme in it is in
    # the wrong namespace): its backups need it.
    foreign = registry_secret(
        "cleo-pull-team",
        TENANT_NS,
        **{MANAGED_BY_LABEL: MANAGED_BY, "app.kubernetes.io/component": "image-pull"},
        **{TENANT_LABEL: "other"},
    )
    kube.create(foreign)

    # "regcred" left the setting while acme has a problem: pruned all the same.
    result = copies(kube, "mirror").sync(TENANT_NS, tenant="acme", owner=None)
    assert sorted(ref["name"] for ref in result.deleted) == [
        "cleo-pull-mirror",
        "cleo-pull-regcred",
    ]
    assert (result.condition.status, result.condition.reason) == ("Unknown", "TenantNotReady")
    assert result.applied == []
    assert kube.get(SECRET, "cleo-pull-team", namespace=TENANT_NS) is not None
    kube.writes.clear()
    again = copies(kube, "mirror").sync(TENANT_NS, tenant="acme", owner=None)
    assert (again.deleted, kube.writes) == ([], [])


class ForbiddenSecrets(FakeKube):
    """The operator's rights: no Secrets in a namespace that is not a tenant's. FakeKube
    models no authorization, so this answers as the API server's RBAC would (403)."""

    def list(
        self, kind: Kind, *, namespace: str | None = None, label_selector: str | None = None
    ) -> list[KubeObject]:
        if kind == SECRET and namespace == "elsewhere":
            raise KubeError(status=403, reason="Forbidden", message="no", what="list secrets")
        return super().list(kind, namespace=namespace, label_selector=label_selector)


def test_without_rights_in_a_namespace_that_is_no_tenants_there_is_nothing_to_prune() -> None:
    kube = ForbiddenSecrets(namespaces=(OPERATOR, "elsewhere"))
    result = copies(kube, "regcred").sync("elsewhere", tenant="acme", owner=None)
    assert (result.deleted, result.applied, kube.writes) == ([], [], [])
    assert result.condition.reason == "TenantNotReady"
    # In the tenant's own namespace the same refusal is an error the loop reports.
    with pytest.raises(KubeError):
        copies(kube, "regcred").sync("elsewhere", tenant="acme", owner={"metadata": {"uid": "u"}})


def test_start_up_refuses_a_source_missing_from_the_operators_namespace(kube: FakeKube) -> None:
    check_sources(kube, ("regcred",), operator_namespace=OPERATOR)
    check_sources(kube, (), operator_namespace=OPERATOR)
    with pytest.raises(ValueError, match="names absent, gone, which do not exist") as raised:
        check_sources(kube, ("regcred", "absent", "gone"), operator_namespace=OPERATOR)
    message = str(raised.value)
    assert "CLEO_BACKUP_IMAGE_PULL_SECRETS (backup.imagePullSecrets)" in message
    assert f"operator's namespace {OPERATOR}" in message
    assert "no longer names Secrets of the tenant namespaces" in message

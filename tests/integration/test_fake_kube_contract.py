"""The in-memory FakeKube against the real API server: the same scenarios, the same answers.

FakeKube (tests/harness/fake_kube.py) is a fake of a boundary, the API server, so that the
reconcilers' decisions get fast unit tests. It is only worth that where it answers as the
API server does: each scenario here runs once on the fake and once on the local control
plane, and asserts the same results on both. Where they differ, the fake is wrong. The
control-plane tests of the reconcilers remain the proof that the operator works.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import CONFIG_MAP, DEPLOYMENT, NAMESPACE, TENANT
from tests.harness.fake_kube import FakeKube

FINALIZER = "contract.cleoai.io/hold"


@pytest.fixture(
    params=["fake", pytest.param("apiserver", marks=pytest.mark.cluster)],
)
def api(request: pytest.FixtureRequest) -> KubeClient:
    """The client under test: the FakeKube, or the operator's own client on the local
    control plane (with our CRDs, and no operator of the session reconciling meanwhile)."""
    if request.param == "fake":
        return FakeKube()
    request.getfixturevalue("crds_installed")
    request.getfixturevalue("without_session_operator")
    kube: KubeClient = request.getfixturevalue("kube")
    return kube


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespace(api: KubeClient) -> Iterator[str]:
    name = _unique("contract")
    api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    api.delete(NAMESPACE, name)


@pytest.fixture
def tenant_names(api: KubeClient) -> Iterator[list[str]]:
    """CleoTenants to remove after the test (their finalizers first)."""
    names: list[str] = []
    yield names
    for name in names:
        try:
            api.patch_merge(TENANT, name, {"metadata": {"finalizers": None}})
        except KubeError as exc:
            if not exc.not_found:
                raise
        api.delete(TENANT, name)


def config_map(namespace: str, name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": {"a": "1"},
    }


def tenant(name: str, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "cleoai.io/v1alpha1",
        "kind": "CleoTenant",
        "metadata": {"name": name, **meta},
        "spec": {"paused": True},
    }


def refusal(call: Any) -> tuple[int, str]:
    with pytest.raises(KubeError) as caught:
        call()
    return caught.value.status, caught.value.reason


def test_create_twice_is_409_already_exists(api: KubeClient, namespace: str) -> None:
    created = api.create(config_map(namespace, "twice"))
    assert created["metadata"]["uid"]
    assert created["metadata"]["resourceVersion"]
    assert created["metadata"]["creationTimestamp"].endswith("Z")
    assert "generation" not in created["metadata"]  # a ConfigMap has none
    assert refusal(lambda: api.create(config_map(namespace, "twice"))) == (409, "AlreadyExists")


def test_missing_objects(api: KubeClient, namespace: str) -> None:
    assert api.get(CONFIG_MAP, "nothing", namespace=namespace) is None
    path = CONFIG_MAP.path(namespace=namespace, name="nothing")
    assert refusal(lambda: api.request("GET", path)) == (404, "NotFound")
    assert refusal(lambda: api.patch_merge(CONFIG_MAP, "nothing", {}, namespace=namespace)) == (
        404,
        "NotFound",
    )
    assert api.delete(CONFIG_MAP, "nothing", namespace=namespace) is False
    # A namespaced object in a namespace that does not exist.
    elsewhere = _unique("absent")
    assert refusal(lambda: api.create(config_map(elsewhere, "x"))) == (404, "NotFound")
    assert refusal(lambda: api.apply(config_map(elsewhere, "x"))) == (404, "NotFound")


def test_a_write_with_a_stale_resource_version_is_409(api: KubeClient, namespace: str) -> None:
    first = api.create(config_map(namespace, "stale"))
    version = first["metadata"]["resourceVersion"]
    second = api.patch_merge(
        CONFIG_MAP,
        "stale",
        {"metadata": {"resourceVersion": version}, "data": {"a": "2"}},
        namespace=namespace,
    )
    assert second["metadata"]["resourceVersion"] != version
    stale = {"metadata": {"resourceVersion": version}, "data": {"a": "3"}}
    assert refusal(lambda: api.patch_merge(CONFIG_MAP, "stale", stale, namespace=namespace)) == (
        409,
        "Conflict",
    )
    stale_apply = config_map(namespace, "stale")
    stale_apply["metadata"]["resourceVersion"] = version
    assert refusal(lambda: api.apply(stale_apply)) == (409, "Conflict")
    live = api.get(CONFIG_MAP, "stale", namespace=namespace)
    assert live is not None
    assert live["data"] == {"a": "2"}


def test_an_update_replaces_the_object_over_its_resource_version(
    api: KubeClient, namespace: str
) -> None:
    """PUT, as the leader election writes its Lease: whole, over the version it read."""
    first = api.create(config_map(namespace, "put"))
    path = CONFIG_MAP.path(namespace=namespace, name="put")
    replaced = api.request(
        "PUT", path, body={**first, "data": {"b": "2"}, "metadata": {**first["metadata"]}}
    )
    assert replaced["data"] == {"b": "2"}, "a PUT replaces, it does not merge"
    assert replaced["metadata"]["resourceVersion"] != first["metadata"]["resourceVersion"]
    assert replaced["metadata"]["uid"] == first["metadata"]["uid"]
    stale = {**first, "data": {"c": "3"}}
    assert refusal(lambda: api.request("PUT", path, body=stale)) == (409, "Conflict")
    missing = config_map(namespace, "absent")
    absent = CONFIG_MAP.path(namespace=namespace, name="absent")
    assert refusal(lambda: api.request("PUT", absent, body=missing)) == (404, "NotFound")


def test_a_write_pinned_to_another_uid_is_refused(api: KubeClient, namespace: str) -> None:
    api.create(config_map(namespace, "pinned"))
    pinned = config_map(namespace, "pinned")
    pinned["metadata"]["uid"] = str(uuid.uuid4())
    assert refusal(lambda: api.apply(pinned)) == (422, "Invalid")  # uid is immutable
    assert refusal(
        lambda: api.delete(
            CONFIG_MAP, "pinned", namespace=namespace, preconditions={"uid": str(uuid.uuid4())}
        )
    ) == (409, "Conflict")
    # An apply that would create cannot hold a uid: the object it meant is gone.
    gone = config_map(namespace, "gone")
    gone["metadata"]["uid"] = str(uuid.uuid4())
    assert refusal(lambda: api.apply(gone)) == (409, "Conflict")
    live = api.get(CONFIG_MAP, "pinned", namespace=namespace)
    assert live is not None
    pinned["metadata"]["uid"] = live["metadata"]["uid"]
    assert api.apply(pinned)["metadata"]["uid"] == live["metadata"]["uid"]


def test_an_invalid_name_is_422(api: KubeClient, namespace: str) -> None:
    assert refusal(lambda: api.create(config_map(namespace, "Not_A_Name"))) == (422, "Invalid")


def test_an_identical_apply_changes_nothing(api: KubeClient, namespace: str) -> None:
    obj = config_map(namespace, "applied", team="a")
    first = api.apply(obj)
    again = api.apply(obj)
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    # A change is a new version; a field no longer applied is removed.
    changed = config_map(namespace, "applied")
    changed["data"] = {"b": "2"}
    third = api.apply(changed)
    assert third["metadata"]["resourceVersion"] != first["metadata"]["resourceVersion"]
    assert third["data"] == {"b": "2"}
    assert "team" not in (third["metadata"].get("labels") or {})


def test_apply_keeps_what_another_writer_set(api: KubeClient, namespace: str) -> None:
    api.apply(config_map(namespace, "shared"))
    api.patch_merge(
        CONFIG_MAP, "shared", {"metadata": {"labels": {"by-hand": "yes"}}}, namespace=namespace
    )
    result = api.apply(config_map(namespace, "shared"))
    assert result["metadata"]["labels"] == {"by-hand": "yes"}


def test_list_by_label_selector(api: KubeClient, namespace: str) -> None:
    # `set` keeps out what controllers put into every namespace (kube-root-ca.crt).
    api.create(config_map(namespace, "one", set="c", tier="web", team="a"))
    api.create(config_map(namespace, "two", set="c", tier="db", team="a"))
    api.create(config_map(namespace, "three", set="c", tier="db"))
    api.create(config_map(namespace, "four", set="c"))

    def names(selector: str) -> list[str]:
        items = api.list(CONFIG_MAP, namespace=namespace, label_selector=f"set=c,{selector}")
        return sorted(i["metadata"]["name"] for i in items)

    assert names("tier=db") == ["three", "two"]
    assert names("tier==db,team=a") == ["two"]
    assert names("tier!=db") == ["four", "one"]  # a missing label is unequal
    assert names("tier in (web, db),team") == ["one", "two"]
    assert names("tier notin (web)") == ["four", "three", "two"]
    assert names("!team") == ["four", "three"]
    assert names("team,!team") == []
    assert refusal(lambda: names("tier in web")) == (400, "BadRequest")
    items = api.list(CONFIG_MAP, namespace=namespace, label_selector="tier=web")
    # Items of a built-in kind come without apiVersion and kind.
    assert "kind" not in items[0]
    assert "apiVersion" not in items[0]


def test_a_namespace_is_active_and_labelled_with_its_name(api: KubeClient, namespace: str) -> None:
    live = api.get(NAMESPACE, namespace)
    assert live is not None
    assert live["status"]["phase"] == "Active"
    assert live["metadata"]["labels"]["kubernetes.io/metadata.name"] == namespace
    assert "generation" not in live["metadata"]


def test_a_deleted_namespace_terminates_and_takes_no_new_content(api: KubeClient) -> None:
    name = _unique("contract")
    api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    api.create(config_map(name, "inside"))
    assert api.delete(NAMESPACE, name) is True
    live = api.get(NAMESPACE, name)
    assert live is not None
    assert live["metadata"]["deletionTimestamp"]
    assert live["status"]["phase"] == "Terminating"
    assert refusal(lambda: api.create(config_map(name, "late"))) == (403, "Forbidden")
    assert refusal(lambda: api.apply(config_map(name, "late"))) == (403, "Forbidden")


def test_status_is_a_subresource(api: KubeClient, tenant_names: list[str]) -> None:
    name = _unique("contract")
    tenant_names.append(name)
    created = api.create({**tenant(name), "status": {"phase": "Failed"}})
    assert created["metadata"]["generation"] == 1
    assert "status" not in created  # status is not written with the object

    written = api.patch_merge(TENANT, name, {"status": {"phase": "Ready"}}, subresource="status")
    assert written["status"] == {"phase": "Ready"}
    assert written["metadata"]["generation"] == 1
    assert written["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
    assert written["spec"] == created["spec"]

    # A status write touches nothing but status; a write of the object, nothing but it.
    sneaky = {"spec": {"paused": False}, "status": {"phase": "Paused"}}
    result = api.patch_merge(TENANT, name, sneaky, subresource="status")
    assert result["spec"]["paused"] is True
    assert result["status"]["phase"] == "Paused"
    both = {"spec": {"paused": False}, "status": {"phase": "Degraded"}}
    result = api.patch_merge(TENANT, name, both)
    assert result["spec"]["paused"] is False
    assert result["status"]["phase"] == "Paused"
    assert result["metadata"]["generation"] == 2
    # Metadata is not the spec: no new generation.
    labelled = api.patch_merge(TENANT, name, {"metadata": {"labels": {"a": "b"}}})
    assert labelled["metadata"]["generation"] == 2
    assert refusal(
        lambda: api.patch_merge(
            CONFIG_MAP, "x", {"status": {}}, namespace="default", subresource="status"
        )
    ) == (404, "NotFound")


def test_a_deployment_has_a_generation(api: KubeClient, namespace: str) -> None:
    labels = {"app": "x"}
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x", "namespace": namespace},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "x", "image": "registry.example.com/x:1"}]},
            },
        },
    }
    assert api.apply(deployment)["metadata"]["generation"] == 1
    deployment["spec"]["replicas"] = 1
    assert api.apply(deployment)["metadata"]["generation"] == 2
    deployment["metadata"]["labels"] = {"team": "a"}
    assert api.apply(deployment)["metadata"]["generation"] == 2  # labels are not the spec
    deployment["metadata"]["annotations"] = {"note": "x"}
    assert api.apply(deployment)["metadata"]["generation"] == 3  # a Deployment's annotations are
    status = {"status": {"observedGeneration": 3, "replicas": 1}}
    written = api.patch_merge(DEPLOYMENT, "x", status, namespace=namespace, subresource="status")
    assert written["metadata"]["generation"] == 3
    assert written["status"]["observedGeneration"] == 3
    api.delete(DEPLOYMENT, "x", namespace=namespace)


def test_deletion_waits_for_finalizers(api: KubeClient, tenant_names: list[str]) -> None:
    name = _unique("contract")
    tenant_names.append(name)
    created = api.create(tenant(name, finalizers=[FINALIZER]))
    assert api.delete(TENANT, name) is True
    held = api.get(TENANT, name)
    assert held is not None
    assert held["metadata"]["deletionTimestamp"]
    assert held["metadata"]["finalizers"] == [FINALIZER]
    assert held["metadata"]["generation"] == created["metadata"]["generation"] + 1
    # No new finalizer while it is being deleted; the last one out lets it go.
    more = {"metadata": {"finalizers": [FINALIZER, "contract.cleoai.io/other"]}}
    assert refusal(lambda: api.patch_merge(TENANT, name, more)) == (422, "Invalid")
    api.patch_merge(TENANT, name, {"metadata": {"finalizers": None}})
    assert api.get(TENANT, name) is None

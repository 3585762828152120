"""The parts of the FakeKube test harness that the contract test cannot compare.

FakeKube is a fake of the API server (a boundary); whether it answers like one is settled
by tests/integration/test_fake_kube_contract.py against the local control plane. Here:
what only the fake has (its write log, its refusals, its limits) and the label selector
grammar in the detail a test of the fake may rely on.
"""

from __future__ import annotations

import pytest

from cleo_operator.kube.client import KubeError
from cleo_operator.kube.kinds import CONFIG_MAP, NAMESPACE, SECRET
from tests.harness.fake_kube import FakeKube, Write, parse_selector, selects


def config_map(name: str, namespace: str = "default", **data: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    }


def test_every_write_request_is_logged_refused_or_not() -> None:
    kube = FakeKube()
    assert kube.writes == []  # the namespaces it starts with are not the test's writes
    kube.create(config_map("a"))
    kube.apply(config_map("a", x="1"))
    kube.patch_merge(CONFIG_MAP, "a", {"data": {"y": "2"}}, namespace="default")
    kube.get(CONFIG_MAP, "a", namespace="default")
    kube.list(CONFIG_MAP, namespace="default")
    with pytest.raises(KubeError):
        kube.create(config_map("a"))
    kube.delete(CONFIG_MAP, "a", namespace="default")
    assert kube.delete(CONFIG_MAP, "a", namespace="default") is False
    assert [w.method for w in kube.writes] == [
        "create",
        "apply",
        "patch",
        "create",
        "delete",
        "delete",
    ]
    assert kube.writes[0] == Write("create", "ConfigMap", "default", "a")
    assert kube.writes_to("default") == kube.writes


def test_a_refusal_answers_like_the_api_server() -> None:
    kube = FakeKube()
    kube.refuse("apply", SECRET, "locked", status=403, reason="Forbidden", message="no")
    locked = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "locked"}}
    locked["metadata"] = {"name": "locked", "namespace": "default"}
    with pytest.raises(KubeError) as caught:
        kube.apply(locked)
    assert (caught.value.status, caught.value.reason, caught.value.message) == (
        403,
        "Forbidden",
        "no",
    )
    assert str(caught.value) == "apply Secret default/locked: 403 Forbidden: no"  # the client's
    kube.apply({**locked, "metadata": {"name": "open", "namespace": "default"}})


def test_a_field_another_writer_changed_stays_when_apply_drops_it() -> None:
    kube = FakeKube()
    kube.apply(config_map("a", mine="1", shared="1"))
    kube.patch_merge(CONFIG_MAP, "a", {"data": {"shared": "2"}}, namespace="default")
    result = kube.apply(config_map("a", mine="1"))
    assert result["data"] == {"mine": "1", "shared": "2"}
    result = kube.apply(config_map("a"))
    assert result["data"] == {"shared": "2"}


def test_what_it_does_not_model_is_an_error_not_an_answer() -> None:
    kube = FakeKube()
    with pytest.raises(NotImplementedError):
        kube.request("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles/x")
    with pytest.raises(NotImplementedError):
        kube.request("GET", "/version")


def test_a_namespace_goes_with_its_content_when_its_controller_runs() -> None:
    kube = FakeKube()
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}})
    kube.create(config_map("a", "n"))
    kube.delete(NAMESPACE, "n")
    assert kube.get(CONFIG_MAP, "a", namespace="n") is not None
    assert kube.finish_namespace_deletions() == ["n"]
    assert kube.get(NAMESPACE, "n") is None
    assert kube.get(CONFIG_MAP, "a", namespace="n") is None


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("a=1", {"a": "1"}, True),
        ("a=1", {}, False),
        ("a!=1", {}, True),
        ("a in (1, 2)", {"a": "2"}, True),
        ("a notin (1,2)", {}, True),
        ("example.com/a,!b", {"example.com/a": ""}, True),
        ("example.com/a,!b", {"example.com/a": "", "b": "x"}, False),
    ],
)
def test_label_selectors(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert selects(parse_selector(selector), labels) is expected


@pytest.mark.parametrize("selector", ["a=1=2", "a in 1", "a,", "=1", "a in (b c)"])
def test_what_is_not_a_label_selector(selector: str) -> None:
    with pytest.raises(ValueError, match=r"requirement|invalid value"):
        parse_selector(selector)

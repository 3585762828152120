"""render_tenant: every child, in apply order, tied to the tenant, byte-for-byte stable."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from hypothesis import given, settings

from cleo_operator.api.objects import KubeObject
from cleo_operator.api.tenant import CleoTenantSpec
from cleo_operator.render.meta import MANAGED_BY, MANAGED_BY_LABEL, TENANT_LABEL
from tests.harness.specs import tenant_children
from tests.unit.render.specs import FULL, TENANT, UID, WORKLOAD, find, render, spec_of, tenant_specs

FULL_ORDER = tenant_children(FULL["namespace"])


def kinds_and_names(objects: list[KubeObject]) -> list[tuple[str, str]]:
    return [(o["kind"], o["metadata"]["name"]) for o in objects]


def test_a_full_tenant_gets_every_child_in_apply_order() -> None:
    assert kinds_and_names(render(spec_of())) == FULL_ORDER


def test_an_empty_spec_gets_the_namespace_and_its_fence_only() -> None:
    assert kinds_and_names(render(spec_of({}))) == [
        ("Namespace", "cleo-acme"),
        ("NetworkPolicy", "cleo-default-deny"),
        ("NetworkPolicy", "cleo-allow-same-namespace"),
        ("NetworkPolicy", "cleo-allow-dns"),
    ]


def test_a_fixed_size_workload_gets_no_hpa_and_keeps_its_replicas() -> None:
    spec = spec_of({"workload": {**WORKLOAD, "replicas": 3}, "autoscaling": {"enabled": False}})
    objects = render(spec)
    assert find(objects, "HorizontalPodAutoscaler") == []
    assert find(objects, "Deployment")[0]["spec"]["replicas"] == 3
    assert find(objects, "PodDisruptionBudget")[0]["spec"]["minAvailable"] == 1


def test_the_namespace_enforces_restricted_pod_security() -> None:
    namespace = render(spec_of())[0]
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert "namespace" not in namespace["metadata"]


def test_the_namespace_carries_the_tenant_uid() -> None:
    """The uid, not the name, proves whose namespace it is (names are reused)."""
    namespace = render(spec_of())[0]
    assert namespace["metadata"]["labels"]["cleoai.io/tenant-uid"] == UID
    assert [o["uid"] for o in namespace["metadata"]["ownerReferences"]] == [UID]


def test_the_deployment_gets_the_secrets_and_checksum() -> None:
    objects = render(
        spec_of(), config_checksum="c" * 64, secret_names=["openai"], database_secret="cleo-db"
    )
    deployment = find(objects, "Deployment")[0]
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"]["cleoai.io/config-checksum"] == "c" * 64
    refs = [s["secretRef"]["name"] for s in template["spec"]["containers"][0]["envFrom"][1:]]
    assert refs == ["openai", "cleo-db"]


@settings(max_examples=100, deadline=None)
@given(spec=tenant_specs())
def test_every_child_is_labelled_owned_and_in_the_tenant_namespace(spec: CleoTenantSpec) -> None:
    objects = render(spec)
    namespace = spec.namespace or f"cleo-{TENANT}"
    assert objects[0]["kind"] == "Namespace"
    assert len(set(kinds_and_names(objects))) == len(objects)
    for obj in objects:
        meta = obj["metadata"]
        assert meta["labels"][MANAGED_BY_LABEL] == MANAGED_BY
        assert meta["labels"][TENANT_LABEL] == TENANT
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "cleoai.io/v1alpha1",
                "kind": "CleoTenant",
                "name": TENANT,
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        if obj["kind"] != "Namespace":
            assert meta["namespace"] == namespace


def _walk(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, f"{path}[{index}]")


# Where an empty object means something (select everything; a default emptyDir).
MEANINGFUL_EMPTY = ("podSelector", "emptyDir")


@settings(max_examples=100, deadline=None)
@given(spec=tenant_specs())
def test_nothing_is_sent_that_the_api_server_would_drop(spec: CleoTenantSpec) -> None:
    # The kube layer re-applies a child when a field we sent is missing from what the
    # server returns; null, "" and [] are dropped by the server, so they would never settle.
    for obj in render(spec):
        for path, value in _walk(obj, obj["kind"]):
            assert value is not None, path
            assert value != [], path
            if value == {}:
                assert path.endswith(MEANINGFUL_EMPTY), path


@settings(max_examples=100, deadline=None)
@given(spec=tenant_specs())
def test_rendering_the_same_spec_twice_gives_the_same_bytes(spec: CleoTenantSpec) -> None:
    first = json.dumps(render(spec, secret_names=["b", "a"], database_secret="cleo-db"))
    again = json.dumps(render(spec, secret_names=["b", "a"], database_secret="cleo-db"))
    assert first == again


def test_reordering_what_has_no_order_renders_the_same_bytes() -> None:
    reordered: dict[str, Any] = {
        **FULL,
        "admins": FULL["admins"][::-1],
        "quota": dict(reversed(list(FULL["quota"].items()))),
        "network": {
            "ingressFrom": FULL["network"]["ingressFrom"][::-1],
            "databaseEgress": [{"cidr": "10.20.0.0/16", "ports": [5432, 6432]}],
        },
        "workload": {
            **FULL["workload"],
            "config": dict(reversed(list(FULL["workload"]["config"].items()))),
        },
    }
    first = json.dumps(render(spec_of(), secret_names=["openai", "zeta"]))
    second = json.dumps(render(spec_of(reordered), secret_names=["zeta", "openai"]))
    assert first == second


def test_rendered_children_share_no_mutable_parts() -> None:
    objects = render(spec_of())
    objects[1]["metadata"]["ownerReferences"][0]["name"] = "changed"
    objects[1]["metadata"]["labels"]["x"] = "y"
    assert objects[2]["metadata"]["ownerReferences"][0]["name"] == TENANT
    assert "x" not in objects[2]["metadata"]["labels"]

"""Deciding when a child needs a write: never for an unchanged, undrifted child."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from cleo_operator.kube.apply import HASH_ANNOTATION, needs_apply, parse_quantity, with_hash


def deployment(replicas: int = 2, cpu: str = "1000m") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "cleoai", "namespace": "cleo-acme", "labels": {"a": "b"}},
        "spec": {
            "replicas": replicas,
            "template": {
                "spec": {
                    "containers": [{"name": "cleoai", "resources": {"requests": {"cpu": cpu}}}]
                }
            },
        },
    }


def as_served(obj: dict[str, Any]) -> dict[str, Any]:
    """What the API server returns: our fields, plus defaults and bookkeeping of its own."""
    live: dict[str, Any] = {
        **copy.deepcopy(obj),
        "metadata": {**obj["metadata"], "uid": "u1", "resourceVersion": "7", "generation": 1},
        "status": {"replicas": 2},
    }
    container = live["spec"]["template"]["spec"]["containers"][0]
    container["imagePullPolicy"] = "IfNotPresent"
    if container["resources"]["requests"]["cpu"] == "1000m":
        container["resources"]["requests"]["cpu"] = "1"  # canonical form
    return live


def test_missing_child_needs_apply() -> None:
    assert needs_apply(with_hash(deployment()), None)


def test_served_copy_of_what_we_applied_needs_nothing() -> None:
    desired = with_hash(deployment())
    assert not needs_apply(desired, as_served(desired))


def test_spec_change_needs_apply() -> None:
    live = as_served(with_hash(deployment(replicas=2)))
    assert needs_apply(with_hash(deployment(replicas=3)), live)


def test_field_we_stopped_setting_is_caught_by_the_hash() -> None:
    old = deployment()
    new = deployment()
    del new["metadata"]["labels"]
    # A subset check alone would say "nothing to do": the live object still has the label.
    assert needs_apply(with_hash(new), as_served(with_hash(old)))


def test_hand_edit_is_drift() -> None:
    desired = with_hash(deployment())
    live = as_served(desired)
    live["spec"]["replicas"] = 9
    assert needs_apply(desired, live)


def test_hash_ignores_itself() -> None:
    once = with_hash(deployment())
    assert (
        with_hash(once)["metadata"]["annotations"][HASH_ANNOTATION]
        == (once["metadata"]["annotations"][HASH_ANNOTATION])
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", Decimal(1)),
        ("1000m", Decimal(1)),
        ("0.5", Decimal("0.5")),
        ("500m", Decimal("0.5")),
        ("1Gi", Decimal(2**30)),
        ("1G", Decimal(10**9)),
        ("1e3", Decimal(1000)),
        (2, Decimal(2)),
    ],
)
def test_quantities_compare_by_value(text: object, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["abc", "1 Gi", True, None, "1Gx"])
def test_non_quantities(text: object) -> None:
    assert parse_quantity(text) is None


def test_secret_values_stay_out_of_the_hash_but_changes_are_still_seen() -> None:
    def secret(value: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s", "namespace": "n"},
            "data": {"PASSWORD": value},
        }

    one, two = with_hash(secret("aHVudGVyMg==")), with_hash(secret("c2VjcmV0"))
    assert (
        one["metadata"]["annotations"][HASH_ANNOTATION]
        == two["metadata"]["annotations"][HASH_ANNOTATION]
    )
    assert needs_apply(two, copy.deepcopy(one))
    assert not needs_apply(one, copy.deepcopy(one))

"""Which namespaces a tenant may use: the pure decision, case by case."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from cleo_operator.reconcile.namespace_claim import (
    NamespaceClaim,
    claim_namespace,
    is_system_namespace,
    owner_uid,
)
from cleo_operator.render.meta import tenant_owner
from cleo_operator.render.tenant import render_namespace

UID = "1111-aaaa"
OTHER = "2222-bbbb"


def ns(
    name: str = "cleo-acme",
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    owners: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": "ns-uid", "resourceVersion": "7"}
    if labels:
        meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    if owners:
        meta["ownerReferences"] = owners
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def claim(
    live: Mapping[str, Any] | None,
    *,
    namespace: str = "cleo-acme",
    tenant: str = "acme",
    uid: str = UID,
    tenants: Mapping[str, str] | None = None,
) -> NamespaceClaim:
    def by_uid() -> Mapping[str, str]:
        return tenants if tenants is not None else {UID: "acme"}

    return claim_namespace(
        namespace=namespace,
        live=live,
        tenant=tenant,
        uid=uid,
        operator_namespace="cleo-system",
        tenants_by_uid=by_uid,
    )


def test_a_missing_namespace_is_created() -> None:
    assert claim(None).verdict == "create"


def test_the_namespace_the_operator_made_for_the_tenant_is_its_own() -> None:
    made = render_namespace(
        tenant="acme", namespace="cleo-acme", owner=tenant_owner(name="acme", uid=UID)
    )
    assert made["metadata"]["labels"]["cleoai.io/tenant-uid"] == UID
    assert claim(made).verdict == "owned"


def test_a_namespace_from_before_the_uid_label_is_owned_through_its_owner_reference() -> None:
    legacy = ns(
        labels={"cleoai.io/tenant": "acme"}, owners=[dict(tenant_owner(name="acme", uid=UID))]
    )
    assert owner_uid(legacy) == UID
    assert claim(legacy).verdict == "owned"


def test_another_live_tenants_namespace_is_refused_naming_it() -> None:
    theirs = ns(labels={"cleoai.io/tenant-uid": OTHER, "cleoai.io/tenant": "globex"})
    result = claim(theirs, tenants={UID: "acme", OTHER: "globex"})
    assert (result.verdict, result.reason) == ("refused", "NamespaceNotOwned")
    assert "tenant globex" in result.message


def test_a_mark_does_not_take_a_namespace_from_a_live_tenant() -> None:
    theirs = ns(labels={"cleoai.io/tenant-uid": OTHER}, annotations={"cleoai.io/adopt": "acme"})
    assert claim(theirs, tenants={OTHER: "globex"}).refused


def test_a_copied_tenant_label_is_not_ownership() -> None:
    """The tenant's name on a namespace proves nothing; only the uid does."""
    copied = ns(
        labels={"cleoai.io/tenant": "acme", "app.kubernetes.io/managed-by": "cleo-operator"}
    )
    result = claim(copied)
    assert result.refused
    assert "cleoai.io/adopt=acme" in result.message


def test_an_unmarked_namespace_of_the_cluster_is_refused() -> None:
    result = claim(ns("team-a"), namespace="team-a")
    assert (result.verdict, result.reason) == ("refused", "NamespaceNotOwned")
    assert "kubectl annotate namespace team-a cleoai.io/adopt=acme" in result.message


def test_a_namespace_marked_for_the_tenant_is_adopted() -> None:
    marked = ns("team-a", annotations={"cleoai.io/adopt": "acme"})
    assert claim(marked, namespace="team-a").verdict == "adopt"


def test_a_namespace_marked_for_another_tenant_is_refused() -> None:
    marked = ns("team-a", annotations={"cleoai.io/adopt": "globex"})
    result = claim(marked, namespace="team-a")
    assert result.refused
    assert "globex" in result.message


def test_a_retained_namespace_needs_the_mark_even_for_the_same_name() -> None:
    left = ns(
        labels={
            "cleoai.io/tenant": "acme",
            "cleoai.io/tenant-uid": OTHER,
            "cleoai.io/orphaned": "true",
        }
    )
    result = claim(left, tenants={UID: "acme"})  # the old acme (OTHER) is gone
    assert result.refused
    assert "deleted tenant" in result.message
    assert "cleoai.io/adopt=acme" in result.message
    marked = ns(
        labels={"cleoai.io/tenant-uid": OTHER, "cleoai.io/orphaned": "true"},
        annotations={"cleoai.io/adopt": "acme"},
    )
    assert claim(marked, tenants={UID: "acme"}).verdict == "adopt"


@pytest.mark.parametrize("mark", [None, "acme"])
def test_the_operator_namespace_is_always_refused(mark: str | None) -> None:
    live = ns("cleo-system", annotations={"cleoai.io/adopt": mark} if mark else None)
    for name in ("system", "acme"):  # the default namespace of `system`, or spec.namespace
        result = claim(live, namespace="cleo-system", tenant=name)
        assert (result.verdict, result.reason) == ("refused", "OperatorNamespace")
        assert "the operator's namespace" in result.message
    assert claim(None, namespace="cleo-system").refused  # even before it exists


@pytest.mark.security
@pytest.mark.parametrize(
    # svc and pod: zones of the cluster's DNS ("x.<ns>.svc" searched under "svc.cluster.local"
    # lands in namespace svc), which whoever owns them could answer for other namespaces.
    ("name", "reason"),
    [
        *((n, "SystemNamespace") for n in ("default", "kube-system", "kube-public")),
        *((n, "SystemNamespace") for n in ("kube-node-lease", "kube-flannel")),
        ("svc", "NamespaceReservedForDNS"),
        ("pod", "NamespaceReservedForDNS"),
    ],
)
def test_kubernetes_namespaces_are_always_refused(name: str, reason: str) -> None:
    assert is_system_namespace(name)
    marked = ns(name, annotations={"cleoai.io/adopt": "acme"})
    for live in (marked, None):  # whether it exists or the operator would create it
        result = claim(live, namespace=name)
        assert (result.verdict, result.reason) == ("refused", reason)


def test_the_tenant_list_is_read_only_for_a_foreign_uid() -> None:
    calls: list[int] = []

    def by_uid() -> Mapping[str, str]:
        calls.append(1)
        return {}

    for live in (None, ns(labels={"cleoai.io/tenant-uid": UID}), ns()):
        claim_namespace(
            namespace="cleo-acme",
            live=live,
            tenant="acme",
            uid=UID,
            operator_namespace="cleo-system",
            tenants_by_uid=by_uid,
        )
    assert calls == []


def test_an_owner_reference_of_another_kind_is_not_ownership() -> None:
    other = ns(
        owners=[
            {
                "apiVersion": "example.com/v1",
                "kind": "CleoTenant",
                "name": "acme",
                "uid": UID,
                "controller": True,
            }
        ]
    )
    assert owner_uid(other) is None

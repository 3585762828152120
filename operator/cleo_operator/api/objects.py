"""Types of raw Kubernetes JSON, shared by render (which builds it) and kube (which sends it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias, TypedDict

KubeObject: TypeAlias = dict[str, Any]
"""A Kubernetes object as decoded JSON (apiVersion, kind, metadata, ...)."""


class ObjectRef(TypedDict):
    """Identifies one object; what CleoTenant status lists as its children."""

    apiVersion: str
    kind: str
    namespace: str
    name: str


def object_ref(obj: Mapping[str, Any]) -> ObjectRef:
    """The reference of a Kubernetes object (namespace empty for a cluster-scoped one)."""
    meta = obj["metadata"]
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "namespace": meta.get("namespace", ""),
        "name": meta["name"],
    }


class OwnerReference(TypedDict):
    apiVersion: str
    kind: str
    name: str
    uid: str
    controller: bool
    blockOwnerDeletion: bool

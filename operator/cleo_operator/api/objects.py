"""Types of raw Kubernetes JSON, shared by render (which builds it) and kube (which sends it)."""

from __future__ import annotations

from typing import Any, TypeAlias, TypedDict

KubeObject: TypeAlias = dict[str, Any]
"""A Kubernetes object as decoded JSON (apiVersion, kind, metadata, ...)."""


class ObjectRef(TypedDict):
    """Identifies one object; what CleoTenant status lists as its children."""

    apiVersion: str
    kind: str
    namespace: str
    name: str


class OwnerReference(TypedDict):
    apiVersion: str
    kind: str
    name: str
    uid: str
    controller: bool
    blockOwnerDeletion: bool

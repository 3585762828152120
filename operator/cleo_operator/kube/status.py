"""Status writes that happen only when something changed (a no-op reconcile writes nothing)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cleo_operator.api.objects import KubeObject
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.kinds import Kind


def status_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that turns `current` into `desired` at the top level of status.

    Keys that `desired` no longer has are set to None (deleted by the merge patch); keys
    whose value is unchanged are left out, so an empty result means nothing to write.
    """
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        if current.get(key) != value:
            patch[key] = value
    for key in current:
        if key not in desired:
            patch[key] = None
    return patch


def write_status(
    kube: KubeClient,
    kind: Kind,
    obj: Mapping[str, Any],
    desired: Mapping[str, Any],
    *,
    owned_keys: frozenset[str] | None = None,
) -> KubeObject | None:
    """Patch `obj`'s status to `desired` if it differs; return the new object or None.

    `owned_keys` limits deletions to the keys this operator writes, so that other writers
    of status (Kopf's own bookkeeping) are never removed.
    """
    current = dict(obj.get("status") or {})
    if owned_keys is not None:
        current = {k: v for k, v in current.items() if k in owned_keys}
    patch = status_patch(current, desired)
    if not patch:
        return None
    meta = obj["metadata"]
    return kube.patch_merge(
        kind,
        meta["name"],
        {"status": patch},
        namespace=meta.get("namespace"),
        subresource="status",
    )

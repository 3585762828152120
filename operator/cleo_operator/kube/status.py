"""The one way status is written: read, mutate, diff, write with a precondition, retry.

Why one writer: a status has several writers. The operator's reconcilers, the backup
runner's pods (a CleoBackup's run history), Kopf's own bookkeeping and, now and then, a
person with ``kubectl --subresource=status``. Each writer names the top-level keys it owns
(`owned_keys`); the writer diffs only those, so a key owned by someone else is never
removed or overwritten, whatever the caller's view of status holds.

Why a resourceVersion precondition and a mutation instead of a patch: a merge patch
computed from a stale read applies that stale view (a history list without the entry
another writer just added). Every write carries the ``metadata.resourceVersion`` it was
computed from; on 409 Conflict the object is read again and the mutation runs again on
what is there now, a bounded number of times (then the conflict is raised: it is
transient, the caller's loop retries). A writer whose decision rests on what it read
(a failover step marked Running) says so with `unless_changed`, and gets the 409 back
instead of a re-application when its own keys moved.

Why the diff: a no-op reconcile must write nothing. A mutation whose result equals what
status holds sends no request at all.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, Final

from cleo_operator.api.objects import KubeObject
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import Kind

__all__ = [
    "STATUS_WRITE_ATTEMPTS",
    "StatusChanged",
    "StatusMutation",
    "merge_patch",
    "owned_status",
    "status_body",
    "unless_changed",
    "update_status",
    "write_status",
]

STATUS_WRITE_ATTEMPTS: Final = 8
"""Writes tried (each after a fresh read) before a conflict is raised."""

StatusMutation = Callable[[KubeObject], Mapping[str, Any] | None]
"""From the object as last read to the desired values of the caller's status keys.

An owned key missing from the result is removed; None means there is nothing to write.
It gets a copy, and may run more than once (once per conflict): it must not act.
"""


class StatusChanged(KubeError):
    """Another writer changed the keys a decision rested on: read again, decide again."""


def owned_status(obj: Mapping[str, Any], owned_keys: frozenset[str]) -> dict[str, Any]:
    """The keys of `obj`'s status that `owned_keys` names."""
    status = obj.get("status") or {}
    return {key: value for key, value in status.items() if key in owned_keys}


def merge_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns `current` into `desired`; {} when equal.

    Maps are diffed key by key, so that a key removed from a nested map is removed on the
    server too (a merge patch merges maps); lists and scalars are replaced whole. A None in
    `desired` means "absent".
    """
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        old = current.get(key)
        if value is None:
            if key in current:
                patch[key] = None
        elif isinstance(value, Mapping) and isinstance(old, Mapping):
            nested = merge_patch(old, value)
            if nested:
                patch[key] = nested
        elif key not in current or old != value:
            patch[key] = copy.deepcopy(value)
    for key in current:
        if key not in desired:
            patch[key] = None
    return patch


def status_body(
    obj: KubeObject, mutate: StatusMutation, *, owned_keys: frozenset[str]
) -> dict[str, Any] | None:
    """The request that applies `mutate` to `obj`'s status, or None when nothing changes.

    The body carries `obj`'s resourceVersion, so that it applies to that very version.
    Raises ValueError when the mutation sets a key the caller does not own.
    """
    desired = mutate(copy.deepcopy(obj))
    if desired is None:
        return None
    foreign = sorted(set(desired) - owned_keys)
    if foreign:
        raise ValueError(f"status keys {foreign} are not among the writer's own keys")
    patch = merge_patch(owned_status(obj, owned_keys), desired)
    if not patch:
        return None
    return {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "status": patch}


def update_status(
    kube: KubeClient,
    kind: Kind,
    name: str,
    mutate: StatusMutation,
    *,
    owned_keys: frozenset[str],
    namespace: str | None = None,
    read: KubeObject | None = None,
    attempts: int = STATUS_WRITE_ATTEMPTS,
) -> KubeObject | None:
    """Write what `mutate` makes of the object's status; the object written, or None.

    `read` is the object as just read (else it is read here). On 409 Conflict the object is
    read again and `mutate` runs again, up to `attempts` writes; then the KubeError is
    raised. A missing object raises KubeError (404) too: there is no status to write.
    """
    obj = read
    for attempt in range(1, attempts + 1):
        if obj is None:
            obj = kube.get(kind, name, namespace=namespace)
            if obj is None:
                raise KubeError(
                    status=404,
                    reason="NotFound",
                    message=f"{kind.kind} {name} does not exist",
                    what=f"write status of {kind.kind} {name}",
                )
        body = status_body(obj, mutate, owned_keys=owned_keys)
        if body is None:
            return None
        try:
            return kube.patch_merge(kind, name, body, namespace=namespace, subresource="status")
        except KubeError as exc:
            if not exc.conflict or attempt >= attempts:
                raise
            obj = None  # someone wrote in between: read again, mutate again
    raise ValueError(f"attempts must be at least 1, not {attempts}")


def write_status(
    kube: KubeClient,
    kind: Kind,
    obj: KubeObject,
    desired: Mapping[str, Any],
    *,
    owned_keys: frozenset[str],
) -> KubeObject | None:
    """Set the `owned_keys` of `obj`'s status to `desired`; the object written, or None.

    For a writer whose keys are its alone: the values do not depend on the read, so a
    conflict (Kopf's bookkeeping, another writer's keys) is followed by the same values.
    """
    meta = obj["metadata"]
    return update_status(
        kube,
        kind,
        meta["name"],
        lambda _current: desired,
        owned_keys=owned_keys,
        namespace=meta.get("namespace"),
        read=obj,
    )


def unless_changed(
    base: KubeObject, desired: Mapping[str, Any], *, owned_keys: frozenset[str]
) -> StatusMutation:
    """`desired`, as long as the owned keys still hold what they held in `base`.

    For a writer whose decision rests on the status it read (two drivers of one failover):
    a change of other keys (Kopf's annotations, someone else's status keys) is written
    through; a change of its own raises `StatusChanged` (409), and the caller reads again.
    """
    expected = owned_status(base, owned_keys)
    meta = base["metadata"]
    what = f"write status of {base.get('kind', 'object')} {meta.get('name', '')}"

    def mutate(current: KubeObject) -> Mapping[str, Any]:
        if owned_status(current, owned_keys) != expected:
            raise StatusChanged(
                status=409,
                reason="Conflict",
                message="another writer changed the status this update was decided on",
                what=what,
            )
        return desired

    return mutate

"""Converging one namespaced child of a CleoBackup: the one write rule its objects share.

Why a function of its own: the runner's objects (`reconcile.backup`) and the registry copies
(`reconcile.pull_secrets`) follow the same rule, and a second copy of it would drift. The
rule: an object at the child's name that is not the operator's is deleted first, because a
server-side apply would keep another manager's fields (an extra container, env, a volume, a
Secret's planted key); then the child is applied only when it is missing, stale or drifted
(`kube.apply.needs_apply`), so a no-op reconcile writes nothing; a refusal that a retry
cannot cure is noted for a condition, and a transient one raised for the loop to retry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from cleo_operator.api.objects import KubeObject, ObjectRef, object_ref
from cleo_operator.kube.apply import needs_apply, with_hash
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import kind_of
from cleo_operator.render.meta import MANAGED_BY, MANAGED_BY_LABEL, managed_by_operator

__all__ = ["converge_child"]

log = logging.getLogger(__name__)


def converge_child(
    kube: KubeClient,
    obj: KubeObject,
    *,
    applied: list[ObjectRef],
    deleted: list[ObjectRef],
    failures: list[str],
    ours: Callable[[KubeObject], bool] = managed_by_operator,
    kept: Callable[[KubeObject, KubeObject | None], KubeObject] | None = None,
) -> None:
    """Apply `obj` when it is missing, stale or drifted, after deleting what is at its name
    and not `ours`; note what was done in `applied` and `deleted`, a refusal in `failures`.

    `kept(obj, live)`: what to compare with the live object instead of `obj`, for a field
    whose live value stands until the object is written for another reason (a runner's
    ``TRACEPARENT``); a write sends `obj` itself.

    Raises `KubeError` only when it is transient.
    """
    kind = kind_of(obj)
    meta = obj["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    live = kube.get(kind, name, namespace=namespace)
    if live is not None and not ours(live):
        log.warning(
            "%s %s/%s is not the operator's (no %s=%s label, or not of its kind): deleting "
            "it to make ours",
            kind.kind,
            namespace,
            name,
            MANAGED_BY_LABEL,
            MANAGED_BY,
        )
        if kube.delete(kind, name, namespace=namespace):
            deleted.append(object_ref(live))
        live = None
    stamped = with_hash(obj)
    compared = stamped if kept is None else with_hash(kept(obj, live))
    if not needs_apply(compared, live):
        return
    try:
        kube.apply(stamped)
    except KubeError as exc:
        if exc.transient:
            raise  # the loop retries soon
        failures.append(f"{kind.kind} {name}: {exc.message or exc.reason}")
        # The reason only: the API server's message may quote what was sent (a Secret).
        log.warning("apply %s %s/%s refused: %s", kind.kind, namespace, name, exc.reason)
        return
    applied.append(object_ref(obj))

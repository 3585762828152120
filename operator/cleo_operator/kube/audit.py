"""The audit trail: what the operator did (or refused) that matters to security.

Every security-relevant action (keys created or rotated, a sealed secret not unsealed, a
database role created or its password set or rotated, a restore, a failover, a namespace
refused) goes through `audit`: one Kubernetes Event on the object it is about (when there
is one and a client to post it with) and one log line on the ``cleo_operator.audit`` logger
with ``audit: true``, the ``action`` (the Event's reason), the ``actor`` and the object
(the line's ``object``, as every line written about one). Log pipelines select the trail
with ``audit == true``; ``kubectl get events --field-selector reason=...`` shows it on the
cluster.

The actor is this process's identity (the user name the API server knows it by, set at start
with `set_operator_identity`: the operator's service account, or the user of a ``keys``
command) unless the caller knows who asked (the local user of ``restore``). The message goes
through the one redactor and is clipped; callers never pass secret values, and the redactor
catches what a library might have put into one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final, Literal

from cleo_operator.core.redaction import clip, redact
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.events import post_event
from cleo_operator.observability.logs import logging_object

__all__ = ["AUDIT_LOGGER", "audit", "operator_identity", "set_operator_identity"]

AUDIT_LOGGER: Final = "cleo_operator.audit"
DEFAULT_IDENTITY: Final = "cleo-operator"

log = logging.getLogger(AUDIT_LOGGER)

_identity: list[str] = [DEFAULT_IDENTITY]


def set_operator_identity(identity: str) -> None:
    """Who this process acts as, for the actor of its actions: the operator's service account
    (``system:serviceaccount:NS:NAME``, set by ``run``), or the user of a ``keys`` command."""
    _identity[0] = identity or DEFAULT_IDENTITY


def operator_identity() -> str:
    return _identity[0]


def audit(
    kube: KubeClient | None,
    obj: Mapping[str, Any],
    *,
    action: str,
    message: str,
    actor: str | None = None,
    type: Literal["Normal", "Warning"] = "Normal",
    post: bool = True,
) -> None:
    """Record `action` on `obj` (a Kubernetes object, or ``{"kind", "metadata": {"name",
    "namespace"}}`` for one that has no Event, such as a database a restore wrote into): an
    Event when `kube` is given, `post` is true and `obj` has an ``apiVersion``; always the
    log line. Never raises for the Event (best effort, like every Event)."""
    meta = obj.get("metadata") or {}
    text = clip(redact(message))
    kind, name = str(obj.get("kind") or "?"), str(meta.get("name") or "?")
    with logging_object(kind, name, meta.get("namespace") or None):
        log.log(
            logging.WARNING if type == "Warning" else logging.INFO,
            "%s: %s",
            action,
            text,
            extra={"audit": True, "action": action, "actor": actor or operator_identity()},
        )
    if kube is not None and post and obj.get("apiVersion"):
        post_event(kube, obj, reason=action, message=text, type=type)

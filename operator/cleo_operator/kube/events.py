"""Kubernetes Events for significant actions, posted on the object they are about.

Kopf posts its handlers' warnings and errors as Events; the reconcilers run in worker
threads outside any Kopf handler, so the actions worth telling a person about (a failover
created, a key rotated) are posted here, with the same reporting component.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from typing import Any, Literal

from cleo_operator.core.redaction import clip
from cleo_operator.kube.client import KubeClient, KubeError

log = logging.getLogger(__name__)

COMPONENT = "cleo-operator"


def post_event(
    kube: KubeClient,
    obj: Mapping[str, Any],
    *,
    reason: str,
    message: str,
    type: Literal["Normal", "Warning"] = "Normal",
    now: datetime.datetime | None = None,
) -> bool:
    """Post an Event about `obj`; True when posted. Never raises: an Event is best effort."""
    meta = obj["metadata"]
    # Events of cluster-scoped objects live in `default`, as kubectl describe expects.
    namespace = meta.get("namespace") or "default"
    moment = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "name": meta["name"],
            "namespace": meta.get("namespace", ""),
            "uid": meta.get("uid", ""),
        },
        "reason": reason,
        "message": clip(message),
        "type": type,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": moment,
        "lastTimestamp": moment,
        "count": 1,
    }
    try:
        kube.create(event)
    except KubeError as exc:
        log.warning("could not post the event %s on %s: %s", reason, meta["name"], exc)
        return False
    return True

"""The pure rules of `reconcile.migrations`: what its status says, when to look again,
when to retry, and which objects are the tenant's. No request is made here.

Why apart: the part (`reconcile.migrations`) is long enough with its decisions; these
rules are each small, tested alone, and read the same everywhere they are used.
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Mapping
from typing import Any, Final

import pydantic

from cleo_operator.api.migrations import MigrationAttempt, MigrationsStatus
from cleo_operator.core.times import read_rfc3339
from cleo_operator.render.child import WORKLOAD_NAME
from cleo_operator.render.meta import TENANT_LABEL, labels_of, managed_by_operator

__all__ = [
    "IN_FLIGHT",
    "MAX_REFUSALS",
    "REFUSAL_BACKOFF_MAX_SECONDS",
    "REFUSAL_BACKOFF_MIN_SECONDS",
    "REFUSED",
    "RETRY_ANNOTATION",
    "controlled_by_uid",
    "live_image",
    "new_nonce",
    "ours",
    "poll_seconds",
    "read_status",
    "refusal_backoff",
    "refused",
    "retry_due",
    "retry_problem",
    "retry_request_pending",
    "uid_of",
]

RETRY_ANNOTATION: Final = "cleoai.io/retry-migrations"
POLL_MIN_SECONDS: Final = 2.0
POLL_MAX_SECONDS: Final = 30.0
IN_FLIGHT: Final = frozenset({"Running", "BackingUp", "Creating"})
RETRY_MAX_LENGTH: Final = 253
REFUSED: Final = frozenset({"JobRefused", "BackupRefused"})
"""Failures of a create the API server refused for good: retried with back-off."""
REFUSAL_BACKOFF_MIN_SECONDS: Final = 30.0
REFUSAL_BACKOFF_MAX_SECONDS: Final = 600.0
MAX_REFUSALS: Final = 1000
"""The count of refusals in a row stops here (status's schema bound; the back-off is long
capped by then)."""


def poll_seconds(started: datetime.datetime, now: datetime.datetime) -> float:
    """How soon to look again at a migration in flight that started at `started`: 2 s at
    first (most migrations take seconds), then a tenth of its age, at most 30 s (a
    migration may run for hours, and each look is a whole tenant reconcile)."""
    age = (now - started).total_seconds()
    return min(POLL_MAX_SECONDS, max(POLL_MIN_SECONDS, age / 10))


def read_status(raw: object) -> MigrationsStatus:
    """``status.migrations`` as the operator wrote it; a field that does not read is left
    out (and only it: losing the key or the image would run or roll what was not asked)."""
    if not isinstance(raw, Mapping):
        return MigrationsStatus()
    data = dict(raw)
    for _ in range(len(data) + 1):
        try:
            return MigrationsStatus.model_validate(data)
        except pydantic.ValidationError as exc:
            bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
            if not bad & data.keys():
                break
            data = {k: v for k, v in data.items() if k not in bad}
    return MigrationsStatus()


def retry_problem(value: str | None) -> str | None:
    """Why the retry annotation's `value` cannot be handled (None when it can): it is
    recorded on status, whose schema holds 253 printable characters."""
    if value is None:
        return None
    if len(value) > RETRY_MAX_LENGTH or not value.isprintable() or not value.strip():
        return (
            f"the annotation {RETRY_ANNOTATION} must be 1 to {RETRY_MAX_LENGTH} printable "
            f"characters (it has {len(value)}); no migration runs for it. Set it to a short "
            "new value, such as a counter or a date"
        )
    return None


def retry_request_pending(annotations: Mapping[str, str] | None, status: object) -> bool:
    """Whether the retry annotation holds a value not handled yet (the handler wakes on it)."""
    value = (annotations or {}).get(RETRY_ANNOTATION)
    return value is not None and value != read_status(status).retry_request


def new_nonce() -> str:
    """A fresh attempt's nonce (128 random bits, hex)."""
    return secrets.token_hex(16)


def refusal_backoff(refusals: int) -> float:
    """Seconds before the automatic retry after `refusals` refused creates in a row: 30 s,
    doubling, at most 10 min."""
    exponent = min(max(refusals - 1, 0), 16)
    return min(REFUSAL_BACKOFF_MAX_SECONDS, REFUSAL_BACKOFF_MIN_SECONDS * float(1 << exponent))


def uid_of(obj: Mapping[str, Any] | None) -> str | None:
    """The object's uid, or None."""
    uid = ((obj or {}).get("metadata") or {}).get("uid")
    return str(uid) if uid else None


def ours(obj: Mapping[str, Any], tenant: str) -> bool:
    """Whether `obj` wears the operator's labels for `tenant` (labels only: see
    `controlled_by_uid` for who controls it)."""
    return managed_by_operator(obj) and labels_of(obj).get(TENANT_LABEL) == tenant


def controlled_by_uid(obj: Mapping[str, Any], uid: str | None) -> bool:
    """Whether the object of `uid` is `obj`'s controller (its ownerReference)."""
    return uid is not None and any(
        ref.get("controller") is True and ref.get("uid") == uid
        for ref in (obj.get("metadata") or {}).get("ownerReferences") or []
    )


def live_image(deployment: Mapping[str, Any] | None) -> str | None:
    """The image of the workload container of `deployment`, or None."""
    containers = (
        (((deployment or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    ).get("containers") or []
    for container in containers:
        if container.get("name") == WORKLOAD_NAME and container.get("image"):
            return str(container["image"])
    return None


def refused(attempt: MigrationAttempt | None, key: str) -> bool:
    """Whether `attempt` is of `key` (the spec's), refused by the API server, and to be
    retried (``retryAt``)."""
    return (
        attempt is not None
        and attempt.phase == "Failed"
        and attempt.key == key
        and attempt.reason in REFUSED
        and attempt.retry_at is not None
    )


def retry_due(attempt: MigrationAttempt | None, key: str, now: datetime.datetime) -> bool:
    """Whether the refused `attempt` is to be retried at `now` (its back-off has passed)."""
    if attempt is None or not refused(attempt, key):
        return False
    due = read_rfc3339(attempt.retry_at)
    return due is None or due <= now

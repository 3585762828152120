"""The pure rules of `reconcile.migrations`: what its status says, when to look again,
when to retry (and with which backups), how far to trust a time another leader wrote,
which objects are the tenant's, and what its condition says (`observe`). No request is
made here.

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
from cleo_operator.core.redaction import clip
from cleo_operator.core.times import read_rfc3339, rfc3339
from cleo_operator.reconcile.status import Observation
from cleo_operator.render.child import WORKLOAD_NAME
from cleo_operator.render.meta import TENANT_LABEL, labels_of, managed_by_operator
from cleo_operator.render.migrations import KEY_ANNOTATION

__all__ = [
    "BACKUP_REUSE_MAX_SECONDS",
    "IN_FLIGHT",
    "MAX_REFUSALS",
    "REFUSAL_BACKOFF_MAX_SECONDS",
    "REFUSAL_BACKOFF_MIN_SECONDS",
    "REFUSED",
    "RETRY_ANNOTATION",
    "backups_late",
    "clamped_retry_at",
    "controlled_by_uid",
    "live_image",
    "made_by_operator",
    "new_nonce",
    "observe",
    "ours",
    "poll_seconds",
    "read_status",
    "refusal_backoff",
    "refused",
    "retry_due",
    "retry_problem",
    "retry_request_pending",
    "reusable_backups",
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
BACKUP_REUSE_MAX_SECONDS: Final = 3600.0
"""How old (since the attempt that took them started) the backups of a refused Job may be
and still be the backups of its retry (`reusable_backups`); older ones are taken again."""


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
    """Whether the refused `attempt` is to be retried at `now` (its back-off has passed; an
    unreadable ``retryAt`` has)."""
    if attempt is None or not refused(attempt, key):
        return False
    due = read_rfc3339(clamped_retry_at(attempt.retry_at, now))
    return due is None or due <= now


def clamped_retry_at(retry_at: str | None, now: datetime.datetime) -> str | None:
    """`retry_at` as read, but no later than `now` plus the longest back-off: one written
    under a clock far ahead of this one's (another leader's) would else hold the retry, and
    the requeue, for as long as the clocks differ. The part writes the clamped value back,
    so the back-off then runs on this clock (at most `REFUSAL_BACKOFF_MAX_SECONDS`)."""
    due = read_rfc3339(retry_at)
    latest = now + datetime.timedelta(seconds=REFUSAL_BACKOFF_MAX_SECONDS)
    if due is None or due <= latest:
        return retry_at
    return rfc3339(latest)


def backups_late(
    started: str | None,
    created: datetime.datetime | None,
    now: datetime.datetime,
    deadline_seconds: float,
) -> bool:
    """Whether backups before a migration are past their deadline at `now`.

    The deadline runs from the later of the attempt's ``started`` (the clock of the
    operator that recorded it, maybe another leader's) and `created`, the earliest
    ``creationTimestamp`` of its one-offs (the API server's clock): a clock behind when the
    attempt was recorded only delays the failure, never hastens it. A start after `now`
    (a negative age: clocks apart) is not late. A failure for lateness is not retried
    automatically, so every doubt is "not late"."""
    starts = [t for t in (read_rfc3339(started), created) if t is not None]
    if not starts:
        return False
    return (now - max(starts)).total_seconds() > deadline_seconds


def made_by_operator(job: Mapping[str, Any], *, tenant: str, tenant_uid: str, key: str) -> bool:
    """Whether `job` is a migration Job the operator made for `key`: the operator's labels
    (the admission policy refuses them to everyone else), the key annotation, the tenant
    as its controller (by uid), and not being deleted. Which attempt made it is the nonce's
    to say (`reconcile.migrations`)."""
    meta = job.get("metadata") or {}
    return (
        ours(job, tenant)
        and (meta.get("annotations") or {}).get(KEY_ANNOTATION) == key
        and controlled_by_uid(job, tenant_uid)
        and not meta.get("deletionTimestamp")
    )


def reusable_backups(
    attempt: MigrationAttempt | None, key: str, now: datetime.datetime
) -> list[str] | None:
    """The one-offs of a refused `attempt` of `key` that its retry may take as its own
    (None: take new ones): its Job was refused (``JobRefused``) after every one-off was
    made and had succeeded (the Job is created only then), and the attempt started at most
    `BACKUP_REUSE_MAX_SECONDS` ago. A policy that refuses the Job for ever then costs one
    full backup an hour, not one each retry. The caller checks that they are still there,
    by uid, and succeeded."""
    if (
        attempt is None
        or not refused(attempt, key)
        or attempt.reason != "JobRefused"
        or not attempt.backups
        or any(not item.partition("/")[2] for item in attempt.backups)
    ):
        return None
    started = read_rfc3339(attempt.started)
    if started is None or (now - started).total_seconds() > BACKUP_REUSE_MAX_SECONDS:
        return None
    return list(attempt.backups)


def observe(
    state: MigrationsStatus,
    key: str,
    spec_image: str,
    *,
    serving_image: str | None,
    waiting: str | None,
    retry_problem: str | None,
) -> Observation:
    """The ``MigrationsSucceeded`` condition: of `state` (as this round leaves it) for the
    spec's `key` and image, while the Deployment keeps `serving_image`; `waiting` says why
    a wanted migration has not started, `retry_problem` why the retry annotation is
    refused. A migrated image without a digest says that the Deployment is pinned to the
    tag only (a tag can be pushed again)."""
    attempt = state.attempt
    keeps = (
        f"; the Deployment keeps image {serving_image}"
        if serving_image and serving_image != spec_image
        else ""
    )
    if attempt is not None and attempt.phase == "Running":
        return Observation(
            "Unknown",
            "Running",
            f"migration Job {attempt.job_name} runs for image {attempt.image}{keeps}"
            + (f"; then: {waiting}" if waiting else ""),
        )
    if attempt is not None and attempt.phase == "Creating":
        return Observation(
            "Unknown",
            "Running",
            f"migration Job {attempt.job_name} for image {attempt.image}{keeps}: {waiting}"
            if waiting
            else f"migration Job {attempt.job_name} is being made for image {attempt.image}{keeps}",
        )
    if attempt is not None and attempt.phase == "BackingUp":
        return Observation(
            "Unknown",
            "BackingUp",
            f"{waiting or 'backing up before the migration'} (image {attempt.image}){keeps}",
        )
    if attempt is not None and refused(attempt, key):
        return Observation(
            "False",
            attempt.reason or "JobRefused",
            clip(
                f"{attempt.message or 'the API server refused a create'}{keeps}. Retried "
                f"automatically at {attempt.retry_at} (refusal {attempt.refusals} in a "
                f"row; back-off {REFUSAL_BACKOFF_MIN_SECONDS:.0f} s doubling to "
                f"{REFUSAL_BACKOFF_MAX_SECONDS:.0f} s), or at once with a new value of "
                f"the annotation {RETRY_ANNOTATION}"
            ),
        )
    if attempt is not None and attempt.phase == "Failed" and attempt.key == key:
        return Observation(
            "False",
            attempt.reason or "MigrationFailed",
            clip(
                f"{attempt.message or 'the migration failed'}{keeps}. Fix the spec, or "
                f"set the annotation {RETRY_ANNOTATION} to a new value to run it again"
            ),
        )
    if retry_problem is not None:
        return Observation("False", "InvalidRetryRequest", f"{retry_problem}{keeps}")
    if waiting is not None:
        return Observation("Unknown", "Pending", f"{waiting}{keeps}")
    if state.key == key:
        pin = (
            ""
            if "@" in (state.image or "")
            else "; the Deployment is pinned to the tag (digest not reported)"
        )
        return Observation(
            "True",
            "Migrated",
            f"image {state.image} is migrated{pin}; schema revision "
            f"{state.revision or 'not reported'}",
        )
    return Observation("Unknown", "Pending", f"the migration of {spec_image} waits{keeps}")

"""One-off backups asked for with ``spec.from``: which CleoBackup they run, and when they go.

Why this exists: tenant admins may create a CleoBackup ``{tenant, from}`` (the admission
policy allows them nothing else), meaning "run that backup once, now". Everything that
aims the runner (destination, credentials Secret, egress ranges, verification against the
platform's database, retention) must then come from a CleoBackup the platform set up for
the same tenant, never from what the tenant wrote. `source_spec` is that check; it runs in
the operator before anything is rendered, and again in the runner pod (the source may have
changed between the two). `effective_spec` is the spec both then use, so the path from a
spec to a runner keeps one shape: a ``from`` spec is resolved, then rendered as any other.

The checks, each with its own condition reason:

- the source exists in the one-off's namespace (``SourceNotFound``; a name is all a spec
  can give, so another namespace cannot be named);
- it is valid (``SourceInvalid``), for the same tenant (``SourceMismatch``), and not a
  one-off of its own (``SourceIsOneOff``: no chains, whose resolution could loop);
- it is neither being deleted (``SourceDeleting``) nor suspended (``SourceSuspended``):
  a platform that stopped a backup's runs has stopped its one-offs too.

One-offs made with ``from`` are removed by the operator `ONE_OFF_TTL_SECONDS` after their
run ended (or after their creation, if they never ran and no Job of theirs is active), and
`ONE_OFF_MAX_AGE_SECONDS` after their creation at the latest (their Job has a deadline too),
so that the namespace's quota of CleoBackups bounds how often a tenant can ask. Their archives
stay: the source's retention governs them as it governs the source's own.
"""

from __future__ import annotations

import datetime
from typing import Final

from cleo_operator.api.backup import CleoBackupSpec, CleoBackupStatus, parse_backup_spec
from cleo_operator.api.errors import SpecError
from cleo_operator.api.objects import KubeObject
from cleo_operator.core.errors import CleoError
from cleo_operator.core.times import read_rfc3339

__all__ = [
    "ONE_OFF_MAX_AGE_SECONDS",
    "ONE_OFF_TTL_SECONDS",
    "SourceError",
    "effective_spec",
    "one_off_expiry",
    "resolve",
    "source_spec",
]

ONE_OFF_TTL_SECONDS: Final = 24 * 3600.0
"""How long a finished ``from`` one-off is kept (the default of the operator's setting)."""
ONE_OFF_MAX_AGE_SECONDS: Final = 2 * 24 * 3600.0
"""How long a ``from`` one-off may live at most, whatever its Job does (the default of the
operator's setting): longer than its Job's deadline plus the TTL."""


class SourceError(CleoError):
    """The CleoBackup that ``spec.from`` names cannot be run for this one; `reason` says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def source_spec(
    spec: CleoBackupSpec, source: KubeObject | None, *, namespace: str
) -> CleoBackupSpec:
    """The spec of `source`, the CleoBackup `spec.from_backup` names (fetched from
    `namespace`, None if absent), once it is checked to be one this spec may run."""
    name = spec.from_backup
    if name is None:
        raise ValueError("source_spec is for a spec with spec.from")
    where = f"CleoBackup {namespace}/{name}"
    if source is None:
        raise SourceError(
            "SourceNotFound",
            f"spec.from: {where} does not exist; name a CleoBackup of this namespace (see "
            "kubectl get cleobackups)",
        )
    if (source.get("metadata") or {}).get("deletionTimestamp"):
        raise SourceError(
            "SourceDeleting",
            f"spec.from: {where} is being deleted; it cannot be run any more",
        )
    try:
        resolved = parse_backup_spec(source.get("spec") or {})
    except SpecError:
        raise SourceError(
            "SourceInvalid",
            f"spec.from: {where} has an invalid spec (see its Ready condition); it cannot run",
        ) from None
    if resolved.tenant != spec.tenant:
        raise SourceError(
            "SourceMismatch",
            f"spec.from: {where} backs up tenant {resolved.tenant}, not {spec.tenant} "
            "(spec.tenant); name a CleoBackup of this tenant",
        )
    if resolved.from_backup is not None or resolved.destination is None:
        raise SourceError(
            "SourceIsOneOff",
            f"spec.from: {where} is itself a one-off made with spec.from; name the CleoBackup "
            f"it runs ({resolved.from_backup}) instead",
        )
    if resolved.suspend:
        raise SourceError(
            "SourceSuspended",
            f"spec.from: {where} is suspended (its spec.suspend is true): the platform "
            "stopped its runs, one-offs included; ask the platform team",
        )
    return resolved


def effective_spec(spec: CleoBackupSpec, source: CleoBackupSpec) -> CleoBackupSpec:
    """What a ``from`` one-off runs: the source's destination, retention, verification and
    resources (unless the one-off sets its own), once, without a schedule."""
    return CleoBackupSpec(
        tenant=spec.tenant,
        destination=source.destination,
        retention=source.retention,
        verification=source.verification,
        resources=spec.resources if spec.resources is not None else source.resources,
        history_limit=spec.history_limit,
    )


def resolve(spec: CleoBackupSpec, source: KubeObject | None, *, namespace: str) -> CleoBackupSpec:
    """`spec` itself without ``from``; else its `effective_spec` (raises `SourceError`)."""
    if spec.from_backup is None:
        return spec
    return effective_spec(spec, source_spec(spec, source, namespace=namespace))


def one_off_expiry(
    *,
    created: datetime.datetime | None,
    status: CleoBackupStatus,
    active: bool,
    ttl_seconds: float,
    max_age_seconds: float | None = None,
) -> datetime.datetime | None:
    """When a ``from`` one-off may be removed: `ttl_seconds` after its newest run ended, or
    after its creation when no run has ended; None while a Job of it runs (or, without a
    creation time, before a run ended). Never later than `max_age_seconds` after its
    creation, a Job still running or not: a tenant that keeps its pod from ending (or from
    starting) cannot keep the one-off, and its slot of the quota, for good."""
    cap = (
        created + datetime.timedelta(seconds=max_age_seconds)
        if created is not None and max_age_seconds is not None
        else None
    )
    if active:
        return cap
    ends = [t for run in status.history if (t := read_rfc3339(run.end_time)) is not None]
    since = max(ends) if ends else created
    if since is None:
        return cap
    expiry = since + datetime.timedelta(seconds=ttl_seconds)
    return expiry if cap is None else min(expiry, cap)

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
stay, outside the source's keep rules: a one-off's run prunes nothing, and the source's runs
keep the newest few one-off archives (`cleo_operator.backup.retention`), so that asking for
one-offs can never cost a scheduled archive.

The line of one-offs of a source (`turn`, `excess`): what one tenant admin asks for must
neither load the shared PostgreSQL nor take the quota the platform's own CleoBackups need.
So one ``from`` one-off per source runs at a time, in the order they were created, and
none while the source's own Job runs when its ``concurrencyPolicy`` is Forbid (the others
are Pending, with the reason on their Ready condition). A source keeps at most
`MAX_UNFINISHED_ONE_OFFS` one-offs that have not finished (the newer ones that have not
started are removed, with an Event) and `MAX_FINISHED_ONE_OFFS` finished ones (older ones
go before their time is up; their archives stay): a tenant filling its quota with one-offs
gets them removed within a reconcile, and the final backup makes room for itself
(`cleo_operator.reconcile.one_offs`).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from cleo_operator.api.backup import CleoBackupSpec, CleoBackupStatus, parse_backup_spec
from cleo_operator.api.errors import SpecError
from cleo_operator.api.objects import KubeObject
from cleo_operator.core.errors import CleoError
from cleo_operator.core.times import read_rfc3339

__all__ = [
    "MAX_FINISHED_ONE_OFFS",
    "MAX_UNFINISHED_ONE_OFFS",
    "ONE_OFF_MAX_AGE_SECONDS",
    "ONE_OFF_TTL_SECONDS",
    "PLATFORM_LABEL",
    "OneOff",
    "OneOffPhase",
    "SourceError",
    "Wait",
    "effective_spec",
    "excess",
    "one_off_expiry",
    "resolve",
    "source_spec",
    "turn",
]

ONE_OFF_TTL_SECONDS: Final = 24 * 3600.0
"""How long a finished ``from`` one-off is kept (the default of the operator's setting)."""
ONE_OFF_MAX_AGE_SECONDS: Final = 2 * 24 * 3600.0
"""How long a ``from`` one-off may live at most, whatever its Job does (the default of the
operator's setting): longer than its Job's deadline plus the TTL."""

PLATFORM_LABEL: Final = "cleoai.io/requested-by"
"""A one-off the platform asked for carries it with the value ``platform``; the admission
policy refuses it to tenants (setting it, or deleting what carries it)."""

MAX_UNFINISHED_ONE_OFFS: Final = 3
"""One-offs of one source that may wait or run; newer ones that have not started go."""

MAX_FINISHED_ONE_OFFS: Final = 3
"""Finished one-offs of one source that are kept (until their time is up); older ones go."""

OneOffPhase = Literal["unstarted", "running", "finished"]


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


@dataclass(frozen=True)
class OneOff:
    """One ``from`` one-off of a source, as the line sees it."""

    name: str
    created: str
    """Its creationTimestamp (RFC 3339, whole seconds): the line's order, then the name."""
    phase: OneOffPhase
    """``unstarted`` (no Job, no run), ``running`` (its Job is active), or ``finished``."""
    platform: bool = False
    """Asked for by the platform (`PLATFORM_LABEL`): never removed for tenants' one-offs,
    and ahead of them in the line."""

    @property
    def order(self) -> tuple[bool, str, str]:
        return (not self.platform, self.created, self.name)


@dataclass(frozen=True)
class Wait:
    """Why a one-off does not start now: its Ready condition's reason and message."""

    reason: str
    message: str


def turn(
    name: str, line: Sequence[OneOff], *, source: str, source_running: bool, forbid: bool
) -> Wait | None:
    """Whether one-off `name` of `source` may start its Job now (None) or waits (why).

    `line` holds the source's one-offs (`name` among them); `source_running` says whether
    the source's own Job runs, `forbid` whether its concurrencyPolicy is Forbid. Only the
    oldest one-off that has not started may start, so two reconciles that see the same line
    never both start one.
    """
    if forbid and source_running:
        return Wait(
            "WaitingForSource",
            f"CleoBackup {source} is running its own backup and its concurrencyPolicy is "
            "Forbid; this one-off starts when it ends",
        )
    running = sorted(o.name for o in line if o.phase == "running" and o.name != name)
    if running:
        return Wait(
            "WaitingForOneOff",
            f"one-off {running[0]} of CleoBackup {source} is running; one-offs of a "
            "CleoBackup run one at a time, this one starts after it",
        )
    waiting = sorted((o for o in line if o.phase == "unstarted"), key=lambda o: o.order)
    mine = next((o for o in waiting if o.name == name), None)
    ahead = [o.name for o in waiting if mine is not None and o.order < mine.order]
    if ahead:
        return Wait(
            "WaitingInLine",
            f"{len(ahead)} older one-off(s) of CleoBackup {source} ({', '.join(ahead)}) "
            "run first; one-offs of a CleoBackup run one at a time, oldest first",
        )
    return None


def excess(line: Sequence[OneOff]) -> list[tuple[str, str]]:
    """The one-offs of a source to remove now, each with the reason (see the module doc).

    Unfinished beyond `MAX_UNFINISHED_ONE_OFFS`: the newest that have not started (a
    running one is never removed). Finished beyond `MAX_FINISHED_ONE_OFFS`: the oldest.
    """
    doomed: list[tuple[str, str]] = []
    # A running one-off is never removed, nor one the platform asked for (the policy
    # refuses tenants its deletion: the operator must not do it for them), so they take
    # their places in the cap first.
    room = MAX_UNFINISHED_ONE_OFFS - sum(
        1 for o in line if o.phase == "running" or (o.platform and o.phase == "unstarted")
    )
    waiting = sorted(
        (o for o in line if o.phase == "unstarted" and not o.platform), key=lambda o: o.order
    )
    for one_off in waiting[max(room, 0) :]:
        doomed.append(
            (
                one_off.name,
                f"at most {MAX_UNFINISHED_ONE_OFFS} one-offs of a CleoBackup may wait or "
                "run; this newer one was removed before it started",
            )
        )
    finished = sorted(
        (o for o in line if o.phase == "finished" and not o.platform),
        key=lambda o: o.order,
        reverse=True,
    )
    for one_off in finished[MAX_FINISHED_ONE_OFFS:]:
        doomed.append(
            (
                one_off.name,
                f"at most {MAX_FINISHED_ONE_OFFS} finished one-offs of a CleoBackup are kept; "
                "this older one was removed (its archive stays)",
            )
        )
    return doomed

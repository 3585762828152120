"""Migrations gate the rollout: a tenant part that runs the migration Job, then lets the
Deployment roll to the image it migrated.

What it promises, and how:

- **The Deployment runs only migrated images.** The migration's key (`render.migrations`:
  image, command, args) last migrated successfully is on status (``status.migrations``,
  which tenants cannot write). Until a migration of the spec's key succeeded, the part tells
  the tenant reconcile to keep the Deployment at the image last migrated, or, when nothing
  was ever migrated, at the live Deployment's image. A tenant with migrations whose first
  migration has not succeeded gets **no Deployment at all**, rather than one at 0
  replicas: a Deployment at 0 would already hold the unmigrated image (one scale-up from
  running it, and an HPA scales it), and its status (0 of 0 available) would make the
  workload look Available; without one, ``WorkloadAvailable`` is False with reason
  ``WaitingForMigrations``, which is the truth.
- **One migration at a time.** A newer spec waits until the Job in flight has ended (a
  migration stopped half-way is worse than one that finishes and is followed by the
  next). Before a new Job, every Job of an earlier migration (the failed one kept for
  inspection included) is deleted with foreground propagation, and the new one is created
  only once they and their pods are gone.
- **Ownership by uid.** A Job is the migration's only if its uid is the one recorded on
  status when the operator created it. A Job at that name with another uid (planted, or
  made anew by someone after the operator's was deleted) is never read: it is deleted, and
  the attempt it replaced has failed (``JobLost``). The Job's outcome is its own status
  (which only the Job controller writes); its selector holds labels that only the operator
  and the controllers may put on pods (`render.migrations`), and the revision and the last
  lines are read only from pods that the Job controls by uid and that wear those labels.
- **Failure.** The old pods keep serving. ``MigrationsSucceeded`` is False with the Job's
  reason (``BackoffLimitExceeded``, ``DeadlineExceeded``...) and the redacted last lines of
  its log (`reconcile.migration_outcome`). It is not run again until the spec changes (a
  new key) or the annotation ``cleoai.io/retry-migrations`` gets a value not handled before
  (the value handled is recorded: ``status.migrations.retryRequest``). A new value asks for a
  run of the spec's migration whatever came before, a successful one included.
- **Ready, by the Kubernetes conventions.** Ready says whether the tenant serves, as a
  Deployment stays Available while a rollout of it fails. So a failed migration with the
  old pods serving leaves Ready True, and says so on ``MigrationsSucceeded=False``, which
  does not gate Ready then; with no pods yet (the first migration), it gates Ready, whose
  reason is then the migration's.
- **Backups first** (``backupFirst``): see `reconcile.migration_backups`.

Finished Jobs are cleaned: a succeeded one once its success is on status (deleting it
before could lose the record of its success), a failed one at the next attempt.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any, Final

import pydantic

from cleo_operator.api.migrations import MigrationAttempt, MigrationsStatus
from cleo_operator.api.objects import KubeObject
from cleo_operator.api.tenant import WorkloadSpec
from cleo_operator.core.redaction import clip
from cleo_operator.core.times import rfc3339
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import DEPLOYMENT, JOB, POD, SECRET
from cleo_operator.reconcile.backup_jobs import job_failure, job_state
from cleo_operator.reconcile.database_secret import CREDENTIALS_SECRET
from cleo_operator.reconcile.migration_backups import MigrationBackups, NoSource
from cleo_operator.reconcile.migration_outcome import last_lines, pod_report, revision_from_message
from cleo_operator.reconcile.status import Observation
from cleo_operator.reconcile.tenant_parts import PartResult, TenantContext, TenantEvent
from cleo_operator.render.child import WORKLOAD_NAME
from cleo_operator.render.meta import MANAGED_BY, MANAGED_BY_LABEL, TENANT_LABEL
from cleo_operator.render.migrations import (
    MIGRATION_LABEL,
    migration_key,
    migration_pod_labels,
    render_migration_job,
)

__all__ = [
    "CONDITION",
    "RETRY_ANNOTATION",
    "MigrationSettings",
    "MigrationsPart",
    "retry_request_pending",
]

log = logging.getLogger(__name__)

CONDITION: Final = "MigrationsSucceeded"
RETRY_ANNOTATION: Final = "cleoai.io/retry-migrations"
IN_FLIGHT: Final = frozenset({"Running", "BackingUp"})


@dataclasses.dataclass(frozen=True)
class MigrationSettings:
    """How migrations run; defaults suit production."""

    database_secret: str = CREDENTIALS_SECRET
    """The credentials Secret the Job reads (the database part's)."""
    requeue_seconds: float = 2.0
    """Look again this soon while a migration or its backups run (Jobs are not watched)."""


def read_status(raw: object) -> MigrationsStatus:
    """``status.migrations`` as the operator wrote it; an unreadable one is empty."""
    if not isinstance(raw, Mapping):
        return MigrationsStatus()
    try:
        return MigrationsStatus.model_validate(raw)
    except pydantic.ValidationError:
        return MigrationsStatus()


def retry_request_pending(annotations: Mapping[str, str] | None, status: object) -> bool:
    """Whether the retry annotation holds a value not handled yet (the handler wakes on it)."""
    value = (annotations or {}).get(RETRY_ANNOTATION)
    return value is not None and value != read_status(status).retry_request


def _uid(obj: Mapping[str, Any] | None) -> str | None:
    uid = ((obj or {}).get("metadata") or {}).get("uid")
    return str(uid) if uid else None


def _ours(obj: Mapping[str, Any], tenant: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(MANAGED_BY_LABEL) == MANAGED_BY and labels.get(TENANT_LABEL) == tenant


def _live_image(deployment: Mapping[str, Any] | None) -> str | None:
    containers = (
        (((deployment or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    ).get("containers") or []
    for container in containers:
        if container.get("name") == WORKLOAD_NAME and container.get("image"):
            return str(container["image"])
    return None


@dataclasses.dataclass
class _Round:
    """One reconcile's view and decisions (mutable while the part works)."""

    ctx: TenantContext
    workload: WorkloadSpec
    key: str
    state: MigrationsStatus
    jobs: dict[str, KubeObject]
    result: PartResult = dataclasses.field(default_factory=PartResult)
    waiting: str | None = None
    """Why a wanted migration has not started yet (it starts on a later round)."""

    @property
    def attempt(self) -> MigrationAttempt | None:
        return self.state.attempt

    def set_attempt(self, attempt: MigrationAttempt | None, **changes: Any) -> None:
        self.state = self.state.model_copy(update={"attempt": attempt, **changes})

    @property
    def now(self) -> str:
        return rfc3339(self.ctx.now)

    def event(self, reason: str, message: str, type_: str = "Normal") -> None:
        self.result.events.append(
            TenantEvent(reason, clip(message), "Warning" if type_ == "Warning" else "Normal")
        )


class MigrationsPart:
    """The `TenantPart` of ``spec.workload.migrations`` (thread-safe: no state of its own)."""

    def __init__(self, kube: KubeClient, *, settings: MigrationSettings | None = None) -> None:
        self.kube = kube
        self.settings = settings or MigrationSettings()
        self.backups = MigrationBackups(kube)

    # -- the part's contract -----------------------------------------------------------

    def reconcile(self, ctx: TenantContext) -> PartResult:
        workload = ctx.spec.workload
        if workload is None or workload.migrations is None:
            if ctx.status.get("migrations"):
                # Switched off: nothing may run on (its status goes with this round).
                self._remove_jobs(ctx)
            return PartResult(remove_conditions={CONDITION})
        round_ = _Round(
            ctx=ctx,
            workload=workload,
            key=migration_key(workload),
            state=read_status(ctx.status.get("migrations")),
            jobs=self._jobs(ctx),
        )
        self._settle(round_)
        self._clean_finished(round_)
        self._maybe_start(round_)
        return self._report(round_)

    def finalize(self, ctx: TenantContext, *, delete: bool) -> bool:
        """Nothing of its own to keep or drop: the Jobs are the tenant's (owner reference)
        and go with the namespace or the tenant; one-off backups follow their own rules."""
        del ctx, delete
        return True

    # -- what is in flight -------------------------------------------------------------

    def _jobs(self, ctx: TenantContext) -> dict[str, KubeObject]:
        jobs = self.kube.list(JOB, namespace=ctx.namespace, label_selector=MIGRATION_LABEL)
        return {str(j["metadata"]["name"]): j for j in jobs}

    def _settle(self, r: _Round) -> None:
        """Bring a migration in flight one step on: its Job's end, its backups' outcome."""
        attempt = r.attempt
        if attempt is None:
            return
        if attempt.phase == "BackingUp":
            self._settle_backups(r, attempt)
        elif attempt.phase == "Running":
            self._settle_job(r, attempt)

    def _settle_backups(self, r: _Round, attempt: MigrationAttempt) -> None:
        if attempt.key != r.key:
            # The spec moved on before anything ran: nothing to wait for (the one-offs
            # finish by themselves). The new key starts afresh, with backups of its own.
            r.set_attempt(None)
            return
        outcome = self.backups.outcome(r.ctx.namespace, attempt.backups)
        if outcome.state == "failed":
            self._fail(r, attempt, "BackupFailed", outcome.message)
        elif outcome.state == "succeeded":
            self._create_job(r, attempt)  # a Job at its name: the backups wait, taken
        else:
            r.waiting = outcome.message

    def _settle_job(self, r: _Round, attempt: MigrationAttempt) -> None:
        name = attempt.job_name or ""
        job = (
            (r.jobs.get(name) or self.kube.get(JOB, name, namespace=r.ctx.namespace))
            if name
            else None
        )
        if job is None or _uid(job) != attempt.job_uid:
            if job is not None:
                self._delete(job, r.ctx.namespace)
            self._fail(
                r,
                attempt,
                "JobLost",
                f"the migration Job {name} was deleted or replaced before it finished; its "
                "outcome is unknown",
            )
            return
        state = job_state(job)
        if state == "active":
            return
        report = pod_report(
            self.kube.list(POD, namespace=r.ctx.namespace, label_selector=MIGRATION_LABEL),
            job,
            labels=migration_pod_labels(r.ctx.name, attempt.key),
        )
        if state == "succeeded":
            revision = revision_from_message(report.message) if report else None
            done = attempt.model_copy(update={"phase": "Succeeded", "finished": r.now})
            r.set_attempt(
                done, key=attempt.key, image=attempt.image, revision=revision, last_succeeded=r.now
            )
            r.event(
                "MigrationSucceeded",
                f"migration Job {name} succeeded for image {attempt.image}; schema revision "
                f"{revision or 'not reported'}",
            )
            log.info("tenant %s: migration %s succeeded", r.ctx.name, name)
            return
        reason, message = job_failure(job)
        detail = f"migration Job {name} (image {attempt.image}) failed: {message}"
        if report is not None and report.exit_code is not None:
            detail += f"; exit code {report.exit_code}"
        if report is not None and report.message.strip():
            detail += f"; last lines: {last_lines(report.message)}"
        self._fail(r, attempt, reason, detail)

    def _fail(self, r: _Round, attempt: MigrationAttempt, reason: str, message: str) -> None:
        failed = attempt.model_copy(
            update={
                "phase": "Failed",
                "finished": r.now,
                "reason": reason,
                "message": clip(message),
            }
        )
        r.set_attempt(failed)
        r.event("MigrationFailed", f"{reason}: {message}", "Warning")
        log.warning("tenant %s: migration failed: %s", r.ctx.name, reason)

    # -- cleaning ----------------------------------------------------------------------

    def _clean_finished(self, r: _Round) -> None:
        """Delete a succeeded Job whose success is on status already (read this round)."""
        recorded = read_status(r.ctx.status.get("migrations")).attempt
        if recorded is None or recorded.phase != "Succeeded" or not recorded.job_name:
            return
        job = r.jobs.get(recorded.job_name)
        if job is not None and _uid(job) == recorded.job_uid:
            self._delete(job, r.ctx.namespace, propagation="Background")

    def _remove_jobs(self, ctx: TenantContext) -> bool:
        """Delete every migration Job of the tenant, foreground; True when none (and none
        of their pods) is left."""
        left = False
        for job in self._jobs(ctx).values():
            if not _ours(job, ctx.name):
                continue
            left = True
            if not job["metadata"].get("deletionTimestamp"):
                self._delete(job, ctx.namespace)
        if left:
            return False
        pods = self.kube.list(POD, namespace=ctx.namespace, label_selector=MIGRATION_LABEL)
        return not any(
            (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            and _ours(p, ctx.name)
            for p in pods
        )

    def _delete(self, job: KubeObject, namespace: str, propagation: str = "Foreground") -> None:
        try:
            self.kube.delete(
                JOB,
                str(job["metadata"]["name"]),
                namespace=namespace,
                propagation=propagation,
                preconditions={"uid": str(job["metadata"]["uid"])},
            )
        except KubeError as exc:
            if exc.status != 409:  # 409: another object at that name by now
                raise

    # -- starting ----------------------------------------------------------------------

    def _wanted(self, r: _Round) -> bool:
        attempt = r.attempt
        if attempt is not None and attempt.phase in IN_FLIGHT:
            return False
        retry = r.ctx.annotations.get(RETRY_ANNOTATION)
        if retry is not None and retry != r.state.retry_request:
            return True
        if r.state.key == r.key:
            return False
        # A failed attempt of this very key waits for a new spec or a retry request.
        return not (attempt is not None and attempt.key == r.key and attempt.phase == "Failed")

    def _maybe_start(self, r: _Round) -> None:
        if not self._wanted(r):
            if r.attempt is not None and r.attempt.phase in IN_FLIGHT and r.attempt.key != r.key:
                r.waiting = (
                    f"the migration of image {r.attempt.image} runs; the migration of "
                    f"{r.workload.image} starts when it ends (one migration at a time)"
                )
            return
        namespace = r.ctx.namespace
        if self.kube.get(SECRET, self.settings.database_secret, namespace=namespace) is None:
            r.waiting = (
                f"waiting for the database credentials Secret {self.settings.database_secret}"
            )
            return
        if not self._remove_jobs(r.ctx):
            r.waiting = "waiting for the previous migration Job and its pods to be gone"
            return
        retry = r.ctx.annotations.get(RETRY_ANNOTATION)
        before = r.state
        attempt = MigrationAttempt(
            key=r.key, image=r.workload.image, phase="BackingUp", started=r.now
        )
        changes: dict[str, Any] = {}
        if retry is not None:
            changes["retry_request"] = retry
        r.set_attempt(attempt, **changes)
        migrations = r.workload.migrations
        assert migrations is not None
        if migrations.backup_first:
            try:
                sources = self.backups.sources(namespace, r.ctx.name)
            except NoSource as exc:
                self._fail(r, attempt, exc.reason, exc.message)
                return
            taken = self.backups.take(
                namespace=namespace, tenant=r.ctx.name, key=r.key, sources=sources, now=r.ctx.now
            )
            r.set_attempt(attempt.model_copy(update={"backups": taken}))
            r.result.record_now = True
            r.event(
                "MigrationBackupStarted",
                "backing up before the migration: " + ", ".join(t.split("/")[0] for t in taken),
            )
            return
        if not self._create_job(r, attempt):
            r.state = before  # nothing started: the same request is handled next round

    def _create_job(self, r: _Round, attempt: MigrationAttempt) -> bool:
        """Create the Job of `attempt` and record it; False when a Job stood at its name."""
        body = render_migration_job(
            tenant=r.ctx.name,
            namespace=r.ctx.namespace,
            owner=r.ctx.owner,
            spec=r.ctx.spec,
            database_secret=self.settings.database_secret,
        )
        try:
            created = self.kube.create(body)
        except KubeError as exc:
            if not exc.conflict:
                raise
            # Something stands at the name (a crash left ours unrecorded, or it was
            # planted): never taken as ours. Removed next round, then made anew.
            existing = self.kube.get(JOB, body["metadata"]["name"], namespace=r.ctx.namespace)
            if existing is not None:
                self._delete(existing, r.ctx.namespace)
            r.waiting = f"removing a Job that stood at {body['metadata']['name']}"
            return False
        running = attempt.model_copy(
            update={
                "phase": "Running",
                "job_name": created["metadata"]["name"],
                "job_uid": created["metadata"]["uid"],
                "started": attempt.started or r.now,
            }
        )
        r.set_attempt(running)
        r.result.record_now = True
        r.event(
            "MigrationStarted",
            f"migration Job {created['metadata']['name']} started for image {attempt.image}",
        )
        return True

    # -- what the tenant reconcile gets ------------------------------------------------

    def _report(self, r: _Round) -> PartResult:
        result = r.result
        result.status = {"migrations": r.state.model_dump(by_alias=True, exclude_none=True)}
        image = r.state.image if r.state.key is not None else None
        if image is None:
            image = _live_image(self.kube.get(DEPLOYMENT, WORKLOAD_NAME, namespace=r.ctx.namespace))
        observation = self._observe(r, serving_image=image)
        if image is None:
            result.hold_workload = True
            result.hold_reason = (
                "the CleoAI Deployment is created once the first migration succeeded: "
                f"{observation.message}"
            )
            result.conditions[CONDITION] = observation
        else:
            result.workload_image = image
            result.informational[CONDITION] = observation
        attempt = r.attempt
        if r.waiting is not None or (attempt is not None and attempt.phase in IN_FLIGHT):
            result.requeue_after = self.settings.requeue_seconds
        return result

    def _observe(self, r: _Round, *, serving_image: str | None) -> Observation:
        attempt = r.attempt
        keeps = (
            f"; the Deployment keeps image {serving_image}"
            if serving_image and serving_image != r.workload.image
            else ""
        )
        if attempt is not None and attempt.phase == "Running":
            return Observation(
                "Unknown",
                "Running",
                f"migration Job {attempt.job_name} runs for image {attempt.image}{keeps}"
                + (f"; then: {r.waiting}" if r.waiting else ""),
            )
        if attempt is not None and attempt.phase == "BackingUp":
            return Observation(
                "Unknown",
                "BackingUp",
                f"{r.waiting or 'backing up before the migration'} (image {attempt.image}){keeps}",
            )
        if attempt is not None and attempt.phase == "Failed" and attempt.key == r.key:
            return Observation(
                "False",
                attempt.reason or "MigrationFailed",
                clip(
                    f"{attempt.message or 'the migration failed'}{keeps}. Fix the spec, or "
                    f"set the annotation {RETRY_ANNOTATION} to a new value to run it again"
                ),
            )
        if r.waiting is not None:
            return Observation("Unknown", "Pending", f"{r.waiting}{keeps}")
        if r.state.key == r.key:
            return Observation(
                "True",
                "Migrated",
                f"image {r.state.image} is migrated; schema revision "
                f"{r.state.revision or 'not reported'}",
            )
        return Observation(
            "Unknown", "Pending", f"the migration of {r.workload.image} waits{keeps}"
        )

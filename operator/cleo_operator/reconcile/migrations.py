"""Migrations gate the rollout: a tenant part that runs the migration Job, then lets the
Deployment roll to the image it migrated.

What it promises, and how:

- **The Deployment runs only migrated images.** The migration's key (`render.migrations`:
  image, command, args) last migrated successfully is on status (``status.migrations``,
  which tenants cannot write). Until a migration of the spec's key succeeded, the part tells
  the tenant reconcile to keep the Deployment at the image last migrated (at the digest
  the migration's container ran, when the kubelet reported one: a tag can be pushed
  again), or, when nothing was ever migrated, at the image the operator's own Deployment
  ran when migrations were turned on (saved on status then; a Deployment without the
  operator's labels and the tenant as its controller gives none, and a later hand edit
  is repaired, not adopted). A tenant with migrations whose first
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
- **Recorded before it is made.** The Job's name (phase ``Creating``) and the one-offs'
  names are written to status before they are made, and the Job's uid right after: a
  crash or a refused status write between a create and its record must not lose it (the
  next round would kill a running migration, or take a second set of backups). With them
  goes a random nonce (``attempt.nonce``), which the Job and the one-offs carry
  (annotation ``cleoai.io/migration-nonce``). A Job at the recorded name is adopted only
  if it wears the operator's labels (which the admission policy reserves), the attempt's
  key, the tenant as its controller (by uid), and exactly that nonce; else it is stale or
  planted, and deleted. No clock decides (the operator's and the API server's differ, and
  creationTimestamp has whole seconds). An attempt recorded without a nonce (an older
  operator): its unmade one-offs are made anew, under new names; a Job at its name that
  the operator made for its key (labels, key, the tenant as controller) is never killed:
  while it runs the attempt waits, and once it has ended it is adopted and its outcome
  recorded as any Job's (the simpler of the two correct rules: adoption by the old
  clock rule, ``creationTimestamp >= started - 1 s``, would kill the Job whenever the
  clocks differ by more). Waiting trusts no more than adopting would: before a Job is
  made, every earlier migration Job is gone (above), and only the operator makes Jobs
  with its labels and the tenant as controller, so that Job ran the attempt's very
  migration (image, command, args).
  Everything written to ``status.migrations`` is validated first (a value its schema
  refuses would be a 422 after the create); the retry annotation must be 1 to 253
  printable characters.
- **Refused creates fail the attempt, not the tenant.** A create the API server refuses
  for good (a full quota a tenant admin filled, a webhook) is ``BackupRefused`` or
  ``JobRefused``, retried automatically at ``attempt.retryAt``: 30 s after the first
  refusal, doubling with each refusal in a row (``attempt.refusals``) up to 10 min, kept
  on status so that a restart keeps the back-off; the condition says when. A Job
  refused after its backups succeeded is retried with the same backups (phase
  ``Creating``, a new nonce) while they are there and the attempt that took them started
  at most an hour ago (`migration_state.reusable_backups`), not with a full backup each
  retry. Transient
  errors are raised (the loop retries). A migration that ran and failed is not retried
  automatically (below).
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
- **Its Jobs by controller uid.** A Job is one of the tenant's migration Jobs only with the
  operator's labels *and* the tenant as its controller (by uid): a controller the admission
  policy exempts (the CronJob controller) puts on a Job whatever labels a template names.
- **Backups first** (``backupFirst``): see `reconcile.migration_backups`. Backups not all
  succeeded `MigrationSettings.backup_deadline_seconds` after the attempt started fail it
  (``BackupDeadlineExceeded``), rather than holding the rollout for ever.
- **Clocks.** Times on status may have been written by another leader, under another
  clock. The backup deadline runs from the later of ``started`` and the one-offs'
  ``creationTimestamp`` (the API server's clock), and a start in the future is not late
  (`migration_state.backups_late`); a ``retryAt`` further ahead than the longest back-off
  is clamped to now plus that back-off, and written back (`clamped_retry_at`).
- **The digest.** The digest the migration's container runs (its ``imageID``) is recorded
  on the attempt while the Job runs (``attempt.digest``), so that a pod deleted before
  the Job's end is seen still pins the Deployment to it; when no digest was ever reported
  the Deployment runs the tag, and ``Migrated`` says so ("pinned to the tag").

Finished Jobs are cleaned: a succeeded one once its success is on status (deleting it
before could lose the record of its success), a failed one at the next attempt.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from typing import Any, Final

from cleo_operator.api.migrations import MigrationAttempt, MigrationsStatus
from cleo_operator.api.objects import KubeObject
from cleo_operator.api.tenant import WorkloadSpec
from cleo_operator.core.redaction import clip
from cleo_operator.core.times import read_rfc3339, rfc3339
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import DEPLOYMENT, JOB, POD, SECRET, TENANT
from cleo_operator.kube.status import update_status
from cleo_operator.reconcile.backup_jobs import job_failure, job_state
from cleo_operator.reconcile.database_secret import CREDENTIALS_SECRET
from cleo_operator.reconcile.migration_backups import (
    MigrationBackups,
    NoSource,
    PlantedOneOff,
    one_off_name,
)
from cleo_operator.reconcile.migration_outcome import (
    last_lines,
    pod_report,
    reported_image_id,
    revision_from_message,
    secret_values,
)
from cleo_operator.reconcile.migration_state import (
    IN_FLIGHT,
    MAX_REFUSALS,
    REFUSED,
    RETRY_ANNOTATION,
    backups_late,
    clamped_retry_at,
    controlled_by_uid,
    live_image,
    made_by_operator,
    new_nonce,
    observe,
    ours,
    poll_seconds,
    read_status,
    refusal_backoff,
    refused,
    retry_due,
    retry_problem,
    retry_request_pending,
    reusable_backups,
    uid_of,
)
from cleo_operator.reconcile.tenant_parts import PartResult, TenantContext, TenantEvent
from cleo_operator.render.child import WORKLOAD_NAME
from cleo_operator.render.migrations import (
    JOB_PREFIX,
    MIGRATION_LABEL,
    NONCE_ANNOTATION,
    migration_job_name,
    migration_key,
    migration_pod_labels,
    pinned_image,
    render_migration_job,
)
from cleo_operator.render.pooler import CLIENT_PASSWORD_KEY, POOLER_NAME

__all__ = [
    "CONDITION",
    "RETRY_ANNOTATION",
    "MigrationSettings",
    "MigrationsPart",
    "poll_seconds",
    "read_status",
    "retry_problem",
    "retry_request_pending",
]

log = logging.getLogger(__name__)

CONDITION: Final = "MigrationsSucceeded"
OWNED: Final = frozenset({"migrations"})


@dataclasses.dataclass(frozen=True)
class MigrationSettings:
    """How migrations run; defaults suit production."""

    database_secret: str = CREDENTIALS_SECRET
    """The credentials Secret the Job reads (the database part's)."""
    backup_deadline_seconds: float = 6 * 3600.0
    """How long the backups before a migration (``backupFirst``) may take; then the attempt
    fails (``BackupDeadlineExceeded``) rather than holding the rollout for ever."""
    requeue_seconds: float = 2.0
    """Look again this soon while waiting for something to start (Jobs are not watched);
    a migration in flight is looked at less often as it ages (`poll_seconds`)."""


@dataclasses.dataclass
class _Round:
    """One reconcile's view and decisions (mutable while the part works)."""

    ctx: TenantContext
    workload: WorkloadSpec
    key: str
    state: MigrationsStatus
    jobs: dict[str, KubeObject]
    recorded: MigrationsStatus
    """What ``status.migrations`` holds on the server (as read, then as written)."""
    as_read: MigrationsStatus
    """``status.migrations`` as read at the start of the round (parsed once, here)."""
    result: PartResult = dataclasses.field(default_factory=PartResult)
    waiting: str | None = None
    """Why a wanted migration has not started yet (it starts on a later round)."""
    retry_problem: str | None = None
    """Why the retry annotation is refused (nothing runs for it)."""
    restart: bool = False
    """The attempt in flight was dropped this round, to start again (see `_settle`)."""

    @property
    def attempt(self) -> MigrationAttempt | None:
        return self.state.attempt

    def set_attempt(self, attempt: MigrationAttempt | None, **changes: Any) -> None:
        # Validated (model_copy is not): what status cannot hold fails here, before
        # anything is made, not at the API server after.
        state = self.state.model_copy(update={"attempt": attempt, **changes})
        self.state = MigrationsStatus.model_validate(state.model_dump(by_alias=True))

    @property
    def retry(self) -> str | None:
        """The retry annotation's value, when it can be handled."""
        return None if self.retry_problem else self.ctx.annotations.get(RETRY_ANNOTATION)

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
                self._remove_jobs(ctx, read_status(ctx.status.get("migrations")))
            return PartResult(remove_conditions={CONDITION})
        state = read_status(ctx.status.get("migrations"))
        round_ = _Round(
            ctx=ctx,
            workload=workload,
            key=migration_key(workload),
            state=state,
            recorded=state,
            as_read=state,
            jobs=self._jobs(ctx),
            retry_problem=retry_problem(ctx.annotations.get(RETRY_ANNOTATION)),
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
        """The tenant's migration Jobs: its labels *and* the tenant as their controller (by
        uid). Labels alone are not proof: a controller the admission policy exempts (the
        CronJob controller) could have put them on a Job from a tenant's template."""
        jobs = self.kube.list(JOB, namespace=ctx.namespace, label_selector=MIGRATION_LABEL)
        return {
            str(j["metadata"]["name"]): j
            for j in jobs
            if ours(j, ctx.name) and controlled_by_uid(j, ctx.uid)
        }

    def _settle(self, r: _Round) -> None:
        """Bring a migration in flight one step on: its backups, its Job's creation, its
        Job's end."""
        attempt = r.attempt
        if attempt is None:
            return
        clamped = clamped_retry_at(attempt.retry_at, r.ctx.now)
        if clamped != attempt.retry_at:
            # Written under a clock far ahead of this one: the back-off runs on this clock.
            r.set_attempt(attempt.model_copy(update={"retry_at": clamped}))
            return
        if attempt.phase == "BackingUp":
            self._settle_backups(r, attempt)
        elif attempt.phase == "Creating":
            self._settle_creating(r, attempt)
        elif attempt.phase == "Running":
            self._settle_job(r, attempt)

    def _settle_backups(self, r: _Round, attempt: MigrationAttempt) -> None:
        if attempt.key != r.key:
            # The spec moved on before anything ran: nothing to wait for (the one-offs
            # finish by themselves). The new key starts afresh, with backups of its own.
            r.set_attempt(None)
            return
        if any(item.endswith("/") for item in attempt.backups):
            if attempt.nonce is None:
                # Recorded by an operator before nonces: what stands at the names cannot be
                # told apart from a planted one-off. The attempt starts again, new names.
                r.set_attempt(None)
                r.restart = True
                return
            # Named on status, not all made (or made but not recorded): made now, once.
            self._take_backups(r, attempt)
            return
        outcome = self.backups.outcome(r.ctx.namespace, attempt.backups)
        if outcome.state == "failed":
            self._fail(r, attempt, "BackupFailed", outcome.message)
        elif outcome.state == "succeeded":
            self._create_job(r, attempt)
        elif backups_late(
            attempt.started, outcome.created, r.ctx.now, self.settings.backup_deadline_seconds
        ):
            limit = datetime.timedelta(seconds=self.settings.backup_deadline_seconds)
            self._fail(
                r,
                attempt,
                "BackupDeadlineExceeded",
                f"the backups before the migration did not succeed within {limit} "
                f"({outcome.message}); the migration does not run. Fix the backups, then "
                f"set the annotation {RETRY_ANNOTATION} to a new value, or change the spec",
            )
        else:
            r.waiting = outcome.message

    def _take_backups(self, r: _Round, attempt: MigrationAttempt) -> None:
        """Make the one-offs named on `attempt` that are not made yet (see `take_one`)."""
        namespace = r.ctx.namespace
        try:
            sources = self.backups.sources(namespace, r.ctx.name)
        except NoSource as exc:
            self._fail(r, attempt, exc.reason, exc.message)
            return
        taken = list(attempt.backups)
        for index, item in enumerate(taken):
            name, _, uid = item.partition("/")
            if uid:
                continue
            if index >= len(sources):
                self._fail(
                    r,
                    self._with_backups(attempt, taken),
                    "BackupFailed",
                    f"the scheduled CleoBackups of tenant {r.ctx.name} changed while the "
                    "backups before the migration were being made; the migration does not run",
                )
                return
            try:
                taken[index] = self.backups.take_one(
                    namespace=namespace,
                    tenant=r.ctx.name,
                    name=name,
                    source=sources[index],
                    nonce=attempt.nonce or "",
                )
            except PlantedOneOff as exc:
                self._fail(r, self._with_backups(attempt, taken), exc.reason, exc.message)
                return
            except KubeError as exc:
                if exc.transient:
                    raise  # the names are on status: the next round finds what was made
                self._fail(
                    r,
                    self._with_backups(attempt, taken),
                    "BackupRefused",
                    f"the API server refused the one-off backup CleoBackup {namespace}/{name} "
                    f"({exc.status} {exc.reason}: {exc.message}); the migration does not run",
                )
                return
        r.set_attempt(attempt.model_copy(update={"backups": taken}))
        r.result.record_now = True
        r.event(
            "MigrationBackupStarted",
            "backing up before the migration: " + ", ".join(t.split("/")[0] for t in taken),
        )

    @staticmethod
    def _with_backups(attempt: MigrationAttempt, taken: list[str]) -> MigrationAttempt:
        """`attempt` listing the one-offs made so far (not those only named)."""
        return attempt.model_copy(update={"backups": [t for t in taken if not t.endswith("/")]})

    def _settle_creating(self, r: _Round, attempt: MigrationAttempt) -> None:
        """The Job was named on status and then made, or not: adopt it, or make it."""
        name = attempt.job_name or ""
        job = r.jobs.get(name) or self.kube.get(JOB, name, namespace=r.ctx.namespace)
        if job is not None:
            if self._adoptable(r, job, attempt):
                self._running(r, attempt, job)
                return
            if attempt.nonce is None and made_by_operator(
                job, tenant=r.ctx.name, tenant_uid=r.ctx.uid, key=attempt.key
            ):
                # An older operator's Job, made before nonces: never killed (see the module
                # docstring). Its outcome is recorded once it has ended.
                if job_state(job) == "active":
                    r.waiting = (
                        "made by an earlier operator version, it runs; its outcome is "
                        "recorded when it ends (a running migration is never stopped)"
                    )
                    return
                ended = attempt.model_copy(update={"phase": "Running", "job_uid": uid_of(job)})
                r.set_attempt(ended)
                self._settle_job(r, ended)
                return
            if not job["metadata"].get("deletionTimestamp"):
                self._delete(job, r.ctx.namespace)
            r.waiting = f"removing a Job at {name} that is not the operator's"
            return
        if attempt.key != r.key:
            r.set_attempt(None)  # never made, and the spec moved on: nothing ran
            return
        self._create_job(r, attempt)

    def _adoptable(self, r: _Round, job: KubeObject, attempt: MigrationAttempt) -> bool:
        """Whether `job` is the one this attempt made: `made_by_operator` for the attempt's
        key, and the attempt's nonce, recorded on status before the Job was made (no clock
        compared: the operator's and the API server's differ). An attempt recorded without
        a nonce adopts nothing here (see `_settle_creating`)."""
        annotations = (job.get("metadata") or {}).get("annotations") or {}
        return (
            attempt.nonce is not None
            and annotations.get(NONCE_ANNOTATION) == attempt.nonce
            and made_by_operator(job, tenant=r.ctx.name, tenant_uid=r.ctx.uid, key=attempt.key)
        )

    def _settle_job(self, r: _Round, attempt: MigrationAttempt) -> None:
        name = attempt.job_name or ""
        job = (
            (r.jobs.get(name) or self.kube.get(JOB, name, namespace=r.ctx.namespace))
            if name
            else None
        )
        if job is None or uid_of(job) != attempt.job_uid:
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
        if state == "active" and (attempt.digest or "@" in attempt.image):
            return
        labels = migration_pod_labels(r.ctx.name, attempt.key)
        pods = self.kube.list(POD, namespace=r.ctx.namespace, label_selector=MIGRATION_LABEL)
        if state == "active":
            # The digest its container runs, recorded while it runs: its pod may be gone
            # (a tenant admin may delete pods) by the time the Job's end is seen.
            image_id = reported_image_id(pods, job, labels=labels)
            digest = pinned_image(attempt.image, image_id) if image_id else None
            if digest is not None:
                r.set_attempt(attempt.model_copy(update={"digest": digest}))
            return
        report = pod_report(pods, job, labels=labels)
        if state == "succeeded":
            revision = revision_from_message(report.message) if report else None
            image = (
                (pinned_image(attempt.image, report.image_id) if report else None)
                or attempt.digest
                or attempt.image
            )
            done = attempt.model_copy(update={"phase": "Succeeded", "finished": r.now})
            r.set_attempt(
                done, key=attempt.key, image=image, revision=revision, last_succeeded=r.now
            )
            r.event(
                "MigrationSucceeded",
                f"migration Job {name} succeeded for image {image}; schema revision "
                f"{revision or 'not reported'}",
            )
            log.info("tenant %s: migration %s succeeded", r.ctx.name, name)
            return
        reason, message = job_failure(job)
        detail = f"migration Job {name} (image {attempt.image}) failed: {message}"
        if report is not None and report.exit_code is not None:
            detail += f"; exit code {report.exit_code}"
        lines = ""
        if report is not None and report.message.strip():
            lines = f"; last lines: {last_lines(report.message, secrets=self._secrets(r))}"
        self._fail(r, attempt, reason, detail, status_only=lines)

    def _secrets(self, r: _Round) -> list[str]:
        """Every secret value the Job had (its credentials Secret's; the pooler's client
        credential too), to redact from what its migration printed (`secret_values`).

        Of the pooler's Secret only the client credential: its configuration and
        certificates are no secrets, and their common words (``transaction``,
        ``CERTIFICATE``) would blank the log lines that say what went wrong.

        Read from Secrets that the tenant's admins may be able to edit: used for redaction
        only (a forged value can only hide more)."""
        pooler = self.kube.get(SECRET, POOLER_NAME, namespace=r.ctx.namespace) or {}
        client = (pooler.get("data") or {}).get(CLIENT_PASSWORD_KEY)
        return secret_values(
            self.kube.get(SECRET, self.settings.database_secret, namespace=r.ctx.namespace),
            {"data": {CLIENT_PASSWORD_KEY: client}} if client else None,
        )

    def _fail(
        self,
        r: _Round,
        attempt: MigrationAttempt,
        reason: str,
        message: str,
        *,
        status_only: str = "",
    ) -> None:
        """`attempt` failed. `status_only` (the last lines of the log) goes on the tenant's
        status, never into an Event: the CleoTenant's Events live in ``default``, which
        more people read than the tenant's status. A refused create (`REFUSED`) is retried
        at ``retryAt``, after a back-off that doubles with each refusal in a row."""
        update: dict[str, Any] = {
            "phase": "Failed",
            "finished": r.now,
            "reason": reason,
            "message": clip(message + status_only),
            "retry_at": None,
        }
        if reason in REFUSED:
            refusals = min(attempt.refusals + 1, MAX_REFUSALS)
            update["refusals"] = refusals
            delay = datetime.timedelta(seconds=refusal_backoff(refusals))
            update["retry_at"] = rfc3339(r.ctx.now + delay)
        failed = attempt.model_copy(update=update)
        r.set_attempt(failed)
        r.event("MigrationFailed", f"{reason}: {message}", "Warning")
        log.warning("tenant %s: migration failed: %s", r.ctx.name, reason)

    def _record(self, r: _Round) -> None:
        """Write ``status.migrations`` now, before what it names is made (a crash or a
        refused status write after the create must not lose it); nothing when unchanged."""
        if r.state == r.recorded:
            return
        body = r.state.model_dump(by_alias=True, exclude_none=True)
        update_status(
            self.kube, TENANT, r.ctx.name, lambda _current: {"migrations": body}, owned_keys=OWNED
        )
        r.recorded = r.state

    # -- cleaning ----------------------------------------------------------------------

    def _clean_finished(self, r: _Round) -> None:
        """Delete a succeeded Job whose success is on status already (read this round)."""
        recorded = r.as_read.attempt
        if recorded is None or recorded.phase != "Succeeded" or not recorded.job_name:
            return
        job = r.jobs.get(recorded.job_name)
        if job is not None and uid_of(job) == recorded.job_uid:
            self._delete(job, r.ctx.namespace, propagation="Background")

    def _remove_jobs(self, ctx: TenantContext, status: MigrationsStatus) -> bool:
        """Delete every migration Job of the tenant, foreground; True when none (and none
        of their pods) is left.

        A pod is the migration's by its name (the Job's, ``cleo-migrate-...``, which
        tenants cannot give a pod) or by the recorded Job's uid, not by labels: a pod
        whose labels were taken off is released by the Job controller and runs on."""
        left = False
        for job in self._jobs(ctx).values():
            left = True
            if not job["metadata"].get("deletionTimestamp"):
                self._delete(job, ctx.namespace)
        if left:
            return False
        job_uid = status.attempt.job_uid if status.attempt is not None else None
        return not any(
            (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            and (
                str((p.get("metadata") or {}).get("name") or "").startswith(JOB_PREFIX)
                or controlled_by_uid(p, job_uid)
            )
            for p in self.kube.list(POD, namespace=ctx.namespace)
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
        if r.restart:
            return True
        retry = r.retry
        if retry is not None and retry != r.state.retry_request:
            return True
        if r.state.key == r.key:
            return False
        if retry_due(attempt, r.key, r.ctx.now):
            return True
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
        # What this round settled (a success) is recorded before its Job may go.
        self._record(r)
        if not self._remove_jobs(r.ctx, r.as_read):
            r.waiting = "waiting for the previous migration Job and its pods to be gone"
            return
        retry = r.retry
        changes: dict[str, Any] = {}
        if retry is not None:
            changes["retry_request"] = retry
        previous = r.attempt
        attempt = MigrationAttempt(
            key=r.key,
            image=r.workload.image,
            phase="BackingUp",
            started=r.now,
            nonce=new_nonce(),
            # Refusals in a row of this key: the back-off goes on growing.
            refusals=previous.refusals if previous and retry_due(previous, r.key, r.ctx.now) else 0,
        )
        migrations = r.workload.migrations
        assert migrations is not None
        if not migrations.backup_first:
            r.set_attempt(attempt, **changes)
            self._create_job(r, attempt)
            return
        reuse = reusable_backups(previous, r.key, r.ctx.now)
        if reuse and self.backups.outcome(namespace, reuse).state == "succeeded":
            # Only its Job was refused: the retry makes the Job again, with the same
            # backups (a new nonce), rather than a full backup each retry.
            assert previous is not None
            attempt = attempt.model_copy(update={"backups": reuse, "started": previous.started})
            r.set_attempt(attempt, **changes)
            self._create_job(r, attempt)
            return
        try:
            sources = self.backups.sources(namespace, r.ctx.name)
        except NoSource as exc:
            r.set_attempt(attempt, **changes)
            self._fail(r, attempt, exc.reason, exc.message)
            return
        # The names first, on status: a one-off made but not recorded is found again.
        planned = attempt.model_copy(
            update={
                "backups": [
                    f"{one_off_name(r.key, i, nonce=attempt.nonce or '')}/"
                    for i in range(len(sources))
                ]
            }
        )
        r.set_attempt(planned, **changes)
        self._record(r)
        self._take_backups(r, planned)

    def _create_job(self, r: _Round, attempt: MigrationAttempt) -> None:
        """Record the Job's name (phase Creating), make it, record its uid."""
        name = migration_job_name(attempt.key)
        creating = attempt.model_copy(
            update={
                "phase": "Creating",
                "job_name": name,
                "job_uid": None,
                "started": attempt.started or r.now,
                "nonce": attempt.nonce or new_nonce(),
            }
        )
        r.set_attempt(creating)
        self._record(r)
        body = render_migration_job(
            tenant=r.ctx.name,
            namespace=r.ctx.namespace,
            owner=r.ctx.owner,
            spec=r.ctx.spec,
            database_secret=self.settings.database_secret,
            nonce=creating.nonce or "",
        )
        try:
            created = self.kube.create(body)
        except KubeError as exc:
            if exc.conflict:
                # Something stands at the name: the next round adopts it or removes it.
                r.waiting = f"a Job stood at {name}"
                return
            if exc.transient:
                raise
            self._fail(
                r,
                creating,
                "JobRefused",
                f"the API server refused the migration Job {name} ({exc.status} "
                f"{exc.reason}: {exc.message})",
            )
            return
        self._running(r, creating, created)
        self._record(r)

    def _running(self, r: _Round, attempt: MigrationAttempt, job: KubeObject) -> None:
        running = attempt.model_copy(
            update={
                "phase": "Running",
                "job_name": job["metadata"]["name"],
                "job_uid": job["metadata"]["uid"],
            }
        )
        r.set_attempt(running)
        r.result.record_now = True
        r.event(
            "MigrationStarted",
            f"migration Job {job['metadata']['name']} started for image {attempt.image}",
        )

    # -- what the tenant reconcile gets ------------------------------------------------

    def _report(self, r: _Round) -> PartResult:
        result = r.result
        image = r.state.image
        if image is None:
            # Migrations just turned on: the image the operator's own Deployment runs is
            # saved once, so that a later hand edit of the Deployment is repaired, never
            # adopted. One the operator did not make (its labels, its owner) gives none.
            live = self.kube.get(DEPLOYMENT, WORKLOAD_NAME, namespace=r.ctx.namespace)
            if live is not None and ours(live, r.ctx.name) and controlled_by_uid(live, r.ctx.uid):
                image = live_image(live)
                if image is not None:
                    r.state = r.state.model_copy(update={"image": image})
        result.status = {"migrations": r.state.model_dump(by_alias=True, exclude_none=True)}
        observation = observe(
            r.state,
            r.key,
            r.workload.image,
            serving_image=image,
            waiting=r.waiting,
            retry_problem=r.retry_problem,
        )
        if image is None:
            result.hold_reason = (
                "the CleoAI Deployment is created once the first migration succeeded: "
                f"{observation.message}"
            )
            result.conditions[CONDITION] = observation
        else:
            result.workload_image = image
            result.informational[CONDITION] = observation
        attempt = r.attempt
        if attempt is not None and attempt.phase in IN_FLIGHT:
            # Backups and migrations may take hours: looked at less often as they age.
            started = read_rfc3339(attempt.started) or r.ctx.now
            result.requeue_after = poll_seconds(started, r.ctx.now)
        elif r.waiting is not None:
            result.requeue_after = self.settings.requeue_seconds
        elif attempt is not None and refused(attempt, r.key):
            due = read_rfc3339(clamped_retry_at(attempt.retry_at, r.ctx.now)) or r.ctx.now
            result.requeue_after = max(1.0, (due - r.ctx.now).total_seconds())
        return result

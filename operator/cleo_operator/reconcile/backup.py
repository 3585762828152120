"""Level-based reconcile of one CleoBackup: its runner on the cluster, verification, status.

Each call reads the CleoBackup, its tenant and the runner's children fresh, and:

1. checks what the runner will need and reports each gap as a condition naming the object
   and what to do (a tenant that does not exist, lives in another namespace or has no
   database; a missing database Secret, keyring Secret, volume claim or S3 Secret). An
   invalid spec that got past the CRD (an older CRD, a schedule that never fires) is a
   condition too, never a crash. In the tenant's namespace, it keeps the copies of the
   operator's registry Secrets that the runner pulls with, and deletes the tenant's copies
   wherever its check fails, but for an invalid spec (`reconcile.pull_secrets`). A registry
   Secret that cannot be copied is the ``PullSecretsCopied`` condition and never holds the
   runner back (the kubelet pulls without it), so a one-off or final backup never waits;
2. applies the desired children (`render.backup`) that are missing, stale or drifted, and
   deletes the runner kind the spec no longer asks for (the CronJob once the schedule is
   removed, or the other way round). A one-off Job is created once and never changed: a
   Job's pod template is immutable, and its run belongs to the history. A one-off made
   with ``spec.from`` waits (Pending, nothing rendered) for its turn in its source's line,
   and its source's excess one-offs are removed (`reconcile.one_offs`);
3. looks at the backup's Jobs. A Job that finished is marked as seen
   (``cleoai.io/backup-recorded``); when its pod did not record its run (it died, or could
   not write status) the run is recorded here from what is left of it
   (`reconcile.backup_jobs`);
4. verifies new backups, in a thread pool of the operator's own
   (`reconcile.backup_verification`: why there, and what a volume needs);
5. writes status only when it changed: conditions ``Ready``, ``LastBackupSucceeded``,
   ``BackupFresh``, ``Verified`` (decided in `reconcile.backup_conditions`), the phase and
   the verification records.

The runner pods write the run keys of status (see `reconcile.backup_status`); this module
writes only its own keys, with merge patches that never touch theirs. Metrics
(`backup.metrics`) are recorded from the history: runs this process has not seen are
counted; on the first sight of a CleoBackup its gauges are set from status, without
counting old runs again. How the operator runs backups (image, egress, volumes) is read
from its environment by `reconcile.backup_settings`.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from opentelemetry import context as otel_context

from cleo_operator.api.backup import (
    BackupPhase,
    CleoBackupSpec,
    CleoBackupStatus,
    parse_backup_spec,
)
from cleo_operator.api.errors import SpecError
from cleo_operator.api.objects import KubeObject, ObjectRef, object_ref
from cleo_operator.api.tenant import CleoTenantSpec, parse_tenant_spec
from cleo_operator.backup.object_stores import (
    CredentialsUnavailable,
    decoded_secret,
    secret_environ,
)
from cleo_operator.core.times import read_rfc3339
from cleo_operator.data.pool import CredentialsProvider, SitePools
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import (
    BACKUP,
    CRON_JOB,
    JOB,
    NETWORK_POLICY,
    POD,
    PVC,
    ROLE,
    ROLE_BINDING,
    SECRET,
    SERVICE_ACCOUNT,
    TENANT,
)
from cleo_operator.kube.secrets import AdminCredentialsFromSecrets
from cleo_operator.kube.status import write_status
from cleo_operator.observability.creation_traces import CreationTraces
from cleo_operator.observability.tracing import exporter_environment, note_reconcile, traceparent
from cleo_operator.reconcile import backup_conditions as conditions
from cleo_operator.reconcile import one_offs
from cleo_operator.reconcile.backup_jobs import JobState, job_state, run_entry_for_job
from cleo_operator.reconcile.backup_metrics import RunsSeen
from cleo_operator.reconcile.backup_orphans import foreign_to, sweep_orphans
from cleo_operator.reconcile.backup_settings import BackupSettings
from cleo_operator.reconcile.backup_source import (
    SourceError,
    Wait,
    effective_spec,
    one_off_expiry,
    source_spec,
    turn,
)
from cleo_operator.reconcile.backup_status import (
    RECONCILER_KEYS,
    RunEntry,
    read_status,
    record_run,
)
from cleo_operator.reconcile.backup_verification import BackupVerifier
from cleo_operator.reconcile.children import converge_child
from cleo_operator.reconcile.database import TenantDatabases
from cleo_operator.reconcile.pull_secrets import CONDITION as PULL_SECRETS_CONDITION
from cleo_operator.reconcile.pull_secrets import PullSecretCopies, PullSecretSync
from cleo_operator.reconcile.status import Observation, StatusBuilder, clip
from cleo_operator.render.backup import (
    BACKUP_LABEL,
    DATABASE_ENV,
    JOB_NAME_LABEL,
    TRACEPARENT_ENV,
    BackupPodSettings,
    backup_object_name,
    egress_problem,
    render_backup,
    with_kept_traceparent,
)
from cleo_operator.render.meta import (
    DEFAULT_OPERATOR_NAMESPACE,
    labels_of,
)
from cleo_operator.render.tenant import tenant_namespace

RUNNER_SERVICE_NAME: Final = "cleo-backup"
"""The service name of the runners' spans (``OTEL_SERVICE_NAME`` of their pods)."""


def runner_trace_env() -> tuple[tuple[str, str], ...]:
    """The runner's tracing variables when tracing is on: where to send spans, and
    ``TRACEPARENT``, this reconcile's span (none when it is not sampled). Empty when off."""
    env = exporter_environment(service_name=RUNNER_SERVICE_NAME)
    parent = traceparent()
    if parent is not None:
        env[TRACEPARENT_ENV] = parent
    return tuple(env.items())


__all__ = [
    "RECORDED_ANNOTATION",
    "WATCHED_CHILDREN",
    "BackupReconcileResult",
    "BackupReconciler",
    "BackupSettings",
]

log = logging.getLogger(__name__)


RECORDED_ANNOTATION: Final = "cleoai.io/backup-recorded"
"""Set on a finished Job once its run is in the CleoBackup's history."""

WATCHED_CHILDREN: Final[tuple[tuple[str, str, str], ...]] = tuple(
    (kind.group, kind.version, kind.plural)
    for kind in (CRON_JOB, JOB, SERVICE_ACCOUNT, ROLE, ROLE_BINDING, NETWORK_POLICY)
)
"""Kinds whose events (label ``cleoai.io/backup=<name>``) should wake a CleoBackup's loop."""

ACTIVE_JOB_RECHECK_SECONDS: Final = 30.0
"""While a Job runs, look again this often (its end also wakes the loop, if watched)."""

ONE_OFF_RECHECK_SECONDS: Final = 10.0
"""While a one-off waits for its turn, look again this often."""

_SOURCE_NEVER_RUNS: Final = frozenset({"SourceInvalid", "SourceMismatch", "SourceIsOneOff"})


@dataclass
class BackupReconcileResult:
    """What one reconcile did; the handler uses it for logs and requeueing."""

    namespace: str
    name: str
    applied: list[ObjectRef] = field(default_factory=list)
    deleted: list[ObjectRef] = field(default_factory=list)
    runs_recorded: int = 0
    """Runs recorded by this reconcile for pods that did not record their own."""
    verification_started: str | None = None
    """The backup id whose verification this reconcile started."""
    status_written: bool = False
    ready: bool = False
    phase: BackupPhase | None = None
    requeue_after: float | None = None
    """Ask to be called again this soon (seconds)."""


def _min(a: float | None, b: float | None) -> float | None:
    values = [v for v in (a, b) if v is not None]
    return min(values) if values else None


class BackupReconciler:
    """Reconciles CleoBackups through one KubeClient; shared by all worker threads.

    `pools` and `credentials` (the site admin's login per site) are for verification;
    without them the Verified condition says that it cannot run. Call `close` at shutdown.
    """

    def __init__(
        self,
        kube: KubeClient,
        *,
        settings: BackupSettings | None = None,
        pools: SitePools | None = None,
        credentials: CredentialsProvider | None = None,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
        operator_namespace: str = DEFAULT_OPERATOR_NAMESPACE,
        creation_traces: CreationTraces | None = None,
    ) -> None:
        self.kube = kube
        self.settings = settings or BackupSettings()
        # The tenants' creation traces (the tenant reconciler's): see `trace_parent`.
        self.creation_traces = creation_traces if creation_traces is not None else CreationTraces()
        self.now = now
        self.pull_secrets = PullSecretCopies(
            kube,
            sources=self.settings.pull_secret_sources,
            operator_namespace=operator_namespace,
        )
        self.verifier = BackupVerifier(
            kube, settings=self.settings, pools=pools, credentials=credentials, now=now
        )
        self._lock = threading.Lock()
        self._runs_seen = RunsSeen()
        self._swept: dict[str, datetime.datetime] = {}

    @classmethod
    def from_databases(
        cls,
        kube: KubeClient,
        databases: TenantDatabases,
        *,
        settings: BackupSettings | None = None,
        operator_namespace: str = DEFAULT_OPERATOR_NAMESPACE,
        creation_traces: CreationTraces | None = None,
    ) -> BackupReconciler:
        """Verification through the tenant databases' site pools and the sites' admin Secrets."""
        return cls(
            kube,
            settings=settings,
            pools=databases.pools,
            credentials=AdminCredentialsFromSecrets(kube),
            operator_namespace=operator_namespace,
            creation_traces=creation_traces,
        )

    def close(self) -> None:
        """Stop the verification pool (a running verification is abandoned)."""
        self.verifier.close()

    def wait_for_verifications(self, timeout: float) -> bool:
        """Wait until no verification runs; False when some still run after `timeout`."""
        return self.verifier.wait(timeout)

    def forget(self, namespace: str, name: str) -> None:
        """Drop what this process remembers of a deleted CleoBackup."""
        key = (namespace, name)
        self._runs_seen.forget(key)
        self.verifier.forget(key)

    def trace_parent(self, namespace: str, name: str) -> otel_context.Context | None:
        """The context CleoBackup `namespace/name`'s reconcile span starts under: its
        tenant's creation trace while the tenant is being created (`creation_traces`), else
        None. Asked before the span starts; it only reads, and only while a tenant whose
        namespace is `namespace` is being created (else it answers without a request).

        The tenant is the one `reconcile` resolves (`_tenant`: the tenant the spec names,
        checked to have `namespace` as its namespace), and the creation trace is looked up
        by that tenant's uid: a CleoBackup never joins another tenant's trace, whatever its
        spec names."""
        if not self.creation_traces.watching(namespace):
            return None
        backup = self.kube.get(BACKUP, name, namespace=namespace)
        if backup is None or backup["metadata"].get("deletionTimestamp"):
            return None
        try:
            declared = parse_backup_spec(backup.get("spec") or {})
        except SpecError:
            return None
        _, _, _, tenant = self._tenant(namespace, declared)
        if tenant is None:
            return None
        return self.creation_traces.parent(str(tenant["metadata"]["uid"]), namespace=namespace)

    # -- reconcile ---------------------------------------------------------------------

    def reconcile(self, namespace: str, name: str) -> BackupReconcileResult:
        """Bring CleoBackup `namespace/name` to its desired state; a no-op when it is.

        Raises `KubeError` only for what a retry may cure (a conflict, the API server
        failing); everything else becomes a condition.
        """
        result = BackupReconcileResult(namespace=namespace, name=name)
        backup = self.kube.get(BACKUP, name, namespace=namespace)
        if backup is None or backup["metadata"].get("deletionTimestamp"):
            self.forget(namespace, name)
            return result
        meta = backup["metadata"]
        now = self.now()
        status = _StatusBuilder(backup, int(meta.get("generation", 0)), now)
        note_reconcile(generation=int(meta.get("generation", 0)))
        current = read_status(backup.get("status"))

        try:
            declared = parse_backup_spec(backup.get("spec") or {})
        except SpecError as exc:
            note_reconcile(outcome="refused")
            status.set("Ready", Observation("False", "InvalidSpec", clip(str(exc))))
            result.phase = "Invalid"
            result.status_written = status.write(self.kube, phase="Invalid", current=current)
            return result

        # -- a one-off made with spec.from: when it goes, and what it runs ---------------
        source = declared.from_backup
        runner_name = backup_object_name(name, source=source)
        # Resolution gates only rendering a runner: a one-off that ran (or runs) keeps
        # reporting its runs and verification when its source goes or changes.
        unresolved = False
        source_problem: Observation | None = None
        if source is not None:
            if self._expire_one_off(backup, current, now, result):
                return result
            try:
                checked = source_spec(
                    declared,
                    self.kube.get(BACKUP, source, namespace=namespace),
                    namespace=namespace,
                )
            except SourceError as exc:
                unresolved = True
                spec = declared
                job = self._job_of(namespace, runner_name, meta, result)
                source_problem = Observation("Unknown", exc.reason, clip(exc.message))
                if not current.history and (job is None or foreign_to(job, str(meta["uid"]))):
                    # Nothing is rendered: every part of a runner comes from the source.
                    status.set("Ready", Observation("False", exc.reason, clip(exc.message)))
                    # Invalid only for what waiting cannot cure; a suspended, deleting or
                    # missing source may come back (the one-off then runs, within its time).
                    result.phase = "Invalid" if exc.reason in _SOURCE_NEVER_RUNS else "Pending"
                    result.requeue_after = _min(
                        result.requeue_after, self.settings.prerequisite_requeue_seconds
                    )
                    result.status_written = status.write(
                        self.kube, phase=result.phase, current=current
                    )
                    return result
            else:
                spec = effective_spec(declared, checked)
                removed, wait = self._one_off_turn(backup, source, checked, result)
                if removed:
                    self.forget(namespace, name)
                    return result
                if wait is not None:
                    # Nothing is rendered while it waits: its runner would only queue up.
                    status.set("Ready", Observation("False", wait.reason, clip(wait.message)))
                    result.phase = "Pending"
                    result.requeue_after = _min(result.requeue_after, ONE_OFF_RECHECK_SECONDS)
                    result.status_written = status.write(
                        self.kube, phase="Pending", current=current
                    )
                    return result
        else:
            spec = declared

        tz, tz_note = conditions.time_zone(spec)

        # -- the tenant and what the runner needs --------------------------------------
        if unresolved:
            problem, tenant_spec, database_secret, tenant = None, None, None, None
        else:
            problem, tenant_spec, database_secret, tenant = self._tenant(namespace, spec)
        # Only a CleoBackup of the tenant it names (in that tenant's namespace) gets a
        # runner, and only it may move that tenant's metrics.
        tenant_ok = problem is None and not unresolved
        if tenant_ok:
            self._runs_seen.observe((namespace, name), spec.tenant, current)
        # Registry credentials are copied only into a namespace checked to be the tenant's,
        # and the tenant's copies are pruned whatever the check said: a credential never
        # stays with former admins (a tenant deleted with Retain) or in another namespace.
        # (A one-off whose source is gone says nothing of its tenant: its copies stay.)
        if source_problem is not None:  # unresolved
            pulls = PullSecretSync(names=(), condition=source_problem)
        elif problem is not None and problem.reason == "TenantInvalid":
            pulls = self.pull_secrets.kept_while_invalid()  # the runner still names them
        else:
            pulls = self.pull_secrets.sync(namespace, tenant=spec.tenant, owner=tenant)
        result.applied.extend(pulls.applied)
        result.deleted.extend(pulls.deleted)
        failures: list[str] = list(pulls.failures)
        pod_settings = dataclasses.replace(
            self.settings.pod, image_pull_secrets=pulls.names if tenant is not None else ()
        )
        if database_secret is not None and database_secret != pod_settings.database_secret:
            pod_settings = dataclasses.replace(pod_settings, database_secret=database_secret)
        pod_settings = dataclasses.replace(pod_settings, trace_env=runner_trace_env())
        if tenant_ok:
            problem = self._prerequisites(namespace, spec, pod_settings, source=source)
        if problem is not None or pulls.problem is not None:
            # Nothing wakes the CleoBackup when a Secret it waits for appears.
            result.requeue_after = _min(
                result.requeue_after, self.settings.prerequisite_requeue_seconds
            )

        # -- children ------------------------------------------------------------------
        self._sweep_orphans(namespace, now, result)
        one_off = spec.schedule is None
        if tenant_ok:
            desired = render_backup(
                name=name,
                namespace=namespace,
                uid=meta["uid"],
                tenant=spec.tenant,
                spec=spec,
                settings=pod_settings,
                source=source,
            )
            for obj in desired.before_runner:
                self._converge(obj, failures, result)
            # A one-off Job waits for what it needs (it would only fail or hang), and is
            # made once: its template cannot change, and its run is history. A Job of
            # that name that another object owns (left by a namesake) is not its run.
            # A one-off of a source that has run never runs again, even without its Job: it
            # would run outside the line of its source's one-offs.
            make_runner = not one_off or (
                problem is None
                and not (source is not None and current.history)
                and self._job_of(namespace, runner_name, meta, result) is None
            )
            if make_runner:
                self._converge(desired.runner, failures, result, kept=with_kept_traceparent)
        if not unresolved:
            self._delete_other_runner(namespace, name, one_off=one_off, result=result)

        # -- runs, recorded by their pods or here --------------------------------------
        jobs = [
            job
            for job in self.kube.list(
                JOB, namespace=namespace, label_selector=f"{BACKUP_LABEL}={name}"
            )
            if not foreign_to(job, str(meta["uid"]))
        ]
        active = [j for j in jobs if job_state(j) == "active"]
        result.runs_recorded = self._record_finished_jobs(namespace, name, jobs, current)
        if result.runs_recorded:
            fresh = self.kube.get(BACKUP, name, namespace=namespace)
            if fresh is None:
                return result
            status.obj = fresh
            current = read_status(fresh.get("status"))
            if tenant_ok:
                self._runs_seen.observe((namespace, name), spec.tenant, current)
        if active:
            result.requeue_after = _min(result.requeue_after, ACTIVE_JOB_RECHECK_SECONDS)

        # -- conditions ----------------------------------------------------------------
        verification = self.verifier.step(
            key=(namespace, name),
            spec=spec,
            tenant_spec=tenant_spec,
            current=current,
            now=now,
            report_only=unresolved,
        )
        status.fields.update(verification.fields)
        result.verification_started = verification.started
        result.requeue_after = _min(result.requeue_after, verification.requeue_after)
        verified = verification.verified
        last = conditions.last_backup_observation(current)
        freshness, stale_in = conditions.freshness(spec, current, tz, tz_note, now)
        if stale_in is not None:
            result.requeue_after = _min(result.requeue_after, stale_in)
        status.set("LastBackupSucceeded", last)
        status.set("BackupFresh", freshness)
        status.set("Verified", verified)
        status.set(PULL_SECRETS_CONDITION, pulls.condition)
        ready = conditions.ready(
            spec=spec,
            current=current,
            problem=problem,
            failures=failures,
            last=last,
            freshness=freshness,
            verified=verified,
            tz=tz,
            now=now,
        )
        status.set("Ready", ready)
        result.ready = ready.ok
        result.phase = conditions.phase(
            spec=spec,
            active=bool(active),
            blocked=problem is not None,
            failed=bool(failures) or last.status == "False",
            succeeded=last.status == "True",
        )
        status.fields["cronJobName"] = None if one_off else runner_name
        result.status_written = status.write(self.kube, phase=result.phase, current=current)
        return result

    # -- one-offs made with spec.from ------------------------------------------------------

    def _one_off_turn(
        self,
        backup: KubeObject,
        source: str,
        source_spec: CleoBackupSpec,
        result: BackupReconcileResult,
    ) -> tuple[bool, Wait | None]:
        """Remove the source's excess one-offs; whether this one was among them, and why it
        may not start yet (None: it may, or it has started already).

        A one-off that has started (its Job exists) or finished goes on as before; only one
        that has not started waits for its turn (`backup_source.turn`).
        """
        meta = backup["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        line = one_offs.read_line(self.kube, namespace, source)
        for gone in one_offs.remove_excess(self.kube, line):
            result.deleted.append(object_ref(line.objects[gone]))
            if gone == name:
                return True, None
        mine = next((o for o in line.one_offs if o.name == name), None)
        if mine is None or mine.phase != "unstarted":
            return False, None
        return False, turn(
            name,
            line.one_offs,
            source=source,
            source_running=line.source_running,
            forbid=source_spec.concurrency_policy == "Forbid",
        )

    def _expire_one_off(
        self,
        backup: KubeObject,
        current: CleoBackupStatus,
        now: datetime.datetime,
        result: BackupReconcileResult,
    ) -> bool:
        """Delete a ``from`` one-off whose time is up (`one_off_expiry`); True if it went.

        Otherwise ask to be called again when it will be up.
        """
        meta = backup["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        source = (backup.get("spec") or {}).get("from")
        job = self.kube.get(JOB, backup_object_name(name, source=str(source)), namespace=namespace)
        active = job is not None and not foreign_to(job, meta["uid"]) and job_state(job) == "active"
        expiry = one_off_expiry(
            created=read_rfc3339(meta.get("creationTimestamp")),
            status=current,
            active=active,
            ttl_seconds=self.settings.one_off_ttl_seconds,
            max_age_seconds=self.settings.one_off_max_age_seconds,
        )
        if expiry is None:
            return False
        if expiry > now:
            result.requeue_after = _min(result.requeue_after, (expiry - now).total_seconds())
            return False
        log.info(
            "CleoBackup %s/%s: one-off of %s is done or past its age; removing it (its "
            "archive stays)",
            namespace,
            name,
            source,
        )
        # Only the very object judged here: a namesake made meanwhile is not expired.
        preconditions = {"uid": str(meta["uid"]), "resourceVersion": str(meta["resourceVersion"])}
        try:
            if self.kube.delete(BACKUP, name, namespace=namespace, preconditions=preconditions):
                result.deleted.append(object_ref(backup))
        except KubeError as exc:
            if not exc.conflict:
                raise
            result.requeue_after = _min(result.requeue_after, 1.0)  # changed: judge it again
            return True
        self.forget(namespace, name)
        return True

    def _job_of(
        self, namespace: str, job_name: str, meta: dict[str, Any], result: BackupReconcileResult
    ) -> KubeObject | None:
        """Job `job_name` if it is this CleoBackup's (by its owner's uid). One of that name
        that is not (left by a namesake deleted with its dependents orphaned) is deleted,
        by its uid: its run is not this CleoBackup's, and its template is not this one's."""
        job = self.kube.get(JOB, job_name, namespace=namespace)
        if job is None or not foreign_to(job, str(meta["uid"])):
            return job
        try:
            if self.kube.delete(
                JOB, job_name, namespace=namespace, preconditions={"uid": job["metadata"]["uid"]}
            ):
                result.deleted.append(object_ref({**job, "apiVersion": "batch/v1", "kind": "Job"}))
        except KubeError as exc:
            if not exc.conflict:
                raise
        # Made once it is gone (the garbage collector takes its pods first).
        result.requeue_after = _min(result.requeue_after, 1.0)
        return job

    def _sweep_orphans(
        self, namespace: str, now: datetime.datetime, result: BackupReconcileResult
    ) -> None:
        """Every `BackupSettings.orphan_sweep_seconds`, per namespace: delete the runner
        objects no live CleoBackup owns (`reconcile.backup_orphans`)."""
        with self._lock:
            last = self._swept.get(namespace)
            if (
                last is not None
                and (now - last).total_seconds() < self.settings.orphan_sweep_seconds
            ):
                return
            self._swept[namespace] = now
        try:
            result.deleted.extend(sweep_orphans(self.kube, namespace))
        except KubeError as exc:
            # Housekeeping never fails a backup's reconcile: the next one sweeps again.
            with self._lock:
                self._swept.pop(namespace, None)
            log.warning("namespace %s: sweeping orphaned runner objects: %s", namespace, exc)

    # -- the tenant and prerequisites ------------------------------------------------------

    def _tenant(
        self, namespace: str, spec: CleoBackupSpec
    ) -> tuple[Observation | None, CleoTenantSpec | None, str | None, KubeObject | None]:
        """A problem with the tenant (or None), its spec, its database Secret's name, and
        the CleoTenant itself once the namespace is checked to be its own."""
        tenant = self.kube.get(TENANT, spec.tenant)
        if tenant is None:
            return (
                Observation(
                    "False",
                    "TenantNotFound",
                    f"spec.tenant: CleoTenant {spec.tenant} does not exist; create it, or "
                    "name an existing tenant",
                ),
                None,
                None,
                None,
            )
        try:
            tenant_spec = parse_tenant_spec(tenant.get("spec") or {})
        except SpecError:
            return (
                Observation(
                    "False",
                    "TenantInvalid",
                    f"CleoTenant {spec.tenant} has an invalid spec (see its Ready condition); "
                    "its backups wait until it is fixed",
                ),
                None,
                None,
                None,
            )
        expected = tenant_namespace(name=spec.tenant, spec=tenant_spec)
        if expected != namespace:
            return (
                Observation(
                    "False",
                    "WrongNamespace",
                    f"a CleoBackup of tenant {spec.tenant} must be in the tenant's namespace "
                    f"{expected}, not {namespace}: its runner uses the tenant's Secrets there. "
                    f"Create it in {expected}.",
                ),
                None,
                None,
                None,
            )
        if not tenant_spec.database.enabled:
            return (
                Observation(
                    "False",
                    "NoDatabase",
                    f"CleoTenant {spec.tenant} has no database (spec.database.enabled is not "
                    "true): there is nothing to back up",
                ),
                None,
                None,
                None,
            )
        database = (tenant.get("status") or {}).get("database") or {}
        secret_name = database.get("secretName")
        return None, tenant_spec, str(secret_name) if secret_name else None, tenant

    def _prerequisites(
        self,
        namespace: str,
        spec: CleoBackupSpec,
        pod: BackupPodSettings,
        *,
        source: str | None = None,
    ) -> Observation | None:
        """The first thing the runner needs that is missing, as a condition; None if none."""
        if source is not None:
            # A one-off's pods run as its source's ServiceAccount (its workload identity).
            account = backup_object_name(source)  # the source's own ServiceAccount
            if self.kube.get(SERVICE_ACCOUNT, account, namespace=namespace) is None:
                return Observation(
                    "False",
                    "SourceNotReady",
                    f"spec.from: the ServiceAccount {namespace}/{account} of CleoBackup "
                    f"{source}, which a one-off's runner runs as, does not exist yet; see "
                    f"the Ready condition of CleoBackup {source}",
                )
        database = self.kube.get(SECRET, pod.database_secret, namespace=namespace)
        if database is None:
            return Observation(
                "False",
                "DatabaseSecretMissing",
                f"the tenant's database Secret {namespace}/{pod.database_secret} does not exist "
                f"yet; see the DatabaseReady condition of CleoTenant {spec.tenant}",
            )
        missing = [k for k in DATABASE_ENV if not (database.get("data") or {}).get(k)]
        if missing:
            return Observation(
                "False",
                "DatabaseSecretIncomplete",
                f"the database Secret {namespace}/{pod.database_secret} lacks {', '.join(missing)}",
            )
        if self.kube.get(SECRET, pod.keyring_secret, namespace=namespace) is None:
            return Observation(
                "False",
                "KeyringMissing",
                f"the tenant keyring Secret {namespace}/{pod.keyring_secret} does not exist "
                f"yet; see the KeyringReady condition of CleoTenant {spec.tenant}",
            )
        destination = spec.destination
        if destination is None:  # resolve() gives a spec with spec.from its source's
            return Observation(
                "False", "UnknownDestination", "spec.destination: not set, and no spec.from"
            )
        if destination.pvc is not None:
            egress = egress_problem(spec, pod)
            if egress is not None:
                return Observation("False", "EgressUnknown", egress)
            claim = destination.pvc.claim_name
            if self.kube.get(PVC, claim, namespace=namespace) is None:
                return Observation(
                    "False",
                    "VolumeClaimMissing",
                    f"spec.destination.pvc.claimName: PersistentVolumeClaim {namespace}/{claim} "
                    "does not exist; create it (ReadWriteOnce is enough) or name another one",
                )
            return None
        store = destination.object_store
        if store is None:  # the model forbids it; a CRD older than the model might not
            return Observation(
                "False",
                "UnknownDestination",
                f"spec.destination.type {destination.type!r} needs its block "
                f"(spec.destination.{destination.type})",
            )
        if store.credentials_secret is not None:
            secret = self.kube.get(SECRET, store.credentials_secret, namespace=namespace)
            try:
                secret_environ(spec, decoded_secret(secret), namespace=namespace)
            except CredentialsUnavailable as error:
                return Observation("False", error.reason, str(error))
        egress = egress_problem(spec, pod)
        if egress is not None:
            return Observation("False", "EgressUnknown", egress)
        return None

    # -- children ----------------------------------------------------------------------

    def _converge(
        self,
        obj: KubeObject,
        failures: list[str],
        result: BackupReconcileResult,
        *,
        kept: Callable[[KubeObject, KubeObject | None], KubeObject] | None = None,
    ) -> None:
        """Apply `obj` when it is missing, stale or drifted (`reconcile.children`)."""
        converge_child(
            self.kube,
            obj,
            applied=result.applied,
            deleted=result.deleted,
            failures=failures,
            kept=kept,
        )

    def _delete_other_runner(
        self, namespace: str, name: str, *, one_off: bool, result: BackupReconcileResult
    ) -> None:
        """The CronJob of a backup that lost its schedule, or the Job of one that got one."""
        kind = CRON_JOB if one_off else JOB
        obsolete = backup_object_name(name)
        live = self.kube.get(kind, obsolete, namespace=namespace)
        if live is None or labels_of(live).get(BACKUP_LABEL) != name:
            return
        if self.kube.delete(kind, obsolete, namespace=namespace):
            result.deleted.append(object_ref(live))

    # -- runs -----------------------------------------------------------------------------

    def _record_finished_jobs(
        self, namespace: str, name: str, jobs: list[KubeObject], current: CleoBackupStatus
    ) -> int:
        """Mark finished Jobs as seen, recording the runs their pods did not; how many."""
        recorded = 0
        in_history = {run.job for run in current.history if run.job}
        for job in jobs:
            state = job_state(job)
            meta = job["metadata"]
            if state == "active" or (meta.get("annotations") or {}).get(RECORDED_ANNOTATION):
                continue
            job_name = str(meta["name"])
            if job_name not in in_history:
                entry = self._entry_for_job(namespace, name, job, state)
                if entry is not None:
                    outcome = record_run(self.kube, namespace=namespace, name=name, entry=entry)
                    if outcome == "recorded":
                        recorded += 1
                        log.warning(
                            "CleoBackup %s/%s: Job %s ended without recording its run; "
                            "recorded it (%s)",
                            namespace,
                            name,
                            job_name,
                            entry.run.reason,
                        )
            try:
                self.kube.patch_merge(
                    JOB,
                    job_name,
                    {"metadata": {"annotations": {RECORDED_ANNOTATION: "true"}}},
                    namespace=namespace,
                )
            except KubeError as exc:
                if not exc.not_found:
                    raise
        return recorded

    def _entry_for_job(
        self, namespace: str, backup: str, job: KubeObject, state: JobState
    ) -> RunEntry | None:
        """The run of a finished Job that its pod did not record (`run_entry_for_job`)."""
        pods = self.kube.list(
            POD,
            namespace=namespace,
            label_selector=f"{JOB_NAME_LABEL}={job['metadata']['name']},{BACKUP_LABEL}={backup}",
        )
        return run_entry_for_job(job, pods, state=state, now=self.now())

    # -- metrics --------------------------------------------------------------------------


class _StatusBuilder(StatusBuilder):
    """The CleoBackup's status: written once, only if it changed."""

    set = StatusBuilder.condition

    def write(self, kube: KubeClient, *, phase: BackupPhase, current: CleoBackupStatus) -> bool:
        status = self.base(phase)
        # What this reconcile did not decide on keeps its value (the merge patch would
        # otherwise delete it: these keys are ours).
        if current.last_verification is not None:
            status["lastVerification"] = current.last_verification.to_api()
        if current.last_verified_backup is not None:
            status["lastVerifiedBackup"] = current.last_verified_backup.to_api()
        if current.cron_job_name is not None:
            status["cronJobName"] = current.cron_job_name
        for key, value in self.fields.items():
            if value is None:
                status.pop(key, None)
            else:
                status[key] = value
        written = write_status(kube, BACKUP, self.obj, status, owned_keys=RECONCILER_KEYS)
        return written is not None

"""Level-based reconcile of one CleoBackup: its runner on the cluster, verification, status.

Each call reads the CleoBackup, its tenant and the runner's children fresh, and:

1. checks what the runner will need and reports each gap as a condition naming the object
   and what to do (a tenant that does not exist, lives in another namespace or has no
   database; a missing database Secret, keyring Secret, volume claim or S3 Secret). An
   invalid spec that got past the CRD (an older CRD, a schedule that never fires) is a
   condition too, never a crash;
2. applies the desired children (`render.backup`) that are missing, stale or drifted, and
   deletes the runner kind the spec no longer asks for (the CronJob once the schedule is
   removed, or the other way round). A one-off Job is created once and never changed: a
   Job's pod template is immutable, and its run belongs to the history;
3. looks at the backup's Jobs. A Job that finished is marked as seen
   (``cleoai.io/backup-recorded``); when its pod did not record its run (it died, or could
   not write status) the run is recorded here from the pod's termination message (the
   runner's JSON report) or, without one, as a failure with the Job's reason;
4. verifies new backups. Verification restores into a scratch database, which needs
   CREATEDB and CREATEROLE on the site: the site admin's login, which only the operator
   holds (the admin only creates and drops the scratch database and the throwaway
   unprivileged login that restores and reads it: a dump is the tenant's code). So it runs
   here, in a small thread pool of its own (never in the reconcile's worker thread: a
   restore takes minutes), and a later reconcile picks up its verdict. Every
   ``spec.verification.everyNth`` successful backup is verified (the first one always);
5. writes status only when it changed: conditions ``Ready``, ``LastBackupSucceeded``,
   ``BackupFresh``, ``Verified``, the phase and the verification records. Messages hold
   absolute times only, so a reconcile that finds nothing new writes nothing.

Conditions: ``LastBackupSucceeded`` is the newest run's outcome (Unknown before the first).
``BackupFresh`` is False when the newest successful backup is older than twice the
schedule's interval (the longest gap between two runs, `api.cron`), Unknown before the
first. ``Verified`` is the newest verification's verdict (Unknown while none ran, or while
verification is off). ``Ready`` is True only when the tenant *has* a usable backup: the
runner is in place, the newest run succeeded, the newest backup is fresh and, when
verification is on, not proven broken.

The runner pods write the run keys of status (see `reconcile.backup_status`); this module
writes only its own keys, with merge patches that never touch theirs. Metrics
(`backup.metrics`) are recorded from the history: runs this process has not seen are
counted; on the first sight of a CleoBackup its gauges are set from status, without
counting old runs again.

Verification of a PersistentVolumeClaim destination needs the volume in the operator's
pod at ``$CLEO_BACKUP_VOLUMES_DIR/<namespace>/<claim>`` (a ReadWriteMany volume, say).
Without it the Verified condition says so; S3 destinations need nothing.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import ipaddress
import logging
import os
import threading
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast

import pydantic

from cleo_operator import __version__
from cleo_operator.api.backup import (
    BackupPhase,
    BackupRecord,
    BackupVerification,
    CleoBackupSpec,
    CleoBackupStatus,
    parse_backup_spec,
)
from cleo_operator.api.base import ConditionStatus, rfc3339
from cleo_operator.api.cron import CronError, parse_cron
from cleo_operator.api.errors import SpecError
from cleo_operator.api.objects import KubeObject, ObjectRef
from cleo_operator.api.tenant import CleoTenantSpec, parse_tenant_spec
from cleo_operator.backup import metrics
from cleo_operator.backup.connection import ConnectionInfo
from cleo_operator.backup.errors import BackupError
from cleo_operator.backup.report import report_from_message
from cleo_operator.backup.restore import VerificationResult, verify_backup
from cleo_operator.backup.s3 import S3Credentials, S3Storage
from cleo_operator.backup.storage import LocalStorage, Storage
from cleo_operator.core.times import read_rfc3339
from cleo_operator.crypto import CryptoError, Keyring
from cleo_operator.data.errors import DataError
from cleo_operator.data.pool import CredentialsProvider, SitePools
from cleo_operator.kube.apply import needs_apply, with_hash
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.keys import read_secret
from cleo_operator.kube.kinds import BACKUP, CRON_JOB, JOB, POD, PVC, SECRET, TENANT, kind_of
from cleo_operator.kube.secrets import AdminCredentialsFromSecrets, secret_value
from cleo_operator.kube.status import write_status
from cleo_operator.reconcile.backup_status import (
    RECONCILER_KEYS,
    RunEntry,
    entry_from_report,
    failed_entry,
    read_status,
    record_run,
)
from cleo_operator.reconcile.database import TenantDatabases
from cleo_operator.reconcile.status import Observation, StatusBuilder, clip
from cleo_operator.render.backup import (
    BACKUP_LABEL,
    DATABASE_ENV,
    DEFAULT_IMAGE_REPOSITORY,
    JOB_NAME_LABEL,
    S3_ENV,
    BackupPodSettings,
    backup_object_name,
    egress_problem,
    render_backup,
)
from cleo_operator.render.meta import MANAGED_BY, MANAGED_BY_LABEL
from cleo_operator.render.tenant import tenant_namespace

__all__ = [
    "API_SERVER_CIDRS_ENV",
    "EGRESS_CIDRS_ENV",
    "IMAGE_ENV",
    "IMAGE_PULL_POLICY_ENV",
    "RECORDED_ANNOTATION",
    "VOLUMES_DIR_ENV",
    "WATCHED_CHILDREN",
    "BackupReconcileResult",
    "BackupReconciler",
    "BackupSettings",
    "default_image",
]

log = logging.getLogger(__name__)


IMAGE_ENV: Final = "CLEO_OPERATOR_IMAGE"
"""The image of the runner pods: the operator's own (the chart sets it)."""
IMAGE_PULL_POLICY_ENV: Final = "CLEO_OPERATOR_IMAGE_PULL_POLICY"
"""The runner pods' image pull policy (Always, IfNotPresent, Never); unset: the default."""
API_SERVER_CIDRS_ENV: Final = "CLEO_BACKUP_API_SERVER_CIDRS"
"""Comma-separated addresses of the API server the runner pods may reach (its endpoints as
NetworkPolicies see them); unset: what the operator finds at start (`with_api_server`)."""
EGRESS_CIDRS_ENV: Final = "CLEO_BACKUP_EGRESS_CIDRS"
"""The older name of `API_SERVER_CIDRS_ENV`, still read when that one is unset. It used to
default to 0.0.0.0/0 and to cover the object store too; object stores are now named per
CleoBackup (``destination.s3.egress``)."""
VOLUMES_DIR_ENV: Final = "CLEO_BACKUP_VOLUMES_DIR"
"""Where the operator sees backup volumes, as ``<dir>/<namespace>/<claim>``."""

RECORDED_ANNOTATION: Final = "cleoai.io/backup-recorded"
"""Set on a finished Job once its run is in the CleoBackup's history."""

WATCHED_CHILDREN: Final[tuple[tuple[str, str, str], ...]] = (
    ("batch", "v1", "cronjobs"),
    ("batch", "v1", "jobs"),
    ("", "v1", "serviceaccounts"),
    ("rbac.authorization.k8s.io", "v1", "roles"),
    ("rbac.authorization.k8s.io", "v1", "rolebindings"),
    ("networking.k8s.io", "v1", "networkpolicies"),
)
"""Kinds whose events (label ``cleoai.io/backup=<name>``) should wake a CleoBackup's loop."""

PullPolicy = Literal["Always", "IfNotPresent", "Never"]
_PULL_POLICIES: Final[tuple[PullPolicy, ...]] = ("Always", "IfNotPresent", "Never")
ACTIVE_JOB_RECHECK_SECONDS: Final = 30.0
"""While a Job runs, look again this often (its end also wakes the loop, if watched)."""


def default_image() -> str:
    """``ghcr.io/cleoai/cleo-operator:<this version>``: the runner is the operator itself."""
    return f"{DEFAULT_IMAGE_REPOSITORY}:{__version__}"


def _default_pod() -> BackupPodSettings:
    return BackupPodSettings(image=default_image())


@dataclass(frozen=True, kw_only=True)
class BackupSettings:
    """How the operator runs CleoBackups; `from_environment` reads the operator's env."""

    pod: BackupPodSettings = field(default_factory=_default_pod)
    """What every runner pod gets (image, Secret names, egress)."""
    volumes_dir: Path | None = None
    """Where the operator sees backup volumes (``<dir>/<namespace>/<claim>``), for verifying
    PersistentVolumeClaim destinations; None: those are not verified."""
    verify_workers: int = 1
    """Verifications at once (each restores a database: CPU, disk and the site's I/O)."""
    retry_seconds: float = 60.0
    """Try a verification that could not run (a site down) again after this long."""
    pending_requeue_seconds: float = 5.0
    """Call again this soon while a verification runs."""
    prerequisite_requeue_seconds: float = 15.0
    """Call again this soon while something the runner needs is missing (nothing else
    wakes the CleoBackup when the tenant's Secret appears)."""
    work_dir: Path | None = None
    """Where verification decrypts archives (default: the system's temporary folder)."""
    pg_restore: str = "pg_restore"
    """The pg_restore verification runs."""

    def with_api_server(self, cidrs: tuple[str, ...]) -> BackupSettings:
        """These settings with the API server addresses found at start, unless set."""
        if self.pod.api_server_cidrs or not cidrs:
            return self
        return dataclasses.replace(self, pod=dataclasses.replace(self.pod, api_server_cidrs=cidrs))

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> BackupSettings:
        """From the variables `IMAGE_ENV`, `IMAGE_PULL_POLICY_ENV`, `EGRESS_CIDRS_ENV` and
        `VOLUMES_DIR_ENV`; ValueError names the variable that is wrong."""
        env = os.environ if environ is None else environ
        image = env.get(IMAGE_ENV, "").strip() or default_image()
        policy_text = env.get(IMAGE_PULL_POLICY_ENV, "").strip()
        policy: PullPolicy | None = None
        if policy_text:
            if policy_text not in _PULL_POLICIES:
                raise ValueError(
                    f"{IMAGE_PULL_POLICY_ENV}={policy_text!r}: use one of "
                    f"{', '.join(_PULL_POLICIES)}"
                )
            policy = policy_text
        variable = API_SERVER_CIDRS_ENV if env.get(API_SERVER_CIDRS_ENV) else EGRESS_CIDRS_ENV
        cidrs = tuple(c.strip() for c in env.get(variable, "").split(",") if c.strip())
        for cidr in cidrs:
            try:
                network = ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(
                    f"{variable}: {cidr!r} is not an address range such as 10.0.0.0/8"
                ) from None
            if network.prefixlen == 0:
                raise ValueError(
                    f"{variable}: {cidr!r} is every address; name the API server's addresses"
                )
        volumes = env.get(VOLUMES_DIR_ENV, "").strip()
        return cls(
            pod=BackupPodSettings(
                image=image,
                image_pull_policy=policy,
                api_server_cidrs=cidrs,
            ),
            volumes_dir=Path(volumes) if volumes else None,
        )


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


def _ref(obj: Mapping[str, Any]) -> ObjectRef:
    meta = obj["metadata"]
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "namespace": meta.get("namespace", ""),
        "name": meta["name"],
    }


def _dump(model: pydantic.BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


# --------------------------------------------------------------------------- jobs


JobState = Literal["active", "succeeded", "failed"]


def _job_state(job: Mapping[str, Any]) -> JobState:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return "succeeded"
        if condition.get("type") == "Failed":
            return "failed"
    return "active"


def _job_failure(job: Mapping[str, Any]) -> tuple[str, str]:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return (
                str(condition.get("reason") or "JobFailed"),
                str(condition.get("message") or "the Job failed"),
            )
    return "JobFailed", "the Job failed"


def _terminated(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated")
        if terminated:
            return cast(Mapping[str, Any], terminated)
    return None


def _ours(obj: Mapping[str, Any]) -> bool:
    """Labelled as made by the operator (what the admission policy keeps to it)."""
    return (obj["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY


def _controlled_by(pod: Mapping[str, Any], job: Mapping[str, Any]) -> bool:
    """Whether `job` (by uid) is the controller of `pod`."""
    uid = job["metadata"].get("uid")
    return uid is not None and any(
        ref.get("controller") is True and ref.get("uid") == uid
        for ref in pod["metadata"].get("ownerReferences") or []
    )


def _latest_condition_time(job: Mapping[str, Any]) -> datetime.datetime | None:
    times = [
        read_rfc3339(c.get("lastTransitionTime"))
        for c in (job.get("status") or {}).get("conditions") or []
    ]
    present = [t for t in times if t is not None]
    return max(present) if present else None


# --------------------------------------------------------------------------- verification


class _VerificationUnavailable(Exception):
    """The verification cannot run now (not a verdict on the backup)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class _Verifying:
    """A verification running in the pool."""

    backup_id: str
    sequence: int | None
    backup_time: str
    future: concurrent.futures.Future[VerificationResult]


@dataclass
class _Unavailable:
    """Why the last attempt to verify `backup_id` could not run, and when to try again."""

    backup_id: str
    reason: str
    message: str
    retry_at: datetime.datetime


# --------------------------------------------------------------------------- the reconciler


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
    ) -> None:
        self.kube = kube
        self.settings = settings or BackupSettings()
        self.pools = pools
        self.credentials = credentials
        self.now = now
        self._lock = threading.Lock()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, self.settings.verify_workers), thread_name_prefix="backup-verify"
        )
        self._verifying: dict[tuple[str, str], _Verifying] = {}
        self._unavailable: dict[tuple[str, str], _Unavailable] = {}
        self._seen_runs: dict[tuple[str, str], set[tuple[str | None, str]]] = {}

    @classmethod
    def from_databases(
        cls,
        kube: KubeClient,
        databases: TenantDatabases,
        *,
        settings: BackupSettings | None = None,
    ) -> BackupReconciler:
        """Verification through the tenant databases' site pools and the sites' admin Secrets."""
        return cls(
            kube,
            settings=settings,
            pools=databases.pools,
            credentials=AdminCredentialsFromSecrets(kube),
        )

    def close(self) -> None:
        """Stop the verification pool (a running verification is abandoned)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def wait_for_verifications(self, timeout: float) -> bool:
        """Wait until no verification runs; False when some still run after `timeout`."""
        with self._lock:
            futures = [v.future for v in self._verifying.values()]
        _, pending = concurrent.futures.wait(futures, timeout=timeout)
        return not pending

    def forget(self, namespace: str, name: str) -> None:
        """Drop what this process remembers of a deleted CleoBackup."""
        key = (namespace, name)
        with self._lock:
            self._seen_runs.pop(key, None)
            self._unavailable.pop(key, None)
            verifying = self._verifying.pop(key, None)
        if verifying is not None:
            verifying.future.cancel()

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
        current = read_status(backup.get("status"))

        try:
            spec = parse_backup_spec(backup.get("spec") or {})
        except SpecError as exc:
            status.set("Ready", Observation("False", "InvalidSpec", clip(str(exc))))
            result.phase = "Invalid"
            result.status_written = status.write(self.kube, phase="Invalid", current=current)
            return result

        tz, tz_note = _time_zone(spec)
        self._observe_metrics(namespace, name, spec, current)

        # -- the tenant and what the runner needs --------------------------------------
        problem, tenant_spec, database_secret = self._tenant(namespace, spec)
        pod_settings = self.settings.pod
        if database_secret is not None and database_secret != pod_settings.database_secret:
            pod_settings = dataclasses.replace(pod_settings, database_secret=database_secret)
        if problem is None:
            problem = self._prerequisites(namespace, spec, pod_settings)
        if problem is not None:
            result.requeue_after = self.settings.prerequisite_requeue_seconds

        # -- children ------------------------------------------------------------------
        failures: list[str] = []
        desired = render_backup(
            name=name,
            namespace=namespace,
            uid=meta["uid"],
            tenant=spec.tenant,
            spec=spec,
            settings=pod_settings,
        )
        for obj in desired.before_runner:
            self._converge(obj, failures, result)
        one_off = spec.schedule is None
        # A one-off Job waits for what it needs (it would only fail or hang), and is made
        # once: its template cannot change, and its run is history.
        make_runner = not one_off or (
            problem is None
            and self.kube.get(JOB, backup_object_name(name), namespace=namespace) is None
        )
        if make_runner:
            self._converge(desired.runner, failures, result)
        self._delete_other_runner(namespace, name, one_off=one_off, result=result)

        # -- runs, recorded by their pods or here --------------------------------------
        jobs = self.kube.list(JOB, namespace=namespace, label_selector=f"{BACKUP_LABEL}={name}")
        active = [j for j in jobs if _job_state(j) == "active"]
        result.runs_recorded = self._record_finished_jobs(namespace, name, jobs, current)
        if result.runs_recorded:
            fresh = self.kube.get(BACKUP, name, namespace=namespace)
            if fresh is None:
                return result
            status.obj = fresh
            current = read_status(fresh.get("status"))
            self._observe_metrics(namespace, name, spec, current)
        if active:
            result.requeue_after = _min(result.requeue_after, ACTIVE_JOB_RECHECK_SECONDS)

        # -- conditions ----------------------------------------------------------------
        verified = self._verification(
            key=(namespace, name),
            spec=spec,
            tenant_spec=tenant_spec,
            current=current,
            status=status,
            result=result,
            now=now,
        )
        last = _last_backup_observation(current)
        freshness, stale_in = _freshness(spec, current, tz, tz_note, now)
        if stale_in is not None:
            result.requeue_after = _min(result.requeue_after, stale_in)
        status.set("LastBackupSucceeded", last)
        status.set("BackupFresh", freshness)
        status.set("Verified", verified)
        ready = _ready(
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
        result.phase = _phase(
            spec=spec,
            active=bool(active),
            blocked=problem is not None,
            failed=bool(failures) or last.status == "False",
            succeeded=last.status == "True",
        )
        status.fields["cronJobName"] = None if one_off else backup_object_name(name)
        result.status_written = status.write(self.kube, phase=result.phase, current=current)
        return result

    # -- the tenant and prerequisites ------------------------------------------------------

    def _tenant(
        self, namespace: str, spec: CleoBackupSpec
    ) -> tuple[Observation | None, CleoTenantSpec | None, str | None]:
        """A problem with the tenant (or None), its spec, and its database Secret's name."""
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
            )
        database = (tenant.get("status") or {}).get("database") or {}
        secret_name = database.get("secretName")
        return None, tenant_spec, str(secret_name) if secret_name else None

    def _prerequisites(
        self, namespace: str, spec: CleoBackupSpec, pod: BackupPodSettings
    ) -> Observation | None:
        """The first thing the runner needs that is missing, as a condition; None if none."""
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
        if destination.s3 is None:  # the model forbids it; a CRD older than the model might not
            return Observation(
                "False",
                "UnknownDestination",
                f"spec.destination.type {destination.type!r} needs its block "
                f"(spec.destination.{destination.type})",
            )
        secret_name = destination.s3.credentials_secret
        secret = self.kube.get(SECRET, secret_name, namespace=namespace)
        lacking = [k for k in S3_ENV if not ((secret or {}).get("data") or {}).get(k)]
        if secret is None or lacking:
            what = "does not exist" if secret is None else f"lacks {', '.join(lacking)}"
            return Observation(
                "False",
                "S3CredentialsMissing",
                f"spec.destination.s3.credentialsSecret: Secret {namespace}/{secret_name} "
                f"{what}; it needs the keys {' and '.join(S3_ENV)}",
            )
        egress = egress_problem(spec, pod)
        if egress is not None:
            return Observation("False", "EgressUnknown", egress)
        return None

    # -- children ----------------------------------------------------------------------

    def _converge(
        self, obj: KubeObject, failures: list[str], result: BackupReconcileResult
    ) -> None:
        """Apply `obj` when it is missing, stale or drifted; note a refusal in `failures`."""
        kind = kind_of(obj)
        meta = obj["metadata"]
        live = self.kube.get(kind, meta["name"], namespace=meta["namespace"])
        if live is not None and not _ours(live):
            # Someone else's object at a name we reserve (made before ours, or by hand): a
            # server-side apply would keep its manager's fields (an extra container, env,
            # a volume), so it goes, and ours is made afresh.
            log.warning(
                "%s %s/%s is not the operator's (no %s=%s label): deleting it to make ours",
                kind.kind,
                meta["namespace"],
                meta["name"],
                MANAGED_BY_LABEL,
                MANAGED_BY,
            )
            self.kube.delete(kind, meta["name"], namespace=meta["namespace"])
            result.deleted.append(_ref(live))
            live = None
        stamped = with_hash(obj)
        if not needs_apply(stamped, live):
            return
        try:
            self.kube.apply(stamped)
        except KubeError as exc:
            if exc.transient:
                raise  # transient: the loop retries soon
            failures.append(f"{kind.kind} {meta['name']}: {exc.message or exc.reason}")
            log.warning(
                "apply %s %s/%s refused: %s", kind.kind, meta["namespace"], meta["name"], exc
            )
            return
        result.applied.append(_ref(obj))

    def _delete_other_runner(
        self, namespace: str, name: str, *, one_off: bool, result: BackupReconcileResult
    ) -> None:
        """The CronJob of a backup that lost its schedule, or the Job of one that got one."""
        kind = CRON_JOB if one_off else JOB
        obsolete = backup_object_name(name)
        live = self.kube.get(kind, obsolete, namespace=namespace)
        if live is None or (live["metadata"].get("labels") or {}).get(BACKUP_LABEL) != name:
            return
        if self.kube.delete(kind, obsolete, namespace=namespace):
            result.deleted.append(_ref(live))

    # -- runs -----------------------------------------------------------------------------

    def _record_finished_jobs(
        self, namespace: str, name: str, jobs: list[KubeObject], current: CleoBackupStatus
    ) -> int:
        """Mark finished Jobs as seen, recording the runs their pods did not; how many."""
        recorded = 0
        in_history = {run.job for run in current.history if run.job}
        for job in jobs:
            state = _job_state(job)
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
        """The run of a finished Job that its pod did not record, from what is left of it.

        Only the Job's own pods count: labelled as the runner of `backup` (a label the
        admission policy keeps to the operator and the Job controller) and controlled by
        this Job (by uid). The `job-name` label alone is anyone's to put on a pod, with a
        forged report in its termination message.
        """
        job_name = str(job["metadata"]["name"])
        job_status = job.get("status") or {}
        started = read_rfc3339(job_status.get("startTime")) or self.now()
        ended = (
            read_rfc3339(job_status.get("completionTime"))
            or _latest_condition_time(job)
            or self.now()
        )
        pods = [
            pod
            for pod in self.kube.list(
                POD,
                namespace=namespace,
                label_selector=f"{JOB_NAME_LABEL}={job_name},{BACKUP_LABEL}={backup}",
            )
            if _controlled_by(pod, job)
        ]
        pods.sort(key=lambda p: str((p.get("status") or {}).get("startTime") or ""), reverse=True)
        detail = ""
        for pod in pods:
            terminated = _terminated(pod)
            if terminated is None:
                continue
            message = str(terminated.get("message") or "").strip()
            report = report_from_message(message) if message else None
            if report is not None:
                return entry_from_report(
                    report,
                    job=job_name,
                    started=read_rfc3339((pod.get("status") or {}).get("startTime")) or started,
                    ended=read_rfc3339(terminated.get("finishedAt")) or ended,
                )
            if not detail:
                detail = (
                    f"its container ended with {terminated.get('reason') or 'Error'} "
                    f"(exit code {terminated.get('exitCode')})"
                )
                if message:
                    detail += f": {message[-400:]}"
        if state == "succeeded":
            log.warning(
                "Job %s/%s succeeded, but its pod left neither a report nor a history entry",
                namespace,
                job_name,
            )
            return None
        reason, job_message = _job_failure(job)
        return failed_entry(
            reason=reason,
            message=(
                f"the backup pod of Job {job_name} ended without a report ({job_message}"
                + (f"; {detail}" if detail else "")
                + "); look at the Job's events and the pod's log"
            ),
            job=job_name,
            started=started,
            ended=ended,
        )

    # -- metrics --------------------------------------------------------------------------

    def _observe_metrics(
        self, namespace: str, name: str, spec: CleoBackupSpec, current: CleoBackupStatus
    ) -> None:
        """Record runs this process has not seen yet (see the module docstring)."""
        key = (namespace, name)
        runs = {(run.job, run.start_time) for run in current.history}
        with self._lock:
            seen = self._seen_runs.get(key)
            self._seen_runs[key] = runs if seen is None else seen | runs
        tenant = spec.tenant
        newest = current.last_successful_backup
        if seen is None:
            # Counters count this process's observations: old runs are not counted again
            # after a restart, but the gauges say what the status says.
            if newest is not None:
                _set_gauges(tenant, newest)
            return
        for run in sorted(current.history, key=lambda r: r.start_time):
            if (run.job, run.start_time) in seen:
                continue
            if not run.succeeded:
                metrics.observe_backup_failure(tenant=tenant, reason=run.reason or "BackupFailed")
            elif newest is not None and newest.backup_id == run.backup_id:
                metrics.observe_backup(
                    tenant=tenant,
                    finished_at=_finished_at(newest),
                    duration_seconds=newest.duration_seconds or 0.0,
                    archive_size=newest.size_bytes or 0,
                    plaintext_size=newest.dump_size_bytes or 0,
                )
            else:  # an older run reported late: counted; the gauges stay with the newest
                metrics.BACKUPS.labels(tenant=tenant).inc()

    # -- verification ---------------------------------------------------------------------

    def _verification(
        self,
        *,
        key: tuple[str, str],
        spec: CleoBackupSpec,
        tenant_spec: CleoTenantSpec | None,
        current: CleoBackupStatus,
        status: _StatusBuilder,
        result: BackupReconcileResult,
        now: datetime.datetime,
    ) -> Observation:
        """Pick up a finished verification, start a due one; the Verified condition."""
        namespace, name = key
        latest = current.last_verification
        with self._lock:
            verifying = self._verifying.get(key)
            if verifying is not None and verifying.future.done():
                del self._verifying[key]
        if verifying is not None and verifying.future.done():
            latest = self._take_verdict(key, verifying, status, current) or latest
            verifying = None
        if spec.verification is None or not spec.verification.enabled:
            return Observation(
                "Unknown",
                "VerificationDisabled",
                "spec.verification.enabled is not true: archives are not proven to restore",
            )
        if verifying is not None:
            result.requeue_after = _min(result.requeue_after, self.settings.pending_requeue_seconds)
            return _verifying_observation(verifying.backup_id, latest)
        candidate = current.last_successful_backup
        if (
            candidate is not None
            and candidate.backup_id
            and _verification_due(spec, candidate, latest)
        ):
            with self._lock:
                unavailable = self._unavailable.get(key)
            if (
                unavailable is not None
                and unavailable.backup_id == candidate.backup_id
                and now < unavailable.retry_at
            ):
                result.requeue_after = _min(
                    result.requeue_after, (unavailable.retry_at - now).total_seconds()
                )
                return Observation("Unknown", unavailable.reason, clip(unavailable.message))
            if tenant_spec is None:
                return Observation(
                    "Unknown",
                    "VerificationBlocked",
                    "verification waits until the tenant is in order (see the Ready condition)",
                )
            self._start_verification(namespace, name, spec, tenant_spec, candidate)
            result.verification_started = candidate.backup_id
            result.requeue_after = _min(result.requeue_after, self.settings.pending_requeue_seconds)
            return _verifying_observation(candidate.backup_id, latest)
        if latest is None:
            return Observation("Unknown", "NotVerifiedYet", "no backup has been verified yet")
        if latest.passed:
            return Observation("True", "Verified", clip(latest.message))
        return Observation("False", latest.reason, clip(latest.message))

    def _start_verification(
        self,
        namespace: str,
        name: str,
        spec: CleoBackupSpec,
        tenant_spec: CleoTenantSpec,
        candidate: BackupRecord,
    ) -> None:
        backup_id = str(candidate.backup_id)
        future = self._executor.submit(
            self._verify,
            namespace=namespace,
            spec=spec,
            tenant_spec=tenant_spec,
            backup_id=backup_id,
        )
        with self._lock:
            self._verifying[(namespace, name)] = _Verifying(
                backup_id=backup_id,
                sequence=candidate.sequence,
                backup_time=candidate.time,
                future=future,
            )
        log.info("CleoBackup %s/%s: verifying backup %s", namespace, name, backup_id)

    def _take_verdict(
        self,
        key: tuple[str, str],
        verifying: _Verifying,
        status: _StatusBuilder,
        current: CleoBackupStatus,
    ) -> BackupVerification | None:
        """Put a finished verification's verdict into status; None if it could not run."""
        try:
            verdict = verifying.future.result()
        except concurrent.futures.CancelledError:
            return None
        except _VerificationUnavailable as exc:
            self._note_unavailable(key, verifying.backup_id, exc.reason, exc.message)
            return None
        except Exception as exc:  # a bug: its type only (the message may hold secrets)
            log.error(
                "verification of backup %s failed unexpectedly: %s",
                verifying.backup_id,
                type(exc).__name__,
            )
            self._note_unavailable(
                key,
                verifying.backup_id,
                "VerificationError",
                f"verifying backup {verifying.backup_id} failed with an unexpected "
                f"{type(exc).__name__}; this is a bug of cleo-operator, please report it",
            )
            return None
        with self._lock:
            self._unavailable.pop(key, None)
        record = BackupVerification(
            backup_id=verdict.backup_id,
            time=rfc3339(verdict.finished),
            passed=verdict.passed,
            reason=verdict.reason[:128],
            message=clip(verdict.message),
            sequence=verifying.sequence,
        )
        status.fields["lastVerification"] = _dump(record)
        if verdict.passed:
            newest = current.last_successful_backup
            if newest is not None and newest.backup_id == verdict.backup_id:
                status.fields["lastVerifiedBackup"] = _dump(newest)
            else:
                previous = current.last_verified_backup
                if previous is None or previous.time <= verifying.backup_time:
                    status.fields["lastVerifiedBackup"] = _dump(
                        BackupRecord(
                            time=verifying.backup_time,
                            succeeded=True,
                            backup_id=verdict.backup_id,
                            sequence=verifying.sequence,
                        )
                    )
        return record

    def _note_unavailable(
        self, key: tuple[str, str], backup_id: str, reason: str, message: str
    ) -> None:
        retry_at = self.now() + datetime.timedelta(seconds=self.settings.retry_seconds)
        with self._lock:
            self._unavailable[key] = _Unavailable(
                backup_id=backup_id, reason=reason, message=message, retry_at=retry_at
            )
        log.warning("verification of backup %s cannot run now: %s", backup_id, message)

    def _verify(
        self,
        *,
        namespace: str,
        spec: CleoBackupSpec,
        tenant_spec: CleoTenantSpec,
        backup_id: str,
    ) -> VerificationResult:
        """Runs in the verification pool: restore into a scratch database and compare."""
        storage = self._storage(namespace, spec)
        keyring = self._keyring(namespace)
        admin = self._admin(tenant_spec.database.site)
        try:
            return verify_backup(
                storage=storage,
                backup_id=backup_id,
                keyring=keyring,
                admin=admin,
                tenant=spec.tenant,
                pg_restore=self.settings.pg_restore,
                work_dir=self.settings.work_dir,
            )
        except BackupError as exc:
            if exc.retryable:
                raise _VerificationUnavailable(exc.reason, exc.message) from None
            # A retry cannot help (the backup is gone, altered, another tenant's): a verdict.
            return VerificationResult(
                backup_id=backup_id,
                tenant=spec.tenant,
                passed=False,
                reason=exc.reason,
                message=exc.message,
                tables_checked=0,
                rows_checked=0,
                finished=self.now(),
                duration_seconds=0.0,
            )

    def _storage(self, namespace: str, spec: CleoBackupSpec) -> Storage:
        """The backup's storage as the operator can reach it."""
        destination = spec.destination
        if destination.pvc is not None:
            root = self.settings.volumes_dir
            claim = destination.pvc.claim_name
            if root is None:
                raise _VerificationUnavailable(
                    "VolumeNotReachable",
                    f"the operator cannot read PersistentVolumeClaim {namespace}/{claim}: to "
                    "verify backups on a volume, mount it in the operator at "
                    f"${VOLUMES_DIR_ENV}/{namespace}/{claim} (e.g. a ReadWriteMany volume), "
                    "or back up to S3",
                )
            folder = root / namespace / claim
            if destination.pvc.path:
                folder = folder / destination.pvc.path
            if not folder.is_dir():
                raise _VerificationUnavailable(
                    "VolumeNotReachable",
                    f"PersistentVolumeClaim {namespace}/{claim} is not mounted in the operator "
                    f"at ${VOLUMES_DIR_ENV}/{namespace}/{claim}, or has no backups at "
                    f"{destination.pvc.path or 'its root'} yet",
                )
            # The volume is the tenant's: nothing below its mount point is followed.
            return LocalStorage(folder, create=False, base=root / namespace / claim)
        s3 = destination.s3
        if s3 is None:
            raise _VerificationUnavailable(
                "UnknownDestination", f"spec.destination.type {destination.type!r} has no block"
            )
        secret = self.kube.get(SECRET, s3.credentials_secret, namespace=namespace)
        values = {k: secret_value(secret, k) or "" for k in (*S3_ENV, "AWS_SESSION_TOKEN")}
        try:
            credentials = S3Credentials.from_environment(values)
        except ValueError:
            raise _VerificationUnavailable(
                "S3CredentialsMissing",
                f"Secret {namespace}/{s3.credentials_secret} lacks {' or '.join(S3_ENV)}",
            ) from None
        return S3Storage(
            bucket=s3.bucket,
            prefix=s3.prefix or "",
            region=s3.region or "us-east-1",
            endpoint=s3.endpoint,
            credentials=credentials,
        )

    def _keyring(self, namespace: str) -> Keyring:
        name = self.settings.pod.keyring_secret
        secret = read_secret(self.kube, namespace=namespace, name=name)
        if secret is None:
            raise _VerificationUnavailable(
                "KeyringMissing", f"the tenant keyring Secret {namespace}/{name} does not exist"
            )
        try:
            return Keyring.from_secret_data(secret.data)
        except CryptoError as exc:
            raise _VerificationUnavailable(
                "KeyringUnreadable",
                f"the tenant keyring Secret {secret.where} cannot be read ({exc.reason})",
            ) from None

    def _admin(self, site_name: str) -> ConnectionInfo:
        """The site admin's login, for the scratch database."""
        if self.pools is None or self.credentials is None:
            raise _VerificationUnavailable(
                "NoSiteAccess",
                "the operator runs without site configuration (CLEO_SITES_FILE): verification "
                "needs the site admin's login to create scratch databases",
            )
        try:
            site = self.pools.site(site_name)
            if self.pools.breaker_state(site_name) == "open":
                raise _VerificationUnavailable(
                    "SiteUnavailable",
                    f"site {site_name!r} is failing (its circuit is open); verification waits",
                )
            login = self.credentials(site)
        except DataError as exc:
            raise _VerificationUnavailable(exc.reason, str(exc)) from None
        return ConnectionInfo.for_site(
            site, dbname=site.admin_database, user=login.user, password=login.password
        )


# --------------------------------------------------------------------------- observations


def _time_zone(spec: CleoBackupSpec) -> tuple[datetime.tzinfo, str]:
    """The schedule's time zone, and a note for messages when the operator lacks it."""
    if spec.time_zone is None:
        return datetime.UTC, ""
    try:
        return zoneinfo.ZoneInfo(spec.time_zone), ""
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        # The API server judges the CronJob's time zone; here it only shapes messages.
        return datetime.UTC, f" (time zone {spec.time_zone} is unknown to the operator: UTC)"


def _finished_at(record: BackupRecord) -> float:
    start = read_rfc3339(record.time)
    return (start.timestamp() if start else 0.0) + (record.duration_seconds or 0.0)


def _set_gauges(tenant: str, record: BackupRecord) -> None:
    metrics.LAST_SUCCESS.labels(tenant=tenant).set(_finished_at(record))
    if record.duration_seconds is not None:
        metrics.LAST_DURATION.labels(tenant=tenant).set(record.duration_seconds)
    if record.size_bytes is not None:
        metrics.LAST_SIZE.labels(tenant=tenant, kind="archive").set(record.size_bytes)
    if record.dump_size_bytes is not None:
        metrics.LAST_SIZE.labels(tenant=tenant, kind="dump").set(record.dump_size_bytes)


def _verifying_observation(backup_id: str, latest: BackupVerification | None) -> Observation:
    """While a verification runs, the previous verdict stands (Unknown before the first)."""
    status: ConditionStatus = (
        "Unknown" if latest is None else ("True" if latest.passed else "False")
    )
    previous = f"; the previous verification: {latest.message}" if latest else ""
    return Observation(
        status,
        "Verifying",
        clip(f"verifying backup {backup_id} (restoring it into a scratch database){previous}"),
    )


def _verification_due(
    spec: CleoBackupSpec, candidate: BackupRecord, latest: BackupVerification | None
) -> bool:
    """Whether `candidate` (the newest successful backup) is to be verified now."""
    if spec.verification is None or not spec.verification.enabled:
        return False
    if latest is None:
        return True  # the first backup is always verified
    if latest.backup_id == candidate.backup_id:
        return False
    if candidate.sequence is None or latest.sequence is None:
        return True
    return candidate.sequence - latest.sequence >= spec.verification.every_nth


def _last_backup_observation(current: CleoBackupStatus) -> Observation:
    if not current.history:
        return Observation("Unknown", "NoBackupYet", "no backup has run yet")
    newest = max(current.history, key=lambda r: r.start_time)
    when = f"the run started {newest.start_time}" + (f" (Job {newest.job})" if newest.job else "")
    if newest.succeeded:
        made = f"backup {newest.backup_id}" if newest.backup_id else "a backup"
        return Observation("True", newest.reason or "BackupSucceeded", clip(f"{when} made {made}"))
    return Observation(
        "False",
        newest.reason or "BackupFailed",
        clip(f"{when} failed: {newest.message or 'no details'}"),
    )


def _freshness(
    spec: CleoBackupSpec,
    current: CleoBackupStatus,
    tz: datetime.tzinfo,
    tz_note: str,
    now: datetime.datetime,
) -> tuple[Observation, float | None]:
    """BackupFresh, and in how many seconds it turns False (to be called again then)."""
    newest = current.last_successful_backup
    if newest is None:
        return Observation("Unknown", "NoBackupYet", "no backup has succeeded yet"), None
    if spec.schedule is None:
        return (
            Observation(
                "True", "OneOff", f"one-off backup {newest.backup_id} started {newest.time}"
            ),
            None,
        )
    try:
        interval = parse_cron(spec.schedule).interval(start=now.astimezone(tz).date())
    except CronError:  # refused by parse_backup_spec already
        interval = None
    made = read_rfc3339(newest.time)
    if interval is None or made is None:
        return Observation("Unknown", "NoInterval", "the schedule has no regular interval"), None
    stale_at = made + 2 * interval
    if now >= stale_at:
        return (
            Observation(
                "False",
                "Stale",
                clip(
                    f"the newest backup started {newest.time}, more than twice the schedule's "
                    f"interval ({_duration(interval)}) ago; stale since {rfc3339(stale_at)}"
                    + (" (spec.suspend is true)" if spec.suspend else "")
                    + tz_note
                ),
            ),
            None,
        )
    return (
        Observation(
            "True",
            "Fresh",
            f"the newest backup started {newest.time}; it is stale from {rfc3339(stale_at)} "
            f"(twice the schedule's interval, {_duration(interval)}){tz_note}",
        ),
        (stale_at - now).total_seconds() + 1.0,
    )


def _duration(delta: datetime.timedelta) -> str:
    seconds = int(delta.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    text = (
        (f"{days}d" if days else "")
        + (f"{hours}h" if hours else "")
        + (f"{minutes}m" if minutes else "")
    )
    return text or f"{seconds}s"


def _ready(
    *,
    spec: CleoBackupSpec,
    current: CleoBackupStatus,
    problem: Observation | None,
    failures: list[str],
    last: Observation,
    freshness: Observation,
    verified: Observation,
    tz: datetime.tzinfo,
    now: datetime.datetime,
) -> Observation:
    """True only when the tenant has a usable, fresh backup and backups work."""
    if problem is not None:
        return problem
    if failures:
        return Observation("False", "ApplyFailed", clip("could not apply: " + "; ".join(failures)))
    if last.status == "False":
        return Observation("False", "LastBackupFailed", last.message)
    newest = current.last_successful_backup
    if newest is None:
        if spec.schedule is None:
            waiting = "the one-off backup has not finished yet"
        else:
            waiting = _next_run_text(spec, tz, now)
        return Observation("False", "NoBackupYet", f"the tenant has no backup yet: {waiting}")
    if freshness.status == "False":
        return Observation("False", "BackupStale", freshness.message)
    if verified.status == "False":
        return Observation("False", "VerificationFailed", verified.message)
    size = f", {newest.size_bytes} bytes" if newest.size_bytes is not None else ""
    return Observation(
        "True", "BackupAvailable", f"backup {newest.backup_id} of {newest.time} is available{size}"
    )


def _next_run_text(spec: CleoBackupSpec, tz: datetime.tzinfo, now: datetime.datetime) -> str:
    if spec.suspend:
        return "the schedule is suspended (spec.suspend)"
    try:
        upcoming = parse_cron(spec.schedule or "").next_after(now, tz=tz)
    except CronError:
        upcoming = None
    if upcoming is None:
        return "the schedule has no next run"
    return f"the next scheduled run is due at {rfc3339(upcoming)}"


def _phase(
    *, spec: CleoBackupSpec, active: bool, blocked: bool, failed: bool, succeeded: bool
) -> BackupPhase:
    if active:
        return "Running"
    if spec.schedule is not None and spec.suspend:
        return "Suspended"
    if blocked:
        return "Pending"
    if failed:
        return "Failed"
    if succeeded:
        return "Succeeded"
    return "Pending" if spec.schedule is None else "Scheduled"


class _StatusBuilder(StatusBuilder):
    """The CleoBackup's status: written once, only if it changed."""

    set = StatusBuilder.condition

    def write(self, kube: KubeClient, *, phase: BackupPhase, current: CleoBackupStatus) -> bool:
        status = self.base(phase)
        # What this reconcile did not decide on keeps its value (the merge patch would
        # otherwise delete it: these keys are ours).
        if current.last_verification is not None:
            status["lastVerification"] = _dump(current.last_verification)
        if current.last_verified_backup is not None:
            status["lastVerifiedBackup"] = _dump(current.last_verified_backup)
        if current.cron_job_name is not None:
            status["cronJobName"] = current.cron_job_name
        for key, value in self.fields.items():
            if value is None:
                status.pop(key, None)
            else:
                status[key] = value
        written = write_status(kube, BACKUP, self.obj, status, owned_keys=RECONCILER_KEYS)
        return written is not None

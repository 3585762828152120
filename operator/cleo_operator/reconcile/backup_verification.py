"""Verification of new backups, in a thread pool of the operator's own.

Verification restores into a scratch database, which needs CREATEDB and CREATEROLE on the
site: the site admin's login, which only the operator holds (the admin only creates and
drops the scratch database and the throwaway unprivileged login that restores and reads
it: a dump is the tenant's code). So it runs in the operator, in a small pool of its own
threads (never in the reconcile's worker thread: a restore takes minutes), and a later
reconcile picks up its verdict. Every ``spec.verification.everyNth`` successful backup is
verified (the first one always).

Why apart from the reconciler: this is the one part of a CleoBackup's reconcile that keeps
state between calls (what runs, what could not run and when to try again) and reaches
storage, keys and sites; its reasons to change are the restore's, not the cluster's.

Verification of a PersistentVolumeClaim destination needs the volume in the operator's
pod at ``$CLEO_BACKUP_VOLUMES_DIR/<namespace>/<claim>`` (a ReadWriteMany volume, say).
Without it the Verified condition says so; S3 destinations need nothing.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import datetime
import hashlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from cleo_operator.api.backup import (
    BackupRecord,
    BackupVerification,
    CleoBackupSpec,
    CleoBackupStatus,
)
from cleo_operator.api.base import rfc3339
from cleo_operator.api.tenant import CleoTenantSpec
from cleo_operator.backup.connection import ConnectionInfo
from cleo_operator.backup.errors import BackupError
from cleo_operator.backup.object_stores import CredentialsUnavailable, operator_storage
from cleo_operator.backup.restore import VerificationResult, verify_backup
from cleo_operator.backup.storage import LocalStorage, Storage
from cleo_operator.crypto import CryptoError, Keyring
from cleo_operator.data.errors import DataError
from cleo_operator.data.pool import CredentialsProvider, SitePools
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.keys import read_secret
from cleo_operator.kube.kinds import SECRET
from cleo_operator.reconcile.backup_conditions import verification_due, verifying_observation
from cleo_operator.reconcile.backup_settings import VOLUMES_DIR_ENV, BackupSettings
from cleo_operator.reconcile.status import Observation, clip

__all__ = ["BackupVerifier", "VerificationStep"]

log = logging.getLogger(__name__)


_SETTLED_REASONS: Final = frozenset(
    {
        "IdentityNotShared",
        "CredentialsInvalid",
        "S3CredentialsMissing",
        "GcsCredentialsMissing",
        "AzureCredentialsMissing",
    }
)
"""Reasons that only the CleoBackup's spec or its credentials Secret decide: retrying them
every minute would only repeat the warning, so they stand until one of those changes."""


class _VerificationUnavailable(Exception):
    """The verification cannot run now (not a verdict on the backup)."""

    def __init__(self, reason: str, message: str, *, inputs: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.inputs = inputs
        """For a settled reason: what it was decided on (`_inputs`)."""


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
    inputs: str | None = None
    """Set for a settled reason: it stands, whatever the time, until `_inputs` differ."""


@dataclass
class VerificationStep:
    """What one reconcile learnt of a CleoBackup's verification."""

    verified: Observation
    """The Verified condition."""
    fields: dict[str, Any] = field(default_factory=dict)
    """Status keys to write: a finished verification's record (``lastVerification``,
    ``lastVerifiedBackup``)."""
    started: str | None = None
    """The backup id whose verification this step started."""
    requeue_after: float | None = None
    """Call again this soon (seconds): a verification runs, or may be retried then."""


class BackupVerifier:
    """Runs verifications of CleoBackups' new backups; shared by all worker threads.

    `pools` and `credentials` (the site admin's login per site) reach the sites; without
    them the Verified condition says that verification cannot run. Call `close` at
    shutdown.
    """

    def __init__(
        self,
        kube: KubeClient,
        *,
        settings: BackupSettings,
        pools: SitePools | None,
        credentials: CredentialsProvider | None,
        now: Callable[[], datetime.datetime],
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.pools = pools
        self.credentials = credentials
        self.now = now
        self._lock = threading.Lock()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, settings.verify_workers), thread_name_prefix="backup-verify"
        )
        self._verifying: dict[tuple[str, str], _Verifying] = {}
        self._unavailable: dict[tuple[str, str], _Unavailable] = {}

    def close(self) -> None:
        """Stop the pool (a running verification is abandoned)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def wait(self, timeout: float) -> bool:
        """Wait until no verification runs; False when some still run after `timeout`."""
        with self._lock:
            futures = [v.future for v in self._verifying.values()]
        _, pending = concurrent.futures.wait(futures, timeout=timeout)
        return not pending

    def forget(self, key: tuple[str, str]) -> None:
        """Drop what is remembered of a deleted CleoBackup; cancel its verification."""
        with self._lock:
            self._unavailable.pop(key, None)
            verifying = self._verifying.pop(key, None)
        if verifying is not None:
            verifying.future.cancel()

    def step(
        self,
        *,
        key: tuple[str, str],
        spec: CleoBackupSpec,
        tenant_spec: CleoTenantSpec | None,
        current: CleoBackupStatus,
        now: datetime.datetime,
        report_only: bool = False,
    ) -> VerificationStep:
        """Pick up a finished verification, start a due one; the Verified condition.

        `report_only` (a one-off whose source is gone, so its own spec says nothing of
        verification) starts nothing and reports what is known, never "disabled"."""
        namespace, name = key
        latest = current.last_verification
        fields: dict[str, Any] = {}
        with self._lock:
            verifying = self._verifying.get(key)
            if verifying is not None and verifying.future.done():
                del self._verifying[key]
        if verifying is not None and verifying.future.done():
            latest = self._take_verdict(key, verifying, fields, current) or latest
            verifying = None
        if report_only:
            if verifying is not None:
                return VerificationStep(
                    verifying_observation(verifying.backup_id, latest),
                    fields,
                    requeue_after=self.settings.pending_requeue_seconds,
                )
            return VerificationStep(_verdict(latest), fields)
        if spec.verification is None or not spec.verification.enabled:
            return VerificationStep(
                Observation(
                    "Unknown",
                    "VerificationDisabled",
                    "spec.verification.enabled is not true: archives are not proven to restore",
                ),
                fields,
            )
        pending = self.settings.pending_requeue_seconds
        if verifying is not None:
            return VerificationStep(
                verifying_observation(verifying.backup_id, latest), fields, requeue_after=pending
            )
        candidate = current.last_successful_backup
        if (
            candidate is not None
            and candidate.backup_id
            and verification_due(spec, candidate, latest)
        ):
            with self._lock:
                unavailable = self._unavailable.get(key)
            if (
                unavailable is not None
                and unavailable.inputs is not None
                and unavailable.inputs == self._inputs(namespace, spec)
            ):
                return VerificationStep(
                    Observation("Unknown", unavailable.reason, clip(unavailable.message)),
                    fields,
                )
            if (
                unavailable is not None
                and unavailable.inputs is None
                and unavailable.backup_id == candidate.backup_id
                and now < unavailable.retry_at
            ):
                return VerificationStep(
                    Observation("Unknown", unavailable.reason, clip(unavailable.message)),
                    fields,
                    requeue_after=(unavailable.retry_at - now).total_seconds(),
                )
            if tenant_spec is None:
                return VerificationStep(
                    Observation(
                        "Unknown",
                        "VerificationBlocked",
                        "verification waits until the tenant is in order (see the Ready condition)",
                    ),
                    fields,
                )
            self._start_verification(namespace, name, spec, tenant_spec, candidate)
            return VerificationStep(
                verifying_observation(candidate.backup_id, latest),
                fields,
                started=candidate.backup_id,
                requeue_after=pending,
            )
        return VerificationStep(_verdict(latest), fields)

    def _start_verification(
        self,
        namespace: str,
        name: str,
        spec: CleoBackupSpec,
        tenant_spec: CleoTenantSpec,
        candidate: BackupRecord,
    ) -> None:
        backup_id = str(candidate.backup_id)
        # In a copy of this context: the verification's spans are children of the
        # reconcile that started it (and its log lines name the CleoBackup).
        future = self._executor.submit(
            contextvars.copy_context().run,
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
        fields: dict[str, Any],
        current: CleoBackupStatus,
    ) -> BackupVerification | None:
        """Put a finished verification's record into `fields`; None if it could not run."""
        try:
            verdict = verifying.future.result()
        except concurrent.futures.CancelledError:
            return None
        except _VerificationUnavailable as exc:
            self._note_unavailable(
                key, verifying.backup_id, exc.reason, exc.message, inputs=exc.inputs
            )
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
        fields["lastVerification"] = record.to_api()
        if verdict.passed:
            newest = current.last_successful_backup
            if newest is not None and newest.backup_id == verdict.backup_id:
                fields["lastVerifiedBackup"] = newest.to_api()
            else:
                previous = current.last_verified_backup
                if previous is None or previous.time <= verifying.backup_time:
                    fields["lastVerifiedBackup"] = BackupRecord(
                        time=verifying.backup_time,
                        succeeded=True,
                        backup_id=verdict.backup_id,
                        sequence=verifying.sequence,
                    ).to_api()
        return record

    def _note_unavailable(
        self,
        key: tuple[str, str],
        backup_id: str,
        reason: str,
        message: str,
        *,
        inputs: str | None = None,
    ) -> None:
        retry_at = self.now() + datetime.timedelta(seconds=self.settings.retry_seconds)
        with self._lock:
            self._unavailable[key] = _Unavailable(
                backup_id=backup_id,
                reason=reason,
                message=message,
                retry_at=retry_at,
                inputs=inputs,
            )
        if inputs is not None:
            log.warning(
                "verification of backup %s cannot run until the CleoBackup or its credentials "
                "Secret changes: %s",
                backup_id,
                message,
            )
        else:
            log.warning("verification of backup %s cannot run now: %s", backup_id, message)

    def _secret_version(self, namespace: str, spec: CleoBackupSpec) -> str:
        """The resourceVersion of the CleoBackup's credentials Secret ("" for none)."""
        destination = spec.destination
        store = destination.object_store if destination is not None else None
        if store is None or store.credentials_secret is None:
            return ""
        secret = self.kube.get(SECRET, store.credentials_secret, namespace=namespace)
        if secret is None:
            return ""
        return str(secret.get("metadata", {}).get("resourceVersion", ""))

    def _inputs(self, namespace: str, spec: CleoBackupSpec, version: str | None = None) -> str:
        """What a settled reason was decided on: the spec and the Secret's resourceVersion."""
        if version is None:
            version = self._secret_version(namespace, spec)
        digest = hashlib.sha256(spec.model_dump_json().encode()).hexdigest()
        return f"{digest}/{version}"

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
        if destination is None:  # a spec with spec.from is resolved before it gets here
            raise _VerificationUnavailable(
                "UnknownDestination", "spec.from was not resolved into a destination"
            )
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
        store = destination.object_store
        secret_name = store.credentials_secret if store is not None else None
        secret = self.kube.get(SECRET, secret_name, namespace=namespace) if secret_name else None
        try:
            return operator_storage(
                spec, secret, environ=os.environ, limits=self.settings.store_read_limits
            )
        except CredentialsUnavailable as error:
            inputs = None
            if error.reason in _SETTLED_REASONS:
                version = str((secret or {}).get("metadata", {}).get("resourceVersion", ""))
                inputs = self._inputs(namespace, spec, version)
            raise _VerificationUnavailable(error.reason, str(error), inputs=inputs) from None

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


def _verdict(latest: BackupVerification | None) -> Observation:
    """The Verified condition of the newest verification."""
    if latest is None:
        return Observation("Unknown", "NotVerifiedYet", "no backup has been verified yet")
    if latest.passed:
        return Observation("True", "Verified", clip(latest.message))
    return Observation("False", latest.reason, clip(latest.message))

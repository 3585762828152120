"""Tenant databases on the cluster: provision, hand out credentials, rotate, check, drop.

The tenant reconciler calls :meth:`TenantDatabases.reconcile` once per reconcile of a
CleoTenant (after its namespace is active) and :meth:`TenantDatabases.finalize` on
deletion. Why it is built this way:

**Where the password's truth lives.** In one place: the credentials Secret in the
tenant's namespace (``cleo-database``), the very object the application reads. Every
reconcile converges the database role to the password in that Secret
(``ensure_tenant_database`` compares the stored SCRAM verifier and sets the password
only when it differs), so:

- a new password is set on the role *first* and written to the Secret *second*. A
  crash between the two leaves the Secret with the previous password, and the next
  reconcile puts that password back on the role: the application never holds a
  password the role does not have for longer than the operator is down. The
  rotation itself is then tried again, because its trigger was not recorded yet;
- a deleted Secret (or a deleted namespace) is a rotation: a fresh password is set
  and written. The old password is gone with the Secret, so nothing else could work;
- a Secret edited by hand (the password no longer matches the fingerprint recorded
  next to it, or is too short) is also a rotation: the role only ever gets passwords
  the operator generated (``secrets.token_urlsafe``).

What was handled is recorded *in the same write* as the password, as annotations of
the Secret: when the password was made (``lastPasswordRotation`` and the rotation
period count from it) and the last handled value of the on-demand rotation annotation
(``cleoai.io/rotate-database-password`` on the CleoTenant). A status write that fails
after a rotation therefore cannot cause a second rotation.

**Rolling the pods.** PostgreSQL holds one password per role. Sessions already open
survive a password change; new logins need the new one. The fingerprint returned to the
tenant reconciler (an HMAC keyed with the password over everything in the Secret, which
reveals nothing of the password) goes into the Deployment's pod-template checksum, so a
rotation rolls the pods right after the Secret is written, and pods of the old ReplicaSet
keep their open connections while the new ones start. The fingerprint is that of the
Secret as it is, so it changes only once the Secret holds a password the role already
has, never before: pods never start with a password the role lacks.

**A site that is down must not hold the reconcile.** Database work runs in a small
thread pool per site ("lane"), never in the reconcile's worker thread; the reconcile waits
for it at most ``wait_seconds`` and otherwise reports ``DatabaseReady=False`` /
``SiteUnavailable`` and asks to be called again, picking up the result then. At most one
operation per tenant is in flight. Once a site has been slow, later reconciles on it do
not wait at all until it answers again, so a dead site holding many tenants costs the
shared worker threads next to nothing; the data layer's circuit breaker then makes its
operations fail fast. Sites share no lane, pool or lock, so a dead site never delays a
tenant on a healthy one.

**Deletion.** ``deletionPolicy: Delete`` drops the database and role (only those that
carry the operator's mark); ``Retain`` leaves them, and the Secret stays in the retained
namespace, so the data stays usable. A ``before_drop`` hook lets the backup code hold the
drop until a last backup is taken.

Secret material (passwords, DATABASE_URLs) never reaches a log line, an exception, a
status field, an event or a repr: errors of the data layer are already redacted, and
errors of the Kubernetes API about the Secret are re-raised with the password removed.
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import datetime
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Final, Literal, TypedDict, TypeVar
from urllib.parse import quote

from cleo_operator.api.base import ConditionStatus, parse_duration, rfc3339
from cleo_operator.api.objects import KubeObject, ObjectRef, OwnerReference
from cleo_operator.api.tenant import CleoTenantSpec
from cleo_operator.core.times import read_rfc3339
from cleo_operator.data.errors import (
    AuthenticationFailed,
    DataError,
    InvalidTenantName,
    SiteUnavailable,
    UnknownSite,
    redact,
)
from cleo_operator.data.pool import PoolSettings, SitePools
from cleo_operator.data.sites import (
    CA_KEY,
    SITES_ENV,
    SITES_FILE_ENV,
    SiteConfig,
    site_config_from_env,
)
from cleo_operator.data.tenant_db import (
    check_tenant_connection,
    drop_tenant_database,
    ensure_tenant_database,
    site_client_values,
    tenant_database_name,
    tenant_role_name,
)
from cleo_operator.failover.errors import FailoverError
from cleo_operator.failover.tenant import database_site, failover_holding
from cleo_operator.kube.apply import needs_apply, with_hash
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import SECRET
from cleo_operator.kube.secrets import (
    AdminCredentialsFromSecrets,
    encode_secret_data,
    secret_value,
)
from cleo_operator.reconcile.status import Observation, clip
from cleo_operator.reconcile.tenant import PartResult, TenantContext, TenantEvent
from cleo_operator.render.meta import ORPHANED_LABEL, tenant_labels

log = logging.getLogger(__name__)

_T = TypeVar("_T")

CONDITION_TYPE: Final = "DatabaseReady"
"""The condition this module reports on the CleoTenant."""

TLS_CONDITION_TYPE: Final = "DatabaseTLS"
"""Whether connections to the tenant's site authenticate the server (does not gate Ready)."""

CREDENTIALS_SECRET: Final = "cleo-database"  # noqa: S105 - a name, not a password
"""Name of the credentials Secret in the tenant's namespace (``cleo-`` is reserved)."""

ROTATE_ANNOTATION: Final = "cleoai.io/rotate-database-password"
"""Set it on the CleoTenant to any new value to rotate the password now."""

FINGERPRINT_ANNOTATION: Final = "cleoai.io/password-fingerprint"
ROTATED_AT_ANNOTATION: Final = "cleoai.io/password-rotated-at"
ROTATION_REQUEST_ANNOTATION: Final = "cleoai.io/password-rotation-request"

PASSWORD_KEY: Final = "PGPASSWORD"  # noqa: S105 - a key name
# libpq's own environment variables, so that any libpq-based client in the pod (psql,
# psycopg, asyncpg with a DSN from DATABASE_URL...) connects without configuration.
SECRET_KEYS: Final = (
    "PGHOST",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    PASSWORD_KEY,
    "PGSSLMODE",
    "PGSSLROOTCERT",
    CA_KEY,
    "DATABASE_URL",
)

MIN_PASSWORD_LENGTH: Final = 32
"""Shorter passwords in the Secret were not made by the operator: they are replaced."""

_PASSWORD_BYTES: Final = 32  # token_urlsafe(32): 43 characters, 256 random bits
_FINGERPRINT_CONTEXT: Final = b"cleo-operator/database-password/v1/"


# --------------------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True, kw_only=True)
class DatabaseSettings:
    """How the operator runs tenant databases; defaults suit production."""

    secret_name: str = CREDENTIALS_SECRET
    """Name of the credentials Secret in each tenant's namespace (keep the cleo- prefix)."""
    wait_seconds: float = 2.0
    """Longest a reconcile waits for a site before it reports and returns (the work goes on)."""
    pending_requeue_seconds: float = 2.0
    """Call again this soon while an operation on a site is still running."""
    retry_seconds: float = 10.0
    """Call again this soon after a failure that may pass by itself (a site down)."""
    recheck_seconds: float = 60.0
    """Call again this soon after a failure someone must fix outside the tenant's spec
    (admin Secret, name collision, privileges): nothing would wake the tenant otherwise."""
    admin_secret_ttl_seconds: float = 30.0
    """Read a site's admin Secret again after this long (a rejected login reads it at once)."""
    pool: PoolSettings = dataclasses.field(default_factory=PoolSettings)
    """Connection pools and circuit breakers of the sites."""


# --------------------------------------------------------------------------- results


class DatabaseStatus(TypedDict, total=False):
    """``status.database`` of a CleoTenant (the keys of ``TenantDatabaseStatus``)."""

    site: str
    name: str
    user: str
    secretName: str
    lastPasswordRotation: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class DatabaseCondition:
    """The ``DatabaseReady`` condition to set on the CleoTenant."""

    status: ConditionStatus
    """True only after a real login as the tenant's role ran ``SELECT 1``."""
    reason: str
    """CamelCase reason (``Connected``, ``SiteUnavailable``, ``AuthenticationFailed``...)."""
    message: str
    """For people: what is wrong and what to do (never secret material)."""
    type: str = CONDITION_TYPE
    """The condition type."""

    @property
    def ok(self) -> bool | None:
        """True/False/None (Unknown), as the tenant reconciler's ``condition()`` takes it."""
        return None if self.status == "Unknown" else self.status == "True"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DatabaseOutcome:
    """What one :meth:`TenantDatabases.reconcile` found and did, for the tenant reconciler."""

    condition: DatabaseCondition | None
    """Set it on the tenant; None: the database is not enabled, remove ``DatabaseReady``."""
    status: DatabaseStatus | None
    """``status.database``; None: leave it out (the database is not enabled)."""
    fingerprint: str | None
    """Put it into the Deployment's pod-template checksum: it changes exactly when what the
    pods read from the Secret changes (password, host...), and reveals nothing of the
    password. None: no Secret yet."""
    secret_name: str | None
    """The Secret the Deployment consumes with ``envFrom`` (None: not enabled)."""
    secret: ObjectRef | None
    """The credentials Secret, for ``status.children`` (None while it does not exist).
    The module writes it itself (the order of password and Secret writes matters):
    do not apply it, and do not prune it."""
    requeue_after: float | None
    """Call again within this many seconds (an operation still running, a retry, the next
    scheduled rotation); None: no need."""
    rotation_request: str | None
    """The last handled value of the ``cleoai.io/rotate-database-password`` annotation."""
    events: tuple[str, ...] = ()
    """Significant actions, in words, to post as Events (never secret material)."""
    secret_written: bool = False
    """The Secret was written by this reconcile (a no-op reconcile writes nothing)."""
    in_progress: bool = False
    """An operation on the site is still running; its result comes with a later call."""

    @property
    def ready(self) -> bool:
        """Whether the database part lets the tenant be Ready (True when not enabled)."""
        return self.condition is None or self.condition.status == "True"


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinalizeOutcome:
    """What :meth:`TenantDatabases.finalize` did; release the finalizer only when ``done``."""

    done: bool
    """The database part of the deletion is complete."""
    message: str
    """What happened or what it waits for (for logs and events)."""
    retry_after: float | None = None
    """When not done: call again after this many seconds."""
    in_progress: bool = False
    """Not done because an operation on the site is still running (not because it failed)."""


BeforeDrop = Callable[[str, CleoTenantSpec], str | None]
"""Hook run before a ``Delete`` drops a tenant's database: returns None to go ahead, or
a message saying what it waits for (the backup issue: "waiting for the last backup")."""


# --------------------------------------------------------------------------- internals


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Stored:
    """The credentials as the Secret holds them, once checked."""

    password: str = dataclasses.field(repr=False)
    fingerprint: str
    rotated_at: datetime.datetime | None
    rotation_request: str | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Rotation:
    why: str
    at: datetime.datetime
    request: str | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Plan:
    """What one background operation on the site converges the tenant's database to."""

    uid: str
    site: str
    password: str = dataclasses.field(repr=False)
    connection_limit: int
    rotation: _Rotation | None
    basis: str | None
    """Fingerprint of the Secret's password the plan was made from (None: no Secret)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Provisioned:
    changes: tuple[str, ...]
    check_error: DataError | None
    """Why the tenant's own login failed, or None when ``SELECT 1`` worked."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Job:
    kind: Literal["ensure", "drop"]
    uid: str
    site: str
    future: concurrent.futures.Future[_Provisioned | None]
    plan: _Plan | None = None
    """What an ensure job converges to (None for a drop)."""


def new_password() -> str:
    """A fresh tenant password: 256 random bits, URL-safe (no quoting in DATABASE_URL)."""
    return secrets.token_urlsafe(_PASSWORD_BYTES)


def password_fingerprint(*, tenant: str, password: str) -> str:
    """An HMAC keyed with the password: equal for equal passwords, reveals nothing of them.

    Salted with the tenant's name, so equal fingerprints say nothing across tenants.
    """
    digest = hmac.new(password.encode(), _FINGERPRINT_CONTEXT + tenant.encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def credentials_fingerprint(values: Mapping[str, str]) -> str:
    """What goes into the Deployment's checksum: changes with any value the pods read.

    An HMAC keyed with the password over every key and value of the Secret: a new password
    rolls the pods, and so does a new host or port (a tenant moved to another site), while
    the result reveals nothing of the password to whoever reads the Deployment.
    """
    message = "\n".join(f"{key}={values[key]}" for key in sorted(values))
    key = values.get(PASSWORD_KEY, "").encode()
    digest = hmac.new(key, _FINGERPRINT_CONTEXT + message.encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def _live_fingerprint(secret: KubeObject | None) -> str | None:
    """The fingerprint of what the pods get from the live Secret (None: no Secret)."""
    if secret is None:
        return None
    data = secret.get("data") or {}
    # Only our keys: one added by hand does not reach the checksum on some paths only.
    values = {key: secret_value(secret, key) or "" for key in SECRET_KEYS if key in data}
    return credentials_fingerprint(values)


def rotation_request_pending(
    annotations: Mapping[str, str] | None, status_database: Mapping[str, object] | None
) -> bool:
    """Whether the tenant asks for a rotation not handled yet (for the event handler).

    Compares with ``status.database.passwordRotationRequest``, which `DatabasePart`
    reports once `TenantDatabaseStatus` has that field; until then any set annotation
    counts as pending and wakes the tenant (the reconcile is then a no-op).
    """
    wanted = ((annotations or {}).get(ROTATE_ANNOTATION) or "").strip()
    if not wanted:
        return False
    return (status_database or {}).get("passwordRotationRequest") != wanted


def _read_stored(secret: KubeObject | None, *, tenant: str) -> tuple[_Stored | None, str]:
    """The checked credentials of the live Secret, or None and why they cannot be used."""
    if secret is None:
        return None, "the credentials Secret does not exist (first provisioning, or deleted)"
    password = secret_value(secret, PASSWORD_KEY)
    if not password:
        return None, f"the credentials Secret has no readable {PASSWORD_KEY}"
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    fingerprint = password_fingerprint(tenant=tenant, password=password)
    recorded = str(annotations.get(FINGERPRINT_ANNOTATION) or "")
    if not hmac.compare_digest(fingerprint, recorded):
        return None, "the password in the credentials Secret was changed by hand"
    if len(password) < MIN_PASSWORD_LENGTH or "\x00" in password:
        return None, "the password in the credentials Secret is not one the operator made"
    request = str(annotations.get(ROTATION_REQUEST_ANNOTATION) or "") or None
    return (
        _Stored(
            password=password,
            fingerprint=fingerprint,
            rotated_at=read_rfc3339(annotations.get(ROTATED_AT_ANNOTATION)),
            rotation_request=request,
        ),
        "",
    )


def _rotation_due(
    stored: _Stored | None,
    missing_why: str,
    *,
    period: str | None,
    request: str | None,
    now: datetime.datetime,
) -> _Rotation | None:
    if stored is None:
        return _Rotation(why=missing_why, at=now, request=request)
    if request and request != stored.rotation_request:
        return _Rotation(
            why=f"requested with {ROTATE_ANNOTATION}={request!r}", at=now, request=request
        )
    if period:
        if stored.rotated_at is None:
            return _Rotation(
                why="the Secret does not say when its password was made",
                at=now,
                request=stored.rotation_request,
            )
        if now >= stored.rotated_at + parse_duration(period):
            return _Rotation(
                why=f"the password is older than passwordRotationPeriod {period}",
                at=now,
                request=stored.rotation_request,
            )
    return None


def _seconds_until_rotation(
    rotated_at: datetime.datetime | None, period: str | None, now: datetime.datetime
) -> float | None:
    if not period or rotated_at is None:
        return None
    due = rotated_at + parse_duration(period)
    return max(1.0, (due - now).total_seconds())


def _min_delay(*delays: float | None) -> float | None:
    present = [d for d in delays if d is not None]
    return min(present) if present else None


def _no_sites_hint(pools: SitePools) -> str:
    if pools.site_names:
        return ""
    return (
        " The operator has no site configuration at all: set CLEO_SITES_FILE (or CLEO_SITES) "
        "in its Deployment (the Helm chart's values.sites)."
    )


# --------------------------------------------------------------------------- the service


class TenantDatabases:
    """Tenant databases of one operator process; shared by all reconcile threads.

    Build it with :meth:`from_environment` at start, :meth:`close` it at shutdown.
    """

    def __init__(
        self,
        kube: KubeClient,
        pools: SitePools,
        *,
        credentials: AdminCredentialsFromSecrets | None = None,
        settings: DatabaseSettings | None = None,
        before_drop: BeforeDrop | None = None,
    ) -> None:
        self._kube = kube
        self._pools = pools
        self._credentials = credentials
        self._settings = settings or DatabaseSettings()
        self._before_drop = before_drop
        self._lock = threading.Lock()
        self._lanes: dict[str, concurrent.futures.ThreadPoolExecutor] = {}
        self._slow_sites: set[str] = set()
        self._jobs: dict[str, _Job] = {}
        self._tenant_locks: dict[str, threading.Lock] = {}
        self._finalizing: set[str] = set()
        self._closed = False

    @classmethod
    def from_environment(
        cls,
        kube: KubeClient,
        *,
        environ: Mapping[str, str] | None = None,
        settings: DatabaseSettings | None = None,
        before_drop: BeforeDrop | None = None,
    ) -> TenantDatabases:
        """Sites from ``$CLEO_SITES`` / ``$CLEO_SITES_FILE``, their pools, admin Secrets.

        With neither variable set the operator runs without sites (tenants that enable a
        database are told so in their condition); a configuration that is set but wrong
        raises :class:`~cleo_operator.data.errors.SiteConfigError` naming the field, for
        the CLI to refuse to start.
        """
        settings = settings or DatabaseSettings()
        env = os.environ if environ is None else environ
        sites: dict[str, SiteConfig] = {}
        if env.get(SITES_ENV) or env.get(SITES_FILE_ENV):
            sites = site_config_from_env(env)
            log.info("PostgreSQL sites configured: %s", ", ".join(sorted(sites)))
            for site in sorted(sites.values(), key=lambda s: s.name):
                if not site.verifies_server:
                    log.warning(
                        "site %s: sslMode %s does not verify the server's certificate: anything "
                        "on the network that can pose as %s:%s could collect the admin "
                        "password. Set sslMode verify-full and sslRootCert for this site.",
                        site.name,
                        site.sslmode,
                        site.host,
                        site.port,
                    )
        else:
            log.info("no PostgreSQL sites configured (CLEO_SITES_FILE/CLEO_SITES unset)")
        credentials = AdminCredentialsFromSecrets(
            kube, ttl_seconds=settings.admin_secret_ttl_seconds
        )
        pools = SitePools(sites, credentials=credentials, settings=settings.pool)
        return cls(kube, pools, credentials=credentials, settings=settings, before_drop=before_drop)

    @property
    def pools(self) -> SitePools:
        """The site pools (for the failover and backup code that shares them)."""
        return self._pools

    def tls_observation(self, site_name: str) -> Observation | None:
        """The ``DatabaseTLS`` condition for tenants of ``site_name`` (None: no such site)."""
        try:
            site = self._pools.site(site_name)
        except UnknownSite:
            return None
        return tls_observation(site)

    def close(self) -> None:
        """Stop the lanes (running operations are abandoned) and close the pools."""
        with self._lock:
            self._closed = True
            lanes, self._lanes = list(self._lanes.values()), {}
        for lane in lanes:
            lane.shutdown(wait=False, cancel_futures=True)
        self._pools.close()

    # -- reconcile ---------------------------------------------------------------------

    def reconcile(
        self,
        *,
        tenant: str,
        uid: str,
        spec: CleoTenantSpec,
        namespace: str,
        owner: OwnerReference,
        annotations: Mapping[str, str] | None,
        now: datetime.datetime,
    ) -> DatabaseOutcome:
        """Converge the tenant's database, role and credentials Secret; check a real login.

        Call it once the tenant's namespace is active. Returns within about
        ``wait_seconds`` whatever the site does. Raises only `KubeError` (reading the
        Secret failed: the API server's trouble, for the caller's backoff).
        """
        database = spec.database
        if not database.enabled:
            return DatabaseOutcome(
                condition=None,
                status=None,
                fingerprint=None,
                secret_name=None,
                secret=None,
                requeue_after=None,
                rotation_request=None,
            )
        settings = self._settings
        deadline = time.monotonic() + settings.wait_seconds
        live = self._kube.get(SECRET, settings.secret_name, namespace=namespace)
        stored, missing_why = _read_stored(live, tenant=tenant)
        try:
            # After a failover the primary is where the failover put it (an annotation on
            # the tenant), no longer spec.database.site.
            site_name = database_site(spec, annotations)
        except FailoverError as exc:
            site_name = database.site
            view = _View(
                tenant=tenant,
                site=site_name,
                namespace=namespace,
                secret_name=settings.secret_name,
                live=live,
                stored=stored,
            )
            return view.outcome(
                DatabaseCondition(status="False", reason=exc.reason, message=str(exc)),
                requeue_after=None,
            )
        view = _View(
            tenant=tenant,
            site=site_name,
            namespace=namespace,
            secret_name=settings.secret_name,
            live=live,
            stored=stored,
        )
        holder = failover_holding(annotations)
        if holder is not None:
            # A failover fences, promotes and repoints: touching the role or the Secret now
            # could re-open the old primary (split brain). Wait for it to finish.
            return view.outcome(
                DatabaseCondition(
                    status="Unknown",
                    reason="FailoverInProgress",
                    message=f"CleoFailover {holder} is moving the tenant's database",
                ),
                requeue_after=FAILOVER_RECHECK_SECONDS,
                in_progress=True,
            )
        lock = self._tenant_lock(tenant)
        if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return view.outcome(
                DatabaseCondition(
                    status="Unknown",
                    reason="Busy",
                    message="another operation on the tenant's database is running",
                ),
                requeue_after=settings.pending_requeue_seconds,
                in_progress=True,
            )
        try:
            return self._reconcile_locked(
                view,
                uid=uid,
                spec=spec,
                owner=owner,
                annotations=annotations or {},
                now=now,
                missing_why=missing_why,
                deadline=deadline,
            )
        finally:
            lock.release()

    def _reconcile_locked(
        self,
        view: _View,
        *,
        uid: str,
        spec: CleoTenantSpec,
        owner: OwnerReference,
        annotations: Mapping[str, str],
        now: datetime.datetime,
        missing_why: str,
        deadline: float,
    ) -> DatabaseOutcome:
        settings = self._settings
        database = spec.database
        tenant, site_name = view.tenant, view.site
        with self._lock:
            finalizing = uid in self._finalizing
        if finalizing:
            return view.outcome(
                DatabaseCondition(
                    status="False", reason="Deleting", message="the tenant is being deleted"
                ),
                requeue_after=None,
            )
        try:
            site = self._pools.site(site_name)
            tenant_database_name(tenant)
        except UnknownSite as exc:
            return view.failed(exc, hint=_no_sites_hint(self._pools), requeue_after=None)
        except InvalidTenantName as exc:
            return view.failed(exc, requeue_after=None)

        basis = view.stored.fingerprint if view.stored else None
        job = self._jobs.get(tenant)
        if job is not None:
            current = (
                job.kind == "ensure"
                and job.plan is not None
                and job.uid == uid
                and job.site == site_name
                and job.plan.connection_limit == database.connection_limit
                and job.plan.basis == basis
            )
            if not current:
                # An operation for an older plan: let it finish before starting another,
                # so two operations never race on the role's password.
                if not self._wait(job, deadline):
                    return view.pending(job.site, settings)
                self._jobs.pop(tenant, None)
                job = None
        request = (annotations.get(ROTATE_ANNOTATION) or "").strip() or None
        if job is None:
            rotation = _rotation_due(
                view.stored,
                missing_why,
                period=database.password_rotation_period,
                request=request,
                now=now,
            )
            if view.stored is not None and rotation is None:
                password = view.stored.password
            else:
                password = new_password()
            new_plan = _Plan(
                uid=uid,
                site=site_name,
                password=password,
                connection_limit=database.connection_limit,
                rotation=rotation,
                basis=basis,
            )
            try:
                job = self._submit_ensure(tenant, new_plan, site)
            except SiteUnavailable as exc:  # shutting down
                return view.failed(exc, requeue_after=settings.retry_seconds)
        if not self._wait(job, deadline):
            return view.pending(site_name, settings)
        self._jobs.pop(tenant, None)
        plan = job.plan
        assert plan is not None  # an ensure job always has its plan
        try:
            provisioned = job.future.result()
        except DataError as exc:
            return view.failed(exc, requeue_after=self._failure_delay(exc))
        except Exception as exc:
            return view.failed(
                _unexpected(exc, doing="provisioning the database"),
                requeue_after=settings.retry_seconds,
            )
        assert provisioned is not None  # ensure jobs return what they did

        # The role has plan.password now; make the Secret say so (a no-op when it does).
        rotation = plan.rotation
        if rotation is not None:
            rotated_at: datetime.datetime | None = rotation.at
            handled = rotation.request
        else:
            assert view.stored is not None  # no rotation means the Secret was usable
            rotated_at, handled = view.stored.rotated_at, view.stored.rotation_request
        desired = with_hash(
            self._desired_secret(
                view,
                site=site,
                owner=owner,
                password=plan.password,
                rotated_at=rotated_at,
                handled=handled,
            )
        )
        written = False
        live_labels = ((view.live or {}).get("metadata") or {}).get("labels") or {}
        if ORPHANED_LABEL in live_labels:
            # Adopted again (a tenant of the same name, after Retain): no longer orphaned.
            # The mark was set by a merge patch, so an apply would not remove it.
            self._kube.patch_merge(
                SECRET,
                view.secret_name,
                {"metadata": {"labels": {ORPHANED_LABEL: None}}},
                namespace=view.namespace,
            )
            written = True
        if needs_apply(desired, view.live):
            try:
                self._kube.apply(desired)
            except KubeError as exc:
                return view.failed(
                    _secret_write_error(exc, view, secrets=_secret_forms(plan.password)),
                    requeue_after=settings.pending_requeue_seconds,
                )
            written = True

        events: list[str] = []
        if rotation is not None:
            what = "set" if view.stored is None and view.live is None else "rotated"
            events.append(
                f"{what} the password of database {tenant_database_name(tenant)} on site "
                f"{site_name}: {rotation.why}"
            )
            log.info(
                "tenant %s: %s the database password (site %s): %s",
                tenant,
                what,
                site_name,
                rotation.why,
            )
        events.extend(f"database on site {site_name}: {change}" for change in provisioned.changes)
        fingerprint = credentials_fingerprint(
            self._secret_values(tenant, site=site, password=plan.password)
        )
        status = view.status(secret_exists=True, rotated_at=rotated_at)
        next_rotation = _seconds_until_rotation(rotated_at, database.password_rotation_period, now)
        # A new request that came in while an older operation ran: handle it soon.
        follow_up = (
            settings.pending_requeue_seconds if request is not None and request != handled else None
        )
        check = provisioned.check_error
        if check is not None:
            condition = DatabaseCondition(status="False", reason=check.reason, message=str(check))
            requeue = _min_delay(self._failure_delay(check), next_rotation, follow_up)
        else:
            condition = DatabaseCondition(
                status="True",
                reason="Connected",
                message=(
                    f"the tenant's role {tenant_role_name(tenant)} logs in to database "
                    f"{tenant_database_name(tenant)} on site {site_name} and runs queries"
                ),
            )
            requeue = _min_delay(next_rotation, follow_up)
        return DatabaseOutcome(
            condition=condition,
            status=status,
            fingerprint=fingerprint,
            secret_name=view.secret_name,
            secret=view.ref(),
            requeue_after=requeue,
            rotation_request=handled,
            events=tuple(events),
            secret_written=written,
        )

    # -- finalize ----------------------------------------------------------------------

    def finalize(
        self, *, tenant: str, uid: str, spec: CleoTenantSpec, namespace: str
    ) -> FinalizeOutcome:
        """The database part of deleting a tenant, by ``spec.deletionPolicy``.

        ``Retain`` keeps database, role and Secret. ``Delete`` drops the database and
        role (after ``before_drop`` agrees) and deletes the Secret. A database that was
        never enabled is not touched. Returns within about ``wait_seconds``; call again
        while ``done`` is False.
        """
        settings = self._settings
        deadline = time.monotonic() + settings.wait_seconds
        lock = self._tenant_lock(tenant)
        if not lock.acquire(timeout=settings.wait_seconds):
            return FinalizeOutcome(
                done=False,
                message="waiting for a running reconcile of the tenant's database",
                retry_after=settings.pending_requeue_seconds,
                in_progress=True,
            )
        try:
            outcome = self._finalize_locked(
                tenant=tenant, uid=uid, spec=spec, namespace=namespace, deadline=deadline
            )
        finally:
            lock.release()
        # The uid stays in `_finalizing` (a few bytes per deleted tenant): a reconcile that
        # read the tenant just before its deletion began may still arrive, and must not
        # provision again what was just dropped. A tenant made anew has a new uid.
        return outcome

    def _finalize_locked(
        self, *, tenant: str, uid: str, spec: CleoTenantSpec, namespace: str, deadline: float
    ) -> FinalizeOutcome:
        settings = self._settings
        database = spec.database
        with self._lock:
            self._finalizing.add(uid)  # no new provisioning from here on
        job = self._jobs.get(tenant)
        if job is not None and job.kind == "ensure":
            # A provisioning still running could re-create what the drop removes.
            if not self._wait(job, deadline):
                return FinalizeOutcome(
                    done=False,
                    message=f"waiting for a running operation on site {job.site!r} to finish",
                    retry_after=settings.pending_requeue_seconds,
                    in_progress=True,
                )
            self._jobs.pop(tenant, None)
            job = None
        if not database.enabled:
            return FinalizeOutcome(done=True, message="the tenant has no database enabled")
        if spec.deletion_policy == "Retain":
            try:
                self._orphan_secret(tenant=tenant, uid=uid, namespace=namespace)
            except KubeError as exc:
                return FinalizeOutcome(
                    done=False,
                    message=(
                        f"cannot cut the Secret {namespace}/{settings.secret_name} loose from "
                        f"the tenant ({exc.status} {exc.reason}); without that the garbage "
                        "collector would delete the credentials of the retained database"
                    ),
                    retry_after=settings.retry_seconds,
                )
            return FinalizeOutcome(
                done=True,
                message=(
                    f"deletionPolicy Retain: database {tenant_database_name(tenant)} and its "
                    f"role stay on site {database.site}, and the Secret "
                    f"{namespace}/{settings.secret_name} stays with the namespace"
                ),
            )
        try:
            site = self._pools.site(database.site)
        except UnknownSite as exc:
            log.warning("tenant %s: nothing to drop: %s", tenant, exc)
            return FinalizeOutcome(done=True, message=f"nothing dropped: {exc}")
        if job is None:
            if self._before_drop is not None:
                waiting = self._before_drop(tenant, spec)
                if waiting is not None:
                    return FinalizeOutcome(
                        done=False, message=waiting, retry_after=settings.retry_seconds
                    )
            try:
                job = self._submit_drop(tenant, uid, site)
            except SiteUnavailable as exc:
                return FinalizeOutcome(
                    done=False, message=str(exc), retry_after=settings.retry_seconds
                )
        if not self._wait(job, deadline):
            return FinalizeOutcome(
                done=False,
                message=f"dropping the database: site {site.name!r} has not answered yet",
                retry_after=settings.pending_requeue_seconds,
                in_progress=True,
            )
        self._jobs.pop(tenant, None)
        try:
            job.future.result()
        except DataError as exc:
            log.warning("tenant %s: cannot drop its database yet: %s", tenant, exc)
            return FinalizeOutcome(
                done=False, message=str(exc), retry_after=self._failure_delay(exc)
            )
        except Exception as exc:
            error = _unexpected(exc, doing="dropping the database")
            return FinalizeOutcome(
                done=False, message=str(error), retry_after=settings.retry_seconds
            )
        try:
            self._kube.delete(SECRET, settings.secret_name, namespace=namespace)
        except KubeError as exc:
            # A namespace that is going away refuses nothing but may answer oddly; the
            # credentials no longer work anyway (the role is gone).
            log.info("tenant %s: credentials Secret not deleted: %s", tenant, exc.reason)
        return FinalizeOutcome(
            done=True,
            message=(
                f"deletionPolicy Delete: dropped database {tenant_database_name(tenant)} and "
                f"its role on site {site.name}"
            ),
        )

    def _orphan_secret(self, *, tenant: str, uid: str, namespace: str) -> None:
        """Retain: drop the tenant's owner reference from the Secret and mark it orphaned.

        Otherwise the garbage collector deletes the Secret once the tenant is gone, and
        the retained database keeps a password nobody holds. A merge patch, not an
        apply: the mark must outlive the operator's field manager.
        """
        name = self._settings.secret_name
        secret = self._kube.get(SECRET, name, namespace=namespace)
        if secret is None:
            return
        meta = secret["metadata"]
        owners = meta.get("ownerReferences") or []
        kept = [o for o in owners if o.get("uid") != uid]
        if kept == owners and (meta.get("labels") or {}).get(ORPHANED_LABEL) == "true":
            return
        self._kube.patch_merge(
            SECRET,
            name,
            {"metadata": {"labels": {ORPHANED_LABEL: "true"}, "ownerReferences": kept}},
            namespace=namespace,
        )
        log.info("tenant %s: credentials Secret %s/%s kept (Retain)", tenant, namespace, name)

    # -- the work on the sites -----------------------------------------------------------

    def _tenant_lock(self, tenant: str) -> threading.Lock:
        with self._lock:
            return self._tenant_locks.setdefault(tenant, threading.Lock())

    def _lane(self, site: SiteConfig) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._closed:
                raise SiteUnavailable("the operator is shutting down.", site=site.name)
            lane = self._lanes.get(site.name)
            if lane is None:
                lane = concurrent.futures.ThreadPoolExecutor(
                    max_workers=max(2, site.pool_max_size),
                    thread_name_prefix=f"db-{site.name}",
                )
                self._lanes[site.name] = lane
            return lane

    def _submit_ensure(self, tenant: str, plan: _Plan, site: SiteConfig) -> _Job:
        future = self._lane(site).submit(self._provision, tenant, plan, site)
        job = _Job(kind="ensure", uid=plan.uid, site=site.name, future=future, plan=plan)
        self._jobs[tenant] = job
        return job

    def _submit_drop(self, tenant: str, uid: str, site: SiteConfig) -> _Job:
        future = self._lane(site).submit(self._drop, tenant, site)
        job = _Job(kind="drop", uid=uid, site=site.name, future=future)
        self._jobs[tenant] = job
        return job

    def _wait(self, job: _Job, deadline: float) -> bool:
        """Wait for ``job`` until ``deadline``; not at all while its site is known slow."""
        with self._lock:
            slow = job.site in self._slow_sites
        # A slow site's operations either fail fast now (its breaker is open) or hang:
        # give them a moment, not the whole budget, so dead sites cannot tie up workers.
        timeout = 0.05 if slow else max(0.0, deadline - time.monotonic())
        done, _ = concurrent.futures.wait([job.future], timeout=timeout)
        if not done:
            with self._lock:
                if job.site not in self._slow_sites:
                    log.warning(
                        "site %s has not answered within %.1fs; reconciles stop waiting for it "
                        "until it does",
                        job.site,
                        self._settings.wait_seconds,
                    )
                self._slow_sites.add(job.site)
            return False
        return True

    def _answered(self, site: str) -> None:
        with self._lock:
            if site in self._slow_sites:
                log.info("site %s answers again", site)
            self._slow_sites.discard(site)

    def _provision(self, tenant: str, plan: _Plan, site: SiteConfig) -> _Provisioned | None:
        """Runs in the site's lane: ensure database and role, then log in as the tenant."""
        try:
            result = self._as_admin(
                site,
                lambda: ensure_tenant_database(
                    self._pools,
                    site.name,
                    tenant=tenant,
                    password=plan.password,
                    connection_limit=plan.connection_limit,
                ),
            )
        except SiteUnavailable:
            raise
        except DataError:
            self._answered(site.name)  # it answered, with a refusal
            raise
        self._answered(site.name)
        try:
            check_tenant_connection(site, tenant=tenant, password=plan.password)
        except DataError as exc:
            return _Provisioned(changes=result.changes, check_error=exc)
        return _Provisioned(changes=result.changes, check_error=None)

    def _drop(self, tenant: str, site: SiteConfig) -> _Provisioned | None:
        """Runs in the site's lane: drop the tenant's database and role."""
        self._as_admin(site, lambda: drop_tenant_database(self._pools, site.name, tenant=tenant))
        self._answered(site.name)
        return None

    def _as_admin(self, site: SiteConfig, call: Callable[[], _T]) -> _T:
        """Run ``call``; when the admin login is refused, re-read the admin Secret once.

        A platform team that rotates the admin password updates the Secret; the cached
        copy may be older. Only when the Secret now says something else is the call
        tried again, so wrong credentials fail once, not twice.
        """
        try:
            return call()
        except AuthenticationFailed:
            if self._credentials is None:
                raise
            before = self._credentials.cached(site.name)
            self._credentials.invalidate(site.name)
            fresh = self._credentials(site)
            if before is not None and fresh == before:
                raise
            log.info("site %s: admin Secret changed; trying again with it", site.name)
            return call()

    def _failure_delay(self, error: DataError) -> float | None:
        if isinstance(error, UnknownSite | InvalidTenantName):
            return None  # only a spec change helps, and that wakes the tenant
        return self._settings.retry_seconds if error.retryable else self._settings.recheck_seconds

    def _desired_secret(
        self,
        view: _View,
        *,
        site: SiteConfig,
        owner: OwnerReference,
        password: str,
        rotated_at: datetime.datetime | None,
        handled: str | None,
    ) -> KubeObject:
        tenant = view.tenant
        annotations = {
            FINGERPRINT_ANNOTATION: password_fingerprint(tenant=tenant, password=password)
        }
        if rotated_at is not None:
            annotations[ROTATED_AT_ANNOTATION] = rfc3339(rotated_at)
        if handled is not None:
            annotations[ROTATION_REQUEST_ANNOTATION] = handled
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": view.secret_name,
                "namespace": view.namespace,
                "labels": dict(sorted(tenant_labels(tenant, component="database").items())),
                "annotations": annotations,
                "ownerReferences": [dict(owner)],
            },
            "type": "Opaque",
            "data": encode_secret_data(self._secret_values(tenant, site=site, password=password)),
        }

    @staticmethod
    def _secret_values(tenant: str, *, site: SiteConfig, password: str) -> dict[str, str]:
        """What the credentials Secret holds (see `SECRET_KEYS`)."""
        return {
            "PGDATABASE": tenant_database_name(tenant),
            "PGUSER": tenant_role_name(tenant),
            PASSWORD_KEY: password,
            **site_client_values(site, tenant=tenant, password=password),
        }


@dataclasses.dataclass(frozen=True, kw_only=True)
class _View:
    """What one reconcile knows before it acts: enough to report in every outcome."""

    tenant: str
    site: str
    namespace: str
    secret_name: str
    live: KubeObject | None = dataclasses.field(repr=False)
    stored: _Stored | None

    def ref(self) -> ObjectRef:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "namespace": self.namespace,
            "name": self.secret_name,
        }

    def status(
        self, *, secret_exists: bool, rotated_at: datetime.datetime | None
    ) -> DatabaseStatus:
        status: DatabaseStatus = {"site": self.site}
        try:
            status["name"] = tenant_database_name(self.tenant)
            status["user"] = tenant_role_name(self.tenant)
        except InvalidTenantName:
            pass  # reported by the condition; names are unknowable then
        if secret_exists:
            status["secretName"] = self.secret_name
        if rotated_at is not None:
            status["lastPasswordRotation"] = rfc3339(rotated_at)
        return status

    def outcome(
        self,
        condition: DatabaseCondition,
        *,
        requeue_after: float | None,
        in_progress: bool = False,
    ) -> DatabaseOutcome:
        """An outcome that changed nothing: the pods keep what the Secret holds now."""
        return DatabaseOutcome(
            condition=condition,
            status=self.status(
                secret_exists=self.live is not None,
                rotated_at=self.stored.rotated_at if self.stored else None,
            ),
            fingerprint=_live_fingerprint(self.live),
            secret_name=self.secret_name,
            secret=self.ref() if self.live is not None else None,
            requeue_after=requeue_after,
            rotation_request=self.stored.rotation_request if self.stored else None,
            in_progress=in_progress,
        )

    def failed(
        self, error: DataError, *, requeue_after: float | None, hint: str = ""
    ) -> DatabaseOutcome:
        return self.outcome(
            DatabaseCondition(status="False", reason=error.reason, message=str(error) + hint),
            requeue_after=requeue_after,
        )

    def pending(self, site: str, settings: DatabaseSettings) -> DatabaseOutcome:
        return self.outcome(
            DatabaseCondition(
                status="False",
                reason=SiteUnavailable.reason,
                message=(
                    f"site {site!r} has not answered within {settings.wait_seconds:.1f}s; the "
                    "operation goes on in the background and its result shows on the next "
                    "reconcile. Check that the site runs and is reachable from the operator."
                ),
            ),
            requeue_after=settings.pending_requeue_seconds,
            in_progress=True,
        )


class SecretWriteFailed(DataError):
    """The credentials Secret could not be written (its namespace going away, RBAC...)."""

    reason = "SecretWriteFailed"


class UnexpectedError(DataError):
    """A bug or an error nobody classified; the message names its type only."""

    reason = "InternalError"


def _secret_forms(password: str) -> tuple[str, ...]:
    """Every form the password takes in a request about the Secret (to redact them all)."""
    return (password, quote(password, safe=""), base64.b64encode(password.encode()).decode())


def _secret_write_error(
    exc: KubeError, view: _View, *, secrets: tuple[str, ...]
) -> SecretWriteFailed:
    message = redact(exc.message, secrets)[:500]
    return SecretWriteFailed(
        f"cannot write the credentials Secret {view.namespace}/{view.secret_name}: "
        f"{exc.status} {exc.reason}: {message}. Is the namespace active, and may the "
        "operator write Secrets there?",
        site=view.site,
    )


def _unexpected(exc: BaseException, *, doing: str) -> UnexpectedError:
    # Only the type: the message comes from code that never checked it for secrets
    # (the plaintext password is in the same frames), so it goes nowhere.
    log.error("unexpected %s while %s", type(exc).__name__, doing)
    return UnexpectedError(
        f"unexpected {type(exc).__name__} while {doing}. This is a bug of cleo-operator; "
        "please report it with the operator's version."
    )


def tls_observation(site: SiteConfig) -> Observation:
    """Whether connections to ``site`` authenticate the server, as a condition (truthfully)."""
    if site.sslmode == "verify-full":
        against = "the site's CA" if site.ssl_root_cert else "the system's trusted CAs"
        return Observation(
            "True",
            "ServerVerified",
            f"connections to site {site.name!r} check the server's certificate against "
            f"{against} and its host name (sslMode verify-full)",
        )
    if site.sslmode == "verify-ca":
        return Observation(
            "True",
            "ServerVerified",
            f"connections to site {site.name!r} check the server's certificate against the "
            "site's CA, but not its host name (sslMode verify-ca)",
        )
    return Observation(
        "False",
        "ServerNotVerified",
        f"site {site.name!r} uses sslMode {site.sslmode}: neither the operator's admin "
        "connections nor the tenant's pods (PGSSLMODE) check the server's certificate, so "
        "anything on the network that can pose as the site could collect passwords. The "
        "platform team sets sslMode verify-full and sslRootCert in the site configuration.",
    )


FAILOVER_RECHECK_SECONDS: Final = 5.0
"""While a failover holds the tenant, look again this often."""

# --------------------------------------------------------------------------- as a tenant part


class DatabasePart:
    """The tenant database as a `TenantPart` of `TenantReconciler` (``parts=[...]``)."""

    def __init__(self, databases: TenantDatabases) -> None:
        self.databases = databases

    def reconcile(self, ctx: TenantContext) -> PartResult:
        outcome = self.databases.reconcile(
            tenant=ctx.name,
            uid=ctx.uid,
            spec=ctx.spec,
            namespace=ctx.namespace,
            owner=ctx.owner,
            annotations=ctx.annotations,
            now=ctx.now,
        )
        result = PartResult(requeue_after=outcome.requeue_after)
        tls = (
            self.databases.tls_observation(outcome.status["site"])
            if outcome.status is not None and outcome.status.get("site")
            else None
        )
        if tls is not None:
            result.informational[TLS_CONDITION_TYPE] = tls
        else:
            result.remove_conditions.add(TLS_CONDITION_TYPE)
        if outcome.condition is not None:
            condition = outcome.condition
            result.conditions[condition.type] = Observation(
                condition.status, condition.reason, clip(condition.message)
            )
        elif any(
            isinstance(item, Mapping) and item.get("type") == CONDITION_TYPE
            for item in ctx.status.get("conditions") or []
        ):
            # Disabled after it was enabled: conditions are never removed from status, so
            # say what is true now instead of leaving the last verdict standing.
            result.conditions[CONDITION_TYPE] = Observation(
                "True",
                "NotEnabled",
                "spec.database.enabled is false: the operator no longer manages the database "
                "(it was left on its site, and its Secret in the namespace)",
            )
        status: dict[str, object] | None = None
        if outcome.status is not None:
            status = dict(outcome.status)
            if outcome.rotation_request is not None:
                status["passwordRotationRequest"] = outcome.rotation_request
        result.status["database"] = status
        if outcome.fingerprint is not None:
            result.fingerprints["database"] = outcome.fingerprint
        # Only a Secret that exists goes into envFrom: pods never wait for a missing one.
        if outcome.secret is not None:
            result.database_secret = outcome.secret_name
        for event in outcome.events:
            log.info("tenant %s: %s", ctx.name, event)
            result.events.append(TenantEvent("Database", event))
        return result

    def finalize(self, ctx: TenantContext, *, delete: bool) -> bool:
        """Drop (Delete) or keep (Retain) the database; ``delete`` is spec.deletionPolicy's."""
        del delete  # the same as ctx.spec.deletion_policy, which finalize reads itself
        outcome = self.databases.finalize(
            tenant=ctx.name, uid=ctx.uid, spec=ctx.spec, namespace=ctx.namespace
        )
        log.info("tenant %s: database: %s", ctx.name, outcome.message)
        return outcome.done

"""Tenant databases on the cluster: provision, hand out credentials, rotate, check, drop.

The tenant reconciler (through `DatabasePart`) calls :meth:`TenantDatabases.reconcile`
once per reconcile of a CleoTenant (after its namespace is active) and
:meth:`TenantDatabases.finalize` on deletion. Why it is built this way:

**Where the password's truth lives.** In one place: the credentials Secret in the
tenant's namespace (``cleo-database``, see `database_secret`), the very object the
application reads. Every reconcile converges the database role to the password in that
Secret (``ensure_tenant_database`` compares the stored SCRAM verifier and sets the
password only when it differs), so:

- a new password is set on the role *first* and written to the Secret *second*. A
  crash between the two leaves the Secret with the previous password, and the next
  reconcile puts that password back on the role: the application never holds a
  password the role does not have for longer than the operator is down. The
  rotation itself is then tried again, because its trigger was not recorded yet;
- a deleted Secret (or a deleted namespace) is a rotation: a fresh password is set
  and written. The old password is gone with the Secret, so nothing else could work;
- a Secret edited by hand is also a rotation (see `database_passwords`).

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

**A site that is down must not hold the reconcile.** Database work runs in its site's
lane (`site_lanes`), never in the reconcile's worker thread; the reconcile waits for it
at most ``wait_seconds`` and otherwise reports ``DatabaseReady=False`` /
``SiteUnavailable`` and asks to be called again, picking up the result then. At most one
operation per tenant is in flight. Sites share no lane, pool or lock, so a dead site
never delays a tenant on a healthy one; the data layer's circuit breaker makes a dead
site's operations fail fast.

**Deletion.** ``deletionPolicy: Delete`` drops the database and role (only those that
carry the operator's mark); ``Retain`` leaves them, and the Secret stays in the retained
namespace, so the data stays usable. A ``before_drop`` hook lets the backup code hold the
drop until a last backup is taken.

Secret material (passwords, DATABASE_URLs) never reaches a log line, an exception, a
status field, an event or a repr: errors of the data layer are already redacted, and
errors of the Kubernetes API about the Secret are re-raised with the password removed.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Final, Literal, TypeVar

from cleo_operator.api.objects import OwnerReference
from cleo_operator.api.tenant import CleoTenantSpec
from cleo_operator.data.errors import (
    AuthenticationFailed,
    DataError,
    InvalidTenantName,
    SiteUnavailable,
    UnknownSite,
)
from cleo_operator.data.pool import PoolSettings, SitePools
from cleo_operator.data.sites import SITES_ENV, SITES_FILE_ENV, SiteConfig, site_config_from_env
from cleo_operator.data.tenant_db import (
    check_tenant_connection,
    drop_tenant_database,
    ensure_tenant_database,
    tenant_database_name,
    tenant_role_name,
)
from cleo_operator.failover.errors import FailoverError
from cleo_operator.failover.tenant import database_site, failover_holding
from cleo_operator.kube.apply import needs_apply, with_hash
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import SECRET
from cleo_operator.kube.secrets import AdminCredentialsFromSecrets
from cleo_operator.reconcile.database_errors import secret_write_failed, unexpected
from cleo_operator.reconcile.database_outcome import (
    DatabaseCondition,
    DatabaseOutcome,
    DatabaseView,
    FinalizeOutcome,
    tls_observation,
)
from cleo_operator.reconcile.database_passwords import (
    ROTATE_ANNOTATION,
    PasswordChoice,
    choose_password,
    recorded_after,
    seconds_until_rotation,
)
from cleo_operator.reconcile.database_secret import (
    CREDENTIALS_SECRET,
    credentials_fingerprint,
    credentials_secret_ref,
    credentials_values,
    read_stored_password,
    render_credentials_secret,
)
from cleo_operator.reconcile.site_lanes import SiteLanes
from cleo_operator.reconcile.status import Observation
from cleo_operator.render.meta import ORPHANED_LABEL

log = logging.getLogger(__name__)

_T = TypeVar("_T")

FAILOVER_RECHECK_SECONDS: Final = 5.0
"""While a failover holds the tenant, look again this often."""


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


BeforeDrop = Callable[[str, CleoTenantSpec], str | None]
"""Hook run before a ``Delete`` drops a tenant's database: returns None to go ahead, or
a message saying what it waits for (the backup issue: "waiting for the last backup")."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Plan:
    """What one background operation on the site converges the tenant's database to."""

    uid: str
    site: str
    credentials: PasswordChoice
    connection_limit: int
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
        self._lanes = SiteLanes(wait_seconds=self._settings.wait_seconds)
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._tenant_locks: dict[str, threading.Lock] = {}
        self._finalizing: set[str] = set()

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
        self._lanes.close()
        self._pools.close()

    def operations_ended(self, timeout: float) -> bool:
        """After `close`: wait until no database operation runs in a site's lane any more,
        `timeout` seconds at most; False when some still run."""
        return self._lanes.ended(timeout)

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
            return DatabaseOutcome(condition=None, status=None)
        settings = self._settings
        deadline = time.monotonic() + settings.wait_seconds
        live = self._kube.get(SECRET, settings.secret_name, namespace=namespace)
        stored, missing_why = read_stored_password(live, tenant=tenant)
        moved: FailoverError | None = None
        try:
            # After a failover the primary is where the failover put it (an annotation on
            # the tenant), no longer spec.database.site.
            site_name = database_site(spec, annotations)
        except FailoverError as exc:
            site_name, moved = database.site, exc
        secret = credentials_secret_ref(namespace=namespace, name=settings.secret_name)
        view = DatabaseView(tenant=tenant, site=site_name, secret=secret, live=live, stored=stored)
        if moved is not None:
            return view.outcome(
                DatabaseCondition(status="False", reason=moved.reason, message=str(moved)),
                requeue_after=None,
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
        view: DatabaseView,
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
                    return view.pending(
                        job.site,
                        waited=settings.wait_seconds,
                        requeue_after=settings.pending_requeue_seconds,
                    )
                self._jobs.pop(tenant, None)
                job = None
        request = (annotations.get(ROTATE_ANNOTATION) or "").strip() or None
        if job is None:
            choice = choose_password(
                view.stored,
                missing_why,
                period=database.password_rotation_period,
                request=request,
                now=now,
            )
            new_plan = _Plan(
                uid=uid,
                site=site_name,
                credentials=choice,
                connection_limit=database.connection_limit,
                basis=basis,
            )
            try:
                job = self._submit_ensure(tenant, new_plan, site)
            except SiteUnavailable as exc:  # shutting down
                return view.failed(exc, requeue_after=settings.retry_seconds)
        if not self._wait(job, deadline):
            return view.pending(
                site_name,
                waited=settings.wait_seconds,
                requeue_after=settings.pending_requeue_seconds,
            )
        self._jobs.pop(tenant, None)
        plan = job.plan
        assert plan is not None  # an ensure job always has its plan
        try:
            provisioned = job.future.result()
        except DataError as exc:
            return view.failed(exc, requeue_after=self._failure_delay(exc))
        except Exception as exc:
            return view.failed(
                unexpected(exc, doing="provisioning the database"),
                requeue_after=settings.retry_seconds,
            )
        assert provisioned is not None  # ensure jobs return what they did

        # The role has the plan's password now; make the Secret say so (a no-op when it does).
        record = recorded_after(plan.credentials, view.stored, tenant=tenant)
        rotation = plan.credentials.rotation
        desired = with_hash(
            render_credentials_secret(
                view.secret, tenant=tenant, owner=owner, site=site, record=record
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
                error = secret_write_failed(
                    exc, secret=view.secret, site=view.site, password=record.password
                )
                return view.failed(error, requeue_after=settings.pending_requeue_seconds)
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
        handled = record.rotation_request
        period = database.password_rotation_period
        next_rotation = seconds_until_rotation(record.rotated_at, period, now)
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
        values = credentials_values(tenant, site=site, password=record.password)
        return DatabaseOutcome(
            condition=condition,
            status=view.status(secret_exists=True, rotated_at=record.rotated_at),
            fingerprint=credentials_fingerprint(values),
            secret_name=view.secret_name,
            secret=view.secret,
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
            return self._still_running("waiting for a running reconcile of the tenant's database")
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

    def _still_running(self, message: str) -> FinalizeOutcome:
        """Not done: an operation is still running (not a failure); look again soon."""
        return FinalizeOutcome(
            done=False,
            message=message,
            retry_after=self._settings.pending_requeue_seconds,
            in_progress=True,
        )

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
                return self._still_running(
                    f"waiting for a running operation on site {job.site!r} to finish"
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
            waiting = self._before_drop(tenant, spec) if self._before_drop is not None else None
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
            return self._still_running(
                f"dropping the database: site {site.name!r} has not answered yet"
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
            error = unexpected(exc, doing="dropping the database")
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

    def _submit_ensure(self, tenant: str, plan: _Plan, site: SiteConfig) -> _Job:
        future = self._lanes.submit(
            site.name, site.pool_max_size, lambda: self._provision(tenant, plan, site)
        )
        job = _Job(kind="ensure", uid=plan.uid, site=site.name, future=future, plan=plan)
        self._jobs[tenant] = job
        return job

    def _submit_drop(self, tenant: str, uid: str, site: SiteConfig) -> _Job:
        future = self._lanes.submit(site.name, site.pool_max_size, lambda: self._drop(tenant, site))
        job = _Job(kind="drop", uid=uid, site=site.name, future=future)
        self._jobs[tenant] = job
        return job

    def _wait(self, job: _Job, deadline: float) -> bool:
        """Wait for ``job`` until ``deadline``; only a moment while its site is known slow."""
        return self._lanes.wait(job.site, job.future, deadline)

    def _provision(self, tenant: str, plan: _Plan, site: SiteConfig) -> _Provisioned | None:
        """Runs in the site's lane: ensure database and role, then log in as the tenant."""
        password = plan.credentials.password
        try:
            result = self._as_admin(
                site,
                lambda: ensure_tenant_database(
                    self._pools,
                    site.name,
                    tenant=tenant,
                    password=password,
                    connection_limit=plan.connection_limit,
                ),
            )
        except SiteUnavailable:
            raise
        except DataError:
            self._lanes.answered(site.name)  # it answered, with a refusal
            raise
        self._lanes.answered(site.name)
        try:
            check_tenant_connection(site, tenant=tenant, password=password)
        except DataError as exc:
            return _Provisioned(changes=result.changes, check_error=exc)
        return _Provisioned(changes=result.changes, check_error=None)

    def _drop(self, tenant: str, site: SiteConfig) -> _Provisioned | None:
        """Runs in the site's lane: drop the tenant's database and role."""
        self._as_admin(site, lambda: drop_tenant_database(self._pools, site.name, tenant=tenant))
        self._lanes.answered(site.name)
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

"""The steps of a failover, a switchover and a drill: what each does, idempotently.

The reconciler (``reconcile/failover.py``) decides *which* step runs and records it on
status; this module says *what* a step does and how it ended (:class:`StepOutcome`). Every
step can run again after an interruption and converge, because it reads the world before
it changes it: a fence already in place is not applied twice, a server already promoted
is not promoted again, a Secret that already points to the new primary is not written.

The order is the guard against split brain and against data loss:

    preflight   the target is a healthy standby of the tenant's primary, the lag is within
                spec.maxLagBytes, and no other failover holds the tenant (the lock).
                Nothing has changed when it fails.
    fence       writers stopped (Deployment at zero), the old primary fenced (NOLOGIN,
                database read-only, sessions ended) where it answers.
    check-lag   Switchover: wait until the standby has replayed everything the fenced
                primary wrote (no data lost, or no switchover: the fence is undone).
                Failover: record the estimated loss (bytes and seconds).
    promote     pg_promote on the target; open the tenant's role and database there.
    repoint     the tenant's primary site (annotation) and its credentials Secret.
    rollout     the Deployment back to its size with new pods; wait until available. With
                a pooler, only once every pooler pod goes to the new primary
                (``failover.pooler``): until then the writers stay at zero.
    verify      log in as the tenant's role with the Secret's password and write.

A failure before ``promote`` has started rolls back (:meth:`Procedure.roll_back`): the old
primary is opened again and the writers come back; after that, nothing is rolled back,
because the standby may already take writes and opening the old primary again would be
the split brain this order exists to prevent.

Why one module of more than 800 lines: the steps are methods of one `Procedure` because
they share its clients, settings and slice deadline, and because the guard against split
brain is their order and the roll-back rule above, which must be read in one place. The
parts that stand alone already live apart (fencing, probe, samples, steps, workload, drill).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

from cleo_operator.api.errors import SpecError
from cleo_operator.api.failover import CleoFailoverSpec
from cleo_operator.api.objects import KubeObject
from cleo_operator.api.tenant import CleoTenantSpec, parse_tenant_spec
from cleo_operator.backup.connection import ConnectionInfo
from cleo_operator.backup.errors import BackupError
from cleo_operator.core.times import read_rfc3339
from cleo_operator.data.errors import (
    DataError,
    SiteUnavailable,
    TenantDatabaseMissing,
    UnknownSite,
)
from cleo_operator.data.pool import CredentialsProvider, SitePools
from cleo_operator.data.replication import promote
from cleo_operator.data.sites import SiteConfig
from cleo_operator.data.tenant_db import tenant_database_name, tenant_role_name
from cleo_operator.failover.drill import BackupSource, restore_drill
from cleo_operator.failover.errors import FailoverError
from cleo_operator.failover.fencing import fence_state, fence_tenant, unfence_tenant
from cleo_operator.failover.pooler import pooler_route
from cleo_operator.failover.probe import (
    LagEstimate,
    ServerState,
    measure_lag,
    primary_insert_lsn,
    server_state,
    standby_position,
    tenant_database_present,
)
from cleo_operator.failover.samples import LAG_ANNOTATION, LagSample, LagSamples
from cleo_operator.failover.steps import TRACE_ANNOTATION, StepRecord
from cleo_operator.failover.tenant import (
    LOCK_ANNOTATION,
    LockHolder,
    acquire_lock,
    database_site,
    set_primary_site,
)
from cleo_operator.failover.workload import (
    hold_workload,
    read_credentials,
    release_workload,
    repoint_credentials,
    rollout_state,
    verify_reads,
    verify_writes,
)
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import DEPLOYMENT, FAILOVER, TENANT
from cleo_operator.observability.tracing import context_from_traceparent, span, traceparent
from cleo_operator.render.child import WORKLOAD_NAME
from cleo_operator.render.tenant import tenant_namespace

__all__ = [
    "SOURCE_ANNOTATION",
    "TARGET_ANNOTATION",
    "ConditionChange",
    "FailoverSettings",
    "Move",
    "Procedure",
    "StepOutcome",
]

logger = logging.getLogger(__name__)


SOURCE_ANNOTATION: Final = "cleoai.io/failover-source"
"""On the CleoFailover: the site that was the tenant's primary when it started."""
TARGET_ANNOTATION: Final = "cleoai.io/failover-target"
"""On the CleoFailover: the site it promotes (fixed by preflight, whatever the tenant's
spec says later)."""

FENCED_CONDITION: Final = "OldPrimaryFenced"


@dataclasses.dataclass(frozen=True, kw_only=True)
class FailoverSettings:
    """How failovers run; the defaults suit production."""

    credentials_secret: str = "cleo-database"  # noqa: S105 - a name
    """Name of the tenant's credentials Secret (what the database part writes)."""
    operator_namespace: str | None = None
    """The operator's namespace: the pooler's server host is qualified with it as the
    tenant's pooler part does (`render.pooler.pooler_server_host`)."""
    cluster_domain: str = "cluster.local"
    """The cluster's DNS domain (as `reconcile.pooler.PoolerSettings.cluster_domain`)."""
    promote_wait_seconds: int = 60
    """How long ``pg_promote`` may take before the promote step tries again."""
    catchup_timeout_seconds: float = 60.0
    """Switchover: how long the fenced primary's WAL may take to be replayed on the
    standby; after that the switchover is abandoned (and the fence undone)."""
    failover_catchup_seconds: float = 5.0
    """Failover with an old primary that still answers: wait this long for the standby to
    replay its last WAL before promoting (what is left is counted as lost)."""
    rollout_timeout_seconds: float = 600.0
    """How long the new pods may take to be available before the rollout step fails."""
    step_timeout_seconds: float = 120.0
    """A step that keeps failing with errors that may pass (a site down) fails after this."""
    wait_slice_seconds: float = 10.0
    """Longest one reconcile waits inside a step before it hands the thread back."""
    poll_seconds: float = 0.2
    """How often a waiting step looks again."""
    retry_seconds: float = 2.0
    """Call again this soon after an error that may pass."""
    fence_retry_seconds: float = 15.0
    """After a failover: how often to try to fence an old primary that did not answer."""
    drill_site: str | None = None
    """Site for a drill's scratch restore (a writable server; a streaming standby is
    read-only). None: the target site, when it takes writes."""
    pg_restore: str = "pg_restore"
    """The pg_restore program drills restore with."""
    work_dir: str | None = None
    """Folder for a drill's decrypted dump while it is restored (default: the temp folder)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConditionChange:
    """A condition a step sets on the CleoFailover."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str


@dataclasses.dataclass(kw_only=True)
class StepOutcome:
    """How one run of a step ended."""

    state: Literal["Succeeded", "Failed", "Skipped", "Running"]
    """Running: not finished (waiting); call again after ``requeue_after``."""
    message: str
    """What happened, for people (the step's message)."""
    reason: str | None = None
    """Failed: why, one CamelCase word."""
    requeue_after: float | None = None
    """Running: call again this soon."""
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Status fields to set (camelCase): newPrimary, estimatedRPOBytes..."""
    conditions: list[ConditionChange] = dataclasses.field(default_factory=list)
    """Conditions to set."""
    memory: dict[str, str] = dataclasses.field(default_factory=dict)
    """Annotations of the CleoFailover to write before the outcome is recorded."""
    plan: list[str] | None = None
    """Dry run: what would be done."""


@dataclasses.dataclass(kw_only=True)
class Move:
    """One CleoFailover as the steps see it."""

    name: str
    """The CleoFailover's name."""
    namespace: str
    """Its namespace (the tenant's)."""
    uid: str
    spec: CleoFailoverSpec
    annotations: Mapping[str, str]
    """Its annotations (the procedure's memory: source and target sites, a lag sample)."""

    @property
    def tenant(self) -> str:
        return self.spec.tenant

    @property
    def holder(self) -> LockHolder:
        return LockHolder(name=self.name, uid=self.uid)

    @property
    def source(self) -> str:
        """The old primary's site (known once preflight succeeded)."""
        return self._remembered(SOURCE_ANNOTATION)

    @property
    def target(self) -> str:
        """The site to promote (known once preflight succeeded)."""
        return self._remembered(TARGET_ANNOTATION)

    def _remembered(self, key: str) -> str:
        value = self.annotations.get(key)
        if not value:
            raise FailoverError(
                f"annotation {key} of CleoFailover {self.namespace}/{self.name} is missing, "
                "though its preflight succeeded; the procedure cannot tell which sites it "
                "moves between. Do not edit the operator's annotations; create a new "
                "CleoFailover.",
                reason="StateLost",
            )
        return value


def _is_done(obj: KubeObject) -> bool:
    return (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _lag_text(lag: LagEstimate) -> str:
    size = "unknown" if lag.bytes is None else f"{lag.bytes} bytes"
    secs = "unknown" if lag.seconds is None else f"{lag.seconds:.1f}s"
    return f"{size}, {secs}"


class Procedure:
    """Runs steps; shared by the reconcile threads (it keeps no per-failover state)."""

    def __init__(
        self,
        kube: KubeClient,
        pools: SitePools,
        *,
        credentials: CredentialsProvider | None = None,
        settings: FailoverSettings | None = None,
        backups: BackupSource | None = None,
        lag_samples: LagSamples | None = None,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.kube = kube
        self.pools = pools
        self.credentials = credentials
        self.settings = settings or FailoverSettings()
        self.backups = backups
        self.lag_samples = lag_samples or LagSamples()
        self.now = now
        self._steps: dict[str, Callable[[Move, StepRecord], StepOutcome]] = {
            "preflight": self.preflight,
            "fence": self.fence,
            "check-lag": self.check_lag,
            "promote": self.promote,
            "repoint": self.repoint,
            "rollout": self.rollout,
            "verify": self.verify,
            "restore": self.restore,
            "check-standby": self.check_standby,
        }

    def run(self, move: Move, record: StepRecord) -> StepOutcome:
        """Run step ``record.name`` once; errors that may pass become Running + requeue.

        Traced as ``failover <step>`` under the CleoFailover's trace (`TRACE_ANNOTATION`),
        linked to the reconcile that runs it; the first reconcile's trace becomes the
        failover's when the step writes the procedure's memory anyway."""
        reconcile = traceparent()
        parent = context_from_traceparent(move.annotations.get(TRACE_ANNOTATION))
        attributes = {
            "cleo.failover": move.name,
            "cleo.namespace": move.namespace,
            "cleo.tenant": move.tenant,
            "cleo.step": record.name,
            "cleo.failover_type": str(move.spec.type),
        }
        with span(
            f"failover {record.name}", attributes, context=parent, link=parent is not None
        ) as current:
            outcome = self._run(move, record)
            if current.is_recording():
                current.set_attribute("cleo.step_state", outcome.state)
                if outcome.reason:
                    current.set_attribute("cleo.reason", outcome.reason)
        if parent is None and reconcile is not None and outcome.memory:
            outcome.memory.setdefault(TRACE_ANNOTATION, reconcile)
        return outcome

    def _run(self, move: Move, record: StepRecord) -> StepOutcome:
        step = self._steps[record.name]
        try:
            return step(move, record)
        except FailoverError as error:
            return self._failed_or_retry(record, error.message, error.reason, error.retryable)
        except DataError as error:
            return self._failed_or_retry(record, str(error), error.reason, error.retryable)
        except BackupError as error:
            return self._failed_or_retry(record, error.message, error.reason, error.retryable)

    def _failed_or_retry(
        self, record: StepRecord, message: str, reason: str, retryable: bool
    ) -> StepOutcome:
        if retryable and not self._past(record, self.settings.step_timeout_seconds):
            return StepOutcome(
                state="Running",
                message=f"retrying: {message}",
                reason=reason,
                requeue_after=self.settings.retry_seconds,
            )
        if retryable:
            message = f"gave up after {self.settings.step_timeout_seconds:.0f}s: {message}"
        return StepOutcome(state="Failed", message=message, reason=reason)

    def _past(self, record: StepRecord, seconds: float) -> bool:
        started = read_rfc3339(record.start_time)
        if started is None:
            return False
        return (self.now() - started).total_seconds() >= seconds

    def _slice_end(self) -> float:
        return time.monotonic() + self.settings.wait_slice_seconds

    def _site(self, name: str) -> SiteConfig:
        return self.pools.site(name)

    # -- preflight ----------------------------------------------------------------------

    def _tenant(self, move: Move) -> tuple[KubeObject, CleoTenantSpec]:
        obj = self.kube.get(TENANT, move.tenant)
        if obj is None:
            raise FailoverError(
                f"CleoTenant {move.tenant!r} (spec.tenant) does not exist", reason="TenantNotFound"
            )
        try:
            spec = parse_tenant_spec(obj.get("spec") or {})
        except SpecError as error:
            raise FailoverError(
                f"CleoTenant {move.tenant!r} has an invalid spec: {error}", reason="InvalidTenant"
            ) from None
        return obj, spec

    def _others_running(self, move: Move) -> list[str]:
        names = []
        for obj in self.kube.list(FAILOVER, namespace=move.namespace):
            meta = obj["metadata"]
            spec = obj.get("spec") or {}
            if meta.get("uid") == move.uid or spec.get("tenant") != move.tenant:
                continue
            if spec.get("type") == "Drill":
                continue  # a drill changes nothing, so it never stands in a failover's way
            status = obj.get("status") or {}
            started = any(
                s.get("state") != "Pending" and s.get("name") != "preflight"
                for s in status.get("steps") or []
            )
            if status.get("phase") == "Running" and started:
                names.append(str(meta["name"]))
        return sorted(names)

    def _is_active(self, move: Move, holder: LockHolder) -> bool:
        obj = self.kube.get(FAILOVER, holder.name, namespace=move.namespace)
        return obj is not None and obj["metadata"].get("uid") == holder.uid and not _is_done(obj)

    def _sample(self, move: Move, site: str) -> LagSample | None:
        """The newest lag sampled before ``site`` was lost (annotation, else memory)."""
        stamped = LagSample.from_annotation(move.annotations.get(LAG_ANNOTATION))
        remembered = self.lag_samples.latest(site)
        candidates = [s for s in (stamped, remembered) if s is not None and s.site == site]
        return max(candidates, key=lambda s: s.at) if candidates else None

    def preflight(self, move: Move, record: StepRecord) -> StepOutcome:
        """Check everything, change nothing (but take the lock, unless a dry run)."""
        del record
        spec = move.spec
        tenant_obj, tenant_spec = self._tenant(move)
        namespace = tenant_namespace(name=move.tenant, spec=tenant_spec)
        if namespace != move.namespace:
            raise FailoverError(
                f"a CleoFailover of tenant {move.tenant!r} must be created in the tenant's "
                f"namespace {namespace!r}, not {move.namespace!r}",
                reason="WrongNamespace",
            )
        if not tenant_spec.database.enabled:
            raise FailoverError(
                f"tenant {move.tenant!r} has no database (spec.database.enabled is false): "
                "there is nothing to fail over",
                reason="NoDatabase",
            )
        annotations = (tenant_obj.get("metadata") or {}).get("annotations") or {}
        # First, because a failover in the middle of its work has changed what the rest
        # of the checks would see (the tenant's primary, for one).
        holder = LockHolder.parse(annotations.get(LOCK_ANNOTATION))
        others = self._others_running(move)
        if holder is not None and holder != move.holder and self._is_active(move, holder):
            others = sorted({*others, holder.name})
        if others:
            raise FailoverError(
                f"CleoFailover(s) {', '.join(others)} of tenant {move.tenant!r} are running; "
                "two failovers of one tenant never run at once. Wait for them to end.",
                reason="FailoverInProgress",
            )
        source = database_site(tenant_spec, annotations)
        try:
            source_site = self._site(source)
        except UnknownSite as error:
            raise FailoverError(str(error), reason=error.reason) from None
        target = spec.target_site or tenant_spec.failover.standby_site or source_site.standby
        if target is None:
            raise FailoverError(
                f"no site to fail over to: set spec.targetSite, the tenant's "
                f"spec.failover.standbySite, or sites.{source}.standby in the operator's "
                "site configuration",
                reason="NoStandbySite",
            )
        if target == source:
            raise FailoverError(
                f"site {target!r} already holds tenant {move.tenant!r}'s primary (after an "
                "earlier failover, the tenant's standbySite is its primary); name another "
                "spec.targetSite, or rebuild a standby first",
                reason="AlreadyPrimary",
            )
        try:
            self._site(target)
        except UnknownSite as error:
            raise FailoverError(str(error), reason=error.reason) from None

        try:
            target_state = server_state(self.pools, target)
        except DataError as error:
            raise FailoverError(
                f"the target site {target!r} is not healthy: {error}", reason="TargetUnhealthy"
            ) from None
        primary_state = self._primary_state(move, source)
        notes = self._check_target(move, source, target, target_state, primary_state)
        if not tenant_database_present(self.pools, target, tenant=move.tenant):
            raise FailoverError(
                f"the target site {target!r} has no copy of tenant {move.tenant!r}'s database "
                f"{tenant_database_name(move.tenant)!r} (made by the operator): it is not a "
                f"standby of site {source!r}, or has not replayed the database's creation yet",
                reason="NotAStandby",
            )
        lag = self._preflight_lag(move, source, target, target_state, primary_state)
        if spec.max_lag_bytes is not None:
            if lag.bytes is None:
                raise FailoverError(
                    f"spec.maxLagBytes is {spec.max_lag_bytes}, but how far site {target!r} is "
                    f"behind cannot be known ({lag.how}); unset spec.maxLagBytes in a new "
                    "CleoFailover to fail over anyway",
                    reason="LagUnknown",
                )
            if lag.bytes > spec.max_lag_bytes:
                raise FailoverError(
                    f"site {target!r} is {lag.bytes} bytes of WAL behind site {source!r}, more "
                    f"than spec.maxLagBytes ({spec.max_lag_bytes}); nothing was changed. Wait "
                    "until the standby catches up, then create a new CleoFailover.",
                    reason="LagTooHigh",
                )
        if spec.type == "Switchover" and target_state.replay_paused:
            raise FailoverError(
                f"replay is paused on site {target!r}, so it would never catch up and the "
                "switchover would lose data; nothing was changed. Resume it with "
                "pg_wal_replay_resume() and create a new CleoFailover.",
                reason="ReplayPaused",
            )
        summary = (
            f"site {target!r} is a healthy standby of site {source!r} (behind by "
            f"{_lag_text(lag)}); " + "; ".join(notes)
        )
        memory = {SOURCE_ANNOTATION: source, TARGET_ANNOTATION: target}
        if spec.dry_run:
            return StepOutcome(
                state="Succeeded",
                message=f"dry run: {summary}",
                memory=memory,
                plan=self._plan(move, source, target, lag, primary_state),
            )
        if spec.type == "Drill":
            # No lock: a drill changes nothing, and must never stand in the way of a real
            # failover (an automatic one in the middle of a long restore, say).
            return StepOutcome(state="Succeeded", message=summary, memory=memory)
        acquire_lock(
            self.kube,
            move.tenant,
            move.holder,
            is_active=lambda holder: self._is_active(move, holder),
        )
        return StepOutcome(
            state="Succeeded",
            message=f"{summary}; tenant {move.tenant!r} is held by this failover",
            memory=memory,
        )

    def _primary_state(self, move: Move, source: str) -> ServerState | None:
        """The old primary's state; None when it does not answer."""
        try:
            return server_state(self.pools, source)
        except SiteUnavailable:
            if move.spec.type == "Switchover":
                raise FailoverError(
                    f"the primary site {source!r} does not answer; a switchover needs both "
                    "servers. Create a CleoFailover of type Failover instead.",
                    reason="PrimaryUnavailable",
                ) from None
            return None
        except DataError as error:
            # It answers, but cannot be read: then it could not be fenced either, and a
            # live primary that cannot be fenced is how split brain starts.
            raise FailoverError(
                f"the primary site {source!r} answers but the operator cannot use it ({error}); "
                "it could not be fenced. Fix the site admin's access, or stop that server, "
                "then create a new CleoFailover.",
                reason="PrimaryNotFenceable",
            ) from None

    def _check_target(
        self,
        move: Move,
        source: str,
        target: str,
        target_state: ServerState,
        primary_state: ServerState | None,
    ) -> list[str]:
        kind = move.spec.type
        notes: list[str] = []
        if primary_state is None:
            notes.append(f"the primary site {source!r} does not answer")
        elif primary_state.in_recovery and kind != "Failover":
            raise FailoverError(
                f"site {source!r}, the tenant's primary, is in recovery (a standby); a "
                f"{kind} needs a primary. Use type Failover.",
                reason="PrimaryNotPrimary",
            )
        else:
            notes.append(f"the primary site {source!r} answers")
        if (
            primary_state is not None
            and primary_state.system_identifier != target_state.system_identifier
        ):
            raise FailoverError(
                f"site {target!r} is not a standby of site {source!r}: they are different "
                "database clusters (system identifiers differ). Fix spec.targetSite or the "
                "tenant's spec.failover.standbySite.",
                reason="NotAStandby",
            )
        if not target_state.in_recovery:
            if kind == "Failover" and self._old_primary_quiet(move, source, primary_state):
                notes.append(
                    f"site {target!r} is already a primary (promoted by an earlier failover, "
                    "maybe of another tenant on the same site); it will not be promoted again"
                )
            else:
                raise FailoverError(
                    f"site {target!r} is not a standby (it is not in recovery), and the tenant "
                    f"still takes writes on site {source!r}: moving it there would lose them "
                    "(or make two primaries). If a failover stopped after promoting it, fence "
                    "the tenant on the old primary first (see docs/failover.md)",
                    reason="NotAStandby",
                )
        elif kind == "Switchover" and not target_state.receiving:
            raise FailoverError(
                f"site {target!r} does not stream from site {source!r} right now (its WAL "
                "receiver is not streaming), so it could not catch up and the switchover "
                "would lose data; nothing was changed",
                reason="TargetNotStreaming",
            )
        return notes

    def _old_primary_quiet(
        self, move: Move, source: str, primary_state: ServerState | None
    ) -> bool:
        """Whether the tenant can have written nothing on the old primary lately.

        True when the old primary is gone or in recovery, or when the tenant is fenced
        there (what a failover that failed after promoting leaves behind). Then moving
        the tenant to an already promoted target loses nothing written since; otherwise
        it would lose everything the tenant wrote on the old primary after the promotion.
        """
        if primary_state is None or primary_state.in_recovery:
            return True
        try:
            return fence_state(self.pools, source, tenant=move.tenant).fenced
        except DataError:
            return False

    def _preflight_lag(
        self,
        move: Move,
        source: str,
        target: str,
        target_state: ServerState,
        primary_state: ServerState | None,
    ) -> LagEstimate:
        if primary_state is not None and not primary_state.in_recovery:
            if target_state.in_recovery:
                return measure_lag(self.pools, primary=source, standby=target)
            return LagEstimate(bytes=None, seconds=None, how="the target is no standby any more")
        sample = self._sample(move, source)
        if sample is not None:
            return LagEstimate(
                bytes=sample.bytes,
                seconds=sample.seconds,
                how=f"sampled at {sample.at.isoformat()} before site {source!r} was lost",
            )
        return LagEstimate(
            bytes=None,
            seconds=None,
            how=f"site {source!r} does not answer and no lag was sampled before",
        )

    def _plan(
        self,
        move: Move,
        source: str,
        target: str,
        lag: LagEstimate,
        primary_state: ServerState | None,
    ) -> list[str]:
        ns, tenant = move.namespace, move.tenant
        role, database = tenant_role_name(tenant), tenant_database_name(tenant)
        site = self._site(target)
        deployment = self.kube.get(DEPLOYMENT, WORKLOAD_NAME, namespace=ns)
        replicas = int(((deployment or {}).get("spec") or {}).get("replicas", 1))
        if move.spec.type == "Drill":
            restore_site = self.settings.drill_site or target
            return [
                f"check-lag: measure how far site {target!r} is behind site {source!r} "
                f"(now {_lag_text(lag)}): the data a failover now would lose",
                f"restore: restore the latest verified backup of tenant {tenant!r} into a "
                f"scratch database on site {restore_site!r}, compare every table, drop it",
                f"check-standby: log in as {role} to {database} on site {target!r} and read",
                "nothing of production changes",
            ]
        workload = (
            f"scale Deployment {ns}/{WORKLOAD_NAME} from {replicas} replica(s) to 0"
            if deployment is not None
            else "no workload to stop"
        )
        fence = (
            f"revoke LOGIN of role {role}, make database {database} read-only and end its "
            f"sessions on site {source!r}"
            if primary_state is not None
            else f"site {source!r} does not answer: fence it as soon as it answers again"
        )
        if move.spec.type == "Switchover":
            lag_line = (
                f"check-lag: wait until site {target!r} has replayed all WAL of site "
                f"{source!r} (now behind by {_lag_text(lag)}); undo the fence if it does not "
                f"within {self.settings.catchup_timeout_seconds:.0f}s"
            )
        else:
            lag_line = (
                f"check-lag: record the data lost (now estimated at {_lag_text(lag)}: {lag.how})"
            )
        return [
            f"fence: {workload}; {fence}",
            lag_line,
            f"promote: pg_promote site {target!r}; open role {role} and database {database} there",
            f"repoint: record site {target!r} as tenant {tenant!r}'s primary; point Secret "
            f"{ns}/{self.settings.credentials_secret} to {site.host}:{site.port}",
            f"rollout: Deployment {ns}/{WORKLOAD_NAME} back to {replicas} replica(s), all pods "
            "new; wait until available"
            if deployment is not None
            else "rollout: no workload to roll",
            f"verify: log in as {role} to {database} on site {target!r} and write",
        ]

    # -- fence --------------------------------------------------------------------------

    def fence(self, move: Move, record: StepRecord) -> StepOutcome:
        del record
        hold = hold_workload(self.kube, move.namespace, failover=move.name)
        workload = (
            f"writers stopped (Deployment {WORKLOAD_NAME} from {hold.previous_replicas} to 0)"
            if hold.exists
            else "no workload to stop"
        )
        source = move.source
        try:
            fenced = fence_tenant(self.pools, source, tenant=move.tenant)
        except SiteUnavailable as error:
            if move.spec.type != "Failover":
                raise FailoverError(
                    f"the primary site {source!r} stopped answering ({error}); a switchover "
                    "cannot go on without it",
                    reason="PrimaryUnavailable",
                ) from None
            message = (
                f"{workload}; the old primary site {source!r} does not answer: it is fenced "
                "as soon as it answers again"
            )
            return StepOutcome(
                state="Succeeded",
                message=message,
                conditions=[
                    ConditionChange(
                        type=FENCED_CONDITION,
                        status="False",
                        reason="Unreachable",
                        message=f"site {source!r} did not answer; the operator keeps trying "
                        "to fence it (revoke the tenant's LOGIN there)",
                    )
                ],
            )
        except TenantDatabaseMissing:
            return StepOutcome(
                state="Succeeded",
                message=f"{workload}; site {source!r} has no database of the tenant to fence",
                conditions=[
                    ConditionChange(
                        type=FENCED_CONDITION,
                        status="True",
                        reason="NothingToFence",
                        message=f"site {source!r} has no database of the tenant",
                    )
                ],
            )
        done = "; ".join(fenced.changes) or "already fenced"
        return StepOutcome(
            state="Succeeded",
            message=f"{workload}; site {source!r}: {done}",
            conditions=[
                ConditionChange(
                    type=FENCED_CONDITION,
                    status="True",
                    reason="Fenced",
                    message=f"the tenant's role cannot log in on site {source!r} and its "
                    "database there is read-only",
                )
            ],
        )

    # -- check-lag ----------------------------------------------------------------------

    def check_lag(self, move: Move, record: StepRecord) -> StepOutcome:
        if move.spec.type == "Switchover":
            return self._catch_up(move, record)
        if move.spec.type == "Failover":
            return self._estimate_loss(move)
        return self._drill_lag(move)

    def _catch_up(self, move: Move, record: StepRecord) -> StepOutcome:
        """Switchover: wait until the standby replayed everything the fenced primary wrote."""
        source, target = move.source, move.target
        try:
            wanted = primary_insert_lsn(self.pools, source)
        except SiteUnavailable as error:
            raise FailoverError(
                f"the primary site {source!r} stopped answering ({error}) before the standby "
                "caught up; the switchover is abandoned",
                reason="PrimaryUnavailable",
            ) from None
        end = self._slice_end()
        while True:
            position = standby_position(self.pools, target)
            behind = max(0, wanted - position.replayed)
            if behind == 0:
                return StepOutcome(
                    state="Succeeded",
                    message=f"site {target!r} has replayed all WAL of the fenced primary "
                    f"{source!r}: no data is lost",
                    fields={"estimatedRPOBytes": 0, "estimatedRPOSeconds": 0.0},
                )
            if self._past(record, self.settings.catchup_timeout_seconds):
                raise FailoverError(
                    f"site {target!r} did not catch up with site {source!r} within "
                    f"{self.settings.catchup_timeout_seconds:.0f}s ({behind} bytes behind); "
                    "the switchover is abandoned so that no data is lost",
                    reason="CatchUpTimeout",
                )
            if time.monotonic() >= end:
                return StepOutcome(
                    state="Running",
                    message=f"waiting for site {target!r} to replay {behind} more bytes",
                    requeue_after=self.settings.poll_seconds,
                )
            time.sleep(self.settings.poll_seconds)

    def _estimate_loss(self, move: Move) -> StepOutcome:
        """Failover: wait a moment for the standby if the old primary answers; count the rest."""
        source, target = move.source, move.target
        try:
            answering = not server_state(self.pools, source).in_recovery
        except SiteUnavailable:
            answering = False
        if not answering:
            return self._loss_from_sample(move)
        wanted = primary_insert_lsn(self.pools, source)
        deadline = time.monotonic() + self.settings.failover_catchup_seconds
        while True:
            position = standby_position(self.pools, target)
            if position.replayed >= wanted or time.monotonic() >= deadline:
                break
            time.sleep(self.settings.poll_seconds)
        # Promotion replays what was received; only what never arrived is lost.
        arrived = max(position.received or 0, position.replayed)
        lost = max(0, wanted - arrived)
        if lost == 0:
            return StepOutcome(
                state="Succeeded",
                message=f"site {target!r} has received all WAL of the fenced primary "
                f"{source!r}: no data is lost",
                fields=_rpo_fields(0, 0.0),
            )
        seconds = position.replay_age_seconds
        about = "" if seconds is None else f" (about {seconds:.1f}s of data)"
        return StepOutcome(
            state="Succeeded",
            message=f"site {target!r} lacks {lost} bytes of WAL of the fenced primary "
            f"{source!r}{about}; they are lost with the failover",
            fields=_rpo_fields(lost, seconds),
        )

    def _loss_from_sample(self, move: Move) -> StepOutcome:
        source = move.source
        sample = self._sample(move, source)
        if sample is None:
            return StepOutcome(
                state="Succeeded",
                message=(
                    f"the old primary site {source!r} does not answer, so the data it wrote "
                    "and never sent cannot be counted, and no replication lag was sampled "
                    "before it was lost: the estimated RPO is unknown"
                ),
            )
        size = "unknown" if sample.bytes is None else f"{sample.bytes} bytes"
        secs = "unknown" if sample.seconds is None else f"{sample.seconds:.1f}s"
        return StepOutcome(
            state="Succeeded",
            message=(
                f"the old primary site {source!r} does not answer; estimated from the "
                f"replication lag sampled at {sample.at.isoformat()}: {size}, {secs} of data "
                "lost at most as far as was seen then"
            ),
            fields=_rpo_fields(sample.bytes, sample.seconds),
        )

    def _drill_lag(self, move: Move) -> StepOutcome:
        source, target = move.source, move.target
        try:
            lag = measure_lag(self.pools, primary=source, standby=target)
        except SiteUnavailable:
            sample = self._sample(move, source)
            lag = LagEstimate(
                bytes=sample.bytes if sample else None,
                seconds=sample.seconds if sample else None,
                how="the primary does not answer; "
                + (f"sampled at {sample.at.isoformat()}" if sample else "no sample"),
            )
        return StepOutcome(
            state="Succeeded",
            message=(
                f"a failover to site {target!r} now would lose {_lag_text(lag)} of data ({lag.how})"
            ),
            fields=_rpo_fields(lag.bytes, lag.seconds),
        )

    # -- promote ------------------------------------------------------------------------

    def promote(self, move: Move, record: StepRecord) -> StepOutcome:
        del record
        target = move.target
        result = promote(self.pools, target, wait_seconds=self.settings.promote_wait_seconds)
        opened = unfence_tenant(self.pools, target, tenant=move.tenant)
        what = (
            f"site {target!r} promoted in {result.seconds:.2f}s"
            if result.promoted
            else f"site {target!r} already was a primary"
        )
        if opened.changes:
            what += "; " + "; ".join(opened.changes)
        return StepOutcome(state="Succeeded", message=what, fields={"newPrimary": target})

    # -- repoint ------------------------------------------------------------------------

    def repoint(self, move: Move, record: StepRecord) -> StepOutcome:
        del record
        target = move.target
        site = self._site(target)
        set_primary_site(self.kube, move.tenant, target)
        wrote = repoint_credentials(
            self.kube,
            move.namespace,
            secret=self.settings.credentials_secret,
            site=site,
            tenant=move.tenant,
        )
        message = (
            f"tenant {move.tenant!r}'s primary is site {target!r}; Secret "
            f"{self.settings.credentials_secret} "
            + ("now points" if wrote else "already pointed")
            + f" to {site.host}:{site.port}"
        )
        outcome = StepOutcome(state="Succeeded", message=message, fields={"newPrimary": target})
        # Fence the old primary again where it answers: a reconcile of the tenant that ran
        # before it knew the new primary may have opened the role there again.
        try:
            fenced = fence_tenant(self.pools, move.source, tenant=move.tenant)
        except DataError:
            return outcome
        if fenced.changes:
            outcome.message += f"; site {move.source!r} fenced again: " + "; ".join(fenced.changes)
        return outcome

    # -- rollout ------------------------------------------------------------------------

    def rollout(self, move: Move, record: StepRecord) -> StepOutcome:
        waiting = self._pooler_waiting(move, record)
        if waiting is not None:
            return waiting
        release_workload(self.kube, move.namespace, failover=move.name)
        end = self._slice_end()
        while True:
            state = rollout_state(self.kube, move.namespace)
            if not state.exists:
                return StepOutcome(state="Skipped", message="the tenant has no workload")
            if state.done:
                return StepOutcome(
                    state="Succeeded",
                    message=f"Deployment {WORKLOAD_NAME}: {state.message}, on the new primary",
                )
            if self._past(record, self.settings.rollout_timeout_seconds):
                raise FailoverError(
                    f"the database moved to site {move.target!r}, but Deployment "
                    f"{WORKLOAD_NAME} did not become available within "
                    f"{self.settings.rollout_timeout_seconds:.0f}s ({state.message}); look at "
                    "its pods",
                    reason="RolloutTimeout",
                )
            if time.monotonic() >= end:
                return StepOutcome(
                    state="Running",
                    message=f"Deployment {WORKLOAD_NAME}: {state.message}",
                    requeue_after=self.settings.poll_seconds * 5,
                )
            time.sleep(self.settings.poll_seconds)

    def _pooler_waiting(self, move: Move, record: StepRecord) -> StepOutcome | None:
        """Running while the tenant's pooler still goes to the old primary (the writers stay
        at zero meanwhile, see ``failover.pooler``); None when the writers may come back."""
        try:
            _, spec = self._tenant(move)
        except FailoverError:
            spec = None  # not readable now: judge whatever pooler runs, to be safe
        if spec is not None and not (spec.database.enabled and spec.database.pooler.enabled):
            return None
        route = pooler_route(
            self.kube,
            move.namespace,
            site=self._site(move.target),
            operator_namespace=self.settings.operator_namespace,
            cluster_domain=self.settings.cluster_domain,
        )
        if route.ready:
            return None
        limit = self.settings.rollout_timeout_seconds
        if not self._past(record, limit):
            return StepOutcome(
                state="Running",
                message=f"the writers wait for the pooler: {route.message}",
                requeue_after=self.settings.poll_seconds * 5,
            )
        raise FailoverError(
            f"the database moved to site {move.target!r}, but within {limit:.0f}s the tenant's "
            f"pooler did not come to run its configuration ({route.message}); the workload "
            "stays at zero until it does. Is the tenant reconciled (its PoolerReady "
            "condition), and do the pooler's pods start?",
            reason="PoolerNotRepointed",
        )

    # -- verify -------------------------------------------------------------------------

    def _password(self, move: Move, *, site: SiteConfig | None) -> str:
        secret = self.settings.credentials_secret
        view = read_credentials(self.kube, move.namespace, secret=secret)
        if view is None or not view.password:
            raise FailoverError(
                f"the credentials Secret {move.namespace}/{secret} does not exist or holds no "
                "password",
                reason="CredentialsMissing",
                retryable=True,
            )
        if site is not None and not view.points_to(site):
            raise FailoverError(
                f"the credentials Secret {move.namespace}/{secret} points to "
                f"{view.host}:{view.port}, not to the new primary {site.host}:{site.port}: "
                "something wrote it back (does the tenant's database part read the primary "
                "site from the tenant?)",
                reason="NotRepointed",
                retryable=True,
            )
        return view.password

    def verify(self, move: Move, record: StepRecord) -> StepOutcome:
        del record
        site = self._site(move.target)
        password = self._password(move, site=site)
        message = verify_writes(site, tenant=move.tenant, password=password)
        return StepOutcome(state="Succeeded", message=message)

    # -- drill --------------------------------------------------------------------------

    def restore(self, move: Move, record: StepRecord) -> StepOutcome:
        del record
        if self.backups is None:
            raise FailoverError(
                "this operator has no source of backups configured for drills",
                reason="NoBackupSource",
            )
        if self.credentials is None:
            raise FailoverError(
                "this operator has no site admin credentials for drills", reason="NoCredentials"
            )
        name = self.settings.drill_site or move.target
        site = self._site(name)
        state = server_state(self.pools, name)
        if state.in_recovery:
            raise FailoverError(
                f"site {name!r} is a read-only standby, so no scratch database can be made "
                "there; set the operator's drill site (a writable server near the standby) "
                "for drill restores",
                reason="NoScratchSite",
            )
        backup = self.backups.latest_verified(tenant=move.tenant, namespace=move.namespace)
        admin = self.credentials(site)
        result = restore_drill(
            backup,
            admin=ConnectionInfo.for_site(
                site, dbname=site.admin_database, user=admin.user, password=admin.password
            ),
            tenant=move.tenant,
            pg_restore=self.settings.pg_restore,
            work_dir=self.settings.work_dir,
        )
        age = max(0.0, (self.now() - backup.taken).total_seconds())
        if not result.passed:
            raise FailoverError(
                f"the latest verified backup {backup.backup_id} did not restore on site "
                f"{name!r}: {result.message}",
                reason=result.reason,
            )
        return StepOutcome(
            state="Succeeded",
            message=(
                f"backup {backup.backup_id} (taken {age:.0f}s ago) restored into a scratch "
                f"database on site {name!r} and checked in {result.duration_seconds:.2f}s: "
                f"{result.message}; the scratch database was dropped"
            ),
            fields={"measuredRTOSeconds": round(result.duration_seconds, 3)},
        )

    def check_standby(self, move: Move, record: StepRecord) -> StepOutcome:
        del record
        site = self._site(move.target)
        password = self._password(move, site=None)
        return StepOutcome(
            state="Succeeded", message=verify_reads(site, tenant=move.tenant, password=password)
        )

    # -- rollback and after -------------------------------------------------------------

    def roll_back(self, move: Move) -> tuple[str, list[ConditionChange]]:
        """Undo the fence of a failover that stopped before promotion; say what was done."""
        notes: list[str] = []
        conditions: list[ConditionChange] = []
        try:
            source = move.source
        except FailoverError:
            return "", []
        try:
            opened = unfence_tenant(self.pools, source, tenant=move.tenant)
            notes.append(
                f"site {source!r} takes the tenant's writes again"
                + (f" ({'; '.join(opened.changes)})" if opened.changes else "")
            )
            conditions.append(
                ConditionChange(
                    type=FENCED_CONDITION,
                    status="False",
                    reason="RolledBack",
                    message=f"the failover stopped before promotion; site {source!r} stays "
                    "the tenant's primary",
                )
            )
        except DataError as error:
            notes.append(f"could not open site {source!r} again: {error}")
        try:
            if release_workload(self.kube, move.namespace, failover=move.name):
                notes.append("the writers were started again")
        except KubeError as error:  # the API server's trouble: say so, keep the failure
            notes.append(f"could not restart the writers: {error.status} {error.reason}")
        return "; ".join(notes), conditions

    def fence_again(self, move: Move) -> ConditionChange | None:
        """After a failover: fence an old primary that did not answer before; None if it still
        does not answer."""
        source = move.source
        try:
            fenced = fence_tenant(self.pools, source, tenant=move.tenant)
        except SiteUnavailable:
            return None
        except TenantDatabaseMissing:
            return ConditionChange(
                type=FENCED_CONDITION,
                status="True",
                reason="NothingToFence",
                message=f"site {source!r} answers and has no database of the tenant",
            )
        done = "; ".join(fenced.changes) or "it already was fenced"
        return ConditionChange(
            type=FENCED_CONDITION,
            status="True",
            reason="Fenced",
            message=f"site {source!r} answered again and was fenced: {done}",
        )


def _rpo_fields(size: int | None, seconds: float | None) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if size is not None:
        fields["estimatedRPOBytes"] = int(size)
    if seconds is not None:
        fields["estimatedRPOSeconds"] = round(float(seconds), 3)
    return fields

"""Reconcile of one CleoFailover: run or resume its next steps, record them on status.

A CleoFailover is an event, not a desired state, but it is driven the same level-based
way as everything else: each call reads the object fresh, finds the first step that has
not ended (``status.steps``), runs it (and the ones after it, as long as none has to
wait), and writes status only when it changed. Why it is built this way:

- **Resumable.** A step is recorded as Running *before* it acts, and its outcome after.
  An operator killed at any point finds the interrupted step Running and runs it again;
  every step is idempotent (see ``failover.procedure``). The sites a failover moves
  between are fixed by its preflight and kept in the CleoFailover's annotations, so a
  tenant spec edited in the middle cannot redirect a failover half-way.
- **Measured, not claimed.** ``measuredRTOSeconds`` is the time from ``startTime`` to the
  end of the last step, both recorded on status with milliseconds, so it includes any
  time the operator was down in the middle. ``estimatedRPOSeconds`` and
  ``estimatedRPOBytes`` come from the check-lag step; an unknown estimate is left unset,
  and ``ObjectivesMet`` then says Unknown rather than True.
- **One write per step.** The end of a step and the start of the next go into one status
  patch; a finished CleoFailover costs one read per resync and no write.
- **After the end**, a failover whose old primary did not answer keeps trying to fence it
  (condition ``OldPrimaryFenced``), because a primary that comes back must not take the
  tenant's writes.

The handler runs :meth:`FailoverReconciler.reconcile` from a daemon per CleoFailover (like
the tenant loop) and calls again after ``requeue_after``.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

from cleo_operator.api.base import Condition, ConditionStatus, set_condition
from cleo_operator.api.errors import SpecError
from cleo_operator.api.failover import (
    CleoFailoverSpec,
    CleoFailoverStatus,
    parse_failover_spec,
)
from cleo_operator.api.objects import KubeObject
from cleo_operator.core.redaction import clip
from cleo_operator.core.times import rfc3339_ms
from cleo_operator.data.errors import DataError
from cleo_operator.data.pool import CredentialsProvider, PoolSettings, SitePools
from cleo_operator.data.sites import SITES_ENV, SITES_FILE_ENV, site_config_from_env
from cleo_operator.failover import metrics
from cleo_operator.failover.drill import BackupSource, ClusterBackupSource
from cleo_operator.failover.errors import FailoverError
from cleo_operator.failover.faults import check_fault_point_env, fault_point
from cleo_operator.failover.procedure import (
    FENCED_CONDITION,
    SOURCE_ANNOTATION,
    ConditionChange,
    FailoverSettings,
    Move,
    Procedure,
    StepOutcome,
)
from cleo_operator.failover.samples import LagSamples
from cleo_operator.failover.steps import (
    StepRecord,
    judge_objectives,
    next_step,
    promotion_started,
    records_for,
    seconds_between,
)
from cleo_operator.failover.tenant import release_lock
from cleo_operator.kube.audit import audit
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import FAILOVER
from cleo_operator.kube.secrets import AdminCredentialsFromSecrets
from cleo_operator.kube.status import unless_changed, update_status
from cleo_operator.observability.tracing import note_reconcile

__all__ = [
    "DRILL_SITE_ENV",
    "OWNED_STATUS_KEYS",
    "FailoverReconciler",
    "FailoverResult",
]

log = logging.getLogger(__name__)

OWNED_STATUS_KEYS: Final = frozenset(
    {
        "observedGeneration",
        "phase",
        "conditions",
        "steps",
        "plan",
        "measuredRTOSeconds",
        "estimatedRPOSeconds",
        "estimatedRPOBytes",
        "newPrimary",
        "startTime",
        "completionTime",
    }
)

DRILL_SITE_ENV: Final = "CLEO_DRILL_SITE"
"""Environment variable naming the site drills restore their scratch database on."""

SUCCEEDED_CONDITION: Final = "Succeeded"
OBJECTIVES_CONDITION: Final = "ObjectivesMet"


@dataclasses.dataclass(frozen=True, kw_only=True)
class FailoverResult:
    """What one reconcile did; the handler logs it and calls again after ``requeue_after``."""

    namespace: str
    """The CleoFailover's namespace."""
    name: str
    """Its name."""
    phase: str | None
    """Its phase after this reconcile (None: it does not exist)."""
    requeue_after: float | None
    """Call again this soon (a step is waiting, or an old primary is still to be fenced)."""
    status_written: bool = False
    """Status was written by this call."""


class _Status:
    """The CleoFailover's status while a reconcile works on it; written only when changed."""

    def __init__(self, kube: KubeClient, obj: KubeObject, now: datetime.datetime) -> None:
        self.kube = kube
        self.obj = obj
        self.now = now
        raw = obj.get("status") or {}
        self.fields: dict[str, Any] = {k: v for k, v in raw.items() if k in OWNED_STATUS_KEYS}
        self.conditions: list[Condition] = []
        for item in raw.get("conditions") or []:
            try:
                self.conditions.append(Condition.model_validate(item))
            except ValueError:
                continue
        self.generation = int(obj["metadata"].get("generation") or 0)
        self.records: list[StepRecord] = []
        self.written = False

    @property
    def phase(self) -> str | None:
        phase = self.fields.get("phase")
        return str(phase) if phase else None

    def condition(self, change: ConditionChange) -> None:
        self.conditions = set_condition(
            self.conditions,
            type=change.type,
            status=change.status,
            reason=change.reason,
            message=clip(change.message, 4096),
            observed_generation=self.generation,
            now=self.now,
        )

    def succeeded(self, status: ConditionStatus, reason: str, message: str) -> None:
        """The `Succeeded` condition: Unknown while a step runs, then True or False."""
        self.condition(
            ConditionChange(type=SUCCEEDED_CONDITION, status=status, reason=reason, message=message)
        )

    def get_condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def write(self) -> None:
        desired: dict[str, Any] = {k: v for k, v in self.fields.items() if v is not None}
        desired["observedGeneration"] = self.generation
        if self.records:
            desired["steps"] = [r.to_api() for r in self.records]
        desired["conditions"] = [
            c.model_dump(by_alias=True, exclude_none=True) for c in self.conditions
        ]
        # The API's model is the judge of what status may hold (lengths, enums, times).
        checked = {
            key: value
            for key, value in CleoFailoverStatus.model_validate(desired).to_api().items()
            if value != [] or key == "conditions"
        }
        meta = self.obj["metadata"]
        # Preconditioned on the version read, and decided on it: two drivers of one failover
        # (the operator and `failover run`, say) never overwrite each other's progress; the
        # loser gets 409, reads again and finds the step done or running.
        written = update_status(
            self.kube,
            FAILOVER,
            meta["name"],
            unless_changed(self.obj, checked, owned_keys=OWNED_STATUS_KEYS),
            owned_keys=OWNED_STATUS_KEYS,
            namespace=meta.get("namespace"),
            read=self.obj,
        )
        if written is not None:
            self.obj = written
            self.written = True


class FailoverReconciler:
    """Drives CleoFailovers; shared by all reconcile threads of one operator process."""

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
        owns_pools: bool = False,
    ) -> None:
        self.kube = kube
        self.pools = pools
        self.settings = settings or FailoverSettings()
        self.now = now
        self.procedure = Procedure(
            kube,
            pools,
            credentials=credentials,
            settings=self.settings,
            backups=backups,
            lag_samples=lag_samples,
            now=now,
        )
        self._owns_pools = owns_pools

    @classmethod
    def from_environment(
        cls,
        kube: KubeClient,
        *,
        pools: SitePools | None = None,
        environ: Mapping[str, str] | None = None,
        settings: FailoverSettings | None = None,
        lag_samples: LagSamples | None = None,
    ) -> FailoverReconciler:
        """As the operator process builds it: sites from ``$CLEO_SITES``/``$CLEO_SITES_FILE``.

        Pass the ``pools`` of the tenant databases to share their connections and circuit
        breakers (recommended in the operator); without them, this builds (and closes) its
        own. ``$CLEO_DRILL_SITE`` names the drills' restore site. A fault point variable
        that names no step raises ValueError (a typo would silently test nothing).
        """
        env = os.environ if environ is None else environ
        check_fault_point_env(env)
        credentials = AdminCredentialsFromSecrets(kube)
        owns = pools is None
        if pools is None:
            sites = (
                site_config_from_env(env) if env.get(SITES_ENV) or env.get(SITES_FILE_ENV) else {}
            )
            pools = SitePools(sites, credentials=credentials, settings=PoolSettings())
        settings = settings or FailoverSettings()
        if env.get(DRILL_SITE_ENV) and settings.drill_site is None:
            settings = dataclasses.replace(settings, drill_site=env[DRILL_SITE_ENV])
        return cls(
            kube,
            pools,
            credentials=credentials,
            settings=settings,
            backups=ClusterBackupSource(kube),
            lag_samples=lag_samples,
            owns_pools=owns,
        )

    def close(self) -> None:
        """Close the site pools if this reconciler made them."""
        if self._owns_pools:
            self.pools.close()

    # -- reconcile ----------------------------------------------------------------------

    def reconcile(self, namespace: str, name: str) -> FailoverResult:
        """Run or resume CleoFailover ``namespace/name``; a no-op once it has ended."""
        obj = self.kube.get(FAILOVER, name, namespace=namespace)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return FailoverResult(namespace=namespace, name=name, phase=None, requeue_after=None)
        status = _Status(self.kube, obj, self.now())
        note_reconcile(generation=status.generation)
        try:
            spec = parse_failover_spec(obj.get("spec"))
        except SpecError as error:
            if status.phase in ("Succeeded", "Failed"):
                return self._result(status, None)
            return self._invalid(status, error)
        move = Move(
            name=name,
            namespace=namespace,
            uid=str(obj["metadata"]["uid"]),
            spec=spec,
            annotations=dict(obj["metadata"].get("annotations") or {}),
        )
        status.records = records_for(spec.type, status.fields.get("steps") or [])
        if status.phase in ("Succeeded", "Failed"):
            return self._after_end(status, move)
        return self._advance(status, move, spec)

    def _advance(self, status: _Status, move: Move, spec: CleoFailoverSpec) -> FailoverResult:
        if not status.fields.get("startTime"):
            status.fields["startTime"] = rfc3339_ms(self.now())
            self._audit(
                move,
                "FailoverStarted",
                f"{spec.type} of tenant {move.tenant}: starting"
                + (" (dry run)" if spec.dry_run else ""),
            )
        status.fields["phase"] = "Running"
        while True:
            record = next_step(status.records)
            if record is None:
                return self._succeed(status, move, spec)
            if record.state == "Pending":
                status.now = self.now()
                record.start(status.now, message="running")
                status.succeeded("Unknown", "Running", f"step {record.name} is running")
                status.write()
            outcome = self.procedure.run(move, record)
            fault_point(record.name)
            status.now = self.now()
            if outcome.memory:
                self._remember(status, move, outcome.memory)
            self._apply(status, outcome)
            if outcome.state == "Running":
                record.message = clip(outcome.message)
                status.write()
                return self._result(status, outcome.requeue_after)
            record.finish(outcome.state, status.now, outcome.message)
            log.info(
                "%s %s/%s: step %s %s: %s",
                spec.type,
                move.namespace,
                move.name,
                record.name,
                outcome.state.lower(),
                outcome.message,
            )
            if outcome.state == "Failed":
                return self._fail(status, move, spec, outcome)
            if outcome.plan is not None:
                status.fields["plan"] = [clip(line) for line in outcome.plan][:64]
            if spec.dry_run:
                return self._succeed(status, move, spec)

    def _apply(self, status: _Status, outcome: StepOutcome) -> None:
        status.fields.update(outcome.fields)
        for change in outcome.conditions:
            status.condition(change)

    def _remember(self, status: _Status, move: Move, memory: Mapping[str, str]) -> None:
        if all(move.annotations.get(k) == v for k, v in memory.items()):
            return
        meta = status.obj["metadata"]
        status.obj = self.kube.patch_merge(
            FAILOVER,
            move.name,
            {
                "metadata": {
                    "resourceVersion": meta["resourceVersion"],
                    "annotations": dict(memory),
                }
            },
            namespace=move.namespace,
        )
        move.annotations = {**move.annotations, **memory}

    def _succeed(self, status: _Status, move: Move, spec: CleoFailoverSpec) -> FailoverResult:
        end = status.records[-1].end_time if status.records else None
        if spec.dry_run:
            for record in status.records:
                if record.state == "Pending":
                    record.finish("Skipped", status.now, "dry run: see status.plan")
            status.succeeded(
                "True",
                "DryRun",
                "the checks passed; status.plan says what would be done; nothing was changed",
            )
        else:
            if spec.type != "Drill":
                rto = seconds_between(status.fields.get("startTime"), end)
                if rto is not None:
                    status.fields["measuredRTOSeconds"] = round(rto, 3)
            verdict = judge_objectives(
                rto_objective=spec.rto_seconds,
                rpo_objective=spec.rpo_seconds,
                measured_rto=status.fields.get("measuredRTOSeconds"),
                estimated_rpo_seconds=status.fields.get("estimatedRPOSeconds"),
                drill=spec.type == "Drill",
            )
            status.condition(
                ConditionChange(
                    type=OBJECTIVES_CONDITION,
                    status=verdict.status,
                    reason=verdict.reason,
                    message=verdict.message,
                )
            )
            done = {
                "Failover": f"the tenant's primary is site {move.target!r} now",
                "Switchover": f"the tenant's primary is site {move.target!r} now, no data lost",
                "Drill": "the drill passed; nothing of production changed",
            }[spec.type]
            status.succeeded("True", "Succeeded", done)
            if spec.type != "Drill":  # drills take no lock
                release_lock(self.kube, move.tenant, move.holder)
        status.fields["phase"] = "Succeeded"
        status.fields["completionTime"] = end or rfc3339_ms(status.now)
        status.write()
        if not spec.dry_run:
            verdict_missed = self._missed(status)
            metrics.observe_end(
                tenant=move.tenant,
                type=spec.type,
                result="succeeded",
                rto_seconds=status.fields.get("measuredRTOSeconds"),
                rpo_seconds=status.fields.get("estimatedRPOSeconds"),
                missed=verdict_missed,
            )
        self._audit(
            move,
            "FailoverSucceeded",
            f"{spec.type} of tenant {move.tenant} succeeded (RTO "
            f"{status.fields.get('measuredRTOSeconds')}s, RPO "
            f"{status.fields.get('estimatedRPOSeconds')}s / "
            f"{status.fields.get('estimatedRPOBytes')} bytes)",
        )
        return self._result(status, self._fence_requeue(status))

    def _audit(
        self,
        move: Move,
        action: str,
        message: str,
        *,
        type: Literal["Normal", "Warning"] = "Normal",
    ) -> None:
        """A failover started or ended: an Event on the CleoFailover and an audit line."""
        obj = {
            "apiVersion": FAILOVER.api_version,
            "kind": FAILOVER.kind,
            "metadata": {"name": move.name, "namespace": move.namespace, "uid": move.uid},
        }
        audit(self.kube, obj, action=action, message=message, type=type)

    def _missed(self, status: _Status) -> list[str]:
        condition = status.get_condition(OBJECTIVES_CONDITION)
        if condition is None or condition.status != "False":
            return []
        return [o for o in ("RTO", "RPO") if o in condition.reason]

    def _fail(
        self, status: _Status, move: Move, spec: CleoFailoverSpec, outcome: StepOutcome
    ) -> FailoverResult:
        message = outcome.message
        fenced = any(r.name == "fence" and r.state != "Pending" for r in status.records)
        if fenced and not spec.dry_run and not promotion_started(status.records):
            undone, conditions = self.procedure.roll_back(move)
            for change in conditions:
                status.condition(change)
            if undone:
                message += f". Rolled back: {undone}"
        elif promotion_started(status.records):
            message += (
                f". The standby may already be promoted: the tenant stays fenced on site "
                f"{move.annotations.get(SOURCE_ANNOTATION, '?')!r} and its workload "
                "held; see the runbook in docs/failover.md"
            )
        status.succeeded("False", outcome.reason or "Failed", message)
        status.fields["phase"] = "Failed"
        status.fields["completionTime"] = rfc3339_ms(status.now)
        if not spec.dry_run and spec.type != "Drill":
            release_lock(self.kube, move.tenant, move.holder)
        status.write()
        if not spec.dry_run:
            metrics.observe_end(
                tenant=move.tenant,
                type=spec.type,
                result="failed",
                rto_seconds=None,
                rpo_seconds=None,
                missed=(),
            )
        self._audit(
            move,
            "FailoverFailed",
            f"{spec.type} of tenant {move.tenant} failed: {message}",
            type="Warning",
        )
        promoted = promotion_started(status.records)
        return self._result(status, self._fence_requeue(status) if promoted else None)

    def _invalid(self, status: _Status, error: SpecError) -> FailoverResult:
        note_reconcile(outcome="refused")
        status.fields["phase"] = "Failed"
        status.fields["completionTime"] = rfc3339_ms(status.now)
        status.succeeded(
            "False", "InvalidSpec", f"{error}; create a new CleoFailover with a valid spec"
        )
        status.write()
        return self._result(status, None)

    def _after_end(self, status: _Status, move: Move) -> FailoverResult:
        """An ended failover: fence an old primary that did not answer during it.

        Also after a failover that failed once promotion had started: the standby may take
        the tenant's writes, so the old primary must not, whenever it comes back.
        """
        if move.spec.type == "Drill" or move.spec.dry_run or not promotion_started(status.records):
            return self._result(status, None)
        requeue = self._fence_requeue(status)
        if requeue is None:
            return self._result(status, None)
        try:
            change = self.procedure.fence_again(move)
        except FailoverError as error:
            log.warning("%s/%s: %s", move.namespace, move.name, error.message)
            return self._result(status, self.settings.fence_retry_seconds)
        except DataError as error:  # a refusal of the site (privileges...): say it, keep trying
            status.condition(
                ConditionChange(
                    type=FENCED_CONDITION,
                    status="False",
                    reason="Unreachable",
                    message=f"fencing the old primary failed: {error}; trying again",
                )
            )
            status.write()
            return self._result(status, self.settings.fence_retry_seconds)
        if change is None:
            return self._result(status, requeue)
        status.condition(change)
        status.write()
        log.info("%s/%s: %s", move.namespace, move.name, change.message)
        return self._result(status, None)

    def _fence_requeue(self, status: _Status) -> float | None:
        condition = status.get_condition(FENCED_CONDITION)
        if (
            condition is not None
            and condition.status == "False"
            and (condition.reason == "Unreachable")
        ):
            return self.settings.fence_retry_seconds
        return None

    def _result(self, status: _Status, requeue_after: float | None) -> FailoverResult:
        meta = status.obj["metadata"]
        return FailoverResult(
            namespace=str(meta.get("namespace", "")),
            name=str(meta["name"]),
            phase=status.phase,
            requeue_after=requeue_after,
            status_written=status.written,
        )

    # -- driving it by hand -------------------------------------------------------------

    def drive(self, namespace: str, name: str, *, timeout: float = 900.0) -> FailoverResult:
        """Reconcile again and again until the failover has ended (or ``timeout``).

        For the command line and the benchmark: an operator process does the same with
        its daemon. Returns the last result; an ended failover with an old primary still
        to fence returns with that requeue pending.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                result = self.reconcile(namespace, name)
            except KubeError as exc:
                if not exc.conflict or time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)  # someone else wrote it: read it again
                continue
            if result.phase in (None, "Succeeded", "Failed") or time.monotonic() >= deadline:
                return result
            time.sleep(min(result.requeue_after or 1.0, max(0.0, deadline - time.monotonic())))

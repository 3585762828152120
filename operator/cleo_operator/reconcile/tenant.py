"""Level-based reconcile of one CleoTenant: desired children against what the cluster has.

Each call reads the tenant and its children fresh, renders the desired children from the
spec, applies only those that are missing, stale or drifted (see `kube.apply`), deletes the
ones no longer wanted, observes what the cluster reports, and writes status only when it
changed. It is safe to call at any time and any number of times: it is how the operator
answers a spec change, a child edited or deleted by hand, and the periodic resync alike.

The namespace comes first, and decides whether anything else happens: a tenant uses a
namespace only if it created it, if the namespace carries its uid, or if the namespace's
owner handed it over (`reconcile.namespace_claim`). A refused tenant writes nothing at all,
in that namespace or anywhere else (no part runs: no Secret, binding, keyring copy or
database), reports `NamespaceReady=False` with the reason, and is checked again every
`REFUSED_RECHECK_SECONDS` (an operator setting), so that a namespace handed over later is
taken up. Deletion has rules of its own (`reconcile.tenant_deletion`).

Concerns that need more than rendering (sealed secrets and keyrings, the tenant database)
plug in as `TenantPart`s (`reconcile.tenant_parts`): each contributes objects to apply,
conditions, status fields and checksum inputs, and has a say at deletion. The order of work
is fixed: parts first (their Secrets feed the Deployment's checksum), then the rendered
children in apply order.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from cleo_operator.api.errors import SpecError
from cleo_operator.api.objects import KubeObject, ObjectRef, object_ref
from cleo_operator.api.tenant import parse_tenant_spec
from cleo_operator.failover.workload import held_by
from cleo_operator.kube.apply import needs_apply, with_hash
from cleo_operator.kube.audit import audit
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.events import post_event
from cleo_operator.kube.kinds import KINDS, NAMESPACE, TENANT, kind_of
from cleo_operator.kube.status import update_status
from cleo_operator.observability.creation_traces import CreationTraces
from cleo_operator.observability.metrics import TENANT_READY, forget_tenant
from cleo_operator.observability.tracing import note_reconcile
from cleo_operator.reconcile.namespace_claim import (
    REFUSAL_REASONS,
    NamespaceClaim,
    claim_namespace,
)
from cleo_operator.reconcile.status import Observation, StatusBuilder, clip
from cleo_operator.reconcile.tenant_deletion import TenantDeletion
from cleo_operator.reconcile.tenant_parts import PartResult, TenantContext, TenantEvent, TenantPart
from cleo_operator.reconcile.tenant_protection import TenantProtection
from cleo_operator.reconcile.tenant_status import (
    observe_autoscaling,
    observe_deployment,
    observe_namespace,
    observe_policies,
    phase_of,
    replicas,
)
from cleo_operator.render.meta import (
    ADOPT_ANNOTATION,
    DEFAULT_OPERATOR_NAMESPACE,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    ORPHANED_LABEL,
    TENANT_LABEL,
)
from cleo_operator.render.rbac import OperatorAccess
from cleo_operator.render.tenant import render_tenant, tenant_namespace
from cleo_operator.render.workload import WorkloadTracing, config_checksum

__all__ = [
    "OWNED_STATUS_KEYS",
    "PartResult",
    "TenantContext",
    "TenantEvent",
    "TenantPart",
    "TenantReconciler",
    "TenantResult",
]

log = logging.getLogger(__name__)


ISOLATION_KINDS: Final = frozenset(
    {"ResourceQuota", "LimitRange", "NetworkPolicy", "Role", "RoleBinding", "ServiceAccount"}
)

# The status keys this reconciler owns; anything else under status belongs to someone else.
OWNED_STATUS_KEYS: Final = frozenset(
    {
        "observedGeneration",
        "phase",
        "conditions",
        "namespace",
        "children",
        "replicas",
        "orphaned",
        "keyVersion",
        "lastRotation",
        "nextRotation",
        "secrets",
        "database",
        "migrations",
    }
)

PROGRESS_RECHECK_SECONDS: Final = 5.0
REFUSED_RECHECK_SECONDS: Final = 20.0
"""A tenant refused its namespace looks again this often (reads only), so that a namespace
handed over later (`cleoai.io/adopt`) is taken up without a restart. Namespaces without
our labels are not watched: the operator never receives other namespaces' events."""
NAMESPACE_CONTENT_CONDITIONS: Final = (
    "PoliciesReady",
    "WorkloadAvailable",
    "Autoscaling",
    "MigrationsSucceeded",
)
"""Conditions about what is in the namespace: not reported for a namespace we do not own."""
FIRST_STATUS_GRACE_SECONDS: Final = 30.0
"""A brand-new tenant that is still converging gets its first status when it is Ready, or
after this long, whichever comes first: one status write instead of two for the common
case of a tenant that comes up in seconds, and never a status that hides a failure."""


@dataclass
class TenantResult:
    """What one reconcile did; the handler uses it for logs, events and requeueing."""

    name: str
    applied: list[ObjectRef] = field(default_factory=list)
    deleted: list[ObjectRef] = field(default_factory=list)
    status_written: bool = False
    ready: bool = False
    requeue_after: float | None = None
    """Ask to be called again this soon (seconds) because something is still converging."""


def _key(ref: Mapping[str, Any]) -> tuple[str, str, str, str]:
    return (ref["apiVersion"], ref["kind"], ref.get("namespace", ""), ref["name"])


def _ready_transition(tenant: KubeObject, status: StatusBuilder) -> list[TenantEvent]:
    """An Event when the tenant becomes Ready, or stops being Ready.

    Not on every reconcile, and not for a new tenant that is still coming up (its first
    status may wait for Ready): Events are for people, and each one is a write.
    """
    before = {
        c.get("type"): c.get("status") for c in (tenant.get("status") or {}).get("conditions") or []
    }.get("Ready")
    now = next((c for c in status.conditions if c.type == "Ready"), None)
    if now is None or now.status == before:
        return []
    if now.status == "True":
        return [TenantEvent("Ready", now.message)]
    if now.reason in REFUSAL_REASONS:  # a namespace refused: part of the audit trail
        return [TenantEvent(now.reason, now.message, "Warning", audit=True)]
    if before == "True" or now.reason in {"InvalidSpec", "ApplyFailed"}:
        return [TenantEvent(now.reason, now.message, "Warning")]
    return []


def _respect_holds(obj: KubeObject, current: KubeObject | None) -> KubeObject:
    """A Deployment a failover holds (scaled to 0 to fence the writers) keeps its size.

    Without this, a tenant with a fixed replica count would bring its writers back in the
    middle of a failover. The failover restores the size it recorded when it lets go.
    """
    if obj.get("kind") != "Deployment" or held_by(current) is None:
        return obj
    spec = {k: v for k, v in obj.get("spec", {}).items() if k != "replicas"}
    return {**obj, "spec": spec}


def _age_seconds(meta: Mapping[str, Any], now: datetime.datetime) -> float:
    created = meta.get("creationTimestamp")
    if not created:
        return float("inf")
    born = datetime.datetime.fromisoformat(str(created).replace("Z", "+00:00"))
    return (now - born).total_seconds()


def _min(a: float | None, b: float | None) -> float | None:
    values = [v for v in (a, b) if v is not None]
    return min(values) if values else None


_WITHHELD: Final = "the server's message is withheld: it may quote the Secret's values"


def _withheld(error: KubeError) -> KubeError:
    """`error` without the server's message (a Secret's write: it may quote the values)."""
    return KubeError(status=error.status, reason=error.reason, message=_WITHHELD, what=error.what)


BINDING_VISIBLE_SECONDS: Final = 5.0
"""How long a reconcile waits for the authorizer to see the operator's new RoleBinding."""


class _TenantLocks:
    """One lock per tenant name, so that a tenant's reconcile and its deletion (each in a
    worker thread of its own) never run at the same time.

    A name's lock lives while a thread holds it or waits for it (a count), and only then:
    dropping it while a thread still waited on it would let that thread and one that comes
    later, with a fresh lock for the same name (the tenant re-created), run at once."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.RLock, int]] = {}

    @contextlib.contextmanager
    def hold(self, name: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(name) or (threading.RLock(), 0)
            self._locks[name] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[name]
                if users > 1:
                    self._locks[name] = (lock, users - 1)
                else:
                    del self._locks[name]

    def __len__(self) -> int:
        """How many names have a lock now (held or waited for)."""
        with self._guard:
            return len(self._locks)


class TenantReconciler:
    """Reconciles CleoTenants through one KubeClient; shared by all worker threads."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        parts: Sequence[TenantPart] = (),
        operator_namespace: str = DEFAULT_OPERATOR_NAMESPACE,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
        operator_access: OperatorAccess | None = None,
        protection: TenantProtection | None = None,
        refused_recheck_seconds: float = REFUSED_RECHECK_SECONDS,
        workload_tracing: WorkloadTracing | None = None,
        creation_traces: CreationTraces | None = None,
    ) -> None:
        self.kube = kube
        # The trace of each tenant's creation, which its first backup joins (in memory only).
        self.creation_traces = creation_traces if creation_traces is not None else CreationTraces()
        # Every tenant's CleoAI pods send traces there (an operator setting; None: off).
        self.workload_tracing = workload_tracing
        self.refused_recheck_seconds = refused_recheck_seconds
        self.parts = list(parts)
        # Tenant admins may ask for backups only while the admission policy narrows it.
        self.protection = protection or TenantProtection(kube)
        # The operator's own RoleBinding in each tenant namespace (render/rbac.py): applied
        # right after the namespace is ours, before the parts write their Secrets there.
        self.operator_access = operator_access
        self._foundation = 2 if operator_access else 1
        self.operator_namespace = operator_namespace
        """Never a tenant's namespace, whatever its name or marks say."""
        self.now = now
        # Tenants (by uid) this process has applied in full at least once; see `fresh`.
        self._converged: set[str] = set()
        self.deletion = TenantDeletion(
            kube, parts=self.parts, operator_namespace=operator_namespace, now=now
        )
        self._locks = _TenantLocks()

    def close(self) -> None:
        """Release what the parts hold for the life of the process (the pooler's check
        lane); at the operator's shutdown (Kopf's cleanup handler)."""
        for part in self.parts:
            close = getattr(part, "close", None)
            if callable(close):
                close()

    # -- reconcile ---------------------------------------------------------------------

    def reconcile(self, name: str) -> TenantResult:
        """Bring tenant `name` to its desired state; a no-op when it already is.

        Never beside the tenant's deletion (`finalize`): a reconcile that read the tenant
        before its deletion began would apply children with the tenant as their owner after
        a Retain cut them loose, and the garbage collector would delete them."""
        with self._locks.hold(name):
            return self._reconcile(name)

    def _reconcile(self, name: str) -> TenantResult:
        result = TenantResult(name=name)
        tenant = self.kube.get(TENANT, name)
        if tenant is None or tenant["metadata"].get("deletionTimestamp"):
            forget_tenant(name)
            self.creation_traces.forget_name(name)
            return result
        meta = tenant["metadata"]
        generation = int(meta.get("generation", 0))
        note_reconcile(generation=generation)
        now = self.now()
        status = _StatusBuilder(tenant, generation, now)

        try:
            spec = parse_tenant_spec(tenant.get("spec") or {})
        except SpecError as exc:
            note_reconcile(outcome="refused")
            status.condition("Ready", Observation("False", "InvalidSpec", clip(str(exc))))
            for event in _ready_transition(tenant, status):
                self._post(tenant, event)
            # Everything else on status stays as it was: an invalid spec changes nothing, and
            # the keyring's version must survive (it guards against generating a new one).
            result.status_written = status.write(self.kube, phase="Invalid", keep_previous=True)
            return result

        namespace = tenant_namespace(name=name, spec=spec)
        status.fields["namespace"] = namespace
        if spec.paused:
            status.condition(
                "Ready",
                Observation(
                    "False", "Paused", "spec.paused is true: the operator makes no changes"
                ),
            )
            result.status_written = status.write(self.kube, phase="Paused", keep_previous=True)
            return result

        ctx = TenantContext(
            name=name,
            uid=meta["uid"],
            generation=generation,
            spec=spec,
            namespace=namespace,
            annotations=meta.get("annotations") or {},
            status=tenant.get("status") or {},
            now=now,
        )
        live: dict[tuple[str, str, str, str], KubeObject | None] = {}
        failures: list[str] = []
        gates: dict[str, Observation] = {}
        informational: dict[str, Observation] = {}
        removed: set[str] = set()
        # A tenant that has never reported children is new: its children do not exist yet
        # (or exist from a Retain and must be adopted), so every one is applied without
        # reading it first. Applying is idempotent; the reads only avoid no-op writes.
        fresh = "children" not in ctx.status and ctx.uid not in self._converged

        backup_requests = bool(spec.admins) and self.protection.in_place()
        # The namespace first: every part writes into it, and none runs unless it is ours.
        rendered = render_tenant(
            name=name,
            uid=ctx.uid,
            spec=spec,
            config_checksum="",  # replaced below, once the parts said what goes into it
            operator_access=self.operator_access,
            backup_requests=backup_requests,
            workload_tracing=self.workload_tracing,
        )
        claim = self._take_namespace(ctx, rendered[0], live, result)
        if claim.refused:
            note_reconcile(outcome="refused")
            return self._refuse(tenant, status, claim, result)
        self._note_creation(ctx, meta, now)
        bound_before = len(result.applied)
        self._converge(rendered[1 : self._foundation], live, failures, result, fresh=fresh)
        if len(result.applied) > bound_before:
            self._await_binding(namespace)

        fingerprints: dict[str, str] = {}
        secret_names: list[str] = []
        database_secret: str | None = None
        keyring_secret: str | None = None
        workload_image: str | None = None
        hold_reason: str | None = None
        record_now = False
        pooler_secret: str | None = None
        events: list[TenantEvent] = []
        for part in self.parts:
            contribution = part.reconcile(ctx)
            self._converge(contribution.objects, live, failures, result, fresh=fresh)
            gates.update(contribution.conditions)
            informational.update(contribution.informational)
            removed |= contribution.remove_conditions
            status.fields.update(contribution.status)
            fingerprints.update(contribution.fingerprints)
            secret_names.extend(contribution.secret_names)
            database_secret = contribution.database_secret or database_secret
            keyring_secret = contribution.keyring_secret or keyring_secret
            pooler_secret = contribution.pooler_secret or pooler_secret
            events.extend(contribution.events)
            workload_image = contribution.workload_image or workload_image
            hold_reason = contribution.hold_reason or hold_reason
            record_now = record_now or contribution.record_now
            result.requeue_after = _min(result.requeue_after, contribution.requeue_after)

        workload_config = spec.workload.config if spec.workload else {}
        desired = render_tenant(
            name=name,
            uid=ctx.uid,
            spec=spec,
            config_checksum=config_checksum(
                secret_fingerprints=fingerprints, config=workload_config
            ),
            secret_names=sorted(set(secret_names)),
            database_secret=database_secret,
            keyring_secret=keyring_secret,
            pooler_secret=pooler_secret,
            operator_access=self.operator_access,
            backup_requests=backup_requests,
            workload_image=workload_image,
            hold_workload=hold_reason is not None,
            workload_tracing=self.workload_tracing,
        )
        applied_before = len(result.applied)
        self._converge(desired[self._foundation :], live, failures, result, fresh=fresh)
        if not fresh and ctx.status.get("observedGeneration") == generation:
            # Applied although the spec did not change: someone edited or deleted it.
            repaired = result.applied[applied_before:]
            if repaired:
                events.append(
                    TenantEvent(
                        "DriftRepaired",
                        "put back what was changed by hand: "
                        + ", ".join(f"{r['kind']} {r['name']}" for r in repaired),
                        "Warning",
                    )
                )
        if not failures:
            self._converged.add(ctx.uid)
        self._adopt_namespace(namespace, live)

        # Everything applied this round (the parts' objects too) is wanted; the rest of what
        # status listed before is pruned.
        self._prune(ctx, {_key(object_ref(o)) for o in desired} | set(live), result)
        if result.deleted:
            events.append(
                TenantEvent(
                    "Pruned",
                    "deleted what the spec no longer asks for: "
                    + ", ".join(f"{r['kind']} {r['name']}" for r in result.deleted),
                )
            )
        events.extend(
            TenantEvent("ApplyFailed", f"the API server refused {f}", "Warning") for f in failures
        )

        # -- observe -------------------------------------------------------------------
        ns_obs = observe_namespace(live.get(("v1", "Namespace", "", namespace)), namespace)
        isolation = [o for o in desired if o["kind"] in ISOLATION_KINDS]
        policy_failures = [f for f in failures if f.split(" ", 1)[0] in ISOLATION_KINDS]
        policies = observe_policies(policy_failures, len(isolation))
        deployment = live.get(("apps/v1", "Deployment", namespace, "cleoai"))
        workload = (
            observe_deployment(deployment, wanted=spec.workload is not None)
            if hold_reason is None
            else Observation("False", "WaitingForMigrations", hold_reason)
        )
        hpa = live.get(("autoscaling/v2", "HorizontalPodAutoscaler", namespace, "cleoai"))
        autoscaling = (
            observe_autoscaling(hpa, enabled=spec.autoscaling.enabled and spec.workload is not None)
            if hold_reason is None or not spec.autoscaling.enabled
            else Observation(
                "Unknown",
                "WaitingForMigrations",
                "no Deployment to scale before the first migration",
            )
        )
        status.condition("NamespaceReady", ns_obs)
        status.condition("PoliciesReady", policies)
        status.condition("WorkloadAvailable", workload)
        status.condition("Autoscaling", autoscaling)
        for type_, obs in (gates | informational).items():
            status.condition(type_, obs)
        for type_ in removed:
            status.remove_condition(type_)

        blocking = {
            "NamespaceReady": ns_obs,
            "PoliciesReady": policies,
            "WorkloadAvailable": workload,
            **gates,
        }
        not_ok = {t: o for t, o in blocking.items() if not o.ok}
        other_failures = [f for f in failures if f not in policy_failures]
        result.ready = not not_ok and not other_failures
        if result.ready:
            status.condition("Ready", Observation("True", "Reconciled", "the tenant serves"))
        else:
            reasons = [f"{t}: {o.message}" for t, o in sorted(not_ok.items())]
            reasons += [f"could not apply {f}" for f in other_failures]
            # The reason of the first part that is not ready says where to look first.
            first = next(iter(sorted(not_ok.items())), None)
            reason = "ApplyFailed" if first is None else first[1].reason
            status.condition("Ready", Observation("False", reason, clip("; ".join(reasons))))
            result.requeue_after = _min(result.requeue_after, PROGRESS_RECHECK_SECONDS)

        status.fields["children"] = sorted(
            (object_ref(o) for o in desired), key=lambda r: (r["kind"], r["namespace"], r["name"])
        )
        status.fields["replicas"] = replicas(deployment)
        TENANT_READY.labels(tenant=name).set(1 if result.ready else 0)
        if result.ready:
            self.creation_traces.forget(ctx.uid)
        if (
            not tenant.get("status")
            and not result.ready
            and not failures
            and not record_now
            and _age_seconds(meta, now) < FIRST_STATUS_GRACE_SECONDS
        ):
            result.requeue_after = _min(result.requeue_after, 1.0)
            for event in events:  # what was done is worth saying even before the first status
                self._post(tenant, event)
            return result
        for event in [*events, *_ready_transition(tenant, status)]:
            self._post(tenant, event)
        result.status_written = status.write(
            self.kube,
            phase=phase_of(
                result.ready,
                autoscaling,
                failed=bool(failures) and not result.ready,
                migrations=(gates | informational).get("MigrationsSucceeded"),
            ),
        )
        return result

    def _note_creation(
        self, ctx: TenantContext, meta: Mapping[str, Any], now: datetime.datetime
    ) -> None:
        """A tenant not Ready yet and younger than the creation bound is being created: this
        reconcile's span is its creation's (the first one is kept); its backups join it.
        Called once the namespace is the tenant's (a refused tenant is nobody's creation)."""
        ready = {c.get("type"): c.get("status") for c in ctx.status.get("conditions") or []}
        if ready.get("Ready") == "True":
            return
        if _age_seconds(meta, now) >= self.creation_traces.ttl_seconds:
            return
        self.creation_traces.begin(ctx.uid, name=ctx.name, namespace=ctx.namespace)

    def _post(self, tenant: KubeObject, event: TenantEvent) -> None:
        if event.audit:
            audit(self.kube, tenant, action=event.reason, message=event.message, type=event.type)
        else:
            post_event(
                self.kube, tenant, reason=event.reason, message=event.message, type=event.type
            )

    def _converge(
        self,
        objects: Sequence[KubeObject],
        live: dict[tuple[str, str, str, str], KubeObject | None],
        failures: list[str],
        result: TenantResult,
        *,
        fresh: bool,
    ) -> None:
        """Apply each object that needs it; remember what the cluster now has."""
        for obj in objects:
            kind = kind_of(obj)
            meta = obj["metadata"]
            key = _key(object_ref(obj))
            current = (
                None
                if fresh
                else self.kube.get(kind, meta["name"], namespace=meta.get("namespace"))
            )
            stamped = with_hash(_respect_holds(obj, current))
            if needs_apply(stamped, current):
                try:
                    current = self.kube.apply(stamped)
                except KubeError as exc:
                    # A Secret's refusal may quote what was sent (its values: passwords,
                    # the pooler's auth file): only the status and reason go anywhere,
                    # whether it is retried or reported.
                    if exc.transient:
                        if kind.kind == "Secret":
                            raise _withheld(exc) from None  # the loop retries (and logs) it
                        raise  # transient: the loop retries soon
                    # Refused (invalid, forbidden): say which and why, keep going.
                    why = (
                        f"{exc.status} {exc.reason} ({_WITHHELD})"
                        if kind.kind == "Secret"
                        else exc.message or exc.reason
                    )
                    failures.append(f"{kind.kind} {meta['name']}: {why}")
                    log.warning("apply %s %s refused: %s", kind.kind, meta["name"], why)
                    live[key] = current
                    continue
                result.applied.append(object_ref(obj))
            live[key] = current

    def _tenants_by_uid(self) -> dict[str, str]:
        return {
            str(t["metadata"]["uid"]): str(t["metadata"]["name"]) for t in self.kube.list(TENANT)
        }

    def _claim(self, ctx: TenantContext, live: KubeObject | None) -> NamespaceClaim:
        return claim_namespace(
            namespace=ctx.namespace,
            live=live,
            tenant=ctx.name,
            uid=ctx.uid,
            operator_namespace=self.operator_namespace,
            tenants_by_uid=self._tenants_by_uid,
        )

    def _await_binding(self, namespace: str) -> None:
        """Wait (briefly) until the API server's authorizer sees a binding just applied.

        RBAC reads bindings from its own watch cache: the parts would otherwise meet a
        Forbidden for the few hundred milliseconds it lags behind, and retry loudly.
        """
        deadline = time.monotonic() + BINDING_VISIBLE_SECONDS
        while True:
            review = self.kube.request(
                "POST",
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                body={
                    "apiVersion": "authorization.k8s.io/v1",
                    "kind": "SelfSubjectAccessReview",
                    "spec": {
                        "resourceAttributes": {
                            "namespace": namespace,
                            "verb": "get",
                            "resource": "secrets",
                        }
                    },
                },
                what=f"ask whether the operator's binding in {namespace} is in effect",
            )
            if ((review or {}).get("status") or {}).get("allowed") is True:
                return
            if time.monotonic() >= deadline:
                return  # the parts meet the Forbidden and the loop retries: no worse
            time.sleep(0.1)

    def _take_namespace(
        self,
        ctx: TenantContext,
        desired: KubeObject,
        live: dict[tuple[str, str, str, str], KubeObject | None],
        result: TenantResult,
    ) -> NamespaceClaim:
        """Create the namespace, or keep it (ours by uid, or handed over); else refuse.

        Always read, never assumed: the namespace is the one object that decides where the
        tenant may write. A missing namespace is created with a create, not an apply: two
        tenants racing for one name cannot both succeed, and the loser reads the winner's
        uid. An existing one is applied with its uid in the body, so that the apply fails
        instead of writing into a namespace deleted and made again by someone else meanwhile.
        """
        key = _key(object_ref(desired))
        stamped = with_hash(desired)
        current = self.kube.get(NAMESPACE, ctx.namespace)
        claim = self._claim(ctx, current)
        if claim.verdict == "create":
            try:
                current = self.kube.create(stamped)
            except KubeError as exc:
                if exc.status != 409:
                    raise
                # Someone made it between our read and our create: whose is it?
                current = self.kube.get(NAMESPACE, ctx.namespace)
                claim = self._claim(ctx, current)
                if claim.verdict != "refused":
                    raise  # ours after all (or handed over): the loop retries at once
            else:
                result.applied.append(object_ref(desired))
                log.info("tenant %s: created namespace %s", ctx.name, ctx.namespace)
        elif not claim.refused and needs_apply(stamped, current):
            assert current is not None
            pinned = copy.deepcopy(stamped)
            pinned["metadata"]["uid"] = current["metadata"]["uid"]
            current = self.kube.apply(pinned)
            result.applied.append(object_ref(desired))
            if claim.verdict == "adopt":
                log.info("tenant %s: adopted namespace %s", ctx.name, ctx.namespace)
        if not claim.refused:
            live[key] = current
        return claim

    def _refuse(
        self,
        tenant: KubeObject,
        status: _StatusBuilder,
        claim: NamespaceClaim,
        result: TenantResult,
    ) -> TenantResult:
        """Report a namespace the tenant may not use; write nothing anywhere but status.

        The refusal is logged once, when it is new, by the audit trail (below); every later
        look (each refused recheck) is silent, as it changes nothing."""
        status.fields.pop("namespace", None)
        status.condition("NamespaceReady", Observation("False", claim.reason, claim.message))
        status.condition(
            "Ready", Observation("False", claim.reason, clip(f"NamespaceReady: {claim.message}"))
        )
        for type_ in NAMESPACE_CONTENT_CONDITIONS:
            status.remove_condition(type_)
        # Nothing of the namespace is the tenant's: no namespace, children or pods on status.
        status.fields["children"] = []
        TENANT_READY.labels(tenant=result.name).set(0)
        events = _ready_transition(tenant, status)
        previous = {
            c.get("type"): c.get("reason")
            for c in (tenant.get("status") or {}).get("conditions") or []
        }.get("NamespaceReady")
        if not events and previous != claim.reason:
            # Ready was False already (another reason): the refusal is still audited, once.
            events = [TenantEvent(claim.reason, claim.message, "Warning", audit=True)]
        for event in events:
            self._post(tenant, event)
        result.status_written = status.write(
            self.kube,
            phase="Failed",
            keep_previous=True,
            forget=frozenset({"namespace", "replicas"}),
        )
        result.requeue_after = self.refused_recheck_seconds
        return result

    def _adopt_namespace(
        self, namespace: str, live: Mapping[tuple[str, str, str, str], KubeObject | None]
    ) -> None:
        """Once the namespace is ours, its orphan mark and the adoption mark are spent.

        The adoption mark goes, so that it cannot hand the namespace over a second time (to
        a later tenant that reuses the name after a Retain deletion).
        """
        ns = live.get(("v1", "Namespace", "", namespace))
        if not ns:
            return
        meta = ns["metadata"]
        patch: dict[str, Any] = {}
        if (meta.get("labels") or {}).get(ORPHANED_LABEL):
            patch["labels"] = {ORPHANED_LABEL: None}
        if ADOPT_ANNOTATION in (meta.get("annotations") or {}):
            patch["annotations"] = {ADOPT_ANNOTATION: None}
        if patch:
            # The resourceVersion makes it conditional: on the namespace we just checked.
            patch["resourceVersion"] = meta["resourceVersion"]
            self.kube.patch_merge(NAMESPACE, namespace, {"metadata": patch})

    def _prune(
        self, ctx: TenantContext, wanted: set[tuple[str, str, str, str]], result: TenantResult
    ) -> None:
        """Delete children listed on status before that the spec no longer asks for."""
        for ref in ctx.status.get("children") or []:
            if _key(ref) in wanted:
                continue
            kind = KINDS.get((ref.get("apiVersion", ""), ref.get("kind", "")))
            if kind is None:
                continue
            current = self.kube.get(kind, ref["name"], namespace=ref.get("namespace") or None)
            labels = (current or {}).get("metadata", {}).get("labels") or {}
            # Only what is provably ours: labelled as managed by us, for this tenant.
            if current is None or labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
                continue
            if labels.get(TENANT_LABEL) != ctx.name:
                continue
            if self.kube.delete(kind, ref["name"], namespace=ref.get("namespace") or None):
                result.deleted.append(ref)

    # -- deletion ----------------------------------------------------------------------

    def finalize(self, name: str) -> bool:
        """Handle deletion by spec.deletionPolicy; True when the finalizer may be released.
        Waits for a reconcile of the tenant in flight (see `reconcile`)."""
        with self._locks.hold(name):
            return self._finalize(name)

    def _finalize(self, name: str) -> bool:
        tenant = self.kube.get(TENANT, name)
        forget_tenant(name)
        self.creation_traces.forget_name(name)
        if tenant is None:
            return True
        self._converged.discard(str(tenant["metadata"]["uid"]))
        return self.deletion.finalize(tenant)


class _StatusBuilder(StatusBuilder):
    """The tenant's status: written once, only if it changed."""

    def write(
        self,
        kube: KubeClient,
        *,
        phase: str,
        keep_previous: bool = False,
        forget: frozenset[str] = frozenset(),
    ) -> bool:
        """`keep_previous`: keys not set this round keep their value, but those in `forget`."""
        status = self.base(phase)
        status.update({k: v for k, v in self.fields.items() if v is not None})

        def desired(current: KubeObject) -> dict[str, Any]:
            if not keep_previous:
                return status
            previous = current.get("status") or {}
            keys = OWNED_STATUS_KEYS - status.keys() - forget
            kept = {k: v for k, v in previous.items() if k in keys}
            return {**kept, **status}

        written = update_status(
            kube,
            TENANT,
            self.obj["metadata"]["name"],
            desired,
            owned_keys=OWNED_STATUS_KEYS,
            read=self.obj,
        )
        return written is not None

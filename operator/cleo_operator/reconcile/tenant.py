"""Level-based reconcile of one CleoTenant: desired children against what the cluster has.

Each call reads the tenant and its children fresh, renders the desired children from the
spec, applies only those that are missing, stale or drifted (see `kube.apply`), observes
what the cluster reports, and writes status only when it changed. It is safe to call at any
time and any number of times: it is how the operator answers a spec change, a child edited
or deleted by hand, and the periodic resync alike.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from cleo_operator.api.base import Condition, ConditionStatus, set_condition
from cleo_operator.api.errors import SpecError
from cleo_operator.api.objects import KubeObject, ObjectRef
from cleo_operator.api.tenant import CleoTenantSpec, parse_tenant_spec
from cleo_operator.kube.apply import needs_apply, with_hash
from cleo_operator.kube.client import KINDS, KubeClient, KubeError, kind_of
from cleo_operator.kube.status import write_status
from cleo_operator.render.meta import ORPHANED_LABEL, default_namespace, tenant_owner
from cleo_operator.render.tenant import render_namespace

log = logging.getLogger(__name__)

TENANT: Final = KINDS[("cleoai.io/v1alpha1", "CleoTenant")]
NAMESPACE: Final = KINDS[("v1", "Namespace")]

# The status keys this reconciler owns; anything else under status belongs to someone else.
OWNED_STATUS_KEYS: Final = frozenset(
    {"observedGeneration", "phase", "conditions", "namespace", "children", "orphaned"}
)


@dataclass
class TenantResult:
    """What one reconcile did; the handler uses it for logs, events and requeueing."""

    name: str
    applied: list[ObjectRef] = field(default_factory=list)
    status_written: bool = False
    ready: bool = False
    requeue_after: float | None = None
    """Ask to be called again this soon (seconds) because something is still converging."""


def _ref(obj: KubeObject) -> ObjectRef:
    meta = obj["metadata"]
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "namespace": meta.get("namespace", ""),
        "name": meta["name"],
    }


def tenant_namespace(spec: CleoTenantSpec, name: str) -> str:
    return spec.namespace or default_namespace(name)


def render_children(name: str, uid: str, spec: CleoTenantSpec) -> list[KubeObject]:
    """Every child object the tenant should have, in the order they are applied."""
    owner = tenant_owner(name=name, uid=uid)
    namespace = tenant_namespace(spec, name)
    return [render_namespace(tenant=name, namespace=namespace, owner=owner)]


def _conditions_dump(conditions: list[Condition]) -> list[dict[str, Any]]:
    return [c.model_dump(by_alias=True, exclude_none=True) for c in conditions]


def _current_conditions(tenant: KubeObject) -> list[Condition]:
    raw = (tenant.get("status") or {}).get("conditions") or []
    out: list[Condition] = []
    for item in raw:
        try:
            out.append(Condition.model_validate(item))
        except ValueError:
            continue  # a hand-written malformed condition is dropped, not fatal
    return out


class TenantReconciler:
    """Reconciles CleoTenants through one KubeClient; shared by all worker threads."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.kube = kube
        self.now = now

    def reconcile(self, name: str) -> TenantResult:
        """Bring tenant `name` to its desired state; a no-op when it already is."""
        result = TenantResult(name=name)
        tenant = self.kube.get(TENANT, name)
        if tenant is None or tenant["metadata"].get("deletionTimestamp"):
            return result
        meta = tenant["metadata"]
        generation = int(meta.get("generation", 0))
        now = self.now()
        conditions = _current_conditions(tenant)

        def condition(type_: str, ok: bool | None, reason: str, message: str) -> None:
            nonlocal conditions
            status: ConditionStatus = "Unknown" if ok is None else ("True" if ok else "False")
            conditions = set_condition(
                conditions,
                type=type_,
                status=status,
                reason=reason,
                message=message,
                observed_generation=generation,
                now=now,
            )

        try:
            spec = parse_tenant_spec(tenant.get("spec") or {})
        except SpecError as exc:
            condition("Ready", False, "InvalidSpec", str(exc))
            self._write_status(
                tenant, result, generation=generation, phase="Invalid", conditions=conditions
            )
            return result

        namespace = tenant_namespace(spec, name)
        if spec.paused:
            condition(
                "Ready",
                False,
                "Paused",
                "spec.paused is true: the operator makes no changes to this tenant",
            )
            self._write_status(
                tenant,
                result,
                generation=generation,
                phase="Paused",
                conditions=conditions,
                namespace=namespace,
            )
            return result

        desired = render_children(name, meta["uid"], spec)
        live: dict[tuple[str, str, str], KubeObject | None] = {}
        for obj in desired:
            kind = kind_of(obj)
            obj_meta = obj["metadata"]
            current = self.kube.get(kind, obj_meta["name"], namespace=obj_meta.get("namespace"))
            stamped = with_hash(obj)
            if needs_apply(stamped, current):
                current = self.kube.apply(stamped)
                result.applied.append(_ref(obj))
            live[(kind.kind, obj_meta.get("namespace", ""), obj_meta["name"])] = current

        ns = live.get(("Namespace", "", namespace))
        ns_phase = ((ns or {}).get("status") or {}).get("phase")
        if ns_phase == "Active":
            condition("NamespaceReady", True, "Active", f"namespace {namespace} is active")
        else:
            condition(
                "NamespaceReady",
                False,
                "NotActive",
                f"namespace {namespace} is {ns_phase or 'missing'}",
            )
        result.ready = ns_phase == "Active"
        if result.ready:
            condition("Ready", True, "Reconciled", "every part of the tenant works")
        else:
            condition("Ready", False, "Progressing", "waiting for the namespace to be active")
            result.requeue_after = 2.0

        self._write_status(
            tenant,
            result,
            generation=generation,
            phase="Ready" if result.ready else "Progressing",
            conditions=conditions,
            namespace=namespace,
            children=[_ref(obj) for obj in desired],
        )
        return result

    def _write_status(
        self,
        tenant: KubeObject,
        result: TenantResult,
        *,
        generation: int,
        phase: str,
        conditions: list[Condition],
        namespace: str | None = None,
        children: list[ObjectRef] | None = None,
    ) -> None:
        status: dict[str, Any] = {
            "observedGeneration": generation,
            "phase": phase,
            "conditions": _conditions_dump(conditions),
        }
        if namespace is not None:
            status["namespace"] = namespace
        if children is not None:
            status["children"] = children
        previous = tenant.get("status") or {}
        # Keys we set before but do not set now (e.g. children while paused) stay as they were.
        for key in ("namespace", "children", "orphaned"):
            if key not in status and key in previous:
                status[key] = previous[key]
        written = write_status(self.kube, TENANT, tenant, status, owned_keys=OWNED_STATUS_KEYS)
        result.status_written = written is not None

    def finalize(self, name: str) -> bool:
        """Handle deletion by spec.deletionPolicy; True when the finalizer may be released."""
        tenant = self.kube.get(TENANT, name)
        if tenant is None:
            return True
        try:
            spec = parse_tenant_spec(tenant.get("spec") or {})
        except SpecError:
            # An invalid spec cannot say Delete with certainty: keep the data (Retain).
            log.warning("tenant %s has an invalid spec; deleting with Retain", name)
            namespace = (tenant.get("status") or {}).get("namespace") or default_namespace(name)
            self._orphan(name, namespace)
            return True
        namespace = tenant_namespace(spec, name)
        if spec.deletion_policy == "Delete":
            try:
                self.kube.delete(NAMESPACE, namespace, propagation="Foreground")
            except KubeError as exc:
                if not exc.not_found:
                    raise
            return self.kube.get(NAMESPACE, namespace) is None
        self._orphan(name, namespace)
        return True

    def _orphan(self, name: str, namespace: str) -> None:
        """Retain: keep the namespace and its data, cut it loose from the tenant, say so."""
        ns = self.kube.get(NAMESPACE, namespace)
        if ns is None:
            return
        labels = ns["metadata"].get("labels") or {}
        owners = ns["metadata"].get("ownerReferences") or []
        kept = [o for o in owners if o.get("kind") != "CleoTenant" or o.get("name") != name]
        if labels.get(ORPHANED_LABEL) == "true" and kept == owners:
            return
        # A merge patch (not apply): the orphan mark must survive our field manager going away.
        self.kube.patch_merge(
            NAMESPACE,
            namespace,
            {"metadata": {"labels": {ORPHANED_LABEL: "true"}, "ownerReferences": kept}},
        )

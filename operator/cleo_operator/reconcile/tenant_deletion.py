"""Deletion of a CleoTenant by its `spec.deletionPolicy`: what goes, what is cut loose.

Why apart from the reconcile: deletion answers other questions (whose namespace is this,
may it go now, what must outlive the tenant) and its mistakes cost data, so its rules sit
in one place. Delete deletes only a namespace that carries the tenant's uid, with the
namespace's uid and resourceVersion as preconditions of the delete, so the check and the
delete are one, and only once every part is done (a final backup runs in the namespace).
Retain cuts every child loose (owner references dropped, the namespace marked orphaned) so
the garbage collector keeps them. A namespace that is not the tenant's is never touched.

While a deletion waits (for a part, such as the final backup before the database drop, or
for the namespace to go), the tenant's status says so: phase ``Deleting`` and a Ready
condition with reason ``Deleting`` whose message names what it waits for. Without it a
tenant stuck in deletion looked as it did before (``Ready``), and what it waited for was
only in the operator's log.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from cleo_operator.api.errors import SpecError
from cleo_operator.api.objects import KubeObject
from cleo_operator.api.tenant import parse_tenant_spec
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import KINDS, NAMESPACE, TENANT, Kind
from cleo_operator.kube.status import write_status
from cleo_operator.reconcile.namespace_claim import is_system_namespace, owner_uid
from cleo_operator.reconcile.status import Observation, StatusBuilder
from cleo_operator.reconcile.tenant_parts import TenantContext, TenantPart
from cleo_operator.render.meta import ORPHANED_LABEL, default_namespace
from cleo_operator.render.tenant import tenant_namespace

__all__ = ["DELETING_STATUS_KEYS", "TenantDeletion"]

DELETING_STATUS_KEYS: Final = frozenset({"observedGeneration", "phase", "conditions"})
"""The keys of a tenant's status a waiting deletion writes."""

log = logging.getLogger(__name__)


class TenantDeletion:
    """Deletes tenants for `TenantReconciler.finalize`; shared by the worker threads."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        parts: Sequence[TenantPart],
        operator_namespace: str,
        now: Callable[[], datetime.datetime],
    ) -> None:
        self.kube = kube
        self.parts = parts
        self.operator_namespace = operator_namespace
        self.now = now

    def finalize(self, tenant: KubeObject) -> bool:
        """Delete `tenant` (as just read) by its policy; True when the finalizer may go."""
        name = str(tenant["metadata"]["name"])
        status = tenant.get("status") or {}
        uid = str(tenant["metadata"]["uid"])
        try:
            spec = parse_tenant_spec(tenant.get("spec") or {})
        except SpecError:
            # An invalid spec cannot say Delete with certainty: keep the data (Retain).
            log.warning("tenant %s has an invalid spec; deleting with Retain", name)
            namespace = status.get("namespace") or default_namespace(name)
            if self.owns(namespace, uid, self.kube.get(NAMESPACE, namespace)):
                self._orphan(name, uid, namespace, status.get("children") or [])
            return True
        namespace = tenant_namespace(name=name, spec=spec)
        live_ns = self.kube.get(NAMESPACE, namespace)
        if live_ns is not None and not self.owns(namespace, uid, live_ns):
            # Not ours (refused, or swapped under us): touch nothing, not even with Delete;
            # the parts would write there too (a final backup Job, orphan marks).
            log.warning(
                "tenant %s does not own namespace %s: deleted without touching it", name, namespace
            )
            return True
        ctx = TenantContext(
            name=name,
            uid=uid,
            generation=int(tenant["metadata"].get("generation", 0)),
            spec=spec,
            namespace=namespace,
            annotations=tenant["metadata"].get("annotations") or {},
            status=status,
            now=self.now(),
        )
        delete = spec.deletion_policy == "Delete"
        # A list, not a generator: every part must get its turn, even after one said no.
        parts_done = all([part.finalize(ctx, delete=delete) for part in self.parts])  # noqa: C419
        if not parts_done:
            self._report_waiting(tenant, ctx.waiting or ["waiting for the tenant's parts"])
        if delete:
            if not parts_done:
                # The namespace goes only once every part is done: the database drop may
                # wait for a final backup, whose Job runs in the namespace and reads the
                # tenant's credentials Secret there.
                return False
            gone = self._delete_namespace(namespace, uid)
            if not gone:
                self._report_waiting(
                    tenant,
                    [
                        f"waiting for namespace {namespace} to be deleted (what holds it: "
                        f"kubectl get namespace {namespace} -o jsonpath='{{.status.conditions}}')"
                    ],
                )
            return gone
        self._orphan(name, uid, namespace, status.get("children") or [])
        return parts_done

    def _report_waiting(self, tenant: KubeObject, waiting: Sequence[str]) -> None:
        """Phase Deleting, and Ready=False (reason Deleting) saying what the deletion waits
        for; written only when it changed."""
        meta = tenant["metadata"]
        builder = StatusBuilder(tenant, int(meta.get("generation", 0)), self.now())
        policy = (tenant.get("spec") or {}).get("deletionPolicy") or "Retain"
        builder.condition(
            "Ready",
            Observation(
                "False",
                "Deleting",
                f"the tenant is being deleted (deletionPolicy {policy}): " + "; ".join(waiting),
            ),
        )
        try:
            write_status(
                self.kube,
                TENANT,
                tenant,
                builder.base("Deleting"),
                owned_keys=DELETING_STATUS_KEYS,
            )
        except KubeError as exc:
            if not (exc.not_found or exc.conflict):
                raise
            # Gone meanwhile, or written by someone else: the next round writes it again.

    def owns(self, namespace: str, uid: str, live: KubeObject | None) -> bool:
        """True when `live` (namespace `namespace`) is the tenant's own, by uid."""
        if live is None or namespace == self.operator_namespace or is_system_namespace(namespace):
            return False
        return owner_uid(live) == uid

    def _delete_namespace(self, namespace: str, uid: str) -> bool:
        """Delete the tenant's namespace if it is still the one it owns; True once gone.

        Ownership is checked by uid on a fresh read, and the delete carries that read's uid
        and resourceVersion as preconditions: if the namespace was replaced or relabelled
        in between, the API server refuses the delete (409) and the next round reads again.
        A namespace of the same name that is not the tenant's is never deleted.
        """
        live = self.kube.get(NAMESPACE, namespace)
        if live is None or not self.owns(namespace, uid, live):
            return True
        meta = live["metadata"]
        if meta.get("deletionTimestamp"):
            return False  # on its way
        try:
            self.kube.delete(
                NAMESPACE,
                namespace,
                propagation="Foreground",
                preconditions={"uid": meta["uid"], "resourceVersion": meta["resourceVersion"]},
            )
        except KubeError as exc:
            if not exc.conflict:
                raise
            return False
        return False  # the next round sees it gone (or still terminating)

    def _orphan(
        self, name: str, uid: str, namespace: str, children: Sequence[Mapping[str, Any]]
    ) -> None:
        """Retain: keep the namespace and everything in it, cut loose from the tenant.

        Every child is owned by the CleoTenant, so the garbage collector would delete them
        all once the tenant is gone; the owner references go first, then the namespace is
        marked as orphaned (a merge patch, so the mark outlives our field manager).
        """
        for ref in children:
            kind = KINDS.get((ref.get("apiVersion", ""), ref.get("kind", "")))
            if kind is not None and kind.kind != "Namespace":
                self._drop_owner(kind, ref["name"], ref.get("namespace") or None, name)
        ns = self.kube.get(NAMESPACE, namespace)
        if ns is None or not self.owns(namespace, uid, ns):
            return
        self._drop_owner(
            NAMESPACE,
            namespace,
            None,
            name,
            extra_labels={ORPHANED_LABEL: "true"},
            resource_version=ns["metadata"]["resourceVersion"],
        )

    def _drop_owner(
        self,
        kind: Kind,
        obj_name: str,
        namespace: str | None,
        tenant: str,
        *,
        extra_labels: Mapping[str, str] | None = None,
        resource_version: str | None = None,
    ) -> None:
        """Remove the tenant's owner reference (and add `extra_labels`); `resource_version`
        makes the patch conditional on the object as it was checked."""
        current = self.kube.get(kind, obj_name, namespace=namespace)
        if current is None:
            return
        if resource_version is not None and (
            current["metadata"].get("resourceVersion") != resource_version
        ):
            raise KubeError(
                status=409,
                reason="Conflict",
                message=f"{kind.kind} {obj_name} changed since it was checked",
                what=f"orphan {kind.kind} {obj_name}",
            )
        owners = current["metadata"].get("ownerReferences") or []
        kept = [
            o for o in owners if not (o.get("kind") == "CleoTenant" and o.get("name") == tenant)
        ]
        labels = current["metadata"].get("labels") or {}
        missing = {k: v for k, v in (extra_labels or {}).items() if labels.get(k) != v}
        if kept == owners and not missing:
            return
        patch: dict[str, Any] = {"metadata": {"ownerReferences": kept}}
        if resource_version is not None:
            patch["metadata"]["resourceVersion"] = resource_version
        if missing:
            patch["metadata"]["labels"] = missing
        try:
            self.kube.patch_merge(kind, obj_name, patch, namespace=namespace)
        except KubeError as exc:
            if not exc.not_found:
                raise

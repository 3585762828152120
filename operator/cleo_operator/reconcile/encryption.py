"""A tenant's keyring and sealed secrets as one part of the tenant reconcile (`TenantPart`).

Why one part for both: they share the operator's keys (`OperatorKeys`), both write Secrets
into the tenant namespace under rules of their own, and both feed the Deployment's checksum
(a rotated keyring or a changed sealed secret must roll the pods).

Why the part writes its Secrets itself instead of returning them in `PartResult.objects`:
the tenant reconcile stamps the objects it applies with `with_hash`, a hash over the whole
object, which for a Secret would publish an unsalted hash of the plaintext in an
annotation; `apply_secrets` stamps without the data. The keyring's order of writes
(`reconcile.keys`) cannot be expressed as "objects to apply" at all.

Pruning: the tenant reconcile prunes only the children it rendered, so this part deletes the
unsealed Secrets whose name left `spec.secrets` (selected by the tenant and the `secrets`
component label, never the keyring). A Secret whose values fail to open is still in the spec
and is never pruned: it keeps its last good values.

Deletion: with Retain, the unsealed Secrets are cut loose from the CleoTenant (owner reference
dropped, `cleoai.io/orphaned` label) so the garbage collector keeps them; the keyring never had
an owner reference. With Delete, the namespace goes and takes them along; the KEK-wrapped copy
of the keyring in the operator namespace is kept either way (docs/encryption.md).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from collections.abc import Mapping
from typing import Any, Final

from cleo_operator.api.objects import KubeObject
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.keys import TENANT_KEYRING_SECRET
from cleo_operator.kube.kinds import SECRET
from cleo_operator.observability.metrics import KEY_NEXT_ROTATION
from cleo_operator.reconcile.keys import ConditionUpdate, KeyringReconciler, OperatorKeys
from cleo_operator.reconcile.secrets import (
    SECRETS_COMPONENT,
    SecretsReconciler,
    apply_secrets,
)
from cleo_operator.reconcile.status import Observation, clip
from cleo_operator.reconcile.tenant_parts import PartResult, TenantContext, TenantEvent
from cleo_operator.render.child import COMPONENT_LABEL
from cleo_operator.render.meta import MANAGED_BY, MANAGED_BY_LABEL, ORPHANED_LABEL, TENANT_LABEL

__all__ = ["KEYRING_FINGERPRINT", "EncryptionPart", "secret_fingerprint_key"]

log = logging.getLogger(__name__)

KEYRING_FINGERPRINT: Final = "keyring"
"""Key of the keyring's fingerprint among the Deployment's checksum inputs."""


def secret_fingerprint_key(name: str) -> str:
    """Key of an unsealed Secret's fingerprint among the checksum inputs."""
    return f"secret/{name}"


def _export_next_rotation(tenant: str, next_rotation: object) -> None:
    """status.nextRotation as a metric, for the key-rotation-overdue alert."""
    if not isinstance(next_rotation, str):
        with contextlib.suppress(KeyError):
            KEY_NEXT_ROTATION.remove(tenant)
        return
    moment = datetime.datetime.fromisoformat(next_rotation.replace("Z", "+00:00"))
    KEY_NEXT_ROTATION.labels(tenant=tenant).set(moment.timestamp())


def _newly_failed(ctx: TenantContext, item: Mapping[str, Any]) -> bool:
    """A Secret that fails now and did not fail for the same reason before (one Event)."""
    for old in ctx.status.get("secrets") or []:
        if old.get("name") == item.get("name"):
            return bool(old.get("ready")) or old.get("reason") != item.get("reason")
    return True


def _observation(update: ConditionUpdate) -> Observation:
    return Observation(update.status, update.reason, clip(update.message))


def _selector(tenant: str) -> str:
    return (
        f"{MANAGED_BY_LABEL}={MANAGED_BY},{TENANT_LABEL}={tenant},"
        f"{COMPONENT_LABEL}={SECRETS_COMPONENT}"
    )


class EncryptionPart:
    """Keyring and sealed secrets as a `TenantPart` of `TenantReconciler` (``parts=[...]``)."""

    def __init__(self, kube: KubeClient, keys: OperatorKeys) -> None:
        self.kube = kube
        self.keyrings = KeyringReconciler(kube, keys)
        self.secrets = SecretsReconciler(kube, keys)

    def reconcile(self, ctx: TenantContext) -> PartResult:
        """Keep the keyring, write the unsealed Secrets, prune the ones left out of the spec.

        Contributes the `KeyringReady` and `SecretsReady` conditions, the status fields
        `keyVersion`, `lastRotation`, `nextRotation` and `secrets`, the checksum inputs
        (`keyring`, `secret/<name>`), the Secrets for the workload's envFrom (those that
        exist), and the time of the next keyring rotation as `requeue_after`.
        """
        keyring = self.keyrings.reconcile(
            tenant=ctx.name,
            namespace=ctx.namespace,
            encryption=ctx.spec.encryption,
            previous_status=ctx.status,
            now=ctx.now,
        )
        unsealed = self.secrets.reconcile(
            tenant=ctx.name, namespace=ctx.namespace, owner=ctx.owner, secrets=ctx.spec.secrets
        )
        secrets = apply_secrets(self.kube, unsealed)
        for name in secrets.applied:
            log.info("tenant %s: wrote Secret %s/%s", ctx.name, ctx.namespace, name)
        self._prune(ctx)

        result = PartResult(requeue_after=keyring.requeue_after)
        result.conditions[keyring.condition.type] = _observation(keyring.condition)
        result.conditions[secrets.condition.type] = _observation(secrets.condition)
        result.status.update(keyring.status)
        result.status["secrets"] = list(secrets.statuses)
        if keyring.fingerprint is not None:
            result.fingerprints[KEYRING_FINGERPRINT] = keyring.fingerprint
        for name, fingerprint in secrets.fingerprints.items():
            result.fingerprints[secret_fingerprint_key(name)] = fingerprint
        # Only Secrets that exist go into envFrom: a pod never waits for a missing one.
        result.secret_names = sorted(secrets.fingerprints)
        if keyring.fingerprint is not None:
            result.keyring_secret = TENANT_KEYRING_SECRET
        _export_next_rotation(ctx.name, keyring.status.get("nextRotation"))
        # Keys created or rotated, and what went wrong with them, are the audit trail's.
        if keyring.actions:
            result.events.append(TenantEvent("Keyring", "; ".join(keyring.actions), audit=True))
        result.events.extend(
            TenantEvent(reason, message, "Warning", audit=True)
            for reason, message in keyring.warnings
        )
        result.events.extend(
            TenantEvent("SecretUnsealed", f"wrote Secret {name}") for name in secrets.applied
        )
        result.events.extend(
            TenantEvent(  # an unseal refused: audited
                str(item.get("reason") or "SecretNotUnsealed"),
                str(item.get("message") or f"Secret {item['name']} could not be unsealed"),
                "Warning",
                audit=True,
            )
            for item in secrets.statuses
            if not item.get("ready") and _newly_failed(ctx, item)
        )
        return result

    def _unsealed(self, ctx: TenantContext) -> list[KubeObject]:
        """The unsealed Secrets of this tenant in its namespace (never its keyring)."""
        return self.kube.list(SECRET, namespace=ctx.namespace, label_selector=_selector(ctx.name))

    def _prune(self, ctx: TenantContext) -> None:
        """Delete unsealed Secrets of this tenant whose name is no longer in spec.secrets."""
        wanted = {item.name for item in ctx.spec.secrets}
        for obj in self.kube.list(
            SECRET, namespace=ctx.namespace, label_selector=_selector(ctx.name)
        ):
            name = obj["metadata"]["name"]
            if name not in wanted and self.kube.delete(SECRET, name, namespace=ctx.namespace):
                log.info(
                    "tenant %s: deleted Secret %s/%s (left spec.secrets)",
                    ctx.name,
                    ctx.namespace,
                    name,
                )

    def finalize(self, ctx: TenantContext, *, delete: bool) -> bool:
        """Retain: cut the unsealed Secrets loose from the tenant. Delete: nothing to do."""
        if delete:
            return True
        for obj in self.kube.list(
            SECRET, namespace=ctx.namespace, label_selector=_selector(ctx.name)
        ):
            meta = obj["metadata"]
            owners = meta.get("ownerReferences") or []
            kept = [o for o in owners if o.get("uid") != ctx.uid]
            if kept == owners and (meta.get("labels") or {}).get(ORPHANED_LABEL) == "true":
                continue
            # A merge patch, not an apply: the mark must outlive our field manager.
            try:
                self.kube.patch_merge(
                    SECRET,
                    meta["name"],
                    {"metadata": {"ownerReferences": kept, "labels": {ORPHANED_LABEL: "true"}}},
                    namespace=ctx.namespace,
                )
            except KubeError as exc:
                if not exc.not_found:
                    raise
        return True

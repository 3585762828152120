"""What people run on the keys: recovery from a quarantine Secret, and KEK rotation.

Why apart from the reconcilers: these run from the command line, by someone who can read and
write the operator namespace, never from a reconcile; each is the one way its change enters
the operator's truth (a quarantined keyring adopted as the copy, every copy re-wrapped).
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass

from cleo_operator.crypto import (
    CryptoError,
    KeyEncryptionKeys,
    Keyring,
    unwrap_keyring,
    wrap_keyring,
)
from cleo_operator.crypto.keyring import keyring_kek_context
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.keys import (
    KeyringCopy,
    SecretKEKProvider,
    fault_point,
    keyring_copy_name,
    list_keyring_copies,
    read_keyring_copy,
    read_secret,
    update_keyring_copy,
)
from cleo_operator.kube.kinds import SECRET as SECRET_KIND
from cleo_operator.reconcile.keys.keyring import KEYRING_COPY_SELECTOR, keyring_differences
from cleo_operator.reconcile.keys.operator_keys import OperatorKeys
from cleo_operator.reconcile.keys.quarantine import (
    KIND_UNTRUSTED,
    QUARANTINE_COMPONENT,
    QUARANTINE_KIND,
    QUARANTINE_PREFIX,
    keep_in_quarantine,
    quarantine_name,
)
from cleo_operator.render.child import COMPONENT_LABEL
from cleo_operator.render.meta import TENANT_LABEL

log = logging.getLogger(__name__)


def adopt_quarantined(
    kube: KubeClient,
    keys: OperatorKeys,
    *,
    tenant: str,
    name: str,
    replace_new_keyring: bool = False,
    now: datetime.datetime | None = None,
) -> tuple[Keyring, str]:
    """Make the keyring kept in quarantine Secret `name` the copy of `tenant`'s keyring.

    For people, after review: the one way key material from a tenant-writable place enters
    the operator's truth, and only by someone who can read and write the operator namespace.
    The case it is for: the operator namespace was restored from an old backup, so the copy
    lacks versions the tenant Secret held (and the reconciler quarantined). Only a keyring
    that holds every version of the copy with the same keys is adopted: anything else would
    lose key material of the copy. Returns the adopted keyring and a line for people; the
    quarantine Secret is deleted afterwards, and the next reconcile writes the tenant Secret.
    Raises ValueError (with what to do) when the Secret is not such a keyring.

    A quarantine of a keyring found before the tenant had keys (`UntrustedKeyringReplaced`)
    shares no key with the new keyring made then, so it is adopted only with
    `replace_new_keyring` (the person has checked that the tenant Secret was the tenant's own,
    and that nothing was encrypted with the new keyring worth keeping); the new keyring is not
    thrown away but kept in a quarantine Secret of its own first.
    """
    stored = read_secret(kube, namespace=keys.operator_namespace, name=name)
    where = f"{keys.operator_namespace}/{name}"
    if stored is None:
        raise ValueError(f"there is no quarantine Secret {where}")
    if (
        not name.startswith(QUARANTINE_PREFIX)
        or stored.labels.get(COMPONENT_LABEL) != QUARANTINE_COMPONENT
        or stored.labels.get(TENANT_LABEL) != tenant
    ):
        raise ValueError(
            f"{where} is not a keyring quarantine Secret of tenant {tenant} (name "
            f"{QUARANTINE_PREFIX}{tenant}-..., labels {COMPONENT_LABEL}={QUARANTINE_COMPONENT} "
            f"and {TENANT_LABEL}={tenant})"
        )
    try:
        quarantined = Keyring.from_secret_data(stored.data)
    except CryptoError as exc:
        raise ValueError(f"{where} does not hold a readable keyring ({exc})") from None
    kek = keys.kek.load()
    copy = read_keyring_copy(kube, operator_namespace=keys.operator_namespace, tenant=tenant)
    if copy is None:
        raise ValueError(
            f"tenant {tenant} has no keyring copy {keys.operator_namespace}/"
            f"{keyring_copy_name(tenant)}; the reconciler makes one from the tenant Secret"
        )
    current = unwrap_keyring(copy.wrapped, kek, tenant=tenant)
    differences = keyring_differences(quarantined, current.to_secret_data())
    # The copy may lack versions and name another active one; anything else loses keys.
    lost = [d for d in differences.found if not d.startswith(("it lacks version", "it names v"))]
    untrusted = stored.annotations.get(QUARANTINE_KIND) == KIND_UNTRUSTED
    kept = ""
    if lost and not (untrusted and replace_new_keyring):
        hint = (
            ": it was found before the tenant had keys, and the copy holds the new keyring "
            "made then; to replace that keyring anyway (it is kept in a quarantine Secret), "
            "run again with --replace-new-keyring"
            if untrusted
            else ""
        )
        raise ValueError(
            f"{where} does not hold every version of the copy with the same key (the copy, "
            f"compared with it: {'; '.join(lost)}); adopting it would lose key material, so "
            f"nothing was changed{hint}"
        )
    if lost:
        # The new keyring made when this one was quarantined: kept, never thrown away.
        replaced = quarantine_name(tenant, f"replaced-{copy.secret.resource_version}")
        keep_in_quarantine(
            kube,
            keys.operator_namespace,
            replaced,
            current.to_secret_data(),
            tenant=tenant,
            source=f"{keys.operator_namespace}/{keyring_copy_name(tenant)}",
            reason=f"the keyring copy replaced by adopting {name}",
            now=now or datetime.datetime.now(datetime.UTC),
        )
        kept = f"; the keyring it held before is kept in {keys.operator_namespace}/{replaced}"
    update_keyring_copy(kube, copy, wrap_keyring(quarantined, kek, tenant=tenant))
    kube.delete(SECRET_KIND, name, namespace=keys.operator_namespace)
    return quarantined, (
        f"the keyring copy {keys.operator_namespace}/{keyring_copy_name(tenant)} now holds "
        f"versions {', '.join(k.key_id for k in quarantined.keys)} (active "
        f"v{quarantined.active_version}) from {where}, which was deleted{kept}; the operator "
        "writes the tenant Secret from the copy on its next reconcile"
    )


# -- KEK rotation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RewrapReport:
    """What `rewrap_keyring_copies` did, by tenant (names only)."""

    kek_version: int
    """The current KEK version everything was moved to."""
    rewrapped: tuple[str, ...] = ()
    """Tenants whose copy was re-wrapped now."""
    current: tuple[str, ...] = ()
    """Tenants whose copy already used the current KEK."""
    failed: tuple[tuple[str, str], ...] = ()
    """(tenant, why) for copies that could not be re-wrapped; they are left as they were."""


def rewrap_keyring_copies(
    kube: KubeClient, keys: OperatorKeys, *, attempts: int = 5
) -> RewrapReport:
    """Re-wrap every keyring copy wrapped by an older KEK version with the current one.

    Each copy is updated with a resourceVersion precondition; on a conflict (the operator
    rotated that keyring meanwhile) it is read again and retried, up to `attempts` times.
    """
    kek = keys.kek.load()
    rewrapped: list[str] = []
    current: list[str] = []
    failed: list[tuple[str, str]] = []
    for copy in list_keyring_copies(
        kube, operator_namespace=keys.operator_namespace, label_selector=KEYRING_COPY_SELECTOR
    ):
        try:
            done = _rewrap_one(kube, keys, kek, copy, attempts=attempts)
        except CryptoError as exc:
            failed.append((copy.tenant, f"{exc.reason}: {exc}"))
            log.error("cannot re-wrap the keyring copy of tenant %s: %s", copy.tenant, exc)
            continue
        (rewrapped if done else current).append(copy.tenant)
    return RewrapReport(
        kek_version=kek.current_version,
        rewrapped=tuple(rewrapped),
        current=tuple(current),
        failed=tuple(failed),
    )


def _rewrap_one(
    kube: KubeClient,
    keys: OperatorKeys,
    kek: KeyEncryptionKeys,
    copy: KeyringCopy,
    *,
    attempts: int,
) -> bool:
    """Re-wrap one copy if it needs it; True when this call re-wrapped it."""
    context = keyring_kek_context(tenant=copy.tenant)
    for attempt in range(attempts):
        if not kek.needs_rewrap(copy.wrapped):
            return False
        try:
            update_keyring_copy(kube, copy, kek.rewrap(copy.wrapped, context=context))
        except KubeError as exc:
            if not exc.conflict or attempt == attempts - 1:
                raise
            fresh = read_keyring_copy(
                kube, operator_namespace=keys.operator_namespace, tenant=copy.tenant
            )
            if fresh is None:
                return False
            copy = fresh
            continue
        fault_point("keyring-copy-rewrapped")
        log.info(
            "re-wrapped the keyring copy of tenant %s with KEK v%d",
            copy.tenant,
            kek.current_version,
        )
        return True
    return False


def rotate_kek(kube: KubeClient, keys: OperatorKeys) -> RewrapReport:
    """Add a KEK version to the KEK Secret, then re-wrap every keyring copy with it.

    A crash between the two steps is harmless: old versions are kept, so every copy still
    opens, and `rewrap_keyring_copies` (or the next reconcile of each tenant) finishes the job.
    With a KEK directory, new versions come from the KMS: add the file, then re-wrap.
    """
    if not isinstance(keys.kek, SecretKEKProvider):
        raise ValueError(
            "the KEKs come from a directory (CLEO_KEK_DIR): add the new version there (a file "
            "named v<N+1> from your KMS), then run `cleo-operator keys rewrap`"
        )
    keys.kek.rotate()
    return rewrap_keyring_copies(kube, keys)

"""Each tenant's keyring: made once, kept in two homes, repaired from the copy, rotated.

A tenant keyring lives in two places:

- `cleo-keyring` in the tenant namespace: what CleoAI mounts. It goes with the namespace.
- `cleo-keyring-<tenant>` in the operator namespace: the same keyring wrapped by the current
  KEK (`wrap_keyring`). It outlives a deleted namespace, a Retain deletion and a restore of
  the namespace from an old backup, and it is useless without the KEK.

The copy is the only truth. The tenant Secret lives where the tenant's admins can write
(they may edit every Secret in their namespace), so nothing read from it ever flows into the
copy once the copy exists: a tenant Secret that differs from the copy in any way is repaired
from it. The order of writes is chosen so that a crash between any two steps never leads to
a second random keyring for a tenant:

1. Neither exists: generate, POST-create the copy, then POST-create the tenant Secret from
   it. A crash after the copy's create leaves the copy, from which the next run restores the
   tenant Secret; a crash before it leaves nothing written, so generating again loses
   nothing. A 409 on the copy means someone else's keyring won: that one is used.
2. The tenant Secret exists without a copy. Only the CleoTenant's own status (tenants
   cannot write it; `keyVersion` is recorded only after this tenant's copy existed) says
   whether it is the tenant's keyring:
   - `status.keyVersion` set (the copy was deleted by someone with rights in the operator
     namespace): the copy is made from the tenant Secret, which is never replaced. (An
     unreadable tenant Secret, or one lacking that version, is left alone: there is
     nothing to repair it from.)
   - no `status.keyVersion`: the Secret was there before the namespace was this tenant's
     (adopted, watched by a namespace-scoped install, a Retain orphan under a new tenant
     name) and anyone who could write Secrets there may have planted it. It is kept in a
     quarantine Secret (`cleoai.io/quarantine-kind: untrusted`), a new keyring is made as
     in case 1 and written over it (`UntrustedKeyringReplaced`, a Warning Event). A crash
     at any step resumes from what was written: the quarantine is named by the Secret's
     resourceVersion and a written copy is the truth (case 4).
3. The copy exists without the tenant Secret (a deleted or recreated namespace, or a tenant
   admin deleted it): the tenant Secret is restored from the copy.
4. Both exist and differ (extra or changed versions, missing versions, a different active
   version, extra entries, unreadable content): the tenant Secret is repaired from the copy
   (`TenantKeyringRepaired`, a Warning Event naming what differed, never key material).
   Before it is overwritten, whatever it held that the copy does not (anything but a plain
   subset of the copy, which is what a crash during a rotation leaves) is kept in a
   quarantine Secret in the operator namespace (`cleo-quarantine-keyring-<tenant>-<rv>`,
   component `keyring-quarantine`) for a person to review; the reconciler never reads a
   quarantine Secret as a keyring, it only reports that one exists (`KeyringReady` keeps the
   reason `TenantKeyringRepaired` until a person deletes it). docs/encryption.md says how
   to recover when the quarantined keyring was the right one (the operator namespace was
   restored from an old backup).
5. Neither exists but the tenant's status says it had a keyring: KeyringLost, and no new
   keyring, since that would orphan every ciphertext made with the lost one.

Rotation (`spec.encryption.rotationPeriod`) adds a new active version when the active one is
older than the period, writing the copy first (preconditioned on its resourceVersion, so two
writers cannot both rotate) and the tenant Secret second; a crash in between is case 4 (a
tenant Secret that lacks the newest version: repaired, nothing to quarantine). The
outcome says when the next rotation is due, for the caller's requeue.

Every update carries a resourceVersion precondition; a 409 Conflict propagates as `KubeError`
(the tenant loop retries at once, from fresh reads).
"""

from __future__ import annotations

import datetime
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypedDict

from cleo_operator.api.base import ConditionStatus, parse_duration, rfc3339
from cleo_operator.api.tenant import EncryptionSpec
from cleo_operator.crypto import (
    CryptoError,
    KeyEncryptionKeys,
    Keyring,
    UnknownKeyVersion,
    unwrap_keyring,
    wrap_keyring,
)
from cleo_operator.kube.client import KubeError
from cleo_operator.kube.keys import (
    TENANT_KEYRING_SECRET,
    FaultPoint,
    KeyringCopy,
    StoredSecret,
    create_keyring_copy,
    create_secret,
    fault_point,
    keyring_copy_name,
    read_keyring_copy,
    read_secret,
    replace_secret_data,
    update_keyring_copy,
    update_secret,
)
from cleo_operator.reconcile.keys.operator_keys import UsesOperatorKeys
from cleo_operator.reconcile.keys.quarantine import (
    UNTRUSTED_REASON,
    describe_quarantined,
    keep_in_quarantine,
    quarantine_name,
)
from cleo_operator.render.child import COMPONENT_LABEL
from cleo_operator.render.meta import MANAGED_BY, MANAGED_BY_LABEL, tenant_labels

log = logging.getLogger(__name__)

KEYRING_READY: Final = "KeyringReady"
"""The condition type this module reports."""
KEYRING_COMPONENT: Final = "keyring"
"""`app.kubernetes.io/component` of both homes of a tenant keyring; never prune these."""
KEYRING_COPY_SELECTOR: Final = (
    f"{MANAGED_BY_LABEL}={MANAGED_BY},{COMPONENT_LABEL}={KEYRING_COMPONENT}"
)
"""Selects the keyring copies in the operator namespace."""
UNTRUSTED_KEYRING_REPLACED: Final = "UntrustedKeyringReplaced"
"""Reason of `KeyringReady` (and of the Warning Event) when a keyring Secret found before the
tenant had keys was quarantined and replaced by a new keyring."""
TENANT_KEYRING_REPAIRED: Final = "TenantKeyringRepaired"
"""Reason of `KeyringReady` (and of the Warning Event) when the tenant Secret was repaired."""
NAMESPACE_RETRY_SECONDS: Final = 2.0
"""Requeue delay while the tenant namespace is missing or terminating."""


@dataclass(frozen=True)
class ConditionUpdate:
    """A condition for the caller to set (it adds observedGeneration and the time)."""

    type: str
    """Condition type, e.g. `KeyringReady`."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: str
    """CamelCase reason."""
    message: str
    """For people: what is wrong, where, what to do. Never secret material."""


class KeyringStatus(TypedDict, total=False):
    """The CleoTenant status fields of the keyring (camelCase, as written)."""

    keyVersion: int
    lastRotation: str
    nextRotation: str


STATUS_KEYS: Final = frozenset(KeyringStatus.__annotations__)
"""The status keys a `KeyringOutcome.status` may hold."""


@dataclass(frozen=True)
class KeyringOutcome:
    """What one keyring reconcile found and did."""

    condition: ConditionUpdate
    """`KeyringReady`, True only when both homes hold the same readable keyring."""
    status: KeyringStatus
    """Status fields to write; on failure the previous values are carried over."""
    fingerprint: str | None
    """`Keyring.fingerprint()` of the keyring in the tenant Secret, for the pod checksum."""
    requeue_after: float | None
    """Seconds until this should run again (next rotation, or a retry); None: resync."""
    actions: tuple[str, ...] = ()
    """What was written, for logs and Events (names and versions only)."""
    warnings: tuple[tuple[str, str], ...] = ()
    """(reason, message) of Warning Events to post (a repaired tenant Secret)."""

    @property
    def ready(self) -> bool:
        """True when the keyring is usable and both homes agree."""
        return self.condition.status == "True"


def keyring_labels(tenant: str) -> dict[str, str]:
    """Labels of both homes of `tenant`'s keyring."""
    return tenant_labels(tenant, component=KEYRING_COMPONENT)


def _versions(versions: set[int]) -> str:
    return ", ".join(f"v{v}" for v in sorted(versions))


@dataclass(frozen=True)
class KeyringDifferences:
    """How a tenant Secret's data differs from the copy's keyring (names, never keys)."""

    found: tuple[str, ...]
    """One phrase per difference, e.g. "holds version(s) v3 that the copy does not"."""
    novel: bool
    """The Secret holds something the copy does not (worth a quarantine before the repair)."""

    def __bool__(self) -> bool:
        return bool(self.found)

    def describe(self) -> str:
        """The differences as one clause for messages."""
        return "; ".join(self.found)


def keyring_differences(copy: Keyring, data: Mapping[str, bytes]) -> KeyringDifferences:
    """Compare the data of a tenant keyring Secret with the copy's keyring.

    Equal keyrings written with another layout of `keyring.json` are not a difference;
    extra data entries are. Nothing of the key material goes into the phrases.
    """
    try:
        live = Keyring.from_secret_data(data)
    except CryptoError as exc:
        return KeyringDifferences((f"it cannot be read as a keyring ({exc})",), novel=True)
    found: list[str] = []
    novel = False
    extra = sorted(set(data) - set(live.to_secret_data()))
    if extra:
        found.append("extra data entries " + ", ".join(extra[:10]))
        novel = True
    copy_keys = {k.version: k for k in copy.keys}
    live_keys = {k.version: k for k in live.keys}
    only_live = live_keys.keys() - copy_keys.keys()
    if only_live:
        found.append(f"it holds version(s) {_versions(only_live)} that the copy does not")
        novel = True
    only_copy = copy_keys.keys() - live_keys.keys()
    if only_copy:
        found.append(f"it lacks version(s) {_versions(only_copy)}")
    common = copy_keys.keys() & live_keys.keys()
    other_key = {
        v for v in common if not hmac.compare_digest(copy_keys[v].material, live_keys[v].material)
    }
    if other_key:
        found.append(f"it holds a different key for {_versions(other_key)}")
        novel = True
    other_time = {v for v in common - other_key if copy_keys[v].created != live_keys[v].created}
    if other_time:
        found.append(f"it gives {_versions(other_time)} another creation time")
        novel = True
    if live.active_version != copy.active_version:
        found.append(
            f"it names v{live.active_version} active where the copy names v{copy.active_version}"
        )
    return KeyringDifferences(tuple(found), novel=novel)


def _status(keyring: Keyring, period: datetime.timedelta | None) -> KeyringStatus:
    status: KeyringStatus = {
        "keyVersion": keyring.active_version,
        "lastRotation": rfc3339(keyring.active.created),
    }
    if period is not None:
        status["nextRotation"] = rfc3339(keyring.active.created + period)
    return status


def recorded_key_version(status: Mapping[str, Any]) -> int | None:
    """The keyring version a CleoTenant's status records, or None: it never had keys.

    The evidence that a tenant Secret without a copy is the tenant's own: the operator
    writes `keyVersion` only after this CleoTenant's copy existed, and tenants cannot write
    status. Only a positive integer counts (a bool, a string or zero is no evidence).
    """
    version = status.get("keyVersion")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        return None
    return version


def _carried(previous: Mapping[str, Any]) -> KeyringStatus:
    """The keyring fields of the previous status, so a failure never erases them."""
    carried: KeyringStatus = {}
    version, last, next_ = (
        previous.get("keyVersion"),
        previous.get("lastRotation"),
        previous.get("nextRotation"),
    )
    if isinstance(version, int):
        carried["keyVersion"] = version
    if isinstance(last, str):
        carried["lastRotation"] = last
    if isinstance(next_, str):
        carried["nextRotation"] = next_
    return carried


def _conflict(message: str, where: str) -> KubeError:
    """A 409 for a create that lost a race: the tenant loop starts over from fresh reads."""
    return KubeError(status=409, reason="Conflict", message=message, what=f"create Secret {where}")


@dataclass
class _Run:
    """One reconcile of one tenant keyring: its inputs and what it wrote so far."""

    tenant: str
    namespace: str
    operator_namespace: str
    previous: Mapping[str, Any]
    actions: list[str] = field(default_factory=list)

    @property
    def copy_where(self) -> str:
        return f"{self.operator_namespace}/{keyring_copy_name(self.tenant)}"

    @property
    def secret_where(self) -> str:
        return f"{self.namespace}/{TENANT_KEYRING_SECRET}"

    def did(self, action: str) -> None:
        self.actions.append(action)
        log.info("tenant %s: %s", self.tenant, action)

    def failed(
        self,
        reason: str,
        message: str,
        *,
        live: Keyring | None = None,
        requeue_after: float | None = None,
    ) -> KeyringOutcome:
        return KeyringOutcome(
            condition=ConditionUpdate(KEYRING_READY, "False", reason, message),
            status=_carried(self.previous),
            fingerprint=None if live is None else live.fingerprint(),
            requeue_after=requeue_after,
            actions=tuple(self.actions),
        )


class KeyringReconciler(UsesOperatorKeys):
    """Keeps each tenant's keyring in its two homes."""

    def reconcile(
        self,
        *,
        tenant: str,
        namespace: str,
        encryption: EncryptionSpec,
        previous_status: Mapping[str, Any],
        now: datetime.datetime,
    ) -> KeyringOutcome:
        """Bring `tenant`'s keyring to its desired state (see the module docstring).

        Call it once the tenant namespace exists. `previous_status` is the tenant's current
        `.status` (its `keyVersion` says whether the tenant ever had a keyring). Writes only
        what is missing or due; a second call right after writes nothing.
        """
        run = _Run(tenant, namespace, self.keys.operator_namespace, previous_status)
        period = (
            parse_duration(encryption.rotation_period)
            if encryption.rotation_period is not None
            else None
        )
        try:
            kek = self.keys.kek.load()
        except CryptoError as exc:
            return run.failed("KEKUnavailable", f"cannot load the key-encryption keys: {exc}")

        live = read_secret(self.kube, namespace=namespace, name=TENANT_KEYRING_SECRET)
        live_keyring: Keyring | None = None
        unreadable: CryptoError | None = None
        if live is not None:
            try:
                live_keyring = Keyring.from_secret_data(live.data)
            except CryptoError as exc:
                unreadable = exc

        try:
            copy = read_keyring_copy(
                self.kube, operator_namespace=run.operator_namespace, tenant=tenant
            )
        except CryptoError as exc:
            return run.failed("KeyringCopyUnreadable", str(exc), live=live_keyring)
        untrusted: str | None = None
        if copy is None:
            known = recorded_key_version(previous_status)
            if live is not None and known is None:
                # This tenant never had keys (its status, which only the operator writes,
                # records none): the Secret was there before it was the tenant's keyring
                # (an adopted or watched namespace, an orphan of another tenant). Keep it
                # for review and make a new keyring; never import it.
                untrusted = self._quarantine_untrusted(run, live, now)
                live_keyring, unreadable = None, None
            if live is not None and unreadable is not None:
                return run.failed(
                    "KeyringSecretInvalid",
                    f"the keyring Secret {live.where} cannot be read ({unreadable}) and there "
                    f"is no KEK-wrapped copy {run.copy_where} to repair it from; it was left as "
                    "it is: restore the copy from a backup of the operator namespace",
                )
            known = previous_status.get("keyVersion")
            if live_keyring is None and known is not None:
                return run.failed(
                    "KeyringLost",
                    f"the tenant had keyring version v{known} (status.keyVersion) but neither "
                    f"the keyring Secret {run.secret_where} nor its KEK-wrapped copy "
                    f"{run.copy_where} exists: restore the copy (or the Secret) from a backup. "
                    "No new keyring is made, since data encrypted with the lost one could "
                    "never be read again; to start over with a new keyring anyway, remove "
                    f"status.keyVersion (kubectl patch cleotenant {tenant} --subresource=status "
                    """--type=merge -p '{"status":{"keyVersion":null}}')""",
                )
            if live_keyring is not None and known not in {k.version for k in live_keyring.keys}:
                return run.failed(
                    "KeyringSecretInvalid",
                    f"the keyring Secret {live.where if live else run.secret_where} lacks "
                    f"version v{known} that this tenant had (status.keyVersion) and there is "
                    f"no KEK-wrapped copy {run.copy_where}: it is not this tenant's keyring, "
                    "so it was left as it is and not copied; restore the copy from a backup "
                    "of the operator namespace",
                    live=live_keyring,
                )
            copy = self._create_copy(run, kek, live_keyring, now)

        try:
            copy_keyring, kek = self._open(run, copy, kek)
        except CryptoError as exc:
            return run.failed(
                "KeyringCopyUnreadable",
                f"the KEK-wrapped keyring copy {run.copy_where} cannot be opened "
                f"({exc.reason}: {exc}); nothing was changed: restore the KEK version it "
                "names, or the copy from a backup",
                live=live_keyring,
            )
        if kek.needs_rewrap(copy.wrapped):
            copy = update_keyring_copy(
                self.kube, copy, wrap_keyring(copy_keyring, kek, tenant=tenant)
            )
            fault_point("keyring-copy-rewrapped")
            run.did(f"re-wrapped keyring copy {run.copy_where} with KEK v{kek.current_version}")

        repaired: str | None = None
        try:
            if live is None:
                live = self._restore_tenant_secret(run, copy_keyring)
            else:
                differences = keyring_differences(copy_keyring, live.data)
                if differences:
                    live, repaired = self._repair_tenant_secret(
                        run, live, copy_keyring, differences, now
                    )
        except KubeError as exc:
            if exc.not_found or (exc.status == 403 and "terminat" in exc.message):
                return run.failed(
                    "NamespaceNotReady",
                    f"cannot write the keyring Secret {run.secret_where}: {exc.message}",
                    requeue_after=NAMESPACE_RETRY_SECONDS,
                )
            if exc.status in (403, 422):
                # A quota on Secrets, an admission policy: people must act; resync retries.
                return run.failed(
                    "KeyringWriteRefused",
                    f"the API server refused the keyring Secret {run.secret_where} "
                    f"({exc.status} {exc.reason}): {exc.message}",
                )
            raise
        keyring = copy_keyring
        if untrusted is not None:
            repaired = untrusted

        if period is not None and now >= keyring.active.created + period:
            keyring = self._rotate(run, kek=kek, copy=copy, live=live, keyring=keyring, now=now)

        requeue = None
        if period is not None:
            due = keyring.active.created + period
            requeue = max(1.0, (due - now).total_seconds())
        available = (
            f"keyring v{keyring.active_version} is active (versions "
            f"{', '.join(k.key_id for k in keyring.keys)}) in {run.secret_where}, with a "
            f"KEK-wrapped copy in {run.copy_where}"
        )
        quarantined, any_untrusted = describe_quarantined(
            self.kube, operator_namespace=run.operator_namespace, tenant=run.tenant
        )
        reason = (
            UNTRUSTED_KEYRING_REPLACED if untrusted or any_untrusted else TENANT_KEYRING_REPAIRED
        )
        if repaired is None and not quarantined:
            condition = ConditionUpdate(KEYRING_READY, "True", "KeyringAvailable", available)
        else:
            notes = [available]
            if repaired is not None:
                notes.append(repaired)
            if quarantined:
                notes.append(
                    "kept for review: "
                    + "; ".join(quarantined)
                    + ". The operator never reads these as a keyring: delete each once "
                    "reviewed (docs/encryption.md, Key recovery)"
                )
            condition = ConditionUpdate(KEYRING_READY, "True", reason, ". ".join(notes))
        return KeyringOutcome(
            condition=condition,
            status=_status(keyring, period),
            fingerprint=keyring.fingerprint(),
            requeue_after=requeue,
            actions=tuple(run.actions),
            warnings=()
            if repaired is None
            else (
                (UNTRUSTED_KEYRING_REPLACED if untrusted else TENANT_KEYRING_REPAIRED, repaired),
            ),
        )

    def _keep(
        self,
        run: _Run,
        live: StoredSecret,
        *,
        reason: str,
        now: datetime.datetime,
        untrusted: bool = False,
    ) -> tuple[str, bool]:
        """Keep what tenant Secret `live` holds in a quarantine Secret named after its
        version; the name, and whether this call created it (False: a run that crashed
        after the create already kept this very version)."""
        name = quarantine_name(run.tenant, live.resource_version)
        created = keep_in_quarantine(
            self.kube,
            run.operator_namespace,
            name,
            live.data,
            tenant=run.tenant,
            source=live.where,
            reason=reason,
            now=now,
            untrusted=untrusted,
        )
        fault_point("keyring-tenant-quarantined")
        return name, created is not None

    def _quarantine_untrusted(self, run: _Run, live: StoredSecret, now: datetime.datetime) -> str:
        """Keep a tenant Secret found with no copy and no keys in this tenant's status in a
        quarantine Secret; the message for people says why (never key material). The tenant
        Secret itself is overwritten later in the run, from the new copy."""
        name, created = self._keep(run, live, reason=UNTRUSTED_REASON, now=now, untrusted=True)
        if created:
            run.did(
                f"kept the keyring Secret {live.where} found before the tenant had keys as {name}"
            )
        return (
            f"the keyring Secret {live.where} existed before tenant {run.tenant} had any keys "
            f"(no KEK-wrapped copy {run.copy_where}, no status.keyVersion), so it was not "
            "trusted: it is kept for review in Secret "
            f"{run.operator_namespace}/{name} and replaced by a new keyring"
        )

    def _repair_tenant_secret(
        self,
        run: _Run,
        live: StoredSecret,
        keyring: Keyring,
        differences: KeyringDifferences,
        now: datetime.datetime,
    ) -> tuple[StoredSecret, str]:
        """Quarantine what the tenant Secret holds (when new to the copy), then overwrite it
        with the copy's keyring; the message says what differed (never key material)."""
        kept = ""
        if differences.novel:
            name, created = self._keep(run, live, reason=differences.describe(), now=now)
            kept = f"; what it held is kept in Secret {run.operator_namespace}/{name}"
            if created:
                run.did(f"kept the differing keyring Secret {live.where} as {name}")
        repaired = replace_secret_data(
            self.kube, live, keyring.to_secret_data(), labels=keyring_labels(run.tenant)
        )
        fault_point("keyring-tenant-updated")
        message = (
            f"the keyring Secret {live.where} differed from its KEK-wrapped copy "
            f"{run.copy_where} ({differences.describe()}) and was repaired from the copy, "
            f"which is the keyring's only truth (active v{keyring.active_version}){kept}"
        )
        run.did(message)
        return repaired, message

    def _create_copy(
        self,
        run: _Run,
        kek: KeyEncryptionKeys,
        live_keyring: Keyring | None,
        now: datetime.datetime,
    ) -> KeyringCopy:
        """Make the copy: from the tenant Secret if there is one, else from a new keyring."""
        step: FaultPoint
        if live_keyring is not None:
            keyring, step = live_keyring, "keyring-copy-adopted"
        else:
            keyring, step = Keyring.generate(now), "keyring-copy-created"
            fault_point("keyring-generated")
        created = create_keyring_copy(
            self.kube,
            operator_namespace=run.operator_namespace,
            tenant=run.tenant,
            wrapped=wrap_keyring(keyring, kek, tenant=run.tenant),
            labels=keyring_labels(run.tenant),
        )
        if created is None:
            # Another writer created the copy between our read and our create: theirs wins.
            existing = read_keyring_copy(
                self.kube, operator_namespace=run.operator_namespace, tenant=run.tenant
            )
            if existing is None:
                raise _conflict(
                    "the keyring copy was created and deleted concurrently", run.copy_where
                )
            return existing
        fault_point(step)
        run.did(
            f"copied the existing keyring Secret {run.secret_where} to {run.copy_where}"
            if live_keyring is not None
            else f"created a new keyring (v1) as KEK-wrapped copy {run.copy_where}"
        )
        return created

    def _open(
        self, run: _Run, copy: KeyringCopy, kek: KeyEncryptionKeys
    ) -> tuple[Keyring, KeyEncryptionKeys]:
        """Open the copy; on an unknown KEK version, reload the KEKs once (a rotation may
        have happened since they were read) before giving up."""
        try:
            return unwrap_keyring(copy.wrapped, kek, tenant=run.tenant), kek
        except UnknownKeyVersion:
            kek = self.keys.kek.load()
            return unwrap_keyring(copy.wrapped, kek, tenant=run.tenant), kek

    def _restore_tenant_secret(self, run: _Run, keyring: Keyring) -> StoredSecret:
        """POST the tenant Secret from the copy's keyring (its first creation or a restore)."""
        created = create_secret(
            self.kube,
            namespace=run.namespace,
            name=TENANT_KEYRING_SECRET,
            data=keyring.to_secret_data(),
            labels=keyring_labels(run.tenant),
        )
        if created is None:
            # Created since our read: start over from fresh reads (the loop retries at once).
            raise _conflict("the keyring Secret was created concurrently", run.secret_where)
        fault_point("keyring-tenant-created")
        run.did(
            f"wrote keyring Secret {run.secret_where} from its copy (v{keyring.active_version})"
        )
        return created

    def _rotate(
        self,
        run: _Run,
        *,
        kek: KeyEncryptionKeys,
        copy: KeyringCopy,
        live: StoredSecret,
        keyring: Keyring,
        now: datetime.datetime,
    ) -> Keyring:
        """Add a new active version: the copy first, then the tenant Secret."""
        rotated = keyring.rotate(now)
        update_keyring_copy(self.kube, copy, wrap_keyring(rotated, kek, tenant=run.tenant))
        fault_point("keyring-rotation-copy-written")
        update_secret(self.kube, live, rotated.to_secret_data())
        fault_point("keyring-rotation-tenant-written")
        run.did(f"rotated the keyring: v{rotated.active_version} is active, old versions kept")
        return rotated

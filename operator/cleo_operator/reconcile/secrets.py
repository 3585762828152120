"""Sealed secrets of a CleoTenant (`spec.secrets`) unsealed into Secrets of its namespace.

All or nothing, per Secret: a Secret is desired only when every one of its values opens. If
any value fails (sealed for another tenant, to another cluster's key, altered, or not a
sealed value at all), no desired object is produced for that Secret, so the Secret already
in the namespace keeps its last good values, and its status entry says which key failed and
why. A half-updated Secret, with some keys new and some old, would be worse than either.

The pod checksum must change when a Secret's content changes, without publishing anything
derived from the plaintext alone. The fingerprint of a Secret is therefore a hash of its
*sealed* values (which are public: they sit in Git), bound to the tenant and the Secret's
name. Re-sealing an unchanged value changes it too, which only restarts the pods once.

The same applies to the `cleoai.io/applied-hash` annotation that decides whether a child
needs a write: `kube.apply.with_hash` hashes the whole object, data included, which for a
Secret would put a short unsalted hash of the plaintext in an annotation. The desired
Secrets are stamped by `stamp_secret` instead (a hash without `data`, which the sealed
fingerprint annotation stands in for) and written by `apply_secrets`, never through
`with_hash`. A Secret the API server refuses (a quota on Secrets, say) is reported in that
Secret's own status entry.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, NotRequired, TypedDict

from cleo_operator.api.objects import KubeObject, OwnerReference
from cleo_operator.api.tenant import SealedSecret
from cleo_operator.core.redaction import clip
from cleo_operator.crypto import CryptoError, SealingKeyring, unseal
from cleo_operator.kube.apply import HASH_ANNOTATION, needs_apply, object_hash
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import SECRET
from cleo_operator.reconcile.keys import ConditionUpdate, UsesOperatorKeys
from cleo_operator.render.child import child_metadata, opaque_secret, sorted_map

__all__ = [
    "SEALED_FINGERPRINT_ANNOTATION",
    "SECRETS_COMPONENT",
    "SECRETS_READY",
    "SecretStatusEntry",
    "SecretsOutcome",
    "SecretsReconciler",
    "apply_secrets",
    "sealed_fingerprint",
    "stamp_secret",
    "unseal_secrets",
    "without_secret_values",
]

log = logging.getLogger(__name__)

SECRETS_READY: Final = "SecretsReady"
"""The condition type this module reports."""
SECRETS_COMPONENT: Final = "secrets"
"""`app.kubernetes.io/component` of unsealed Secrets: prune by this label, never by tenant."""
SEALED_FINGERPRINT_ANNOTATION: Final = "cleoai.io/sealed-fingerprint"
"""On each unsealed Secret: the fingerprint of the sealed values it was made from."""
_FINGERPRINT_LABEL: Final = b"cleo-operator sealed secret fingerprint v1\n"


class SecretStatusEntry(TypedDict):
    """One entry of `status.secrets` (camelCase, as written)."""

    name: str
    ready: bool
    reason: NotRequired[str]
    message: NotRequired[str]


@dataclass(frozen=True)
class SecretsOutcome:
    """What to apply and report for the tenant's sealed secrets."""

    desired: list[KubeObject]
    """Secrets to apply (already stamped; see the module docstring), in spec order."""
    statuses: list[SecretStatusEntry]
    """`status.secrets`: one entry per spec.secrets[] item, in spec order."""
    condition: ConditionUpdate
    """`SecretsReady`."""
    fingerprints: dict[str, str] = field(default_factory=dict)
    """Secret name -> fingerprint of each Secret that exists (unsealed now, or kept as it
    was), for the Deployment's checksum (`config_checksum`) and its envFrom."""
    applied: tuple[str, ...] = ()
    """Names of the Secrets `apply_secrets` wrote."""
    failures: tuple[tuple[str, str, str], ...] = ()
    """(Secret, what failed: `key K` or `write`, reason), for the condition's message."""

    @property
    def ready(self) -> bool:
        """True when every sealed secret was unsealed."""
        return self.condition.status == "True"


def sealed_fingerprint(*, tenant: str, secret: str, data: Mapping[str, str]) -> str:
    """`sha256:<hex>` over the sealed values of one Secret, bound to the tenant and its name.

    Computed from ciphertexts only: it reveals nothing about the plaintext.
    """
    canonical = json.dumps(
        {"tenant": tenant, "secret": secret, "data": sorted_map(data)},
        sort_keys=True,
        separators=(",", ":"),
    )
    return "sha256:" + hashlib.sha256(_FINGERPRINT_LABEL + canonical.encode()).hexdigest()


def stamp_secret(obj: KubeObject) -> KubeObject:
    """`obj` with `cleoai.io/applied-hash` computed without its `data` (see the docstring).

    `needs_apply` still compares `data` with the live Secret, so a value edited by hand is
    put back; only the annotation leaves the data out.
    """
    stamped = copy.deepcopy(obj)
    without_data = {key: value for key, value in obj.items() if key != "data"}
    stamped["metadata"].setdefault("annotations", {})[HASH_ANNOTATION] = object_hash(without_data)
    return stamped


def _render_secret(
    *,
    tenant: str,
    namespace: str,
    owner: OwnerReference,
    name: str,
    values: Mapping[str, bytes],
    fingerprint: str,
) -> KubeObject:
    metadata = child_metadata(
        name=name, namespace=namespace, tenant=tenant, owner=owner, component=SECRETS_COMPONENT
    )
    metadata["annotations"] = {SEALED_FINGERPRINT_ANNOTATION: fingerprint}
    data = {key: base64.b64encode(value).decode("ascii") for key, value in values.items()}
    return stamp_secret(opaque_secret(metadata, data))


def unseal_secrets(
    *,
    tenant: str,
    namespace: str,
    owner: OwnerReference,
    secrets: Sequence[SealedSecret],
    sealing: SealingKeyring,
) -> SecretsOutcome:
    """Unseal each spec.secrets[] item into a desired Secret, or report why it cannot be.

    Pure: no I/O. `fingerprints` holds the unsealed Secrets only; `SecretsReconciler` adds
    the fingerprints of the Secrets left as they were.
    """
    desired: list[KubeObject] = []
    statuses: list[SecretStatusEntry] = []
    fingerprints: dict[str, str] = {}
    failures: list[tuple[str, str, str]] = []  # (secret, "key K", reason)
    for item in secrets:
        values: dict[str, bytes] = {}
        errors: list[tuple[str, CryptoError]] = []
        for key, sealed in sorted(item.data.items()):
            try:
                values[key] = unseal(sealing, sealed, tenant=tenant, secret=item.name, key=key)
            except CryptoError as exc:
                errors.append((key, exc))
        if errors:
            first = errors[0][1]
            statuses.append(
                {
                    "name": item.name,
                    "ready": False,
                    "reason": first.reason,
                    "message": clip(
                        f"Secret {item.name} was left as it was: "
                        # The key in brackets: a key named like a credential (PASSWORD)
                        # followed by ':' would read as a secret value to the redactor.
                        + "; ".join(f"key [{key}] {exc.reason}: {exc}" for key, exc in errors)
                    ),
                }
            )
            failures.extend((item.name, f"key [{key}]", exc.reason) for key, exc in errors)
            continue
        fingerprint = sealed_fingerprint(tenant=tenant, secret=item.name, data=item.data)
        desired.append(
            _render_secret(
                tenant=tenant,
                namespace=namespace,
                owner=owner,
                name=item.name,
                values=values,
                fingerprint=fingerprint,
            )
        )
        fingerprints[item.name] = fingerprint
        statuses.append({"name": item.name, "ready": True})
    return SecretsOutcome(
        desired=desired,
        statuses=statuses,
        condition=_condition(len(secrets), failures),
        fingerprints=fingerprints,
        failures=tuple(failures),
    )


def _condition(total: int, failures: Sequence[tuple[str, str, str]]) -> ConditionUpdate:
    if total == 0:
        return ConditionUpdate(SECRETS_READY, "True", "NoSecrets", "spec.secrets is empty")
    if not failures:
        return ConditionUpdate(
            SECRETS_READY,
            "True",
            "Unsealed",
            f"all {total} sealed secret(s) are unsealed into Secrets",
        )
    reasons = {reason for _, _, reason in failures}
    failed = sorted({name for name, _, _ in failures})
    if reasons == {"ApplyFailed"}:
        advice = "see status.secrets for what the API server said"
    else:
        advice = (
            "those Secrets were left as they were (see status.secrets): seal the values again "
            "with `cleo-operator seal` for this tenant and Secret"
        )
    return ConditionUpdate(
        SECRETS_READY,
        "False",
        reasons.pop() if len(reasons) == 1 else "UnsealFailed",
        clip(
            f"{len(failed)} of {total} sealed secret(s) are not ready ("
            + ", ".join(f"{name} {what}: {reason}" for name, what, reason in failures)
            + f"); {advice}"
        ),
    )


def apply_secrets(kube: KubeClient, outcome: SecretsOutcome) -> SecretsOutcome:
    """Write the desired Secrets that need it; the outcome as it stands afterwards.

    Each Secret is compared with the live one by `needs_apply` on its own stamp (see the
    module docstring) and server-side applied when it differs. One the API server refuses
    (403, 422: a quota, a policy) becomes `ready: false`, reason `ApplyFailed`, with what the
    API server said; conflicts and server errors raise `KubeError` (the loop retries soon).
    """
    statuses = {entry["name"]: entry for entry in outcome.statuses}
    fingerprints = dict(outcome.fingerprints)
    failures = list(outcome.failures)
    applied: list[str] = []
    for obj in outcome.desired:
        meta = obj["metadata"]
        name = meta["name"]
        live = kube.get(SECRET, name, namespace=meta["namespace"])
        if not needs_apply(obj, live):
            continue
        try:
            kube.apply(obj)
        except KubeError as exc:
            if exc.transient:
                raise
            log.warning(
                "Secret %s/%s refused: %s %s", meta["namespace"], name, exc.status, exc.reason
            )
            statuses[name] = {
                "name": name,
                "ready": False,
                "reason": "ApplyFailed",
                "message": clip(
                    f"the API server refused Secret {meta['namespace']}/{name} "
                    f"({exc.status} {exc.reason}): " + without_secret_values(exc.message, obj)
                ),
            }
            failures.append((name, "write", "ApplyFailed"))
            kept = _kept_fingerprint(live)
            if kept is None:
                fingerprints.pop(name, None)
            else:
                fingerprints[name] = kept
            continue
        applied.append(name)
    if len(failures) == len(outcome.failures):
        return dataclasses.replace(outcome, applied=tuple(applied))
    ordered = [statuses[entry["name"]] for entry in outcome.statuses]
    return dataclasses.replace(
        outcome,
        statuses=ordered,
        condition=_condition(len(ordered), failures),
        fingerprints=fingerprints,
        applied=tuple(applied),
        failures=tuple(failures),
    )


def without_secret_values(message: str, obj: KubeObject) -> str:
    """`message` with every value of the Secret `obj` (plain or base64) blanked out.

    The API server's own messages name keys, not values, but an admission webhook or policy
    may say anything; what reaches status must not depend on that. A value too short to
    blank out without garbling the text withholds the whole message.
    """
    forms: set[str] = set()
    for encoded in (obj.get("data") or {}).values():
        forms |= {str(encoded), base64.b64decode(encoded).decode("utf-8", "replace")}
    for form in sorted(forms, key=len, reverse=True):
        if form and form in message:
            if len(form) < 4:
                return "(message withheld: it would show a value of the Secret)"
            message = message.replace(form, "***")
    return message


def _kept_fingerprint(live: KubeObject | None) -> str | None:
    """The sealed fingerprint recorded on a live Secret, if it is one of ours."""
    annotations = ((live or {}).get("metadata") or {}).get("annotations") or {}
    kept = annotations.get(SEALED_FINGERPRINT_ANNOTATION)
    return kept if isinstance(kept, str) else None


class SecretsReconciler(UsesOperatorKeys):
    """Reads the sealing keys and unseals a tenant's secrets."""

    def reconcile(
        self,
        *,
        tenant: str,
        namespace: str,
        owner: OwnerReference,
        secrets: Sequence[SealedSecret],
    ) -> SecretsOutcome:
        """The desired Secrets, status entries, condition and fingerprints for `secrets`.

        Writes nothing (the caller applies `desired`). Reads the sealing keyring when there
        is something to unseal, and the live Secret of each one that fails, so that its
        fingerprint stays that of what the Secret still holds.
        """
        if not secrets:
            return SecretsOutcome(desired=[], statuses=[], condition=_condition(0, []))
        try:
            sealing = self.keys.sealing.load()
        except CryptoError as exc:
            outcome = SecretsOutcome(
                desired=[],
                statuses=[
                    {
                        "name": item.name,
                        "ready": False,
                        "reason": "SealingKeysUnavailable",
                        "message": "the operator's sealing keys cannot be read; the Secret "
                        "was left as it was",
                    }
                    for item in secrets
                ],
                condition=ConditionUpdate(
                    SECRETS_READY,
                    "False",
                    "SealingKeysUnavailable",
                    clip(f"cannot unseal: {exc}"),
                ),
                failures=tuple(
                    (item.name, "all keys", "SealingKeysUnavailable") for item in secrets
                ),
            )
        else:
            outcome = unseal_secrets(
                tenant=tenant, namespace=namespace, owner=owner, secrets=secrets, sealing=sealing
            )
        for entry in outcome.statuses:
            if entry["ready"]:
                continue
            kept = _kept_fingerprint(self.kube.get(SECRET, entry["name"], namespace=namespace))
            if kept is not None:
                outcome.fingerprints[entry["name"]] = kept
        for entry in outcome.statuses:
            if not entry["ready"]:
                log.warning(
                    "tenant %s: Secret %s/%s not unsealed: %s",
                    tenant,
                    namespace,
                    entry["name"],
                    entry.get("reason"),
                )
        return outcome

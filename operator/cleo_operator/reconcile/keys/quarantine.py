"""Quarantine Secrets: what a tenant keyring Secret held that the copy does not, kept for people.

Why a module of its own: the reconciler writes them (before it repairs a tenant Secret, or
replaces one it cannot trust) and people's recovery (`adopt_quarantined`) reads them; both
must agree on the names, labels and annotations. The reconciler never reads a quarantine
Secret as a keyring: it only reports that one exists.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from typing import Final

from cleo_operator.api.base import rfc3339
from cleo_operator.kube.client import KubeClient
from cleo_operator.kube.keys import StoredSecret, create_secret, list_secrets
from cleo_operator.render.child import COMPONENT_LABEL
from cleo_operator.render.meta import MANAGED_BY, MANAGED_BY_LABEL, TENANT_LABEL, tenant_labels

QUARANTINE_COMPONENT: Final = "keyring-quarantine"
"""`app.kubernetes.io/component` of the quarantine Secrets: never a keyring copy."""
QUARANTINE_PREFIX: Final = "cleo-quarantine-keyring-"
"""Quarantine Secrets are `cleo-quarantine-keyring-<tenant>-<resourceVersion>` (a prefix no
keyring copy `cleo-keyring-<tenant>` can collide with)."""
QUARANTINED_FROM: Final = "cleoai.io/quarantined-from"
"""Annotation of a quarantine Secret: `namespace/name` of the tenant Secret it held."""
QUARANTINE_REASON: Final = "cleoai.io/quarantine-reason"
"""Annotation of a quarantine Secret: how it differed from the copy (versions, no keys)."""
QUARANTINED_AT: Final = "cleoai.io/quarantined-at"
"""Annotation of a quarantine Secret: when it was taken (RFC 3339)."""
QUARANTINE_KIND: Final = "cleoai.io/quarantine-kind"
"""Annotation of a quarantine Secret: `untrusted` when it held a keyring found before the
tenant had keys (`UntrustedKeyringReplaced`); absent when it differed from the copy."""
KIND_UNTRUSTED: Final = "untrusted"
UNTRUSTED_REASON: Final = (
    "found before the tenant had keys (no keyring copy, no status.keyVersion): never imported"
)


def quarantine_name(tenant: str, resource_version: str) -> str:
    """Name of the quarantine Secret keeping what tenant Secret version `resource_version`
    held: one per version of the tenant Secret, so a retried repair finds its own."""
    version = re.sub(r"[^a-z0-9-]", "-", resource_version.lower())[:40].strip("-") or "0"
    return f"{QUARANTINE_PREFIX}{tenant}-{version}"


QUARANTINE_SELECTOR: Final = (
    f"{MANAGED_BY_LABEL}={MANAGED_BY},{COMPONENT_LABEL}={QUARANTINE_COMPONENT}"
)
"""Selects every tenant's quarantine Secrets in the operator namespace."""


def quarantine_selector(tenant: str) -> str:
    """Selects the quarantine Secrets of `tenant` in the operator namespace."""
    return f"{QUARANTINE_SELECTOR},{TENANT_LABEL}={tenant}"


def keep_in_quarantine(
    kube: KubeClient,
    operator_namespace: str,
    name: str,
    data: Mapping[str, bytes],
    *,
    tenant: str,
    source: str,
    reason: str,
    now: datetime.datetime,
    untrusted: bool = False,
) -> StoredSecret | None:
    """Create quarantine Secret `name` holding `data`, taken from `source` for `reason`.

    None when it exists already: a run that crashed after this create kept this very
    version (the name says which). `untrusted`: a keyring found before the tenant had keys.
    """
    annotations = {QUARANTINED_FROM: source, QUARANTINE_REASON: reason}
    if untrusted:
        annotations[QUARANTINE_KIND] = KIND_UNTRUSTED
    annotations[QUARANTINED_AT] = rfc3339(now)
    return create_secret(
        kube,
        namespace=operator_namespace,
        name=name,
        data=data,
        labels=tenant_labels(tenant, component=QUARANTINE_COMPONENT),
        annotations=annotations,
    )


def describe_quarantined(
    kube: KubeClient, *, operator_namespace: str, tenant: str
) -> tuple[list[str], bool]:
    """The quarantine Secrets of `tenant`, each with what it differed in, and whether one
    of them holds a keyring found before the tenant had keys."""
    found = [
        s
        for s in list_secrets(
            kube, namespace=operator_namespace, label_selector=quarantine_selector(tenant)
        )
        if s.name.startswith(QUARANTINE_PREFIX)
    ]
    described = [
        f"Secret {s.where} (from {s.annotations.get(QUARANTINED_FROM, '?')} at "
        f"{s.annotations.get(QUARANTINED_AT, '?')}: "
        f"{s.annotations.get(QUARANTINE_REASON, 'unknown difference')})"
        for s in found
    ]
    untrusted = any(s.annotations.get(QUARANTINE_KIND) == KIND_UNTRUSTED for s in found)
    return described, untrusted

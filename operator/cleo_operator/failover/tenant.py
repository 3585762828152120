"""What a failover records on the CleoTenant: where its primary is now, and who holds it.

Two annotations on the CleoTenant (metadata, never the spec, which belongs to its authors
and their GitOps tools):

``cleoai.io/database-primary-site``
    The site that holds the tenant's primary *now*. ``spec.database.site`` says where the
    database was created; after a failover or switchover the primary is elsewhere, and the
    operator never writes to a spec. The tenant's database part must read the site with
    :func:`database_site`, or it would provision on (and re-open the login of) the old,
    fenced primary. An annotation rather than a status field because status is rebuilt
    from observation on every reconcile, and this is not something the operator can
    observe: it is a decision that was made, and it must survive everything.

``cleoai.io/failover-lock``
    The CleoFailover (``name/uid``) that is moving the tenant's database right now. It is
    taken with a preconditioned patch (``metadata.resourceVersion``), so of two failovers
    that start at the same moment exactly one gets it and the other stops before it has
    changed anything: never two failovers of one tenant at once. While it is set, the
    database part must leave the tenant's database alone (:func:`failover_holding`): a
    reconcile that re-opened the login of the role on the old primary in the middle of a
    failover would undo the fence.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from cleo_operator.api.tenant import CleoTenantSpec
from cleo_operator.failover.errors import FailoverError
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import TENANT

__all__ = [
    "LOCK_ANNOTATION",
    "PRIMARY_SITE_ANNOTATION",
    "LockHolder",
    "acquire_lock",
    "database_site",
    "failover_holding",
    "release_lock",
    "set_primary_site",
]


PRIMARY_SITE_ANNOTATION: Final = "cleoai.io/database-primary-site"
"""The site of the tenant's primary after a failover or switchover."""
LOCK_ANNOTATION: Final = "cleoai.io/failover-lock"
"""``name/uid`` of the CleoFailover that is moving the tenant's database now."""

_SITE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LOCK_ATTEMPTS: Final = 5


def database_site(spec: CleoTenantSpec, annotations: Mapping[str, str] | None) -> str:
    """The site that holds the tenant's primary now: the annotation, else spec.database.site.

    Raises :class:`FailoverError` (reason ``InvalidPrimarySite``) when the annotation was
    edited into something that is no site name: falling back to the spec then could send
    the tenant back to a fenced old primary, so nobody should guess.
    """
    value = (annotations or {}).get(PRIMARY_SITE_ANNOTATION)
    if value is None:
        return spec.database.site
    if not _SITE_NAME.match(value):
        raise FailoverError(
            f"annotation {PRIMARY_SITE_ANNOTATION} of the CleoTenant is {value!r}, which is not "
            "a site name; it records where the tenant's primary is since its last failover. "
            "Set it back to that site (see the newest Succeeded CleoFailover's "
            "status.newPrimary).",
            reason="InvalidPrimarySite",
        )
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class LockHolder:
    """A CleoFailover, as it holds a tenant."""

    name: str
    """The CleoFailover's name (in the tenant's namespace)."""
    uid: str
    """Its uid: a CleoFailover deleted and created again under the same name is another."""

    @property
    def value(self) -> str:
        return f"{self.name}/{self.uid}"

    @classmethod
    def parse(cls, value: str | None) -> LockHolder | None:
        if not value or "/" not in value:
            return None
        name, _, uid = value.partition("/")
        return cls(name=name, uid=uid) if name and uid else None


def failover_holding(annotations: Mapping[str, str] | None) -> str | None:
    """Name of the CleoFailover moving the tenant's database now, or None.

    The database part must not touch the tenant's database while this is set.
    """
    holder = LockHolder.parse((annotations or {}).get(LOCK_ANNOTATION))
    return holder.name if holder else None


def _annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def acquire_lock(
    kube: KubeClient,
    tenant: str,
    holder: LockHolder,
    *,
    is_active: Callable[[LockHolder], bool],
) -> None:
    """Make ``holder`` the one failover of ``tenant``; idempotent for the same holder.

    ``is_active`` says whether another holder found on the tenant is still running (a
    holder whose CleoFailover ended or was deleted left a stale lock, which is taken
    over). Raises :class:`FailoverError` ``FailoverInProgress`` when another one runs.
    """
    for _ in range(_LOCK_ATTEMPTS):
        obj = kube.get(TENANT, tenant)
        if obj is None:
            raise FailoverError(
                f"CleoTenant {tenant!r} does not exist (any more)", reason="TenantNotFound"
            )
        current = LockHolder.parse(_annotations(obj).get(LOCK_ANNOTATION))
        if current == holder:
            return
        if current is not None and is_active(current):
            raise FailoverError(
                f"CleoFailover {current.name!r} is moving tenant {tenant!r} right now; two "
                "failovers of one tenant never run at once. Wait for it to end, then create a "
                "new CleoFailover if one is still needed.",
                reason="FailoverInProgress",
            )
        patch = {
            "metadata": {
                # A precondition: of two failovers taking the lock at once, one gets 409.
                "resourceVersion": obj["metadata"]["resourceVersion"],
                "annotations": {LOCK_ANNOTATION: holder.value},
            }
        }
        try:
            kube.patch_merge(TENANT, tenant, patch)
        except KubeError as exc:
            if exc.conflict:
                continue  # someone wrote the tenant meanwhile: read it again
            raise
        return
    raise FailoverError(
        f"could not take the failover lock of tenant {tenant!r}: the CleoTenant kept changing "
        "under us; trying again",
        reason="LockContended",
        retryable=True,
    )


def release_lock(kube: KubeClient, tenant: str, holder: LockHolder) -> bool:
    """Remove the lock if ``holder`` has it; returns whether a write was made."""
    for _ in range(_LOCK_ATTEMPTS):
        obj = kube.get(TENANT, tenant)
        if obj is None:
            return False
        if LockHolder.parse(_annotations(obj).get(LOCK_ANNOTATION)) != holder:
            return False
        patch = {
            "metadata": {
                "resourceVersion": obj["metadata"]["resourceVersion"],
                "annotations": {LOCK_ANNOTATION: None},
            }
        }
        try:
            kube.patch_merge(TENANT, tenant, patch)
        except KubeError as exc:
            if exc.conflict:
                continue
            if exc.not_found:
                return False
            raise
        return True
    return False


def set_primary_site(kube: KubeClient, tenant: str, site: str) -> bool:
    """Record ``site`` as the tenant's primary; returns whether a write was made."""
    obj = kube.get(TENANT, tenant)
    if obj is None:
        raise FailoverError(
            f"CleoTenant {tenant!r} does not exist (any more)", reason="TenantNotFound"
        )
    if _annotations(obj).get(PRIMARY_SITE_ANNOTATION) == site:
        return False
    kube.patch_merge(TENANT, tenant, {"metadata": {"annotations": {PRIMARY_SITE_ANNOTATION: site}}})
    return True

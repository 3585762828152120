"""Whether the tenant-protection admission policy is in place, for the grant it narrows.

Why this exists: RBAC cannot look inside an object, so the right of tenant admins to create
and delete CleoBackups (`cleo-tenant-backup-requester`) is safe only while the admission
policy ``cleo-tenant-protection`` narrows it to one-offs ``{tenant, from}``. That policy is
optional: Kubernetes 1.28 and 1.29 have no ValidatingAdmissionPolicy v1, the chart may be
installed without it, and an admin may delete its binding for a repair. The tenant
reconcile binds spec.admins to the requester role only while `TenantProtection.in_place`
says both the policy and a binding of it that denies are there, and prunes that binding
otherwise. Anything it cannot read (no right, no such API) counts as not in place: the grant
fails closed.

The answer is kept for `ttl_seconds` (every tenant's reconcile asks), so a policy removed
takes at most that long, plus a reconcile of the tenant, to unbind.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable
from typing import Final

from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import ADMISSION_POLICY, ADMISSION_POLICY_BINDING
from cleo_operator.kube.permissions import TENANT_PROTECTION_POLICY

__all__ = ["CHECK_TTL_SECONDS", "TenantProtection"]

CHECK_TTL_SECONDS: Final = 60.0
"""How long an answer is reused."""


class TenantProtection:
    """Reads the policy and its binding (thread-safe; the answer is cached, see above)."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        name: str = TENANT_PROTECTION_POLICY,
        ttl_seconds: float = CHECK_TTL_SECONDS,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.kube = kube
        self.name = name
        self.ttl_seconds = ttl_seconds
        self.now = now
        self._lock = threading.Lock()
        self._answer: tuple[datetime.datetime, bool] | None = None

    def in_place(self) -> bool:
        """True when the policy exists and a binding of it denies what it refuses."""
        now = self.now()
        with self._lock:
            if self._answer is not None:
                at, answer = self._answer
                if (now - at).total_seconds() < self.ttl_seconds:
                    return answer
        answer = self._read()
        with self._lock:
            self._answer = (now, answer)
        return answer

    def _read(self) -> bool:
        try:
            policy = self.kube.get(ADMISSION_POLICY, self.name)
            binding = self.kube.get(ADMISSION_POLICY_BINDING, self.name)
        except KubeError:
            return False  # unreadable (no right, no such API): fail closed
        if policy is None or binding is None:
            return False
        spec = binding.get("spec") or {}
        return spec.get("policyName") == self.name and "Deny" in (
            spec.get("validationActions") or []
        )

"""What the tenant database reports: its conditions, ``status.database``, and its outcomes.

Kept apart from the work (`tenant_databases`) because the reported shape is a contract
with people and tools reading the CleoTenant (condition types and reasons, status keys),
and changes for other reasons than how the work is done. `DatabaseView` builds every
outcome in which nothing was written, from what a reconcile read before it acted.

Nothing here carries secret material: messages are for people, fingerprints are HMACs.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Final, TypedDict

from cleo_operator.api.base import ConditionStatus
from cleo_operator.api.objects import KubeObject, ObjectRef
from cleo_operator.core.times import rfc3339
from cleo_operator.data.errors import DataError, InvalidTenantName, SiteUnavailable
from cleo_operator.data.sites import SiteConfig
from cleo_operator.data.tenant_db import tenant_database_name, tenant_role_name
from cleo_operator.reconcile.database_passwords import StoredPassword
from cleo_operator.reconcile.database_secret import live_fingerprint
from cleo_operator.reconcile.status import Observation

CONDITION_TYPE: Final = "DatabaseReady"
"""The condition this module reports on the CleoTenant."""

TLS_CONDITION_TYPE: Final = "DatabaseTLS"
"""Whether connections to the tenant's site authenticate the server (does not gate Ready)."""


class DatabaseStatus(TypedDict, total=False):
    """``status.database`` of a CleoTenant (the keys of ``TenantDatabaseStatus``)."""

    site: str
    name: str
    user: str
    secretName: str
    lastPasswordRotation: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class DatabaseCondition:
    """The ``DatabaseReady`` condition to set on the CleoTenant."""

    status: ConditionStatus
    """True only after a real login as the tenant's role ran ``SELECT 1``."""
    reason: str
    """CamelCase reason (``Connected``, ``SiteUnavailable``, ``AuthenticationFailed``...)."""
    message: str
    """For people: what is wrong and what to do (never secret material)."""
    type: str = CONDITION_TYPE

    @property
    def ok(self) -> bool | None:
        """True/False/None (Unknown), as the tenant reconciler's ``condition()`` takes it."""
        return None if self.status == "Unknown" else self.status == "True"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DatabaseOutcome:
    """What one `TenantDatabases.reconcile` found and did, for the tenant reconciler."""

    condition: DatabaseCondition | None
    """Set it on the tenant; None: the database is not enabled, remove ``DatabaseReady``."""
    status: DatabaseStatus | None
    """``status.database``; None: leave it out (the database is not enabled)."""
    fingerprint: str | None = None
    """Put it into the Deployment's pod-template checksum: it changes exactly when what the
    pods read from the Secret changes (password, host...), and reveals nothing of the
    password. None: no Secret yet."""
    secret_name: str | None = None
    """The Secret the Deployment consumes with ``envFrom`` (None: not enabled)."""
    secret: ObjectRef | None = None
    """The credentials Secret, for ``status.children`` (None while it does not exist).
    The module writes it itself (the order of password and Secret writes matters):
    do not apply it, and do not prune it."""
    requeue_after: float | None = None
    """Call again within this many seconds (an operation still running, a retry, the next
    scheduled rotation); None: no need."""
    rotation_request: str | None = None
    """The last handled value of the ``cleoai.io/rotate-database-password`` annotation."""
    events: tuple[str, ...] = ()
    """Significant actions, in words, to post as Events (never secret material)."""
    secret_written: bool = False
    """The Secret was written by this reconcile (a no-op reconcile writes nothing)."""
    in_progress: bool = False
    """An operation on the site is still running; its result comes with a later call."""

    @property
    def ready(self) -> bool:
        """Whether the database part lets the tenant be Ready (True when not enabled)."""
        return self.condition is None or self.condition.status == "True"


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinalizeOutcome:
    """What `TenantDatabases.finalize` did; release the finalizer only when ``done``."""

    done: bool
    """The database part of the deletion is complete."""
    message: str
    """What happened or what it waits for (for logs and events)."""
    retry_after: float | None = None
    """When not done: call again after this many seconds."""
    in_progress: bool = False
    """Not done because an operation on the site is still running (not because it failed)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class DatabaseView:
    """What one reconcile knows before it acts: enough to report in every outcome."""

    tenant: str
    site: str
    secret: ObjectRef
    """The credentials Secret, whether it exists or not."""
    live: KubeObject | None = dataclasses.field(repr=False)
    stored: StoredPassword | None

    @property
    def namespace(self) -> str:
        return self.secret["namespace"]

    @property
    def secret_name(self) -> str:
        return self.secret["name"]

    def status(
        self, *, secret_exists: bool, rotated_at: datetime.datetime | None
    ) -> DatabaseStatus:
        status: DatabaseStatus = {"site": self.site}
        try:
            status["name"] = tenant_database_name(self.tenant)
            status["user"] = tenant_role_name(self.tenant)
        except InvalidTenantName:
            pass  # reported by the condition; names are unknowable then
        if secret_exists:
            status["secretName"] = self.secret_name
        if rotated_at is not None:
            status["lastPasswordRotation"] = rfc3339(rotated_at)
        return status

    def outcome(
        self,
        condition: DatabaseCondition,
        *,
        requeue_after: float | None,
        in_progress: bool = False,
    ) -> DatabaseOutcome:
        """An outcome that changed nothing: the pods keep what the Secret holds now."""
        return DatabaseOutcome(
            condition=condition,
            status=self.status(
                secret_exists=self.live is not None,
                rotated_at=self.stored.rotated_at if self.stored else None,
            ),
            fingerprint=live_fingerprint(self.live),
            secret_name=self.secret_name,
            secret=self.secret if self.live is not None else None,
            requeue_after=requeue_after,
            rotation_request=self.stored.rotation_request if self.stored else None,
            in_progress=in_progress,
        )

    def failed(
        self, error: DataError, *, requeue_after: float | None, hint: str = ""
    ) -> DatabaseOutcome:
        return self.outcome(
            DatabaseCondition(status="False", reason=error.reason, message=str(error) + hint),
            requeue_after=requeue_after,
        )

    def pending(self, site: str, *, waited: float, requeue_after: float) -> DatabaseOutcome:
        """The site has not answered within `waited` seconds; the operation goes on."""
        return self.outcome(
            DatabaseCondition(
                status="False",
                reason=SiteUnavailable.reason,
                message=(
                    f"site {site!r} has not answered within {waited:.1f}s; the "
                    "operation goes on in the background and its result shows on the next "
                    "reconcile. Check that the site runs and is reachable from the operator."
                ),
            ),
            requeue_after=requeue_after,
            in_progress=True,
        )


def tls_observation(site: SiteConfig) -> Observation:
    """Whether connections to ``site`` authenticate the server, as a condition (truthfully)."""
    if site.sslmode == "verify-full":
        against = "the site's CA" if site.ssl_root_cert else "the system's trusted CAs"
        return Observation(
            "True",
            "ServerVerified",
            f"connections to site {site.name!r} check the server's certificate against "
            f"{against} and its host name (sslMode verify-full)",
        )
    if site.sslmode == "verify-ca":
        return Observation(
            "True",
            "ServerVerified",
            f"connections to site {site.name!r} check the server's certificate against the "
            "site's CA, but not its host name (sslMode verify-ca)",
        )
    return Observation(
        "False",
        "ServerNotVerified",
        f"site {site.name!r} uses sslMode {site.sslmode}: neither the operator's admin "
        "connections nor the tenant's pods (PGSSLMODE) check the server's certificate, so "
        "anything on the network that can pose as the site could collect passwords. The "
        "platform team sets sslMode verify-full and sslRootCert in the site configuration.",
    )

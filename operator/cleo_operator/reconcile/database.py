"""The tenant database as a part of the tenant reconciler, and the names of the tenant database.

`DatabasePart` turns what `TenantDatabases` found and did into the tenant reconciler's
`PartResult` (conditions, ``status.database``, the pods' checksum, Events). The work
itself lives beside it, one concern a module:

- `tenant_databases`: the service (provisioning, rotation, checks, deletion on the sites);
- `database_passwords`: the password's policy (when it rotates, when a stored one is unusable);
- `database_secret`: the credentials Secret's layout (its data, ``ca.crt``, ``DATABASE_URL``);
- `site_lanes`: the per-site threads that keep a dead site from holding a reconcile;
- `database_outcome`: what the tenant database reports; `database_errors`: its own failures.

The names the rest of the operator uses are importable from here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from cleo_operator.reconcile.database_errors import SecretWriteFailed, UnexpectedError
from cleo_operator.reconcile.database_outcome import (
    CONDITION_TYPE,
    TLS_CONDITION_TYPE,
    DatabaseCondition,
    DatabaseOutcome,
    DatabaseStatus,
    FinalizeOutcome,
    tls_observation,
)
from cleo_operator.reconcile.database_passwords import (
    MIN_PASSWORD_LENGTH,
    ROTATE_ANNOTATION,
    new_password,
    password_fingerprint,
    rotation_request_pending,
)
from cleo_operator.reconcile.database_secret import (
    CREDENTIALS_SECRET,
    DATABASE_FINGERPRINT,
    FINGERPRINT_ANNOTATION,
    PASSWORD_KEY,
    ROTATED_AT_ANNOTATION,
    ROTATION_REQUEST_ANNOTATION,
    SECRET_KEYS,
    credentials_fingerprint,
)
from cleo_operator.reconcile.status import Observation, clip
from cleo_operator.reconcile.tenant import PartResult, TenantContext, TenantEvent
from cleo_operator.reconcile.tenant_databases import (
    FAILOVER_RECHECK_SECONDS,
    BeforeDrop,
    DatabaseSettings,
    TenantDatabases,
)

__all__ = [
    "CONDITION_TYPE",
    "CREDENTIALS_SECRET",
    "FAILOVER_RECHECK_SECONDS",
    "FINGERPRINT_ANNOTATION",
    "MIN_PASSWORD_LENGTH",
    "PASSWORD_KEY",
    "ROTATED_AT_ANNOTATION",
    "ROTATE_ANNOTATION",
    "ROTATION_REQUEST_ANNOTATION",
    "SECRET_KEYS",
    "TLS_CONDITION_TYPE",
    "BeforeDrop",
    "DatabaseCondition",
    "DatabaseOutcome",
    "DatabasePart",
    "DatabaseSettings",
    "DatabaseStatus",
    "FinalizeOutcome",
    "SecretWriteFailed",
    "TenantDatabases",
    "UnexpectedError",
    "credentials_fingerprint",
    "database_part_result",
    "new_password",
    "password_fingerprint",
    "rotation_request_pending",
    "tls_observation",
]

log = logging.getLogger(__name__)


def database_part_result(
    outcome: DatabaseOutcome,
    *,
    tls: Observation | None,
    conditions: Iterable[object] | None,
) -> PartResult:
    """What the tenant reconciler does with `outcome`; pure.

    `tls` is the site's ``DatabaseTLS`` condition (None: no site, remove it);
    `conditions` is ``status.conditions`` of the tenant as it is now.
    """
    result = PartResult(requeue_after=outcome.requeue_after)
    if tls is not None:
        result.informational[TLS_CONDITION_TYPE] = tls
    else:
        result.remove_conditions.add(TLS_CONDITION_TYPE)
    if outcome.condition is not None:
        condition = outcome.condition
        result.conditions[condition.type] = Observation(
            condition.status, condition.reason, clip(condition.message)
        )
    elif any(
        isinstance(item, Mapping) and item.get("type") == CONDITION_TYPE
        for item in conditions or []
    ):
        # Disabled after it was enabled: conditions are never removed from status, so
        # say what is true now instead of leaving the last verdict standing.
        result.conditions[CONDITION_TYPE] = Observation(
            "True",
            "NotEnabled",
            "spec.database.enabled is false: the operator no longer manages the database "
            "(it was left on its site, and its Secret in the namespace)",
        )
    status: dict[str, object] | None = None
    if outcome.status is not None:
        status = dict(outcome.status)
        if outcome.rotation_request is not None:
            status["passwordRotationRequest"] = outcome.rotation_request
    result.status["database"] = status
    if outcome.fingerprint is not None:
        result.fingerprints[DATABASE_FINGERPRINT] = outcome.fingerprint
    # Only a Secret that exists goes into envFrom: pods never wait for a missing one.
    if outcome.secret is not None:
        result.database_secret = outcome.secret_name
    # A role created, a password set or rotated: the audit trail's.
    result.events.extend(TenantEvent("Database", event, audit=True) for event in outcome.events)
    return result


class DatabasePart:
    """The tenant database as a `TenantPart` of `TenantReconciler` (``parts=[...]``)."""

    def __init__(self, databases: TenantDatabases) -> None:
        self.databases = databases

    def reconcile(self, ctx: TenantContext) -> PartResult:
        outcome = self.databases.reconcile(
            tenant=ctx.name,
            uid=ctx.uid,
            spec=ctx.spec,
            namespace=ctx.namespace,
            owner=ctx.owner,
            annotations=ctx.annotations,
            now=ctx.now,
        )
        site = outcome.status.get("site") if outcome.status is not None else None
        tls = self.databases.tls_observation(site) if site else None
        # Its events are logged by the audit trail (`database_part_result`, `kube.audit`).
        return database_part_result(outcome, tls=tls, conditions=ctx.status.get("conditions"))

    def finalize(self, ctx: TenantContext, *, delete: bool) -> bool:
        """Drop (Delete) or keep (Retain) the database; ``delete`` is spec.deletionPolicy's."""
        del delete  # the same as ctx.spec.deletion_policy, which finalize reads itself
        outcome = self.databases.finalize(
            tenant=ctx.name, uid=ctx.uid, spec=ctx.spec, namespace=ctx.namespace
        )
        log.info("tenant %s: database: %s", ctx.name, outcome.message)
        if not outcome.done:
            ctx.waiting.append(f"database: {outcome.message}")
        return outcome.done

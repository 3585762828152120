"""The tenant's side in Kubernetes: its writers (the CleoAI Deployment) and its credentials.

Why it is built this way:

- **Stopping the writers** scales the Deployment to zero and records, in the same patch,
  how many replicas it had (annotation ``cleoai.io/failover-replicas``) and which failover
  holds it (``cleoai.io/failover-hold``). One patch, so a crash cannot leave a Deployment
  at zero with its old size forgotten; an interrupted step finds the annotations and does
  not overwrite the recorded size with the zero it set itself. Under an HPA, zero replicas
  pause the autoscaler (Kubernetes does not scale a Deployment at zero), so it does not
  bring the writers back. With a fixed size the tenant reconcile must not restore it while
  a failover holds it (see :func:`held_by`).
- **Rolling** restores the recorded size and stamps the pod template with the failover
  (``cleoai.io/failover-restart``), so every pod is new and reads the repointed Secret:
  environment from a Secret is read when a container starts, never again. The stamp is the
  failover's name, so a resumed step does not roll twice.
- **Repointing** the credentials Secret changes only where it points (``PGHOST``,
  ``PGPORT``, ``PGSSLMODE``, ``PGSSLROOTCERT``, the site's CA ``ca.crt`` and
  ``DATABASE_URL``), with a merge patch (a key the new site has not is removed); the
  password stays where its truth lives, in that Secret, untouched. The tenant database
  part, which reads the primary's site from the tenant (``failover.tenant``), writes the
  same values on its next reconcile.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any, Final

import psycopg

from cleo_operator.api.objects import KubeObject
from cleo_operator.data.errors import DataError, QueryFailed, redact
from cleo_operator.data.pool import classify_connect_error
from cleo_operator.data.sites import SiteConfig
from cleo_operator.data.tenant_db import (
    SITE_CLIENT_OPTIONAL_KEYS,
    site_client_values,
    tenant_database_name,
    tenant_role_name,
)
from cleo_operator.failover.errors import FailoverError
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import DEPLOYMENT, SECRET
from cleo_operator.kube.secrets import encode_secret_data, secret_value
from cleo_operator.render.child import WORKLOAD_NAME

__all__ = [
    "HOLD_ANNOTATION",
    "REPLICAS_ANNOTATION",
    "RESTART_ANNOTATION",
    "CredentialsView",
    "Rollout",
    "held_by",
    "hold_workload",
    "read_credentials",
    "release_workload",
    "repoint_credentials",
    "rollout_state",
    "verify_reads",
    "verify_writes",
]

logger = logging.getLogger(__name__)


HOLD_ANNOTATION: Final = "cleoai.io/failover-hold"
"""On the Deployment: the CleoFailover that scaled it to zero."""
REPLICAS_ANNOTATION: Final = "cleoai.io/failover-replicas"
"""On the Deployment: its size before the failover scaled it to zero."""
RESTART_ANNOTATION: Final = "cleoai.io/failover-restart"
"""On the pod template: the failover whose rollout made these pods."""

PASSWORD_KEY: Final = "PGPASSWORD"  # noqa: S105 - a key name


def _annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def held_by(deployment: Mapping[str, Any] | None) -> str | None:
    """The failover holding the Deployment at zero, or None.

    The tenant reconcile must not restore ``spec.replicas`` of a held Deployment.
    """
    if deployment is None:
        return None
    return _annotations(deployment).get(HOLD_ANNOTATION)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Hold:
    """What :func:`hold_workload` found and did."""

    exists: bool
    """The tenant has a Deployment."""
    previous_replicas: int
    """Its size before the failover (0 when it does not exist)."""
    changed: bool
    """This call scaled it to zero."""


def hold_workload(kube: KubeClient, namespace: str, *, failover: str) -> Hold:
    """Scale the tenant's Deployment to zero, remembering its size; idempotent."""
    deployment = kube.get(DEPLOYMENT, WORKLOAD_NAME, namespace=namespace)
    if deployment is None:
        return Hold(exists=False, previous_replicas=0, changed=False)
    annotations = _annotations(deployment)
    replicas = int((deployment.get("spec") or {}).get("replicas", 1))
    if HOLD_ANNOTATION in annotations:
        previous = _int(annotations.get(REPLICAS_ANNOTATION), default=replicas)
        if replicas == 0:
            return Hold(exists=True, previous_replicas=previous, changed=False)
    else:
        previous = replicas
    kube.patch_merge(
        DEPLOYMENT,
        WORKLOAD_NAME,
        {
            "metadata": {
                "annotations": {HOLD_ANNOTATION: failover, REPLICAS_ANNOTATION: str(previous)}
            },
            "spec": {"replicas": 0},
        },
        namespace=namespace,
    )
    logger.info("%s/%s: writers stopped (was %d replicas)", namespace, WORKLOAD_NAME, previous)
    return Hold(exists=True, previous_replicas=previous, changed=True)


def _int(value: str | None, *, default: int) -> int:
    try:
        return max(0, int(value)) if value is not None else default
    except ValueError:
        return default


def release_workload(kube: KubeClient, namespace: str, *, failover: str) -> bool:
    """Restore the recorded size and restart every pod; returns whether it wrote.

    Idempotent: a Deployment already released by this failover (its template carries the
    stamp and no hold is left) is not touched again.
    """
    deployment = kube.get(DEPLOYMENT, WORKLOAD_NAME, namespace=namespace)
    if deployment is None:
        return False
    annotations = _annotations(deployment)
    template_annotations = (
        ((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}
    ).get("annotations") or {}
    held = HOLD_ANNOTATION in annotations
    if not held and template_annotations.get(RESTART_ANNOTATION) == failover:
        return False
    patch: dict[str, Any] = {
        "spec": {"template": {"metadata": {"annotations": {RESTART_ANNOTATION: failover}}}}
    }
    if held:
        replicas = _int(annotations.get(REPLICAS_ANNOTATION), default=1)
        patch["spec"]["replicas"] = replicas
        patch["metadata"] = {"annotations": {HOLD_ANNOTATION: None, REPLICAS_ANNOTATION: None}}
    kube.patch_merge(DEPLOYMENT, WORKLOAD_NAME, patch, namespace=namespace)
    logger.info("%s/%s: rolling out on the new primary", namespace, WORKLOAD_NAME)
    return True


@dataclasses.dataclass(frozen=True, kw_only=True)
class Rollout:
    """How far the Deployment's rollout is."""

    exists: bool
    """The tenant has a Deployment."""
    done: bool
    """Every wanted pod is of the new template and available."""
    wanted: int
    """Pods wanted."""
    available: int
    """Pods of the new template that are available."""
    message: str
    """For people."""


def rollout_state(kube: KubeClient, namespace: str) -> Rollout:
    """Whether the Deployment serves again, entirely with new pods."""
    deployment = kube.get(DEPLOYMENT, WORKLOAD_NAME, namespace=namespace)
    if deployment is None:
        return Rollout(
            exists=False, done=True, wanted=0, available=0, message="the tenant has no workload"
        )
    meta, spec = deployment["metadata"], deployment.get("spec") or {}
    status = deployment.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    total = int(status.get("replicas") or 0)
    observed = int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
    done = observed and updated >= wanted and available >= wanted and total <= wanted
    if wanted == 0 and observed:
        done = True
    return Rollout(
        exists=True,
        done=done,
        wanted=wanted,
        available=min(available, updated),
        message=(
            f"{min(available, updated)} of {wanted} new pod(s) available"
            + ("" if total <= wanted else f", {total - wanted} old pod(s) still going")
        ),
    )


# --------------------------------------------------------------------------- credentials


@dataclasses.dataclass(frozen=True, kw_only=True)
class CredentialsView:
    """Where the tenant's credentials Secret points (the password stays out of reprs)."""

    host: str | None
    """PGHOST."""
    port: str | None
    """PGPORT."""
    password: str | None = dataclasses.field(repr=False)
    """PGPASSWORD (read it only to hand it to libpq)."""
    resource_version: str
    """The Secret's version (for tests that prove it was not written)."""

    def points_to(self, site: SiteConfig) -> bool:
        return self.host == site.host and self.port == str(site.port)


def read_credentials(kube: KubeClient, namespace: str, *, secret: str) -> CredentialsView | None:
    """The tenant's credentials Secret, or None when it does not exist."""
    obj = kube.get(SECRET, secret, namespace=namespace)
    if obj is None:
        return None
    return CredentialsView(
        host=secret_value(obj, "PGHOST"),
        port=secret_value(obj, "PGPORT"),
        password=secret_value(obj, PASSWORD_KEY),
        resource_version=str(obj["metadata"].get("resourceVersion", "")),
    )


def repoint_credentials(
    kube: KubeClient, namespace: str, *, secret: str, site: SiteConfig, tenant: str
) -> bool:
    """Point the credentials Secret at ``site``; returns whether it wrote. Idempotent."""
    obj: KubeObject | None = kube.get(SECRET, secret, namespace=namespace)
    where = f"Secret {namespace}/{secret}"
    if obj is None:
        raise FailoverError(
            f"the tenant's credentials {where} does not exist, so the workload cannot be "
            "pointed at the new primary; the tenant database part writes it (is "
            "spec.database.enabled true, and is the tenant reconciled?)",
            reason="CredentialsMissing",
            retryable=True,
        )
    password = secret_value(obj, PASSWORD_KEY)
    if not password:
        raise FailoverError(
            f"{where} holds no readable {PASSWORD_KEY}; the tenant database part writes a new "
            "one on its next reconcile",
            reason="CredentialsMissing",
            retryable=True,
        )
    wanted = site_client_values(site, tenant=tenant, password=password)
    # A key the new site does not have (no CA of its own, a weak sslMode) goes: a stale CA
    # would make the pods check the new server against the old site's CA.
    stale = [
        key
        for key in SITE_CLIENT_OPTIONAL_KEYS
        if key not in wanted and key in (obj.get("data") or {})
    ]
    if not stale and all(secret_value(obj, key) == value for key, value in wanted.items()):
        return False
    data: dict[str, str | None] = {**encode_secret_data(wanted), **dict.fromkeys(stale)}
    try:
        kube.patch_merge(SECRET, secret, {"data": data}, namespace=namespace)
    except KubeError as exc:
        # The API server's message could quote the request body (the URL with the password).
        raise FailoverError(
            f"cannot write the credentials {where}: {exc.status} {exc.reason}",
            reason="CredentialsWriteFailed",
            retryable=exc.transient,
        ) from None
    logger.info("%s now points to site %s", where, site.name)
    return True


def verify_writes(site: SiteConfig, *, tenant: str, password: str) -> str:
    """Log in as the tenant's role to the site and write (a temporary table); say what worked.

    A temporary table proves the server takes the tenant's writes without leaving
    anything in the tenant's data (no table a backup or the application would see).
    Raises the data layer's errors (``AuthenticationFailed``, ``SiteUnavailable``...) or
    :class:`FailoverError` ``NotWritable`` when the session is read-only.
    """
    database = tenant_database_name(tenant)
    role = tenant_role_name(tenant)
    try:
        with psycopg.connect(
            **site.connection_kwargs(dbname=database),
            user=role,
            password=password,
            autocommit=True,
        ) as conn:
            row = conn.execute(
                "SELECT pg_is_in_recovery(), current_setting('transaction_read_only')"
            ).fetchone()
            if row is None or row[0] or row[1] == "on":
                raise FailoverError(
                    f"site {site.name!r} does not take the tenant's writes (in recovery: "
                    f"{row[0] if row else '?'}, read-only session: {row[1] if row else '?'})",
                    reason="NotWritable",
                    retryable=True,
                )
            with conn.transaction():
                conn.execute("CREATE TEMPORARY TABLE cleo_failover_check (at timestamptz)")
                conn.execute("INSERT INTO cleo_failover_check VALUES (now())")
                check = conn.execute("SELECT count(*) FROM cleo_failover_check").fetchone()
            if not check or check[0] != 1:
                raise FailoverError(
                    f"site {site.name!r}: a row written by the tenant's role was not read back",
                    reason="NotWritable",
                    retryable=True,
                )
    except psycopg.OperationalError as error:
        if error.sqlstate is None or isinstance(error, psycopg.errors.ConnectionTimeout):
            raise classify_connect_error(
                error, site, user=role, secrets=(password,), dbname=database
            ) from None
        raise _write_error(error, site=site, password=password) from None
    except psycopg.Error as error:
        raise _write_error(error, site=site, password=password) from None
    return (
        f"role {role} logged in to {database} on site {site.name!r} "
        f"({site.host}:{site.port}) and wrote"
    )


def _write_error(error: psycopg.Error, *, site: SiteConfig, password: str) -> DataError:
    detail = redact(error.diag.message_primary or type(error).__name__, (password,))
    return QueryFailed(f"site {site.name!r}: the tenant's role failed: {detail}", site=site.name)


def verify_reads(site: SiteConfig, *, tenant: str, password: str) -> str:
    """Log in as the tenant's role to the site (a standby: read-only) and read its tables.

    For drills: proves that the credentials the workload holds work on the standby, and
    that the tenant's data is readable there. Raises like :func:`verify_writes`.
    """
    database = tenant_database_name(tenant)
    role = tenant_role_name(tenant)
    try:
        with psycopg.connect(
            **site.connection_kwargs(dbname=database),
            user=role,
            password=password,
            autocommit=True,
        ) as conn:
            row = conn.execute(
                """
                SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'p')
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                   AND n.nspname NOT LIKE 'pg\\_%'
                """
            ).fetchone()
    except psycopg.OperationalError as error:
        if error.sqlstate is None or isinstance(error, psycopg.errors.ConnectionTimeout):
            raise classify_connect_error(
                error, site, user=role, secrets=(password,), dbname=database
            ) from None
        raise _write_error(error, site=site, password=password) from None
    except psycopg.Error as error:
        raise _write_error(error, site=site, password=password) from None
    tables = int(row[0]) if row else 0
    return (
        f"role {role} logged in to {database} on site {site.name!r} ({site.host}:{site.port}) "
        f"and read its catalog ({tables} table(s))"
    )

"""The tenant's credentials Secret (``cleo-database``): what it holds, and how it is read back.

The Secret is where the database password's truth lives (see `tenant_databases`), and the
object the application reads with ``envFrom``, so its layout is a contract with pods
already running: libpq's own variables (any libpq-based client connects without
configuration), ``DATABASE_URL``, and the site's CA as ``ca.crt``. What the operator
handled is recorded beside the password, as annotations written in the same request,
so that a failed status write can never cause a second rotation.

Pure: builds and reads dicts, no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Final

from cleo_operator.api.objects import KubeObject, ObjectRef, OwnerReference
from cleo_operator.core.times import read_rfc3339, rfc3339
from cleo_operator.data.sites import CA_KEY, SiteConfig
from cleo_operator.data.tenant_db import site_client_values, tenant_database_name, tenant_role_name
from cleo_operator.kube.secrets import encode_secret_data, secret_value
from cleo_operator.reconcile.database_passwords import (
    FINGERPRINT_CONTEXT,
    StoredPassword,
    password_fingerprint,
    unusable_password,
)
from cleo_operator.render.child import child_metadata, opaque_secret

CREDENTIALS_SECRET: Final = "cleo-database"  # noqa: S105 - a name, not a password
"""Name of the credentials Secret in the tenant's namespace (``cleo-`` is reserved)."""

FINGERPRINT_ANNOTATION: Final = "cleoai.io/password-fingerprint"
ROTATED_AT_ANNOTATION: Final = "cleoai.io/password-rotated-at"
ROTATION_REQUEST_ANNOTATION: Final = "cleoai.io/password-rotation-request"

PASSWORD_KEY: Final = "PGPASSWORD"  # noqa: S105 - a key name
DATABASE_FINGERPRINT: Final = "database"
"""The database part's entry in the workload's checksum (`PartResult.fingerprints`)."""
# libpq's own environment variables, so that any libpq-based client in the pod (psql,
# psycopg, asyncpg with a DSN from DATABASE_URL...) connects without configuration.
SECRET_KEYS: Final = (
    "PGHOST",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    PASSWORD_KEY,
    "PGSSLMODE",
    "PGSSLROOTCERT",
    CA_KEY,
    "DATABASE_URL",
)


def credentials_fingerprint(values: Mapping[str, str]) -> str:
    """What goes into the Deployment's checksum: changes with any value the pods read.

    An HMAC keyed with the password over every key and value of the Secret: a new password
    rolls the pods, and so does a new host or port (a tenant moved to another site), while
    the result reveals nothing of the password to whoever reads the Deployment.
    """
    message = "\n".join(f"{key}={values[key]}" for key in sorted(values))
    key = values.get(PASSWORD_KEY, "").encode()
    digest = hmac.new(key, FINGERPRINT_CONTEXT + message.encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def live_fingerprint(secret: KubeObject | None) -> str | None:
    """The fingerprint of what the pods get from the live Secret (None: no Secret)."""
    if secret is None:
        return None
    data = secret.get("data") or {}
    # Only our keys: one added by hand does not reach the checksum on some paths only.
    values = {key: secret_value(secret, key) or "" for key in SECRET_KEYS if key in data}
    return credentials_fingerprint(values)


def read_stored_password(
    secret: KubeObject | None, *, tenant: str
) -> tuple[StoredPassword | None, str]:
    """The checked password of the live Secret, or None and why it cannot be used."""
    if secret is None:
        return None, "the credentials Secret does not exist (first provisioning, or deleted)"
    password = secret_value(secret, PASSWORD_KEY)
    if not password:
        return None, f"the credentials Secret has no readable {PASSWORD_KEY}"
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    recorded = str(annotations.get(FINGERPRINT_ANNOTATION) or "")
    why = unusable_password(tenant=tenant, password=password, recorded_fingerprint=recorded)
    if why is not None:
        return None, why
    request = str(annotations.get(ROTATION_REQUEST_ANNOTATION) or "") or None
    stored = StoredPassword(
        password=password,
        fingerprint=password_fingerprint(tenant=tenant, password=password),
        rotated_at=read_rfc3339(annotations.get(ROTATED_AT_ANNOTATION)),
        rotation_request=request,
    )
    return stored, ""


def credentials_values(tenant: str, *, site: SiteConfig, password: str) -> dict[str, str]:
    """What the credentials Secret holds (see `SECRET_KEYS`), in plain text."""
    return {
        "PGDATABASE": tenant_database_name(tenant),
        "PGUSER": tenant_role_name(tenant),
        PASSWORD_KEY: password,
        **site_client_values(site, tenant=tenant, password=password),
    }


def render_credentials_secret(
    secret: ObjectRef,
    *,
    tenant: str,
    owner: OwnerReference,
    site: SiteConfig,
    record: StoredPassword,
) -> KubeObject:
    """The credentials Secret `secret` for `record`'s password on `site`.

    What was handled (when the password was made, the last on-demand rotation request)
    is recorded beside the password, in the same request.
    """
    metadata = child_metadata(
        name=secret["name"],
        namespace=secret["namespace"],
        tenant=tenant,
        owner=owner,
        component="database",
    )
    annotations = {FINGERPRINT_ANNOTATION: record.fingerprint}
    if record.rotated_at is not None:
        annotations[ROTATED_AT_ANNOTATION] = rfc3339(record.rotated_at)
    if record.rotation_request is not None:
        annotations[ROTATION_REQUEST_ANNOTATION] = record.rotation_request
    metadata["annotations"] = annotations
    values = credentials_values(tenant, site=site, password=record.password)
    return opaque_secret(metadata, encode_secret_data(values))


def credentials_secret_ref(*, namespace: str, name: str) -> ObjectRef:
    """The credentials Secret as ``status.children`` lists it."""
    return {"apiVersion": "v1", "kind": "Secret", "namespace": namespace, "name": name}

"""How a backup runner proves who it is to its object store: env, annotations, a token.

Pure: a CleoBackup's destination in, the pieces of its runner's pod and ServiceAccount out.
`render.backup` puts them in place; `backup.object_stores` reads the same variables in the
pod. Three sources per store, exactly one per CleoBackup (the API refuses more or none):

- a Secret in the backup's namespace: its keys reach the runner as variables through the
  kubelet (``secretKeyRef``), never through an API right of the runner's own;
- workload identity, bound by the cloud to this very ServiceAccount
  (``cleo-backup-<name>`` in the backup's namespace), so a tenant can only use identities
  whose trust names its own namespace:

  - S3 (IRSA): the ServiceAccount's ``eks.amazonaws.com/role-arn`` annotation, and, so that
    it works with or without EKS's pod identity webhook (which skips a pod that already
    has the ``aws-iam-token`` volume), the projected token (audience ``sts.amazonaws.com``)
    and ``AWS_ROLE_ARN`` / ``AWS_WEB_IDENTITY_TOKEN_FILE`` rendered here;
  - GCS (GKE): the ``iam.gke.io/gcp-service-account`` annotation; the GKE metadata server
    answers the runner's token requests, so its addresses are opened for egress;
  - Azure: the ``azure.workload.identity/client-id`` annotation (and ``tenant-id``) and the
    pod label ``azure.workload.identity/use: "true"``, on which Azure's webhook injects the
    ``AZURE_*`` variables and the projected token;
- the node's identity from instance metadata (``instanceMetadata: true``): nothing but
  egress to the metadata address, which is otherwise closed (it hands out the node's
  credentials, so it opens only when the CleoBackup asks for it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlencode

from cleo_operator.api.backup import (
    AzureDestination,
    CleoBackupSpec,
    GcsDestination,
    S3Destination,
)
from cleo_operator.render import backup_shapes as shapes
from cleo_operator.render.k8s import VolumeMount

__all__ = [
    "AUTH_ENV",
    "AUTH_SOURCES",
    "AWS_TOKEN_PATH",
    "AZURE_SECRET_ENV",
    "GCS_SECRET_ENV",
    "GCS_SECRET_KEY",
    "METADATA_ENDPOINTS",
    "S3_ENV",
    "S3_OPTIONAL_ENV",
    "RunnerIdentity",
    "object_store_url",
    "runner_identity",
    "secret_env",
]

AUTH_ENV: Final = "CLEO_OBJECT_STORE_AUTH"
"""The runner's credential source: `backup.object_stores` reads only that source's variables,
and with ``secret`` refuses a store whose keys are empty (never the node's identity)."""
AUTH_SOURCES: Final = ("secret", "web-identity", "workload", "instance")
S3_ENV: Final = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
"""Keys the S3 credentials Secret must hold (the variables have the same names)."""
S3_OPTIONAL_ENV: Final = ("AWS_SESSION_TOKEN",)
"""Keys the S3 credentials Secret may hold."""
GCS_SECRET_KEY: Final = "service-account.json"  # noqa: S105 - a key name
"""The key of the GCS credentials Secret: a service account's JSON key."""
GCS_SECRET_ENV: Final = "GOOGLE_SERVICE_ACCOUNT_KEY"  # noqa: S105 - a variable name
AZURE_SECRET_ENV: Final = ("AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN")
"""Keys of the Azure credentials Secret; it must hold one of them."""

AWS_ROLE_ANNOTATION: Final = "eks.amazonaws.com/role-arn"
GKE_ANNOTATION: Final = "iam.gke.io/gcp-service-account"
AZURE_CLIENT_ANNOTATION: Final = "azure.workload.identity/client-id"
AZURE_TENANT_ANNOTATION: Final = "azure.workload.identity/tenant-id"
AZURE_USE_LABEL: Final = "azure.workload.identity/use"

AWS_TOKEN_VOLUME: Final = "aws-iam-token"  # noqa: S105 - a volume name
"""The volume name EKS's webhook uses; a pod that has it is left alone by the webhook."""
AWS_TOKEN_DIR: Final = "/var/run/secrets/eks.amazonaws.com/serviceaccount"  # noqa: S105
AWS_TOKEN_PATH: Final = f"{AWS_TOKEN_DIR}/token"
AWS_TOKEN_AUDIENCE: Final = "sts.amazonaws.com"  # noqa: S105 - an audience
TOKEN_SECONDS: Final = 86400
"""The kubelet renews a projected token at 80 % of this; STS wants at most a day."""

METADATA_ENDPOINTS: Final = {
    "instance": (("169.254.169.254/32", 80),),
    # GKE's metadata server: the classic address, and Dataplane V2's.
    "gke": (("169.254.169.254/32", 80), ("169.254.169.252/32", 988)),
}
"""Addresses (and ports) a runner reaches for tokens from the platform."""


def secret_env(
    names: tuple[str, ...], secret: str, *, optional: bool = False, key: str | None = None
) -> list[shapes.EnvVar]:
    """Variables from a Secret's keys (named alike, or all from `key`)."""
    env: list[shapes.EnvVar] = []
    for name in names:
        ref: shapes.KeyRef = {"name": secret, "key": key or name}
        if optional:
            ref["optional"] = True
        env.append({"name": name, "valueFrom": {"secretKeyRef": ref}})
    return env


@dataclass(frozen=True)
class RunnerIdentity:
    """What a runner needs, beyond the common parts, to reach its object store."""

    env: list[shapes.EnvVar] = field(default_factory=list)
    service_account_annotations: dict[str, str] = field(default_factory=dict)
    pod_labels: dict[str, str] = field(default_factory=dict)
    volumes: list[shapes.Volume] = field(default_factory=list)
    mounts: list[VolumeMount] = field(default_factory=list)
    platform_egress: tuple[tuple[str, int], ...] = ()
    """Metadata addresses and ports the runner must reach (instance or GKE metadata)."""
    token_service: bool = False
    """Whether the runner exchanges a token over HTTPS (STS, Entra ID): port 443 of the
    CleoBackup's egress ranges opens besides the store's port."""


def _s3(s3: S3Destination) -> RunnerIdentity:
    if s3.credentials_secret is not None:
        return RunnerIdentity(
            env=secret_env(S3_ENV, s3.credentials_secret)
            + secret_env(S3_OPTIONAL_ENV, s3.credentials_secret, optional=True)
        )
    if s3.workload_identity is not None:
        identity = s3.workload_identity
        env: list[shapes.EnvVar] = [
            {"name": "AWS_ROLE_ARN", "value": identity.role_arn},
            {"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": AWS_TOKEN_PATH},
        ]
        if identity.sts_endpoint:
            env.append({"name": "AWS_ENDPOINT_URL_STS", "value": identity.sts_endpoint})
        token: shapes.Volume = {
            "name": AWS_TOKEN_VOLUME,
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "audience": AWS_TOKEN_AUDIENCE,
                            "expirationSeconds": TOKEN_SECONDS,
                            "path": "token",
                        }
                    }
                ]
            },
        }
        return RunnerIdentity(
            env=env,
            service_account_annotations={AWS_ROLE_ANNOTATION: identity.role_arn},
            volumes=[token],
            mounts=[{"name": AWS_TOKEN_VOLUME, "mountPath": AWS_TOKEN_DIR, "readOnly": True}],
            token_service=True,
        )
    return RunnerIdentity(platform_egress=METADATA_ENDPOINTS["instance"])


def _gcs(gcs: GcsDestination) -> RunnerIdentity:
    if gcs.credentials_secret is not None:
        return RunnerIdentity(
            env=secret_env((GCS_SECRET_ENV,), gcs.credentials_secret, key=GCS_SECRET_KEY)
        )
    if gcs.workload_identity is not None:
        return RunnerIdentity(
            service_account_annotations={GKE_ANNOTATION: gcs.workload_identity.service_account},
            platform_egress=METADATA_ENDPOINTS["gke"],
        )
    return RunnerIdentity(platform_egress=METADATA_ENDPOINTS["instance"])


def _azure(azure: AzureDestination) -> RunnerIdentity:
    if azure.credentials_secret is not None:
        return RunnerIdentity(
            env=secret_env(AZURE_SECRET_ENV, azure.credentials_secret, optional=True)
        )
    if azure.workload_identity is not None:
        annotations = {AZURE_CLIENT_ANNOTATION: azure.workload_identity.client_id}
        if azure.workload_identity.tenant_id:
            annotations[AZURE_TENANT_ANNOTATION] = azure.workload_identity.tenant_id
        return RunnerIdentity(
            service_account_annotations=annotations,
            pod_labels={AZURE_USE_LABEL: "true"},
            token_service=True,
        )
    return RunnerIdentity(platform_egress=METADATA_ENDPOINTS["instance"])


def runner_identity(spec: CleoBackupSpec) -> RunnerIdentity:
    """The runner's credentials or identity for its CleoBackup's store (none for a volume),
    with ``CLEO_OBJECT_STORE_AUTH`` naming the source."""
    destination = spec.resolved_destination()
    store = destination.object_store
    if destination.s3 is not None:
        identity = _s3(destination.s3)
    elif destination.gcs is not None:
        identity = _gcs(destination.gcs)
    elif destination.azure is not None:
        identity = _azure(destination.azure)
    else:
        return RunnerIdentity()
    assert store is not None
    if store.credentials_secret is not None:
        source = "secret"
    elif store.workload_identity is not None:
        source = "web-identity" if destination.s3 is not None else "workload"
    else:
        source = "instance"
    auth: shapes.EnvVar = {"name": AUTH_ENV, "value": source}
    return dataclasses.replace(identity, env=[auth, *identity.env])


def object_store_url(spec: CleoBackupSpec) -> str | None:
    """The runner's ``--destination`` for an object store (None for a volume)."""
    destination = spec.resolved_destination()
    options: dict[str, str] = {}
    if destination.s3 is not None:
        s3 = destination.s3
        if s3.region:
            options["region"] = s3.region
        url = f"s3://{s3.bucket}/{s3.prefix or ''}"
        endpoint = s3.endpoint
    elif destination.gcs is not None:
        gcs = destination.gcs
        url = f"gs://{gcs.bucket}/{gcs.prefix or ''}"
        endpoint = gcs.endpoint
    elif destination.azure is not None:
        azure = destination.azure
        url = f"azure://{azure.account}/{azure.container}/{azure.prefix or ''}"
        endpoint = azure.endpoint
    else:
        return None
    if endpoint:
        options["endpoint"] = endpoint
    return f"{url}?{urlencode(options)}" if options else url

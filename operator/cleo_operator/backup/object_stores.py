"""The runner's object stores, built from a destination URL and the pod's environment.

Why from the environment: Kubernetes hands the runner its credentials as variables (from
the Secret the CleoBackup names) or as an identity (a projected ServiceAccount token for web
identity, the GKE or Azure metadata server, the node's instance metadata), and the
render side (`render.backup_identity`) decides which. Only the variables named here are
read, and they are passed to obstore explicitly, so what a store uses is what this module
shows:

- S3 (``s3://BUCKET/PREFIX?region=R&endpoint=URL``): ``AWS_ACCESS_KEY_ID`` and
  ``AWS_SECRET_ACCESS_KEY`` (``AWS_SESSION_TOKEN``); else web identity (IRSA):
  ``AWS_ROLE_ARN`` with ``AWS_WEB_IDENTITY_TOKEN_FILE`` (and ``AWS_ENDPOINT_URL_STS`` for a
  regional or private STS); else the instance metadata service.
- GCS (``gs://BUCKET/PREFIX?endpoint=URL``): ``GOOGLE_SERVICE_ACCOUNT_KEY`` (a service
  account's JSON key); else the metadata server (GKE workload identity, or the node's
  service account).
- Azure (``azure://ACCOUNT/CONTAINER/PREFIX?endpoint=URL``): ``AZURE_STORAGE_ACCOUNT_KEY``
  or ``AZURE_STORAGE_SAS_TOKEN``; else workload identity (``AZURE_CLIENT_ID``,
  ``AZURE_TENANT_ID``, ``AZURE_FEDERATED_TOKEN_FILE``, ``AZURE_AUTHORITY_HOST``, which the
  Azure workload identity webhook sets); else the managed identity of the instance.

Credentials never show in reprs or messages: the stores' descriptions name the bucket and
the endpoint only, and a credential that obstore refuses is reported by `object_store`'s
safe messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qsl, urlsplit

from obstore import exceptions as obstore_errors
from obstore.store import AzureStore, GCSStore, S3Store

from cleo_operator.api.backup import CleoBackupSpec
from cleo_operator.api.objects import KubeObject
from cleo_operator.backup.errors import StorageError
from cleo_operator.backup.object_store import ObjectStoreStorage
from cleo_operator.kube.secrets import secret_value
from cleo_operator.render.backup_identity import (
    AZURE_SECRET_ENV,
    GCS_SECRET_ENV,
    GCS_SECRET_KEY,
    S3_ENV,
    S3_OPTIONAL_ENV,
    object_store_url,
)

if TYPE_CHECKING:
    from obstore.store import AzureConfig, ClientConfig, GCSConfig, S3Config

__all__ = [
    "AZURE_KEY_ENV",
    "AZURE_SAS_ENV",
    "AZURE_WORKLOAD_ENV",
    "CA_FILE_ENV",
    "GCS_KEY_ENV",
    "OBJECT_STORE_SCHEMES",
    "S3_KEY_ENV",
    "S3_WEB_IDENTITY_ENV",
    "CredentialsUnavailable",
    "azure_storage",
    "decoded_secret",
    "gcs_storage",
    "object_storage_from_url",
    "operator_storage",
    "s3_storage",
    "secret_environ",
]

S3_KEY_ENV: Final = S3_ENV
S3_WEB_IDENTITY_ENV: Final = ("AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE")
S3_STS_ENDPOINT_ENV: Final = "AWS_ENDPOINT_URL_STS"
S3_SESSION_NAME_ENV: Final = "AWS_ROLE_SESSION_NAME"
GCS_KEY_ENV: Final = GCS_SECRET_ENV
AZURE_KEY_ENV, AZURE_SAS_ENV = AZURE_SECRET_ENV
AZURE_WORKLOAD_ENV: Final = (
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
)
OBJECT_STORE_SCHEMES: Final = ("s3", "gs", "azure")
CA_FILE_ENV: Final = "CLEO_OBJECT_STORE_CA_FILE"
"""A PEM file of extra root certificates (a private store's CA), trusted besides the system's
for the store and its token endpoints (STS)."""
REQUEST_TIMEOUT: Final = "48h"
"""A whole request, body included: a restore streams a multi-terabyte archive in one GET,
so this only stops a request that never ends; stalls are `READ_TIMEOUT`'s."""
READ_TIMEOUT: Final = "120s"
"""Without a byte for this long, a request has stalled (it is retried, or fails)."""


def _client(endpoint: str | None, environ: Mapping[str, str]) -> ClientConfig:
    options: ClientConfig = {
        "timeout": REQUEST_TIMEOUT,
        "read_timeout": READ_TIMEOUT,
        "connect_timeout": "10s",
    }
    if endpoint is not None and endpoint.startswith("http://"):
        options["allow_http"] = True
    ca_file = environ.get(CA_FILE_ENV, "")
    if ca_file:
        try:
            options["root_certificate"] = Path(ca_file).read_text()
        except OSError as error:
            raise ValueError(
                f"{CA_FILE_ENV}: cannot read {ca_file}: {error.strerror or error}"
            ) from None
    return options


def _refused(error: Exception, *, description: str, variables: str) -> ValueError:
    """A store obstore would not build (an unreadable key, say), safe to show: obstore's
    text may quote what it could not read, so only its kind is kept."""
    kind = "invalid" if isinstance(error, ValueError | obstore_errors.BaseError) else "refused"
    return ValueError(
        f"{description}: the credentials or settings are {kind} ({type(error).__name__}); "
        f"check {variables}"
    )


def _where(kind: str, location: str, prefix: str, endpoint: str | None) -> str:
    where = f"{location}/{prefix}" if prefix else location
    return f"{kind} {where}" + (f" at {endpoint}" if endpoint else "")


def s3_storage(
    *,
    bucket: str,
    prefix: str = "",
    region: str | None = None,
    endpoint: str | None = None,
    environ: Mapping[str, str],
) -> ObjectStoreStorage:
    """An S3 bucket (see the module docstring for the credentials read from `environ`)."""
    prefix = prefix.strip("/")
    config: S3Config = {"region": region or "us-east-1"}
    if endpoint:
        config["endpoint"] = endpoint
        # S3-compatible stores (and moto) address buckets by path.
        config["virtual_hosted_style_request"] = False
    key_id, secret = (environ.get(k, "") for k in S3_KEY_ENV)
    role, token_file = (environ.get(k, "") for k in S3_WEB_IDENTITY_ENV)
    if key_id or secret:
        if not (key_id and secret):
            raise ValueError(
                "S3 credentials incomplete: set both AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (keys of the Secret named by "
                "spec.destination.s3.credentialsSecret)"
            )
        config["access_key_id"] = key_id
        config["secret_access_key"] = secret
        session_token = environ.get(S3_OPTIONAL_ENV[0], "")
        if session_token:
            config["session_token"] = session_token
    elif role or token_file:
        if not (role and token_file):
            raise ValueError(
                "S3 web identity incomplete: set both AWS_ROLE_ARN and "
                "AWS_WEB_IDENTITY_TOKEN_FILE (spec.destination.s3.workloadIdentity)"
            )
        config["role_arn"] = role
        config["web_identity_token_file"] = token_file
        config["role_session_name"] = environ.get(S3_SESSION_NAME_ENV) or "cleo-backup"
        if environ.get(S3_STS_ENDPOINT_ENV):
            # obstore's stubs lack this key of object_store's (AmazonS3ConfigKey::StsEndpoint).
            sts: dict[str, str] = {"aws_endpoint_url_sts": environ[S3_STS_ENDPOINT_ENV]}
            config.update(sts)  # type: ignore[typeddict-item]
    description = _where(
        "S3 bucket", bucket, prefix, endpoint or f"https://s3.{config['region']}.amazonaws.com"
    )
    try:
        store = S3Store(
            bucket, prefix=prefix or None, config=config, client_options=_client(endpoint, environ)
        )
    except Exception as error:
        raise _refused(error, description=description, variables="the AWS_* variables") from None
    return ObjectStoreStorage(store, description=description)


def gcs_storage(
    *, bucket: str, prefix: str = "", endpoint: str | None = None, environ: Mapping[str, str]
) -> ObjectStoreStorage:
    """A Google Cloud Storage bucket (credentials: see the module docstring)."""
    prefix = prefix.strip("/")
    config: GCSConfig = {}
    if endpoint:
        config["base_url"] = endpoint
    key = environ.get(GCS_KEY_ENV, "")
    if key:
        config["service_account_key"] = key
    description = _where("GCS bucket", bucket, prefix, endpoint)
    try:
        store = GCSStore(
            bucket, prefix=prefix or None, config=config, client_options=_client(endpoint, environ)
        )
    except Exception as error:
        raise _refused(error, description=description, variables=GCS_KEY_ENV) from None
    return ObjectStoreStorage(store, description=description)


def azure_storage(
    *,
    account: str,
    container: str,
    prefix: str = "",
    endpoint: str | None = None,
    environ: Mapping[str, str],
) -> ObjectStoreStorage:
    """An Azure Blob container of a storage account (credentials: see the module docstring)."""
    prefix = prefix.strip("/")
    config: AzureConfig = {"account_name": account}
    if endpoint:
        config["endpoint"] = endpoint
    key, sas = environ.get(AZURE_KEY_ENV, ""), environ.get(AZURE_SAS_ENV, "")
    if key and sas:
        raise ValueError(
            f"Azure credentials: set {AZURE_KEY_ENV} or {AZURE_SAS_ENV} in the Secret named by "
            "spec.destination.azure.credentialsSecret, not both"
        )
    if key:
        config["account_key"] = key
    elif sas:
        config["sas_key"] = sas
    else:
        client_id, tenant_id, token_file, authority = (
            environ.get(k, "") for k in AZURE_WORKLOAD_ENV
        )
        if client_id:
            config["client_id"] = client_id
        if tenant_id:
            config["tenant_id"] = tenant_id
        if token_file:
            config["federated_token_file"] = token_file
        if authority:
            config["authority_host"] = authority
    description = _where(
        "Azure container",
        f"{account}/{container}",
        prefix,
        endpoint or f"https://{account}.blob.core.windows.net",
    )
    try:
        store = AzureStore(
            container,
            prefix=prefix or None,
            config=config,
            client_options=_client(endpoint, environ),
        )
    except Exception as error:
        raise _refused(error, description=description, variables="the AZURE_* variables") from None
    return ObjectStoreStorage(store, description=description)


def _options(destination: str, query: str, allowed: set[str]) -> dict[str, str]:
    options = dict(parse_qsl(query))
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(
            f"backup destination {destination!r}: unknown option(s) {unknown}; use "
            f"{' and '.join(sorted(allowed))}"
        )
    return options


def object_storage_from_url(
    destination: str, *, environ: Mapping[str, str]
) -> ObjectStoreStorage | None:
    """The store a ``s3://``, ``gs://`` or ``azure://`` destination names; None for another
    scheme. ValueError says what is wrong with the URL or the credentials."""
    parts = urlsplit(destination)
    if parts.scheme not in OBJECT_STORE_SCHEMES:
        return None
    if not parts.hostname:
        raise ValueError(
            f"backup destination {destination!r}: name the bucket (or the Azure account), "
            f"{parts.scheme}://BUCKET/"
        )
    if parts.scheme == "s3":
        options = _options(destination, parts.query, {"region", "endpoint"})
        return s3_storage(
            bucket=parts.hostname,
            prefix=parts.path,
            region=options.get("region"),
            endpoint=options.get("endpoint"),
            environ=environ,
        )
    if parts.scheme == "gs":
        options = _options(destination, parts.query, {"endpoint"})
        return gcs_storage(
            bucket=parts.hostname,
            prefix=parts.path,
            endpoint=options.get("endpoint"),
            environ=environ,
        )
    options = _options(destination, parts.query, {"endpoint"})
    container, _, prefix = parts.path.strip("/").partition("/")
    if not container:
        raise ValueError(
            f"backup destination {destination!r}: name the container, "
            "azure://ACCOUNT/CONTAINER/PREFIX"
        )
    return azure_storage(
        account=parts.hostname,
        container=container,
        prefix=prefix,
        endpoint=options.get("endpoint"),
        environ=environ,
    )


# Whole words, so the reasons can be found in the code (docs/troubleshooting.md names them).
_MISSING_REASON: Final = {
    "s3": "S3CredentialsMissing",
    "gcs": "GcsCredentialsMissing",
    "azure": "AzureCredentialsMissing",
}


class CredentialsUnavailable(StorageError, retryable=False):
    """The operator cannot read a CleoBackup's object store (no Secret it may use); the
    reason names the store (S3CredentialsMissing...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def decoded_secret(secret: KubeObject | None) -> dict[str, str] | None:
    """A Secret's data as text (None for a missing Secret; undecodable values are empty)."""
    if secret is None:
        return None
    return {k: secret_value(secret, k) or "" for k in (secret.get("data") or {})}


_NEEDS: Final = {
    "s3": " and ".join(S3_KEY_ENV),
    "gcs": GCS_SECRET_KEY,
    "azure": " or ".join(AZURE_SECRET_ENV),
}


def secret_environ(
    spec: CleoBackupSpec, secret: Mapping[str, str] | None, *, namespace: str = ""
) -> dict[str, str]:
    """The runner's variables that a CleoBackup's credentials Secret (`secret`: its decoded
    data, None when missing) gives; CredentialsUnavailable names what is missing."""
    destination = spec.resolved_destination()
    store = destination.object_store
    block = destination.type
    if store is None:
        raise CredentialsUnavailable(
            "UnknownDestination", f"spec.destination.type {block!r} is not an object store"
        )
    if store.credentials_secret is None:
        raise CredentialsUnavailable(
            "IdentityNotShared",
            f"spec.destination.{block} uses the runner's own identity (workloadIdentity or "
            "instanceMetadata), which the operator does not hold; the operator reads such "
            "backups only with a credentialsSecret",
        )
    name = f"{namespace}/{store.credentials_secret}" if namespace else store.credentials_secret
    where = f"spec.destination.{block}.credentialsSecret: Secret {name}"
    missing = _MISSING_REASON.get(block, "CredentialsMissing")
    data = dict(secret or {})
    if secret is None:
        raise CredentialsUnavailable(
            missing, f"{where} does not exist; it needs the key(s) {_NEEDS[block]}"
        )
    if block == "s3":
        lacking = [k for k in S3_KEY_ENV if not data.get(k)]
        if lacking:
            raise CredentialsUnavailable(missing, f"{where} lacks {', '.join(lacking)}")
        return {k: data[k] for k in (*S3_KEY_ENV, *S3_OPTIONAL_ENV) if data.get(k)}
    if block == "gcs":
        if not data.get(GCS_SECRET_KEY):
            raise CredentialsUnavailable(missing, f"{where} lacks {GCS_SECRET_KEY}")
        return {GCS_KEY_ENV: data[GCS_SECRET_KEY]}
    present = {k: data[k] for k in AZURE_SECRET_ENV if data.get(k)}
    if len(present) != 1:
        raise CredentialsUnavailable(
            missing,
            f"{where} must hold exactly one of {' or '.join(AZURE_SECRET_ENV)}",
        )
    return present


def operator_storage(
    spec: CleoBackupSpec, secret: KubeObject | None, *, environ: Mapping[str, str]
) -> ObjectStoreStorage:
    """The object store of a CleoBackup as the operator reads it (verification, drills):
    with its credentials Secret (`secret`, as read from the API; None when missing), never
    with an identity of the operator's own. `environ` may add the operator's
    CLEO_OBJECT_STORE_CA_FILE."""
    url = object_store_url(spec)
    namespace = str((secret or {}).get("metadata", {}).get("namespace", ""))
    values = secret_environ(spec, decoded_secret(secret), namespace=namespace)
    if environ.get(CA_FILE_ENV):
        values[CA_FILE_ENV] = environ[CA_FILE_ENV]
    assert url is not None  # secret_environ refused a volume
    try:
        store = object_storage_from_url(url, environ=values)
    except ValueError as error:
        raise CredentialsUnavailable("CredentialsInvalid", str(error)) from None
    assert store is not None
    return store
